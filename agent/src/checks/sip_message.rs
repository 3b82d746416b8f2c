//! SIP responses as RFC 3261 writes them (§7, §25): what the `sip` check reads of an
//! answer, and how a TCP stream is cut into messages.
//!
//! Accepted, as any RFC 3261 stack accepts them: CRLFs before the status line (§7.5) and
//! CRLFCRLF keep-alives (RFC 5626 §4.4.1) before or between messages; `SIP/2.0` in any case;
//! header names in any case and in their compact forms (`v`, `i`, `l`, ... in either case,
//! §7.3.3); `HCOLON` with white space before the colon; folded header lines (a line that
//! starts with SP or HTAB continues the one before, §7.3.1); several values of one header
//! in one line, separated by commas outside quotes and angle brackets; `;branch = z9hG4bK..`
//! with linear white space around `;` and `=` (SEMI, EQUAL: §25.1) and parameter names in
//! any case; bare LF line ends. Refused: a status line that is not `SIP/2.0 <100-699>`, a
//! header line without a colon, a body shorter than its Content-Length, over
//! [`MAX_MESSAGE`] bytes.

use super::sip::MAX_MESSAGE;

/// Compact header names (RFC 3261 §7.3.3 and later RFCs), lower case, with their long name.
const COMPACT: [(&str, &str); 19] = [
    ("a", "accept-contact"),
    ("b", "referred-by"),
    ("c", "content-type"),
    ("d", "request-disposition"),
    ("e", "content-encoding"),
    ("f", "from"),
    ("i", "call-id"),
    ("j", "reject-contact"),
    ("k", "supported"),
    ("l", "content-length"),
    ("m", "contact"),
    ("o", "event"),
    ("r", "refer-to"),
    ("s", "subject"),
    ("t", "to"),
    ("u", "allow-events"),
    ("v", "via"),
    ("x", "session-expires"),
    ("y", "identity"),
];

/// A header name in one form: lower case, long.
fn canonical(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    COMPACT
        .iter()
        .find(|(short, _)| *short == lower)
        .map_or(lower, |(_, long)| (*long).to_string())
}

/// The number of CR and LF bytes that start `buf` (keep-alives, §7.5 CRLFs).
pub fn leading_line_ends(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

/// Where the header ends in `buf` (after `leading_line_ends`): the offset just past the
/// empty line, if there is one.
fn header_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(n) = buf[i..].iter().position(|b| *b == b'\n') {
        let line_end = i + n + 1;
        let line = &buf[i..i + n];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && i > 0 {
            return Some(line_end);
        }
        i = line_end;
    }
    None
}

/// A parsed response: its status and headers (names canonical, folded lines joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    headers: Vec<(String, String)>,
}

impl Response {
    /// The values of a header (any form of its name), each comma-separated value apart,
    /// in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        let name = canonical(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, v)| split_values(v))
            .collect()
    }

    /// The first value of a header.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.values(name).into_iter().next()
    }

    /// The `branch` parameter of the top Via.
    pub fn top_via_branch(&self) -> Option<&str> {
        let via = self.first("via")?;
        params(via)
            .find(|(k, _)| k.eq_ignore_ascii_case("branch"))
            .and_then(|(_, v)| v)
    }

    /// The Call-ID (compared as is: it is case-sensitive, §20.8).
    pub fn call_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == "call-id")
            .map(|(_, v)| v.trim())
    }

    /// The CSeq: number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self
            .headers
            .iter()
            .find(|(n, _)| n == "cseq")
            .map(|(_, v)| v.trim())?;
        let (n, method) = v.split_once([' ', '\t'])?;
        Some((n.parse().ok()?, method.trim()))
    }

    /// Retry-After: delta-seconds (a comment and parameters may follow).
    pub fn retry_after(&self) -> Option<u32> {
        let v = self
            .headers
            .iter()
            .find(|(n, _)| n == "retry-after")
            .map(|(_, v)| v.trim())?;
        let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// Content-Length, if present and a number.
    pub fn content_length(&self) -> Result<Option<usize>, String> {
        match self.headers.iter().find(|(n, _)| n == "content-length") {
            None => Ok(None),
            Some((_, v)) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("bad Content-Length {:?}", v.trim())),
        }
    }
}

