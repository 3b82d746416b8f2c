//! AgentX subagent (RFC 2741): serves TELAGENT-MIB through net-snmp's snmpd (`master
//! agentx`), so SNMP access control, listening and v3 users are snmpd's job.
//!
//! One task owns the connection: Open, Register of the enterprise subtree, then it answers
//! Get, GetNext and GetBulk from a view of the model built per request (never waiting on
//! a check), refuses sets (read-only), and pings the master. When the master goes away
//! (snmpd restarted) the task connects, opens and registers again, with backoff.
//!
//! The codec is our own: every PDU is decoded from a bounded buffer (a malformed one ends
//! the session and it is opened again), octet strings are bytes, and sysUpTime is u32 in
//! both directions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::ber::Val;
use super::mib::ENTERPRISE;
use super::view::{build, View};
use crate::engine::model::Model;
use crate::metrics::{bool01, Collector, Families};

const OPEN: u8 = 1;
const CLOSE: u8 = 2;
const REGISTER: u8 = 3;
const ADD_AGENT_CAPS: u8 = 16;
const GET: u8 = 5;
const GET_NEXT: u8 = 6;
const GET_BULK: u8 = 7;
const TEST_SET: u8 = 8;
const COMMIT_SET: u8 = 9;
const UNDO_SET: u8 = 10;
const CLEANUP_SET: u8 = 11;
const PING: u8 = 13;
const RESPONSE: u8 = 18;

const NETWORK_BYTE_ORDER: u8 = 0x10;
const NON_DEFAULT_CONTEXT: u8 = 0x08;

