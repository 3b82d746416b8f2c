//! The live model: the snapshot every output reads. Checks write it through the scheduler;
//! /metrics, /v1/status and the CLI only read it. Reading never triggers a probe.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::tracker::State;
use crate::checks::{Observation, Status, Value};
use crate::serial::inventory::PortInfo;

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
            discovered: false,
        }
    }

    /// The extra values of the last probe (kind-specific metrics).
    pub fn values(&self) -> &[Value] {
        self.last
            .as_ref()
            .map_or(&[], |p| p.observation.values.as_slice())
    }
}

/// Outcome of the last configuration (re)load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub source: String,
    pub successful: bool,
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct Inner {
    pub server: String,
    pub started_at: SystemTime,
    pub targets: BTreeMap<String, Target>,
    pub ports: Vec<PortInfo>,
    pub reload: ReloadStatus,
    pub audit_write_errors: u64,
    /// The cluster as the routing layer sees it.
    pub cluster: Option<std::sync::Arc<crate::routing::Snapshot>>,
    /// A drain set by an operator through the API, with its reason.
    pub maintenance: Option<String>,
    /// Changes told to, and failures of, each routing output (`kamailio`, `hook`).
    pub routing_changes: BTreeMap<&'static str, u64>,
    pub routing_errors: BTreeMap<&'static str, u64>,
    /// Lifetime traffic counters, as committed to the traffic store.
    pub traffic: BTreeMap<crate::traffic::Key, crate::traffic::Count>,
    /// Each tailed file's progress, by source name (`xferfaxlog:<path>`).
    pub traffic_sources: BTreeMap<String, crate::traffic::SourceStats>,
    /// Event batches posted: `counted`, `duplicate`, `rejected`.
    pub event_batches: BTreeMap<&'static str, u64>,
    /// Notification delivery per receiver (or failover queue).
    pub notify: BTreeMap<String, crate::notify::ReceiverStats>,
    /// Notifications held back by storm damping.
    pub notifications_suppressed: u64,
    /// The AgentX subagent has TELAGENT-MIB registered with the master now.
    pub agentx_registered: bool,
    /// AgentX sessions opened and registered since start.
    pub agentx_sessions: u64,
}

#[derive(Debug)]
pub struct Model {
    inner: RwLock<Inner>,
}

impl Model {
    pub fn new(server: &str, source: &str) -> Self {
        let now = SystemTime::now();
        Model {
            inner: RwLock::new(Inner {
                server: server.to_string(),
                started_at: now,
                targets: BTreeMap::new(),
                ports: Vec::new(),
                reload: ReloadStatus {
                    source: source.to_string(),
                    successful: true,
                    at: now,
                    error: None,
                },
                audit_write_errors: 0,
                cluster: None,
                maintenance: None,
                routing_changes: BTreeMap::new(),
                routing_errors: BTreeMap::new(),
                traffic: BTreeMap::new(),
                traffic_sources: BTreeMap::new(),
                event_batches: BTreeMap::new(),
                notify: BTreeMap::new(),
                notifications_suppressed: 0,
                agentx_registered: false,
                agentx_sessions: 0,
            }),
        }
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

    /// The JSON document of /v1/status.
    pub fn status_doc(&self) -> StatusDoc {
        let m = self.read();
        StatusDoc {
            server: m.server.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: m.started_at,
            config: m.reload.clone(),
            targets: m.targets.values().map(TargetDoc::from).collect(),
            ports: m.ports.clone(),
            cluster: m.cluster.as_deref().cloned(),
        }
    }
}

/// /v1/status: every target, its state, since when, its last observation and last error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDoc {
    pub server: String,
    pub version: String,
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    pub config: ReloadStatus,
    pub targets: Vec<TargetDoc>,
    pub ports: Vec<PortInfo>,
    /// The cluster as this agent sees it (servers, routes), when members are configured.
    #[serde(default)]
    pub cluster: Option<crate::routing::Snapshot>,
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
