//! The AT conversation with a modem: framing and result codes (pure, tested on captured
//! bytes) and a session that sends one command and reads its answer within a deadline.
//!
//! Real modems differ: echo is on until `ATE0` (the command comes back before the answer),
//! answers are framed `\r\n...\r\n` in verbose mode (`ATV1`) and end with a bare digit and
//! `\r` in numeric mode (`ATV0`), noise bytes appear on a line that was just powered or
//! reset, and a broken device can stream bytes without ever ending a line. None of that may
//! crash or hang the agent: noise and floods are `garbage`, silence is `no_response`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest line kept; more without a line end is a flood (`garbage`).
pub const MAX_LINE: usize = 64 * 1024;

/// A final result code: the end of a command's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    Ok,
    Error,
    NoCarrier,
    NoDialtone,
    Busy,
    NoAnswer,
    LineInUse,
    Connect,
}

impl Final {
    /// Recognises a result line, verbose (`OK`) or numeric (`0`, with `ATV0`).
    pub fn parse(line: &str) -> Option<Final> {
        Self::parse_in(line, true)
    }

    /// As [`Final::parse`]; bare digits count only when `numeric` (else they are
    /// information, such as a `+FCLASS=?` answer of `0`).
    pub fn parse_in(line: &str, numeric: bool) -> Option<Final> {
        let digits = !line.is_empty() && line.trim().bytes().all(|b| b.is_ascii_digit());
        if digits && !numeric {
            return None;
        }
        let l = line.trim().to_ascii_uppercase();
        Some(match l.as_str() {
            "OK" | "0" => Final::Ok,
            "ERROR" | "4" => Final::Error,
            "NO CARRIER" | "3" => Final::NoCarrier,
            "NO DIALTONE" | "NO DIAL TONE" | "6" => Final::NoDialtone,
            "BUSY" | "7" => Final::Busy,
            "NO ANSWER" | "8" => Final::NoAnswer,
            "LINE IN USE" => Final::LineInUse,
            "1" => Final::Connect,
            _ if l.starts_with("CONNECT") => Final::Connect,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Final::Ok => "OK",
            Final::Error => "ERROR",
            Final::NoCarrier => "NO CARRIER",
            Final::NoDialtone => "NO DIALTONE",
            Final::Busy => "BUSY",
            Final::NoAnswer => "NO ANSWER",
            Final::LineInUse => "LINE IN USE",
            Final::Connect => "CONNECT",
        }
    }
}

/// What the line splitter found in the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A non-empty line, without its `\r`/`\n`.
    Line(String),
    /// Bytes that are not text (control characters other than CR, LF, TAB; invalid
    /// UTF-8), with how many there were.
    Garbage(usize),
    /// `MAX_LINE` bytes without a line end.
    Overflow,
}

/// Splits a byte stream into lines at CR or LF, skipping empty lines.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                if !line.is_empty() {
                    classify(line, out);
                }
            } else if self.partial.len() >= MAX_LINE {
                self.partial.clear();
                out.push(Event::Overflow);
            } else {
                self.partial.push(b);
            }
        }
    }
}

/// A line, judged for noise. Bytes of line noise (a line just powered up, XON/XOFF)
/// before a result code are split off and the code kept (`\x13OK`, `\x00RING`); any other line that
/// began with noise is noise as a whole, and so is a line without a letter or digit
/// (`~~`): no answer to a command is made of punctuation alone, and an identity must
/// never be pieced together from noise.
fn classify(mut line: Vec<u8>, out: &mut Vec<Event>) {
    let noisy = |b: &u8| (*b < 0x20 && *b != b'\t') || *b >= 0x7f;
    let lead = line.iter().take_while(|b| noisy(b)).count();
    let whole = line.len();
    if lead > 0 {
        line.drain(..lead);
        let code = std::str::from_utf8(&line).is_ok_and(|l| {
            Final::parse(l).is_some() || unsolicited(l, true, false, "") == Some(Unsolicited::Ring)
        });
        if !code {
            out.push(Event::Garbage(whole));
            return;
        }
        out.push(Event::Garbage(lead));
    }
    if !line.iter().any(u8::is_ascii_alphanumeric) {
        out.push(Event::Garbage(whole - lead));
        return;
    }
    out.push(classify_text(line));
}