/// Values of one header line split at commas outside quotes and angle brackets.
fn split_values(v: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut quoted, mut angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, c) in v.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(v[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// The `;name[=value]` parameters of a header value, white space around `;` and `=`
/// allowed (SEMI, EQUAL).
fn params(v: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    v.split(';').skip(1).map(|p| match p.split_once('=') {
        Some((k, val)) => (k.trim(), Some(val.trim().trim_matches('"'))),
        None => (p.trim(), None),
    })
}

/// Parses one response (a UDP datagram, or a message cut from a TCP stream by
/// [`frame`]).
pub fn parse(bytes: &[u8]) -> Result<Response, String> {
    if bytes.len() > MAX_MESSAGE {
        return Err(format!(
            "{} bytes, over the {MAX_MESSAGE} limit",
            bytes.len()
        ));
    }
    let bytes = &bytes[leading_line_ends(bytes)..];
    let end = header_end(bytes).ok_or("no end of the header (an empty line)")?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "a header that is not UTF-8")?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(format!("not a SIP/2.0 status line: {:?}", cut(status)));
    }
    let code: u16 = parts
        .next()
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .filter(|c| (100..=699).contains(c))
        .ok_or_else(|| format!("no status code 100 to 699 in {:?}", cut(status)))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = headers.last_mut() else {
                return Err("a continuation line before any header".into());
            };
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("a header line without a colon: {:?}", cut(line)))?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(format!("a bad header name: {:?}", cut(line)));
        }
        headers.push((canonical(name), value.trim().to_string()));
    }
    let r = Response {
        code,
        reason,
        headers,
    };
    let body = bytes.len() - end;
    if let Some(len) = r.content_length()? {
        if body < len {
            return Err(format!(
                "a body of {body} bytes, shorter than its Content-Length {len}"
            ));
        }
    }
    Ok(r)
}

fn cut(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Cuts the first message off a TCP stream buffer: `Some((skip, len))` when a whole
/// message is there (`skip` keep-alive bytes before it, then `len` bytes of message),
/// None if more bytes are needed.
pub fn frame(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let skip = leading_line_ends(buf);
    let rest = &buf[skip..];
    let Some(end) = header_end(rest) else {
        return if rest.len() > MAX_MESSAGE {
            Err(format!(
                "{} bytes without the end of a SIP header",
                rest.len()
            ))
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&rest[..end]);
    let mut length = None;
    let mut last: Option<&str> = None;
    for line in head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.starts_with([' ', '\t']) {
            // A folded Content-Length value continues here.
            if last == Some("content-length") && length.is_none() {
                length = line.trim().parse::<usize>().ok();
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            last = None;
            continue;
        };
        if canonical(name.trim()) == "content-length" {
            last = Some("content-length");
            if !value.trim().is_empty() {
                length = Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| format!("bad Content-Length {:?}", value.trim()))?,
                );
            }
        } else {
            last = None;
        }
    }
    let length = length.ok_or("a TCP message without Content-Length")?;
    let total = end + length;
    if total > MAX_MESSAGE {
        return Err(format!(
            "a message of {total} bytes, over the {MAX_MESSAGE} limit"
        ));
    }
    Ok((rest.len() >= total).then_some((skip, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport=5060\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: xyz@host\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn reads_what_rfc_3261_allows() {
        let r = parse(OK.as_bytes()).unwrap();
        assert_eq!(r.code, 200);
        assert_eq!(r.top_via_branch(), Some("z9hG4bKabc"));
        assert_eq!(r.call_id(), Some("xyz@host"));
        assert_eq!(r.cseq(), Some((7, "OPTIONS")));
        // Compact forms in upper case, LWS around = and ;, folding, CRLFs before.
        let odd = "\r\n\r\nsip/2.0 200 OK\r\nV : SIP/2.0/TCP 10.0.0.1:5060 ;Branch = z9hG4bKabc ; rport\r\n , SIP/2.0/UDP 10.0.0.9\r\nI:xyz@host\r\nCSEQ:\r\n 7 OPTIONS\r\nL: 0\r\n\r\n";
        let r = parse(odd.as_bytes()).unwrap();
        assert_eq!(r.top_via_branch(), Some("z9hG4bKabc"));
        assert_eq!(r.values("via").len(), 2);
        assert_eq!(r.call_id(), Some("xyz@host"));
        assert_eq!(r.cseq(), Some((7, "OPTIONS")));
        assert_eq!(r.content_length(), Ok(Some(0)));
        let busy = OK.replace("200 OK", "503 Service Unavailable").replace(
            "Content-Length: 0",
            "Retry-After: 120 (maintenance);duration=3600\r\nContent-Length: 0",
        );
        assert_eq!(parse(busy.as_bytes()).unwrap().retry_after(), Some(120));
    }

    #[test]
    fn refuses_what_is_not_a_response() {
        for bad in [
            "OPTIONS sip:a SIP/2.0\r\n\r\n",
            "SIP/2.0 99 Low\r\n\r\n",
            "SIP/2.0 700 High\r\n\r\n",
            "SIP/2.0 200 OK\r\nno colon here\r\n\r\n",
            "SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "SIP/2.0 200 OK\r\nVia: x",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_a_stream_with_keepalives_and_compact_lengths() {
        let stream = format!(
            "\r\n\r\n{}\r\n\r\n{}",
            OK.replace("Content-Length", "l"),
            OK
        );
        let (skip, len) = frame(stream.as_bytes()).unwrap().unwrap();
        assert_eq!(skip, 4);
        assert!(parse(&stream.as_bytes()[skip..skip + len]).is_ok());
        let rest = &stream.as_bytes()[skip + len..];
        let (skip2, len2) = frame(rest).unwrap().unwrap();
        assert_eq!((skip2, len2), (4, OK.len()));
        assert_eq!(
            frame(&OK.as_bytes()[..30]).unwrap(),
            None,
            "more bytes needed"
        );
        assert!(frame(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n").is_err());
    }
}
