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
//!
//! With `runtime_socket`, the same word is also pushed the moment it changes, over
//! HAProxy's runtime API (its `stats socket ... level admin`, a Unix path or host:port), so
//! that HAProxy acts without waiting for its next agent-check: `up ready N%` is `set server
//! <backend>/<server> agent up`, `state ready` and `set weight ... N%`; `drain` is `agent up`
//! and `state drain`; `down` is `agent down` and `state drain` (for a server HAProxy runs no
//! agent-check on, `agent` is refused and the drain alone keeps traffic off it). The
//! agent-check stays the steady state and the fallback: it repeats the same word, and
//! brings a restarted HAProxy in line. A failed push is retried every second.

use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cluster::Member;
use super::decision::ServerState;
use super::{OutputStats, Snapshot};
use crate::vocab::{name_rule, valid_name};

/// `[haproxy]`: the agent-check responder, and pushes over HAProxy's runtime API.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// TCP address HAProxy's `agent-check` connects to.
    pub listen: std::net::SocketAddr,
    /// HAProxy's runtime API (`stats socket ... level admin`): a Unix socket path
    /// (`/run/haproxy/admin.sock`) or `host:port`. Changes are pushed there at once.
    #[serde(default)]
    pub runtime_socket: Option<String>,
    /// The backend this server is in (needed with `runtime_socket`).
    #[serde(default)]
    pub backend: Option<String>,
    /// This server's name in that backend; default `[agent] server`.
    #[serde(default)]
    pub server: Option<String>,
}

impl HaproxyConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let Some(socket) = &self.runtime_socket else {
            if self.backend.is_some() || self.server.is_some() {
                return Err((
                    "haproxy.runtime_socket".into(),
                    "backend and server name where to push over the runtime API: set runtime_socket too, or remove them".into(),
                ));
            }
            return Ok(());
        };
        if !socket.starts_with('/') && socket.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "haproxy.runtime_socket".into(),
                format!("`{socket}` is neither an absolute Unix socket path nor an ip:port (HAProxy's `stats socket`)"),
            ));
        }
        match &self.backend {
            None => Err((
                "haproxy.backend".into(),
                "the backend this server is in is needed with runtime_socket".into(),
            )),
            // HAProxy's own name characters, and nothing that would change the command.
            Some(b) if !valid_name(b) => Err(("haproxy.backend".into(), name_rule("backend name"))),
            _ => match &self.server {
                Some(s) if !valid_name(s) => {
                    Err(("haproxy.server".into(), name_rule("server name")))
                }
                _ => Ok(()),
            },
        }
    }
}

/// What the runtime push reads of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub haproxy: Option<HaproxyConfig>,
    pub members: Vec<Member>,
    /// `[agent] server`: the default server name in the backend.
    pub me: String,
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

/// The runtime API commands that do what the agent-check `line` does, for `be`/`srv`.
pub fn commands(line: &str, be: &str, srv: &str) -> Vec<String> {
    let at = format!("{be}/{srv}");
    let word = line.trim_end();
    if let Some(weight) = word.strip_prefix("up ready ") {
        vec![
            format!("set server {at} agent up"),
            format!("set server {at} state ready"),
            format!("set weight {at} {weight}"),
        ]
    } else if word == "drain" {
        vec![
            format!("set server {at} agent up"),
            format!("set server {at} state drain"),
        ]
    } else {
        vec![
            format!("set server {at} agent down"),
            format!("set server {at} state drain"),
        ]
    }
}

/// HAProxy's answer to a server it runs no agent-check on.
const NO_AGENT: &str = "Agent checks are not enabled on this server.";

/// Reads the answer to commands sent at once: each answers with nothing (done) or a
/// message, followed by an empty line. `Ok(no_agent)`: every command was done, except the
/// `agent` ones refused because the server has no agent-check.
pub fn judge(answer: &str) -> Result<bool, String> {
    let mut no_agent = false;
    let mut errors = Vec::new();
    for line in answer.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == NO_AGENT {
            no_agent = true;
        } else {
            errors.push(line.chars().take(200).collect::<String>());
        }
    }
    if errors.is_empty() {
        Ok(no_agent)
    } else {
        Err(errors.join(" / "))
    }
}

/// Sends `commands` (one connection, `;`-separated) and reads the answer, all within 2 s.
async fn send(socket: &str, commands: &[String]) -> Result<String, String> {
    let line = format!("{}\n", commands.join("; "));
    let exchange = async {
        let mut answer = Vec::new();
        // HAProxy closes the connection once it has answered a non-interactive line.
        if socket.starts_with('/') {
            let mut s = tokio::net::UnixStream::connect(socket).await?;
            s.write_all(line.as_bytes()).await?;
            (&mut s).take(64 << 10).read_to_end(&mut answer).await?;
        } else {
            let mut s = tokio::net::TcpStream::connect(socket).await?;
            s.write_all(line.as_bytes()).await?;
            (&mut s).take(64 << 10).read_to_end(&mut answer).await?;
        }
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(2), exchange).await {
        Err(_) => Err(format!(
            "HAProxy's runtime API at {socket} did not answer within 2s"
        )),
        Ok(Err(e)) => Err(format!(
            "cannot talk to HAProxy's runtime API at {socket}: {e}"
        )),
        Ok(Ok(a)) => Ok(String::from_utf8_lossy(&a).into_owned()),
    }
}

