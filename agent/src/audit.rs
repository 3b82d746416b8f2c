//! The audit trail: every state transition appended as one JSON line, synced to disk.
//!
//! A line: `{"time","server","target","kind","from","to","reason","observation":{"status",
//! "error_type","detail","duration_seconds"}}`. Written by its own thread, so a slow disk
//! never delays a check; a failed write is logged with the path and counted
//! (`telagent_audit_write_errors_total`). The last [`RECENT`] lines are also kept in memory
//! for the status page ([`Recent`]), read back from the file at start.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::bus::Transition;
use crate::metrics::{Collector, Families};

/// What the audit writer counts.
#[derive(Debug, Default)]
pub struct Stats {
    write_errors: AtomicU64,
}

impl Stats {
    /// A transition that could not be appended.
    pub(crate) fn write_error(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for Stats {
    fn collect(&self, f: &mut Families) {
        f.counter(
            "telagent_audit_write_errors_total",
            "Transitions that could not be appended to the audit log.",
            &[],
            self.write_errors.load(Ordering::Relaxed) as f64,
        );
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    server: &'a str,
    target: &'a str,
    kind: &'a str,
    from: &'a str,
    to: &'a str,
    reason: &'a str,
    /// For a server: the agent that writes its state into the routing outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    speaker: Option<&'a str>,
    observation: ObservationLine<'a>,
}

#[derive(Serialize)]
struct ObservationLine<'a> {
    status: &'a str,
    error_type: Option<&'a str>,
    detail: &'a str,
    duration_seconds: f64,
}

/// One JSON line (with its newline) for a transition.
pub fn line(t: &Transition) -> String {
    let l = Line {
        time: humantime::format_rfc3339_millis(t.time).to_string(),
        server: &t.server,
        target: &t.target,
        kind: t.kind,
        from: t.state_name(t.from),
        to: t.state_name(t.to),
        reason: &t.reason,
        speaker: t.speaker.as_deref(),
        observation: ObservationLine {
            status: t.status.as_str(),
            error_type: t.error_type,
            detail: &t.detail,
            duration_seconds: t.duration.as_secs_f64(),
        },
    };
    // Serializing plain strings and numbers cannot fail.
    let mut s = serde_json::to_string(&l).unwrap_or_default();
    s.push('\n');
    s
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// How many transitions [`Recent`] keeps.
pub const RECENT: usize = 20;

/// One transition as the status page shows it (a subset of an audit line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub time: String,
    pub target: String,
    pub kind: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The last transitions, newest first.
#[derive(Debug, Default)]
pub struct Recent(Mutex<VecDeque<Entry>>);

impl Recent {
    /// The last [`RECENT`] lines of an audit log (lines that do not parse are skipped; a
    /// log that cannot be read is logged, and the page starts with no past changes).
    pub fn load(path: &Path) -> Recent {
        use std::io::{Read, Seek, SeekFrom};
        let mut tail = Vec::new();
        let read = crate::files::open_regular(path).and_then(|mut f| {
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
            f.take(64 * 1024).read_to_end(&mut tail)
        });
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Recent::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "Cannot read the audit log's last changes; the status page starts without them.");
                return Recent::default();
            }
        }
        let text = String::from_utf8_lossy(&tail);
        let entries = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .take(RECENT)
            .collect();
        Recent(Mutex::new(entries))
    }

    fn push(&self, t: &Transition) {
        let e = Entry {
            time: humantime::format_rfc3339_millis(t.time).to_string(),
            target: t.target.clone(),
            kind: t.kind.to_string(),
            from: t.state_name(t.from).to_string(),
            to: t.state_name(t.to).to_string(),
            reason: t.reason.clone(),
        };
        let mut q = self.lock();
        q.push_front(e);
        q.truncate(RECENT);
    }

    /// Newest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        // Plain data: a panic between two pushes leaves it well-formed.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Starts the writer thread; it ends when the bus closes, after writing everything queued.
pub fn start(
    path: PathBuf,
    mut rx: UnboundedReceiver<Transition>,
    stats: Arc<Stats>,
    recent: Arc<Recent>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || {
            while let Some(t) = rx.blocking_recv() {
                let line = line(&t);
                recent.push(&t);
                if let Err(e) = append(&path, &line) {
                    stats.write_error();
                    tracing::error!(
                        file = %path.display(), error = %e, target = %t.target,
                        "Cannot append a transition to the audit log; check that the directory exists and is writable by the agent."
                    );
                }
            }
        })
}
