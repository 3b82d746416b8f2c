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
                tx.execute(
                    "INSERT INTO notified (queue, target, kind, severity) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (queue, target) DO UPDATE SET kind = ?3, severity = ?4",
                    params![
                        q,
                        n.target,
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

    /// The last state queued for `target` on `queue`: the notification's kind and
    /// severity.
    pub fn last_notified(&self, queue: &str, target: &str) -> Option<(Kind, Severity)> {
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

    /// `reported` drops of `queue` were told to its receiver.
    pub fn reported(&self, queue: &str, reported: u64) -> rusqlite::Result<()> {
        self.conn
            .execute(
                "UPDATE lost SET count = max(count - ?2, 0) WHERE queue = ?1",
                params![queue, reported as i64],
            )
            .map(|_| ())
    }

    /// Records the queues of the config with their receivers' addresses, and settles the
    /// rows of queues that no longer exist: moved to the queue sharing an address (in
    /// their order), else dropped.
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
        let with_rows: Vec<String> = {
            let mut st = tx.prepare("SELECT DISTINCT queue FROM outbox")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.filter_map(|r| r.ok()).collect()
        };
        let mut out = Vec::new();
        for q in with_rows {
            if current.iter().any(|(c, _)| *c == q) {
                continue;
            }
            let addresses = known
                .iter()
                .find(|(k, _)| *k == q)
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            let to = current
                .iter()
                .find(|(_, a)| a.iter().any(|x| addresses.contains(x)))
                .map(|(c, _)| c.clone());
            let rows = match &to {
                Some(to) => tx.execute(
                    "UPDATE outbox SET queue = ?2 WHERE queue = ?1",
                    params![q, to],
                )?,
                None => tx.execute("DELETE FROM outbox WHERE queue = ?1", params![q])?,
            };
            if let Some(to) = &to {
                tx.execute(
                    "INSERT OR IGNORE INTO notified (queue, target, kind, severity)
                     SELECT ?2, target, kind, severity FROM notified WHERE queue = ?1",
                    params![q, to],
                )?;
            }
            out.push(Orphans {
                queue: q,
                rows,
                moved_to: to,
            });
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
        assert_eq!(o.lost("b").unwrap().unwrap().count, 2);
        assert_eq!(
            o.last_notified("a", "t4"),
            Some((Kind::CheckDown, Severity::Critical))
        );
        assert_eq!(o.last_notified("a", "t9"), None);
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
                    moved_to: Some("scom".into())
                },
                Orphans {
                    queue: "old".into(),
                    rows: 3,
                    moved_to: None
                }
            ]
        );
        assert_eq!(o.depth("scom").unwrap(), 3);
        assert_eq!(o.peek("scom").unwrap().unwrap().1.unwrap().target, "t0");
        assert_eq!(o.depth("old").unwrap(), 0);
        assert_eq!(
            o.last_notified("scom", "t2"),
            Some((Kind::CheckDown, Severity::Critical)),
            "what the receiver was told moves with it"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
