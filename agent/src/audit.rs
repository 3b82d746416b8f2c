//! The audit trail: every state transition appended as one JSON line, synced to disk.
//!
//! A line: `{"time","server","target","kind","from","to","reason","observation":{"status",
//! "error_type","detail","duration_seconds"}}`. Written by its own thread, so a slow disk
//! never delays a check; a failed write is logged with the path and counted
//! (`telagent_audit_write_errors_total`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::bus::Transition;
use crate::engine::model::Model;

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    server: &'a str,
    target: &'a str,
    kind: &'a str,
    from: &'a str,
    to: &'a str,
    reason: &'a str,
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

/// Starts the writer thread; it ends when the bus closes, after writing everything queued.
pub fn start(
    path: PathBuf,
    mut rx: UnboundedReceiver<Transition>,
    model: Arc<Model>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || {
            while let Some(t) = rx.blocking_recv() {
                if let Err(e) = append(&path, &line(&t)) {
                    model.write().audit_write_errors += 1;
                    tracing::error!(
                        file = %path.display(), error = %e, target = %t.target,
                        "Cannot append a transition to the audit log; check that the directory exists and is writable by the agent."
                    );
                }
            }
        })
}
