//! Fax attempts, as evidence of whether faxes get through: per line and direction, the
//! failure class, signalling rate, ECM and the remote end of every attempt.
//!
//! Kept in the traffic store, in the same transaction as the counts:
//! - `attempts`: one row per attempt for `minute_retention` (per-destination tables and the
//!   recent windows after a restart);
//! - `line_buckets`: per hour (kept `hour_retention`) and per day (kept for good), line,
//!   direction and class: attempts, pages, rates, ECM, the last attempt (`telagent lines`
//!   reads whole days and the hours at the window's start);
//! - `line_lifetime`: what `telagent_fax_attempts_total` and the rate histogram count;
//!   never pruned, so the counters never go back.
//!
//! In memory ([`Memory`]): those lifetime counts and the last [`RECENT`] attempts per line
//! and direction, which the `line_quality` check and `telagent_fax_success_ratio` read
//! without touching SQLite.

use std::collections::{BTreeMap, VecDeque};

use rusqlite::{params, Connection, Transaction};
use serde::{Deserialize, Serialize};

use super::outcome::{Class, CLASSES};
use super::{Direction, Event};

/// Attempts kept in memory per line and direction.
pub const RECENT: usize = 256;
/// Longest remote (number or CSI/TSI) kept.
pub const MAX_REMOTE: usize = 64;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS attempts (
    time INTEGER NOT NULL, server TEXT NOT NULL, line TEXT NOT NULL, direction TEXT NOT NULL,
    class TEXT NOT NULL, remote TEXT NOT NULL, rate INTEGER NOT NULL, ecm INTEGER NOT NULL,
    pages INTEGER NOT NULL, pages_attempted INTEGER NOT NULL, seconds INTEGER NOT NULL,
    canary INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS attempts_time ON attempts (time);
CREATE INDEX IF NOT EXISTS attempts_line ON attempts (server, line, direction);
CREATE TABLE IF NOT EXISTS line_buckets (
    tier INTEGER NOT NULL, start INTEGER NOT NULL, server TEXT NOT NULL, line TEXT NOT NULL, direction TEXT NOT NULL,
    class TEXT NOT NULL, attempts INTEGER NOT NULL, pages INTEGER NOT NULL,
    pages_attempted INTEGER NOT NULL,
    rate_sum INTEGER NOT NULL, rate_n INTEGER NOT NULL, ecm_n INTEGER NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (tier, start, server, line, direction, class)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS line_lifetime (
    server TEXT NOT NULL, line TEXT NOT NULL, direction TEXT NOT NULL, class TEXT NOT NULL,
    canary INTEGER NOT NULL, rate INTEGER NOT NULL, ecm INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (server, line, direction, class, canary, rate, ecm)) WITHOUT ROWID;
";

/// A line and direction.
pub type LineKey = (String, String, Direction);

/// What a lifetime count is counted under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LifeKey {
    pub server: String,
    pub line: String,
    pub direction: Direction,
    /// `None`: a success.
    pub class: Option<Class>,
    pub canary: bool,
    /// Signalling rate in bit/s, 0 when unknown.
    pub rate: u32,
    pub ecm: bool,
}

/// One recent attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent {
    pub time: i64,
    pub class: Option<Class>,
    pub rate: Option<u32>,
}

/// Lifetime counts and recent attempts: what metrics and the line_quality check read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    pub lifetime: BTreeMap<LifeKey, u64>,
    pub recent: BTreeMap<LineKey, VecDeque<Recent>>,
}

fn class_str(c: Option<Class>) -> &'static str {
    c.map_or("", Class::as_str)
}

impl Memory {
    /// Adds committed attempts (their lines as counted).
    pub fn add(&mut self, attempts: &[(String, &Event)]) {
        for (line, e) in attempts {
            *self.lifetime.entry(life_key(line, e)).or_default() += 1;
            let r = self
                .recent
                .entry((e.server.clone(), line.clone(), e.direction))
                .or_default();
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(Recent {
                time: e.time,
                class: e.detail.class,
                rate: e.detail.rate,
            });
        }
    }

