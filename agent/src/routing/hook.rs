//! The exec hook: a program run on every change of a server this agent speaks for, with
//! TELAGENT_SERVER, TELAGENT_STATE, TELAGENT_PREVIOUS, TELAGENT_REASON and TELAGENT_SPEAKER
//! in its environment. One run per change, bounded by `[hook] timeout`; a failure is logged
//! and counted.

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

pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    config: watch::Receiver<Option<HookConfig>>,
    stats: Arc<OutputStats>,
    cancel: CancellationToken,
) {
    let mut told: BTreeMap<String, ServerState> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = snapshots.changed() => if r.is_err() { return },
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
            .filter(|v| v.speaker && v.state != ServerState::Unknown)
        {
            let previous = told.get(&v.name).copied().unwrap_or(ServerState::Unknown);
            if previous == v.state {
                continue;
            }
            told.insert(v.name.clone(), v.state);
            let mut cmd = tokio::process::Command::new(&hook.command[0]);
            cmd.args(&hook.command[1..])
                .env("TELAGENT_SERVER", &v.name)
                .env("TELAGENT_STATE", v.state.as_str())
                .env("TELAGENT_PREVIOUS", previous.as_str())
                .env("TELAGENT_REASON", &v.reason)
                .env("TELAGENT_SPEAKER", &snap.me)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let outcome = tokio::time::timeout(hook.timeout, cmd.status()).await;
            let ok = matches!(outcome, Ok(Ok(s)) if s.success());
            stats.changed();
            if !ok {
                stats.failed();
            }
            if ok {
                info!(server = %v.name, state = v.state.as_str(), "Hook told of the change.");
            } else {
                error!(server = %v.name, state = v.state.as_str(), command = %hook.command.join(" "), outcome = ?outcome, "Hook failed.");
            }
        }
    }
}
