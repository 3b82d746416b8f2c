//! HylaFAX `xferfaxlog`: parsing records and tailing the file exactly once.
//!
//! Records (xferfaxlog(5)) are tab-separated; text fields are quoted and may hold tabs:
//! `date TYPE commid modem jobid jobtag sender "number" "CSI/TSI" params #pages jobtime
//! conntime "reason" ...`. `SEND` and `PAGE` count as sent, `RECV` and `POLL` as received;
//! an empty reason is a success, any other a failure. Other record types (`CALL`,
//! `UNSENT`, ...) are read past without counting. A line that cannot be read as a record
//! is counted as malformed and logged with its line number; it never stops the tail.
//!
//! The tail follows the path: when the file is renamed away (rotation), the rest of the
//! old file is read before the new one; when it shrinks (truncation), reading starts over.
//! Each chunk's counts and the new offset are committed in one transaction, so a crash at
//! any point neither loses nor repeats a record. At start, a file whose identity differs
//! from the committed one is searched for in the same directory (a rotated `xferfaxlog.0`)
//! to finish it first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::store::{Position, Store};
use super::{outcome, quality, Detail, Direction, Event, SourceStats, XferfaxlogConfig};

/// The job tag of a canary's fax (`sendfax -i`): its SEND record is the canary's, not
/// traffic.
pub const CANARY_TAG: &str = "telagent-canary";

/// Bytes of the file's start remembered to tell a new file that reuses an inode.
const HEAD: usize = 64;
/// Most bytes read (and committed) at once.
const CHUNK: usize = 4 << 20;
/// A "line" longer than this without a newline is skipped as malformed.
const MAX_LINE: usize = 64 << 10;

/// Why a poll of the tail stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TailError {
    /// The file could not be read, or its records were refused: tried again next poll.
    #[error("{0}")]
    Source(String),
    /// The store could not commit: it is unavailable until a commit succeeds.
    #[error("{0}")]
    Store(String),
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} fields, a {1} record has at least 14")]
    TooFewFields(usize, String),
    #[error("the date `{0}` is not MM/DD/YY HH:MM")]
    Date(String),
    #[error("the page count `{0}` is not a number")]
    Pages(String),
    #[error("the line is not text")]
    NotText,
}

/// Splits a record into fields: tabs separate them, except inside double quotes; quotes
/// are removed and `\"` inside them is a quote.
pub fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '\\' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if quoted && matches!(chars.peek(), None | Some('\t')) => quoted = false,
            '\t' if !quoted => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            c => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    out.push(cur);
    out
}

/// Reads one record; `Ok(None)` for record types that carry no traffic.
pub fn parse(line: &str, server: &str) -> Result<Option<Event>, Malformed> {
    let f = fields(line);
    let kind = f.get(1).map(String::as_str).unwrap_or("");
    let direction = match kind {
        "SEND" | "PAGE" => Direction::Sent,
        "RECV" | "POLL" => Direction::Received,
        _ if f.len() >= 2 && !kind.is_empty() && kind.chars().all(|c| c.is_ascii_uppercase()) => {
            return Ok(None)
        }
        _ => return Err(Malformed::TooFewFields(f.len(), "HylaFAX".into())),
    };
    if f.len() < 14 {
        return Err(Malformed::TooFewFields(f.len(), kind.into()));
    }
    let time = parse_date(&f[0]).ok_or_else(|| Malformed::Date(f[0].clone()))?;
    let pages = f[10]
        .trim()
        .parse::<u32>()
        .map_err(|_| Malformed::Pages(f[10].clone()))?;
    let seconds = parse_hms(&f[12]).unwrap_or(0);
    let class = outcome::classify(&f[13], Some(seconds > 0));
    // HylaFAX writes the job's params even for a call that never trained (busy, nobody
    // answered): a rate counts only for a fax call that connected; a pager call (PAGE)
    // has none.
    let trained =
        kind != "PAGE" && seconds > 0 && !class.is_some_and(outcome::Class::before_training);
    let (rate, ecm) = match f[9].trim().parse::<u32>() {
        Ok(p) if trained => {
            let (rate, ecm) = outcome::decode_params(p);
            (rate, rate.map(|_| ecm))
        }
        _ => (None, None),
    };
    // The far end: the number dialled when sending, the sender's TSI (else its caller
    // id) when receiving.
    let remote = match direction {
        Direction::Sent => &f[7],
        Direction::Received if f[8].trim().is_empty() => f.get(15).unwrap_or(&f[8]),
        Direction::Received => &f[8],
    };
    Ok(Some(Event {
        time,
        server: server.to_string(),
        direction,
        ok: f[13].trim().is_empty(),
        line: f[3].clone(),
        pages,
        seconds,
        detail: Detail {
            class,
            remote: quality::clean_remote(remote),
            rate,
            ecm,
            pages_attempted: None,
            canary: direction == Direction::Sent && f[5].starts_with(CANARY_TAG),
        },
    }))
}

