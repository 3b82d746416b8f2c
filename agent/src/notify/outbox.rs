//! The durable outbox: notifications waiting for delivery, one ordered queue per receiver
//! (or one for a failover group), in `<state_dir>/outbox.db` (SQLite, WAL). A notification
//! is removed only once delivered, so after a crash or restart delivery resumes in order.
//!
//! Beside the queues it keeps, in the same transactions:
//! - the event sequence: every event queued gets the next number, kept across restarts;
//! - per queue and target, the last state queued (what the receiver was told or will be),
//!   so that after a restart only what changed since is sent;
//! - per queue, what an overflow dropped and the receiver has not been told yet: each queue
//!   is bounded, past the limit the oldest is dropped, counted, and reported once delivery
//!   resumes;
//! - per queue, its receivers' addresses, so that the rows of a queue that no longer exists
//!   (a receiver renamed, `mode` switched) go to the queue with the same address.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Kind, Notification, Severity};

pub struct Outbox {
    conn: Connection,
    limit: usize,
}

/// Drops of one queue the receiver has not been told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    pub count: u64,
    /// Event time of the oldest notification dropped.
    pub oldest: SystemTime,
}

/// What became of the rows of a queue that no longer exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphans {
    pub queue: String,
    pub rows: usize,
    /// The queue they were moved to (same address), or None: dropped.
    pub moved_to: Option<String>,
    /// The event time of the oldest of them.
    pub oldest: Option<SystemTime>,
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn time(s: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(s.max(0.0))
}

impl Outbox {
    pub fn open(path: &Path, limit: usize) -> Result<Outbox, String> {
        let err = |e: rusqlite::Error| format!("outbox {}: {e}", path.display());
        let conn = Connection::open(path).map_err(err)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .map_err(err)?;
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS outbox (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
                 notification TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (queue, seq);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS notified (
                 queue TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
                 severity TEXT NOT NULL, PRIMARY KEY (queue, target));
             CREATE TABLE IF NOT EXISTS lost (
                 queue TEXT PRIMARY KEY, count INTEGER NOT NULL, oldest REAL NOT NULL);
             CREATE TABLE IF NOT EXISTS queues (queue TEXT PRIMARY KEY, addresses TEXT NOT NULL);",
        )
        .map_err(err)?;
        Ok(Outbox { conn, limit })
    }

