//! The exec hook: a program run on every change of the cluster's decision about a server
//! this agent speaks for, with TELAGENT_SERVER, TELAGENT_STATE, TELAGENT_PREVIOUS (the state
//! the cluster had before), TELAGENT_REASON and TELAGENT_SPEAKER in its environment. One
//! run per change, bounded by `[hook] timeout`; a failure is logged, counted and run again
//! until it succeeds. Becoming the speaker of a server is not a change.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
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
    #[serde(default = "default_hook_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
}

fn default_hook_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// Runs the hook on every change of the cluster's decision about a server this agent
/// speaks for, once, with the state the cluster had before: becoming the speaker of a
/// server is not a change. A run that fails is tried again (every `RETRY`) until it
/// succeeds or the state changes again.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    config: watch::Receiver<Option<HookConfig>>,
    stats: Arc<OutputStats>,
    cancel: CancellationToken,
) {
    // The cluster's decided state of every server, as last seen.
    let mut known: BTreeMap<String, ServerState> = BTreeMap::new();
    // Changes not told yet (a failed run): server -> (previous, state).
    let mut pending: BTreeMap<String, (ServerState, ServerState)> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = snapshots.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RETRY), if !pending.is_empty() => {}
        }
        let snap = snapshots.borrow_and_update().clone();
        let Some(hook) = config.borrow().clone() else {
            continue;
        };
        if !snap.learned {
            continue;
        }
        for v in snap
            .servers
            .iter()
            .filter(|v| v.state != ServerState::Unknown)
        {
            let before = known.insert(v.name.clone(), v.state);
            match before {
                Some(b) if b != v.state => {
                    // A change not told yet keeps the state it came from.
                    let from = pending.get(&v.name).map_or(b, |(from, _)| *from);
                    pending.insert(v.name.clone(), (from, v.state));
                }
                None if v.speaker => {
                    pending.insert(v.name.clone(), (ServerState::Unknown, v.state));
                }
                _ => {}
            }
        }
        let due: Vec<(String, ServerState, ServerState)> = pending
            .iter()
            .filter(|(name, _)| snap.servers.iter().any(|v| &v.name == *name && v.speaker))
            .map(|(n, (from, to))| (n.clone(), *from, *to))
            .collect();
        // Changes of servers we do not speak for are someone else's to tell.
        pending.retain(|n, _| due.iter().any(|(d, ..)| d == n));
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
                info!(server = %name, state = state.as_str(), "Hook told of the change.");
            } else {
                stats.failed();
                error!(server = %name, state = state.as_str(), command = %hook.command.join(" "), outcome = ?outcome, "Hook failed; it is run again in a few seconds.");
            }
        }
    }
}

/// Time between two runs of a hook that failed.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);