/// Longest PDU accepted from the master.
const MAX_PDU: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub ty: u8,
    pub flags: u8,
    pub session: u32,
    pub transaction: u32,
    pub packet: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentxError {
    #[error("AgentX PDU cut short")]
    Truncated,
    #[error("malformed AgentX PDU: {0}")]
    Malformed(&'static str),
}

/// Reads AgentX fields in the byte order the PDU's flags say.
struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AgentxError> {
        let s = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or(AgentxError::Truncated)?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, AgentxError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AgentxError> {
        let b: [u8; 2] = self
            .take(2)?
            .try_into()
            .map_err(|_| AgentxError::Truncated)?;
        Ok(if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&mut self) -> Result<u32, AgentxError> {
        let b: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| AgentxError::Truncated)?;
        Ok(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// An OID and its include flag.
    fn oid(&mut self) -> Result<(Vec<u32>, bool), AgentxError> {
        let n = usize::from(self.u8()?);
        let prefix = self.u8()?;
        let include = self.u8()? != 0;
        self.u8()?;
        if n > 128 {
            return Err(AgentxError::Malformed(
                "OID longer than 128 sub-identifiers",
            ));
        }
        let mut oid = Vec::with_capacity(n + 5);
        if prefix != 0 {
            oid.extend([1, 3, 6, 1, u32::from(prefix)]);
        }
        for _ in 0..n {
            oid.push(self.u32()?);
        }
        Ok((oid, include))
    }

    fn octets(&mut self) -> Result<&'a [u8], AgentxError> {
        let len = self.u32()? as usize;
        if len > MAX_PDU {
            return Err(AgentxError::Malformed("octet string length"));
        }
        let s = self.take(len)?;
        self.take((4 - len % 4) % 4)?;
        Ok(s)
    }
}

/// Writes AgentX fields in network byte order.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u16(&mut self, v: u16) {
        self.0.extend(v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend(v.to_be_bytes());
    }
    fn oid(&mut self, oid: &[u32], include: bool) {
        let (prefix, rest) = match oid {
            [1, 3, 6, 1, p, rest @ ..] if *p <= 255 && !rest.is_empty() => (*p as u8, rest),
            _ => (0, oid),
        };
        self.0
            .extend([rest.len() as u8, prefix, u8::from(include), 0]);
        rest.iter().for_each(|s| self.u32(*s));
    }
    fn octets(&mut self, s: &[u8]) {
        self.u32(s.len() as u32);
        self.0.extend(s);
        self.0.extend(std::iter::repeat_n(0, (4 - s.len() % 4) % 4));
    }
    fn varbind(&mut self, oid: &[u32], v: &Val) {
        let ty: u16 = match v {
            Val::Int(_) => 2,
            Val::Str(_) => 4,
            Val::Null => 5,
            Val::Oid(_) => 6,
            Val::IpAddress(_) => 64,
            Val::Counter32(_) => 65,
            Val::Gauge32(_) => 66,
            Val::TimeTicks(_) => 67,
            Val::Counter64(_) => 70,
            Val::NoSuchObject => 128,
            Val::NoSuchInstance => 129,
            Val::EndOfMibView => 130,
        };
        self.u16(ty);
        self.u16(0);
        self.oid(oid, false);
        match v {
            Val::Int(i) => self.u32(*i as i32 as u32),
            Val::Str(s) => self.octets(s),
            Val::Oid(o) => self.oid(o, false),
            Val::IpAddress(a) => self.octets(a),
            Val::Counter32(n) | Val::Gauge32(n) | Val::TimeTicks(n) => self.u32(*n),
            Val::Counter64(n) => self.0.extend(n.to_be_bytes()),
            _ => {}
        }
    }
}

/// A whole PDU: header and payload, in network byte order.
fn pdu(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut e = Enc::default();
    e.0.extend([1, h.ty, h.flags | NETWORK_BYTE_ORDER, 0]);
    e.u32(h.session);
    e.u32(h.transaction);
    e.u32(h.packet);
    e.u32(payload.len() as u32);
    e.0.extend(payload);
    e.0
}

/// Takes one whole PDU off the front of `buf`, if it holds one: its header and payload.
fn take_pdu(buf: &mut Vec<u8>) -> std::io::Result<Option<(Header, Vec<u8>)>> {
    if buf.len() < 20 {
        return Ok(None);
    }
    let head: [u8; 20] = buf[..20].try_into().unwrap_or([0; 20]);
    let big = head[2] & NETWORK_BYTE_ORDER != 0;
    let word = |i: usize| {
        let b: [u8; 4] = head[i..i + 4].try_into().unwrap_or([0; 4]);
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    if head[0] != 1 {
        return Err(std::io::Error::other(format!(
            "AgentX version {} is not 1",
            head[0]
        )));
    }
    let len = word(16) as usize;
    if len > MAX_PDU || len % 4 != 0 {
        return Err(std::io::Error::other(format!(
            "AgentX payload of {len} bytes refused"
        )));
    }
    if buf.len() < 20 + len {
        return Ok(None);
    }
    let payload = buf[20..20 + len].to_vec();
    buf.drain(..20 + len);
    Ok(Some((
        Header {
            ty: head[1],
            flags: head[2],
            session: word(4),
            transaction: word(8),
            packet: word(12),
        },
        payload,
    )))
}

/// Reads until `buf` holds one whole PDU and takes it. Cancel-safe: bytes read stay in
/// `buf` (read_buf reads nothing when cancelled), so a PDU split across a ping tick is
/// never lost.
async fn read_pdu(
    r: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<(Header, Vec<u8>)> {
    loop {
        if let Some(p) = take_pdu(buf)? {
            return Ok(p);
        }
        buf.reserve(4096);
        if r.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the master closed the connection",
            ));
        }
    }
}

/// The answer to one request: error status, error index, varbinds.
type Answer = (u16, u16, Vec<(Vec<u32>, Val)>);

