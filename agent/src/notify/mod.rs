//! SNMP notifications of state changes (TELAGENT-MIB), to a list of receivers.
//!
//! Transitions from the bus become notifications ([`Kind`]): servers (down, up, drain,
//! inactive: only from the agent that speaks for the server, so a dead host is reported
//! once, by the survivor chosen by agreement), lines (modem checks), gateway channels and trunks,
//! queues, other checks, and the agent's own start and stop. Storm damping: a target gets
//! at most one notification per `hold`; what is held back is summed up in one
//! `telagentNotificationsSuppressed` when the hold ends.
//!
//! Every notification is written to the durable [`outbox`] before any sending, then
//! delivered in order by one task per receiver (`mode = "all"`), or by one task trying the
//! receivers in order until one acknowledges (`mode = "failover"`, informs only). Informs
//! are retried with exponential backoff (up to `max_backoff`) until acknowledged; traps
//! are delivered when sent.

pub mod outbox;
pub mod traps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::engine::bus::Transition;
use crate::engine::tracker::State;
use crate::metrics::{Collector, Families};

/// `[notify]`: SNMP notifications.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `all`: every receiver gets every notification; `failover`: the first receiver that
    /// acknowledges (informs only), in the order listed.
    #[serde(default)]
    pub mode: Mode,
    /// Shortest time between two notifications about one target (storm damping).
    #[serde(default = "default_hold", with = "crate::vocab::duration")]
    pub hold: Duration,
    /// How long an inform waits for its acknowledgement.
    #[serde(default = "default_timeout", with = "crate::vocab::duration")]
    pub timeout: Duration,
    /// Longest wait between two attempts of an unacknowledged inform.
    #[serde(default = "default_max_backoff", with = "crate::vocab::duration")]
    pub max_backoff: Duration,
    /// Most notifications waiting per receiver; past it the oldest is dropped (counted).
    #[serde(default = "default_outbox_limit")]
    pub outbox_limit: usize,
    /// This agent's SNMPv3 engine id in hex; default: the enterprise and the server name.
    #[serde(default)]
    pub engine_id: Option<String>,
    /// The receivers.
    #[serde(default)]
    pub receiver: Vec<ReceiverConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    All,
    Failover,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V2c,
    V3,
}

/// `[[notify.receiver]]`: one trap receiver or NMS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Name (the `receiver` label).
    pub name: String,
    /// `host:port` (usually port 162).
    pub address: String,
    /// `v2c` or `v3`.
    pub version: Version,
    /// Send informs (acknowledged, retried) instead of traps.
    #[serde(default)]
    pub inform: bool,
    /// v2c community.
    #[serde(default)]
    pub community: Option<String>,
    /// v3 user name.
    #[serde(default)]
    pub user: Option<String>,
    /// v3 authentication: `sha` or `sha256`.
    #[serde(default)]
    pub auth: Option<crate::snmp::usm::Auth>,
    /// v3 authentication password (at least 8 characters).
    #[serde(default)]
    pub auth_password: Option<String>,
    /// v3 privacy (AES-128) password (at least 8 characters).
    #[serde(default)]
    pub priv_password: Option<String>,
    /// Only these notifications (MIB names such as `telagentServerDown`); default all.
    #[serde(default)]
    pub notifications: Option<Vec<String>>,
    /// Only notifications at least this severe (`info` < `warning` < `critical`; clears
    /// always pass); default all.
    #[serde(default)]
    pub min_severity: Option<Severity>,
}

fn default_hold() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_outbox_limit() -> usize {
    10_000
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            mode: Mode::All,
            hold: default_hold(),
            timeout: default_timeout(),
            max_backoff: default_max_backoff(),
            outbox_limit: default_outbox_limit(),
            engine_id: None,
            receiver: Vec::new(),
        }
    }
}

