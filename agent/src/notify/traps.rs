//! SNMP notifications on the wire: v2c and v3 (USM authPriv) traps and informs, one
//! receiver per [`Sender`].
//!
//! A trap is delivered once it is sent. An inform is delivered when the receiver's
//! Response arrives (matched on request id, and for v3 on message id and a valid HMAC).
//! For v3 informs the receiver is the authoritative engine: its engine id, boots and time
//! are discovered first (an empty request answered by a Report), and learnt again from a
//! notInTimeWindow Report. For v3 traps this agent is authoritative: its own engine id,
//! and boots persisted across restarts by the caller.

use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::{Notification, ReceiverConfig, Version};
use crate::snmp::ber::{self, BerError, Reader, Val, VarBind};
use crate::snmp::mib;
use crate::snmp::usm::Keys;

/// This agent's SNMP engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub id: Vec<u8>,
    pub boots: u32,
    pub started: Instant,
}

impl Engine {
    /// snmpEngineTime: seconds since this start.
    pub fn time(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// sysUpTime in hundredths of a second.
    pub fn uptime_ticks(&self) -> u32 {
        (self.started.elapsed().as_millis() / 10) as u32
    }
}

/// The default engine id (RFC 3411 format 4, text): the enterprise and the server name.
pub fn default_engine_id(server: &str) -> Vec<u8> {
    let pen = mib::ENTERPRISE[6] | 0x8000_0000;
    let mut id = pen.to_be_bytes().to_vec();
    id.push(4);
    id.extend(server.bytes().take(27));
    id
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A trap left this host.
    Sent,
    /// An inform was acknowledged.
    Acked,
    /// No acknowledgement within the timeout (or the receiver's port is closed).
    NoAnswer(String),
    /// The receiver refused our credentials (v3 Report).
    AuthFailed(String),
}

/// usmStats counters a receiver reports (1.3.6.1.6.3.15.1.1.N.0).
const USM_STATS: [u32; 9] = [1, 3, 6, 1, 6, 3, 15, 1, 1];

fn usm_stat(vbs: &[VarBind]) -> Option<u32> {
    vbs.iter()
        .find(|(o, _)| o.len() == 11 && o[..9] == USM_STATS)
        .map(|(o, _)| o[9])
}

/// The varbinds of a notification: sysUpTime, snmpTrapOID, then its objects.
pub fn varbinds(n: &Notification, uptime: u32) -> Vec<VarBind> {
    let mut v = vec![
        (mib::SYS_UP_TIME.to_vec(), Val::TimeTicks(uptime)),
        (
            mib::SNMP_TRAP_OID.to_vec(),
            Val::Oid(mib::notification_oid(n.kind.number())),
        ),
        (
            mib::notify_object(1),
            Val::Str(n.target.clone().into_bytes()),
        ),
        (mib::notify_object(2), Val::Int(n.state.mib_value())),
        (
            mib::notify_object(3),
            Val::Str(ber::cut(&n.reason, 255).as_bytes().to_vec()),
        ),
        (mib::notify_object(4), Val::Int(n.severity as i64)),
        (
            mib::notify_object(5),
            Val::Str(n.server.clone().into_bytes()),
        ),
    ];
    if let Some(count) = n.suppressed {
        v.push((mib::notify_object(6), Val::Gauge32(count)));
    }
    if let Some(count) = n.dropped {
        v.push((mib::notify_object(10), Val::Gauge32(count)));
    }
    v.push((mib::notify_object(7), Val::Str(date_and_time(n.time))));
    v.push((mib::notify_object(8), Val::Counter64(n.sequence)));
    v.push((
        mib::notify_object(9),
        Val::Str(ber::cut(&n.check_kind, 32).as_bytes().to_vec()),
    ));
    v
}

/// DateAndTime (SNMPv2-TC), in UTC with the direction and offset fields: 11 octets.
pub fn date_and_time(t: std::time::SystemTime) -> Vec<u8> {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // humantime renders UTC as RFC 3339: 2026-12-01T17:14:00.123Z.
    let text = humantime::format_rfc3339_millis(t).to_string();
    let num =
        |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
    let year = num(0..4);
    let deci = (d.subsec_millis() / 100) as u8;
    vec![
        (year >> 8) as u8,
        year as u8,
        num(5..7) as u8,
        num(8..10) as u8,
        num(11..13) as u8,
        num(14..16) as u8,
        num(17..19) as u8,
        deci,
        b'+',
        0,
        0,
    ]
}

/// A v2c message.
pub fn v2c(community: &str, tag: u8, request_id: i32, vbs: &[VarBind]) -> Vec<u8> {
    ber::seq(&[
        &ber::int(1),
        &ber::octets(community.as_bytes()),
        &ber::pdu(tag, request_id, vbs),
    ])
}

/// The security parameters and flags of a v3 message.
pub struct Security<'a> {
    pub engine_id: &'a [u8],
    pub boots: u32,
    pub time: u32,
    pub user: &'a [u8],
    /// authPriv with these keys; None is noAuthNoPriv.
    pub keys: Option<&'a Keys>,
    pub salt: u64,
    pub reportable: bool,
}

