//! The traffic store: one SQLite file (`<state_dir>/traffic.db`, WAL, synchronous=NORMAL).
//!
//! Tables:
//! - `buckets`: messages, pages and line seconds per tier (minute, hour, day, week), bucket
//!   start, server, direction, result and line. Every event is added to every tier in one
//!   transaction, so a roll-up is only the deletion of the finer tier past its retention
//!   (`[traffic] minute_retention`, `hour_retention`); days and weeks are kept.
//! - `lifetime`: the counters behind the Prometheus `_total` metrics, never reset.
//! - `sources`: each tailed file's identity (device, inode, first bytes) and read offset,
//!   written in the same transaction as the counts read before that offset.
//! - `batches`: ids of the event batches already counted, so a batch posted again after a
//!   lost answer is acknowledged without being counted twice.
//!
//! Totals over a window are read from the coarsest tier that covers each part of it: whole
//! weeks from `week`, whole days from `day`, whole hours from `hour`, the rest from
//! `minute`. A window reaching past
//! the minute retention is widened to whole hours there, past the hour retention to whole
//! days.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::quality;
use super::totals::{Query, Row, Split};
use super::{Count, Direction, Event, Key};

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86400;
pub const WEEK: i64 = 7 * DAY;

/// The line a server's events are counted under once it has `max_lines` lines.
pub const OTHER_LINE: &str = "other";

/// A store operation failed; the message names the database file.
#[derive(Debug, thiserror::Error)]
#[error("traffic store {path}: {source}")]
pub struct StoreError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

impl StoreError {
    /// A damaged store file, for what SQLite itself does not see (an emptied file).
    pub fn corrupt(path: &Path, why: &str) -> StoreError {
        StoreError {
            path: path.display().to_string(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(why.to_string()),
            ),
        }
    }

    /// The file is damaged or not a database: it must be moved aside.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self.source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    }
}

/// Events refused as a whole (nothing of the batch is counted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the store already counts {0} servers ([traffic] max_servers); `{1}` is not accepted")]
    TooManyServers(usize, String),
}

/// How long each tier is kept, and the caps on label values.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub minute_retention: Duration,
    pub hour_retention: Duration,
    pub max_lines: usize,
    pub max_servers: usize,
}

impl From<&super::TrafficConfig> for Limits {
    fn from(c: &super::TrafficConfig) -> Self {
        Limits {
            minute_retention: c.minute_retention,
            hour_retention: c.hour_retention,
            max_lines: c.max_lines,
            max_servers: c.max_servers,
        }
    }
}

/// Where the reading of a tailed file stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    /// Bytes of the file already counted (always at a line start).
    pub offset: u64,
    /// Lines of the file already read.
    pub line: u64,
    /// The first bytes of the file, to tell a new file that reuses an inode.
    pub head: Vec<u8>,
    pub records: u64,
    pub malformed: u64,
}

/// What became of a batch of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Counted(usize),
    /// The batch id was counted before; nothing was added.
    Duplicate,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Device and inode of the file opened: a file removed or replaced behind our back is
    /// noticed before a write is acknowledged.
    file: (u64, u64),
    limits: Limits,
    lifetime: BTreeMap<Key, Count>,
    lines: BTreeMap<String, BTreeSet<String>>,
    quality: quality::Memory,
    /// Lines a check judges: always counted under their own name, whatever `max_lines`.
    watched: BTreeSet<String>,
    /// Servers for which a line was counted as `other` (logged once each).
    merged: BTreeSet<String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    tier INTEGER NOT NULL, start INTEGER NOT NULL, server TEXT NOT NULL,
    direction TEXT NOT NULL, result TEXT NOT NULL, line TEXT NOT NULL,
    messages INTEGER NOT NULL, pages INTEGER NOT NULL, seconds INTEGER NOT NULL,
    PRIMARY KEY (tier, start, server, direction, result, line)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lifetime (
    server TEXT NOT NULL, line TEXT NOT NULL, direction TEXT NOT NULL, result TEXT NOT NULL,
    messages INTEGER NOT NULL, pages INTEGER NOT NULL,
    PRIMARY KEY (server, line, direction, result)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL, offset INTEGER NOT NULL,
    line INTEGER NOT NULL, head BLOB NOT NULL, records INTEGER NOT NULL, malformed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
";

fn result_str(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "failed"
    }
}