    /// The next event number (kept across restarts).
    pub fn next_sequence(&mut self) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        let n = next_sequence(&tx)?;
        tx.commit()?;
        Ok(n)
    }

    /// Appends to each queue in one transaction: gives the notification its sequence
    /// number, records it as the target's last state per queue, and drops the oldest past
    /// the limit (recorded as lost). Returns how many were dropped per queue.
    pub fn push(
        &mut self,
        queues: &[String],
        n: &mut Notification,
    ) -> rusqlite::Result<Vec<usize>> {
        let tx = self.conn.transaction()?;
        n.sequence = next_sequence(&tx)?;
        let text = serde_json::to_string(n).unwrap_or_default();
        let mut dropped = Vec::new();
        for q in queues {
            tx.execute(
                "INSERT INTO outbox (queue, notification) VALUES (?1, ?2)",
                params![q, text],
            )?;
            if tracks_state(n.kind) {
                let target = state_key(&n.check_kind, &n.target);
                tx.execute(
                    "INSERT INTO notified (queue, target, kind, severity) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (queue, target) DO UPDATE SET kind = ?3, severity = ?4",
                    params![
                        q,
                        target,
                        n.kind.name(),
                        serde_json::to_string(&n.severity).unwrap_or_default()
                    ],
                )?;
            }
            let depth: i64 = tx.query_row(
                "SELECT count(*) FROM outbox WHERE queue = ?1",
                params![q],
                |r| r.get(0),
            )?;
            let over = (depth as usize).saturating_sub(self.limit);
            if over > 0 {
                let oldest = {
                    let mut st = tx.prepare(
                        "SELECT notification FROM outbox WHERE queue = ?1 ORDER BY seq LIMIT ?2",
                    )?;
                    let times = st.query_map(params![q, over as i64], |r| r.get::<_, String>(0))?;
                    times
                        .filter_map(|t| t.ok())
                        .filter_map(|t| serde_json::from_str::<Notification>(&t).ok())
                        .map(|n| secs(n.time))
                        .fold(f64::INFINITY, f64::min)
                };
                tx.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE queue = ?1 ORDER BY seq LIMIT ?2)",
                    params![q, over as i64],
                )?;
                let oldest = if oldest.is_finite() {
                    oldest
                } else {
                    secs(SystemTime::now())
                };
                tx.execute(
                    "INSERT INTO lost (queue, count, oldest) VALUES (?1, ?2, ?3)
                     ON CONFLICT (queue) DO UPDATE SET count = count + ?2, oldest = min(oldest, ?3)",
                    params![q, over as i64, oldest],
                )?;
            }
            dropped.push(over);
        }
        tx.commit()?;
        Ok(dropped)
    }

    /// The last state queued for `target` of `kind` (a check kind, or `server`) on
    /// `queue`: the notification's kind and severity.
    pub fn last_notified(&self, queue: &str, kind: &str, target: &str) -> Option<(Kind, Severity)> {
        let target = state_key(kind, target);
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT kind, severity FROM notified WHERE queue = ?1 AND target = ?2",
                params![queue, target],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ok()
            .flatten();
        let (kind, severity) = row?;
        Some((
            Kind::from_name(&kind)?,
            serde_json::from_str(&severity).ok()?,
        ))
    }

    /// Drops of `queue` not reported yet.
    pub fn lost(&self, queue: &str) -> rusqlite::Result<Option<Lost>> {
        self.conn
            .query_row(
                "SELECT count, oldest FROM lost WHERE queue = ?1 AND count > 0",
                params![queue],
                |r| {
                    Ok(Lost {
                        count: r.get::<_, i64>(0)? as u64,
                        oldest: time(r.get(1)?),
                    })
                },
            )
            .optional()
    }

    /// `reported` drops of `queue` were told to its receiver: forgotten, the oldest time
    /// with them (drops since then start a new count and a new oldest).
    pub fn reported(&self, queue: &str, reported: u64) -> rusqlite::Result<()> {
        self.conn
            .execute(
                "DELETE FROM lost WHERE queue = ?1 AND count <= ?2",
                params![queue, reported as i64],
            )
            .and_then(|_| {
                self.conn.execute(
                    "UPDATE lost SET count = count - ?2 WHERE queue = ?1",
                    params![queue, reported as i64],
                )
            })
            .map(|_| ())
    }

    /// The targets whose last state queued on some queue is a problem: (kind, target).
    pub fn open_problems(&self) -> rusqlite::Result<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT target FROM notified WHERE severity != '\"cleared\"'")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows
            .filter_map(|r| r.ok())
            .filter_map(|k| {
                k.split_once('/')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect())
    }

    /// Records the queues of the config with their receivers' addresses, and settles what
    /// queues that no longer exist left: their rows move, in order, to the queue sharing
    /// an address (one event once, when two old queues move into one), else they are
    /// dropped; what they were told and what they lost goes with them to every queue
    /// sharing an address.
    pub fn adopt(&mut self, current: &[(String, Vec<String>)]) -> rusqlite::Result<Vec<Orphans>> {
        let tx = self.conn.transaction()?;
        let known: Vec<(String, Vec<String>)> = {
            let mut st = tx.prepare("SELECT queue, addresses FROM queues")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.filter_map(|r| r.ok())
                .map(|(q, a)| (q, serde_json::from_str(&a).unwrap_or_default()))
                .collect()
        };
        let gone: std::collections::BTreeSet<String> = {
            let mut names = std::collections::BTreeSet::new();
            for sql in [
                "SELECT DISTINCT queue FROM outbox",
                "SELECT DISTINCT queue FROM notified",
                "SELECT DISTINCT queue FROM lost",
            ] {
                let mut st = tx.prepare(sql)?;
                let rows = st.query_map([], |r| r.get::<_, String>(0))?;
                names.extend(rows.filter_map(|r| r.ok()));
            }
            names
                .into_iter()
                .filter(|q| !current.iter().any(|(c, _)| c == q))
                .collect()
        };
        let mut out = Vec::new();
        let mut filled = std::collections::BTreeSet::new();
        for q in gone {
            let addresses = known
                .iter()
                .find(|(k, _)| *k == q)
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            let heirs: Vec<&String> = current
                .iter()
                .filter(|(_, a)| a.iter().any(|x| addresses.contains(x)))
                .map(|(c, _)| c)
                .collect();
            for h in &heirs {
                tx.execute(
                    "INSERT OR IGNORE INTO notified (queue, target, kind, severity)
                     SELECT ?2, target, kind, severity FROM notified WHERE queue = ?1",
                    params![q, h],
                )?;
                tx.execute(
                    "INSERT INTO lost (queue, count, oldest) SELECT ?2, count, oldest FROM lost WHERE queue = ?1
                     ON CONFLICT (queue) DO UPDATE SET count = count + excluded.count, oldest = min(oldest, excluded.oldest)",
                    params![q, h],
                )?;
            }
            let rows: i64 = tx.query_row(
                "SELECT count(*) FROM outbox WHERE queue = ?1",
                params![q],
                |r| r.get(0),
            )?;
            let oldest: Option<String> = tx
                .query_row(
                    "SELECT notification FROM outbox WHERE queue = ?1 ORDER BY seq LIMIT 1",
                    params![q],
                    |r| r.get(0),
                )
                .optional()?;
            let moved_to = heirs.first().map(|h| (*h).clone());
            match &moved_to {
                Some(to) => {
                    tx.execute(
                        "UPDATE outbox SET queue = ?2 WHERE queue = ?1",
                        params![q, to],
                    )?;
                    filled.insert(to.clone());
                }
                None => {
                    tx.execute("DELETE FROM outbox WHERE queue = ?1", params![q])?;
                }
            }
            tx.execute("DELETE FROM notified WHERE queue = ?1", params![q])?;
            tx.execute("DELETE FROM lost WHERE queue = ?1", params![q])?;
            if rows > 0 {
                out.push(Orphans {
                    queue: q,
                    rows: rows as usize,
                    moved_to,
                    oldest: oldest
                        .and_then(|t| serde_json::from_str::<Notification>(&t).ok())
                        .map(|n| n.time),
                });
            }
        }
        // Two old queues moved into one (all -> failover): each event once.
        for q in filled {
            tx.execute(
                "DELETE FROM outbox WHERE queue = ?1 AND seq NOT IN (
                     SELECT min(seq) FROM outbox WHERE queue = ?1
                     GROUP BY json_extract(notification, '$.sequence'))",
                params![q],
            )?;
        }
        tx.execute("DELETE FROM queues", [])?;
        for (q, a) in current {
            tx.execute(
                "INSERT INTO queues (queue, addresses) VALUES (?1, ?2)",
                params![q, serde_json::to_string(a).unwrap_or_default()],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// The oldest entry of a queue; `None` as the notification when it cannot be read
    /// (written by another version): the caller removes it.
    #[allow(clippy::type_complexity)]
    pub fn peek(&self, queue: &str) -> rusqlite::Result<Option<(i64, Option<Notification>)>> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, notification FROM outbox WHERE queue = ?1 ORDER BY seq LIMIT 1",
                params![queue],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(seq, text)| (seq, serde_json::from_str(&text).ok())))
    }

    pub fn remove(&self, seq: i64) -> rusqlite::Result<()> {
        self.conn
            .execute("DELETE FROM outbox WHERE seq = ?1", params![seq])
            .map(|_| ())
    }

    pub fn depth(&self, queue: &str) -> rusqlite::Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE queue = ?1",
                params![queue],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
    }
}

