//! `sip`: a SIP OPTIONS ping to a gateway, proxy or server, over UDP or TCP.
//!
//! Each probe is one non-INVITE client transaction of our own: a fresh Via branch, Call-ID
//! and CSeq; over UDP the request is retransmitted on RFC 3261 timer E (500 ms doubling to
//! 4 s) until a final answer or the check's timeout; over TCP it is sent once and the
//! answer framed by Content-Length. A response counts only if its top Via branch, Call-ID
//! and CSeq (number and method) match the request; stray and late responses are counted
//! (`telagent_sip_stray_responses_total`) and ignored. Responses are read by
//! [`super::sip_message`], which takes every framing RFC 3261 allows (CRLF keep-alives,
//! compact and case-insensitive header names, folding, LWS in parameters).
//!
//! - **ok**: a 2xx, or a final code listed in `alive_codes`.
//! - **degraded**: 503, 486 or 480 (`degraded_codes`): alive, no capacity (`no_capacity`).
//! - **fail**: `timeout` (no matching final answer), `connect_refused` (ICMP port
//!   unreachable on UDP, RST on TCP), `bad_response` (only malformed or oversized answers
//!   came back), `closed_early` (TCP closed before a final answer), `unexpected_status`
//!   (any other final code), `dns`, `io_error`.
//!
//! Metrics: `telagent_sip_rtt_seconds{check}` (request to matching final answer, first
//! transmission), `telagent_sip_status_code{check}`, `telagent_sip_stray_responses_total`,
//! `telagent_sip_retry_after_seconds{check}` (a final answer's Retry-After, when it has one).

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::sip_message;
use super::{excerpt, Check, Observation};
use crate::vocab::check_config;

/// Largest SIP message accepted (UDP datagrams cannot be larger anyway).
pub const MAX_MESSAGE: usize = 64 * 1024;
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    Udp,
    Tcp,
}

check_config! {
    /// `[[sip]]`: a SIP element answering OPTIONS.
    SipConfig {
        /// Request-URI: `sip:gw1.example.org:5060`.
        uri: String,
        /// `host:port` to send to; default: the host and port of `uri` (port 5060).
        #[serde(default)]
        target: Option<String>,
        /// `udp` or `tcp`.
        #[serde(default = "default_transport")]
        transport: SipTransport,
        /// Final codes besides 2xx that mean the element is alive and well.
        #[serde(default)]
        alive_codes: Vec<u16>,
        /// Final codes that mean alive but without capacity.
        #[serde(default = "default_degraded_codes")]
        degraded_codes: Vec<u16>,
        /// User part of the From header.
        #[serde(default = "default_from_user")]
        from_user: String,
        /// Find the destination with a DNS SRV lookup of `_sip._udp.<host>` (or `_sip._tcp`),
        /// the URI's host being a domain.
        #[serde(default)]
        srv: bool,
        /// DNS server for the SRV lookup, `ip:port`; default: /etc/resolv.conf's first.
        #[serde(default)]
        dns_server: Option<std::net::SocketAddr>,
    }
}

fn default_transport() -> SipTransport {
    SipTransport::Udp
}
fn default_degraded_codes() -> Vec<u16> {
    vec![503, 486, 480]
}
fn default_from_user() -> String {
    "telagent".into()
}

impl SipConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let host_port = uri_host_port(&self.uri).ok_or((
            "uri",
            format!(
                "`{}` is not a sip: URI such as \"sip:gw1.example.org:5060\"",
                self.uri
            ),
        ))?;
        if self.srv && self.target.is_some() {
            return Err((
                "srv",
                "srv and target exclude each other: SRV finds the target".into(),
            ));
        }
        let target = self.target.clone().unwrap_or(host_port);
        if !crate::net::is_host_port(&target) {
            return Err(("target", format!("`{target}` is not host:port")));
        }
        for (key, codes) in [
            ("alive_codes", &self.alive_codes),
            ("degraded_codes", &self.degraded_codes),
        ] {
            if let Some(c) = codes.iter().find(|c| !(200..=699).contains(*c)) {
                return Err((
                    key,
                    format!("{c} is not a final SIP status code (200 to 699)"),
                ));
            }
        }
        if self.from_user.is_empty()
            || !self
                .from_user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err((
                "from_user",
                "must be letters, digits, '-', '_' or '.'".into(),
            ));
        }
        Ok(())
    }

    /// Where requests go.
    pub fn destination(&self) -> String {
        self.target
            .clone()
            .or_else(|| uri_host_port(&self.uri))
            .unwrap_or_default()
    }
}