/// `MM/DD/YY HH:MM` in local time, as HylaFAX writes it.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() != 14 || b[2] != b'/' || b[5] != b'/' || b[8] != b' ' || b[11] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i32> {
        std::str::from_utf8(&b[r]).ok()?.parse().ok()
    };
    let (mon, day, year, hour, min) = (
        num(0..2)?,
        num(3..5)?,
        num(6..8)?,
        num(9..11)?,
        num(12..14)?,
    );
    if !(1..=12).contains(&mon) || !(1..=31).contains(&day) || hour > 23 || min > 59 {
        return None;
    }
    // SAFETY: mktime reads and normalizes the tm we own; no pointers are kept.
    let t = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = 100 + year;
        tm.tm_mon = mon - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = min;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    (t != -1).then_some(t)
}

/// `H:MM:SS` to seconds.
pub fn parse_hms(s: &str) -> Option<u32> {
    let mut total = 0u32;
    for part in s.trim().split(':') {
        total = total.checked_mul(60)?.checked_add(part.parse().ok()?)?;
    }
    Some(total)
}

/// The result of parsing a chunk of complete lines.
#[derive(Debug, Default, PartialEq)]
pub struct Chunk {
    pub events: Vec<Event>,
    pub lines: u64,
    pub malformed: Vec<(u64, String)>,
}

/// Parses the complete lines of `buf`; `first_line` is the number of the first one.
pub fn parse_lines(buf: &[u8], first_line: u64, server: &str) -> Chunk {
    let mut chunk = Chunk::default();
    // The part after the last newline is not a complete line.
    let complete = buf.iter().filter(|&&b| b == b'\n').count();
    for (i, raw) in buf.split(|&b| b == b'\n').take(complete).enumerate() {
        let n = first_line + i as u64;
        chunk.lines += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = std::str::from_utf8(raw)
            .map_err(|_| Malformed::NotText)
            .and_then(|l| parse(l, server));
        match parsed {
            Ok(Some(e)) => chunk.events.push(e),
            Ok(None) => {}
            Err(e) => chunk.malformed.push((n, e.to_string())),
        }
    }
    chunk
}

/// Follows one xferfaxlog.
pub struct Tailer {
    path: PathBuf,
    server: String,
    /// The committed position; `open` is the file it describes, when open.
    pos: Position,
    open: Option<File>,
}

fn identity(f: &File) -> std::io::Result<(u64, u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino(), m.len()))
}

fn head_of(f: &mut File) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; HEAD];
    f.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < HEAD {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    Ok(head)
}

impl Tailer {
    pub fn new(path: PathBuf, server: String, pos: Option<Position>) -> Tailer {
        Tailer {
            path,
            server,
            pos: pos.unwrap_or_default(),
            open: None,
        }
    }

    /// The name the position is stored under.
    pub fn source(&self) -> String {
        format!("xferfaxlog:{}", self.path.display())
    }

    pub fn stats(&self) -> SourceStats {
        SourceStats {
            records: self.pos.records,
            malformed: self.pos.malformed,
            offset: self.pos.offset,
        }
    }