pub fn floor(t: i64, d: i64) -> i64 {
    t.div_euclid(d) * d
}

pub fn ceil(t: i64, d: i64) -> i64 {
    floor(t.saturating_add(d - 1), d)
}

/// Per tier and bucket: messages, pages, seconds added under a key.
type Sums = BTreeMap<(i64, i64, Key), (u64, u64, u64)>;

/// Device and inode of the file at `path` ((0, 0) when there is none).
fn file_id(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or((0, 0), |m| (m.dev(), m.ino()))
}

impl Store {
    /// Opens (or creates) the store and loads the lifetime counters.
    pub fn open(path: &Path, limits: Limits) -> Result<Store, StoreError> {
        let err = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .map_err(err)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(quality::SCHEMA).map_err(err)?;
        Store::loaded(conn, path, limits)
    }

    /// The store on an open connection, its lifetime counters loaded.
    fn loaded(conn: Connection, path: &Path, limits: Limits) -> Result<Store, StoreError> {
        let mut store = Store {
            conn,
            file: file_id(path),
            path: path.to_path_buf(),
            limits,
            lifetime: BTreeMap::new(),
            lines: BTreeMap::new(),
            quality: quality::Memory::default(),
            watched: BTreeSet::new(),
            merged: BTreeSet::new(),
        };
        store.load_lifetime().map_err(|e| store.err(e))?;
        // A store written before line statistics has no attempts yet (read-only opens do
        // not add the tables).
        let has_attempts: bool = store
            .conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'line_lifetime'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| store.err(e))?;
        if has_attempts {
            store.quality = quality::Memory::load(&store.conn).map_err(|e| store.err(e))?;
        }
        Ok(store)
    }

    /// Opens an existing store read-only, for `telagent totals --state-dir` while the
    /// agent is stopped: nothing is created or written.
    pub fn open_read_only(path: &Path, limits: Limits) -> Result<Store, StoreError> {
        let err = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err)?;
        conn.execute_batch("PRAGMA busy_timeout=5000;")
            .map_err(err)?;
        Store::loaded(conn, path, limits)
    }

    /// Reads every page and checks every index against its table (`PRAGMA
    /// integrity_check`): damage is found at start, not at the first write that touches
    /// it, nor as a position that silently reads a file again.
    pub fn check(&self) -> Result<(), StoreError> {
        let verdict: String = self
            .conn
            .query_row("PRAGMA integrity_check(1)", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if verdict == "ok" {
            Ok(())
        } else {
            Err(self.err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(verdict),
            )))
        }
    }

    /// Err when the file opened is no longer the one at the path (removed, replaced):
    /// what would be written now would be lost.
    fn still_on_disk(&self) -> Result<(), StoreError> {
        if file_id(&self.path) == self.file {
            return Ok(());
        }
        Err(self.err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("the file was removed or replaced while the agent had it open; restart the agent to open a new store".into()),
        )))
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn load_lifetime(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT server, line, direction, result, messages, pages FROM lifetime")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        for row in rows {
            let (server, line, direction, result, messages, pages) = row?;
            let Some(direction) = Direction::parse(&direction) else {
                continue;
            };
            self.lines
                .entry(server.clone())
                .or_default()
                .insert(line.clone());
            self.lifetime.insert(
                Key {
                    server,
                    line,
                    direction,
                    ok: result == "ok",
                },
                Count {
                    messages: messages as u64,
                    pages: pages as u64,
                },
            );
        }
        Ok(())
    }

    /// The servers traffic was ever counted for.
    pub fn servers(&self) -> Vec<String> {
        self.lines.keys().cloned().collect()
    }

    /// The lines checks judge: never counted as `other`.
    pub fn watch(&mut self, lines: BTreeSet<String>) {
        self.watched = lines;
    }

    /// Attempt counts and recent attempts per line.
    pub fn quality(&self) -> &quality::Memory {
        &self.quality
    }

    /// Line statistics since `since`, at `now`.
    pub fn lines(
        &self,
        since: i64,
        server: Option<&str>,
        now: i64,
    ) -> Result<Vec<quality::LineStats>, StoreError> {
        quality::lines(&self.conn, since, self.cuts(now).1, server).map_err(|e| self.err(e))
    }

    /// The newest attempts of a line since `since`.
    pub fn attempts(
        &self,
        since: i64,
        line: &str,
        direction: Option<Direction>,
        server: Option<&str>,
    ) -> Result<Vec<quality::AttemptRow>, StoreError> {
        quality::attempts(&self.conn, since, line, direction, server).map_err(|e| self.err(e))
    }

    /// The remote ends with the most failures since `since`.
    pub fn destinations(
        &self,
        since: i64,
        server: Option<&str>,
        limit: usize,
    ) -> Result<Vec<quality::DestinationStats>, StoreError> {
        quality::destinations(&self.conn, since, server, limit).map_err(|e| self.err(e))
    }

    /// The lifetime counters (they only grow).
    pub fn lifetime(&self) -> &BTreeMap<Key, Count> {
        &self.lifetime
    }

    /// The first bucket start kept for minutes and for hours at `now`.
    fn cuts(&self, now: i64) -> (i64, i64) {
        let m = self.limits.minute_retention.as_secs() as i64;
        let h = self.limits.hour_retention.as_secs() as i64;
        (ceil(now - m, HOUR), ceil(now - h, DAY))
    }

    /// Adds events in one transaction; with a batch id, a batch seen before is not counted
    /// again.
    pub fn ingest(
        &mut self,
        events: &[Event],
        batch: Option<&str>,
        now: i64,
    ) -> Result<Result<Ingested, Refused>, StoreError> {
        let counted = self.count(events, now, |tx| match batch {
            None => Ok(true),
            Some(id) => Ok(tx.execute(
                "INSERT OR IGNORE INTO batches (id, at) VALUES (?1, ?2)",
                params![id, now],
            )? == 1),
        })?;
        Ok(counted.map(|fresh| {
            if fresh {
                Ingested::Counted(events.len())
            } else {
                Ingested::Duplicate
            }
        }))
    }

    /// Adds the events read from a tailed file and moves its position, in one transaction.
    pub fn ingest_tail(
        &mut self,
        source: &str,
        events: &[Event],
        pos: &Position,
        now: i64,
    ) -> Result<Result<(), Refused>, StoreError> {
        let counted = self.count(events, now, |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO sources (name, dev, ino, offset, line, head, records, malformed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    source,
                    pos.dev as i64,
                    pos.ino as i64,
                    pos.offset as i64,
                    pos.line as i64,
                    pos.head,
                    pos.records as i64,
                    pos.malformed as i64
                ],
            )?;
            Ok(true)
        })?;
        Ok(counted.map(|_| ()))
    }

    /// Counts `events` in one transaction with what `also` writes; when `also` returns
    /// false, nothing is written and the events are not counted.
    fn count(
        &mut self,
        events: &[Event],
        now: i64,
        also: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<bool>,
    ) -> Result<Result<bool, Refused>, StoreError> {
        self.still_on_disk()?;
        let (sums, lifetime, lines, attempts, merged) = match self.aggregate(events, now) {
            Ok(a) => a,
            Err(r) => return Ok(Err(r)),
        };
        let (minute_cut, hour_cut) = self.cuts(now);
        let result = (|| {
            let tx = self.conn.transaction()?;
            if !also(&tx)? {
                return Ok(false);
            }
            write(&tx, &sums, &lifetime)?;
            quality::write(&tx, &attempts, minute_cut, hour_cut)?;
            tx.commit()?;
            Ok(true)
        })();
        let counted = result.map_err(|e| self.err(e))?;
        if counted {
            self.apply(lifetime, lines);
            self.quality.add(&attempts);
            self.merged.extend(merged);
        }
        Ok(Ok(counted))
    }

    /// The committed position of a tailed file.
    pub fn position(&self, source: &str) -> Result<Option<Position>, StoreError> {
        self.conn
            .query_row(
                "SELECT dev, ino, offset, line, head, records, malformed FROM sources WHERE name = ?1",
                params![source],
                |r| {
                    Ok(Position {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                        offset: r.get::<_, i64>(2)? as u64,
                        line: r.get::<_, i64>(3)? as u64,
                        head: r.get(4)?,
                        records: r.get::<_, i64>(5)? as u64,
                        malformed: r.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Sums the events per bucket, mapping lines past `max_lines` to `other`; refuses a
    /// batch that would exceed `max_servers`. Canary faxes are left out of the sums; every
    /// event is an attempt of its line (as counted).
    #[allow(clippy::type_complexity)]
    fn aggregate<'e>(
        &self,
        events: &'e [Event],
        now: i64,
    ) -> Result<
        (
            Sums,
            BTreeMap<Key, Count>,
            BTreeMap<String, BTreeSet<String>>,
            Vec<(String, &'e Event)>,
            BTreeSet<String>,
        ),
        Refused,
    > {
        let (minute_cut, hour_cut) = self.cuts(now);
        let mut sums = Sums::new();
        let mut lifetime: BTreeMap<Key, Count> = BTreeMap::new();
        let mut new_lines: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut attempts = Vec::with_capacity(events.len());
        let mut merged = BTreeSet::new();
        for e in events {
            let known = self.lines.get(&e.server);
            let added = new_lines.get(&e.server);
            if known.is_none() && added.is_none() {
                let servers = self.lines.len() + new_lines.len();
                if servers >= self.limits.max_servers {
                    return Err(Refused::TooManyServers(servers, e.server.clone()));
                }
            }
            let has = |l: &str| {
                known.is_some_and(|s| s.contains(l)) || added.is_some_and(|s| s.contains(l))
            };
            let count = known.map_or(0, BTreeSet::len) + added.map_or(0, BTreeSet::len);
            // One slot stays free for `other`; a line a check judges is never merged.
            let line = if has(&e.line)
                || count + 1 < self.limits.max_lines
                || self.watched.contains(&e.line)
            {
                e.line.clone()
            } else {
                if !self.merged.contains(&e.server) && !merged.contains(&e.server) {
                    tracing::warn!(server = %e.server, line = %e.line, max_lines = self.limits.max_lines,
                        "A server has more lines than [traffic] max_lines: further lines are counted as `other` (raise max_lines, or name the line in a line_quality check to keep it).");
                    merged.insert(e.server.clone());
                }
                OTHER_LINE.to_string()
            };
            if !has(&line) {
                new_lines
                    .entry(e.server.clone())
                    .or_default()
                    .insert(line.clone());
            }
            attempts.push((line.clone(), e));
            if e.detail.canary {
                continue;
            }
            let key = Key {
                server: e.server.clone(),
                line,
                direction: e.direction,
                ok: e.ok,
            };
            for (tier, cut) in [
                (MINUTE, minute_cut),
                (HOUR, hour_cut),
                (DAY, i64::MIN),
                (WEEK, i64::MIN),
            ] {
                let start = floor(e.time, tier);
                if start < cut {
                    continue;
                }
                let s = sums.entry((tier, start, key.clone())).or_default();
                s.0 += 1;
                s.1 += u64::from(e.pages);
                s.2 += u64::from(e.seconds);
            }
            let c = lifetime.entry(key).or_default();
            c.messages += 1;
            c.pages += u64::from(e.pages);
        }
        Ok((sums, lifetime, new_lines, attempts, merged))
    }

    fn apply(&mut self, lifetime: BTreeMap<Key, Count>, lines: BTreeMap<String, BTreeSet<String>>) {
        for (k, c) in lifetime {
            let t = self.lifetime.entry(k).or_default();
            t.messages += c.messages;
            t.pages += c.pages;
        }
        for (server, l) in lines {
            self.lines.entry(server).or_default().extend(l);
        }
    }

    /// Deletes the minute and hour buckets past their retention, and old batch ids.
    pub fn prune(&mut self, now: i64) -> Result<usize, StoreError> {
        let (minute_cut, hour_cut) = self.cuts(now);
        let n = (|| {
            let tx = self.conn.transaction()?;
            let mut n = tx.execute(
                "DELETE FROM buckets WHERE tier = ?1 AND start < ?2",
                params![MINUTE, minute_cut],
            )?;
            n += tx.execute(
                "DELETE FROM buckets WHERE tier = ?1 AND start < ?2",
                params![HOUR, hour_cut],
            )?;
            tx.execute("DELETE FROM batches WHERE at < ?1", params![minute_cut])?;
            n += quality::prune(&tx, minute_cut, hour_cut)?;
            tx.commit()?;
            Ok(n)
        })()
        .map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// Totals per server (and line or hour) over the query's window.
    pub fn totals(&self, q: &Query, now: i64) -> Result<Vec<Row>, StoreError> {
        let (minute_cut, hour_cut) = self.cuts(now);
        let pieces = match q.by {
            Some(Split::Hour) => vec![(HOUR, floor(q.since, HOUR), ceil(q.until, HOUR))],
            _ => pieces(q.since, q.until, minute_cut, hour_cut),
        };
        let line_col = if q.by == Some(Split::Line) {
            "line"
        } else {
            "''"
        };
        let hour_col = if q.by == Some(Split::Hour) {
            "start"
        } else {
            "0"
        };
        let sql = format!(
            "SELECT server, {line_col}, {hour_col}, direction, result, SUM(messages), SUM(pages)
             FROM buckets WHERE tier = ?1 AND start >= ?2 AND start < ?3
             AND (?4 IS NULL OR server = ?4) GROUP BY 1, 2, 3, 4, 5"
        );
        let mut rows: BTreeMap<(String, String, i64), Row> = BTreeMap::new();
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        for (tier, from, to) in pieces {
            let found = stmt
                .query_map(params![tier, from, to, q.server], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                })
                .map_err(|e| self.err(e))?;
            for f in found {
                let (server, line, hour, direction, result, messages, pages) =
                    f.map_err(|e| self.err(e))?;
                let Some(direction) = Direction::parse(&direction) else {
                    continue;
                };
                let row = rows
                    .entry((server.clone(), line.clone(), hour))
                    .or_insert_with(|| Row {
                        server,
                        line: (q.by == Some(Split::Line)).then_some(line),
                        hour: (q.by == Some(Split::Hour)).then_some(hour),
                        ..Row::default()
                    });
                row.add(direction, result == "ok", messages as u64, pages as u64);
            }
        }
        Ok(rows.into_values().collect())
    }
}

fn write(
    tx: &Transaction<'_>,
    sums: &Sums,
    lifetime: &BTreeMap<Key, Count>,
) -> rusqlite::Result<()> {
    let mut bucket = tx.prepare_cached(
        "INSERT INTO buckets (tier, start, server, direction, result, line, messages, pages, seconds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT DO UPDATE SET messages = messages + excluded.messages,
           pages = pages + excluded.pages, seconds = seconds + excluded.seconds",
    )?;
    for ((tier, start, k), (m, p, s)) in sums {
        bucket.execute(params![
            tier,
            start,
            k.server,
            k.direction.as_str(),
            result_str(k.ok),
            k.line,
            *m as i64,
            *p as i64,
            *s as i64
        ])?;
    }
    let mut life = tx.prepare_cached(
        "INSERT INTO lifetime (server, line, direction, result, messages, pages)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT DO UPDATE SET messages = messages + excluded.messages,
           pages = pages + excluded.pages",
    )?;
    for (k, c) in lifetime {
        life.execute(params![
            k.server,
            k.line,
            k.direction.as_str(),
            result_str(k.ok),
            c.messages as i64,
            c.pages as i64
        ])?;
    }
    Ok(())
}

/// Splits `[since, until)` into `(tier, from, to)` pieces read from the coarsest tier
/// that covers them. Widened to whole minutes; to whole hours before `minute_cut` and to
/// whole days before `hour_cut`.
pub fn pieces(since: i64, until: i64, minute_cut: i64, hour_cut: i64) -> Vec<(i64, i64, i64)> {
    let (mut s, mut u) = (floor(since, MINUTE), ceil(until, MINUTE));
    if s < minute_cut {
        s = floor(s, HOUR);
    }
    if u < minute_cut {
        u = ceil(u, HOUR);
    }
    if s < hour_cut {
        s = floor(s, DAY);
    }
    if u < hour_cut {
        u = ceil(u, DAY);
    }
    let mut out = Vec::new();
    split(s, u, &[WEEK, DAY, HOUR, MINUTE], &mut out);
    out
}

/// Reads `[a, b)` from the coarsest of `tiers` that fits whole buckets, the edges from the
/// finer ones.
fn split(a: i64, b: i64, tiers: &[i64], out: &mut Vec<(i64, i64, i64)>) {
    if a >= b {
        return;
    }
    let Some((&tier, finer)) = tiers.split_first() else {
        return;
    };
    if finer.is_empty() {
        out.push((tier, a, b));
        return;
    }
    let (c0, c1) = (ceil(a, tier), floor(b, tier));
    if c0 < c1 {
        out.push((tier, c0, c1));
        split(a, c0, finer, out);
        split(c1, b, finer, out);
    } else {
        split(a, b, finer, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Lcg;

    fn limits() -> Limits {
        Limits {
            minute_retention: Duration::from_secs(14 * 86400),
            hour_retention: Duration::from_secs(730 * 86400),
            max_lines: 4,
            max_servers: 3,
        }
    }

    use crate::traffic::Detail;

    fn event(time: i64, server: &str, line: &str, direction: Direction, ok: bool) -> Event {
        Event {
            time,
            server: server.into(),
            direction,
            ok,
            line: line.into(),
            pages: 2,
            seconds: 30,
            detail: Default::default(),
        }
    }

    fn temp_store(name: &str) -> (Store, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("telagent-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("traffic.db");
        (Store::open(&path, limits()).unwrap(), dir)
    }

    const NOW: i64 = 1_795_433_409;

    /// A line a check judges is counted under its own name even past `max_lines`; others
    /// become `other`.
    #[test]
    fn watched_lines_are_never_merged() {
        let (mut store, dir) = temp_store("watched");
        store.watch(["ttyW".to_string()].into());
        let first: Vec<Event> = ["c1", "c2", "c3", "c4"]
            .iter()
            .map(|l| event(NOW, "a", l, Direction::Sent, true))
            .collect();
        store.ingest(&first, None, NOW).unwrap().unwrap();
        let late = [
            event(NOW, "a", "ttyW", Direction::Sent, false),
            event(NOW, "a", "c5", Direction::Sent, false),
        ];
        store.ingest(&late, None, NOW).unwrap().unwrap();
        let lines: Vec<String> = store
            .lines(NOW - 3600, Some("a"), NOW)
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert!(lines.contains(&"ttyW".to_string()), "{lines:?}");
        assert!(lines.contains(&OTHER_LINE.to_string()) && !lines.contains(&"c5".to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Random attempts: per line and direction, `lines()` over any whole-hour window equals
    /// a plain count; canaries are attempts of their line but never in the totals; what
    /// is in memory is what a reopened store loads.
    #[test]
    fn line_statistics_equal_a_plain_count_and_survive_reopen() {
        use crate::traffic::outcome::CLASSES;
        let (mut store, dir) = temp_store("quality");
        let mut rng = Lcg(22);
        let span = 5 * DAY;
        let events: Vec<Event> = (0..4000)
            .map(|_| {
                let mut e = event(
                    NOW - ((rng.next_u64() >> 16) % span as u64) as i64,
                    "a",
                    ["ttyA", "ttyB"][rng.below(2)],
                    [Direction::Sent, Direction::Received][rng.below(2)],
                    rng.below(4) != 0,
                );
                e.detail = Detail {
                    class: (!e.ok).then(|| CLASSES[rng.below(CLASSES.len())]),
                    remote: format!("555{}", rng.below(30)),
                    rate: [None, Some(9600), Some(14400)][rng.below(3)],
                    ecm: Some(rng.below(2) == 0),
                    pages_attempted: None,
                    canary: rng.below(10) == 0,
                };
                e
            })
            .collect();
        for chunk in events.chunks(700) {
            store.ingest(chunk, None, NOW).unwrap().unwrap();
        }
        for _ in 0..30 {
            let since = floor(NOW - ((rng.next_u64() >> 16) % span as u64) as i64, HOUR);
            let got = store.lines(since, Some("a"), NOW).unwrap();
            for l in &got {
                let mine: Vec<&Event> = events
                    .iter()
                    .filter(|e| e.time >= since && e.line == l.line && e.direction == l.direction)
                    .collect();
                let ok = mine.iter().filter(|e| e.ok).count() as u64;
                let rated: Vec<u32> = mine.iter().filter_map(|e| e.detail.rate).collect();
                assert_eq!((l.attempts, l.ok), (mine.len() as u64, ok));
                assert_eq!(
                    l.avg_rate,
                    (!rated.is_empty())
                        .then(|| rated.iter().map(|r| u64::from(*r)).sum::<u64>()
                            / rated.len() as u64)
                );
                assert_eq!(
                    l.last_success,
                    mine.iter().filter(|e| e.ok).map(|e| e.time).max()
                );
            }
            let with_attempts: std::collections::BTreeSet<_> = events
                .iter()
                .filter(|e| e.time >= since)
                .map(|e| (e.line.clone(), e.direction))
                .collect();
            assert_eq!(got.len(), with_attempts.len());
        }
        // Totals leave the canaries out.
        let traffic: u64 = store.lifetime().values().map(|c| c.messages).sum();
        let canaries = events.iter().filter(|e| e.detail.canary).count() as u64;
        assert!(canaries > 0);
        assert_eq!(traffic + canaries, events.len() as u64);
        let all: u64 = store.quality().lifetime.values().sum();
        assert_eq!(all, events.len() as u64);
        // The top destination has the most failures.
        let d = store.destinations(NOW - span, Some("a"), 3).unwrap();
        assert_eq!(d.len(), 3);
        let failures = |r: &str| {
            events
                .iter()
                .filter(|e| e.detail.remote == r && !e.ok)
                .count() as u64
        };
        assert_eq!(d[0].failures, failures(&d[0].remote));
        assert!(d[0].failures >= d[1].failures && d[1].failures >= d[2].failures);
        let before = store.quality().clone();
        let path = dir.join("traffic.db");
        drop(store);
        let again = Store::open(&path, limits()).unwrap();
        assert_eq!(again.quality(), &before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Random events within the minute retention; every random window's totals equal a
    /// plain count over the events, whatever tiers the window is read from.
    #[test]
    fn totals_over_any_window_equal_a_plain_count() {
        let (mut store, dir) = temp_store("windows");
        let mut rng = Lcg(7);
        let span = 10 * DAY;
        let events: Vec<Event> = (0..3000)
            .map(|_| {
                let t = NOW - ((rng.next_u64() >> 16) % span as u64) as i64;
                let server = ["a", "b"][((rng.next_u64() >> 16) % 2) as usize];
                let dir = if (rng.next_u64() >> 16) % 3 == 0 {
                    Direction::Received
                } else {
                    Direction::Sent
                };
                event(t, server, "ttyS0", dir, (rng.next_u64() >> 16) % 5 != 0)
            })
            .collect();
        for chunk in events.chunks(500) {
            store.ingest(chunk, None, NOW).unwrap().unwrap();
        }
        for _ in 0..200 {
            let a = NOW - ((rng.next_u64() >> 16) % span as u64) as i64;
            let b = NOW - ((rng.next_u64() >> 16) % span as u64) as i64;
            let (since, until) = (floor(a.min(b), MINUTE), floor(a.max(b), MINUTE));
            let rows = store
                .totals(
                    &Query {
                        since,
                        until,
                        server: None,
                        by: None,
                    },
                    NOW,
                )
                .unwrap();
            for server in ["a", "b"] {
                let mut want = Row {
                    server: server.into(),
                    ..Row::default()
                };
                for e in events
                    .iter()
                    .filter(|e| e.server == server && e.time >= since && e.time < until)
                {
                    want.add(e.direction, e.ok, 1, u64::from(e.pages));
                }
                let got = rows.iter().find(|r| r.server == server).cloned();
                let got = got.unwrap_or(Row {
                    server: server.into(),
                    ..Row::default()
                });
                assert_eq!(got, want, "window {since}..{until}");
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn totals_split_by_line_and_by_hour() {
        let (mut store, dir) = temp_store("split");
        let h0 = floor(NOW, HOUR) - 2 * HOUR;
        let events = [
            event(h0 + 10, "a", "ttyS0", Direction::Sent, true),
            event(h0 + 20, "a", "ttyS1", Direction::Sent, false),
            event(h0 + HOUR + 5, "a", "ttyS0", Direction::Received, true),
        ];
        store.ingest(&events, None, NOW).unwrap().unwrap();
        let q = |by| Query {
            since: h0,
            until: h0 + 2 * HOUR,
            server: Some("a".into()),
            by: Some(by),
        };
        let lines = store.totals(&q(Split::Line), NOW).unwrap();
        let got: Vec<(Option<&str>, u64, u64, u64)> = lines
            .iter()
            .map(|r| (r.line.as_deref(), r.sent, r.failed, r.received))
            .collect();
        assert_eq!(got, [(Some("ttyS0"), 1, 0, 1), (Some("ttyS1"), 0, 1, 0)]);
        let hours = store.totals(&q(Split::Hour), NOW).unwrap();
        let got: Vec<(Option<i64>, u64, u64)> = hours
            .iter()
            .map(|r| (r.hour, r.messages(), r.pages()))
            .collect();
        assert_eq!(got, [(Some(h0), 2, 4), (Some(h0 + HOUR), 1, 2)]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pieces_cover_the_window_once() {
        let mut rng = Lcg(3);
        for _ in 0..2000 {
            let s = ((rng.next_u64() >> 16) % (40 * DAY as u64)) as i64;
            let u = s + ((rng.next_u64() >> 16) % (20 * DAY as u64)) as i64;
            let p = pieces(s, u, 0, 0);
            let mut covered: Vec<(i64, i64)> = p.iter().map(|&(_, a, b)| (a, b)).collect();
            covered.sort();
            let mut at = floor(s, MINUTE);
            for (a, b) in &covered {
                assert_eq!(*a, at, "gap or overlap in {p:?} for {s}..{u}");
                at = *b;
            }
            if !covered.is_empty() {
                assert_eq!(at, ceil(u, MINUTE));
            }
            for (tier, a, b) in p {
                assert_eq!((a % tier, b % tier), (0, 0), "unaligned {tier} {a} {b}");
            }
        }
    }

    #[test]
    fn windows_past_retention_widen_to_hours_then_days() {
        let p = pieces(10 * DAY + 90, 40 * DAY, 20 * DAY, 15 * DAY);
        assert_eq!(p[0], (WEEK, 14 * DAY, 35 * DAY));
        assert!(p.contains(&(DAY, 10 * DAY, 14 * DAY)), "{p:?}");
        assert!(p.iter().all(|&(tier, _, _)| tier >= DAY), "{p:?}");
        let p = pieces(16 * DAY + 3700, 40 * DAY, 20 * DAY, 15 * DAY);
        assert!(p.contains(&(HOUR, 16 * DAY + HOUR, 17 * DAY)), "{p:?}");
        assert!(p.iter().all(|&(tier, _, _)| tier != MINUTE), "{p:?}");
    }

    #[test]
    fn lifetime_survives_reopen_and_batches_count_once() {
        let (mut store, dir) = temp_store("lifetime");
        let e = vec![event(NOW, "a", "ttyS0", Direction::Sent, true); 10];
        assert_eq!(
            store.ingest(&e, Some("b1"), NOW).unwrap(),
            Ok(Ingested::Counted(10))
        );
        assert_eq!(
            store.ingest(&e, Some("b1"), NOW).unwrap(),
            Ok(Ingested::Duplicate)
        );
        drop(store);
        let store = Store::open(&dir.join("traffic.db"), limits()).unwrap();
        let c = store.lifetime().values().next().copied().unwrap();
        assert_eq!(
            c,
            Count {
                messages: 10,
                pages: 20
            }
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn lines_and_servers_are_capped() {
        let (mut store, dir) = temp_store("caps");
        let e: Vec<Event> = (0..10)
            .map(|i| event(NOW, "a", &format!("tty{i}"), Direction::Sent, true))
            .collect();
        store.ingest(&e, None, NOW).unwrap().unwrap();
        let lines: BTreeSet<&str> = store.lifetime().keys().map(|k| k.line.as_str()).collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines.contains(OTHER_LINE));
        let total: u64 = store.lifetime().values().map(|c| c.messages).sum();
        assert_eq!(total, 10, "capped lines still count every message");
        let more: Vec<Event> = ["b", "c", "d"]
            .iter()
            .map(|s| event(NOW, s, "x", Direction::Sent, true))
            .collect();
        assert_eq!(
            store.ingest(&more, None, NOW).unwrap(),
            Err(Refused::TooManyServers(3, "d".into()))
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prune_keeps_days_and_the_totals_of_old_windows() {
        let (mut store, dir) = temp_store("prune");
        let old = NOW - 30 * DAY;
        store
            .ingest(&[event(old, "a", "l", Direction::Sent, true)], None, old)
            .unwrap()
            .unwrap();
        assert!(store.prune(NOW).unwrap() >= 1, "the minute bucket goes");
        let rows = store
            .totals(
                &Query {
                    since: old - 10,
                    until: old + 10,
                    server: None,
                    by: None,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(rows[0].sent, 1, "read from the hour bucket");
        let _ = std::fs::remove_dir_all(dir);
    }
}