fn classify_text(line: Vec<u8>) -> Event {
    let bad = line
        .iter()
        .filter(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        .count();
    match String::from_utf8(line) {
        Ok(s) if bad == 0 => Event::Line(s.trim().to_string()),
        Ok(s) => Event::Garbage(bad.max(1).min(s.len())),
        Err(e) => Event::Garbage(e.as_bytes().len()),
    }
}

/// A complete answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Information lines, without the echoed command and the result code.
    pub lines: Vec<String>,
    pub result: Final,
    /// Time from sending the command to its result code.
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AtError {
    #[error("no answer to {command} within {}", humantime::format_duration(*.waited))]
    NoResponse { command: String, waited: Duration },
    #[error("the modem sent noise ({bytes} non-text bytes) and no result code in answer to {command}; check the baud rate and cabling")]
    Garbage { command: String, bytes: usize },
    #[error(
        "the modem sent {} bytes without a line end in answer to {command}",
        MAX_LINE
    )]
    Flood { command: String },
    #[error("the port went away while waiting for the answer to {command}: {reason}")]
    PortGone { command: String, reason: String },
    #[error("RING while waiting for the answer to {command}: a call is coming in")]
    Ring {
        command: String,
        /// The command had been sent (false: the RING was waiting before it).
        sent: bool,
    },
    #[error("answers no longer line up with commands after {command} timed out: a late answer kept arriving")]
    OutOfStep { command: String },
}

impl AtError {
    pub fn error_type(&self) -> &'static str {
        match self {
            AtError::NoResponse { .. } | AtError::OutOfStep { .. } => "no_response",
            AtError::Garbage { .. } | AtError::Flood { .. } => "garbage",
            AtError::PortGone { .. } => "port_missing",
            AtError::Ring { .. } => "line_in_use",
        }
    }
}

/// A line that a modem sends on its own, not in answer to the command in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unsolicited {
    /// An incoming call (`RING`, `RING 2` of distinctive ringing, numeric `2`).
    Ring,
    /// A call-progress code out of turn (`NO CARRIER` after a dropped call, `+FCERROR`).
    Other,
}

/// Recognises an unsolicited result code. Call-progress codes are unsolicited only
/// outside a dial: V.250 commands other than D, A and O end in OK or ERROR. An extended
/// response (`+FRH:3`, `+FHS:02`) is out of turn unless it names the command's own
/// parameter (`+FCLASS: 0,1` to `AT+FCLASS=?`).
fn unsolicited(line: &str, numeric: bool, dialing: bool, command: &str) -> Option<Unsolicited> {
    let l = line.trim().to_ascii_uppercase();
    if (numeric && l == "2") || l == "RING" || l.starts_with("RING ") {
        return Some(Unsolicited::Ring);
    }
    if l.starts_with("+FCERROR") {
        return Some(Unsolicited::Other);
    }
    if let Some((name, _)) = l.strip_prefix('+').and_then(|r| r.split_once(':')) {
        let own = command
            .to_ascii_uppercase()
            .contains(&format!("+{}", name.trim()));
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()) && !own {
            return Some(Unsolicited::Other);
        }
    }
    match Final::parse_in(line, numeric) {
        Some(Final::Ok | Final::Error) | None => None,
        Some(_) if dialing => None,
        Some(_) => Some(Unsolicited::Other),
    }
}

/// One AT conversation over a byte stream (a serial port, or a pty in tests).
///
/// Answers are matched to commands strictly: input left over from before a command is
/// discarded when the command is sent (and an incoming `RING` in it reported); after a
/// command timed out, its answer may still come, so the next command is sent only after
/// [`Session::resync`] proved that the modem and we are in step again.
pub struct Session<S> {
    io: S,
    /// Learned from the first result code: Some(true) once the modem answered in words.
    verbose: Option<bool>,
    lines: Lines,
    pending: std::collections::VecDeque<Event>,
    /// Unsolicited result codes and noise bursts skipped so far.
    skipped: u64,
    /// A command timed out: its answer may still arrive.
    out_of_step: bool,
    /// The command that timed out last.
    unanswered: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(io: S) -> Self {
        Session {
            io,
            verbose: None,
            lines: Lines::default(),
            pending: Default::default(),
            skipped: 0,
            out_of_step: false,
            unanswered: String::new(),
        }
    }

    /// Unsolicited result codes and noise bursts skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Sends `command` + CR and reads until its result code (OK or ERROR), within
    /// `timeout`. The echoed command, unsolicited call-progress codes and isolated noise
    /// are skipped; a `RING` ends the conversation.
    pub async fn command(&mut self, command: &str, timeout: Duration) -> Result<Reply, AtError> {
        self.exchange(command, timeout, false).await
    }