/// The answer to one request of the master.
pub fn answer(h: &Header, payload: &[u8], view: &View) -> Result<Answer, AgentxError> {
    let mut d = Dec {
        b: payload,
        pos: 0,
        big: h.flags & NETWORK_BYTE_ORDER != 0,
    };
    if h.flags & NON_DEFAULT_CONTEXT != 0 {
        d.octets()?;
    }
    let (non_repeaters, max_reps) = if h.ty == GET_BULK {
        (usize::from(d.u16()?), usize::from(d.u16()?).min(1000))
    } else {
        (0, 0)
    };
    let mut ranges = Vec::new();
    while d.pos < payload.len() {
        let (start, include) = d.oid()?;
        let (end, _) = d.oid()?;
        ranges.push((start, include, end));
        if ranges.len() > 1000 {
            return Err(AgentxError::Malformed("too many search ranges"));
        }
    }
    let next = |start: &[u32], include: bool, end: &[u32]| -> (Vec<u32>, Val) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lower = if include {
            Included(start.to_vec())
        } else {
            Excluded(start.to_vec())
        };
        match view.range((lower, Unbounded)).next() {
            Some((o, v)) if end.is_empty() || o.as_slice() < end => (o.clone(), v.clone()),
            _ => (start.to_vec(), Val::EndOfMibView),
        }
    };
    let mut out = Vec::new();
    match h.ty {
        GET => {
            for (start, _, _) in &ranges {
                let v = match view.get(start) {
                    Some(v) => v.clone(),
                    // The object (a scalar, or a column: every index here is one arc)
                    // exists, this instance does not.
                    None if view.keys().any(|k| {
                        k.len() == start.len() && k[..k.len() - 1] == start[..start.len() - 1]
                    }) =>
                    {
                        Val::NoSuchInstance
                    }
                    None => Val::NoSuchObject,
                };
                out.push((start.clone(), v));
            }
        }
        GET_NEXT => {
            for (start, include, end) in &ranges {
                out.push(next(start, *include, end));
            }
        }
        GET_BULK => {
            for (start, include, end) in ranges.iter().take(non_repeaters) {
                out.push(next(start, *include, end));
            }
            let mut cursors: Vec<(Vec<u32>, bool, Vec<u32>)> =
                ranges.iter().skip(non_repeaters).cloned().collect();
            for _ in 0..max_reps {
                if cursors.is_empty() {
                    break;
                }
                let mut all_end = true;
                for c in cursors.iter_mut() {
                    let (o, v) = next(&c.0, c.1, &c.2);
                    all_end &= v == Val::EndOfMibView;
                    *c = (o.clone(), false, c.2.clone());
                    out.push((o, v));
                }
                if all_end {
                    break;
                }
            }
        }
        // Everything here is read-only: notWritable (17) on the first varbind.
        TEST_SET => return Ok((17, 1, Vec::new())),
        COMMIT_SET | UNDO_SET | CLEANUP_SET => return Ok((0, 0, Vec::new())),
        _ => return Err(AgentxError::Malformed("unexpected PDU type")),
    }
    Ok((0, 0, out))
}

fn response(h: &Header, uptime: u32, error: u16, index: u16, vbs: &[(Vec<u32>, Val)]) -> Vec<u8> {
    let mut e = Enc::default();
    e.u32(uptime);
    e.u16(error);
    e.u16(index);
    for (o, v) in vbs {
        e.varbind(o, v);
    }
    pdu(
        &Header {
            ty: RESPONSE,
            flags: 0,
            ..h.clone()
        },
        &e.0,
    )
}

/// The `error` field of a Response payload.
fn response_error(h: &Header, payload: &[u8]) -> Result<u16, AgentxError> {
    let mut d = Dec {
        b: payload,
        pos: 0,
        big: h.flags & NETWORK_BYTE_ORDER != 0,
    };
    d.u32()?;
    d.u16()
}

/// Where the master listens: `tcp:HOST:PORT` or a unix socket path (`unix:/var/agentx/master`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, String> {
        if let Some(a) = s.strip_prefix("tcp:") {
            Ok(Address::Tcp(a.to_string()))
        } else if let Some(p) = s.strip_prefix("unix:") {
            Ok(Address::Unix(p.into()))
        } else if s.starts_with('/') {
            Ok(Address::Unix(s.into()))
        } else {
            Err(format!(
                "`{s}` is neither tcp:HOST:PORT nor a unix socket path such as /var/agentx/master"
            ))
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(a: &Address) -> std::io::Result<Box<dyn Stream>> {
    Ok(match a {
        Address::Tcp(t) => Box::new(tokio::net::TcpStream::connect(t).await?),
        Address::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
    })
}

/// Whether TELAGENT-MIB is registered now, and how many sessions were.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) registered: std::sync::atomic::AtomicBool,
    pub(crate) sessions: std::sync::atomic::AtomicU64,
}

