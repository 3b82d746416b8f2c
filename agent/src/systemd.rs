//! systemd integration (`Type=notify`, `WatchdogSec=`): READY=1 once the agent serves,
//! RELOADING=1 / READY=1 around a SIGHUP reload, STOPPING=1 at shutdown, and WATCHDOG=1 at
//! half the watchdog interval from the agent's runtime (a wedged runtime stops the pings
//! and systemd restarts the service). Without `NOTIFY_SOCKET` every call does nothing.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "Cannot notify systemd.");
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog until cancelled, when systemd asked for it.
pub fn watchdog(cancel: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()? / 2;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    }))
}
