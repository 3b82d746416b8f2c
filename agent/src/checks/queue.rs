//! `queue`: how many messages wait to go out, and for how long.
//!
//! Sources (`source = ...`):
//! - `hylafax`: the job files `sendq/q<N>` of a HylaFAX spool, counted by `state:`
//!   (suspended, pending, sleeping, blocked, ready, active; done and failed jobs are not
//!   waiting); the oldest waiting job's age is taken from its job file's creation time
//!   (the file is rewritten in place, so its birth time is the submission); pages pending
//!   are `totpages - npages` summed.
//! - `directory`: regular files of `path` whose name matches `pattern` (a glob, default
//!   `*`), the oldest by modification time.
//! - `sql`: `query` returns one number, or rows of (label, number) summed into the depth
//!   and exported per label; `age_query` may return the oldest item's age in seconds. The
//!   database is PostgreSQL (`url = "postgresql://user@host:5432/db"`) or a SQLite file
//!   (`url = "sqlite:///var/lib/app/queue.db"`, opened read-only).
//! - `command`: a program that prints one number (its exit code must be 0).
//!
//! - **ok**: the depth could be read and is within the limits.
//! - **degraded**: `high_water` (depth over `high_water`) or `too_old` (the oldest item
//!   waits longer than `max_age`): list the check in `[server] drain` to take no new work;
//!   `stuck_job` (HylaFAX: a job `active` for longer than `max_session`, default 30m,
//!   without its job file changing: faxsend rewrites it as pages go out).
//! - **fail**: the depth cannot be read: `read_error` (spool or directory), `connect_error`
//!   and `query_error` (database), `bad_output` (not a number), `spawn_error` /
//!   `exit_code` (command), `timeout`.
//!
//! Metrics: `telagent_queue_depth{check}`, `telagent_queue_oldest_age_seconds{check}` (0
//! when empty), `telagent_queue_jobs{check,state}` (HylaFAX states, or the labels of a SQL
//! query), `telagent_queue_pages_pending{check}` and `telagent_queue_session_seconds{check}`
//! (HylaFAX: the longest an active job has gone without progress).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;

use super::{Check, Observation};
use crate::vocab::check_config;

/// `max_session` when not set.
const DEFAULT_MAX_SESSION: Duration = Duration::from_secs(30 * 60);

/// Most labelled rows of a SQL result exported as `telagent_queue_jobs`.
const MAX_LABELS: usize = 32;

/// Where the depth of a queue is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Hylafax,
    Directory,
    Sql,
    Command,
}

check_config! {
    /// `[[queue]]`: an outbound queue's depth and oldest item.
    QueueConfig {
        /// `hylafax`, `directory`, `sql` or `command`.
        source: Source,
        /// hylafax: the spool directory (`/var/spool/hylafax`).
        #[serde(default)]
        spool: Option<PathBuf>,
        /// directory: the directory holding one file per waiting message.
        #[serde(default)]
        path: Option<PathBuf>,
        /// directory: glob the file names must match.
        #[serde(default)]
        pattern: Option<String>,
        /// sql: `postgresql://user@host:port/db` or `sqlite:///path/to/file.db`.
        #[serde(default)]
        url: Option<String>,
        /// sql: returns one number, or rows of (label, number).
        #[serde(default)]
        query: Option<String>,
        /// sql: returns the oldest item's age in seconds (optional).
        #[serde(default)]
        age_query: Option<String>,
        /// command: program and arguments, printing one number.
        #[serde(default)]
        command: Option<Vec<String>>,
        /// Depth above which the queue is degraded.
        #[serde(default)]
        high_water: Option<u64>,
        /// Age of the oldest item above which the queue is degraded.
        #[serde(default, with = "crate::vocab::duration")]
        max_age: Option<Duration>,
        /// hylafax: longest a job may stay `active` without progress (its job file,
        /// rewritten as pages go out, unchanged) before it is taken as stuck
        /// (`stuck_job`); default 30m.
        #[serde(default, with = "crate::vocab::duration")]
        max_session: Option<Duration>,
    }
}

