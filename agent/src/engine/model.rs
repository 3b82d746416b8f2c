//! The live model: the state of every check, as the scheduler records it. Outputs only
//! read it (/metrics through its collector, /v1/status, the status page, AgentX,
//! routing); reading never
//! triggers a probe. It holds check state only: each output keeps its own stats.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::tracker::State;
use crate::checks::{Observation, Status, Value};

/// One probe as recorded.
#[derive(Debug, Clone)]
pub struct Probe {
    pub at: SystemTime,
    pub duration: Duration,
    pub observation: Observation,
}

/// Everything known about one target.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: &'static str,
    pub error_types: &'static [&'static str],
    pub interval: Duration,
    pub state: State,
    pub since: SystemTime,
    pub last: Option<Probe>,
    pub last_error: Option<Probe>,
    pub probes_total: u64,
    pub failures_total: BTreeMap<&'static str, u64>,
    pub transitions_total: u64,
    pub worse_streak: u32,
    /// While the target flaps: why (it is then at best degraded).
    pub flapping: Option<String>,
    /// Added by discovery, not by the config file.
    pub discovered: bool,
}

impl Target {
    pub fn new(
        name: &str,
        kind: &'static str,
        error_types: &'static [&'static str],
        interval: Duration,
    ) -> Self {
        let mut failures_total: BTreeMap<&'static str, u64> =
            error_types.iter().map(|t| (*t, 0)).collect();
        failures_total.insert(crate::checks::TIMEOUT, 0);
        Target {
            name: name.to_string(),
            kind,
            error_types,
            interval,
            state: State::Unknown,
            since: SystemTime::now(),
            last: None,
            last_error: None,
            probes_total: 0,
            failures_total,
            transitions_total: 0,
            worse_streak: 0,
            flapping: None,
            discovered: false,
        }
    }

    /// The extra values of the last probe (kind-specific metrics).
    pub fn values(&self) -> &[Value] {
        self.last
            .as_ref()
            .map_or(&[], |p| p.observation.values.as_slice())
    }

    /// The sum of the last probe's values named `name` (and carrying `label`, if given);
    /// None when the probe had none.
    pub fn value(&self, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        self.values()
            .iter()
            .filter(|v| {
                v.name == name
                    && label.is_none_or(|(k, want)| {
                        v.labels.iter().any(|(lk, lv)| *lk == k && lv == want)
                    })
            })
            .map(|v| v.value)
            .reduce(|a, b| a + b)
    }
}

#[derive(Debug, Default)]
pub struct Inner {
    pub targets: BTreeMap<String, Target>,
}

#[derive(Debug, Default)]
pub struct Model {
    inner: RwLock<Inner>,
}

impl Model {
    pub fn new() -> Self {
        Model::default()
    }

    // A poisoned lock means a writer panicked between two field writes of plain data; the
    // data is still well-formed, so serving it beats taking every output down.
    pub fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every target as /v1/status shows it.
    pub fn target_docs(&self) -> Vec<TargetDoc> {
        self.read().targets.values().map(TargetDoc::from).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetDoc {
    pub name: String,
    pub kind: String,
    pub state: State,
    #[serde(with = "rfc3339")]
    pub since: SystemTime,
    /// Consecutive observations worse than `state` (a transient until it reaches `fall`).
    pub worse_streak: u32,
    /// While the target flaps: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flapping: Option<String>,
    pub probes_total: u64,
    pub last: Option<ProbeDoc>,
    pub last_error: Option<ProbeDoc>,
    /// Added by discovery, not by the config file.
    #[serde(default)]
    pub discovered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeDoc {
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub status: Status,
    pub duration_seconds: f64,
    pub error_type: Option<String>,
    pub detail: String,
}

impl From<&Probe> for ProbeDoc {
    fn from(p: &Probe) -> Self {
        ProbeDoc {
            at: p.at,
            status: p.observation.status,
            duration_seconds: p.duration.as_secs_f64(),
            error_type: p.observation.error_type.map(str::to_string),
            detail: p.observation.detail.clone(),
        }
    }
}

impl From<&Target> for TargetDoc {
    fn from(t: &Target) -> Self {
        TargetDoc {
            name: t.name.clone(),
            kind: t.kind.to_string(),
            state: t.state,
            since: t.since,
            worse_streak: t.worse_streak,
            flapping: t.flapping.clone(),
            probes_total: t.probes_total,
            last: t.last.as_ref().map(ProbeDoc::from),
            last_error: t.last_error.as_ref().map(ProbeDoc::from),
            discovered: t.discovered,
        }
    }
}

/// RFC 3339 timestamps (UTC, milliseconds) in JSON.
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}