/// `host:port` of a `sip:` URI (port 5060 when absent).
pub fn uri_host_port(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("sip:")?;
    let rest = rest.split_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split([';', '?']).next()?;
    if hostport.is_empty() || hostport.contains(char::is_whitespace) {
        return None;
    }
    let has_port = match hostport.rsplit_once(':') {
        Some((h, p)) => {
            !h.ends_with(':')
                && !h.is_empty()
                && p.parse::<u16>().is_ok()
                && (!h.contains(':') || h.ends_with(']'))
        }
        None => false,
    };
    Some(if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:5060")
    })
}

/// The identifiers of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub branch: String,
    pub call_id: String,
    pub cseq: u32,
}

impl Transaction {
    /// Fresh random identifiers.
    pub fn new() -> Self {
        Transaction {
            branch: format!("z9hG4bK{}", token()),
            call_id: format!("{}@telagent", token()),
            cseq: (random() % 1_000_000) as u32 + 1,
        }
    }

    /// The OPTIONS request, as bytes on the wire.
    pub fn request(
        &self,
        uri: &str,
        local: SocketAddr,
        transport: SipTransport,
        from_user: &str,
    ) -> Vec<u8> {
        let proto = match transport {
            SipTransport::Udp => "UDP",
            SipTransport::Tcp => "TCP",
        };
        format!(
            "OPTIONS {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{proto} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{from_user}@{ip}>;tag={tag}\r\n\
             To: <{uri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} OPTIONS\r\n\
             Contact: <sip:{from_user}@{local};transport={t}>\r\n\
             Accept: application/sdp\r\n\
             User-Agent: telagent/{version}\r\n\
             Content-Length: 0\r\n\r\n",
            branch = self.branch,
            ip = local.ip(),
            tag = token(),
            call_id = self.call_id,
            cseq = self.cseq,
            t = proto.to_ascii_lowercase(),
            version = env!("CARGO_PKG_VERSION"),
        )
        .into_bytes()
    }
}

impl Default for Transaction {
    fn default() -> Self {
        Self::new()
    }
}

/// What one received message is to our transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Our final answer, with its Retry-After (seconds) if it has one.
    Final(u16, Option<u32>),
    /// Our provisional answer (1xx): keep waiting.
    Provisional(u16),
    /// A well-formed response to something else (wrong branch, Call-ID or CSeq).
    Stray(String),
    /// Not a SIP response we can read.
    Malformed(String),
}

/// Parses a message and matches it against `t`: its top Via branch, Call-ID and CSeq
/// (number, and method OPTIONS: methods are case-sensitive, RFC 3261 §7.1).
pub fn classify(bytes: &[u8], t: &Transaction) -> Match {
    let resp = match sip_message::parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            let start = &bytes[sip_message::leading_line_ends(bytes)..];
            return Match::Malformed(format!("{e}; starts {:?}", excerpt(start, 40)));
        }
    };
    let Some((seq, method)) = resp.cseq() else {
        return Match::Malformed("response without a readable CSeq".into());
    };
    let call_id = resp.call_id();
    let ours = resp.top_via_branch() == Some(t.branch.as_str())
        && call_id == Some(t.call_id.as_str())
        && seq == t.cseq
        && method == "OPTIONS";
    if !ours {
        return Match::Stray(format!(
            "{} for Call-ID {}",
            resp.code,
            call_id.unwrap_or("?")
        ));
    }
    if resp.code < 200 {
        Match::Provisional(resp.code)
    } else {
        Match::Final(resp.code, resp.retry_after())
    }
}

fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn token() -> String {
    format!("{:016x}", random())
}

pub struct SipCheck {
    config: SipConfig,
    /// Our own deadline, a little inside the scheduler's timeout, so that the outcome
    /// (retransmissions, strays) is ours to report.
    wait: Duration,
    stray: AtomicU64,
    /// The UDP socket of the last probe, connected to its destination, with that probe's
    /// transaction (a late answer to it is ours, not a stray): one socket for the check's
    /// life instead of one per probe. A probe cut short by the timeout takes it along.
    udp: std::sync::Mutex<Option<(UdpSocket, SocketAddr, Transaction)>>,
}