impl QueueConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let (source, needs): (&str, &[(&str, bool)]) = match self.source {
            Source::Hylafax => ("hylafax", &[("spool", self.spool.is_some())]),
            Source::Directory => ("directory", &[("path", self.path.is_some())]),
            Source::Sql => (
                "sql",
                &[("url", self.url.is_some()), ("query", self.query.is_some())],
            ),
            Source::Command => ("command", &[("command", self.command.is_some())]),
        };
        if let Some((key, _)) = needs.iter().find(|(_, set)| !set) {
            return Err((
                "source",
                format!("source `{source}` needs `{key}`; see `telagent check queue --sample`"),
            ));
        }
        let foreign = [
            ("spool", self.spool.is_some(), Source::Hylafax),
            ("path", self.path.is_some(), Source::Directory),
            ("pattern", self.pattern.is_some(), Source::Directory),
            ("url", self.url.is_some(), Source::Sql),
            ("query", self.query.is_some(), Source::Sql),
            ("age_query", self.age_query.is_some(), Source::Sql),
            ("command", self.command.is_some(), Source::Command),
            ("max_session", self.max_session.is_some(), Source::Hylafax),
        ];
        if let Some((key, _, _)) = foreign
            .iter()
            .find(|(_, set, owner)| *set && *owner != self.source)
        {
            return Err((key, format!("`{key}` does not apply to source `{source}`")));
        }
        if let Some(p) = &self.pattern {
            glob::Pattern::new(p).map_err(|e| ("pattern", format!("not a glob: {e}")))?;
        }
        if let Some(u) = &self.url {
            let known = ["postgres://", "postgresql://", "sqlite://"];
            if !known.iter().any(|k| u.starts_with(k)) {
                return Err((
                    "url",
                    "must start with postgresql:// or sqlite:// (sqlite:///var/lib/app/queue.db)"
                        .into(),
                ));
            }
        }
        if let Some(c) = &self.command {
            if c.first().is_none_or(String::is_empty) {
                return Err((
                    "command",
                    "must name a program: [\"/path/to/program\", \"arg\", ...]".into(),
                ));
            }
        }
        Ok(())
    }
}

/// What a source read.
#[derive(Debug, Default, PartialEq)]
struct Depth {
    depth: u64,
    oldest_age: Option<Duration>,
    /// Per state or label, when the source knows them.
    by_state: Vec<(String, u64)>,
    pages_pending: Option<u64>,
    /// The active job longest without progress, and for how long (HylaFAX).
    stalled: Option<(String, Duration)>,
}

pub struct QueueCheck {
    config: QueueConfig,
}

impl QueueCheck {
    pub fn new(config: QueueConfig) -> Self {
        QueueCheck { config }
    }

    async fn read(&self) -> Result<Depth, Observation> {
        let c = &self.config;
        match c.source {
            Source::Hylafax => {
                let spool = c.spool.clone().unwrap_or_default();
                blocking(move || hylafax(&spool, SystemTime::now())).await
            }
            Source::Directory => {
                let path = c.path.clone().unwrap_or_default();
                let pattern = c.pattern.clone().unwrap_or_else(|| "*".into());
                blocking(move || directory(&path, &pattern, SystemTime::now())).await
            }
            Source::Sql => sql(c).await,
            Source::Command => command(c.command.as_deref().unwrap_or_default()).await,
        }
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<Depth, Observation> + Send + 'static,
) -> Result<Depth, Observation> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Observation::fail(
            "read_error",
            format!("reader ended: {e}"),
        ))
    })
}

#[async_trait]
impl Check for QueueCheck {
    fn kind(&self) -> &'static str {
        "queue"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &[
            "high_water",
            "too_old",
            "stuck_job",
            "read_error",
            "connect_error",
            "query_error",
            "bad_output",
            "spawn_error",
            "exit_code",
        ]
    }

    async fn probe(&self) -> Observation {
        let d = match self.read().await {
            Ok(d) => d,
            Err(o) => return o,
        };
        judge(&self.config, d)
    }
}

