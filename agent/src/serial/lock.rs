//! UUCP lock files (`/var/lock/LCK..ttyS0`), read without side effects.
//!
//! Fax servers (HylaFAX, mgetty), cu and minicom announce that they own a port by writing
//! their PID into `LCK..<device>`: HDB style as ASCII `%10d\n`, older programs as a 4-byte
//! binary integer. A lock whose PID is no longer alive is stale.
//!
//! [`acquire`] takes a lock the way they do: write our PID to a temp file in the lock
//! directory, then hard-link it to `LCK..<device>`, which either creates the lock whole or
//! fails because it exists. The returned guard removes the lock when dropped, on every exit
//! path (a probe's timeout drops it too).

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

/// How long a lock file without a PID is taken as being written by its owner (created,
/// not yet filled) rather than stale.
pub const WRITE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the lock of `device` in `lock_dir`; None when the port is not locked.
pub fn read(lock_dir: &Path, device: &str) -> Option<LockInfo> {
    let file = lock_path(lock_dir, device);
    // A lock file holds a PID: 11 bytes in ASCII, 4 in binary.
    let bytes = crate::files::read_regular(&file, 64).ok()?;
    let pid = parse_pid(&bytes);
    // Another program creates its lock, then writes its PID: until WRITE_GRACE has
    // passed, a lock without a PID is one being written, so it is live.
    let being_written = pid.is_none()
        && std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < WRITE_GRACE);
    let alive = pid.is_some_and(pid_alive) || being_written;
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

/// The outcome of [`acquire`].
#[derive(Debug)]
pub enum Acquired {
    /// We hold the lock until the guard is dropped.
    Held(LockGuard),
    /// A live process holds the port: leave it alone.
    InUse(LockInfo),
    /// A lock of a dead process is there and may not be removed (`remove_stale_locks`
    /// off): the port is free, but we could not take our own lock.
    Stale(LockInfo),
}

/// Our lock file; removed on drop if it still holds our PID.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let ours = crate::files::read_regular(&self.path, 64)
            .ok()
            .and_then(|b| parse_pid(&b))
            .is_some_and(|p| p == std::process::id() as i32);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Takes the UUCP lock of `device`, unless a live process holds it.
pub fn acquire(lock_dir: &Path, device: &str, remove_stale: bool) -> std::io::Result<Acquired> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let pid = std::process::id();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = lock_dir.join(format!("LTMP.{pid}.{n}"));
    std::fs::write(&tmp, format!("{pid:>10}\n"))?;
    let path = lock_path(lock_dir, device);
    let result = (|| {
        for _ in 0..2 {
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => return Ok(Acquired::Held(LockGuard { path: path.clone() })),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            // Gone between the link and the read: try again.
            let Some(info) = read(lock_dir, device) else {
                continue;
            };
            if !info.stale {
                return Ok(Acquired::InUse(info));
            }
            if !remove_stale {
                return Ok(Acquired::Stale(info));
            }
            tracing::info!(file = %path.display(), pid = ?info.pid, "Removing a stale UUCP lock.");
            std::fs::remove_file(&path)?;
        }
        Err(std::io::Error::other(format!(
            "{} keeps changing; another program is taking the lock",
            path.display()
        )))
    })();
    let _ = std::fs::remove_file(&tmp);
    result
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

    #[test]
    fn an_empty_lock_is_live_while_being_written_then_stale() {
        let dir = std::env::temp_dir().join(format!("telagent-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = lock_path(&dir, "ttyE");
        let f = std::fs::File::create(&path).unwrap();
        let fresh = read(&dir, "ttyE").unwrap();
        assert_eq!((fresh.pid, fresh.stale), (None, false));
        assert!(matches!(
            acquire(&dir, "ttyE", true).unwrap(),
            Acquired::InUse(_)
        ));
        assert!(path.exists(), "a lock being written is never removed");
        f.set_modified(std::time::SystemTime::now() - 2 * WRITE_GRACE)
            .unwrap();
        assert!(read(&dir, "ttyE").unwrap().stale, "empty for too long");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn acquire_holds_respects_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("telagent-acq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id() as i32;

        let guard = match acquire(&dir, "ttyA", false).unwrap() {
            Acquired::Held(g) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            std::fs::read_to_string(lock_path(&dir, "ttyA")).unwrap(),
            format!("{me:>10}\n")
        );
        // While held, a second taker sees it in use (by a live process: us).
        assert!(matches!(
            acquire(&dir, "ttyA", true).unwrap(),
            Acquired::InUse(_)
        ));
        drop(guard);
        assert!(!lock_path(&dir, "ttyA").exists(), "lock removed on drop");

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id() as i32;
        child.wait().unwrap();
        std::fs::write(lock_path(&dir, "ttyB"), format!("{dead:>10}\n")).unwrap();
        assert!(matches!(
            acquire(&dir, "ttyB", false).unwrap(),
            Acquired::Stale(_)
        ));
        assert!(lock_path(&dir, "ttyB").exists(), "stale lock left in place");
        assert!(matches!(
            acquire(&dir, "ttyB", true).unwrap(),
            Acquired::Held(_)
        ));
        assert!(
            !lock_path(&dir, "ttyB").exists(),
            "our lock replaced it, then went"
        );

        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
