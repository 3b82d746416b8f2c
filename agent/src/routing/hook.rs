//! The exec hook: a program run on every change of the cluster's decision about a server
//! this agent speaks for, with TELAGENT_SERVER, TELAGENT_STATE, TELAGENT_PREVIOUS (the state
//! the cluster had before), TELAGENT_REASON and TELAGENT_SPEAKER in its environment. One
//! run per change, bounded by `[hook] timeout`; a failure is logged, counted and run again
//! until it succeeds. Becoming the speaker of a server is not a change.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::decision::ServerState;
use super::OutputStats;
use super::Snapshot;

/// `[hook]`: a program run on every routing change this agent speaks for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Program and arguments; TELAGENT_SERVER, TELAGENT_STATE, TELAGENT_PREVIOUS,
    /// TELAGENT_REASON and TELAGENT_SPEAKER are set.
    pub command: Vec<String>,
    #[serde(default = "default_hook_timeout", with = "crate::vocab::duration")]
    pub timeout: std::time::Duration,
}

fn default_hook_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// Runs the hook on every change of the cluster's decision about a server this agent
/// speaks for, once, with the state the cluster had before: becoming the speaker of a
/// server is not a change. A run that fails is tried again every `RETRY` until it
/// succeeds or the state changes again. The decisions are kept in `state_file`, so a
/// restart of the agent runs nothing for a decision that did not change, and the
/// previous state after a restart is the one the cluster had.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    config: watch::Receiver<Option<HookConfig>>,
    state_file: std::path::PathBuf,
    stats: Arc<OutputStats>,
    cancel: CancellationToken,
) {
    // The cluster's decided state of every server, as last seen (and kept).
    let mut known: BTreeMap<String, ServerState> = load(&state_file);
    // Changes not told yet: server -> (previous, state, when to try).
    let mut pending: BTreeMap<String, (ServerState, ServerState, Instant)> = BTreeMap::new();
    loop {
        let wake = pending.values().map(|(_, _, at)| *at).min();
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = snapshots.changed() => if r.is_err() { return },
            _ = sleep_until(wake) => {}
        }
        let snap = snapshots.borrow_and_update().clone();
        let Some(hook) = config.borrow().clone() else {
            continue;
        };
        if !snap.learned {
            continue;
        }
        let now = Instant::now();
        let mut seen_changed = false;
        for v in snap
            .servers
            .iter()
            .filter(|v| v.state != ServerState::Unknown)
        {
            let before = known.insert(v.name.clone(), v.state);
            seen_changed |= before != Some(v.state);
            match before {
                Some(b) if b != v.state => {
                    // A change not told yet keeps the state it came from.
                    let from = pending.get(&v.name).map_or(b, |(from, ..)| *from);
                    pending.insert(v.name.clone(), (from, v.state, now));
                }
                // The first decision about our own server (a first start): told once we
                // speak for it. A peer first seen is no news.
                None if v.name == snap.me => {
                    pending.insert(v.name.clone(), (ServerState::Unknown, v.state, now));
                }
                _ => {}
            }
        }
        if seen_changed {
            save(&state_file, &known);
        }
        let speaks = |name: &str| snap.servers.iter().any(|v| v.name == name && v.speaker);
        // Changes of servers we do not speak for are someone else's to tell (our own
        // server's wait for our quorum).
        pending.retain(|n, _| speaks(n) || *n == snap.me);
        let due: Vec<(String, ServerState, ServerState)> = pending
            .iter()
            .filter(|(name, (.., at))| speaks(name) && *at <= now)
            .map(|(n, (from, to, _))| (n.clone(), *from, *to))
            .collect();
        for (name, previous, state) in due {
            if previous == state {
                pending.remove(&name);
                continue;
            }
            let reason = snap
                .server(&name)
                .map(|v| v.reason.clone())
                .unwrap_or_default();
            let mut cmd = tokio::process::Command::new(&hook.command[0]);
            cmd.args(&hook.command[1..])
                .env("TELAGENT_SERVER", &name)
                .env("TELAGENT_STATE", state.as_str())
                .env("TELAGENT_PREVIOUS", previous.as_str())
                .env("TELAGENT_REASON", &reason)
                .env("TELAGENT_SPEAKER", &snap.me)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let outcome = tokio::time::timeout(hook.timeout, cmd.status()).await;
            let ok = matches!(outcome, Ok(Ok(s)) if s.success());
            stats.changed();
            if ok {
                pending.remove(&name);
                info!(server = %name, state = state.as_str(), previous = previous.as_str(), "Hook told of the change.");
            } else {
                stats.failed();
                if let Some(p) = pending.get_mut(&name) {
                    p.2 = Instant::now() + RETRY;
                }
                error!(server = %name, state = state.as_str(), command = %hook.command.join(" "), outcome = ?outcome, "Hook failed; it is run again in 5 s.");
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The decisions kept by the last run (none if the file is missing or unreadable: then
/// the first decisions count as changes, as on a first start).
fn load(file: &std::path::Path) -> BTreeMap<String, ServerState> {
    crate::files::read_text(file, 1 << 20)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save(file: &std::path::Path, known: &BTreeMap<String, ServerState>) {
    let written = crate::files::write_durably(
        file,
        serde_json::to_string(known).unwrap_or_default().as_bytes(),
    );
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "Cannot keep the hook's decisions; after a restart the hook may run again for an unchanged state.");
    }
}

/// Time between two runs of a hook that failed.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);
