//! Check kinds: one file per kind, each implementing [`Check`].
//!
//! A check makes one attempt and returns an [`Observation`]. It never touches metrics,
//! notifications or routing; the scheduler applies the timeout and times the call, the
//! tracker decides the state.

pub mod canary;
pub mod command;
pub mod gateway;
pub mod http;
pub mod line_quality;
pub mod modem;
pub mod queue;
pub mod sip;
pub mod sip_message;
pub mod tcp;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::vocab::{Common, Defaults, Schedule, SERIAL_INTERVAL, SERIAL_TIMEOUT};
use canary::CanaryConfig;
use command::CommandConfig;
use gateway::GatewayConfig;
use http::HttpConfig;
use line_quality::LineQualityConfig;
use modem::ModemConfig;
use queue::QueueConfig;
use sip::SipConfig;
use tcp::TcpConfig;

/// What one probe saw, judged on its own; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Fail => "fail",
        }
    }
}

/// A value a check exports beside the common check metrics, as `telagent_<kind>_<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Metric name after `telagent_<kind>_`, with its base unit (`status_code`,
    /// `response_bytes`).
    pub name: &'static str,
    pub help: &'static str,
    /// Labels beside `check` (an `_info` metric's identity); bounded: one set per check.
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub status: Status,
    /// One line for people: what was seen, or what failed, on what, and what to do.
    pub detail: String,
    /// Bounded reason of a failure or degradation (`connect_refused`, `timeout`, ...): the
    /// only thing ever used as a label.
    pub error_type: Option<&'static str>,
    pub values: Vec<Value>,
}

impl Observation {
    pub fn ok(detail: impl Into<String>) -> Self {
        Observation {
            status: Status::Ok,
            detail: detail.into(),
            error_type: None,
            values: Vec::new(),
        }
    }

    pub fn fail(error_type: &'static str, detail: impl Into<String>) -> Self {
        Observation {
            status: Status::Fail,
            detail: detail.into(),
            error_type: Some(error_type),
            values: Vec::new(),
        }
    }

    pub fn degraded(error_type: &'static str, detail: impl Into<String>) -> Self {
        Observation {
            status: Status::Degraded,
            detail: detail.into(),
            error_type: Some(error_type),
            values: Vec::new(),
        }
    }

    /// The worse of two observations, carrying the values of both (`self`'s first).
    pub fn worse(mut self, other: Observation) -> Observation {
        let mut values = std::mem::take(&mut self.values);
        values.extend(other.values.iter().cloned());
        let worse = if other.status > self.status {
            other
        } else {
            self
        };
        Observation { values, ..worse }
    }

    pub fn with_value(mut self, name: &'static str, help: &'static str, value: f64) -> Self {
        self.values.push(Value {
            name,
            help,
            labels: Vec::new(),
            value,
        });
        self
    }

    /// Adds an `_info` metric: value 1 with these labels.
    pub fn with_info(
        mut self,
        name: &'static str,
        help: &'static str,
        labels: Vec<(&'static str, String)>,
    ) -> Self {
        self.values.push(Value {
            name,
            help,
            labels,
            value: 1.0,
        });
        self
    }
}

/// The error type the scheduler records when a probe exceeds its timeout.
pub const TIMEOUT: &str = "timeout";

/// One configured check, ready to probe.
#[async_trait]
pub trait Check: Send + Sync {
    /// The kind as written in the config (`tcp`, `http`, ...).
    fn kind(&self) -> &'static str;
    /// Every error type this kind can report (besides `timeout`), pre-exported at 0.
    fn error_types(&self) -> &'static [&'static str];
    /// One attempt; bounded by the scheduler's timeout, which drops the future.
    async fn probe(&self) -> Observation;
}

/// One configured check, whatever its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckSpec {
    Tcp(TcpConfig),
    Http(HttpConfig),
    Command(CommandConfig),
    Modem(ModemConfig),
    Sip(SipConfig),
    Gateway(GatewayConfig),
    Queue(QueueConfig),
    LineQuality(LineQualityConfig),
    Canary(CanaryConfig),
}