impl SipCheck {
    pub fn new(config: SipConfig, timeout: Duration) -> Self {
        SipCheck {
            config,
            wait: timeout.mul_f64(0.9),
            stray: AtomicU64::new(0),
            udp: std::sync::Mutex::new(None),
        }
    }

    /// The check's UDP socket to `dest` (its previous transaction with it), or a new one.
    async fn udp_socket(
        &self,
        dest: SocketAddr,
    ) -> Result<(UdpSocket, Option<Transaction>), Observation> {
        let kept = self
            .udp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((sock, _, prev)) = kept.filter(|(_, to, _)| *to == dest) {
            // An ICMP error left over from an earlier probe says nothing about this one.
            if sock.take_error().is_ok() {
                return Ok((sock, Some(prev)));
            }
        }
        let bind: SocketAddr = if dest.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(bind)
            .await
            .map_err(|e| Observation::fail("io_error", format!("cannot open a UDP socket: {e}")))?;
        // Connected: ICMP port unreachable comes back as ECONNREFUSED.
        sock.connect(dest)
            .await
            .map_err(|e| Observation::fail("io_error", format!("cannot send to {dest}: {e}")))?;
        Ok((sock, None))
    }

    fn judge(&self, code: u16, retry_after: Option<u32>, rtt: Duration) -> Observation {
        let c = &self.config;
        let what = format!(
            "{} answered {code} in {:.1} ms{}",
            c.uri,
            rtt.as_secs_f64() * 1000.0,
            retry_after
                .map(|s| format!(", Retry-After {s} s"))
                .unwrap_or_default()
        );
        let obs = if (200..300).contains(&code) || c.alive_codes.contains(&code) {
            Observation::ok(what)
        } else if c.degraded_codes.contains(&code) {
            Observation::degraded("no_capacity", what)
        } else {
            Observation::fail("unexpected_status", what)
        };
        let obs = obs
            .with_value(
                "rtt_seconds",
                "Round trip of the last OPTIONS to its final answer.",
                rtt.as_secs_f64(),
            )
            .with_value(
                "status_code",
                "Status code of the last final answer.",
                code.into(),
            );
        match retry_after {
            Some(s) => obs.with_value(
                "retry_after_seconds",
                "Retry-After of the last final answer (a 503 says when to come back).",
                s.into(),
            ),
            None => obs,
        }
    }

    fn with_stray(&self, obs: Observation) -> Observation {
        obs.with_value(
            "stray_responses_total",
            "Responses that matched no request of ours (wrong branch, Call-ID or CSeq), ignored.",
            self.stray.load(Ordering::Relaxed) as f64,
        )
    }

    async fn udp(&self, dest: SocketAddr, t: &Transaction) -> Observation {
        let (sock, prev) = match self.udp_socket(dest).await {
            Ok(s) => s,
            Err(obs) => return obs,
        };
        let obs = self.exchange(&sock, dest, t, prev.as_ref()).await;
        *self
            .udp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((sock, dest, t.clone()));
        obs
    }