    /// Loads lifetime counts and the recent attempts of every line.
    pub fn load(conn: &Connection) -> rusqlite::Result<Memory> {
        let mut m = Memory::default();
        let mut stmt = conn.prepare(
            "SELECT server, line, direction, class, canary, rate, ecm, attempts FROM line_lifetime",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        for row in rows {
            let (server, line, direction, class, canary, rate, ecm, n) = row?;
            let Some(direction) = Direction::parse(&direction) else {
                continue;
            };
            m.lifetime.insert(
                LifeKey {
                    server,
                    line,
                    direction,
                    class: Class::parse(&class),
                    canary,
                    rate: rate as u32,
                    ecm,
                },
                n as u64,
            );
        }
        let lines: std::collections::BTreeSet<LineKey> = m
            .lifetime
            .keys()
            .map(|k| (k.server.clone(), k.line.clone(), k.direction))
            .collect();
        let mut recent = conn.prepare(
            "SELECT time, class, rate FROM attempts WHERE server = ?1 AND line = ?2
             AND direction = ?3 ORDER BY rowid DESC LIMIT ?4",
        )?;
        for key in lines {
            let rows =
                recent.query_map(params![key.0, key.1, key.2.as_str(), RECENT as i64], |r| {
                    Ok(Recent {
                        time: r.get(0)?,
                        class: Class::parse(&r.get::<_, String>(1)?),
                        rate: Some(r.get::<_, i64>(2)? as u32).filter(|&r| r > 0),
                    })
                })?;
            let mut got: VecDeque<Recent> = rows.collect::<rusqlite::Result<_>>()?;
            got.make_contiguous().reverse();
            if !got.is_empty() {
                m.recent.insert(key, got);
            }
        }
        Ok(m)
    }
}

fn life_key(line: &str, e: &Event) -> LifeKey {
    LifeKey {
        server: e.server.clone(),
        line: line.to_string(),
        direction: e.direction,
        class: e.detail.class,
        canary: e.detail.canary,
        rate: e.detail.rate.unwrap_or(0),
        ecm: e.detail.ecm == Some(true),
    }
}

/// Per tier, bucket start, line and class: attempts, pages, rate sum, rates known, ECM
/// attempts, last time, pages attempted.
type Buckets = BTreeMap<(i64, i64, LineKey, &'static str), [i64; 7]>;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Writes the attempts (each with its line as counted) in the caller's transaction;
/// `hour_cut`: hours before it are not kept.
pub fn write(
    tx: &Transaction<'_>,
    attempts: &[(String, &Event)],
    minute_cut: i64,
    hour_cut: i64,
) -> rusqlite::Result<()> {
    let mut row = tx.prepare_cached(
        "INSERT INTO attempts (time, server, line, direction, class, remote, rate, ecm, pages,
           pages_attempted, seconds, canary)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut buckets = Buckets::new();
    let mut life: BTreeMap<LifeKey, i64> = BTreeMap::new();
    for (line, e) in attempts {
        let d = &e.detail;
        if e.time >= minute_cut {
            row.execute(params![
                e.time,
                e.server,
                line,
                e.direction.as_str(),
                class_str(d.class),
                d.remote,
                d.rate.unwrap_or(0),
                d.ecm == Some(true),
                e.pages,
                e.pages_attempted(),
                e.seconds,
                d.canary
            ])?;
        }
        for tier in [HOUR, DAY] {
            let start = super::store::floor(e.time, tier);
            if tier == HOUR && start < hour_cut {
                continue;
            }
            let h = buckets
                .entry((
                    tier,
                    start,
                    (e.server.clone(), line.clone(), e.direction),
                    class_str(d.class),
                ))
                .or_default();
            h[0] += 1;
            h[1] += i64::from(e.pages);
            if let Some(r) = d.rate {
                h[2] += i64::from(r);
                h[3] += 1;
            }
            h[4] += i64::from(d.ecm == Some(true));
            h[5] = h[5].max(e.time);
            h[6] += i64::from(e.pages_attempted());
        }
        *life.entry(life_key(line, e)).or_default() += 1;
    }
    let mut bucket = tx.prepare_cached(
        "INSERT INTO line_buckets (tier, start, server, line, direction, class, attempts, pages,
           rate_sum, rate_n, ecm_n, last, pages_attempted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT DO UPDATE SET attempts = attempts + excluded.attempts,
           pages = pages + excluded.pages, pages_attempted = pages_attempted + excluded.pages_attempted,
           rate_sum = rate_sum + excluded.rate_sum,
           rate_n = rate_n + excluded.rate_n, ecm_n = ecm_n + excluded.ecm_n,
           last = MAX(last, excluded.last)",
    )?;
    for ((tier, start, (server, line, direction), class), v) in &buckets {
        bucket.execute(params![
            tier,
            start,
            server,
            line,
            direction.as_str(),
            class,
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            v[6]
        ])?;
    }
    let mut lifetime = tx.prepare_cached(
        "INSERT INTO line_lifetime (server, line, direction, class, canary, rate, ecm, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT DO UPDATE SET attempts = attempts + excluded.attempts",
    )?;
    for (k, n) in &life {
        lifetime.execute(params![
            k.server,
            k.line,
            k.direction.as_str(),
            class_str(k.class),
            k.canary,
            k.rate,
            k.ecm,
            n
        ])?;
    }
    Ok(())
}

/// Deletes attempts before `minute_cut` and hours before `hour_cut` (days stay).
pub fn prune(tx: &Transaction<'_>, minute_cut: i64, hour_cut: i64) -> rusqlite::Result<usize> {
    Ok(
        tx.execute("DELETE FROM attempts WHERE time < ?1", params![minute_cut])?
            + tx.execute(
                "DELETE FROM line_buckets WHERE tier = ?1 AND start < ?2",
                params![HOUR, hour_cut],
            )?,
    )
}

/// One line and direction over a window: what `telagent lines` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineStats {
    pub server: String,
    pub line: String,
    pub direction: Direction,
    pub attempts: u64,
    pub ok: u64,
    /// ok / attempts; absent without attempts.
    pub success_ratio: Option<f64>,
    pub pages: u64,
    /// Pages the attempts tried to move (as reported; else the pages moved).
    pub pages_attempted: u64,
    /// Mean signalling rate of the attempts that report one, bit/s.
    pub avg_rate: Option<u64>,
    pub ecm_attempts: u64,
    /// The failure class seen most often, and how often.
    pub top_failure: Option<(Class, u64)>,
    /// Failures per class.
    pub failures: BTreeMap<Class, u64>,
    /// Time of the last success, seconds since the Unix epoch.
    pub last_success: Option<i64>,
}

/// One remote end over a window: `telagent lines --by destination`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStats {
    pub server: String,
    pub remote: String,
    pub attempts: u64,
    pub failures: u64,
    pub top_failure: Option<(Class, u64)>,
    pub last_success: Option<i64>,
}