impl Collector for Stats {
    fn collect(&self, f: &mut Families) {
        use std::sync::atomic::Ordering::Relaxed;
        f.gauge(
            "telagent_agentx_registered",
            "1 while TELAGENT-MIB is registered with the AgentX master (snmpd).",
            &[],
            bool01(self.registered.load(Relaxed)),
        );
        f.counter(
            "telagent_agentx_sessions_total",
            "AgentX sessions opened and registered (more than 1: the master restarted).",
            &[],
            self.sessions.load(Relaxed) as f64,
        );
    }
}

/// What the subagent serves: the checks, the routing snapshot and the traffic counters of
/// this agent's server.
pub struct Served {
    pub server: String,
    pub model: Arc<Model>,
    pub cluster: tokio::sync::watch::Receiver<Arc<crate::routing::Snapshot>>,
    pub traffic: Arc<crate::traffic::Stats>,
    pub indexes: super::index::Indexes,
}

impl Served {
    fn view(&self) -> super::view::View {
        let cluster = self.cluster.borrow().clone();
        let traffic = self.traffic.lifetime();
        let m = self.model.read();
        build(&super::view::Sources {
            server: &self.server,
            targets: &m.targets,
            cluster: &cluster,
            traffic: &traffic,
            indexes: &self.indexes,
        })
    }
}

/// Keeps a session with the master until cancelled; publishes whether it is registered.
pub async fn run(address: Address, served: Served, stats: Arc<Stats>, cancel: CancellationToken) {
    use std::sync::atomic::Ordering::Relaxed;
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut last_error = String::new();
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = session(&address, &served, &stats, started) => r,
        };
        stats.registered.store(false, Relaxed);
        let e = result
            .err()
            .unwrap_or_else(|| "closed by the master".into());
        if e != last_error {
            tracing::warn!(master = ?address, error = %e, "AgentX session ended; connecting again.");
            last_error = e;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if stats.sessions.load(Relaxed) > 0 {
            backoff = backoff.min(Duration::from_secs(1));
        }
    }
}