/// A v3 message around a scoped PDU, authenticated and encrypted with `s.keys`.
pub fn v3(msg_id: i32, s: &Security<'_>, scoped: &[u8]) -> Vec<u8> {
    let salt = s.salt.to_be_bytes();
    let (auth, privacy, data) = match s.keys {
        Some(k) => (
            vec![0u8; k.auth.mac_len()],
            salt.to_vec(),
            ber::octets(&k.encrypt(s.boots, s.time, &salt, scoped)),
        ),
        None => (Vec::new(), Vec::new(), scoped.to_vec()),
    };
    let head = [
        ber::octets(s.engine_id),
        ber::int(s.boots.into()),
        ber::int(s.time.into()),
        ber::octets(s.user),
    ]
    .concat();
    let usm_content = [head.clone(), ber::octets(&auth), ber::octets(&privacy)].concat();
    let usm = ber::tlv(ber::SEQUENCE, &usm_content);
    let auth_in_usm = ber::header_len(usm_content.len()) + head.len() + ber::header_len(auth.len());
    let flags = (u8::from(s.keys.is_some()) * 3) | if s.reportable { 4 } else { 0 };
    let version = ber::int(3);
    let global = ber::seq(&[
        &ber::int(msg_id.into()),
        &ber::int(65507),
        &ber::octets(&[flags]),
        &ber::int(3),
    ]);
    let usm_os = ber::octets(&usm);
    let content_len = version.len() + global.len() + usm_os.len() + data.len();
    let mut msg = ber::seq(&[&version, &global, &usm_os, &data]);
    if let Some(k) = s.keys {
        let at = ber::header_len(content_len)
            + version.len()
            + global.len()
            + ber::header_len(usm.len())
            + auth_in_usm;
        let mac = k.mac(&msg);
        msg[at..at + mac.len()].copy_from_slice(&mac);
    }
    msg
}

/// A scoped PDU: context engine id, empty context name, PDU.
pub fn scoped(context_engine: &[u8], pdu: &[u8]) -> Vec<u8> {
    ber::seq(&[&ber::octets(context_engine), &ber::octets(b""), pdu])
}

/// A v3 message as received.
#[derive(Debug)]
pub struct Incoming {
    pub msg_id: i32,
    pub flags: u8,
    pub engine_id: Vec<u8>,
    pub boots: u32,
    pub time: u32,
    pub auth: Vec<u8>,
    /// Offset of the authentication parameter in the message.
    pub auth_at: usize,
    pub privacy: Vec<u8>,
    /// The scoped PDU, or its encryption.
    pub data: Vec<u8>,
}