/// Per line and direction since `since` (from the start of its hour), for one server or
/// all: the hours up to the next whole day, then whole days; from before `hour_cut` (hours
/// no longer kept), from the start of its day.
pub fn lines(
    conn: &Connection,
    since: i64,
    hour_cut: i64,
    server: Option<&str>,
) -> rusqlite::Result<Vec<LineStats>> {
    let mut stmt = conn.prepare_cached(
        "SELECT server, line, direction, class, SUM(attempts), SUM(pages), SUM(rate_sum),
           SUM(rate_n), SUM(ecm_n), MAX(last), SUM(pages_attempted)
         FROM line_buckets WHERE ((tier = ?1 AND start >= ?2 AND start < ?3) OR (tier = ?4 AND start >= ?3))
           AND (?5 IS NULL OR server = ?5)
         GROUP BY server, line, direction, class",
    )?;
    let from = super::store::floor(since, HOUR);
    let day = if from < hour_cut {
        super::store::floor(from, DAY)
    } else {
        super::store::ceil(from, DAY)
    };
    let rows = stmt.query_map(params![HOUR, from, day, DAY, server], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            [
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, i64>(9)?,
                r.get::<_, i64>(10)?,
            ],
        ))
    })?;
    let mut out: BTreeMap<LineKey, (LineStats, u64, u64)> = BTreeMap::new();
    for row in rows {
        let (server, line, direction, class, v) = row?;
        let Some(direction) = Direction::parse(&direction) else {
            continue;
        };
        let (s, rate_sum, rate_n) = out
            .entry((server.clone(), line.clone(), direction))
            .or_insert_with(|| {
                (
                    LineStats {
                        server,
                        line,
                        direction,
                        ..LineStats::default()
                    },
                    0,
                    0,
                )
            });
        let n = v[0] as u64;
        s.attempts += n;
        s.pages += v[1] as u64;
        *rate_sum += v[2] as u64;
        *rate_n += v[3] as u64;
        s.ecm_attempts += v[4] as u64;
        s.pages_attempted += v[6] as u64;
        match Class::parse(&class) {
            None => {
                s.ok += n;
                s.last_success = s.last_success.max(Some(v[5]));
            }
            Some(c) => *s.failures.entry(c).or_default() += n,
        }
    }
    Ok(out
        .into_values()
        .map(|(mut s, rate_sum, rate_n)| {
            s.success_ratio = (s.attempts > 0).then(|| s.ok as f64 / s.attempts as f64);
            s.avg_rate = (rate_n > 0).then(|| rate_sum / rate_n);
            s.top_failure = top(&s.failures);
            s
        })
        .collect())
}