    /// One transaction over the check's socket; an answer to `prev` (the last probe's
    /// transaction, answered late or twice) is ignored.
    async fn exchange(
        &self,
        sock: &UdpSocket,
        dest: SocketAddr,
        t: &Transaction,
        prev: Option<&Transaction>,
    ) -> Observation {
        let c = &self.config;
        let local = sock
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let request = t.request(&c.uri, local, SipTransport::Udp, &c.from_user);
        let start = Instant::now();
        let deadline = start + self.wait;
        let mut interval = T1;
        let mut next_send = start;
        let mut sent = 0u32;
        let mut malformed = None;
        // Filled from the kernel as it is, never zeroed first: an answer is read whole,
        // up to MAX_MESSAGE bytes.
        let mut buf = Vec::with_capacity(MAX_MESSAGE);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return self.no_answer(sent, malformed);
            }
            if now >= next_send {
                if let Err(e) = sock.send(&request).await {
                    return refused_or_io(e, &dest.to_string());
                }
                sent += 1;
                next_send = now + interval;
                interval = (interval * 2).min(T2);
            }
            let until = next_send.min(deadline);
            buf.clear();
            match tokio::time::timeout_at(until, sock.recv_buf(&mut buf)).await {
                Err(_) => continue,
                Ok(Err(e)) => return refused_or_io(e, &dest.to_string()),
                Ok(Ok(_)) => {}
            }
            match classify(&buf, t) {
                Match::Final(code, retry) => return self.judge(code, retry, start.elapsed()),
                // RFC 3261 17.1.2.2: after a provisional answer, retransmit every T2.
                Match::Provisional(_) => interval = T2,
                Match::Stray(_)
                    if prev.is_some_and(|p| !matches!(classify(&buf, p), Match::Stray(_))) => {}
                Match::Stray(_) => {
                    self.stray.fetch_add(1, Ordering::Relaxed);
                }
                Match::Malformed(why) => malformed = Some(why),
            }
        }
    }

    async fn tcp(&self, dest: SocketAddr, t: &Transaction) -> Observation {
        let c = &self.config;
        let start = Instant::now();
        let deadline = start + self.wait;
        let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(dest)).await {
            Err(_) => return self.no_answer(0, None),
            Ok(Err(e)) => return refused_or_io(e, &dest.to_string()),
            Ok(Ok(s)) => s,
        };
        let local = stream.local_addr().unwrap_or(dest);
        let request = t.request(&c.uri, local, SipTransport::Tcp, &c.from_user);
        if let Err(e) = stream.write_all(&request).await {
            return refused_or_io(e, &dest.to_string());
        }
        let mut pending = Vec::new();
        let mut buf = [0u8; 8192];
        let mut malformed = None;
        loop {
            while let Some((skip, len)) = match sip_message::frame(&pending) {
                Ok(found) => found,
                Err(why) => return Observation::fail("bad_response", format!("{dest}: {why}")),
            } {
                pending.drain(..skip);
                let message: Vec<u8> = pending.drain(..len).collect();
                match classify(&message, t) {
                    Match::Final(code, retry) => return self.judge(code, retry, start.elapsed()),
                    Match::Provisional(_) => {}
                    Match::Stray(_) => {
                        self.stray.fetch_add(1, Ordering::Relaxed);
                    }
                    Match::Malformed(why) => malformed = Some(why),
                }
            }
            let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return self.no_answer(1, malformed),
                Ok(Err(e)) => return refused_or_io(e, &dest.to_string()),
                Ok(Ok(0)) => {
                    return Observation::fail(
                        if malformed.is_some() {
                            "bad_response"
                        } else {
                            "closed_early"
                        },
                        format!(
                            "{dest} closed the connection without a final answer{}",
                            malformed
                                .map(|m| format!(" (malformed: {m})"))
                                .unwrap_or_default()
                        ),
                    )
                }
                Ok(Ok(n)) => n,
            };
            pending.extend_from_slice(&buf[..n]);
        }
    }

    /// `target:port` of the best SRV record of the URI's domain.
    async fn srv_destination(&self) -> Result<String, crate::dns::DnsError> {
        let c = &self.config;
        let host_port = c.destination();
        let domain = host_port
            .rsplit_once(':')
            .map_or(host_port.as_str(), |(h, _)| h);
        let proto = match c.transport {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
        };
        let name = format!("_sip._{proto}.{domain}");
        let records = crate::dns::lookup_srv(&name, c.dns_server, self.wait / 3).await?;
        let best = records.first().ok_or(crate::dns::DnsError::NoRecord {
            name,
            what: "only the \".\" target (service not offered)".into(),
        })?;
        Ok(format!("{}:{}", best.target, best.port))
    }

    fn no_answer(&self, sent: u32, malformed: Option<String>) -> Observation {
        let wait = humantime::format_duration(self.wait);
        match malformed {
            Some(why) => Observation::fail(
                "bad_response",
                format!("{}: only malformed answers within {wait}: {why}", self.config.uri),
            ),
            None => Observation::fail(
                crate::checks::TIMEOUT,
                format!(
                    "{}: no matching final answer within {wait} ({sent} transmissions, {} stray responses so far)",
                    self.config.uri,
                    self.stray.load(Ordering::Relaxed)
                ),
            ),
        }
    }
}

