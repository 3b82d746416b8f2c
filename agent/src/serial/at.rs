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
                    out.push(classify(line));
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

fn classify(line: Vec<u8>) -> Event {
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
    #[error("the modem sent non-text bytes in answer to {command} ({bytes} bad bytes); check the baud rate and cabling")]
    Garbage { command: String, bytes: usize },
    #[error(
        "the modem sent {} bytes without a line end in answer to {command}",
        MAX_LINE
    )]
    Flood { command: String },
    #[error("the port went away while waiting for the answer to {command}: {reason}")]
    PortGone { command: String, reason: String },
}

impl AtError {
    pub fn error_type(&self) -> &'static str {
        match self {
            AtError::NoResponse { .. } => "no_response",
            AtError::Garbage { .. } | AtError::Flood { .. } => "garbage",
            AtError::PortGone { .. } => "port_missing",
        }
    }
}

/// One AT conversation over a byte stream (a serial port, or a pty in tests).
pub struct Session<S> {
    io: S,
    /// Learned from the first result code: Some(true) once the modem answered in words.
    verbose: Option<bool>,
    lines: Lines,
    pending: std::collections::VecDeque<Event>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(io: S) -> Self {
        Session {
            io,
            verbose: None,
            lines: Lines::default(),
            pending: Default::default(),
        }
    }

    /// Sends `command` + CR and reads until a result code, within `timeout`. The echoed
    /// command (echo on) and lines left over from an earlier answer are skipped.
    pub async fn command(&mut self, command: &str, timeout: Duration) -> Result<Reply, AtError> {
        self.pending.clear();
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
        let mut buf = [0u8; 1024];
        loop {
            while let Some(ev) = self.pending.pop_front() {
                match ev {
                    Event::Line(l) if l.eq_ignore_ascii_case(command) => {}
                    Event::Line(l) => match Final::parse_in(&l, self.verbose != Some(true)) {
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
                    Event::Garbage(bytes) => {
                        return Err(AtError::Garbage {
                            command: command.to_string(),
                            bytes,
                        })
                    }
                    Event::Overflow => {
                        return Err(AtError::Flood {
                            command: command.to_string(),
                        })
                    }
                }
            }
            let left = timeout.saturating_sub(start.elapsed());
            let n = match tokio::time::timeout(left, self.io.read(&mut buf)).await {
                Err(_) => {
                    return Err(AtError::NoResponse {
                        command: command.to_string(),
                        waited: timeout,
                    })
                }
                Ok(Err(e)) => return Err(gone(e)),
                Ok(Ok(0)) => {
                    return Err(gone(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "end of file",
                    )))
                }
                Ok(Ok(n)) => n,
            };
            let mut events = Vec::new();
            self.lines.feed(&buf[..n], &mut events);
            self.pending.extend(events);
        }
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
}