fn judge(c: &QueueConfig, d: Depth) -> Observation {
    let age = d.oldest_age.unwrap_or_default();
    let age_text = humantime::format_duration(Duration::from_secs(age.as_secs()));
    let mut detail = format!("{} waiting", d.depth);
    if d.depth > 0 && d.oldest_age.is_some() {
        detail.push_str(&format!(", oldest {age_text}"));
    }
    let mut o = match (c.high_water, c.max_age) {
        (Some(h), _) if d.depth > h => Observation::degraded(
            "high_water",
            format!("{detail}: over high water {h}; new work should go to another server"),
        ),
        (_, Some(m)) if age > m => Observation::degraded(
            "too_old",
            format!(
                "{detail}: older than max_age {}; is the queue moving?",
                humantime::format_duration(m)
            ),
        ),
        _ => Observation::ok(detail.clone()),
    };
    if c.source == Source::Hylafax {
        let max = c.max_session.unwrap_or(DEFAULT_MAX_SESSION);
        let stalled = d.stalled.as_ref().map_or(Duration::ZERO, |(_, s)| *s);
        if let Some((job, still)) = d.stalled.as_ref().filter(|(_, s)| *s > max) {
            o = o.worse(Observation::degraded(
                "stuck_job",
                format!(
                    "{detail}: job {job} has been active for {} without progress (max_session {}): its call probably dropped; check faxsend and the modem it uses",
                    humantime::format_duration(Duration::from_secs(still.as_secs())),
                    humantime::format_duration(max)
                ),
            ));
        }
        o = o.with_value(
            "session_seconds",
            "Longest time an active job has gone without progress (0 when none is active).",
            stalled.as_secs_f64(),
        );
    }
    if let Some(h) = c.high_water {
        o = o.with_value(
            "high_water",
            "The configured high water: over it the queue is degraded.",
            h as f64,
        );
    }
    o = o
        .with_value("depth", "Messages waiting.", d.depth as f64)
        .with_value(
            "oldest_age_seconds",
            "Age of the oldest waiting message (0 when none waits).",
            age.as_secs_f64(),
        );
    for (state, n) in d.by_state {
        o.values.push(super::Value {
            name: "jobs",
            help: "Messages of the queue by state (HylaFAX job state, or the label of a SQL row).",
            labels: vec![("state", state)],
            value: n as f64,
        });
    }
    if let Some(p) = d.pages_pending {
        o = o.with_value(
            "pages_pending",
            "Pages of waiting jobs not yet sent.",
            p as f64,
        );
    }
    o
}

/// HylaFAX job states (`state:` in a job file), as faxstat names them.
const HYLAFAX_STATES: [&str; 8] = [
    "suspended",
    "pending",
    "sleeping",
    "blocked",
    "ready",
    "active",
    "done",
    "failed",
];

/// Index of `active` in HYLAFAX_STATES.
const ACTIVE: usize = 5;

