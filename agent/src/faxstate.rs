//! Line-level routing in HylaFAX: when a `modem` check with `faxstate` set goes down, run
//! `faxstate -s down [-q SPOOL] DEVICE` so that HylaFAX stops giving it jobs; when it comes
//! back up, `faxstate -s ready ...`. Each call is bounded (10 s), logged, and a failure is
//! an error event, never a crash.

use std::time::Duration;

use tokio::sync::{mpsc::UnboundedReceiver, watch};
use tracing::{error, info};

use crate::checks::modem::ModemConfig;
use crate::engine::bus::Transition;
use crate::engine::tracker::State;

/// The faxstate arguments for a transition, if this modem has faxstate configured.
pub fn command_for(modems: &[ModemConfig], t: &Transition) -> Option<(String, Vec<String>)> {
    if t.kind != "modem" {
        return None;
    }
    let m = modems.iter().find(|m| m.name == t.target)?;
    let program = m.faxstate.clone()?;
    let state = match t.to {
        State::Down => "down",
        State::Up => "ready",
        _ => return None,
    };
    let mut args = vec!["-s".to_string(), state.to_string()];
    if let Some(spool) = &m.hylafax_spool {
        args.push("-q".into());
        args.push(spool.display().to_string());
    }
    args.push(m.hylafax_device.clone().unwrap_or_else(|| m.device_name()));
    Some((program, args))
}

/// Runs faxstate for every modem transition that asks for it.
pub async fn run(
    mut events: UnboundedReceiver<Transition>,
    modems: watch::Receiver<Vec<ModemConfig>>,
) {
    while let Some(t) = events.recv().await {
        let Some((program, args)) = command_for(&modems.borrow(), &t) else {
            continue;
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args).kill_on_drop(true);
        let shown = format!("{program} {}", args.join(" "));
        match tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => {
                info!(check = %t.target, command = %shown, "Told HylaFAX the modem's state.")
            }
            Ok(Ok(out)) => error!(
                check = %t.target, command = %shown, status = %out.status,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "faxstate failed; HylaFAX keeps its previous view of the modem."
            ),
            Ok(Err(e)) => error!(
                check = %t.target, command = %shown, error = %e,
                "Cannot run faxstate; check the `faxstate` path of the modem."
            ),
            Err(_) => {
                error!(check = %t.target, command = %shown, "faxstate did not finish within 10s.")
            }
        }
    }
}