    /// As [`Session::command`] for a dial (`ATD...;`, `ATX4DT;`): every result code ends
    /// it (`NO DIALTONE`, `BUSY`, `NO CARRIER`...).
    pub async fn dial(&mut self, command: &str, timeout: Duration) -> Result<Reply, AtError> {
        self.exchange(command, timeout, true).await
    }

    async fn exchange(
        &mut self,
        command: &str,
        timeout: Duration,
        dialing: bool,
    ) -> Result<Reply, AtError> {
        if self.out_of_step {
            self.resync(timeout).await?;
        }
        self.exchange_in_step(command, timeout, dialing).await
    }

    async fn exchange_in_step(
        &mut self,
        command: &str,
        timeout: Duration,
        dialing: bool,
    ) -> Result<Reply, AtError> {
        self.discard(command).await?;
        let start = tokio::time::Instant::now();
        let gone = |e: std::io::Error| AtError::PortGone {
            command: command.to_string(),
            reason: e.to_string(),
        };
        self.io
            .write_all(format!("{command}\r").as_bytes())
            .await
            .map_err(gone)?;
        self.io.flush().await.map_err(gone)?;
        let mut lines = Vec::new();
        let mut noise = 0usize;
        loop {
            while let Some(ev) = self.pending.pop_front() {
                let numeric = self.verbose != Some(true);
                match ev {
                    Event::Line(l) if l.eq_ignore_ascii_case(command) => {}
                    Event::Line(l) => match unsolicited(&l, numeric, dialing, command) {
                        Some(Unsolicited::Ring) => {
                            return Err(AtError::Ring {
                                command: command.to_string(),
                                sent: true,
                            })
                        }
                        Some(Unsolicited::Other) => self.skipped += 1,
                        None => match Final::parse_in(&l, numeric) {
                            Some(result) => {
                                let words = !l.bytes().all(|b| b.is_ascii_digit());
                                self.verbose.get_or_insert(words);
                                return Ok(Reply {
                                    lines,
                                    result,
                                    elapsed: start.elapsed(),
                                });
                            }
                            None => lines.push(l),
                        },
                    },
                    Event::Garbage(bytes) => {
                        noise += bytes;
                        self.skipped += 1;
                    }
                    Event::Overflow => {
                        return Err(AtError::Flood {
                            command: command.to_string(),
                        })
                    }
                }
            }
            let left = timeout.saturating_sub(start.elapsed());
            match self.read(left, command).await? {
                true => {}
                false => {
                    self.out_of_step = true;
                    self.unanswered = command.to_string();
                    // Noise and no result code: the wrong speed, not silence.
                    return Err(if noise > 0 {
                        AtError::Garbage {
                            command: command.to_string(),
                            bytes: noise,
                        }
                    } else {
                        AtError::NoResponse {
                            command: command.to_string(),
                            waited: timeout,
                        }
                    });
                }
            }
        }
    }

    /// Reads what arrives within `wait` into `pending`: false when nothing did.
    async fn read(&mut self, wait: Duration, command: &str) -> Result<bool, AtError> {
        let mut buf = [0u8; 1024];
        let gone = |reason: String| AtError::PortGone {
            command: command.to_string(),
            reason,
        };
        let n = match tokio::time::timeout(wait, self.io.read(&mut buf)).await {
            Err(_) => return Ok(false),
            Ok(Err(e)) => return Err(gone(e.to_string())),
            Ok(Ok(0)) => return Err(gone("end of file".into())),
            Ok(Ok(n)) => n,
        };
        let mut events = Vec::new();
        self.lines.feed(&buf[..n], &mut events);
        self.pending.extend(events);
        Ok(true)
    }

    /// Drops input that arrived before `command` is sent (a late answer, noise), and
    /// reports a `RING` among it: the line is ringing.
    async fn discard(&mut self, command: &str) -> Result<(), AtError> {
        // Zero wait: only what is already there.
        while self.read(Duration::ZERO, command).await? {}
        self.lines = Lines::default();
        let numeric = self.verbose != Some(true);
        for ev in std::mem::take(&mut self.pending) {
            self.skipped += 1;
            if let Event::Line(l) = ev {
                if unsolicited(&l, numeric, false, command) == Some(Unsolicited::Ring) {
                    return Err(AtError::Ring {
                        command: command.to_string(),
                        sent: false,
                    });
                }
            }
        }
        Ok(())
    }