/// Pushes this server's agent-check word over the runtime API whenever it changes (and
/// again after a reload of `[haproxy]`); a failed push is retried every second.
pub async fn push(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut config: watch::Receiver<Section>,
    stats: Arc<OutputStats>,
    cancel: CancellationToken,
) {
    const RETRY: Duration = Duration::from_secs(1);
    let mut told: Option<(String, Section)> = None;
    let mut failing: Option<String> = None;
    let mut warned_no_agent = false;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = snapshots.changed() => if r.is_err() { return },
            r = config.changed() => if r.is_err() { return },
            _ = retry => {}
        }
        let c = config.borrow_and_update().clone();
        let Some((socket, be, srv)) = c.haproxy.as_ref().and_then(|h| {
            Some((
                h.runtime_socket.clone()?,
                h.backend.clone()?,
                h.server.clone().unwrap_or_else(|| c.me.clone()),
            ))
        }) else {
            told = None;
            retry_at = None;
            continue;
        };
        let Some(line) = agent_line(&snapshots.borrow_and_update(), &c.members) else {
            continue;
        };
        if told.as_ref().is_some_and(|(l, s)| *l == line && *s == c) {
            retry_at = None;
            continue;
        }
        let result = send(&socket, &commands(&line, &be, &srv))
            .await
            .and_then(|answer| judge(&answer));
        match result {
            Ok(no_agent) => {
                stats.changed();
                if no_agent && !warned_no_agent {
                    warned_no_agent = true;
                    tracing::warn!(backend = %be, server = %srv, "HAProxy runs no agent-check on this server: a down server is only drained through the runtime API; add agent-check to its server line.");
                }
                if failing.take().is_some() {
                    tracing::info!(socket = %socket, "HAProxy's runtime API takes this server's state again.");
                }
                tracing::info!(backend = %be, server = %srv, state = %line.trim_end(), "HAProxy told through its runtime API.");
                told = Some((line, c));
                retry_at = None;
            }
            Err(e) => {
                stats.failed();
                if failing.as_deref() != Some(e.as_str()) {
                    tracing::error!(error = %e, backend = %be, server = %srv, "Cannot tell HAProxy through its runtime API; retrying every second (its agent-check still answers).");
                    failing = Some(e);
                }
                told = None;
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
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

    #[test]
    fn each_word_becomes_the_runtime_commands_that_do_the_same() {
        assert_eq!(
            commands("up ready 40%\n", "be", "fax1"),
            [
                "set server be/fax1 agent up",
                "set server be/fax1 state ready",
                "set weight be/fax1 40%"
            ]
        );
        assert_eq!(
            commands("drain\n", "be", "fax1"),
            [
                "set server be/fax1 agent up",
                "set server be/fax1 state drain"
            ]
        );
        assert_eq!(
            commands("down #critical check smtp is down\n", "be", "fax1"),
            [
                "set server be/fax1 agent down",
                "set server be/fax1 state drain"
            ]
        );
    }

    #[test]
    fn answers_are_judged_as_haproxy_gives_them() {
        // As HAProxy 2.6 answers three commands sent at once: an empty line each.
        assert_eq!(judge("\n\n\n"), Ok(false));
        assert_eq!(judge(""), Ok(false));
        assert_eq!(
            judge("Agent checks are not enabled on this server.\n\n\n"),
            Ok(true)
        );
        assert_eq!(judge("No such server.\n\n"), Err("No such server.".into()));
        assert_eq!(
            judge("No such backend.\n\nPermission denied\n\n"),
            Err("No such backend. / Permission denied".into())
        );
    }

    #[test]
    fn names_that_would_change_the_command_are_refused() {
        let c = |backend: &str, server: Option<&str>| HaproxyConfig {
            listen: "127.0.0.1:1".parse().unwrap(),
            runtime_socket: Some("/run/haproxy/admin.sock".into()),
            backend: Some(backend.into()),
            server: server.map(str::to_string),
        };
        assert!(c("fax", Some("fax1")).validate().is_ok());
        for (b, s) in [
            ("fax; disable server fax/fax2", None),
            ("fax", Some("fax1 state maint")),
            ("", None),
            ("fax\nshow info", None),
        ] {
            assert!(c(b, s).validate().is_err(), "{b:?} {s:?}");
        }
        let tcp = HaproxyConfig {
            runtime_socket: Some("127.0.0.1:9999".into()),
            ..c("fax", None)
        };
        assert!(tcp.validate().is_ok());
        let bad = HaproxyConfig {
            runtime_socket: Some("admin.sock".into()),
            ..c("fax", None)
        };
        assert_eq!(bad.validate().unwrap_err().0, "haproxy.runtime_socket");
    }
}
