//! Prometheus exposition, rendered from the model at scrape time (never probing).
//!
//! Every value comes from the last probe of its check, so HELP says it is refreshed every
//! probe interval. Labels are bounded by the config (`check`, `kind`, `port`) and by the
//! fixed lists of states and error types; counters are pre-exported at 0.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::SystemTime;

use prometheus::{Encoder, Registry, TextEncoder};

use crate::engine::model::Model;
use crate::engine::tracker::State;

/// Renders the metrics of the model in the text exposition format, followed by those of
/// `process` (process_*). The model's series are written straight as text: building the
/// crate's protobuf families first cost more than half of a scrape at 10,000 series.
pub fn render(model: &Model, process: &Registry) -> String {
    let mut out = from_model(model).into_text();
    let mut proc_text = Vec::new();
    // Encoding into a Vec only fails on invalid names, which are fixed here.
    if let Err(e) = TextEncoder::new().encode(&process.gather(), &mut proc_text) {
        tracing::error!(error = %e, "Cannot encode metrics.");
    }
    out.push_str(&String::from_utf8_lossy(&proc_text));
    out
}

/// A registry with the process collector (CPU, memory, file descriptors of this process).
pub fn process_registry() -> Registry {
    let r = Registry::new();
    #[cfg(target_os = "linux")]
    {
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        // Registering a fresh collector in a fresh registry cannot collide.
        let _ = r.register(Box::new(pc));
    }
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric family: its HELP, TYPE and sample lines so far.
struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: String,
}

/// Collects metric families by name, keeping the order of first use.
#[derive(Default)]
struct Families {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl Families {
    fn add(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], v: f64) {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.index.insert(name.to_string(), self.families.len());
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: String::new(),
                });
                self.families.len() - 1
            }
        };
        let out = &mut self.families[i].samples;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (n, (k, v)) in labels.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape(out, v, true);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        if v.is_nan() {
            out.push_str("NaN");
        } else if v.is_infinite() {
            out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            // Counts and flags: integer formatting is several times cheaper than float.
            let _ = write!(out, "{}", v as i64);
        } else {
            let _ = write!(out, "{v}");
        }
        out.push('\n');
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.add(name, help, Kind::Gauge, labels, v);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.add(name, help, Kind::Counter, labels, v);
    }

    fn into_text(self) -> String {
        let size = self
            .families
            .iter()
            .map(|f| f.samples.len() + f.help.len() + 64)
            .sum();
        let mut out = String::with_capacity(size);
        for f in self.families {
            out.push_str("# HELP ");
            out.push_str(&f.name);
            out.push(' ');
            escape(&mut out, &f.help, false);
            out.push_str("\n# TYPE ");
            out.push_str(&f.name);
            out.push_str(match f.kind {
                Kind::Counter => " counter\n",
                Kind::Gauge => " gauge\n",
            });
            out.push_str(&f.samples);
        }
        out
    }
}