    /// Hangs up after a dial, at once (no resync first: the modem may still be
    /// off-hook): a CR aborts a dial in progress, then `ATH0`, then `ATZ` if that goes
    /// unanswered. True when one of them was answered with OK.
    pub async fn hang_up(&mut self, timeout: Duration) -> bool {
        if self.out_of_step && self.io.write_all(b"\r").await.is_err() {
            return false;
        }
        for command in ["ATH0", "ATZ"] {
            self.out_of_step = false;
            if let Ok(r) = self.exchange_in_step(command, timeout, false).await {
                if r.result == Final::Ok {
                    return true;
                }
            }
        }
        false
    }

    /// Gets back in step after a timed-out command: waits until the line has been quiet
    /// for `timeout` (the late answer comes and is dropped), then sends `AT` until one
    /// answer is a lone `OK` followed by silence. Bounded: at most 3 tries.
    pub async fn resync(&mut self, timeout: Duration) -> Result<(), AtError> {
        const MARK: &str = "AT";
        let after = self.unanswered.clone();
        let settle = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
        for _ in 0..3 {
            let quiet_until = tokio::time::Instant::now() + 2 * timeout;
            while tokio::time::Instant::now() < quiet_until && self.read(timeout, MARK).await? {}
            self.discard(MARK).await?;
            self.out_of_step = false;
            let lone = match self.exchange_in_step(MARK, timeout, false).await {
                // Silence: the modem is not answering at all.
                Err(AtError::NoResponse { waited, .. }) => {
                    return Err(AtError::NoResponse {
                        command: format!("{MARK} (sent to get back in step after {after})"),
                        waited,
                    })
                }
                Ok(r) if r.lines.is_empty() && r.result == Final::Ok => true,
                Ok(r) => {
                    // Someone else's answer: dropped, and counted.
                    self.skipped += r.lines.len() as u64 + 1;
                    false
                }
                Err(AtError::Garbage { .. }) => false,
                Err(e) => return Err(e),
            };
            if lone && !self.read(settle, MARK).await? {
                return Ok(());
            }
            self.out_of_step = true;
        }
        Err(AtError::OutOfStep {
            command: MARK.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        Lines::default().feed(bytes, &mut out);
        out
    }

    #[test]
    fn verbose_answer_with_echo() {
        // As iaxmodem answers with echo on.
        assert_eq!(
            lines(b"AT+FCLASS=?\r\r\n0,1,1.0\r\n\r\nOK\r\n"),
            vec![
                Event::Line("AT+FCLASS=?".into()),
                Event::Line("0,1,1.0".into()),
                Event::Line("OK".into())
            ]
        );
    }

    #[test]
    fn result_codes_verbose_and_numeric() {
        assert_eq!(Final::parse("OK"), Some(Final::Ok));
        assert_eq!(Final::parse("0"), Some(Final::Ok));
        assert_eq!(Final::parse("4"), Some(Final::Error));
        assert_eq!(Final::parse("no dialtone"), Some(Final::NoDialtone));
        assert_eq!(Final::parse("6"), Some(Final::NoDialtone));
        assert_eq!(Final::parse("CONNECT 9600"), Some(Final::Connect));
        assert_eq!(Final::parse("0,1,1.0"), None);
        assert_eq!(Final::parse("LabModem"), None);
    }

    #[test]
    fn noise_and_floods_are_garbage() {
        assert!(matches!(
            lines(b"\x00\x13\xfe\x80OK\r")[0],
            Event::Garbage(_)
        ));
        let flood = vec![b'x'; MAX_LINE + 10];
        assert_eq!(lines(&flood), vec![Event::Overflow]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::testing::Lcg(0x2545_f491_4f6c_dd1d);
        let mut splitter = Lines::default();
        let mut out = Vec::new();
        for _ in 0..2000 {
            let chunk = rng.bytes(64);
            splitter.feed(&chunk, &mut out);
            for e in out.drain(..) {
                if let Event::Line(l) = e {
                    let _ = Final::parse(&l);
                }
            }
        }
    }

    async fn talk(script: &[u8], command: &str) -> Result<Reply, AtError> {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let script = script.to_vec();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let _ = b.read(&mut buf).await;
            let _ = b.write_all(&script).await;
            // Keep the other end open until the session is done.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        Session::new(a)
            .command(command, Duration::from_secs(1))
            .await
    }

    #[tokio::test]
    async fn session_skips_echo_and_collects_info() {
        let r = talk(b"ATI3\r\r\nwww.soft-switch.org\r\n\r\nOK\r\n", "ATI3")
            .await
            .unwrap();
        assert_eq!(r.lines, vec!["www.soft-switch.org"]);
        assert_eq!(r.result, Final::Ok);
    }

    #[tokio::test]
    async fn a_digit_is_information_once_the_modem_answers_in_words() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let _ = b.read(&mut buf).await;
            let _ = b.write_all(b"\r\nOK\r\n").await;
            let _ = b.read(&mut buf).await;
            let _ = b.write_all(b"\r\n0\r\n\r\nOK\r\n").await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let mut s = Session::new(a);
        s.command("ATE0", Duration::from_secs(1)).await.unwrap();
        let r = s
            .command("AT+FCLASS=?", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((r.lines, r.result), (vec!["0".to_string()], Final::Ok));
    }

    #[tokio::test]
    async fn session_reads_numeric_mode() {
        let r = talk(b"\r\nLabModem\r\n0\r", "ATI").await.unwrap();
        assert_eq!((r.lines.len(), r.result), (1, Final::Ok));
        let e = talk(b"4\r", "AT+BOGUS").await.unwrap();
        assert_eq!(e.result, Final::Error);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_no_response() {
        let e = talk(b"", "AT").await.unwrap_err();
        assert_eq!(e.error_type(), "no_response");
    }

    #[tokio::test]
    async fn closed_port_is_port_missing() {
        let (a, b) = tokio::io::duplex(64);
        drop(b);
        let e = Session::new(a)
            .command("AT", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "port_missing");
    }

    /// A modem on the other end of a duplex pipe: `answer(n, command)` gives the delay
    /// and the bytes of its answer to the nth command.
    fn modem(
        answer: impl Fn(usize, &str) -> (u64, Vec<u8>) + Send + 'static,
    ) -> tokio::io::DuplexStream {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut line = Vec::new();
            let mut n = 0;
            let mut buf = [0u8; 256];
            loop {
                let Ok(k) = b.read(&mut buf).await else {
                    return;
                };
                if k == 0 {
                    return;
                }
                for &c in &buf[..k] {
                    if c != b'\r' {
                        line.push(c);
                        continue;
                    }
                    let cmd = String::from_utf8_lossy(&std::mem::take(&mut line)).to_string();
                    if cmd.is_empty() {
                        continue;
                    }
                    let (delay, bytes) = answer(n, &cmd);
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    if b.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            }
        });
        a
    }

    #[tokio::test]
    async fn unsolicited_codes_and_noise_are_skipped_and_counted() {
        let io = modem(|_, _| {
            (
                0,
                b"\r\nNO CARRIER\r\n\x00\x11\xff\r\n\r\n+FCERROR\r\n+FRH:3\r\n\x13OK\r\n".to_vec(),
            )
        });
        let mut s = Session::new(io);
        let r = s.command("AT", Duration::from_secs(1)).await.unwrap();
        assert_eq!((r.result, r.lines.len()), (Final::Ok, 0));
        assert_eq!(
            s.skipped(),
            5,
            "NO CARRIER, a noise line, +FCERROR, +FRH:3, XOFF"
        );
    }

    #[tokio::test]
    async fn a_dial_ends_on_any_result_code() {
        let io = modem(|_, _| (0, b"\r\nNO DIALTONE\r\n".to_vec()));
        let r = Session::new(io)
            .dial("ATX4DT;", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(r.result, Final::NoDialtone);
    }

    #[tokio::test]
    async fn ring_stops_the_conversation_in_both_modes() {
        for ring in [&b"\r\nRING\r\n"[..], b"2\r", b"\r\nRING 1\r\n"] {
            let io = modem(move |_, _| (0, ring.to_vec()));
            let e = Session::new(io)
                .command("AT+FMI?", Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(matches!(e, AtError::Ring { .. }), "{ring:?}: {e:?}");
        }
    }

    #[tokio::test]
    async fn a_late_answer_is_never_taken_for_the_next_command() {
        // AT+FMI? is answered after 400 ms, the timeout is 150 ms; every later command
        // at once.
        let io = modem(|n, cmd| match (n, cmd) {
            (0, _) => (400, b"\r\nLATE MAKER\r\n\r\nOK\r\n".to_vec()),
            (_, "AT+FMM?") => (0, b"\r\nRightModel\r\n\r\nOK\r\n".to_vec()),
            _ => (0, b"\r\nOK\r\n".to_vec()),
        });
        let mut s = Session::new(io);
        let t = Duration::from_millis(150);
        let e = s.command("AT+FMI?", t).await.unwrap_err();
        assert_eq!(e.error_type(), "no_response");
        let r = s.command("AT+FMM?", t).await.unwrap();
        assert_eq!(r.lines, vec!["RightModel"], "the late answer was dropped");
        assert!(s.skipped() >= 2, "the late lines were counted");
    }
}