/// Reads `key:value` lines of a job file.
pub(crate) fn job_fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn hylafax(spool: &Path, now: SystemTime) -> Result<Depth, Observation> {
    let sendq = spool.join("sendq");
    let entries = std::fs::read_dir(&sendq).map_err(|e| {
        Observation::fail(
            "read_error",
            format!(
                "cannot read {}: {e}; is `spool` the HylaFAX spool and readable by the agent?",
                sendq.display()
            ),
        )
    })?;
    let mut counts = [0u64; 8];
    let mut d = Depth::default();
    let mut pages = 0u64;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let is_job = name.len() > 1
            && name.starts_with('q')
            && name[1..].bytes().all(|b| b.is_ascii_digit());
        if !is_job {
            continue;
        }
        // A job may be moved to doneq between the listing and the read: skip it.
        // A job file is a few hundred bytes; a FIFO or device in sendq is not a job.
        let Ok(text) = crate::files::read_text(&e.path(), 1 << 20) else {
            continue;
        };
        let f = job_fields(&text);
        let state = f.get("state").and_then(|s| s.parse::<usize>().ok());
        let Some(i) = state.filter(|s| (1..=8).contains(s)).map(|s| s - 1) else {
            continue;
        };
        counts[i] += 1;
        if i >= 6 {
            continue; // done or failed: not waiting
        }
        d.depth += 1;
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        pages += num("totpages").saturating_sub(num("npages"));
        if let Ok(m) = e.metadata() {
            if i == ACTIVE {
                let still = m.modified().map_or(Duration::ZERO, |t| {
                    now.duration_since(t).unwrap_or_default()
                });
                if d.stalled.as_ref().is_none_or(|(_, s)| still > *s) {
                    d.stalled = Some((name[1..].to_string(), still));
                }
            }
            let born = m.created().or_else(|_| m.modified()).unwrap_or(now);
            let age = now.duration_since(born).unwrap_or_default();
            d.oldest_age = Some(d.oldest_age.map_or(age, |a| a.max(age)));
        }
    }
    d.by_state = HYLAFAX_STATES
        .iter()
        .zip(counts)
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    d.pages_pending = Some(pages);
    Ok(d)
}

fn directory(path: &Path, pattern: &str, now: SystemTime) -> Result<Depth, Observation> {
    let glob =
        glob::Pattern::new(pattern).map_err(|e| Observation::fail("read_error", e.to_string()))?;
    let entries = std::fs::read_dir(path).map_err(|e| {
        Observation::fail(
            "read_error",
            format!(
                "cannot read {}: {e}; check `path` and the agent's permissions",
                path.display()
            ),
        )
    })?;
    let mut d = Depth::default();
    for e in entries.flatten() {
        if !glob.matches(&e.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() {
            continue;
        }
        d.depth += 1;
        let age = now
            .duration_since(m.modified().unwrap_or(now))
            .unwrap_or_default();
        d.oldest_age = Some(d.oldest_age.map_or(age, |a| a.max(age)));
    }
    Ok(d)
}

/// Reads a query's answer: one number, or rows of (label, number).
fn depth_of(rows: &[Vec<Option<String>>]) -> Result<Depth, String> {
    let num = |v: &Option<String>| -> Result<u64, String> {
        let text = v.as_deref().unwrap_or("0");
        text.trim()
            .parse::<f64>()
            .ok()
            // A count beyond 2^53 is no queue: a wrong command, not a number to round.
            .filter(|n| n.is_finite() && *n >= 0.0 && *n <= 9_007_199_254_740_992.0)
            .map(|n| n.round() as u64)
            .ok_or_else(|| format!("`{}` is not a count", super::excerpt(text.as_bytes(), 40)))
    };
    match rows {
        [] => Ok(Depth::default()),
        [row] if row.len() == 1 => Ok(Depth {
            depth: num(&row[0])?,
            ..Depth::default()
        }),
        _ if rows.iter().all(|r| r.len() == 2) => {
            let mut d = Depth::default();
            for r in rows {
                let n = num(&r[1])?;
                d.depth += n;
                if d.by_state.len() < MAX_LABELS {
                    let label = r[0].clone().unwrap_or_else(|| "null".into());
                    d.by_state.push((super::excerpt(label.as_bytes(), 40), n));
                }
            }
            Ok(d)
        }
        _ => Err(format!(
            "{} rows of {} columns; expected one number, or rows of (label, number)",
            rows.len(),
            rows.first().map_or(0, Vec::len)
        )),
    }
}

async fn sql(c: &QueueConfig) -> Result<Depth, Observation> {
    let url = c.url.clone().unwrap_or_default();
    let queries: Vec<String> = c.query.iter().chain(&c.age_query).cloned().collect();
    let answers = if let Some(path) = url.strip_prefix("sqlite://") {
        let path = PathBuf::from(path);
        blocking_sql(move || sqlite(&path, &queries)).await?
    } else {
        postgres(&url, &queries).await?
    };
    let mut d = depth_of(&answers[0])
        .map_err(|e| Observation::fail("bad_output", format!("query: {e}")))?;
    if let Some(rows) = answers.get(1) {
        let age = depth_of(rows)
            .map_err(|e| Observation::fail("bad_output", format!("age_query: {e}")))?;
        d.oldest_age = Some(Duration::from_secs(age.depth));
    }
    Ok(d)
}

type Answers = Vec<Vec<Vec<Option<String>>>>;

async fn blocking_sql(
    f: impl FnOnce() -> Result<Answers, Observation> + Send + 'static,
) -> Result<Answers, Observation> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Observation::fail(
            "query_error",
            format!("reader ended: {e}"),
        ))
    })
}

