//! The durable outbox: notifications waiting for delivery, one ordered queue per receiver
//! (or one for a failover group), in `<state_dir>/outbox.db` (SQLite, WAL). A notification
//! is removed only once delivered, so after a crash or restart delivery resumes in order.
//! Each queue is bounded: past the limit the oldest is dropped and counted.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::Notification;

pub struct Outbox {
    conn: Connection,
    limit: usize,
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
             CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (queue, seq);",
        )
        .map_err(err)?;
        Ok(Outbox { conn, limit })
    }

    /// Appends to each queue in one transaction; returns how many old ones were dropped
    /// per queue to keep within the limit.
    pub fn push(&mut self, queues: &[String], n: &Notification) -> rusqlite::Result<Vec<usize>> {
        let text = serde_json::to_string(n).unwrap_or_default();
        let tx = self.conn.transaction()?;
        let mut dropped = Vec::new();
        for q in queues {
            tx.execute(
                "INSERT INTO outbox (queue, notification) VALUES (?1, ?2)",
                params![q, text],
            )?;
            let depth: i64 = tx.query_row(
                "SELECT count(*) FROM outbox WHERE queue = ?1",
                params![q],
                |r| r.get(0),
            )?;
            let over = (depth as usize).saturating_sub(self.limit);
            if over > 0 {
                tx.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE queue = ?1 ORDER BY seq LIMIT ?2)",
                    params![q, over as i64],
                )?;
            }
            dropped.push(over);
        }
        tx.commit()?;
        Ok(dropped)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Kind, NState, Severity};

    fn n(i: u32) -> Notification {
        Notification {
            kind: Kind::CheckDown,
            target: format!("t{i}"),
            state: NState::Down,
            reason: String::new(),
            severity: Severity::Critical,
            server: "s".into(),
            suppressed: None,
        }
    }

    #[test]
    fn bounded_queues_drop_the_oldest_and_keep_order() {
        let dir = std::env::temp_dir().join(format!("telagent-outbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("outbox.db");
        let _ = std::fs::remove_file(&path);
        let mut o = Outbox::open(&path, 3).unwrap();
        let queues = vec!["a".to_string(), "b".to_string()];
        let mut dropped = 0;
        for i in 0..5 {
            dropped += o.push(&queues, &n(i)).unwrap()[0];
        }
        assert_eq!(
            (dropped, o.depth("a").unwrap(), o.depth("b").unwrap()),
            (2, 3, 3)
        );
        drop(o);
        let o = Outbox::open(&path, 3).unwrap();
        let (seq, first) = o.peek("a").unwrap().unwrap();
        assert_eq!(
            first.unwrap().target,
            "t2",
            "the oldest two went; order kept across reopen"
        );
        o.remove(seq).unwrap();
        assert_eq!(o.peek("a").unwrap().unwrap().1.unwrap().target, "t3");
        assert_eq!(o.depth("b").unwrap(), 3, "queues are independent");
        let _ = std::fs::remove_dir_all(dir);
    }
}
