//! DNS SRV lookups (RFC 2782) for `sip` checks: `_sip._udp.<domain>` and `_sip._tcp`.
//!
//! One UDP query to the configured server (default: the first `nameserver` of
//! /etc/resolv.conf); the answer is parsed defensively (bounds, compression loops) and the
//! targets ordered by priority, then weight. Target names are resolved by the system
//! resolver afterwards.

use std::net::SocketAddr;
use std::time::Duration;

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

/// Parses an answer to our query `id`: the SRV records, best first (lowest priority,
/// then highest weight), or the response code when there are none.
pub fn parse(msg: &[u8], id: u16) -> Result<Result<Vec<Srv>, String>, &'static str> {
    if msg.len() < 12 {
        return Err("shorter than a DNS header");
    }
    if u16_at(msg, 0)? != id || msg[2] & 0x80 == 0 {
        return Err("not the answer to our query");
    }
    let rcode = msg[3] & 0x0f;
    let (qd, an) = (u16_at(msg, 4)?, u16_at(msg, 6)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
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
    out.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    Ok(Ok(out))
}

/// The first nameserver of /etc/resolv.conf.
pub fn system_server() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let addr = l.trim().strip_prefix("nameserver")?.trim();
        addr.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Looks up the SRV records of `name` at `server`.
pub async fn lookup_srv(
    name: &str,
    server: Option<SocketAddr>,
    wait: Duration,
) -> Result<Vec<Srv>, DnsError> {
    let server = server.or_else(system_server).ok_or(DnsError::NoServer)?;
    let io = |source| DnsError::Io { server, source };
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(server).await.map_err(io)?;
    let id = (std::process::id() as u16) ^ (name.len() as u16).rotate_left(7);
    let q = query(id, name).ok_or(DnsError::NoRecord {
        name: name.to_string(),
        what: "an invalid name".into(),
    })?;
    sock.send(&q).await.map_err(io)?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => {
                return Err(DnsError::Timeout {
                    server,
                    waited: wait,
                })
            }
            Ok(r) => r.map_err(io)?,
        };
        match parse(&buf[..n], id) {
            Err("not the answer to our query") => continue,
            Err(reason) => return Err(DnsError::Malformed { server, reason }),
            Ok(Ok(records)) => return Ok(records),
            Ok(Err(what)) => {
                return Err(DnsError::NoRecord {
                    name: name.to_string(),
                    what,
                })
            }
        }
    }
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
    fn parses_and_orders_srv_records() {
        let m = answer(
            7,
            &[
                (20, 0, 5062, "gw3.test"),
                (10, 10, 5060, "gw1.test"),
                (10, 60, 5061, "gw2.test"),
            ],
        );
        let srv = parse(&m, 7).unwrap().unwrap();
        let order: Vec<_> = srv.iter().map(|s| (s.target.as_str(), s.port)).collect();
        assert_eq!(
            order,
            [("gw2.test", 5061), ("gw1.test", 5060), ("gw3.test", 5062)]
        );
        assert!(parse(&m, 8).is_err(), "another query's answer");
    }

    #[test]
    fn no_records_says_why() {
        let mut m = answer(9, &[]);
        m[3] = 3;
        assert_eq!(
            parse(&m, 9).unwrap(),
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
        let _ = parse(&m, 1);
        let mut rng = crate::testing::Lcg(5);
        for _ in 0..3000 {
            let len = (rng.next_u64() % 200) as usize;
            let mut bytes = rng.bytes(len);
            if bytes.len() > 3 {
                bytes[0] = 0;
                bytes[1] = 1;
                bytes[2] |= 0x80;
            }
            let _ = parse(&bytes, 1);
        }
    }
}