pub fn parse_v3(msg: &[u8]) -> Result<Incoming, BerError> {
    let mut outer = Reader::new(msg);
    let (_, content, base) = outer.next_tlv()?;
    let mut r = Reader::new(content);
    if r.int()? != 3 {
        return Err(BerError::Malformed("version"));
    }
    let mut g = r.seq()?;
    let msg_id = i32::try_from(g.int()?).map_err(|_| BerError::Malformed("msgID"))?;
    g.int()?;
    let flags = *g.octets()?.first().ok_or(BerError::Malformed("msgFlags"))?;
    let (tag, usm_bytes, usm_at) = r.next_tlv()?;
    if tag != ber::OCTET_STRING {
        return Err(BerError::Malformed("security parameters"));
    }
    let mut u = Reader::new(usm_bytes);
    let (_, usm, seq_at) = u.next_tlv()?;
    let mut p = Reader::new(usm);
    let engine_id = p.octets()?.to_vec();
    let num = |v: i64| u32::try_from(v).map_err(|_| BerError::Malformed("boots or time"));
    let boots = num(p.int()?)?;
    let time = num(p.int()?)?;
    p.octets()?;
    let (_, auth, auth_rel) = p.next_tlv()?;
    let privacy = p.octets()?.to_vec();
    let (tag, data, _) = r.next_tlv()?;
    let data = if tag == ber::OCTET_STRING {
        data.to_vec()
    } else {
        ber::tlv(tag, data)
    };
    Ok(Incoming {
        msg_id,
        flags,
        engine_id,
        boots,
        time,
        auth: auth.to_vec(),
        auth_at: base + usm_at + seq_at + auth_rel,
        privacy,
        data,
    })
}

/// The PDU of a scoped PDU.
fn scoped_pdu(scoped: &[u8]) -> Result<ber::Pdu, BerError> {
    let mut r = Reader::new(scoped);
    let mut s = r.seq()?;
    s.octets()?;
    s.octets()?;
    let (tag, content, _) = s.next_tlv()?;
    ber::decode_pdu(&ber::tlv(tag, content))
}

/// The PDU of an incoming v3 message: checks its HMAC and decrypts it when flagged.
pub fn open_v3(msg: &[u8], inc: &Incoming, keys: Option<&Keys>) -> Result<ber::Pdu, String> {
    let plain = match (inc.flags & 3, keys) {
        (0, _) => inc.data.clone(),
        (_, None) => return Err("authenticated answer to an unauthenticated request".into()),
        (flags, Some(k)) => {
            let mut zeroed = msg.to_vec();
            let end = inc.auth_at + inc.auth.len();
            if end > zeroed.len() {
                return Err("authentication parameter out of the message".into());
            }
            zeroed[inc.auth_at..end].fill(0);
            if !same_mac(&k.mac(&zeroed), &inc.auth) {
                return Err("answer with a wrong HMAC".into());
            }
            if flags & 2 == 0 {
                inc.data.clone()
            } else {
                let salt: [u8; 8] = inc
                    .privacy
                    .as_slice()
                    .try_into()
                    .map_err(|_| "privacy parameter is not 8 bytes".to_string())?;
                k.decrypt(inc.boots, inc.time, &salt, &inc.data)
            }
        }
    };
    scoped_pdu(&plain).map_err(|e| e.to_string())
}

