//! HylaFAX's own view of a modem: the one-line `status/<device>` file in the spool, written
//! by faxgetty/faxsend. While faxgetty holds a port this is the only safe source: opening
//! the port would take the modem from the fax server.
//!
//! The lines are faxgetty's state texts ("Running and idle", "Waiting for modem to come
//! ready", "Sending facsimile", ...), or a job in progress ("Sending job 12").

use std::path::Path;
use std::time::SystemTime;

use crate::checks::Status;

/// How telagent judges a HylaFAX status line: (status, error type if not ok).
pub fn judge(line: &str) -> (Status, Option<&'static str>) {
    let l = line.trim().to_ascii_lowercase();
    if l == "running and idle" {
        return (Status::Ok, None);
    }
    // A status line with anything unprintable in it is not one faxgetty wrote.
    if l.contains('?') || l.chars().any(char::is_control) {
        return (Status::Degraded, Some("hylafax_unknown_status"));
    }
    let busy = [
        "sending",
        "receiving",
        "answering the phone",
        "listening to rings",
        "waiting for login session to terminate",
    ];
    if busy.iter().any(|b| l.starts_with(b)) {
        (Status::Ok, None)
    } else if l.starts_with("waiting for modem to come ready") {
        (Status::Fail, Some("hylafax_not_ready"))
    } else if l.contains("down") {
        (Status::Fail, Some("hylafax_down"))
    } else if l.starts_with("initializing server")
        || l.starts_with("waiting for modem to come free")
    {
        (Status::Degraded, Some("hylafax_waiting"))
    } else {
        (Status::Degraded, Some("hylafax_unknown_status"))
    }
}

/// True for a state of a call in progress: "Sending job 12", "Receiving facsimile",
/// "Receiving from +1 555 0100".
pub fn in_session(line: &str) -> bool {
    let l = line.trim().to_ascii_lowercase();
    l.starts_with("sending") || l.starts_with("receiving")
}

/// The first line of `<spool>/status/<device>` (of its first 4 KiB), with control
/// characters shown as `?`, and when the file was last written.
pub fn read_status(spool: &Path, device: &str) -> std::io::Result<(String, SystemTime)> {
    let path = spool.join("status").join(device);
    let text = crate::files::read_text(&path, 4096)?;
    let written = std::fs::metadata(&path)?.modified()?;
    let line = text.lines().next().unwrap_or("").trim();
    let line = line
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Ok((line, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faxgetty_states_map_to_statuses() {
        for (line, want) in [
            ("Running and idle", (Status::Ok, None)),
            (
                "Running and idle; modem wedged",
                (Status::Degraded, Some("hylafax_unknown_status")),
            ),
            (
                "Running and idle\u{0}garbage",
                (Status::Degraded, Some("hylafax_unknown_status")),
            ),
            ("Sending job 12", (Status::Ok, None)),
            ("Sending facsimile", (Status::Ok, None)),
            ("Receiving facsimile", (Status::Ok, None)),
            ("Answering the phone", (Status::Ok, None)),
            ("Listening to rings from modem", (Status::Ok, None)),
            (
                "Waiting for modem to come ready",
                (Status::Fail, Some("hylafax_not_ready")),
            ),
            (
                "Initializing server and modem",
                (Status::Degraded, Some("hylafax_waiting")),
            ),
            (
                "Waiting for modem to come free",
                (Status::Degraded, Some("hylafax_waiting")),
            ),
            ("Modem is down", (Status::Fail, Some("hylafax_down"))),
            ("", (Status::Degraded, Some("hylafax_unknown_status"))),
        ] {
            assert_eq!(judge(line), want, "{line:?}");
        }
    }

    #[test]
    fn reads_a_real_status_file() {
        // Taken from a HylaFAX 6.0.7 spool whose modem never came up.
        let spool = std::env::temp_dir().join(format!("telagent-hfx-{}", std::process::id()));
        std::fs::create_dir_all(spool.join("status")).unwrap();
        let sample = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/hylafax/status-ttyFAXLAB"
        );
        std::fs::copy(sample, spool.join("status/ttyFAXLAB")).unwrap();
        let (line, _) = read_status(&spool, "ttyFAXLAB").unwrap();
        assert_eq!(line, "Waiting for modem to come ready");
        assert_eq!(judge(&line).0, Status::Fail);
        std::fs::remove_dir_all(&spool).unwrap();
    }
}
