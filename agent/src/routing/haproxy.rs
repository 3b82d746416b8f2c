//! HAProxy's agent-check: HAProxy connects to `[haproxy] listen` and reads one line with
//! this server's state: `up ready 100%` (the weight in percent: the member's weight scaled
//! by the server's free capacity, see [`super::decision::capacity`]), `drain`, or
//! `down #<reason>` (HAProxy takes the text after `#` as a description only when a space
//! or comma separates it from the word: `down#x` would be ignored). `up` alone would not clear a drain or restore the weight, hence
//! `up ready N%`. Until the server's state is known the agent closes without a word, which
//! leaves HAProxy's view as it was. HAProxy keeps a server UP when its agent is unreachable,
//! so pair this with `option httpchk GET /v1/server/health` (503 when down). In panic mode
//! (a group of this server has fewer routable servers than `panic_threshold`) the answer is
//! `up`, as in every other output: one decision, the same everywhere.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cluster::Member;
use super::decision::ServerState;
use super::Snapshot;

/// `[haproxy]`: the agent-check responder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// TCP address HAProxy's `agent-check` connects to.
    pub listen: std::net::SocketAddr,
}

/// The agent-check line for this server, if its state is known.
pub fn agent_line(snapshot: &Snapshot, members: &[Member]) -> Option<String> {
    let own = snapshot.own()?;
    let weight = members
        .iter()
        .find(|m| m.name == snapshot.me)
        .map_or(100, |m| m.weight);
    let weight = super::decision::scaled(weight, own.capacity);
    match own.state {
        ServerState::Unknown => None,
        ServerState::Up => Some(format!("up ready {weight}%\n")),
        _ if snapshot.in_panic(&own.name) => Some(format!("up ready {weight}%\n")),
        ServerState::Drain => Some("drain\n".into()),
        ServerState::Down => {
            let reason: String = own
                .reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(100)
                .collect();
            Some(format!("down #{reason}\n"))
        }
    }
}

/// Answers HAProxy's agent checks on `listener` until cancelled.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    members: watch::Receiver<Vec<Member>>,
    cancel: CancellationToken,
) {
    loop {
        let (mut sock, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "agent-check accept failed");
                    // Out of descriptors: wait for some to free instead of spinning.
                    if crate::faults::is_fd_exhaustion(&e) {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let line = agent_line(&snapshots.borrow(), &members.borrow());
        tokio::spawn(async move {
            if let Some(line) = line {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    sock.write_all(line.as_bytes()),
                )
                .await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::decision::{GroupRoutes, RouteEntry, ServerView};

    #[test]
    fn panic_keeps_the_server_up_in_haproxy_too() {
        let view = |state| ServerView {
            name: "fax1".into(),
            state,
            reason: "critical check smtp is down".into(),
            since: std::time::SystemTime::UNIX_EPOCH,
            last_active: None,
            agent_reachable: true,
            config_hash: None,
            config_drift: false,
            drift_sections: Vec::new(),
            speaker: true,
            capacity: None,
        };
        let mut snap = Snapshot::empty("fax1");
        snap.servers = vec![view(ServerState::Down)];
        assert_eq!(
            agent_line(&snap, &[]).as_deref(),
            Some("down #critical check smtp is down\n")
        );
        snap.routes = vec![GroupRoutes {
            group: "fax".into(),
            panic: true,
            servers: vec![RouteEntry {
                server: "fax1".into(),
                host: "fax1".into(),
                state: ServerState::Down,
                reason: String::new(),
                weight: 100,
                capacity: None,
                since: std::time::SystemTime::UNIX_EPOCH,
                routable: true,
            }],
        }];
        assert_eq!(agent_line(&snap, &[]).as_deref(), Some("up ready 100%\n"));
    }
}