    /// Finds the file the committed position belongs to: the path itself, or a rotated
    /// file beside it with the same device and inode.
    fn reopen(&mut self) -> std::io::Result<()> {
        let current = crate::files::open_regular(&self.path);
        if self.pos.ino == 0 {
            if let Ok(f) = current {
                self.open = Some(f);
            }
            return Ok(());
        }
        if let Ok(f) = &current {
            let (dev, ino, _) = identity(f)?;
            if (dev, ino) == (self.pos.dev, self.pos.ino) {
                self.open = current.ok();
                return Ok(());
            }
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let Ok(m) = e.metadata() else { continue };
                if (m.dev(), m.ino()) == (self.pos.dev, self.pos.ino) && m.is_file() {
                    tracing::info!(path = %self.path.display(), rotated = %e.path().display(),
                        "Finishing the rotated xferfaxlog before the new one.");
                    self.open = Some(crate::files::open_regular(&e.path())?);
                    return Ok(());
                }
            }
        }
        tracing::warn!(path = %self.path.display(), offset = self.pos.offset,
            "The xferfaxlog read last is gone and no rotated copy was found beside it; records written to it after the last read are not counted. Reading the current file from its start.");
        self.open = current.ok();
        self.pos.ino = 0;
        Ok(())
    }

    /// Reads what is new and commits it; returns the records counted. Call again until it
    /// returns 0 to catch up.
    pub fn poll(&mut self, store: &Mutex<Store>, now: i64) -> Result<usize, TailError> {
        let source = TailError::Source;
        if self.open.is_none() {
            self.reopen()
                .map_err(|e| source(format!("cannot open {}: {e}", self.path.display())))?;
        }
        // Taken while it is read; put back below (an error drops it: the next poll finds
        // it again by its inode).
        let Some(mut file) = self.open.take() else {
            return Ok(0); // no file yet: HylaFAX creates it on the first call
        };
        let f = &mut file;
        let (dev, ino, len) =
            identity(f).map_err(|e| source(format!("{}: {e}", self.path.display())))?;
        let head = head_of(f).map_err(|e| source(format!("{}: {e}", self.path.display())))?;
        let fresh = (dev, ino) != (self.pos.dev, self.pos.ino);
        let mut pos = self.pos.clone();
        if fresh {
            pos = Position {
                dev,
                ino,
                records: pos.records,
                malformed: pos.malformed,
                ..Position::default()
            };
        } else if len < pos.offset || !head.starts_with(&pos.head[..pos.head.len().min(head.len())])
        {
            // Truncated in place: what was written after our last read is in the copy, if
            // the rotation made one. Count it from there, in the same transaction that
            // moves the position to the start of the truncated file.
            let mut recovered = Vec::new();
            let mut copy_name = None;
            if let Some((copy, mut c)) = self.copy_of_truncated(ino) {
                let mut rest = Vec::new();
                if c.seek(SeekFrom::Start(pos.offset))
                    .and_then(|_| c.take(CHUNK as u64).read_to_end(&mut rest))
                    .is_ok()
                {
                    let complete = rest.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    let chunk = parse_lines(&rest[..complete], pos.line + 1, &self.server);
                    pos.records += chunk.events.len() as u64;
                    pos.malformed += chunk.malformed.len() as u64;
                    recovered = chunk.events;
                    copy_name = Some(copy);
                }
            }
            match &copy_name {
                Some(copy) => {
                    tracing::warn!(path = %self.path.display(), copy = %copy.display(), recovered = recovered.len(),
                    "The xferfaxlog was copied and truncated (copytruncate): the records written after the last read were counted from the copy; any written between the copy and the truncation are lost. Rotate xferfaxlog by renaming (logrotate's create) instead.")
                }
                None => {
                    tracing::warn!(path = %self.path.display(), offset = pos.offset, size = len,
                    "The xferfaxlog was truncated or replaced and no copy was found; records written after the last read and before the truncation are not counted. Reading it from the start.")
                }
            }
            pos.offset = 0;
            pos.line = 0;
            pos.head = head.clone();
            if !recovered.is_empty() {
                self.commit(store, &recovered, &pos, now)?;
                self.pos = pos.clone();
            }
        }
        pos.head = head;
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(pos.offset))
            .and_then(|_| f.take(CHUNK as u64).read_to_end(&mut buf))
            .map_err(|e| source(format!("cannot read {}: {e}", self.path.display())))?;
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut chunk = parse_lines(&buf[..complete], pos.line + 1, &self.server);
        let mut consumed = complete;
        if complete == 0 && buf.len() >= MAX_LINE {
            consumed = buf.len();
            chunk.lines = 1;
            chunk
                .malformed
                .push((pos.line + 1, format!("no newline in {} bytes", buf.len())));
        }
        for (n, why) in chunk.malformed.iter().take(10) {
            tracing::warn!(path = %self.path.display(), line = n, "Skipped a malformed xferfaxlog line: {why}.");
        }
        pos.offset += consumed as u64;
        pos.line += chunk.lines;
        pos.records += chunk.events.len() as u64;
        pos.malformed += chunk.malformed.len() as u64;
        let changed = pos != self.pos;
        if changed {
            self.commit(store, &chunk.events, &pos, now)?;
        }
        self.pos = pos;
        self.open = Some(file);
        let counted = chunk.events.len();
        if consumed == 0 {
            // At the end of this file: if the path now names another file, move on to the
            // next generation, which is not always the path: rotated twice while we were
            // away, the file between is read first.
            let moved = match std::fs::metadata(&self.path) {
                Ok(m) => (m.dev(), m.ino()) != (dev, ino),
                Err(_) => false,
            };
            if moved {
                let next = self.next_generation(dev, ino);
                if let Some(p) = &next {
                    tracing::info!(path = %self.path.display(), next = %p.display(),
                        "Reading the next rotated xferfaxlog before the current one.");
                }
                self.open = next.and_then(|p| crate::files::open_regular(&p).ok());
                self.pos.ino = 0;
                if self.open.is_none() {
                    self.open = crate::files::open_regular(&self.path).ok();
                }
                return self.poll(store, now);
            }
        }
        Ok(counted)
    }

    /// Counts `events` and moves the committed position to `pos`, in one transaction.
    fn commit(
        &self,
        store: &Mutex<Store>,
        events: &[Event],
        pos: &Position,
        now: i64,
    ) -> Result<(), TailError> {
        let mut s = store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.ingest_tail(&self.source(), events, pos, now) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(TailError::Source(format!(
                "{}: {refused}",
                self.path.display()
            ))),
            Err(e) => Err(TailError::Store(e.to_string())),
        }
    }

    /// The rotated generation written after the file `(dev, ino)`: the oldest by
    /// modification time among the files beside the path named after it
    /// (`xferfaxlog.1`, `xferfaxlog-20261201`), newer than that file; None when the next
    /// one is the path itself. Compressed generations cannot be read and are named in a
    /// WARN line.
    fn next_generation(&self, dev: u64, ino: u64) -> Option<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let base = self.path.file_name()?.to_string_lossy().into_owned();
        let mut done = None;
        let mut candidates = Vec::new();
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() || !name.starts_with(&base) {
                continue;
            }
            let when = (m.mtime(), m.mtime_nsec(), m.ino());
            if (m.dev(), m.ino()) == (dev, ino) {
                done = Some(when);
            } else if e.path() != self.path {
                candidates.push((when, e.path()));
            }
        }
        let done = done?;
        let path_time = std::fs::metadata(&self.path)
            .map(|m| (m.mtime(), m.mtime_nsec(), m.ino()))
            .ok()?;
        candidates.retain(|(when, _)| *when > done && *when < path_time);
        candidates.sort();
        let (_, next) = candidates.into_iter().next()?;
        let compressed = ["gz", "bz2", "xz", "zst", "Z"]
            .iter()
            .any(|x| next.extension().is_some_and(|e| e == *x));
        if compressed {
            tracing::warn!(file = %next.display(),
                "A rotated xferfaxlog between the last one read and the current one is compressed; its records are not counted. Use delaycompress in logrotate's config.");
            return None;
        }
        Some(next)
    }

    /// After a copy-and-truncate rotation (logrotate's `copytruncate`): the copy beside
    /// the path that holds what was not read yet (it starts with the committed head and is
    /// at least as long as the committed offset).
    fn copy_of_truncated(&self, ino: u64) -> Option<(PathBuf, File)> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let base = self.path.file_name()?.to_string_lossy().into_owned();
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let Ok(m) = e.metadata() else { continue };
            let named = e.file_name().to_string_lossy().starts_with(&base);
            if !m.is_file() || m.ino() == ino || !named || m.len() < self.pos.offset {
                continue;
            }
            let Ok(mut f) = crate::files::open_regular(&e.path()) else {
                continue;
            };
            if head_of(&mut f)
                .is_ok_and(|h| !self.pos.head.is_empty() && h.starts_with(&self.pos.head))
            {
                return Some((e.path(), f));
            }
        }
        None
    }
}