async fn session(
    address: &Address,
    served: &Served,
    stats: &Stats,
    started: Instant,
) -> Result<(), String> {
    let mut s = connect(address)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut packet = 1u32;
    let request = |packet: &mut u32, s_id: u32, ty: u8, payload: Vec<u8>| {
        *packet += 1;
        pdu(
            &Header {
                ty,
                flags: 0,
                session: s_id,
                transaction: 0,
                packet: *packet,
            },
            &payload,
        )
    };
    let mut open = Enc::default();
    open.0.extend([5, 0, 0, 0]); // timeout 5 s
    open.oid(&ENTERPRISE, false);
    open.octets(format!("telagent {}", env!("CARGO_PKG_VERSION")).as_bytes());
    let io = |e: std::io::Error| e.to_string();
    s.write_all(&request(&mut packet, 0, OPEN, open.0))
        .await
        .map_err(io)?;
    let mut buf = Vec::new();
    let (h, payload) = tokio::time::timeout(Duration::from_secs(5), read_pdu(&mut s, &mut buf))
        .await
        .map_err(|_| "no answer to Open within 5s".to_string())?
        .map_err(io)?;
    if h.ty != RESPONSE || response_error(&h, &payload).map_err(|e| e.to_string())? != 0 {
        return Err("the master refused the Open".into());
    }
    let sid = h.session;
    let mut reg = Enc::default();
    reg.0.extend([5, 127, 0, 0]);
    reg.oid(&ENTERPRISE, false);
    s.write_all(&request(&mut packet, sid, REGISTER, reg.0))
        .await
        .map_err(io)?;
    let registering = packet;
    // sysORTable: the MIB this subagent implements, so an NMS (SCOM) sees what the host is.
    let mut caps = Enc::default();
    caps.oid(&ENTERPRISE, false);
    caps.octets(b"telagent: TELAGENT-MIB, fax and messaging servers, lines, gateways, queues");
    s.write_all(&request(&mut packet, sid, ADD_AGENT_CAPS, caps.0))
        .await
        .map_err(io)?;
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    ping.tick().await;
    loop {
        tokio::select! {
            _ = ping.tick() => {
                s.write_all(&request(&mut packet, sid, PING, Vec::new())).await.map_err(io)?;
            }
            r = read_pdu(&mut s, &mut buf) => {
                let (h, payload) = r.map_err(io)?;
                match h.ty {
                    RESPONSE if h.packet != registering => {
                        let err = response_error(&h, &payload).map_err(|e| e.to_string())?;
                        if err != 0 {
                            tracing::warn!(error = err, "AgentX: the master refused a request (AddAgentCaps: no sysORTable row).");
                        }
                    }
                    RESPONSE => {
                        let err = response_error(&h, &payload).map_err(|e| e.to_string())?;
                        if err != 0 {
                            return Err(format!("the master answered error {err} (Register refused: another subagent owns the subtree?)"));
                        }
                        use std::sync::atomic::Ordering::Relaxed;
                        if !stats.registered.swap(true, Relaxed) {
                            stats.sessions.fetch_add(1, Relaxed);
                            tracing::info!(master = ?address, session = sid, "AgentX: TELAGENT-MIB registered.");
                        }
                    }
                    CLOSE => return Err("the master closed the session".into()),
                    GET | GET_NEXT | GET_BULK | TEST_SET | COMMIT_SET | UNDO_SET | CLEANUP_SET => {
                        let view = served.view();
                        let uptime = (started.elapsed().as_millis() / 10) as u32;
                        let reply = match answer(&h, &payload, &view) {
                            Ok((e, i, vbs)) => response(&h, uptime, e, i, &vbs),
                            // genErr (5) for a request we cannot read.
                            Err(e) => {
                                tracing::warn!(error = %e, "AgentX request not understood.");
                                response(&h, uptime, 5, 0, &[])
                            }
                        };
                        s.write_all(&reply).await.map_err(io)?;
                    }
                    other => tracing::debug!(pdu = other, "AgentX PDU ignored."),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ty: u8, ranges: &[(&[u32], bool, &[u32])]) -> (Header, Vec<u8>) {
        let mut e = Enc::default();
        if ty == GET_BULK {
            e.u16(0);
            e.u16(3);
        }
        for (s, inc, end) in ranges {
            e.oid(s, *inc);
            e.oid(end, false);
        }
        let h = Header {
            ty,
            flags: NETWORK_BYTE_ORDER,
            session: 1,
            transaction: 2,
            packet: 3,
        };
        (h, e.0)
    }

    fn view() -> View {
        let mut v = View::new();
        v.insert(
            vec![1, 3, 6, 1, 4, 1, 99847, 1, 1, 1, 0],
            Val::Str(b"0.1.0".to_vec()),
        );
        v.insert(
            vec![1, 3, 6, 1, 4, 1, 99847, 1, 1, 2, 0],
            Val::Str(b"fax1".to_vec()),
        );
        v.insert(
            vec![1, 3, 6, 1, 4, 1, 99847, 1, 7, 1, 3, 1],
            Val::Counter64(u64::MAX),
        );
        v
    }

    #[test]
    fn get_next_walks_in_order_and_ends() {
        let v = view();
        let root: &[u32] = &[1, 3, 6, 1, 4, 1, 99847];
        let (h, p) = request(GET_NEXT, &[(root, false, &[])]);
        let (e, _, vbs) = answer(&h, &p, &v).unwrap();
        assert_eq!(
            (e, vbs[0].0.as_slice()),
            (0, &[1, 3, 6, 1, 4, 1, 99847, 1, 1, 1, 0][..])
        );
        let last: &[u32] = &[1, 3, 6, 1, 4, 1, 99847, 1, 7, 1, 3, 1];
        let (h, p) = request(GET_NEXT, &[(last, false, &[])]);
        assert_eq!(answer(&h, &p, &v).unwrap().2[0].1, Val::EndOfMibView);
        let (h, p) = request(GET_BULK, &[(root, false, &[])]);
        let vbs = answer(&h, &p, &v).unwrap().2;
        assert_eq!(vbs.len(), 3);
        assert_eq!(vbs[2].1, Val::Counter64(u64::MAX));
    }

    #[test]
    fn get_tells_missing_instance_from_missing_object() {
        let v = view();
        let (h, p) = request(
            GET,
            &[
                (&[1, 3, 6, 1, 4, 1, 99847, 1, 1, 2, 0], false, &[]),
                (&[1, 3, 6, 1, 4, 1, 99847, 1, 1, 2, 7], false, &[]),
                (&[1, 3, 6, 1, 2], false, &[]),
            ],
        );
        let vbs = answer(&h, &p, &v).unwrap().2;
        assert_eq!(vbs[0].1, Val::Str(b"fax1".to_vec()));
        assert_eq!(vbs[1].1, Val::NoSuchInstance);
        assert_eq!(vbs[2].1, Val::NoSuchObject);
    }

    #[test]
    fn octet_strings_are_bytes_and_uptime_is_32_bits() {
        let mut e = Enc::default();
        e.varbind(
            &[1, 3, 6, 1, 4, 1, 99847, 1],
            &Val::Str(vec![0xff, 0x00, 0x80]),
        );
        let mut d = Dec {
            b: &e.0,
            pos: 4,
            big: true,
        };
        assert_eq!(d.oid().unwrap().0, vec![1, 3, 6, 1, 4, 1, 99847, 1]);
        assert_eq!(d.octets().unwrap(), &[0xff, 0x00, 0x80]);
        let r = response(
            &Header {
                ty: GET,
                flags: 0,
                session: 1,
                transaction: 1,
                packet: 1,
            },
            u32::MAX,
            0,
            0,
            &[],
        );
        assert_eq!(
            &r[20..24],
            &[0xff; 4],
            "an uptime past 49.7 days is written as it is"
        );
    }

    #[tokio::test]
    async fn a_pdu_split_across_a_cancelled_read_is_not_lost() {
        let h = Header {
            ty: GET,
            flags: 0,
            session: 7,
            transaction: 1,
            packet: 9,
        };
        let mut enc = Enc::default();
        enc.oid(&[1, 3, 6, 1, 4, 1, 99847, 1, 1, 1, 0], false);
        enc.oid(&[], false);
        let whole = pdu(&h, &enc.0);
        let (mut master, mut sub) = tokio::io::duplex(4096);
        let mut buf = Vec::new();
        use tokio::io::AsyncWriteExt;
        master.write_all(&whole[..13]).await.unwrap();
        // The ping tick wins while the PDU is half there: the read is dropped.
        tokio::select! {
            r = read_pdu(&mut sub, &mut buf) => panic!("half a PDU read as a whole: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        master.write_all(&whole[13..]).await.unwrap();
        let (got, payload) = read_pdu(&mut sub, &mut buf).await.unwrap();
        assert_eq!((got.ty, got.session, got.packet), (GET, 7, 9));
        assert_eq!(payload, enc.0);
        assert!(buf.is_empty());
    }

    #[test]
    fn garbage_payloads_are_errors() {
        let mut rng = crate::testing::Lcg(9);
        let v = view();
        for _ in 0..3000 {
            let len = (rng.next_u64() % 64) as usize;
            let p = rng.bytes(len);
            let ty = [GET, GET_NEXT, GET_BULK][(rng.next_u64() % 3) as usize];
            let h = Header {
                ty,
                flags: (rng.next_u64() >> 56) as u8,
                session: 1,
                transaction: 1,
                packet: 1,
            };
            let _ = answer(&h, &p, &v);
        }
        let h = Header {
            ty: GET_NEXT,
            flags: NETWORK_BYTE_ORDER,
            session: 1,
            transaction: 1,
            packet: 1,
        };
        assert_eq!(
            answer(&h, &[200, 0, 0, 0], &v),
            Err(AgentxError::Malformed(
                "OID longer than 128 sub-identifiers"
            ))
        );
    }
}
