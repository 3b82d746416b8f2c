//! Traffic accounting: how many messages and pages each server sent and received.
//!
//! Sources: HylaFAX's `xferfaxlog`, tailed across rotation and truncation
//! ([`xferfaxlog`]), and batches of message events posted to `POST /v1/events`
//! ([`events`]). Both land in the [`store`]: an embedded SQLite database in the state
//! directory holding per-minute, per-hour and per-day buckets per server / direction /
//! result / line, the lifetime counters behind the Prometheus metrics, and the read offset
//! of every tailed file, each committed in the same transaction as the counts it produced
//! (exactly once across crashes). [`totals`] answers `GET /v1/totals` and
//! `telagent totals`.

pub mod events;
pub mod outcome;
pub mod quality;
pub mod store;
pub mod totals;
pub mod xferfaxlog;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[traffic]`: the traffic store and its sources.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// How long per-minute buckets are kept (then only hours and days remain).
    #[serde(default = "default_minute_retention", with = "crate::vocab::duration")]
    pub minute_retention: Duration,
    /// How long per-hour buckets are kept (then only days remain).
    #[serde(default = "default_hour_retention", with = "crate::vocab::duration")]
    pub hour_retention: Duration,
    /// Most distinct lines counted per server; further lines are counted as `other`.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Most distinct servers the store accepts events for.
    #[serde(default = "default_max_servers")]
    pub max_servers: usize,
    /// HylaFAX transfer logs to tail.
    #[serde(default)]
    pub xferfaxlog: Vec<XferfaxlogConfig>,
}

/// `[[traffic.xferfaxlog]]`: one HylaFAX transfer log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XferfaxlogConfig {
    /// The log file (Debian: `/var/spool/hylafax/log/xferfaxlog`).
    pub path: PathBuf,
    /// Server the records are counted for; default `agent.server`.
    #[serde(default)]
    pub server: Option<String>,
    /// How often the file is read for new records.
    #[serde(default = "default_tail_interval", with = "crate::vocab::duration")]
    pub interval: Duration,
}

fn default_minute_retention() -> Duration {
    Duration::from_secs(14 * 86400)
}
fn default_hour_retention() -> Duration {
    Duration::from_secs(730 * 86400)
}
fn default_max_lines() -> usize {
    64
}
fn default_max_servers() -> usize {
    64
}
fn default_tail_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            minute_retention: default_minute_retention(),
            hour_retention: default_hour_retention(),
            max_lines: default_max_lines(),
            max_servers: default_max_servers(),
            xferfaxlog: Vec::new(),
        }
    }
}

impl TrafficConfig {
    /// Cross-key rules. `Err((key path, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.minute_retention < Duration::from_secs(3600) {
            return Err((
                "traffic.minute_retention".into(),
                "must be at least 1h".into(),
            ));
        }
        if self.hour_retention < self.minute_retention {
            return Err((
                "traffic.hour_retention".into(),
                "must not be shorter than minute_retention".into(),
            ));
        }
        if self.max_lines == 0 || self.max_servers == 0 {
            let key = if self.max_lines == 0 {
                "max_lines"
            } else {
                "max_servers"
            };
            return Err((format!("traffic.{key}"), "must be at least 1".into()));
        }
        for (i, x) in self.xferfaxlog.iter().enumerate() {
            if x.interval < Duration::from_millis(100) {
                return Err((
                    format!("traffic.xferfaxlog[{i}].interval"),
                    "must be at least 100ms".into(),
                ));
            }
            if self.xferfaxlog[..i].iter().any(|o| o.path == x.path) {
                return Err((
                    format!("traffic.xferfaxlog[{i}].path"),
                    format!("{} is tailed twice", x.path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// Which way a message went.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Sent,
    Received,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "sent" => Some(Direction::Sent),
            "received" => Some(Direction::Received),
            _ => None,
        }
    }
}

/// One message handled by a server: the unit every source produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened, seconds since the Unix epoch.
    pub time: i64,
    pub server: String,
    pub direction: Direction,
    /// Delivered (sent) or taken in (received) without error.
    pub ok: bool,
    /// Fax line, modem or channel.
    pub line: String,
    pub pages: u32,
    /// Time on the line, seconds.
    pub seconds: u32,
    pub detail: Detail,
}

impl Event {
    /// The pages the attempt tried to move: as reported, else the pages it moved.
    pub fn pages_attempted(&self) -> u32 {
        self.detail
            .pages_attempted
            .unwrap_or(self.pages)
            .max(self.pages)
    }
}

/// What a source knows of an attempt beyond the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    /// Why it failed; `None` for a success.
    pub class: Option<outcome::Class>,
    /// The number dialled, or the remote's CSI/TSI (see [`quality::clean_remote`]).
    pub remote: String,
    /// Negotiated signalling rate, bit/s.
    pub rate: Option<u32>,
    pub ecm: Option<bool>,
    /// Pages the attempt tried to move.
    pub pages_attempted: Option<u32>,
    /// A canary fax: evidence of its line's quality, never counted in the totals.
    pub canary: bool,
}

/// Identity of a lifetime counter: one per server / line / direction / result.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    pub server: String,
    pub line: String,
    pub direction: Direction,
    pub ok: bool,
}

/// Messages and pages counted under one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub messages: u64,
    pub pages: u64,
}