/// What checks that judge the agent's own data are built with.
#[derive(Clone)]
pub struct Context {
    /// This agent's server.
    pub server: String,
    /// The committed fax attempts (line_quality).
    pub traffic: std::sync::Arc<crate::traffic::Stats>,
}

impl Context {
    /// For a check that reads nothing of the agent's own (no traffic store).
    pub fn standalone(server: &str) -> Context {
        Context {
            server: server.to_string(),
            traffic: std::sync::Arc::default(),
        }
    }
}

impl CheckSpec {
    /// The check kind as written in the file (`tcp`, `http`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            CheckSpec::Tcp(_) => "tcp",
            CheckSpec::Http(_) => "http",
            CheckSpec::Command(_) => "command",
            CheckSpec::Modem(_) => "modem",
            CheckSpec::Sip(_) => "sip",
            CheckSpec::Gateway(_) => "gateway",
            CheckSpec::Queue(_) => "queue",
            CheckSpec::LineQuality(_) => "line_quality",
            CheckSpec::Canary(_) => "canary",
        }
    }

    /// The keys shared by every kind.
    pub fn common(&self) -> Common<'_> {
        match self {
            CheckSpec::Tcp(c) => c.common(),
            CheckSpec::Http(c) => c.common(),
            CheckSpec::Command(c) => c.common(),
            CheckSpec::Modem(c) => c.common(),
            CheckSpec::Sip(c) => c.common(),
            CheckSpec::Gateway(c) => c.common(),
            CheckSpec::Queue(c) => c.common(),
            CheckSpec::LineQuality(c) => c.common(),
            CheckSpec::Canary(c) => c.common(),
        }
    }

    /// The check's schedule once defaults apply. A serial line has its own defaults
    /// (5m interval, 30s timeout) and is never probed faster while failing; a passive
    /// line only reads files and follows `[defaults]`. A line_quality check judges many
    /// attempts at once: rise and fall 1 unless set. A canary is a real call: every
    /// hour by default, never more often than every 5 minutes, its timeout the longest a
    /// canary can take, and one canary decides (rise and fall 1 unless set).
    pub fn schedule(&self, d: &Defaults) -> Schedule {
        let c = self.common();
        // A refused connection or an unanswered request is worth asking again at once;
        // a serial line, a command, a queue or the agent's own data is not.
        let network = matches!(
            self,
            CheckSpec::Tcp(_) | CheckSpec::Http(_) | CheckSpec::Sip(_) | CheckSpec::Gateway(_)
        );
        match self {
            CheckSpec::Modem(m) if !m.passive => {
                let interval = c.interval.unwrap_or(SERIAL_INTERVAL);
                Schedule {
                    interval,
                    timeout: c.timeout.unwrap_or(SERIAL_TIMEOUT),
                    failing_interval: interval,
                    confirm_interval: std::time::Duration::ZERO,
                    ..c.schedule(d, false)
                }
            }
            CheckSpec::Canary(k) => {
                let interval = c.interval.unwrap_or(std::time::Duration::from_secs(3600));
                Schedule {
                    interval,
                    timeout: c.timeout.unwrap_or_else(|| k.longest()),
                    failing_interval: c
                        .failing_interval
                        .unwrap_or(interval)
                        .max(canary::MIN_INTERVAL)
                        .min(interval),
                    rise: c.rise.unwrap_or(1),
                    fall: c.fall.unwrap_or(1),
                    ..c.schedule(d, network)
                }
            }
            // The judgement already spans many attempts: no hysteresis on top, and reading
            // memory takes no time.
            CheckSpec::LineQuality(_) => {
                let interval = c.interval.unwrap_or(d.interval);
                Schedule {
                    timeout: c.timeout.unwrap_or(d.timeout.min(interval / 2)),
                    rise: c.rise.unwrap_or(1),
                    fall: c.fall.unwrap_or(1),
                    ..c.schedule(d, network)
                }
            }
            _ => c.schedule(d, network),
        }
    }

    /// The check's name.
    pub fn name(&self) -> &str {
        self.common().name
    }

    /// Kind-specific validation: `Err((key, message))` with the key relative to the entry.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        match self {
            CheckSpec::Tcp(c) => c.validate(),
            CheckSpec::Http(c) => c.validate(),
            CheckSpec::Command(c) => c.validate(),
            CheckSpec::Modem(c) => c.validate(),
            CheckSpec::Sip(c) => c.validate(),
            CheckSpec::Gateway(c) => c.validate(),
            CheckSpec::Queue(c) => c.validate(),
            CheckSpec::LineQuality(c) => c.validate(),
            CheckSpec::Canary(c) => c.validate(),
        }
    }
}