/// The class counted most (the first of the fixed order on a tie).
pub fn top(failures: &BTreeMap<Class, u64>) -> Option<(Class, u64)> {
    CLASSES
        .iter()
        .filter_map(|c| failures.get(c).map(|n| (*c, *n)))
        .filter(|(_, n)| *n > 0)
        .fold(None, |best, (c, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((c, n)),
        })
}

/// The `limit` remote ends with the most failures since `since` (attempts are kept for
/// `minute_retention`).
pub fn destinations(
    conn: &Connection,
    since: i64,
    server: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<DestinationStats>> {
    let mut stmt = conn.prepare_cached(
        "SELECT server, remote, class, COUNT(*), MAX(time) FROM attempts
         WHERE time >= ?1 AND (?2 IS NULL OR server = ?2) AND remote <> ''
         GROUP BY server, remote, class",
    )?;
    let rows = stmt.query_map(params![since, server], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut by: BTreeMap<(String, String), (DestinationStats, BTreeMap<Class, u64>)> =
        BTreeMap::new();
    for row in rows {
        let (server, remote, class, n, last) = row?;
        let (d, f) = by
            .entry((server.clone(), remote.clone()))
            .or_insert_with(|| {
                (
                    DestinationStats {
                        server,
                        remote,
                        attempts: 0,
                        failures: 0,
                        top_failure: None,
                        last_success: None,
                    },
                    BTreeMap::new(),
                )
            });
        d.attempts += n as u64;
        match Class::parse(&class) {
            None => d.last_success = d.last_success.max(Some(last)),
            Some(c) => {
                d.failures += n as u64;
                *f.entry(c).or_default() += n as u64;
            }
        }
    }
    let mut out: Vec<DestinationStats> = by
        .into_values()
        .map(|(mut d, f)| {
            d.top_failure = top(&f);
            d
        })
        .collect();
    out.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then(b.attempts.cmp(&a.attempts))
            .then(a.remote.cmp(&b.remote))
    });
    out.truncate(limit);
    Ok(out)
}

/// One attempt as `GET /v1/attempts` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRow {
    pub time: i64,
    pub server: String,
    pub line: String,
    pub direction: Direction,
    /// The failure class; absent for a success.
    pub class: Option<Class>,
    pub remote: String,
    pub rate: Option<u32>,
    pub pages: u32,
    pub canary: bool,
}

/// Most attempts one answer lists.
pub const MAX_ATTEMPTS: usize = 1000;

/// The newest attempts of a line since `since` (at most [`MAX_ATTEMPTS`]), newest first.
pub fn attempts(
    conn: &Connection,
    since: i64,
    line: &str,
    direction: Option<Direction>,
    server: Option<&str>,
) -> rusqlite::Result<Vec<AttemptRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT time, server, line, direction, class, remote, rate, pages, canary FROM attempts
         WHERE time >= ?1 AND line = ?2 AND (?3 IS NULL OR direction = ?3)
           AND (?4 IS NULL OR server = ?4)
         ORDER BY time DESC, rowid DESC LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![
            since,
            line,
            direction.map(Direction::as_str),
            server,
            MAX_ATTEMPTS as i64
        ],
        |r| {
            Ok(AttemptRow {
                time: r.get(0)?,
                server: r.get(1)?,
                line: r.get(2)?,
                direction: Direction::parse(&r.get::<_, String>(3)?).unwrap_or_default(),
                class: Class::parse(&r.get::<_, String>(4)?),
                remote: r.get(5)?,
                rate: Some(r.get::<_, i64>(6)? as u32).filter(|&r| r > 0),
                pages: r.get::<_, i64>(7)? as u32,
                canary: r.get(8)?,
            })
        },
    )?;
    rows.collect()
}

/// A remote end as kept: printable, at most [`MAX_REMOTE`] characters, trimmed.
pub fn clean_remote(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REMOTE)
        .collect::<String>()
        .trim()
        .to_string()
}