/// What a traffic source has done, for metrics and `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceStats {
    /// Records counted.
    pub records: u64,
    /// Lines skipped because they could not be read as a record.
    pub malformed: u64,
    /// Read offset in the current file.
    pub offset: u64,
}

/// What the traffic accounting publishes: the lifetime counters as committed (copied out
/// of the store so that a scrape never waits for SQLite), each tailed file's progress and
/// what became of posted batches.
#[derive(Debug, Default)]
pub struct Stats {
    lifetime: std::sync::RwLock<std::collections::BTreeMap<Key, Count>>,
    quality: std::sync::RwLock<quality::Memory>,
    sources: std::sync::RwLock<std::collections::BTreeMap<String, SourceStats>>,
    event_batches: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// The store opened (false: the agent runs without it).
    available: std::sync::atomic::AtomicBool,
}

impl Stats {
    /// Whether the traffic store is open.
    pub fn available(&self) -> bool {
        self.available.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_available(&self, yes: bool) {
        self.available
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The lifetime counters as last committed.
    pub fn lifetime(&self) -> std::collections::BTreeMap<Key, Count> {
        self.lifetime
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Copies what the store has committed: lifetime counters and attempts.
    pub(crate) fn publish(&self, s: &store::Store) {
        self.set_lifetime(s.lifetime());
        self.set_quality(s.quality().clone());
    }

    pub(crate) fn set_quality(&self, q: quality::Memory) {
        *self
            .quality
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = q;
    }

    /// Reads the committed attempts of every line.
    pub fn with_quality<T>(&self, f: impl FnOnce(&quality::Memory) -> T) -> T {
        f(&self
            .quality
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub(crate) fn set_lifetime(&self, l: &std::collections::BTreeMap<Key, Count>) {
        *self
            .lifetime
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = l.clone();
    }

    pub(crate) fn set_source(&self, source: &str, st: SourceStats) {
        self.sources
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(source.to_string(), st);
    }

    /// Counts what became of a posted batch: `counted`, `duplicate`, `rejected`, `failed`.
    pub fn batch(&self, result: &'static str) {
        *self
            .event_batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(result)
            .or_default() += 1;
    }
}

/// Lifetime traffic counters from the store (they survive restarts), one series per server
/// and line, every one of the six exported once the line has any traffic; the tailed
/// files; the posted batches.
impl crate::metrics::Collector for Stats {
    fn collect(&self, f: &mut crate::metrics::Families) {
        let mut lines: std::collections::BTreeMap<(String, String), [u64; 6]> =
            std::collections::BTreeMap::new();
        for (k, c) in self
            .lifetime
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let v = lines.entry((k.server.clone(), k.line.clone())).or_default();
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
        for (source, st) in self
            .sources
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
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
        self.with_quality(|q| collect_quality(q, events::unix_now(), f));
        let batches = self
            .event_batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for result in ["counted", "duplicate", "rejected", "failed"] {
            f.counter(
                "telagent_event_batches_total",
                "Batches posted to /v1/events, by what became of them (failed: the store could not commit; the sender should retry).",
                &[("result", result)],
                batches.get(result).copied().unwrap_or(0) as f64,
            );
        }
        f.gauge(
            "telagent_traffic_store_available",
            "1 if the traffic store is open; 0 if the agent runs without it (see /v1/status problems).",
            &[],
            crate::metrics::bool01(self.available.load(std::sync::atomic::Ordering::Relaxed)),
        );
    }
}

/// Attempts in the last this many per line feed `telagent_fax_success_ratio{window="last_32"}`.
pub const RATIO_ATTEMPTS: usize = 32;

/// Fax attempts per line: by class and kind, ECM, signalling rates, success ratios.
fn collect_quality(q: &quality::Memory, now: i64, f: &mut crate::metrics::Families) {
    use std::collections::BTreeMap;
    let mut by_class: BTreeMap<(&str, &str, Direction, &str, &str), u64> = BTreeMap::new();
    let mut ecm: BTreeMap<(&str, &str, Direction), u64> = BTreeMap::new();
    let mut rates: BTreeMap<(&str, &str, Direction), BTreeMap<u32, u64>> = BTreeMap::new();
    for (k, n) in &q.lifetime {
        let line = (k.server.as_str(), k.line.as_str(), k.direction);
        let class = k.class.map_or("ok", outcome::Class::as_str);
        let kind = if k.canary { "canary" } else { "traffic" };
        *by_class
            .entry((line.0, line.1, line.2, class, kind))
            .or_default() += n;
        *ecm.entry(line).or_default() += if k.ecm { *n } else { 0 };
        let r = rates.entry(line).or_default();
        if k.rate > 0 {
            *r.entry(k.rate).or_default() += n;
        }
    }
    for ((server, line, direction, class, kind), n) in by_class {
        f.counter(
            "telagent_fax_attempts_total",
            "Fax attempts per line and direction by outcome: class ok, or the failure class (README: Failure classes); kind canary for the canary check's own faxes. Kept in the traffic store.",
            &[
                ("server", server),
                ("line", line),
                ("direction", direction.as_str()),
                ("class", class),
                ("kind", kind),
            ],
            n as f64,
        );
    }
    for ((server, line, direction), n) in &ecm {
        f.counter(
            "telagent_fax_ecm_attempts_total",
            "Fax attempts that used error correction (ECM).",
            &[
                ("server", server),
                ("line", line),
                ("direction", direction.as_str()),
            ],
            *n as f64,
        );
    }
    const BOUNDS: [u32; 14] = [
        2400, 4800, 7200, 9600, 12000, 14400, 16800, 19200, 21600, 24000, 26400, 28800, 31200,
        33600,
    ];
    for ((server, line, direction), r) in &rates {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .map(|b| (f64::from(*b), r.range(..=b).map(|(_, n)| n).sum()))
            .collect();
        f.histogram(
            "telagent_fax_signalling_rate_bps",
            "Negotiated signalling rates of fax attempts that report one (xferfaxlog params, posted rate), bit/s.",
            &[
                ("server", server),
                ("line", line),
                ("direction", direction.as_str()),
            ],
            &buckets,
            r.iter().map(|(rate, n)| f64::from(*rate) * *n as f64).sum(),
            r.values().sum(),
        );
    }
    for ((server, line, direction), recent) in &q.recent {
        let last: Vec<_> = recent.iter().rev().take(RATIO_ATTEMPTS).collect();
        let hour: Vec<_> = recent.iter().filter(|a| a.time > now - 3600).collect();
        for (window, set) in [("last_32", last), ("1h", hour)] {
            if set.is_empty() {
                continue;
            }
            let ok = set.iter().filter(|a| a.class.is_none()).count();
            f.gauge(
                "telagent_fax_success_ratio",
                "Share of fax attempts that succeeded: over the last 32 attempts of the line and direction, and over the last hour; absent without attempts.",
                &[
                    ("server", server),
                    ("line", line),
                    ("direction", direction.as_str()),
                    ("window", window),
                ],
                ok as f64 / set.len() as f64,
            );
        }
    }
}

/// Notes the outcome of a write: a failure is logged once when it starts (and the store
/// reported unavailable while it lasts), a success after failures once when they end.
pub(crate) fn failing(
    slot: &std::sync::Mutex<Option<String>>,
    stats: &Stats,
    error: Option<String>,
) {
    let mut now = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match (error, now.as_ref()) {
        (Some(e), None) => {
            tracing::error!(error = %e, "The traffic store cannot write; what arrives is refused (503) or read again later, until it can.");
            *now = Some(format!("the traffic store cannot write: {e}"));
            stats.set_available(false);
        }
        (None, Some(_)) => {
            tracing::info!("The traffic store writes again.");
            *now = None;
            stats.set_available(true);
        }
        _ => {}
    }
}

fn lock(s: &std::sync::Mutex<store::Store>) -> std::sync::MutexGuard<'_, store::Store> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Opens the store, reads every page once, and prunes it.
fn open_checked(
    path: &std::path::Path,
    limits: store::Limits,
) -> Result<store::Store, store::StoreError> {
    let mut s = store::Store::open(path, limits)?;
    s.check()?;
    s.prune(events::unix_now())?;
    Ok(s)
}

/// Moves a damaged store (and its WAL and shared-memory files) to `aside`.
fn move_aside(path: &std::path::Path, aside: &std::path::Path) -> Result<(), String> {
    std::fs::rename(path, aside)
        .map_err(|e| format!("cannot move {} aside: {e}", path.display()))?;
    for ext in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(ext);
        let mut to = aside.as_os_str().to_owned();
        to.push(ext);
        let _ = std::fs::rename(&from, &to);
    }
    Ok(())
}

fn unavailable(path: &std::path::Path, why: &str) -> String {
    format!(
        "cannot open the traffic store {}: {why}; traffic is not counted until it opens (POST /v1/events answers 503 and senders keep their events; xferfaxlog is read from where it stopped once it does): make the state directory writable (or free disk space) and restart",
        path.display()
    )
}

/// The running traffic accounting: the store, shared by the API and the tailers.
///
/// Monitoring never depends on the store. A store that cannot be opened (a state directory
/// that cannot be written, a full disk) leaves the agent running without it: posted events
/// are refused with 503 so that senders keep them, and xferfaxlog is not read (it is read
/// from where it stopped once the store opens again). A damaged file is moved aside
/// (`traffic.db.corrupt-<unix time>`) and a new one is started. Either way the agent is
/// degraded and says why in `problem`.
pub struct Traffic {
    store: Option<std::sync::Arc<std::sync::Mutex<store::Store>>>,
    /// What is wrong with the store, or what was done to it at start.
    pub problem: Option<String>,
    /// What went wrong at the last write, while it goes on failing (a full disk, a file
    /// removed or damaged while open); cleared by the next write that succeeds.
    failing: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// The server events are counted for when they name none.
    pub server: String,
    pub stats: std::sync::Arc<Stats>,
}

/// Why a batch of events was not counted, with the HTTP status to answer.
#[derive(Debug)]
pub enum PostError {
    /// 400: the batch is malformed or refused; the message says which event and why.
    Invalid(String),
    /// 503: the store failed; the sender should retry the same batch.
    Store(String),
}

impl Traffic {
    /// Opens `<state_dir>/traffic.db` (see the type's doc for what happens when it cannot)
    /// and publishes its counters in its stats.
    pub fn open(state_dir: &std::path::Path, server: &str, config: &TrafficConfig) -> Traffic {
        let path = state_dir.join("traffic.db");
        let limits = store::Limits::from(config);
        let stats = std::sync::Arc::new(Stats::default());
        // An existing but empty file is what is left of a store truncated behind our
        // back, not a new store: its counts are gone, and that must be said.
        let emptied = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0);
        let opened = if emptied {
            Err(store::StoreError::corrupt(&path, "the file is empty"))
        } else {
            open_checked(&path, limits)
        };
        let (store, problem) = match opened {
            Ok(s) => (Some(s), None),
            Err(e) if e.is_corrupt() => {
                let aside = path.with_extension(format!("db.corrupt-{}", events::unix_now()));
                let moved = move_aside(&path, &aside);
                match moved.and_then(|()| open_checked(&path, limits).map_err(|e| e.to_string())) {
                    Ok(s) => {
                        let why = format!(
                            "{} was damaged ({e}); it was moved to {} and a new store started: the counts in the old file are not in the totals (recover them with `sqlite3 {} .recover`)",
                            path.display(),
                            aside.display(),
                            aside.display()
                        );
                        tracing::error!(problem = %why, "The traffic store was damaged.");
                        (Some(s), Some(why))
                    }
                    Err(e2) => (None, Some(unavailable(&path, &e2))),
                }
            }
            Err(e) => (None, Some(unavailable(&path, &e.to_string()))),
        };
        if store.is_none() {
            tracing::error!(
                problem = problem.as_deref().unwrap_or(""),
                "The agent runs without its traffic store."
            );
        }
        if let Some(s) = &store {
            stats.publish(s);
        }
        stats.set_available(store.is_some());
        Traffic {
            store: store.map(|s| std::sync::Arc::new(std::sync::Mutex::new(s))),
            problem,
            failing: Default::default(),
            server: server.to_string(),
            stats,
        }
    }

    /// What the store holds, read once without writing anything (`telagent check` on a
    /// line_quality check while the agent runs): empty stats when it cannot be read.
    pub fn read_only(state_dir: &std::path::Path, config: &TrafficConfig) -> std::sync::Arc<Stats> {
        let stats = std::sync::Arc::new(Stats::default());
        if let Ok(s) = store::Store::open_read_only(&state_dir.join("traffic.db"), config.into()) {
            stats.publish(&s);
            stats.set_available(true);
        }
        stats
    }

    fn store(&self) -> Result<std::sync::MutexGuard<'_, store::Store>, String> {
        match &self.store {
            Some(s) => Ok(lock(s)),
            None => Err(self.problem.clone().unwrap_or_default()),
        }
    }

    /// Counts a posted batch (`POST /v1/events`), committed before it returns.
    pub fn post(&self, body: &[u8]) -> Result<store::Ingested, PostError> {
        let now = events::unix_now();
        let (batch, evs) = events::decode(body, &self.server, now).map_err(PostError::Invalid)?;
        let mut s = self.store().map_err(PostError::Store)?;
        let written = s.ingest(&evs, batch.as_deref(), now);
        failing(
            &self.failing,
            &self.stats,
            written.as_ref().err().map(|e| e.to_string()),
        );
        let outcome = written
            .map_err(|e| PostError::Store(e.to_string()))?
            .map_err(|r| PostError::Invalid(r.to_string()))?;
        self.stats.publish(&s);
        Ok(outcome)
    }

    /// What is wrong with the store now: what happened at start, and a failure that
    /// lasts.
    pub fn problems(&self) -> Vec<String> {
        let now = self
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.problem.iter().cloned().chain(now).collect()
    }

    /// The servers traffic was ever counted for (an error when there is no store).
    pub fn servers(&self) -> Result<Vec<String>, String> {
        Ok(self.store()?.servers())
    }

    /// Totals over a window (`GET /v1/totals`).
    pub fn totals(&self, q: &totals::Query) -> Result<Vec<totals::Row>, String> {
        self.store()?
            .totals(q, events::unix_now())
            .map_err(|e| e.to_string())
    }

    /// The lines checks judge (never counted as `other`).
    pub fn watch(&self, lines: std::collections::BTreeSet<String>) {
        if let Ok(mut s) = self.store() {
            s.watch(lines);
        }
    }

    /// Line statistics since `since` (`GET /v1/lines`).
    pub fn lines(
        &self,
        since: i64,
        server: Option<&str>,
    ) -> Result<Vec<quality::LineStats>, String> {
        self.store()?
            .lines(since, server, events::unix_now())
            .map_err(|e| e.to_string())
    }

    /// The newest attempts of a line since `since` (`GET /v1/attempts`).
    pub fn attempts(
        &self,
        since: i64,
        line: &str,
        direction: Option<Direction>,
        server: Option<&str>,
    ) -> Result<Vec<quality::AttemptRow>, String> {
        self.store()?
            .attempts(since, line, direction, server)
            .map_err(|e| e.to_string())
    }

    /// The remote ends with the most failures since `since`.
    pub fn destinations(
        &self,
        since: i64,
        server: Option<&str>,
        limit: usize,
    ) -> Result<Vec<quality::DestinationStats>, String> {
        self.store()?
            .destinations(since, server, limit)
            .map_err(|e| e.to_string())
    }

    /// Starts a tailer per configured xferfaxlog and the hourly pruning; they end with
    /// `cancel`.
    pub fn start(
        &self,
        config: &TrafficConfig,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(store) = self.store.clone() else {
            return Vec::new();
        };
        let mut tasks: Vec<_> = config
            .xferfaxlog
            .iter()
            .map(|x| {
                tokio::spawn(xferfaxlog::run(
                    x.clone(),
                    x.server.clone().unwrap_or_else(|| self.server.clone()),
                    store.clone(),
                    (self.stats.clone(), self.failing.clone()),
                    cancel.clone(),
                ))
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                }
                let st = store.clone();
                let pruned = tokio::task::spawn_blocking(move || {
                    st.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .prune(events::unix_now())
                })
                .await;
                if let Ok(Err(e)) = pruned {
                    tracing::warn!(error = %e, "Cannot prune the traffic store.");
                }
            }
        }));
        tasks
    }
}
