//! DNS SRV lookups (RFC 2782) for `sip` checks: `_sip._udp.<domain>` and `_sip._tcp`.
//!
//! A UDP query to the configured server, or to each `nameserver` of /etc/resolv.conf in
//! turn (each gets its share of the wait); a truncated answer is asked again over TCP.
//! The query id is unpredictable and the source port the kernel's random one; an answer
//! counts only if its id and its question are ours. The answer is parsed defensively
//! (bounds, compression loops); the targets are ordered by priority and, within a
//! priority, drawn by weight as RFC 2782 says. Target names are resolved by the system
//! resolver afterwards.
//!
//! Why not a resolver crate: this is one query type for one check kind; hickory-resolver
//! would more than double the agent's dependency tree for it.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("no DNS server: none given and none in /etc/resolv.conf")]
    NoServer,
    #[error("DNS server {server} did not answer within {}", humantime::format_duration(*.waited))]
    Timeout {
        server: SocketAddr,
        waited: Duration,
    },
    #[error("DNS query to {server} failed: {source}")]
    Io {
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("unreadable DNS answer from {server}: {reason}")]
    Malformed {
        server: SocketAddr,
        reason: &'static str,
    },
    #[error("{name}: DNS says {what}")]
    NoRecord { name: String, what: String },
}

/// The query for `name`, type SRV, with this id.
pub fn query(id: u16, name: &str) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 33, 0, 1]); // SRV, IN
    Some(q)
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), &'static str> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(pos).ok_or("name runs past the end")? as usize;
        if len == 0 {
            return Ok((labels.join("."), end.unwrap_or(pos + 1)));
        }
        if len & 0xc0 == 0xc0 {
            let low = *msg.get(pos + 1).ok_or("pointer runs past the end")? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3f) << 8) | low;
            continue;
        }
        let label = msg
            .get(pos + 1..pos + 1 + len)
            .ok_or("label runs past the end")?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
    Err("name compression loop")
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, &'static str> {
    msg.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or("record runs past the end")
}

/// Parses an answer to our query `id` for `name`: the SRV records (in the order of the
/// answer), or the response code when there are none.
pub fn parse(msg: &[u8], id: u16, name: &str) -> Result<Result<Vec<Srv>, String>, &'static str> {
    if msg.len() < 12 {
        return Err("shorter than a DNS header");
    }
    if u16_at(msg, 0)? != id || msg[2] & 0x80 == 0 {
        return Err("not the answer to our query");
    }
    let rcode = msg[3] & 0x0f;
    let (qd, an) = (u16_at(msg, 4)?, u16_at(msg, 6)?);
    if qd != 1 {
        return Err("not the answer to our query");
    }
    let (question, p) = read_name(msg, 12)?;
    if !question.eq_ignore_ascii_case(name.trim_end_matches('.'))
        || u16_at(msg, p)? != 33
        || u16_at(msg, p + 2)? != 1
    {
        return Err("not the answer to our query");
    }
    let mut pos = p + 4;
    let mut out = Vec::new();
    for _ in 0..an {
        let (_, p) = read_name(msg, pos)?;
        let rtype = u16_at(msg, p)?;
        let rdlen = u16_at(msg, p + 8)? as usize;
        let rdata = p + 10;
        if msg.len() < rdata + rdlen {
            return Err("record data runs past the end");
        }
        if rtype == 33 && rdlen >= 7 {
            let (target, _) = read_name(msg, rdata + 6)?;
            out.push(Srv {
                priority: u16_at(msg, rdata)?,
                weight: u16_at(msg, rdata + 2)?,
                port: u16_at(msg, rdata + 4)?,
                target,
            });
        }
        pos = rdata + rdlen;
    }
    if out.is_empty() {
        let what = match rcode {
            0 => "no SRV record".to_string(),
            3 => "no such name (NXDOMAIN)".to_string(),
            2 => "server failure (SERVFAIL)".to_string(),
            5 => "query refused (REFUSED)".to_string(),
            other => format!("response code {other}"),
        };
        return Ok(Err(what));
    }
    // "." as the only target means: the service is decidedly not available here.
    out.retain(|s| !s.target.is_empty());
    Ok(Ok(out))
}

