//! Prometheus exposition, rendered at scrape time (never probing) from the collectors
//! registered by the parts of the agent: the engine's checks, and each output's own
//! stats, in the order `agent.rs` registers them (node_exporter's collector interface,
//! without its registry of descriptors).
//!
//! Every check value comes from the last probe of its check, so HELP says it is refreshed
//! every probe interval. Labels are bounded by the config (`check`, `kind`, `port`) and by
//! the fixed lists of states and error types; counters are pre-exported at 0.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use prometheus::{Encoder, Registry, TextEncoder};

/// A part of the agent that has metrics: it writes its families at every scrape.
pub trait Collector: Send + Sync {
    fn collect(&self, f: &mut Families);
}

/// The collectors of the running agent and the process collector.
pub struct Metrics {
    collectors: RwLock<Vec<Arc<dyn Collector>>>,
    process: Registry,
}

impl Metrics {
    /// With the process collector (process_*); `process` false leaves it out (tests).
    pub fn new(process: bool) -> Metrics {
        Metrics {
            collectors: RwLock::default(),
            process: if process {
                process_registry()
            } else {
                Registry::new()
            },
        }
    }

    /// Adds a collector; its families follow those of the collectors registered before.
    pub fn register(&self, c: Arc<dyn Collector>) {
        self.collectors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(c);
    }

    /// The text exposition: every collector's families written straight as text (building
    /// the crate's protobuf families first cost more than half of a scrape at 10,000
    /// series), then process_*.
    pub fn render(&self) -> String {
        let mut f = Families::default();
        for c in self
            .collectors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            c.collect(&mut f);
        }
        let mut out = f.into_text();
        let mut proc_text = Vec::new();
        // Encoding into a Vec only fails on invalid names, which are fixed here.
        if let Err(e) = TextEncoder::new().encode(&self.process.gather(), &mut proc_text) {
            tracing::error!(error = %e, "Cannot encode metrics.");
        }
        out.push_str(&String::from_utf8_lossy(&proc_text));
        out
    }
}