fn sqlite(path: &Path, queries: &[String]) -> Result<Answers, Observation> {
    use rusqlite::{types::ValueRef, Connection, OpenFlags};
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        Observation::fail(
            "connect_error",
            format!("cannot open SQLite file {}: {e}", path.display()),
        )
    })?;
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let mut out = Vec::new();
    for q in queries {
        let fail = |e: rusqlite::Error| {
            Observation::fail(
                "query_error",
                format!("{} on {}: {e}", excerpt_sql(q), path.display()),
            )
        };
        let mut stmt = conn.prepare(q).map_err(fail)?;
        let cols = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..cols)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => None,
                            ValueRef::Integer(n) => Some(n.to_string()),
                            ValueRef::Real(f) => Some(f.to_string()),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Some(String::from_utf8_lossy(t).into_owned())
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(fail)?
            .take(MAX_LABELS * 4)
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(fail)?;
        out.push(rows);
    }
    Ok(out)
}

fn excerpt_sql(q: &str) -> String {
    format!("`{}`", super::excerpt(q.as_bytes(), 60))
}

/// Runs the queries over one connection; the connection is driven in the same future, so
/// a timeout (the scheduler drops the probe) closes it.
async fn postgres(url: &str, queries: &[String]) -> Result<Answers, Observation> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            Observation::fail(
                "connect_error",
                format!("cannot connect to PostgreSQL at {}: {e}", redact(url)),
            )
        })?;
    let work = async {
        let mut out = Vec::new();
        for q in queries {
            let msgs = client.simple_query(q).await.map_err(|e| {
                let kind = if client.is_closed() {
                    "connect_error"
                } else {
                    "query_error"
                };
                Observation::fail(kind, format!("{} on {}: {e}", excerpt_sql(q), redact(url)))
            })?;
            let rows = msgs
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
                    }
                    _ => None,
                })
                .take(MAX_LABELS * 4)
                .collect();
            out.push(rows);
        }
        Ok(out)
    };
    tokio::pin!(connection);
    tokio::select! {
        r = work => r,
        r = &mut connection => Err(Observation::fail(
            "connect_error",
            format!("PostgreSQL at {} closed the connection: {}", redact(url),
                r.err().map_or("no error given".into(), |e| e.to_string())),
        )),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

async fn command(argv: &[String]) -> Result<Depth, Observation> {
    let f = super::command::execute(argv, &BTreeMap::new()).await?;
    let program = &argv[0];
    if !f.status.success() {
        return Err(Observation::fail(
            "exit_code",
            format!(
                "{program} exited with {}: {}",
                f.status.code().map_or("a signal".into(), |c| c.to_string()),
                super::excerpt(&f.stderr, 200)
            ),
        ));
    }
    let text = String::from_utf8_lossy(&f.stdout);
    let first = text.lines().next().unwrap_or("").trim().to_string();
    depth_of(&[vec![Some(first)]]).map_err(|e| {
        Observation::fail(
            "bad_output",
            format!("{program} printed {e}; it must print one number"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;

    fn config(body: &str) -> QueueConfig {
        let c = crate::config::parse(&format!("[[queue]]\nname = \"q\"\n{body}"), "t.toml")
            .unwrap_or_else(|e| panic!("{e}"));
        c.queue[0].clone()
    }

    fn samples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hylafax-spool")
    }

    #[test]
    fn hylafax_spool_fixture_counts_by_state() {
        let d = hylafax(&samples(), SystemTime::now()).unwrap();
        let by: BTreeMap<_, _> = d.by_state.iter().cloned().collect();
        assert_eq!(by["sleeping"], 1);
        assert_eq!(by["ready"], 2);
        assert_eq!(by["failed"], 1, "a failed job left in sendq is not waiting");
        assert_eq!(d.depth, 3);
        assert_eq!(d.pages_pending, Some(1), "q3 has 1 of 1 page unsent");
        assert!(d.oldest_age.is_some());
    }

    #[test]
    fn missing_spool_is_a_read_error_naming_it() {
        let o = hylafax(Path::new("/nonexistent/spool"), SystemTime::now()).unwrap_err();
        assert_eq!(o.error_type, Some("read_error"));
        assert!(
            o.detail.contains("/nonexistent/spool/sendq"),
            "{}",
            o.detail
        );
    }

    #[test]
    fn high_water_and_max_age_degrade() {
        let c =
            config("source = \"directory\"\npath = \"/tmp\"\nhigh_water = 10\nmax_age = \"10m\"");
        let d = |depth, age| Depth {
            depth,
            oldest_age: Some(Duration::from_secs(age)),
            ..Depth::default()
        };
        assert_eq!(judge(&c, d(10, 599)).status, Status::Ok);
        let o = judge(&c, d(11, 0));
        assert_eq!(
            (o.status, o.error_type),
            (Status::Degraded, Some("high_water"))
        );
        assert_eq!(judge(&c, d(1, 601)).error_type, Some("too_old"));
    }

    #[test]
    fn query_answers_one_number_or_labelled_rows() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(depth_of(&[vec![s("42")]]).unwrap().depth, 42);
        let d = depth_of(&[vec![s("pending"), s("3")], vec![s("retry"), s("2")]]).unwrap();
        assert_eq!((d.depth, d.by_state.len()), (5, 2));
        assert!(depth_of(&[vec![s("many")]])
            .unwrap_err()
            .contains("`many` is not a count"));
        assert!(depth_of(&[vec![s("1"), s("2"), s("3")]]).is_err());
    }

    #[tokio::test]
    async fn sqlite_source_reads_a_count() {
        let dir =
            std::env::temp_dir().join(format!("telagent-queue-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("q.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS outq (state TEXT); DELETE FROM outq; INSERT INTO outq VALUES ('new'), ('new'), ('retry');").unwrap();
        let c = config(&format!(
            "source = \"sql\"\nurl = \"sqlite://{}\"\nquery = \"SELECT state, count(*) FROM outq GROUP BY state\"",
            db.display()
        ));
        let o = QueueCheck::new(c).probe().await;
        assert_eq!(o.status, Status::Ok, "{}", o.detail);
        assert_eq!(o.values[0].value, 3.0);
        let bad = config(&format!(
            "source = \"sql\"\nurl = \"sqlite://{}\"\nquery = \"SELECT nope FROM outq\"",
            db.display()
        ));
        let o = QueueCheck::new(bad).probe().await;
        assert_eq!(o.error_type, Some("query_error"), "{}", o.detail);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn command_source_needs_one_number() {
        let o = QueueCheck::new(config("source = \"command\"\ncommand = [\"echo\", \"17\"]"))
            .probe()
            .await;
        assert_eq!((o.status, o.values[0].value), (Status::Ok, 17.0));
        let o = QueueCheck::new(config(
            "source = \"command\"\ncommand = [\"echo\", \"lots\"]",
        ))
        .probe()
        .await;
        assert_eq!(o.error_type, Some("bad_output"), "{}", o.detail);
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgresql://fax:secret@db:5432/q"),
            "postgresql://fax:***@db:5432/q"
        );
    }
}