/// The answer's TC bit: it did not fit in UDP; ask again over TCP.
fn truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// RFC 2782's order: lowest priority first; within a priority, each next target drawn
/// with a probability proportional to its weight (zero-weight targets rarely first).
/// `random` gives numbers to draw with.
pub fn order(mut records: Vec<Srv>, mut random: impl FnMut() -> u32) -> Vec<Srv> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    for group in records.chunk_by(|a, b| a.priority == b.priority) {
        // Zero weights first, as the RFC lays them out before the running sum.
        let mut left: Vec<&Srv> = group.iter().filter(|r| r.weight == 0).collect();
        left.extend(group.iter().filter(|r| r.weight > 0));
        while !left.is_empty() {
            let total: u32 = left.iter().map(|r| u32::from(r.weight)).sum();
            let pick = random() % (total + 1);
            let mut sum = 0;
            let i = left
                .iter()
                .position(|r| {
                    sum += u32::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(0);
            out.push(left.remove(i).clone());
        }
    }
    out
}

/// A number nobody outside this process can predict: std's hasher keys come from the
/// operating system's randomness.
fn unpredictable() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one(nanos) as u32
}

/// The nameservers of /etc/resolv.conf, in order (at most 3, as the C library reads).
pub fn system_servers() -> Vec<SocketAddr> {
    let text = crate::files::read_text(std::path::Path::new("/etc/resolv.conf"), 64 * 1024)
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let addr = l.trim().strip_prefix("nameserver")?.trim();
            addr.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .take(3)
        .collect()
}