/// The check families: state, probes, failures, transitions, the last probe and the
/// kind-specific values. Written family by family over the targets (the order of the
/// text): each family is found once per scrape, not once per sample.
impl Collector for crate::engine::model::Model {
    fn collect(&self, f: &mut Families) {
        use crate::engine::model::{Probe, Target};
        let m = self.read();
        let targets: Vec<&Target> = m.targets.values().collect();
        let probed: Vec<(&Target, &Probe)> = targets
            .iter()
            .filter_map(|t| t.last.as_ref().map(|p| (*t, p)))
            .collect();
        fn l(t: &Target) -> [(&'static str, &str); 2] {
            [("check", t.name.as_str()), ("kind", t.kind)]
        }
        let i = f.family(
            "telagent_check_state",
            "Decided state of the check (1 for the current state), refreshed every probe interval.",
            Kind::Gauge,
        );
        for t in &targets {
            for s in crate::engine::tracker::State::ALL {
                let [c, k] = l(t);
                f.sample_in(i, &[c, k, ("state", s.as_str())], bool01(t.state == s));
            }
        }
        let one_each = |f: &mut Families, name, help, kind, value: fn(&Target) -> f64| {
            let i = f.family(name, help, kind);
            for t in &targets {
                f.sample_in(i, &l(t), value(t));
            }
        };
        one_each(
            f,
            "telagent_check_probes_total",
            "Probes run.",
            Kind::Counter,
            |t| t.probes_total as f64,
        );
        let i = f.family(
            "telagent_check_failures_total",
            "Probes that did not succeed, by error type.",
            Kind::Counter,
        );
        for t in &targets {
            for (error_type, count) in &t.failures_total {
                let [c, k] = l(t);
                f.sample_in(i, &[c, k, ("error_type", error_type)], *count as f64);
            }
        }
        one_each(
            f,
            "telagent_check_transitions_total",
            "State changes decided by the tracker.",
            Kind::Counter,
            |t| t.transitions_total as f64,
        );
        one_each(
            f,
            "telagent_check_consecutive_failures",
            "Consecutive observations worse than the current state (a transient until it reaches fall), refreshed every probe interval.",
            Kind::Gauge,
            |t| f64::from(t.worse_streak),
        );
        one_each(
            f,
            "telagent_check_flapping",
            "1 while the target flaps (too many state changes or transient failures within flap_window): it is then at best degraded.",
            Kind::Gauge,
            |t| bool01(t.flapping.is_some()),
        );
        let one_each_probed = |f: &mut Families, name, help, value: fn(&Probe) -> f64| {
            let i = f.family(name, help, Kind::Gauge);
            for (t, p) in &probed {
                f.sample_in(i, &l(t), value(p));
            }
        };
        one_each_probed(
            f,
            "telagent_check_success",
            "1 if the last probe succeeded, refreshed every probe interval.",
            |p| bool01(p.observation.status == crate::checks::Status::Ok),
        );
        one_each_probed(
            f,
            "telagent_check_duration_seconds",
            "Duration of the last probe, refreshed every probe interval.",
            |p| p.duration.as_secs_f64(),
        );
        one_each_probed(
            f,
            "telagent_check_last_run_timestamp_seconds",
            "End of the last probe, seconds since the Unix epoch.",
            |p| seconds(p.at),
        );
        for (t, _) in &probed {
            for v in t.values() {
                let mut labels = vec![("check", t.name.as_str())];
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
    }
}

/// The serial ports of the host and their UUCP locks.
impl Collector for crate::serial::inventory::Inventory {
    fn collect(&self, f: &mut Families) {
        for p in &self.ports() {
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
    }
}

/// A registry with the process collector (CPU, memory, file descriptors of this process).
fn process_registry() -> Registry {
    let r = Registry::new();
    #[cfg(target_os = "linux")]
    {
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        // Registering a fresh collector in a fresh registry cannot collide.
        let _ = r.register(Box::new(pc));
    }
    r
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
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
pub struct Families {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl Families {
    /// One sample of family `name` (created with `help` and `kind` at its first sample).
    pub fn add(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], v: f64) {
        let i = self.family(name, help, kind);
        self.sample_in(i, labels, v);
    }

    /// One sample of the family at `i` (from [`Families::family`]).
    pub fn sample_in(&mut self, i: usize, labels: &[(&str, &str)], v: f64) {
        let f = &mut self.families[i];
        sample(&mut f.samples, &f.name, labels, v);
    }

    /// The index of family `name`, created with `help` and `kind` at its first use. A
    /// family that never gets a sample is left out of the text.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.index.insert(name.to_string(), self.families.len());
        self.families.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: String::new(),
        });
        self.families.len() - 1
    }

    /// One histogram: `buckets` are (upper bound, observations at most that), ascending;
    /// the `+Inf` bucket is `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let i = self.family(name, help, Kind::Histogram);
        let out = &mut self.families[i].samples;
        let bucket = format!("{name}_bucket");
        let bounds: Vec<(String, u64)> = buckets
            .iter()
            .map(|(le, n)| (le.to_string(), *n))
            .chain([("+Inf".to_string(), count)])
            .collect();
        for (le, n) in &bounds {
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", le));
            sample(out, &bucket, &with_le, *n as f64);
        }
        sample(out, &format!("{name}_sum"), labels, sum);
        sample(out, &format!("{name}_count"), labels, count as f64);
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.add(name, help, Kind::Gauge, labels, v);
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.add(name, help, Kind::Counter, labels, v);
    }

    fn into_text(self) -> String {
        let size = self
            .families
            .iter()
            .map(|f| f.samples.len() + f.help.len() + 64)
            .sum();
        let mut out = String::with_capacity(size);
        for f in self.families.into_iter().filter(|f| !f.samples.is_empty()) {
            out.push_str("# HELP ");
            out.push_str(&f.name);
            out.push(' ');
            escape(&mut out, &f.help, false);
            out.push_str("\n# TYPE ");
            out.push_str(&f.name);
            out.push_str(match f.kind {
                Kind::Counter => " counter\n",
                Kind::Gauge => " gauge\n",
                Kind::Histogram => " histogram\n",
            });
            out.push_str(&f.samples);
        }
        out
    }
}

/// One sample line.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: f64) {
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

/// Seconds since the Unix epoch.
pub fn seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// 1 or 0.
pub fn bool01(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
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
    /// serial port with a stale lock; registered as `agent.rs` registers them.
    fn golden_metrics() -> Metrics {
        use crate::checks::Observation;
        use crate::engine::model::{Model, Probe, Target};
        use crate::engine::tracker::State;
        use crate::routing::decision::{GroupRoutes, RouteEntry, ServerState, ServerView};
        use crate::traffic::{Count, Direction, Key, SourceStats};
        use std::sync::atomic::Ordering::Relaxed;
        let mut info = crate::agent::Info::new(
            "fax1",
            &crate::config::Source::File("/etc/telagent/telagent.toml".into()),
        );
        info.started_at = at(1_795_000_000);
        info.reloaded(Some("rejected".into()));
        let audit = crate::audit::Stats::default();
        audit.write_error();
        audit.write_error();
        let model = Model::new();
        let mut m = model.write();
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
        drop(m);
        let view = |name: &str, state, speaker| ServerView {
            name: name.into(),
            state,
            reason: "r".into(),
            since: at(1_795_000_000),
            last_active: (name == "fax1").then(|| at(1_795_000_102)),
            agent_reachable: true,
            config_hash: None,
            config_drift: name == "fax2",
            drift_sections: Vec::new(),
            speaker,
            capacity: (name == "fax1").then_some(60),
        };
        let (_tx, snapshot) = tokio::sync::watch::channel(Arc::new(crate::routing::Snapshot {
            me: "fax1".into(),
            learned: true,
            quorum: true,
            sees: Default::default(),
            maintenance: None,
            config_hash: "h".into(),
            hashes: Default::default(),
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
                    weight: 60,
                    capacity: Some(60),
                    since: at(1_795_000_000),
                    routable: true,
                }],
            }],
        }));
        let kamailio = crate::routing::OutputStats::new("kamailio");
        for _ in 0..4 {
            kamailio.changed();
        }
        let hook = crate::routing::OutputStats::new("hook");
        hook.failed();
        let traffic = crate::traffic::Stats::default();
        let mut lifetime = std::collections::BTreeMap::new();
        for (line, direction, ok, messages, pages) in [
            ("ttyS0", Direction::Sent, true, 10, 25),
            ("ttyS0", Direction::Sent, false, 2, 0),
            ("ttyS1", Direction::Received, true, 3, 9),
        ] {
            lifetime.insert(
                Key {
                    server: "fax1".into(),
                    line: line.into(),
                    direction,
                    ok,
                },
                Count { messages, pages },
            );
        }
        traffic.set_lifetime(&lifetime);
        traffic.set_available(true);
        traffic.set_source(
            "xferfaxlog:/var/spool/hylafax/log/xferfaxlog",
            SourceStats {
                records: 15,
                malformed: 1,
                offset: 4096,
            },
        );
        // Attempts long ago: the success ratio over the last hour is absent, the one over
        // the last 32 attempts is not.
        let mut quality = crate::traffic::quality::Memory::default();
        let attempts: Vec<crate::traffic::Event> = (0..5)
            .map(|i| crate::traffic::Event {
                time: 1_000_000 + i,
                server: "fax1".into(),
                direction: Direction::Sent,
                ok: i != 2,
                line: "ttyS0".into(),
                pages: 1,
                seconds: 20,
                detail: crate::traffic::Detail {
                    class: (i == 2).then_some(crate::traffic::outcome::Class::Busy),
                    rate: Some(if i == 4 { 9600 } else { 14400 }),
                    ecm: Some(i != 4),
                    canary: i == 3,
                    ..Default::default()
                },
            })
            .collect();
        quality.add(
            &attempts
                .iter()
                .map(|e| (e.line.clone(), e))
                .collect::<Vec<_>>(),
        );
        traffic.set_quality(quality);
        for _ in 0..7 {
            traffic.batch("counted");
        }
        traffic.batch("rejected");
        let notify = Arc::new(crate::notify::Stats::default());
        for (name, sent) in [("nms", 9), ("scom", 3)] {
            notify.receivers().insert(
                name.into(),
                crate::notify::ReceiverStats {
                    sent,
                    acknowledged: sent - 1,
                    retried: 1,
                    auth_failures: 0,
                    dropped: 0,
                    forged: 0,
                    outbox_depth: 1,
                },
            );
        }
        notify.suppressed.store(6, Relaxed);
        let agentx = crate::snmp::agentx::Stats::default();
        agentx.registered.store(true, Relaxed);
        agentx.sessions.store(2, Relaxed);
        let inventory = crate::serial::inventory::Inventory::default();
        inventory.set(vec![crate::serial::inventory::PortInfo {
            name: "ttyS0".into(),
            path: "/dev/ttyS0".into(),
            driver: "serial8250".into(),
            lock: Some(crate::serial::lock::LockInfo {
                file: "/var/lock/LCK..ttyS0".into(),
                pid: Some(999_999),
                program: None,
                stale: true,
            }),
        }]);
        let metrics = Metrics::new(false);
        metrics.register(Arc::new(info));
        metrics.register(Arc::new(audit));
        metrics.register(Arc::new(model));
        metrics.register(Arc::new(crate::routing::Published(snapshot)));
        metrics.register(kamailio);
        metrics.register(hook);
        metrics.register(Arc::new(traffic));
        metrics.register(notify.clone());
        metrics.register(Arc::new(agentx));
        metrics.register(Arc::new(crate::notify::Suppressed(notify)));
        metrics.register(Arc::new(inventory));
        metrics
    }

    /// A check not yet probed has its state, counts and streak, and no family of a last
    /// probe: a family with no sample is not written (no HELP and TYPE for nothing).
    #[test]
    fn a_family_without_samples_is_left_out() {
        use crate::engine::model::{Model, Target};
        let model = Model::new();
        model.write().targets.insert(
            "t".into(),
            Target::new("t", "tcp", &["connect_refused"], Duration::from_secs(1)),
        );
        let metrics = Metrics::new(false);
        metrics.register(Arc::new(model));
        let text = metrics.render();
        for family in [
            "telagent_check_state",
            "telagent_check_probes_total",
            "telagent_check_failures_total",
            "telagent_check_consecutive_failures",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}: {text}"
            );
            assert!(
                text.contains(&format!("\n{family}{{check=\"t\"")),
                "{family}: {text}"
            );
        }
        assert!(!text.contains("telagent_check_success"), "{text}");
        assert!(!text.contains("telagent_check_duration_seconds"), "{text}");
    }

    /// The exposition of a fixed state, without the process collector, is byte for byte
    /// the recorded one: a change of /metrics shows here first.
    #[test]
    fn metrics_of_a_fixed_state_are_byte_identical_to_the_recorded_exposition() {
        let text = golden_metrics().render();
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