/// Tails one file until cancelled, publishing its progress in the traffic stats.
pub async fn run(
    config: XferfaxlogConfig,
    server: String,
    store: Arc<Mutex<Store>>,
    (published_to, failing): (Arc<super::Stats>, Arc<Mutex<Option<String>>>),
    cancel: CancellationToken,
) {
    let source = Tailer::new(config.path.clone(), server.clone(), None).source();
    let pos = {
        let s = store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.position(&source)
    };
    let pos = match pos {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "Cannot read the xferfaxlog position; not tailing.");
            return;
        }
    };
    let mut tailer = Some(Tailer::new(config.path.clone(), server, pos));
    let mut last_error = None;
    let mut published: Option<SourceStats> = None;
    loop {
        let Some(mut t) = tailer.take() else { return };
        let st = store.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut result = Ok(0);
            loop {
                let now = crate::traffic::events::unix_now();
                match t.poll(&st, now) {
                    Ok(0) => break,
                    Ok(n) => result = Ok(result.unwrap_or(0) + n),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            (t, result)
        })
        .await;
        let Ok((t, result)) = joined else { return };
        // The store's own failures (not the file's) make the store unavailable.
        match &result {
            Err(TailError::Store(e)) => super::failing(&failing, &published_to, Some(e.clone())),
            Ok(_) => super::failing(&failing, &published_to, None),
            Err(TailError::Source(_)) => {}
        }
        match result {
            Err(e) if last_error.as_ref() != Some(&e) => {
                tracing::warn!(error = %e, "Cannot tail the xferfaxlog; retrying.");
                last_error = Some(e);
            }
            Err(_) => {}
            Ok(_) => last_error = None,
        }
        // Publish only what changed: an idle tail costs no copy of the counters.
        let stats = t.stats();
        if published.as_ref() != Some(&stats) {
            published_to.publish(
                &store
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            published_to.set_source(&source, stats.clone());
            published = Some(stats);
        }
        tailer = Some(t);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "11/23/26 08:33\tSEND\t000000001\tttyFAXLAB\t3\t\"\"\troot@vm\t\"5550003\"\t\"\"\t2220056\t0\t0:00:02\t0:00:00\t\"No carrier detected\"\t\"\"\t\"\"\t\"\"\t\"root\"\t\"00 00 00\"";

    /// Records the lab's HylaFAX 6.0.7 wrote (two iaxmodems, a real T.30 call): a page
    /// received at V.17 14,400 bit/s with ECM, a send nobody answered, a send whose far end
    /// was killed in phase C, a canary's send.
    #[test]
    fn real_records_give_class_rate_and_remote() {
        let recv = "12/01/26 19:32\tRECV\t000000004\t_tmp_faxlab.o0M9_ttyB\trecvq/fax000000002.tif\t\"\"\tfax\t\"+1.800.555.1002\"\t\"ModemA\"\t2220072\t1\t0:00:13\t0:00:13\t\"\"\t\"\"\t\"\"\t\"\"\t\"\"\t\"00 44 1F 22\"";
        let e = parse(recv, "fax1").unwrap().unwrap();
        assert_eq!(
            (
                e.ok,
                e.detail.class,
                e.detail.rate,
                e.detail.ecm,
                e.detail.remote.as_str()
            ),
            (true, None, Some(14400), Some(true), "ModemA")
        );
        let no_answer = "12/01/26 19:33\tSEND\t000000005\t_tmp_faxlab.o0M9_ttyA\t3\t\"\"\troot@vm\t\"5551002\"\t\"ModemB\"\t2220072\t0\t0:00:29\t0:00:00\t\"No carrier detected; too many attempts to dial\"\t\"\"\t\"\"\t\"\"\t\"root\"\t\"00 00 00\"";
        let e = parse(no_answer, "fax1").unwrap().unwrap();
        assert_eq!(
            (
                e.ok,
                e.detail.class,
                e.detail.remote.as_str(),
                e.detail.canary
            ),
            (false, Some(outcome::Class::NoAnswer), "5551002", false)
        );
        let dropped = "12/01/26 19:34\tSEND\t000000001\t_tmp_faxlab.aImT_ttyA\t1\t\"telagent-canary-c-3\"\troot@vm\t\"5551002\"\t\"ModemB\"\t2220072\t0\t0:00:31\t0:00:28\t\"No response to PPS repeated 3 times.; too many attempts to dial\"\t\"\"\t\"\"\t\"\"\t\"root\"\t\"00 44 1F 22\"";
        let e = parse(dropped, "fax1").unwrap().unwrap();
        assert_eq!(
            (e.detail.class, e.detail.canary),
            (Some(outcome::Class::TransferFailed), true)
        );
        // The receiving side of that call: its rate index is undefined (15).
        let torn = "12/01/26 19:34\tRECV\t000000002\t_tmp_faxlab.aImT_ttyB\trecvq/fax000000001.tif\t\"\"\tfax\t\"+1.800.555.1002\"\t\"ModemA\"\t4193919\t0\t0:00:09\t0:00:09\t\"Failed to properly detect high-speed data carrier.\"\t\"\"\t\"\"\t\"\"\t\"\"\t\"00 00 00\"";
        let e = parse(torn, "fax1").unwrap().unwrap();
        assert_eq!(
            (e.detail.class, e.detail.rate, e.detail.ecm),
            (Some(outcome::Class::TransferFailed), None, None)
        );
    }

    #[test]
    fn real_send_record_failed() {
        let e = parse(SAMPLE, "fax1").unwrap().unwrap();
        assert_eq!(e.direction, Direction::Sent);
        assert!(!e.ok);
        assert_eq!((e.line.as_str(), e.pages, e.seconds), ("ttyFAXLAB", 0, 0));
        assert_eq!(Some(e.time), parse_date("11/23/26 08:33"));
    }

    #[test]
    fn quoted_fields_keep_their_tabs_and_empty_values() {
        let line = "11/23/26 09:10\tRECV\t000000007\tttyS1\tfax00007.tif\t\"\"\tfax\t\"+1 555 0100\"\t\"ACME\tSales\"\t2220056\t4\t0:01:10\t0:01:02\t\"\"\t\"Caller \\\"A\\\"\"\t\"5550100\"\t\"\"\t\"\"\t\"\"";
        let f = fields(line);
        assert_eq!(f[8], "ACME\tSales");
        assert_eq!(f[13], "");
        assert_eq!(f[14], "Caller \"A\"");
        let e = parse(line, "fax1").unwrap().unwrap();
        assert_eq!(e.direction, Direction::Received);
        assert!(e.ok);
        assert_eq!((e.pages, e.seconds), (4, 62));
    }

    #[test]
    fn page_and_poll_and_call_records() {
        let page = "11/23/26 09:00\tPAGE\t000000009\tttyS0\t12\t\"\"\troot\t\"5550199\"\t\"\"\t0\t0\t0:00:20\t0:00:15\t\"\"\t\"\"\t\"\"\t\"root\"";
        assert_eq!(
            parse(page, "s").unwrap().unwrap().direction,
            Direction::Sent
        );
        let call = "11/23/26 09:00\tCALL\t000000010\tttyS0\t\"\"\t\"\"\tfax\t\"5550100\"\t\"\"\t0\t0\t0:00:20\t0:00:15\t\"\"";
        assert_eq!(parse(call, "s"), Ok(None));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let text = format!("{SAMPLE}\ngarbage without tabs\n11/99/26 08:33\tSEND\tx\ty\t1\t\"\"\ts\t\"n\"\t\"\"\t0\t0\t0:00:02\t0:00:00\t\"\"\n{SAMPLE}\nSEND\tpartial");
        let c = parse_lines(text.as_bytes(), 10, "s");
        assert_eq!(c.events.len(), 2);
        assert_eq!(c.lines, 4, "the unterminated last line waits");
        assert_eq!(
            c.malformed.iter().map(|m| m.0).collect::<Vec<_>>(),
            [11, 12]
        );
        assert!(c.malformed[1].1.contains("11/99/26"), "{:?}", c.malformed);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::testing::Lcg(11);
        for _ in 0..2000 {
            let len = (rng.next_u64() % 300) as usize;
            let mut b = rng.bytes(len);
            for x in b.iter_mut() {
                if *x % 7 == 0 {
                    *x = b'\t';
                } else if *x % 11 == 0 {
                    *x = b'"';
                }
            }
            b.push(b'\n');
            let _ = parse_lines(&b, 1, "s");
        }
    }
}