fn refused_or_io(e: std::io::Error, dest: &str) -> Observation {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Observation::fail(
            "connect_refused",
            format!("{dest} refused: nothing listens there (ICMP port unreachable or RST)"),
        )
    } else {
        Observation::fail("io_error", format!("{dest}: {e}"))
    }
}

#[async_trait]
impl Check for SipCheck {
    fn kind(&self) -> &'static str {
        "sip"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &[
            "no_capacity",
            "connect_refused",
            "bad_response",
            "closed_early",
            "unexpected_status",
            "dns",
            "io_error",
        ]
    }

    async fn probe(&self) -> Observation {
        let dest_name = if self.config.srv {
            match self.srv_destination().await {
                Ok(d) => d,
                Err(e) => return self.with_stray(Observation::fail("dns", e.to_string())),
            }
        } else {
            self.config.destination()
        };
        let dest = match tokio::net::lookup_host(&dest_name)
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a,
            Ok(None) => {
                return self.with_stray(Observation::fail(
                    "dns",
                    format!("{dest_name} resolves to no address"),
                ))
            }
            Err(e) => {
                return self.with_stray(Observation::fail(
                    "dns",
                    format!("cannot resolve {dest_name}: {e}"),
                ))
            }
        };
        let t = Transaction::new();
        let obs = match self.config.transport {
            SipTransport::Udp => self.udp(dest, &t).await,
            SipTransport::Tcp => self.tcp(dest, &t).await,
        };
        self.with_stray(obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UAS on UDP as RFC 3261 8.2.6 has it: the answer copies Via, From, Call-ID and
    /// CSeq, and tags To. It answers each request twice (as it answers a retransmission);
    /// before its second answer it also sends one for a Call-ID nobody used.
    #[tokio::test]
    async fn one_socket_serves_every_probe_and_a_late_answer_is_not_a_stray() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let uas = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_MESSAGE];
            let mut ports = Vec::new();
            for n in 0..2 {
                let (len, from) = server.recv_from(&mut buf).await.unwrap();
                ports.push(from.port());
                let req = String::from_utf8_lossy(&buf[..len]).into_owned();
                let h = |name: &str| {
                    req.lines()
                        .find(|l| l.starts_with(name))
                        .unwrap_or_default()
                        .to_string()
                };
                let answer = |call_id: &str| {
                    format!(
                        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=uas\r\n{call_id}\r\n{}\r\nContent-Length: 0\r\n\r\n",
                        h("Via:"),
                        h("From:"),
                        h("To:"),
                        h("CSeq:")
                    )
                };
                if n == 1 {
                    let stray = answer("Call-ID: nobody@elsewhere");
                    server.send_to(stray.as_bytes(), from).await.unwrap();
                }
                let ok = answer(&h("Call-ID:"));
                for _ in 0..2 {
                    server.send_to(ok.as_bytes(), from).await.unwrap();
                }
            }
            ports
        });
        let config: SipConfig =
            toml::from_str(&format!("name = \"gw\"\nuri = \"sip:{addr}\"\n")).unwrap();
        let check = SipCheck::new(config, Duration::from_secs(2));
        for _ in 0..2 {
            let obs = check.probe().await;
            assert_eq!(obs.status, super::super::Status::Ok, "{}", obs.detail);
        }
        let ports = uas.await.unwrap();
        assert_eq!(ports[0], ports[1], "the same socket for both probes");
        // The second answer to the first probe is its own, late; the foreign one is a stray.
        assert_eq!(check.stray.load(Ordering::Relaxed), 1);
    }

    fn reply(t: &Transaction, code: &str, branch: &str, call_id: &str, cseq: u32) -> Vec<u8> {
        let _ = t;
        format!(
            "SIP/2.0 {code}\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport=5999\r\nFrom: <sip:telagent@127.0.0.1>;tag=a\r\nTo: <sip:gw>;tag=b\r\nCall-ID: {call_id}\r\nCSeq: {cseq} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn matching_needs_branch_call_id_and_cseq() {
        let t = Transaction::new();
        let ok = reply(&t, "200 OK", &t.branch, &t.call_id, t.cseq);
        assert_eq!(classify(&ok, &t), Match::Final(200, None));
        assert_eq!(
            classify(&reply(&t, "100 Trying", &t.branch, &t.call_id, t.cseq), &t),
            Match::Provisional(100)
        );
        assert_eq!(
            classify(
                &reply(&t, "503 Service Unavailable", &t.branch, &t.call_id, t.cseq),
                &t
            ),
            Match::Final(503, None)
        );
        for stray in [
            reply(&t, "200 OK", "z9hG4bKother", &t.call_id, t.cseq),
            reply(&t, "200 OK", &t.branch, "other@host", t.cseq),
            reply(&t, "200 OK", &t.branch, &t.call_id, t.cseq + 1),
        ] {
            assert!(matches!(classify(&stray, &t), Match::Stray(_)));
        }
    }

    #[test]
    fn malformed_and_oversized_are_not_panics() {
        let t = Transaction::new();
        assert!(matches!(
            classify(b"HTTP/1.1 200 OK\r\n\r\n", &t),
            Match::Malformed(_)
        ));
        assert!(matches!(
            classify(b"\x00\xff\xfe garbage", &t),
            Match::Malformed(_)
        ));
        assert!(matches!(
            classify(&vec![b'a'; MAX_MESSAGE + 1], &t),
            Match::Malformed(_)
        ));
        let mut rng = crate::testing::Lcg(7);
        for _ in 0..2000 {
            let len = (rng.next_u64() % 300) as usize;
            let bytes = rng.bytes(len);
            let _ = classify(&bytes, &t);
            let _ = sip_message::frame(&bytes);
        }
    }

    #[test]
    fn our_request_is_valid_sip() {
        let t = Transaction::new();
        let bytes = t.request(
            "sip:gw1.example.org:5060",
            "127.0.0.1:5999".parse().unwrap(),
            SipTransport::Udp,
            "telagent",
        );
        // As a server would see it: a request line, then our identifiers in the headers.
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("OPTIONS sip:gw1.example.org:5060 SIP/2.0\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        let as_response = text.replacen(
            "OPTIONS sip:gw1.example.org:5060 SIP/2.0",
            "SIP/2.0 200 OK",
            1,
        );
        assert_eq!(
            classify(as_response.as_bytes(), &t),
            Match::Final(200, None)
        );
        // Two requests never share identifiers.
        let u = Transaction::new();
        assert!(u.branch != t.branch && u.call_id != t.call_id);
    }

    #[test]
    fn two_thousand_legal_responses_from_the_grammar_are_accepted_and_matched() {
        for seed in 0..2000u64 {
            crate::fuzz::sip_grammar(&seed.to_le_bytes());
        }
    }

    #[test]
    fn retry_after_is_read() {
        let t = Transaction::new();
        let busy = String::from_utf8(reply(
            &t,
            "503 Service Unavailable",
            &t.branch,
            &t.call_id,
            t.cseq,
        ))
        .unwrap()
        .replace("Content-Length", "Retry-After: 300\r\nContent-Length");
        assert_eq!(classify(busy.as_bytes(), &t), Match::Final(503, Some(300)));
    }

    #[test]
    fn tcp_framing() {
        use sip_message::frame;
        let msg = b"SIP/2.0 200 OK\r\nContent-Length: 4\r\n\r\nabcdSIP/2.0";
        assert_eq!(frame(msg), Ok(Some((0, msg.len() - 7))));
        assert_eq!(
            frame(b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
            Ok(None)
        );
        assert!(frame(b"SIP/2.0 200 OK\r\n\r\n").is_err());
        assert!(frame(b"SIP/2.0 200 OK\r\nl: 99999999\r\n\r\n").is_err());
        assert!(frame(b"SIP/2.0 200 OK\r\nL: 99999999\r\n\r\n").is_err());
        assert!(frame(&vec![b'a'; MAX_MESSAGE + 1]).is_err());
    }

    #[test]
    fn uris() {
        assert_eq!(
            uri_host_port("sip:gw1.example.org").as_deref(),
            Some("gw1.example.org:5060")
        );
        assert_eq!(
            uri_host_port("sip:ping@127.0.0.1:15060;transport=udp").as_deref(),
            Some("127.0.0.1:15060")
        );
        assert_eq!(
            uri_host_port("sip:[::1]:5070").as_deref(),
            Some("[::1]:5070")
        );
        assert_eq!(uri_host_port("http://x"), None);
        assert_eq!(uri_host_port("sip:"), None);
    }
}
