//! Bounded reads of the files other programs write (HylaFAX's spool, UUCP locks, the
//! kernel's tables): a FIFO, a device, a socket or a huge file never blocks the agent,
//! never opens a device (opening a tty raises DTR) and never fills its memory. And the
//! durable write of the agent's own small state files.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Replaces `path` with `bytes` durably: written to `<path>.tmp`, synced, renamed over
/// it, and the directory synced, so that a crash leaves the old file or the new one.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn not_regular(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not a regular file (a FIFO, device, socket or directory is never read)",
            path.display()
        ),
    )
}

/// Opens a regular file for reading (symlinks followed). Anything else is refused before
/// it is opened; the open itself never blocks (`O_NONBLOCK`), and what was opened is
/// checked again, in case the file was replaced in between.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular(path));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(not_regular(path));
    }
    Ok(f)
}

/// At most `limit` bytes of a regular file.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_regular(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// At most `limit` bytes of a regular file, as text (invalid UTF-8 replaced).
pub fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    read_regular(path, limit).map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_only_up_to_the_limit() {
        let dir = std::env::temp_dir().join(format!("telagent-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "0123456789").unwrap();
        assert_eq!(read_text(&file, 4).unwrap(), "0123");
        let fifo = dir.join("fifo");
        crate::testing::mkfifo(&fifo);
        let link = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for refused in [&fifo, &link, &dir] {
            let e = read_regular(refused, 1 << 30).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{refused:?}");
        }
        assert!(read_regular(&dir.join("missing"), 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
