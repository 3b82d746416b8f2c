//! UUCP lock files (`/var/lock/LCK..ttyS0`), read without side effects.
//!
//! Fax servers (HylaFAX, mgetty), cu and minicom announce that they own a port by writing
//! their PID into `LCK..<device>`: HDB style as ASCII `%10d\n`, older programs as a 4-byte
//! binary integer. A lock whose PID is no longer alive is stale.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds a port's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock file.
    pub file: PathBuf,
    /// The PID written in it (None if the file could not be understood).
    pub pid: Option<i32>,
    /// The holder's program name, from /proc (None if unknown or gone).
    pub program: Option<String>,
    /// True when the holder is gone or the file is unreadable garbage.
    pub stale: bool,
}

/// The lock file of a device name (`ttyS0` -> `<dir>/LCK..ttyS0`).
pub fn lock_path(lock_dir: &Path, device: &str) -> PathBuf {
    lock_dir.join(format!("LCK..{device}"))
}

/// The PID in a lock file: ASCII (HDB, `%10d\n`) or a 4-byte native-endian integer.
pub fn parse_pid(bytes: &[u8]) -> Option<i32> {
    let ascii = std::str::from_utf8(bytes)
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    let pid = match ascii {
        Some(s) => s.parse::<i32>().ok()?,
        None if bytes.len() == 4 => i32::from_ne_bytes(bytes.try_into().ok()?),
        None => return None,
    };
    (pid > 0).then_some(pid)
}

/// True when a process with this PID exists (EPERM means it exists but is not ours).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence; no memory is involved.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads the lock of `device` in `lock_dir`; None when the port is not locked.
pub fn read(lock_dir: &Path, device: &str) -> Option<LockInfo> {
    let file = lock_path(lock_dir, device);
    let bytes = std::fs::read(&file).ok()?;
    let pid = parse_pid(&bytes);
    let alive = pid.is_some_and(pid_alive);
    let program = pid
        .filter(|_| alive)
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|s| s.trim().to_string());
    Some(LockInfo {
        file,
        pid,
        program,
        stale: !alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hdb_and_binary_pids() {
        assert_eq!(parse_pid(b"      1234\n"), Some(1234));
        assert_eq!(parse_pid(b"1234"), Some(1234));
        assert_eq!(parse_pid(&4321i32.to_ne_bytes()), Some(4321));
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"         0\n"), None);
        assert_eq!(parse_pid(b"garbage!\n"), None);
        assert_eq!(parse_pid(&(-5i32).to_ne_bytes()), None);
    }

    #[test]
    fn live_and_stale_holders() {
        let dir = std::env::temp_dir().join(format!("telagent-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read(&dir, "ttyNONE"), None);

        let me = std::process::id() as i32;
        std::fs::write(lock_path(&dir, "ttyLIVE"), format!("{me:>10}\n")).unwrap();
        let live = read(&dir, "ttyLIVE").unwrap();
        assert_eq!((live.pid, live.stale), (Some(me), false));
        assert!(live.program.is_some());

        // A child that has exited and been reaped: its PID is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id() as i32;
        child.wait().unwrap();
        std::fs::write(lock_path(&dir, "ttyDEAD"), format!("{dead:>10}\n")).unwrap();
        let stale = read(&dir, "ttyDEAD").unwrap();
        assert_eq!(
            (stale.pid, stale.stale, stale.program),
            (Some(dead), true, None)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