/// The one place a check kind becomes a check.
pub fn build(spec: &CheckSpec, schedule: &Schedule, ctx: &Context) -> Box<dyn Check> {
    match spec {
        CheckSpec::Tcp(c) => Box::new(tcp::TcpCheck::new(c.clone(), schedule.timeout)),
        CheckSpec::Http(c) => Box::new(http::HttpCheck::new(c.clone())),
        CheckSpec::Command(c) => Box::new(command::CommandCheck::new(c.clone())),
        CheckSpec::Modem(c) => Box::new(modem::ModemCheck::new(c.clone())),
        CheckSpec::Sip(c) => Box::new(sip::SipCheck::new(c.clone(), schedule.timeout)),
        CheckSpec::Gateway(c) => Box::new(gateway::GatewayCheck::new(c.clone(), schedule.timeout)),
        CheckSpec::Queue(c) => Box::new(queue::QueueCheck::new(c.clone())),
        CheckSpec::LineQuality(c) => Box::new(line_quality::LineQualityCheck::new(c.clone(), ctx)),
        CheckSpec::Canary(c) => Box::new(canary::CanaryCheck::new(c.clone(), ctx)),
    }
}

/// The sample configuration of a kind, as printed by `telagent check KIND --sample`.
pub fn sample(kind: &str) -> Option<&'static str> {
    match kind {
        "tcp" => Some(include_str!("tcp.sample.toml")),
        "http" => Some(include_str!("http.sample.toml")),
        "command" => Some(include_str!("command.sample.toml")),
        "modem" => Some(include_str!("modem.sample.toml")),
        "sip" => Some(include_str!("sip.sample.toml")),
        "gateway" => Some(include_str!("gateway.sample.toml")),
        "queue" => Some(include_str!("queue.sample.toml")),
        "line_quality" => Some(include_str!("line_quality.sample.toml")),
        "canary" => Some(include_str!("canary.sample.toml")),
        _ => None,
    }
}

/// Every check kind this build knows.
pub const KINDS: &[&str] = &[
    "tcp",
    "http",
    "command",
    "modem",
    "sip",
    "gateway",
    "queue",
    "line_quality",
    "canary",
];

/// Shortens outside text for a detail line: one line, at most `max` characters.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &trimmed[..i]),
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_parses_and_names_its_kind() {
        for kind in KINDS {
            let text = sample(kind).unwrap();
            let config = crate::config::parse(text, &format!("{kind}.sample.toml"))
                .unwrap_or_else(|e| panic!("{e}"));
            let checks = config.checks();
            assert!(!checks.is_empty(), "{kind} sample has no check");
            assert!(checks.iter().all(|(_, c)| c.kind() == *kind));
        }
    }

    #[test]
    fn excerpt_is_one_bounded_line() {
        assert_eq!(excerpt(b"HTTP/1.1 200\r\nX", 100), "HTTP/1.1 200  X");
        assert_eq!(excerpt(b"abcdef", 3), "abc...");
        assert_eq!(excerpt(&[0xff, b'a'], 10), "\u{fffd}a");
    }
}