/// Whether a notification of `kind` tells a target's state (not the agent's own start or
/// stop, nor a report about notifications).
fn tracks_state(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::AgentStart
            | Kind::AgentStop
            | Kind::NotificationsSuppressed
            | Kind::NotificationsDropped
    )
}

/// How the last state of a target is keyed: its kind and name (a check may be named like
/// its server).
fn state_key(kind: &str, target: &str) -> String {
    format!("{kind}/{target}")
}

fn next_sequence(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<u64> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('sequence', 1)
         ON CONFLICT (key) DO UPDATE SET value = value + 1",
        [],
    )?;
    tx.query_row("SELECT value FROM meta WHERE key = 'sequence'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Kind, NState, Severity};

    fn n(i: u32) -> Notification {
        Notification {
            target: format!("t{i}"),
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + u64::from(i)),
            ..Notification::agent(
                Kind::CheckDown,
                "s",
                NState::Down,
                Severity::Critical,
                String::new(),
            )
        }
    }

    fn fresh(name: &str, limit: usize) -> (std::path::PathBuf, Outbox) {
        let dir =
            std::env::temp_dir().join(format!("telagent-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let o = Outbox::open(&dir.join("outbox.db"), limit).unwrap();
        (dir, o)
    }

    #[test]
    fn bounded_queues_drop_the_oldest_keep_order_and_remember_the_loss() {
        let (dir, mut o) = fresh("bounded", 3);
        let queues = vec!["a".to_string(), "b".to_string()];
        let mut dropped = 0;
        let mut seqs = vec![];
        for i in 0..5 {
            let mut x = n(i);
            dropped += o.push(&queues, &mut x).unwrap()[0];
            seqs.push(x.sequence);
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5], "one number per event, not per queue");
        assert_eq!(
            (dropped, o.depth("a").unwrap(), o.depth("b").unwrap()),
            (2, 3, 3)
        );
        let lost = o.lost("a").unwrap().unwrap();
        assert_eq!(lost.count, 2);
        assert_eq!(lost.oldest, n(0).time, "the oldest lost event's time");
        drop(o);
        let mut o = Outbox::open(&dir.join("outbox.db"), 3).unwrap();
        let (seq, first) = o.peek("a").unwrap().unwrap();
        let first = first.unwrap();
        assert_eq!(
            (first.target.as_str(), first.sequence, first.time),
            ("t2", 3, n(2).time),
            "the oldest two went; order, number and time kept across reopen"
        );
        o.remove(seq).unwrap();
        assert_eq!(o.peek("a").unwrap().unwrap().1.unwrap().target, "t3");
        assert_eq!(o.depth("b").unwrap(), 3, "queues are independent");
        assert_eq!(o.next_sequence().unwrap(), 6, "numbers survive a reopen");
        o.reported("a", 2).unwrap();
        assert_eq!(o.lost("a").unwrap(), None);
        // A new overflow after a report has its own oldest time.
        for i in 10..12 {
            o.push(&["a".to_string()], &mut n(i)).unwrap();
        }
        assert_eq!(o.lost("a").unwrap().unwrap().oldest, n(3).time);
        o.reported("a", 2).unwrap();
        assert_eq!(o.lost("b").unwrap().unwrap().count, 2);
        assert_eq!(
            o.last_notified("a", "agent", "t4"),
            Some((Kind::CheckDown, Severity::Critical))
        );
        assert_eq!(o.last_notified("a", "agent", "t9"), None);
        assert_eq!(
            o.last_notified("a", "tcp", "t4"),
            None,
            "keyed by kind and name"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rows_of_a_vanished_queue_follow_its_address_or_are_dropped() {
        let (dir, mut o) = fresh("adopt", 100);
        let at = |q: &str, a: &str| (q.to_string(), vec![a.to_string()]);
        assert!(o
            .adopt(&[at("nms", "10.0.0.1:162"), at("old", "10.0.0.9:162")])
            .unwrap()
            .is_empty());
        for i in 0..3 {
            o.push(&["nms".into(), "old".into()], &mut n(i)).unwrap();
        }
        // "nms" renamed "scom" at the same address; "old" removed.
        let settled = o
            .adopt(&[at("scom", "10.0.0.1:162"), at("new", "10.0.0.7:162")])
            .unwrap();
        assert_eq!(
            settled,
            [
                Orphans {
                    queue: "nms".into(),
                    rows: 3,
                    moved_to: Some("scom".into()),
                    oldest: Some(n(0).time),
                },
                Orphans {
                    queue: "old".into(),
                    rows: 3,
                    moved_to: None,
                    oldest: Some(n(0).time),
                }
            ]
        );
        assert_eq!(o.depth("scom").unwrap(), 3);
        assert_eq!(o.peek("scom").unwrap().unwrap().1.unwrap().target, "t0");
        assert_eq!(o.depth("old").unwrap(), 0);
        assert_eq!(
            o.last_notified("scom", "agent", "t2"),
            Some((Kind::CheckDown, Severity::Critical)),
            "what the receiver was told moves with it"
        );
        // all -> failover: two queues with the same events become one, each event once.
        let both = [at("p", "10.0.0.5:162"), at("s", "10.0.0.6:162")];
        o.adopt(&both).unwrap();
        for i in 0..2 {
            o.push(&["p".into(), "s".into()], &mut n(i)).unwrap();
        }
        let failover = (
            "failover".to_string(),
            vec!["10.0.0.5:162".into(), "10.0.0.6:162".into()],
        );
        o.adopt(std::slice::from_ref(&failover)).unwrap();
        assert_eq!(o.depth("failover").unwrap(), 2);
        // failover -> all: what the failover queue was told goes to both receivers.
        o.adopt(&both).unwrap();
        assert!(o.last_notified("p", "agent", "t1").is_some());
        assert!(o.last_notified("s", "agent", "t1").is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
}