impl NotifyConfig {
    /// Cross-key rules. `Err((key path, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(e) = &self.engine_id {
            if parse_hex(e).is_none_or(|b| !(5..=32).contains(&b.len())) {
                return Err((
                    "notify.engine_id".into(),
                    "must be 5 to 32 bytes in hex, such as \"8001860704666178\"".into(),
                ));
            }
        }
        if self.outbox_limit == 0 {
            return Err(("notify.outbox_limit".into(), "must be at least 1".into()));
        }
        for (i, r) in self.receiver.iter().enumerate() {
            let key = |k: &str| format!("notify.receiver[{i}].{k}");
            if !crate::vocab::valid_name(&r.name)
                || self.receiver[..i].iter().any(|o| o.name == r.name)
            {
                return Err((
                    key("name"),
                    "needs a unique name of A-Z, a-z, 0-9, '-', '_', '.', ':'".into(),
                ));
            }
            match r.version {
                Version::V2c if r.community.is_none() => {
                    return Err((key("community"), "a v2c receiver needs a community".into()))
                }
                Version::V3 => {
                    for (k, v) in [
                        ("user", &r.user),
                        ("auth_password", &r.auth_password),
                        ("priv_password", &r.priv_password),
                    ] {
                        match v {
                            None => {
                                return Err((key(k), "a v3 receiver (authPriv) needs it".into()))
                            }
                            Some(p) if k != "user" && p.len() < 8 => {
                                return Err((
                                    key(k),
                                    "must be at least 8 characters (RFC 3414)".into(),
                                ))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            if self.mode == Mode::Failover && !r.inform {
                return Err((
                    key("inform"),
                    "failover needs informs: a trap is never acknowledged, so a dead primary could not be noticed".into(),
                ));
            }
            for n in r.notifications.iter().flatten() {
                if Kind::from_name(n).is_none() {
                    return Err((
                        key("notifications"),
                        format!(
                            "`{n}` is not a TELAGENT-MIB notification such as telagentServerDown"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_start_matches("0x");
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Notification types of TELAGENT-MIB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    ServerDown,
    ServerUp,
    ServerDrain,
    ServerInactive,
    LineDown,
    LineUp,
    GatewayChannelsExhausted,
    GatewayChannelsRestored,
    TrunkAlarm,
    TrunkClear,
    QueueHigh,
    QueueNormal,
    AgentStart,
    AgentStop,
    CheckDown,
    CheckUp,
    NotificationsSuppressed,
    NotificationsDropped,
    LineQualityLow,
    LineQualityOk,
}

const KINDS: [Kind; 20] = [
    Kind::ServerDown,
    Kind::ServerUp,
    Kind::ServerDrain,
    Kind::ServerInactive,
    Kind::LineDown,
    Kind::LineUp,
    Kind::GatewayChannelsExhausted,
    Kind::GatewayChannelsRestored,
    Kind::TrunkAlarm,
    Kind::TrunkClear,
    Kind::QueueHigh,
    Kind::QueueNormal,
    Kind::AgentStart,
    Kind::AgentStop,
    Kind::CheckDown,
    Kind::CheckUp,
    Kind::NotificationsSuppressed,
    Kind::NotificationsDropped,
    Kind::LineQualityLow,
    Kind::LineQualityOk,
];

impl Kind {
    /// The number under telagentNotifications.
    pub fn number(self) -> u32 {
        KINDS.iter().position(|k| *k == self).unwrap_or(0) as u32 + 1
    }

    /// The MIB name (`telagentServerDown`).
    pub fn name(self) -> &'static str {
        crate::snmp::mib::NOTIFICATIONS[self.number() as usize - 1].1
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.name() == s)
    }

    /// The notification that ends this one's problem.
    fn clear(self) -> Kind {
        match self {
            Kind::ServerDown | Kind::ServerDrain | Kind::ServerInactive => Kind::ServerUp,
            Kind::LineDown => Kind::LineUp,
            Kind::GatewayChannelsExhausted => Kind::GatewayChannelsRestored,
            Kind::TrunkAlarm => Kind::TrunkClear,
            Kind::QueueHigh => Kind::QueueNormal,
            Kind::LineQualityLow => Kind::LineQualityOk,
            _ => Kind::CheckUp,
        }
    }
}

/// TelagentSeverity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Cleared = 1,
    Info = 2,
    Warning = 3,
    Critical = 4,
}

/// A target's state as TELAGENT-MIB's TelagentState.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NState {
    Unknown,
    Up,
    Degraded,
    Down,
}

impl NState {
    pub fn mib_value(self) -> i64 {
        match self {
            NState::Unknown => 1,
            NState::Up => 2,
            NState::Degraded => 3,
            NState::Down => 4,
        }
    }
}

impl From<State> for NState {
    fn from(s: State) -> Self {
        match s {
            State::Unknown => NState::Unknown,
            State::Up => NState::Up,
            State::Degraded => NState::Degraded,
            State::Down => NState::Down,
        }
    }
}

/// One notification, as stored in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub kind: Kind,
    pub target: String,
    pub state: NState,
    pub reason: String,
    pub severity: Severity,
    /// The server whose agent sends it.
    pub server: String,
    /// Notifications held back by damping (summaries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u32>,
    /// When the event happened (kept through queues and restarts).
    #[serde(
        default = "std::time::SystemTime::now",
        with = "crate::engine::model::rfc3339"
    )]
    pub time: std::time::SystemTime,
    /// Number of the event in this agent, given by the outbox as it is queued, kept across
    /// restarts (0 until then).
    #[serde(default)]
    pub sequence: u64,
    /// Kind of the target (`server`, `tcp`, `modem`, ..., `agent`).
    #[serde(default)]
    pub check_kind: String,
    /// Notifications lost to an outbox overflow (dropped reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u32>,
}

impl Notification {
    /// A notification about this agent itself, now.
    pub fn agent(
        kind: Kind,
        server: &str,
        state: NState,
        severity: Severity,
        reason: String,
    ) -> Self {
        Notification {
            kind,
            target: server.to_string(),
            state,
            reason,
            severity,
            server: server.to_string(),
            suppressed: None,
            time: std::time::SystemTime::now(),
            sequence: 0,
            check_kind: "agent".into(),
            dropped: None,
        }
    }
}

/// The notification a transition means, if any. `speaker`: this agent speaks for the
/// server of a `server` transition. `last`: the problem last notified for the target.
pub fn from_transition(t: &Transition, speaker: bool, last: Option<Kind>) -> Option<Notification> {
    let to: NState = t.to.into();
    if t.to == State::Up && matches!(t.from, State::Unknown) {
        return None; // the first observations are not news
    }
    let severity = match t.to {
        State::Up => Severity::Cleared,
        State::Degraded => Severity::Warning,
        _ => Severity::Critical,
    };
    let kind = match (t.kind, t.to) {
        ("server", _) if !speaker => return None,
        ("server", State::Up) => Kind::ServerUp,
        ("server", State::Degraded) => Kind::ServerDrain,
        ("server", _) if t.reason.starts_with("inactive") => Kind::ServerInactive,
        ("server", _) => Kind::ServerDown,
        (_, State::Up) => last.map_or(
            match t.kind {
                "modem" => Kind::LineUp,
                "queue" => Kind::QueueNormal,
                "gateway" => Kind::GatewayChannelsRestored,
                "line_quality" => Kind::LineQualityOk,
                _ => Kind::CheckUp,
            },
            Kind::clear,
        ),
        (_, State::Unknown) => return None,
        ("modem", _) => Kind::LineDown,
        ("line_quality", _) => Kind::LineQualityLow,
        ("gateway", _) => match t.error_type {
            Some("trunk_alarm") => Kind::TrunkAlarm,
            Some("channels_exhausted" | "few_channels" | "no_usable_channel" | "no_channels") => {
                Kind::GatewayChannelsExhausted
            }
            _ => Kind::CheckDown,
        },
        ("queue", _) if matches!(t.error_type, Some("high_water" | "too_old")) => Kind::QueueHigh,
        _ => Kind::CheckDown,
    };
    Some(Notification {
        kind,
        target: t.target.clone(),
        state: to,
        reason: format!("{}: {}", t.reason, t.detail),
        severity,
        server: t.server.clone(),
        suppressed: None,
        time: t.time,
        sequence: 0,
        check_kind: t.kind.to_string(),
        dropped: None,
    })
}

/// Delivery counters of every receiver (or failover queue), and what storm damping held
/// back.
#[derive(Debug, Default)]
pub struct Stats {
    receivers: Mutex<BTreeMap<String, ReceiverStats>>,
    pub(crate) suppressed: std::sync::atomic::AtomicU64,
}

impl Stats {
    pub(crate) fn receivers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ReceiverStats>> {
        self.receivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Delivery of SNMP notifications, per receiver (or the failover queue).
impl Collector for Stats {
    fn collect(&self, f: &mut Families) {
        for (name, st) in self.receivers().iter() {
            let l = [("receiver", name.as_str())];
            for (metric, help, v) in [
                ("telagent_notifications_sent_total", "Notifications sent (every attempt, retries included).", st.sent),
                ("telagent_notifications_acknowledged_total", "Informs acknowledged by the receiver.", st.acknowledged),
                ("telagent_notifications_retried_total", "Inform attempts not acknowledged in time (retried with backoff).", st.retried),
                ("telagent_notifications_auth_failures_total", "Notifications the receiver refused (v3 reports: wrong user, digest or privacy password).", st.auth_failures),
                ("telagent_notifications_dropped_total", "Notifications dropped because the outbox was full (oldest first).", st.dropped),
                ("telagent_notifications_forged_answers_total", "Answers to v3 informs dropped because their HMAC was wrong (forged, or from another sender).", st.forged),
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
    }
}

/// What storm damping held back, as its own family (registered after AgentX's, where
/// /metrics has always shown it).
pub struct Suppressed(pub Arc<Stats>);

impl Collector for Suppressed {
    fn collect(&self, f: &mut Families) {
        if !self.0.receivers().is_empty() {
            f.counter(
                "telagent_notifications_suppressed_total",
                "Notifications held back by storm damping (summed up in telagentNotificationsSuppressed).",
                &[],
                self.0.suppressed.load(std::sync::atomic::Ordering::Relaxed) as f64,
            );
        }
    }
}

/// Delivery counters of one receiver, for /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub sent: u64,
    pub acknowledged: u64,
    pub retried: u64,
    pub auth_failures: u64,
    pub dropped: u64,
    pub forged: u64,
    pub outbox_depth: u64,
}

/// Reads and increments engineBoots in `<state_dir>/snmp-engine-boots` (fsynced): receivers
/// drop v3 messages whose boots go back.
pub fn next_boots(state_dir: &std::path::Path) -> std::io::Result<u32> {
    let path = state_dir.join("snmp-engine-boots");
    let old: u32 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let boots = old.saturating_add(1).min(2_147_483_647);
    crate::files::write_durably(&path, format!("{boots}\n").as_bytes())?;
    Ok(boots)
}

/// The queue names of the outbox for a config.
fn queues(c: &NotifyConfig) -> Vec<String> {
    match c.mode {
        Mode::All => c.receiver.iter().map(|r| r.name.clone()).collect(),
        Mode::Failover => vec!["failover".to_string()],
    }
}

/// Whether a receiver takes a notification. A clear always passes `min_severity`: a
/// receiver that got the alarm needs to learn that it ended.
fn wanted(r: &ReceiverConfig, n: &Notification) -> bool {
    r.min_severity
        .is_none_or(|m| n.severity == Severity::Cleared || n.severity >= m)
        && r.notifications
            .as_ref()
            .is_none_or(|list| list.iter().any(|k| k == n.kind.name()))
}

/// The running notifier.
pub struct Notifier {
    config: NotifyConfig,
    outbox: Arc<Mutex<outbox::Outbox>>,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
    server: String,
    engine: traps::Engine,
    /// Per queue: when an overflow was last logged, and drops since then.
    drop_log: Mutex<BTreeMap<String, (Instant, u64)>>,
}

/// How often an overflowing outbox is logged.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Notifier {
    /// Opens the outbox and takes the next engineBoots; None without receivers.
    pub fn open(
        config: &NotifyConfig,
        state_dir: &std::path::Path,
        server: &str,
        stats: Arc<Stats>,
    ) -> Result<Option<Notifier>, String> {
        if config.receiver.is_empty() {
            return Ok(None);
        }
        let boots = next_boots(state_dir).map_err(|e| {
            format!(
                "cannot write {}: {e}",
                state_dir.join("snmp-engine-boots").display()
            )
        })?;
        let mut outbox = outbox::Outbox::open(&outbox_path(state_dir), config.outbox_limit)?;
        let current: Vec<(String, Vec<String>)> = queues(config)
            .into_iter()
            .map(|q| {
                let addresses = config
                    .receiver
                    .iter()
                    .filter(|r| config.mode == Mode::Failover || r.name == q)
                    .map(|r| r.address.clone())
                    .collect();
                (q, addresses)
            })
            .collect();
        let orphans = outbox
            .adopt(&current)
            .map_err(|e| format!("outbox {}: {e}", outbox_path(state_dir).display()))?;
        let id = config
            .engine_id
            .as_deref()
            .and_then(parse_hex)
            .unwrap_or_else(|| traps::default_engine_id(server));
        Ok(Some(Notifier {
            config: config.clone(),
            outbox: Arc::new(Mutex::new(outbox)),
            wake: Arc::new(Notify::new()),
            stats,
            server: server.to_string(),
            engine: traps::Engine {
                id,
                boots,
                started: Instant::now(),
            },
            drop_log: Mutex::new(BTreeMap::new()),
        })
        .inspect(|n| n.settle(&orphans)))
    }

    /// Logs what became of the rows of queues that no longer exist, and reports a drop to
    /// every receiver.
    fn settle(&self, orphans: &[outbox::Orphans]) {
        for o in orphans {
            match &o.moved_to {
                Some(to) => {
                    tracing::info!(queue = %o.queue, to = %to, notifications = o.rows, "Notifications queued for a receiver no longer configured go to the receiver at the same address.")
                }
                None => {
                    tracing::warn!(queue = %o.queue, notifications = o.rows, "Notifications queued for a receiver no longer configured were dropped: no receiver has its address.");
                    let mut n = Notification::agent(
                        Kind::NotificationsDropped,
                        &self.server,
                        NState::Up,
                        Severity::Warning,
                        format!(
                            "{} notification(s) queued for receiver {}, no longer configured, were dropped (no receiver has its address)",
                            o.rows, o.queue
                        ),
                    );
                    n.target = o.queue.clone();
                    n.time = o.oldest.unwrap_or(n.time);
                    n.dropped = Some(o.rows.min(u32::MAX as usize) as u32);
                    self.enqueue(&n);
                }
            }
        }
    }

    /// Runs `f` on the outbox. SQLite blocks: on the multi-threaded runtime the worker
    /// thread first hands its other tasks on (`block_in_place`), so a slow disk never
    /// stalls a probe or the HTTP server.
    fn outbox<R>(&self, f: impl FnOnce(&mut outbox::Outbox) -> R) -> R {
        let run = || {
            f(&mut self
                .outbox
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }

    /// The queues that take a notification: every receiver that wants it, or the
    /// failover queue.
    fn queues_for(&self, n: &Notification) -> Vec<String> {
        match self.config.mode {
            Mode::All => self
                .config
                .receiver
                .iter()
                .filter(|r| wanted(r, n))
                .map(|r| r.name.clone())
                .collect(),
            Mode::Failover => queues(&self.config),
        }
    }

    /// Writes a notification to the outbox of every receiver that wants it.
    pub fn enqueue(&self, n: &Notification) {
        self.enqueue_to(&self.queues_for(n), n);
    }

    /// Writes a notification to the outbox of `targets`, as one event (one sequence number).
    fn enqueue_to(&self, targets: &[String], n: &Notification) {
        if targets.is_empty() {
            return;
        }
        let mut n = n.clone();
        let pushed = self.outbox(|o| o.push(targets, &mut n));
        match pushed {
            Ok(dropped) => {
                let mut m = self.stats.receivers();
                for (q, d) in targets.iter().zip(dropped) {
                    let s = m.entry(q.clone()).or_default();
                    s.dropped += d as u64;
                    s.outbox_depth += 1;
                    s.outbox_depth -= d as u64;
                    if d > 0 {
                        self.log_drop(q, d as u64);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot write a notification to the outbox; it is lost.")
            }
        }
        self.wake.notify_waiters();
    }

    /// One WARN line per queue and [`DROP_LOG_INTERVAL`] for an overflowing outbox.
    fn log_drop(&self, queue: &str, dropped: u64) {
        let mut log = self
            .drop_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let e = log
            .entry(queue.to_string())
            .or_insert((now - DROP_LOG_INTERVAL, 0));
        e.1 += dropped;
        if now.duration_since(e.0) >= DROP_LOG_INTERVAL {
            tracing::warn!(queue = %queue, dropped = e.1, limit = self.config.outbox_limit, "Outbox full: the oldest notifications were dropped (this line repeats at most once a minute, with the count since the last). The receiver is told how many once delivery resumes.");
            *e = (now, 0);
        }
    }

    /// Logs the drops of `queue` not logged yet (delivery resumed: the summary is due).
    fn flush_drop_log(&self, queue: &str) {
        let mut log = self
            .drop_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = log.get_mut(queue).filter(|e| e.1 > 0) {
            tracing::warn!(queue = %queue, dropped = e.1, limit = self.config.outbox_limit, "Outbox full: the oldest notifications were dropped (the last of them, logged as delivery resumes). The receiver is told how many.");
            *e = (Instant::now(), 0);
        }
    }

    /// Clears, once, the problems notified for targets that are no longer configured (a
    /// check removed): the NMS would keep their alarms open forever. `targets`: (kind,
    /// name) of every check and server now.
    pub fn clear_removed(&self, targets: &[(String, String)]) {
        let open = self.outbox(|o| o.open_problems()).unwrap_or_default();
        for (kind, target) in open {
            if targets.iter().any(|(k, t)| *k == kind && *t == target) {
                continue;
            }
            for q in queues(&self.config) {
                let Some((problem, severity)) =
                    self.outbox(|o| o.last_notified(&q, &kind, &target))
                else {
                    continue;
                };
                if severity == Severity::Cleared {
                    continue;
                }
                let n = Notification {
                    kind: problem.clear(),
                    target: target.clone(),
                    state: NState::Unknown,
                    reason: "no longer monitored: removed from the configuration".into(),
                    severity: Severity::Cleared,
                    server: self.server.clone(),
                    suppressed: None,
                    time: std::time::SystemTime::now(),
                    sequence: 0,
                    check_kind: kind.clone(),
                    dropped: None,
                };
                self.enqueue_to(&[q], &n);
            }
        }
    }

    /// What a target's first observation (at start, after a reload) means to each queue:
    /// the queue was told of a problem that has ended since (its clear), or of another
    /// state (the new one); nothing when it already knows. `speaker`: this agent speaks for
    /// a server. Returns the notifications with their queues.
    fn first_news(&self, t: &Transition, speaker: bool) -> Vec<(Vec<String>, Notification)> {
        let mut out: Vec<(Vec<String>, Notification)> = Vec::new();
        let fault = from_transition(t, speaker, None);
        let probe = fault.clone().or_else(|| {
            // A first observation `up` is no news by itself: a clear only for queues
            // told of a problem.
            let as_return = Transition {
                from: State::Down,
                ..t.clone()
            };
            from_transition(&as_return, speaker, None)
        });
        let Some(probe) = probe else {
            return out;
        };
        for q in self.queues_for(&probe) {
            let last = self.outbox(|o| o.last_notified(&q, t.kind, &t.target));
            let n = match (&fault, last) {
                (Some(f), Some((kind, severity))) if kind == f.kind && severity == f.severity => {
                    None
                }
                (Some(f), _) => Some(f.clone()),
                (None, Some((kind, severity))) if severity != Severity::Cleared => {
                    let as_return = Transition {
                        from: State::Down,
                        ..t.clone()
                    };
                    from_transition(&as_return, speaker, Some(kind)).map(|mut n| {
                        n.reason = format!("{} (cleared since the last notification)", n.reason);
                        n
                    })
                }
                (None, _) => None,
            };
            if let Some(n) = n {
                match out.iter_mut().find(|(_, o)| *o == n) {
                    Some((qs, _)) => qs.push(q),
                    None => out.push((vec![q], n)),
                }
            }
        }
        out
    }

    /// Starts the delivery tasks and the transition consumer. `snapshots` tells which
    /// servers this agent speaks for.
    /// The tasks end once the bus is closed and what is left is sent (or 2 s passed: the
    /// rest waits in the outbox for the next start).
    /// `problem`: what is wrong with the agent itself at start (its AgentStart is then
    /// degraded, a warning, with the problem as the reason).
    pub fn start(
        self,
        mut transitions: mpsc::UnboundedReceiver<Transition>,
        mut snapshots: watch::Receiver<Arc<crate::routing::Snapshot>>,
        problem: Option<String>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let cancel = CancellationToken::new();
        let me = Arc::new(self);
        {
            let mut m = me.stats.receivers();
            for q in queues(&me.config) {
                let depth = me.outbox(|o| o.depth(&q)).unwrap_or(0);
                m.entry(q).or_default().outbox_depth = depth;
            }
        }
        // Not inside the enqueue call: a read guard held there would block its write.
        let server = me.server.clone();
        let started = format!(
            "telagent {} started (engine boots {})",
            env!("CARGO_PKG_VERSION"),
            me.engine.boots
        );
        let (state, severity, reason) = match problem {
            None => (NState::Up, Severity::Info, started),
            Some(p) => (
                NState::Degraded,
                Severity::Warning,
                format!("{started}, degraded: {p}"),
            ),
        };
        me.enqueue(&Notification::agent(
            Kind::AgentStart,
            &server,
            state,
            severity,
            reason,
        ));
        let mut tasks = Vec::new();
        for q in queues(&me.config) {
            tasks.push(tokio::spawn(deliver(me.clone(), q, cancel.clone())));
        }
        let consumer = me.clone();
        tasks.push(tokio::spawn(async move {
            let mut damper = Damper::default();
            let mut pending_servers: Vec<Transition> = Vec::new();
            loop {
                let wake_at = damper.next_deadline(consumer.config.hold);
                tokio::select! {
                    t = transitions.recv() => match t {
                        Some(t) if t.kind == "server" => pending_servers.push(t),
                        Some(t) if t.from == State::Unknown => damper.first(&consumer, &t, true),
                        Some(t) => {
                            if let Some(n) = from_transition(&t, true, damper.last_problem(&t.target)) {
                                damper.offer(&consumer, n);
                            }
                        }
                        None => break,
                    },
                    // Once routing has stopped (shutdown), this branch is off: no spin.
                    Ok(()) = snapshots.changed() => {
                        let snap = snapshots.borrow_and_update().clone();
                        for t in pending_servers.drain(..) {
                            let speaker = snap.servers.iter().any(|s| s.name == t.target && s.speaker);
                            if t.from == State::Unknown {
                                damper.first(&consumer, &t, speaker);
                            } else if let Some(n) = from_transition(&t, speaker, damper.last_problem(&t.target)) {
                                damper.offer(&consumer, n);
                            }
                        }
                    }
                    _ = sleep_until(wake_at) => damper.flush(&consumer),
                }
            }
            damper.flush_all(&consumer);
            let server = consumer.server.clone();
            consumer.enqueue(&Notification::agent(
                Kind::AgentStop,
                &server,
                NState::Down,
                Severity::Warning,
                "telagent is stopping".into(),
            ));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < deadline {
                let left: u64 = queues(&consumer.config)
                    .iter()
                    .map(|q| consumer.outbox(|o| o.depth(q)).unwrap_or(0))
                    .sum();
                if left == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cancel.cancel();
        }));
        tasks
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Storm damping: at most one notification per target per hold time.
#[derive(Default)]
struct Damper {
    last_sent: BTreeMap<String, tokio::time::Instant>,
    /// Held back per target: count and the latest.
    held: BTreeMap<String, (u32, Notification)>,
    /// The problem last notified per target, to pick the matching clear.
    problems: BTreeMap<String, Kind>,
}

impl Damper {
    fn last_problem(&self, target: &str) -> Option<Kind> {
        self.problems.get(target).copied()
    }

    /// A target's first observation: what each queue has not been told yet, at once.
    fn first(&mut self, n: &Notifier, t: &Transition, speaker: bool) {
        for (queues, notification) in n.first_news(t, speaker) {
            self.note(&notification);
            self.last_sent
                .insert(notification.target.clone(), tokio::time::Instant::now());
            n.enqueue_to(&queues, &notification);
        }
    }

    /// Remembers the problem notified for a target, to pick the matching clear.
    fn note(&mut self, notification: &Notification) {
        if notification.severity == Severity::Cleared {
            self.problems.remove(&notification.target);
        } else {
            self.problems
                .insert(notification.target.clone(), notification.kind);
        }
    }

    fn offer(&mut self, n: &Notifier, notification: Notification) {
        let hold = n.config.hold;
        let now = tokio::time::Instant::now();
        self.note(&notification);
        let recent = self
            .last_sent
            .get(&notification.target)
            .is_some_and(|t| now.duration_since(*t) < hold);
        if recent {
            let e = self
                .held
                .entry(notification.target.clone())
                .or_insert((0, notification.clone()));
            e.0 += 1;
            e.1 = notification;
            n.stats
                .suppressed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        self.last_sent.insert(notification.target.clone(), now);
        n.enqueue(&notification);
    }

    fn next_deadline(&self, hold: Duration) -> Option<tokio::time::Instant> {
        self.held
            .keys()
            .filter_map(|t| self.last_sent.get(t))
            .min()
            .map(|t| *t + hold)
    }

    fn flush(&mut self, n: &Notifier) {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .held
            .keys()
            .filter(|t| {
                self.last_sent
                    .get(*t)
                    .is_none_or(|s| now.duration_since(*s) >= n.config.hold)
            })
            .cloned()
            .collect();
        for t in due {
            if let Some((count, latest)) = self.held.remove(&t) {
                self.last_sent.insert(t, now);
                n.enqueue(&summary(count, latest));
            }
        }
    }

    fn flush_all(&mut self, n: &Notifier) {
        for (_, (count, latest)) in std::mem::take(&mut self.held) {
            n.enqueue(&summary(count, latest));
        }
    }
}

fn summary(count: u32, latest: Notification) -> Notification {
    Notification {
        kind: Kind::NotificationsSuppressed,
        reason: format!(
            "{count} notification(s) held back by storm damping; latest: {} ({})",
            latest.kind.name(),
            latest.reason
        ),
        suppressed: Some(count),
        ..latest
    }
}

/// Delivers one queue in order until cancelled.
async fn deliver(n: Arc<Notifier>, queue: String, cancel: CancellationToken) {
    let receivers: Vec<ReceiverConfig> = match n.config.mode {
        Mode::All => n
            .config
            .receiver
            .iter()
            .filter(|r| r.name == queue)
            .cloned()
            .collect(),
        Mode::Failover => n.config.receiver.clone(),
    };
    let mut senders: Vec<traps::Sender> = receivers.into_iter().map(traps::Sender::new).collect();
    // Failover's circuit breaker: a receiver that did not answer is skipped until its
    // time comes, then tried with one notification; each failure doubles its wait.
    let mut breakers: Vec<Breaker> = senders.iter().map(|_| Breaker::default()).collect();
    let mut backoff = Duration::from_millis(250);
    loop {
        let notified = n.wake.notified();
        let next = n.outbox(|o| o.peek(&queue));
        let (seq, notification) = match next {
            Ok(Some((seq, Some(x)))) => (seq, x),
            Ok(Some((seq, None))) => {
                tracing::warn!(queue = %queue, seq, "Unreadable notification in the outbox; removed.");
                let _ = n.outbox(|o| o.remove(seq));
                continue;
            }
            Ok(None) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = notified => continue,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the outbox.");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut delivered = None;
        for (i, s) in senders.iter_mut().enumerate() {
            if n.config.mode == Mode::Failover && !wanted(&s.config, &notification) {
                continue;
            }
            if n.config.mode == Mode::Failover && breakers[i].open() {
                continue;
            }
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                o = s.deliver(&notification, &n.engine, n.config.timeout) => o,
            };
            let name = s.config.name.clone();
            let mut m = n.stats.receivers();
            let st = m.entry(name.clone()).or_default();
            st.forged = s.forged;
            match outcome {
                traps::Outcome::Sent => {
                    st.sent += 1;
                    delivered = Some(i);
                }
                traps::Outcome::Acked => {
                    st.sent += 1;
                    st.acknowledged += 1;
                    delivered = Some(i);
                }
                traps::Outcome::NoAnswer(e) => {
                    st.sent += 1;
                    st.retried += 1;
                    tracing::debug!(receiver = %name, error = %e, "Inform not acknowledged; will retry.");
                }
                traps::Outcome::AuthFailed(e) => {
                    st.sent += 1;
                    st.auth_failures += 1;
                    tracing::warn!(receiver = %name, error = %e, "Notification refused; check the receiver's credentials.");
                }
            }
            drop(m);
            if n.config.mode == Mode::Failover {
                breakers[i].record(delivered.is_some(), n.config.max_backoff, &name);
            }
            if delivered.is_some() {
                break;
            }
        }
        if let Some(i) = delivered {
            n.flush_drop_log(&queue);
            report_lost(&n, &queue, &mut senders[i]).await;
            let _ = n.outbox(|o| o.remove(seq));
            let depth = n.outbox(|o| o.depth(&queue)).unwrap_or(0);
            n.stats
                .receivers()
                .entry(queue.clone())
                .or_default()
                .outbox_depth = depth;
            backoff = Duration::from_millis(250);
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(n.config.max_backoff);
    }
}

/// Failover's view of one receiver: skipped while it is known to fail.
#[derive(Default)]
struct Breaker {
    failures: u32,
    until: Option<Instant>,
}

impl Breaker {
    /// Skip this receiver now (it failed, and its wait is not over).
    fn open(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }

    /// After an attempt: a success closes it; a failure skips the receiver for 1 s,
    /// doubling up to `max` (it is then tried again with one notification).
    fn record(&mut self, ok: bool, max: Duration, name: &str) {
        if ok {
            if self.failures > 0 {
                tracing::info!(receiver = %name, "Receiver answers again; failover uses it again.");
            }
            *self = Breaker::default();
            return;
        }
        self.failures += 1;
        let wait = (Duration::from_secs(1) * 2u32.saturating_pow(self.failures.min(16) - 1))
            .min(max.max(Duration::from_secs(1)));
        if self.failures == 1 {
            tracing::warn!(receiver = %name, "Receiver did not answer; failover skips it, trying it again with one notification at a time.");
        }
        self.until = Some(Instant::now() + wait);
    }
}

/// Tells the receiver behind `sender`, which has just taken a notification, what an
/// overflow of its queue dropped, once: telagentNotificationsDropped with the count and
/// the oldest lost event's time. Kept for the next time if it is not delivered.
async fn report_lost(n: &Notifier, queue: &str, sender: &mut traps::Sender) {
    let Ok(Some(lost)) = n.outbox(|o| o.lost(queue)) else {
        return;
    };
    let Ok(sequence) = n.outbox(|o| o.next_sequence()) else {
        return;
    };
    let mut report = Notification::agent(
        Kind::NotificationsDropped,
        &n.server,
        NState::Up,
        Severity::Warning,
        format!(
            "{} notification(s) for this receiver were dropped while it could not be reached (outbox limit {}), the oldest from {}; poll the tables for the current states",
            lost.count,
            n.config.outbox_limit,
            humantime::format_rfc3339_seconds(lost.oldest)
        ),
    );
    report.target = queue.to_string();
    report.time = lost.oldest;
    report.sequence = sequence;
    report.dropped = Some(lost.count.min(u64::from(u32::MAX)) as u32);
    match sender.deliver(&report, &n.engine, n.config.timeout).await {
        traps::Outcome::Sent | traps::Outcome::Acked => {
            let _ = n.outbox(|o| o.reported(queue, lost.count));
            tracing::info!(queue = %queue, dropped = lost.count, "Told the receiver how many notifications it lost to the overflow.");
        }
        _ => {}
    }
}

/// Where the outbox of a state dir lives (for tests and tools).
pub fn outbox_path(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("outbox.db")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;

    fn transition(
        kind: &'static str,
        from: State,
        to: State,
        error: Option<&'static str>,
    ) -> Transition {
        Transition {
            time: std::time::SystemTime::now(),
            server: "fax1".into(),
            target: "t".into(),
            kind,
            from,
            to,
            reason: "3 consecutive failures (fall 3)".into(),
            status: Status::Fail,
            error_type: error,
            detail: "d".into(),
            duration: Duration::ZERO,
            speaker: None,
        }
    }

    #[test]
    fn transitions_map_to_mib_notifications() {
        let k = |t: Transition, last| from_transition(&t, true, last).map(|n| n.kind);
        assert_eq!(
            k(transition("modem", State::Up, State::Down, None), None),
            Some(Kind::LineDown)
        );
        assert_eq!(
            k(
                transition("gateway", State::Up, State::Degraded, Some("trunk_alarm")),
                None
            ),
            Some(Kind::TrunkAlarm)
        );
        assert_eq!(
            k(
                transition("gateway", State::Degraded, State::Up, None),
                Some(Kind::TrunkAlarm)
            ),
            Some(Kind::TrunkClear)
        );
        assert_eq!(
            k(
                transition("queue", State::Up, State::Degraded, Some("high_water")),
                None
            ),
            Some(Kind::QueueHigh)
        );
        assert_eq!(
            k(transition("tcp", State::Unknown, State::Up, None), None),
            None
        );
        assert_eq!(
            k(transition("server", State::Up, State::Degraded, None), None),
            Some(Kind::ServerDrain)
        );
        assert_eq!(
            from_transition(
                &transition("server", State::Up, State::Down, None),
                false,
                None
            ),
            None,
            "only the speaker reports a server"
        );
        assert_eq!(Kind::ServerDown.name(), "telagentServerDown");
        assert_eq!(Kind::NotificationsSuppressed.number(), 17);
    }

    #[test]
    fn receivers_filter_by_name_and_severity() {
        let mut r: ReceiverConfig = toml::from_str(
            "name = \"r\"\naddress = \"127.0.0.1:162\"\nversion = \"v2c\"\ncommunity = \"c\"\nmin_severity = \"warning\"\n",
        )
        .unwrap();
        let mut n =
            from_transition(&transition("tcp", State::Up, State::Down, None), true, None).unwrap();
        assert!(wanted(&r, &n));
        n.severity = Severity::Info;
        assert!(!wanted(&r, &n), "below min_severity");
        n.severity = Severity::Cleared;
        assert!(wanted(&r, &n), "the end of an alarm always passes");
        r.min_severity = None;
        r.notifications = Some(vec!["telagentServerDown".into()]);
        assert!(!wanted(&r, &n), "not in the list");
        n.kind = Kind::ServerDown;
        assert!(wanted(&r, &n));
    }

    #[test]
    fn boots_grow_at_every_start() {
        let dir = std::env::temp_dir().join(format!("telagent-boots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = next_boots(&dir).unwrap();
        let b = next_boots(&dir).unwrap();
        assert_eq!(b, a + 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