/// Looks up the SRV records of `name` at `server`, else at each system nameserver in
/// turn, within `wait` in all; the records in RFC 2782's order.
pub async fn lookup_srv(
    name: &str,
    server: Option<SocketAddr>,
    wait: Duration,
) -> Result<Vec<Srv>, DnsError> {
    let servers = server.map_or_else(system_servers, |s| vec![s]);
    if servers.is_empty() {
        return Err(DnsError::NoServer);
    }
    let share = wait / servers.len() as u32;
    let mut last = DnsError::NoServer;
    for server in servers {
        match ask(name, server, share).await {
            // An answer, records or not, is the answer: another server would say the same.
            Ok(Ok(records)) => return Ok(order(records, unpredictable)),
            Ok(Err(what)) => {
                return Err(DnsError::NoRecord {
                    name: name.to_string(),
                    what,
                })
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One server: over UDP, and over TCP if the answer was truncated.
async fn ask(
    name: &str,
    server: SocketAddr,
    wait: Duration,
) -> Result<Result<Vec<Srv>, String>, DnsError> {
    let io = |source| DnsError::Io { server, source };
    let timeout = DnsError::Timeout {
        server,
        waited: wait,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let id = unpredictable() as u16;
    let q = query(id, name).ok_or(DnsError::NoRecord {
        name: name.to_string(),
        what: "an invalid name".into(),
    })?;
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(server).await.map_err(io)?;
    sock.send(&q).await.map_err(io)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Err(timeout),
            Ok(r) => r.map_err(io)?,
        };
        match parse(&buf[..n], id, name) {
            Err("not the answer to our query") => continue,
            Err(reason) => return Err(DnsError::Malformed { server, reason }),
            Ok(_) if truncated(&buf[..n]) => break,
            Ok(answer) => return Ok(answer),
        }
    }
    // Truncated: the same question over TCP, each message after its 2-byte length.
    let tcp = async {
        let mut s = tokio::net::TcpStream::connect(server).await?;
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed).await?;
        let len = s.read_u16().await? as usize;
        let mut msg = vec![0u8; len];
        s.read_exact(&mut msg).await?;
        Ok::<_, std::io::Error>(msg)
    };
    let msg = match tokio::time::timeout_at(deadline, tcp).await {
        Err(_) => return Err(timeout),
        Ok(r) => r.map_err(io)?,
    };
    parse(&msg, id, name).map_err(|reason| DnsError::Malformed { server, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a server sends it: the question, then SRV records with compressed
    /// owner names.
    fn answer(id: u16, records: &[(u16, u16, u16, &str)]) -> Vec<u8> {
        let mut m = query(id, "_sip._udp.gw.test").unwrap();
        m[2] |= 0x80;
        m[7] = records.len() as u8;
        for (prio, weight, port, target) in records {
            m.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
            let mut rdata = Vec::new();
            for v in [prio, weight, port] {
                rdata.extend_from_slice(&v.to_be_bytes());
            }
            for label in target.split('.') {
                rdata.push(label.len() as u8);
                rdata.extend_from_slice(label.as_bytes());
            }
            rdata.push(0);
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(&rdata);
        }
        m
    }

    #[test]
    fn parses_srv_records_of_our_question_only() {
        let m = answer(
            7,
            &[
                (20, 0, 5062, "gw3.test"),
                (10, 10, 5060, "gw1.test"),
                (10, 60, 5061, "gw2.test"),
            ],
        );
        let srv = parse(&m, 7, "_sip._udp.gw.test").unwrap().unwrap();
        assert_eq!(srv.len(), 3);
        assert_eq!(
            (srv[1].priority, srv[1].weight, srv[1].port),
            (10, 10, 5060)
        );
        assert!(
            parse(&m, 8, "_sip._udp.gw.test").is_err(),
            "another query's answer"
        );
        assert!(
            parse(&m, 7, "_sip._udp.other.test").is_err(),
            "an answer to another question"
        );
        assert!(
            parse(&m, 7, "_SIP._udp.GW.test.").is_ok(),
            "names are case-insensitive"
        );
    }

    /// RFC 2782: priority first, then drawn by weight: over many draws each target of
    /// the first priority comes first about as often as its share of the weight.
    #[test]
    fn targets_are_drawn_by_weight_within_a_priority() {
        let srv = |priority, weight, target: &str| Srv {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        };
        let records = vec![
            srv(20, 100, "backup"),
            srv(10, 10, "small"),
            srv(10, 60, "big"),
            srv(10, 0, "zero"),
        ];
        let mut rng = crate::testing::Lcg(2782);
        let mut first = std::collections::BTreeMap::new();
        for _ in 0..7000 {
            let o = order(records.clone(), || (rng.next_u64() >> 32) as u32);
            assert_eq!(o.len(), 4);
            assert_eq!(o[3].target, "backup", "priority 20 after every priority 10");
            *first.entry(o[0].target.clone()).or_insert(0) += 1;
        }
        let share = |t: &str| f64::from(first.get(t).copied().unwrap_or(0)) / 7000.0;
        assert!((share("big") - 60.0 / 71.0).abs() < 0.03, "{first:?}");
        assert!((share("small") - 10.0 / 71.0).abs() < 0.03, "{first:?}");
        assert!(share("zero") < 0.03, "{first:?}");
    }

    #[test]
    fn a_truncated_answer_is_seen() {
        let mut m = answer(3, &[(1, 1, 5060, "gw.test")]);
        assert!(!truncated(&m));
        m[2] |= 0x02;
        assert!(truncated(&m));
    }

    #[test]
    fn no_records_says_why() {
        let mut m = answer(9, &[]);
        m[3] = 3;
        assert_eq!(
            parse(&m, 9, "_sip._udp.gw.test").unwrap(),
            Err("no such name (NXDOMAIN)".to_string())
        );
    }

    #[test]
    fn hostile_answers_do_not_panic_or_loop() {
        // A compression pointer to itself.
        let mut m = answer(1, &[(1, 1, 5060, "gw.test")]);
        let n = m.len();
        m[n - 10] = 0xc0;
        m[n - 9] = (n - 10) as u8;
        let _ = parse(&m, 1, "_sip._udp.gw.test");
        let mut rng = crate::testing::Lcg(5);
        for _ in 0..3000 {
            let len = (rng.next_u64() % 200) as usize;
            let mut bytes = rng.bytes(len);
            if bytes.len() > 3 {
                bytes[0] = 0;
                bytes[1] = 1;
                bytes[2] |= 0x80;
            }
            let _ = parse(&bytes, 1, "_sip._udp.gw.test");
        }
    }
}