/// Compares two MACs in time that depends on their length only, never on where they differ.
fn same_mac(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a receiver's engine said of itself, and when.
#[derive(Clone)]
struct Remote {
    engine_id: Vec<u8>,
    boots: u32,
    time: u32,
    at: Instant,
    keys: Keys,
}

/// Delivers notifications to one receiver.
pub struct Sender {
    pub config: ReceiverConfig,
    socket: Option<UdpSocket>,
    next_id: i32,
    /// Our keys for v3 traps (localized to our engine id).
    local_keys: Option<Keys>,
    remote: Option<Remote>,
    /// Answers dropped because their HMAC was wrong.
    pub forged: u64,
}

impl Sender {
    pub fn new(config: ReceiverConfig) -> Sender {
        Sender {
            config,
            socket: None,
            next_id: (std::process::id() as i32 & 0x7fff) << 16,
            local_keys: None,
            remote: None,
            forged: 0,
        }
    }

    fn id(&mut self) -> i32 {
        self.next_id = self.next_id.wrapping_add(1) & 0x7fff_ffff;
        self.next_id
    }

    async fn socket(&mut self) -> Result<&UdpSocket, String> {
        if self.socket.is_none() {
            let addr = tokio::net::lookup_host(&self.config.address)
                .await
                .map_err(|e| format!("cannot resolve {}: {e}", self.config.address))?
                .next()
                .ok_or_else(|| format!("{} has no address", self.config.address))?;
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(bind)
                .await
                .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
            s.connect(addr)
                .await
                .map_err(|e| format!("cannot reach {addr}: {e}"))?;
            self.socket = Some(s);
        }
        self.socket.as_ref().ok_or_else(|| "no socket".to_string())
    }

    /// Sends and, for a request, waits for the datagram `accept` takes.
    async fn exchange<T>(
        &mut self,
        msg: &[u8],
        timeout: Duration,
        accept: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<T, String> {
        let sock = self.socket().await?;
        if let Err(e) = sock.send(msg).await {
            self.socket = None;
            return Err(format!("cannot send to {}: {e}", self.config.address));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let sock = self.socket().await?;
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    return Err(format!(
                        "no answer from {} within {timeout:?}",
                        self.config.address
                    ))
                }
                Ok(Err(e)) => {
                    // ECONNREFUSED: the receiver's port is closed (ICMP port unreachable).
                    self.socket = None;
                    return Err(format!("{}: {e}", self.config.address));
                }
                Ok(Ok(n)) => {
                    if let Some(t) = accept(&buf[..n]) {
                        return Ok(t);
                    }
                }
            }
        }
    }

    /// One delivery attempt of `n`.
    pub async fn deliver(
        &mut self,
        n: &Notification,
        engine: &Engine,
        timeout: Duration,
    ) -> Outcome {
        let vbs = varbinds(n, engine.uptime_ticks());
        let inform = self.config.inform;
        let tag = if inform { ber::INFORM } else { ber::TRAP_V2 };
        match self.config.version {
            Version::V2c => {
                let rid = self.id();
                let msg = v2c(
                    self.config.community.as_deref().unwrap_or("public"),
                    tag,
                    rid,
                    &vbs,
                );
                if !inform {
                    return match self.exchange_send(&msg).await {
                        Ok(()) => Outcome::Sent,
                        Err(e) => Outcome::NoAnswer(e),
                    };
                }
                let acked = self
                    .exchange(&msg, timeout, |b| {
                        let mut r = Reader::new(b);
                        let mut s = r.seq().ok()?;
                        s.int().ok()?;
                        s.octets().ok()?;
                        let (t, c, _) = s.next_tlv().ok()?;
                        let p = ber::decode_pdu(&ber::tlv(t, c)).ok()?;
                        (p.tag == ber::RESPONSE && p.request_id == rid).then_some(())
                    })
                    .await;
                match acked {
                    Ok(()) => Outcome::Acked,
                    Err(e) => Outcome::NoAnswer(e),
                }
            }
            Version::V3 if !inform => {
                let keys = self.local_keys(&engine.id).clone();
                let rid = self.id();
                let pdu = ber::pdu(tag, rid, &vbs);
                let msg_id = self.id();
                let msg = v3(
                    msg_id,
                    &Security {
                        engine_id: &engine.id,
                        boots: engine.boots,
                        time: engine.time(),
                        user: self.config.user.as_deref().unwrap_or("").as_bytes(),
                        keys: Some(&keys),
                        salt: salt(),
                        reportable: false,
                    },
                    &scoped(&engine.id, &pdu),
                );
                match self.exchange_send(&msg).await {
                    Ok(()) => Outcome::Sent,
                    Err(e) => Outcome::NoAnswer(e),
                }
            }
            Version::V3 => self.inform_v3(&vbs, timeout).await,
        }
    }

    async fn exchange_send(&mut self, msg: &[u8]) -> Result<(), String> {
        let sock = self.socket().await?;
        let sent = sock.send(msg).await;
        sent.map(|_| ()).map_err(|e| {
            self.socket = None;
            format!("cannot send to {}: {e}", self.config.address)
        })
    }

    fn local_keys(&mut self, engine_id: &[u8]) -> &Keys {
        let c = &self.config;
        self.local_keys.get_or_insert_with(|| {
            Keys::new(
                c.auth.unwrap_or(crate::snmp::usm::Auth::Sha256),
                c.auth_password.as_deref().unwrap_or(""),
                c.priv_password.as_deref().unwrap_or(""),
                engine_id,
            )
        })
    }

    /// Learns the receiver's engine id, boots and time from the Report to an empty request.
    async fn discover(&mut self, timeout: Duration) -> Result<(), String> {
        let msg_id = self.id();
        let rid = self.id();
        let msg = v3(
            msg_id,
            &Security {
                engine_id: b"",
                boots: 0,
                time: 0,
                user: b"",
                keys: None,
                salt: 0,
                reportable: true,
            },
            &scoped(b"", &ber::pdu(ber::GET, rid, &[])),
        );
        let inc = self
            .exchange(&msg, timeout, |b| {
                parse_v3(b)
                    .ok()
                    .filter(|i| i.msg_id == msg_id && !i.engine_id.is_empty())
            })
            .await?;
        let c = &self.config;
        let keys = Keys::new(
            c.auth.unwrap_or(crate::snmp::usm::Auth::Sha256),
            c.auth_password.as_deref().unwrap_or(""),
            c.priv_password.as_deref().unwrap_or(""),
            &inc.engine_id,
        );
        self.remote = Some(Remote {
            engine_id: inc.engine_id,
            boots: inc.boots,
            time: inc.time,
            at: Instant::now(),
            keys,
        });
        Ok(())
    }

    async fn inform_v3(&mut self, vbs: &[VarBind], timeout: Duration) -> Outcome {
        for _ in 0..2 {
            if self.remote.is_none() {
                if let Err(e) = self.discover(timeout).await {
                    return Outcome::NoAnswer(format!("engine discovery: {e}"));
                }
            }
            let Some(remote) = self.remote.clone() else {
                continue;
            };
            let msg_id = self.id();
            let rid = self.id();
            let time = remote.time + remote.at.elapsed().as_secs() as u32;
            let msg = v3(
                msg_id,
                &Security {
                    engine_id: &remote.engine_id,
                    boots: remote.boots,
                    time,
                    user: self.config.user.as_deref().unwrap_or("").as_bytes(),
                    keys: Some(&remote.keys),
                    salt: salt(),
                    reportable: true,
                },
                &scoped(&remote.engine_id, &ber::pdu(ber::INFORM, rid, vbs)),
            );
            let keys = remote.keys.clone();
            // Only an authenticated answer ends the wait: anyone can send a datagram with
            // our msgID. A reply whose HMAC is wrong is dropped (counted); an
            // unauthenticated Report (as wrong digests are reported) is kept, and acted on
            // only if no authenticated answer comes before the timeout.
            let unauthenticated = std::sync::Mutex::new(None);
            let forged = std::sync::atomic::AtomicU32::new(0);
            let answer = self
                .exchange(&msg, timeout, |b| {
                    let inc = parse_v3(b).ok().filter(|i| i.msg_id == msg_id)?;
                    match open_v3(b, &inc, Some(&keys)) {
                        // Authenticated, but not an answer to this inform (a replay of
                        // our own message, say): not the answer either.
                        Ok(pdu)
                            if inc.flags & 1 == 1
                                && !(pdu.tag == ber::REPORT
                                    || pdu.tag == ber::RESPONSE && pdu.request_id == rid) =>
                        {
                            None
                        }
                        Ok(pdu) if inc.flags & 1 == 1 => Some((inc, pdu)),
                        Ok(pdu) => {
                            if let Ok(mut u) = unauthenticated.lock() {
                                *u = Some((inc, pdu));
                            }
                            None
                        }
                        Err(_) => {
                            forged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            None
                        }
                    }
                })
                .await;
            let forged = forged.into_inner();
            if forged > 0 {
                tracing::warn!(receiver = %self.config.address, forged, "Dropped answers to an inform that failed authentication (a wrong HMAC): forged, or from another sender.");
                self.forged += u64::from(forged);
            }
            let unauthenticated = unauthenticated.into_inner().ok().flatten();
            let (inc, pdu) = match (answer, unauthenticated) {
                (Ok(a), _) | (Err(_), Some(a)) => a,
                (Err(e), None) => {
                    // The receiver may have restarted with a new engine: learn it again.
                    self.remote = None;
                    return Outcome::NoAnswer(e);
                }
            };
            match (pdu.tag, usm_stat(&pdu.varbinds)) {
                (ber::RESPONSE, _) if pdu.request_id == rid => return Outcome::Acked,
                (ber::REPORT, Some(2)) => {
                    // notInTimeWindow: take the receiver's boots and time, send again.
                    if let Some(r) = self.remote.as_mut() {
                        r.boots = inc.boots;
                        r.time = inc.time;
                        r.at = Instant::now();
                    }
                }
                (ber::REPORT, Some(4)) => self.remote = None,
                (ber::REPORT, Some(stat)) => {
                    let what = match stat {
                        1 => "unsupported security level",
                        3 => "unknown user name",
                        5 => "wrong digest (authentication password)",
                        6 => "decryption error (privacy password)",
                        _ => "usmStats report",
                    };
                    return Outcome::AuthFailed(format!(
                        "{} refused the inform: {what}",
                        self.config.address
                    ));
                }
                _ => return Outcome::NoAnswer("unexpected answer".into()),
            }
        }
        Outcome::NoAnswer("the receiver's engine time could not be agreed".into())
    }
}