/// Escapes `\\` and line feeds, and in label values `"` too (the text format's rules).
fn escape(out: &mut String, s: &str, quote: bool) {
    if !s
        .bytes()
        .any(|b| b == b'\\' || b == b'\n' || (quote && b == b'"'))
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn bool01(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn from_model(model: &Model) -> Families {
    let m = model.read();
    let mut f = Families::default();
    f.gauge(
        "telagent_build_info",
        "Build of this agent; the value is always 1.",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    f.gauge(
        "telagent_start_time_seconds",
        "Start time of this agent, seconds since the Unix epoch.",
        &[],
        seconds(m.started_at),
    );
    f.gauge(
        "telagent_config_last_reload_successful",
        "1 if the last configuration load or reload succeeded, 0 if it was rejected (the previous configuration keeps running).",
        &[],
        bool01(m.reload.successful),
    );
    f.counter(
        "telagent_audit_write_errors_total",
        "Transitions that could not be appended to the audit log.",
        &[],
        m.audit_write_errors as f64,
    );
    for t in m.targets.values() {
        let l = [("check", t.name.as_str()), ("kind", t.kind)];
        for s in State::ALL {
            f.gauge(
                "telagent_check_state",
                "Decided state of the check (1 for the current state), refreshed every probe interval.",
                &[l[0], l[1], ("state", s.as_str())],
                bool01(t.state == s),
            );
        }
        f.counter(
            "telagent_check_probes_total",
            "Probes run.",
            &l,
            t.probes_total as f64,
        );
        for (error_type, n) in &t.failures_total {
            f.counter(
                "telagent_check_failures_total",
                "Probes that did not succeed, by error type.",
                &[l[0], l[1], ("error_type", error_type)],
                *n as f64,
            );
        }
        f.counter(
            "telagent_check_transitions_total",
            "State changes decided by the tracker.",
            &l,
            t.transitions_total as f64,
        );
        f.gauge(
            "telagent_check_consecutive_failures",
            "Consecutive observations worse than the current state (a transient until it reaches fall), refreshed every probe interval.",
            &l,
            t.worse_streak as f64,
        );
        let Some(last) = &t.last else { continue };
        f.gauge(
            "telagent_check_success",
            "1 if the last probe succeeded, refreshed every probe interval.",
            &l,
            bool01(last.observation.status == crate::checks::Status::Ok),
        );
        f.gauge(
            "telagent_check_duration_seconds",
            "Duration of the last probe, refreshed every probe interval.",
            &l,
            last.duration.as_secs_f64(),
        );
        f.gauge(
            "telagent_check_last_run_timestamp_seconds",
            "End of the last probe, seconds since the Unix epoch.",
            &l,
            seconds(last.at),
        );
        for v in t.values() {
            let mut labels = vec![l[0]];
            labels.extend(v.labels.iter().map(|(k, v)| (*k, v.as_str())));
            let kind = if v.name.ends_with("_total") {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            f.add(
                &format!("telagent_{}_{}", t.kind, v.name),
                &format!("{} Refreshed every probe interval.", v.help),
                kind,
                &labels,
                v.value,
            );
        }
    }
    if let Some(c) = &m.cluster {
        for v in &c.servers {
            let l = [("server", v.name.as_str())];
            for st in crate::routing::decision::ServerState::ALL {
                f.gauge(
                    "telagent_server_state",
                    "Routing state of the server as this agent sees it (1 for the current state of unknown / up / drain / down), refreshed every evaluation.",
                    &[l[0], ("state", st.as_str())],
                    bool01(v.state == st),
                );
            }
            if let Some(t) = v.last_active {
                f.gauge(
                    "telagent_server_last_active_timestamp_seconds",
                    "Last time the server's agent answered (this server: now), seconds since the Unix epoch.",
                    &l,
                    seconds(t),
                );
            }
            f.gauge(
                "telagent_server_speaker",
                "1 if this agent tells the routing layer about the server (its own, or a dead peer it speaks for).",
                &l,
                bool01(v.speaker),
            );
            f.gauge(
                "telagent_cluster_config_drift",
                "1 if the server's agent publishes other cluster / member / group sections than this agent.",
                &l,
                bool01(v.config_drift),
            );
        }
        for g in &c.routes {
            f.gauge(
                "telagent_routing_panic",
                "1 while fewer servers of the group are routable than the panic threshold (every server is routed).",
                &[("group", g.group.as_str())],
                bool01(g.panic),
            );
            f.gauge(
                "telagent_routing_routable_servers",
                "Servers of the group that take new work.",
                &[("group", g.group.as_str())],
                g.servers.iter().filter(|s| s.routable).count() as f64,
            );
        }
        f.gauge(
            "telagent_routing_learned",
            "1 once every peer was polled and this server's state is known (outputs act only then).",
            &[],
            bool01(c.learned),
        );
    }
    for output in ["kamailio", "hook"] {
        f.counter(
            "telagent_routing_changes_total",
            "State changes told to a routing output.",
            &[("output", output)],
            m.routing_changes.get(output).copied().unwrap_or(0) as f64,
        );
        f.counter(
            "telagent_routing_errors_total",
            "Failed attempts to tell a routing output.",
            &[("output", output)],
            m.routing_errors.get(output).copied().unwrap_or(0) as f64,
        );
    }
    traffic(&mut f, &m);
    notifications(&mut f, &m);
    for p in &m.ports {
        let port = [("port", p.name.as_str())];
        f.gauge(
            "telagent_serial_port_info",
            "A serial port present on this host (value 1), refreshed every ports interval.",
            &[
                port[0],
                ("driver", p.driver.as_str()),
                ("path", p.path.as_str()),
            ],
            1.0,
        );
        let (locked, stale) = match &p.lock {
            Some(l) => (!l.stale, l.stale),
            None => (false, false),
        };
        f.gauge(
            "telagent_serial_port_locked",
            "1 if a live process holds the port's UUCP lock, refreshed every ports interval.",
            &port,
            bool01(locked),
        );
        f.gauge(
            "telagent_serial_port_lock_stale",
            "1 if the port has a UUCP lock file whose process is gone, refreshed every ports interval.",
            &port,
            bool01(stale),
        );
    }
    f
}

/// Lifetime traffic counters from the store (they survive restarts), one series per server
/// and line, every one of the six exported once the line has any traffic.
fn traffic(f: &mut Families, m: &crate::engine::model::Inner) {
    use crate::traffic::Direction;
    let mut lines: BTreeMap<(&str, &str), [u64; 6]> = BTreeMap::new();
    for (k, c) in &m.traffic {
        let v = lines
            .entry((k.server.as_str(), k.line.as_str()))
            .or_default();
        let (messages, pages) = match (k.direction, k.ok) {
            (Direction::Sent, true) => (0, 4),
            (Direction::Sent, false) => (1, 4),
            (Direction::Received, true) => (2, 5),
            (Direction::Received, false) => (3, 5),
        };
        v[messages] += c.messages;
        v[pages] += c.pages;
    }
    const SERIES: [(&str, &str); 6] = [
        (
            "telagent_messages_sent_total",
            "Messages delivered (xferfaxlog SEND/PAGE without error, events sent ok).",
        ),
        (
            "telagent_messages_failed_total",
            "Send attempts that failed.",
        ),
        (
            "telagent_messages_received_total",
            "Messages received (xferfaxlog RECV/POLL without error, events received ok).",
        ),
        (
            "telagent_messages_receive_failed_total",
            "Receptions that failed.",
        ),
        (
            "telagent_pages_sent_total",
            "Pages of send attempts, as the source reports them.",
        ),
        (
            "telagent_pages_received_total",
            "Pages of receptions, as the source reports them.",
        ),
    ];
    for ((server, line), v) in &lines {
        for (i, (name, help)) in SERIES.iter().enumerate() {
            f.counter(
                name,
                &format!("{help} Kept in the traffic store: never reset by a restart."),
                &[("server", server), ("line", line)],
                v[i] as f64,
            );
        }
    }
    for (source, st) in &m.traffic_sources {
        let l = [("source", source.as_str())];
        f.counter(
            "telagent_traffic_source_records_total",
            "Records counted from a tailed file.",
            &l,
            st.records as f64,
        );
        f.counter(
            "telagent_traffic_source_malformed_lines_total",
            "Lines of a tailed file skipped because they are not records (logged with their line number).",
            &l,
            st.malformed as f64,
        );
        f.gauge(
            "telagent_traffic_source_offset_bytes",
            "Bytes of the current file counted so far.",
            &l,
            st.offset as f64,
        );
    }
    for result in ["counted", "duplicate", "rejected", "failed"] {
        f.counter(
            "telagent_event_batches_total",
            "Batches posted to /v1/events, by what became of them (failed: the store could not commit; the sender should retry).",
            &[("result", result)],
            m.event_batches.get(result).copied().unwrap_or(0) as f64,
        );
    }
}

/// Delivery of SNMP notifications, per receiver (or the failover queue).
fn notifications(f: &mut Families, m: &crate::engine::model::Inner) {
    for (name, st) in &m.notify {
        let l = [("receiver", name.as_str())];
        for (metric, help, v) in [
            ("telagent_notifications_sent_total", "Notifications sent (every attempt, retries included).", st.sent),
            ("telagent_notifications_acknowledged_total", "Informs acknowledged by the receiver.", st.acknowledged),
            ("telagent_notifications_retried_total", "Inform attempts not acknowledged in time (retried with backoff).", st.retried),
            ("telagent_notifications_auth_failures_total", "Notifications the receiver refused (v3 reports: wrong user, digest or privacy password).", st.auth_failures),
            ("telagent_notifications_dropped_total", "Notifications dropped because the outbox was full (oldest first).", st.dropped),
        ] {
            f.counter(metric, help, &l, v as f64);
        }
        f.gauge(
            "telagent_notification_outbox_depth",
            "Notifications waiting in the durable outbox.",
            &l,
            st.outbox_depth as f64,
        );
    }
    f.gauge(
        "telagent_agentx_registered",
        "1 while TELAGENT-MIB is registered with the AgentX master (snmpd).",
        &[],
        bool01(m.agentx_registered),
    );
    f.counter(
        "telagent_agentx_sessions_total",
        "AgentX sessions opened and registered (more than 1: the master restarted).",
        &[],
        m.agentx_sessions as f64,
    );
    if !m.notify.is_empty() {
        f.counter(
            "telagent_notifications_suppressed_total",
            "Notifications held back by storm damping (summed up in telagentNotificationsSuppressed).",
            &[],
            m.notifications_suppressed as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A state with something in every family: two checks (one with kind values and a
    /// failure), a cluster of two servers and a group, routing outputs, traffic from two
    /// lines and a tailed file, event batches, two notification receivers, AgentX and a
    /// serial port with a stale lock.
    fn golden_model() -> Model {
        use crate::checks::Observation;
        use crate::engine::model::{Probe, Target};
        use crate::routing::decision::{GroupRoutes, RouteEntry, ServerState, ServerView};
        use crate::traffic::{Count, Direction, Key, SourceStats};
        let model = Model::new("fax1", "/etc/telagent/telagent.toml");
        let mut m = model.write();
        m.started_at = at(1_795_000_000);
        m.reload.successful = false;
        m.audit_write_errors = 2;
        let mut gw = Target::new(
            "gw1",
            "gateway",
            &["channels_exhausted"],
            Duration::from_secs(10),
        );
        gw.state = State::Degraded;
        gw.probes_total = 12;
        gw.transitions_total = 2;
        *gw.failures_total.get_mut("channels_exhausted").unwrap() = 3;
        let mut obs = Observation::degraded("channels_exhausted", "30 channels");
        for (s, n) in [("idle", 0.0), ("busy", 28.0), ("out_of_service", 2.0)] {
            obs.values.push(crate::checks::Value {
                name: "channels",
                help: "Channels by state at the last poll.",
                labels: vec![("state", s.to_string())],
                value: n,
            });
        }
        gw.last = Some(Probe {
            at: at(1_795_000_100),
            duration: Duration::from_millis(25),
            observation: obs,
        });
        m.targets.insert("gw1".into(), gw);
        let mut t = Target::new(
            "smtp \"x\"",
            "tcp",
            &["connect_refused"],
            Duration::from_secs(10),
        );
        t.state = State::Up;
        t.worse_streak = 1;
        t.last = Some(Probe {
            at: at(1_795_000_101),
            duration: Duration::from_micros(1500),
            observation: Observation::ok("connected").with_value("x_total", "A counter.", 5.0),
        });
        m.targets.insert("smtp".into(), t);
        let view = |name: &str, state, speaker| ServerView {
            name: name.into(),
            state,
            reason: "r".into(),
            since: at(1_795_000_000),
            last_active: (name == "fax1").then(|| at(1_795_000_102)),
            agent_reachable: true,
            config_hash: None,
            config_drift: name == "fax2",
            speaker,
        };
        m.cluster = Some(std::sync::Arc::new(crate::routing::Snapshot {
            me: "fax1".into(),
            learned: true,
            config_hash: "h".into(),
            servers: vec![
                view("fax1", ServerState::Up, true),
                view("fax2", ServerState::Down, false),
            ],
            routes: vec![GroupRoutes {
                group: "fax".into(),
                panic: false,
                servers: vec![RouteEntry {
                    server: "fax1".into(),
                    host: "fax1:5060".into(),
                    state: ServerState::Up,
                    reason: "r".into(),
                    weight: 100,
                    since: at(1_795_000_000),
                    routable: true,
                }],
            }],
        }));
        m.routing_changes.insert("kamailio", 4);
        m.routing_errors.insert("hook", 1);
        for (line, direction, ok, messages, pages) in [
            ("ttyS0", Direction::Sent, true, 10, 25),
            ("ttyS0", Direction::Sent, false, 2, 0),
            ("ttyS1", Direction::Received, true, 3, 9),
        ] {
            m.traffic.insert(
                Key {
                    server: "fax1".into(),
                    line: line.into(),
                    direction,
                    ok,
                },
                Count { messages, pages },
            );
        }
        m.traffic_sources.insert(
            "xferfaxlog:/var/spool/hylafax/log/xferfaxlog".into(),
            SourceStats {
                records: 15,
                malformed: 1,
                offset: 4096,
                ..Default::default()
            },
        );
        m.event_batches.insert("counted", 7);
        m.event_batches.insert("rejected", 1);
        for (name, sent) in [("nms", 9), ("scom", 3)] {
            m.notify.insert(
                name.into(),
                crate::notify::ReceiverStats {
                    sent,
                    acknowledged: sent - 1,
                    retried: 1,
                    auth_failures: 0,
                    dropped: 0,
                    outbox_depth: 1,
                },
            );
        }
        m.notifications_suppressed = 6;
        m.agentx_registered = true;
        m.agentx_sessions = 2;
        m.ports.push(crate::serial::inventory::PortInfo {
            name: "ttyS0".into(),
            path: "/dev/ttyS0".into(),
            driver: "serial8250".into(),
            lock: Some(crate::serial::lock::LockInfo {
                file: "/var/lock/LCK..ttyS0".into(),
                pid: Some(999_999),
                program: None,
                stale: true,
            }),
        });
        drop(m);
        model
    }

    /// The exposition of a fixed state, without the process collector, is byte for byte
    /// the recorded one: a change of /metrics shows here first.
    #[test]
    fn metrics_of_a_fixed_state_are_byte_identical_to_the_recorded_exposition() {
        let text = render(&golden_model(), &Registry::new());
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/metrics/golden.prom");
        if std::env::var_os("TELAGENT_RECORD_GOLDEN").is_some() {
            std::fs::write(file, &text).unwrap();
        }
        let want = std::fs::read_to_string(file).unwrap();
        assert!(text == want, "/metrics changed:\n{text}");
    }

    #[test]
    fn families_render_in_the_text_format_with_escaping() {
        let mut f = Families::default();
        f.counter("a_total", "Help with \\ and\nnewline.", &[], 3.0);
        f.gauge("b", "B.", &[("check", "x\"y\\z\nw"), ("kind", "tcp")], 0.25);
        f.counter(
            "a_total",
            "ignored: the first help stays",
            &[("l", "v")],
            1e21,
        );
        f.gauge("c", "C.", &[], f64::NAN);
        f.gauge("c", "C.", &[("s", "up")], f64::INFINITY);
        f.gauge("c", "C.", &[("s", "down")], f64::NEG_INFINITY);
        assert_eq!(
            f.into_text(),
            "# HELP a_total Help with \\\\ and\\nnewline.\n# TYPE a_total counter\n\
             a_total 3\na_total{l=\"v\"} 1000000000000000000000\n\
             # HELP b B.\n# TYPE b gauge\nb{check=\"x\\\"y\\\\z\\nw\",kind=\"tcp\"} 0.25\n\
             # HELP c C.\n# TYPE c gauge\nc NaN\nc{s=\"up\"} +Inf\nc{s=\"down\"} -Inf\n"
        );
    }
}