/// A fresh salt for AES (never repeated under one key in practice).
fn salt() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    seed ^ NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snmp::usm::Auth;

    #[test]
    fn v3_message_authenticates_and_decrypts_in_place() {
        let keys = Keys::new(Auth::Sha, "authpass1", "privpass1", b"engine-1");
        let pdu = ber::pdu(ber::INFORM, 42, &[(vec![1, 3, 6], Val::Int(1))]);
        let msg = v3(
            9,
            &Security {
                engine_id: b"engine-1",
                boots: 3,
                time: 77,
                user: b"telagent",
                keys: Some(&keys),
                salt: 5,
                reportable: true,
            },
            &scoped(b"engine-1", &pdu),
        );
        let inc = parse_v3(&msg).unwrap();
        assert_eq!((inc.msg_id, inc.flags, inc.boots, inc.time), (9, 7, 3, 77));
        let p = open_v3(&msg, &inc, Some(&keys)).unwrap();
        assert_eq!((p.tag, p.request_id), (ber::INFORM, 42));
        let mut forged = msg.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let inc = parse_v3(&forged).unwrap();
        assert!(open_v3(&forged, &inc, Some(&keys))
            .unwrap_err()
            .contains("wrong HMAC"));
    }

    #[test]
    fn the_reason_is_cut_at_a_character_within_255_bytes() {
        use super::super::{Kind, NState, Severity};
        let mut n = Notification::agent(
            Kind::CheckDown,
            "s",
            NState::Down,
            Severity::Critical,
            "é".repeat(200), // 400 bytes
        );
        n.time = std::time::UNIX_EPOCH + Duration::from_millis(1_796_146_440_750);
        n.sequence = 7;
        let reason = varbinds(&n, 0)
            .into_iter()
            .find(|(o, _)| *o == mib::notify_object(3))
            .unwrap()
            .1;
        let Val::Str(bytes) = reason else {
            panic!("{reason:?}")
        };
        assert_eq!(bytes.len(), 254);
        assert!(std::str::from_utf8(&bytes).is_ok());
        let vbs = varbinds(&n, 0);
        let at = |i: u32| {
            vbs.iter()
                .find(|(o, _)| *o == mib::notify_object(i))
                .map(|v| &v.1)
        };
        // 2026-12-01 17:34:00.7 UTC, direction '+', offset 0.
        assert_eq!(
            at(7),
            Some(&Val::Str(vec![0x07, 0xea, 12, 1, 17, 34, 0, 7, b'+', 0, 0]))
        );
        assert_eq!(at(8), Some(&Val::Counter64(7)));
        assert_eq!(at(9), Some(&Val::Str(b"agent".to_vec())));
        let edge = format!("{}€", "a".repeat(253)); // the euro sign would end at byte 256
        assert_eq!(ber::cut(&edge, 255), "a".repeat(253));
        assert!(same_mac(b"abc", b"abc") && !same_mac(b"abc", b"abd") && !same_mac(b"ab", b"abc"));
    }

    #[test]
    fn engine_id_is_rfc3411_text_format() {
        let id = default_engine_id("fax1");
        assert_eq!(id, [0x80, 0x01, 0x86, 0x07, 4, b'f', b'a', b'x', b'1']);
    }
}
