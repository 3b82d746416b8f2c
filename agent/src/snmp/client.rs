//! SNMP polling over snmp2, v2c or v3 (authPriv), with a timeout and retries per request
//! and table walks that always end.
//!
//! snmp2 has no timeout of its own and a late reply to an abandoned request breaks the next
//! call (request id mismatch), so every request is bounded here and the session is dropped
//! and made anew after any failure. Walks use GETBULK with bounded repetitions and end at
//! endOfMibView or at the first OID outside the subtree; an OID that does not increase (an
//! agent looping, a table that starts again) or more than `MAX_ROWS` rows is a broken
//! agent: an error, never a short or endless table taken as true.

use std::time::Duration;

use snmp2::{AsyncSession, Oid, Value as SnmpValue};

/// Most rows one walk returns.
pub const MAX_ROWS: usize = 10_000;

/// A value copied out of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Unsigned(u64),
    Bytes(Vec<u8>),
    Oid(Vec<u64>),
    Other,
}

impl Value {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::Unsigned(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// One row of a walk: the full OID and its value.
pub type Row = (Vec<u64>, Value);

/// What one response of a walk means.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// More rows may follow, from this OID.
    Continue(Vec<u64>),
    /// The subtree is done.
    Done,
    /// The agent is broken: its table does not end (an OID that does not increase, a
    /// table that starts again, more than `MAX_ROWS` rows). Nothing it sent is trusted.
    Broken(String),
}

fn dotted(oid: &[u64]) -> String {
    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// Takes the varbinds of one GETBULK response (already copied out) into `rows` and says
/// whether the walk goes on.
pub fn walk_step(
    root: &[u64],
    last: &[u64],
    varbinds: Vec<(Vec<u64>, Option<Value>)>,
    rows: &mut Vec<Row>,
) -> Step {
    let mut prev = last.to_vec();
    let mut any = false;
    for (oid, value) in varbinds {
        // None: endOfMibView / noSuchObject / noSuchInstance.
        let Some(value) = value else {
            return Step::Done;
        };
        // A decreasing OID is a broken agent even when it leaves the table: the next
        // OID must be greater than the one asked from (RFC 3416 4.2.2).
        if oid <= prev {
            return Step::Broken(format!(
                "the agent's table does not end: {} came after {} (OIDs must increase; a broken or looping agent), after {} rows",
                dotted(&oid),
                dotted(&prev),
                rows.len()
            ));
        }
        if !oid.starts_with(root) || oid.len() == root.len() {
            return Step::Done;
        }
        if rows.len() >= MAX_ROWS {
            return Step::Broken(format!(
                "the agent's table under {} goes past {MAX_ROWS} rows (still going at {}): a table that never ends, or not a channel table",
                dotted(root),
                dotted(&oid)
            ));
        }
        prev = oid.clone();
        rows.push((oid, value));
        any = true;
    }
    if any {
        Step::Continue(prev)
    } else {
        Step::Done
    }
}

fn copy(v: &SnmpValue<'_>) -> Option<Value> {
    Some(match v {
        SnmpValue::Integer(i) => Value::Int(*i),
        SnmpValue::Counter32(u) | SnmpValue::Unsigned32(u) | SnmpValue::Timeticks(u) => {
            Value::Unsigned(u64::from(*u))
        }
        SnmpValue::Counter64(u) => Value::Unsigned(*u),
        SnmpValue::OctetString(b) | SnmpValue::Opaque(b) => Value::Bytes(b.to_vec()),
        SnmpValue::IpAddress(a) => Value::Bytes(a.to_vec()),
        SnmpValue::ObjectIdentifier(o) => {
            Value::Oid(o.iter().map(|i| i.collect()).unwrap_or_default())
        }
        SnmpValue::EndOfMibView | SnmpValue::NoSuchObject | SnmpValue::NoSuchInstance => {
            return None
        }
        _ => Value::Other,
    })
}

/// How to reach and authenticate to an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    V2c {
        community: String,
    },
    V3 {
        user: String,
        auth_protocol: snmp2::v3::AuthProtocol,
        auth_password: String,
        priv_password: String,
        context: String,
    },
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("no answer from {address} within {}; is the agent up, and are the address and community right (a wrong community gets no answer)?", humantime::format_duration(*.timeout))]
    Timeout { address: String, timeout: Duration },
    #[error("{address} rejected our credentials ({reason}); check the community or the v3 user, keys and protocols")]
    Auth { address: String, reason: String },
    #[error("{address}: {reason}")]
    Protocol { address: String, reason: String },
    #[error("cannot reach {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("nothing answers SNMP at {address}: the host refused the datagram (ICMP port unreachable); is the agent running and on this port?")]
    Refused { address: String },
    #[error("cannot resolve {address}: {source}; check the name and DNS")]
    Dns {
        address: String,
        source: std::io::Error,
    },
}

impl PollError {
    pub fn error_type(&self) -> &'static str {
        match self {
            PollError::Timeout { .. } => "no_response",
            PollError::Auth { .. } => "auth_error",
            PollError::Protocol { .. } => "bad_response",
            PollError::Refused { .. } => "connect_refused",
            PollError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                "connect_refused"
            }
            PollError::Io { .. } => "io_error",
            PollError::Dns { .. } => "dns",
        }
    }
}

/// One agent's session, made anew after any failure.
pub struct Client {
    address: String,
    credentials: Credentials,
    timeout: Duration,
    retries: u32,
    max_repetitions: u32,
    session: Option<AsyncSession>,
}

impl Client {
    pub fn new(
        address: &str,
        credentials: Credentials,
        timeout: Duration,
        retries: u32,
        max_repetitions: u32,
    ) -> Self {
        Client {
            address: address.to_string(),
            credentials,
            timeout,
            retries,
            max_repetitions,
            session: None,
        }
    }

    async fn open(&self) -> Result<AsyncSession, PollError> {
        let io = |source| PollError::Io {
            address: self.address.clone(),
            source,
        };
        let req_id = (std::process::id() as i32).wrapping_mul(7919) & 0x3fff_ffff;
        // Resolved here, so that a name that does not resolve is told apart.
        let resolved = tokio::net::lookup_host(&self.address)
            .await
            .map_err(|source| PollError::Dns {
                address: self.address.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| PollError::Dns {
                address: self.address.clone(),
                source: std::io::Error::other("no address"),
            })?
            .to_string();
        match &self.credentials {
            Credentials::V2c { community } => {
                AsyncSession::new_v2c(&resolved, community.as_bytes(), req_id)
                    .await
                    .map_err(io)
            }
            Credentials::V3 {
                user,
                auth_protocol,
                auth_password,
                priv_password,
                context,
            } => {
                let security = snmp2::v3::Security::new(user.as_bytes(), auth_password.as_bytes())
                    .with_auth_protocol(*auth_protocol)
                    .with_auth(snmp2::v3::Auth::AuthPriv {
                        cipher: snmp2::v3::Cipher::Aes128,
                        privacy_password: priv_password.as_bytes().to_vec(),
                    })
                    .with_context_name(context);
                let mut s = AsyncSession::new_v3(&resolved, req_id, security)
                    .await
                    .map_err(io)?;
                match tokio::time::timeout(self.timeout, s.init()).await {
                    Err(_) => Err(PollError::Timeout {
                        address: self.address.clone(),
                        timeout: self.timeout,
                    }),
                    Ok(Err(e)) => Err(self.classify(e)),
                    Ok(Ok(())) => Ok(s),
                }
            }
        }
    }

    fn classify(&self, e: snmp2::Error) -> PollError {
        // On a connected UDP socket, a failed receive is the ICMP port unreachable the
        // host sent back; a failed send is the host's own refusal (no route, a broadcast).
        match e {
            snmp2::Error::Receive => {
                return PollError::Refused {
                    address: self.address.clone(),
                }
            }
            snmp2::Error::Send => {
                return PollError::Io {
                    address: self.address.clone(),
                    source: std::io::Error::other(
                        "the datagram could not be sent (no route, or a broadcast address)",
                    ),
                }
            }
            _ => {}
        }
        let reason = format!("{e:?}");
        let auth = matches!(e, snmp2::Error::CommunityMismatch) || reason.contains("Auth");
        if auth {
            PollError::Auth {
                address: self.address.clone(),
                reason,
            }
        } else {
            PollError::Protocol {
                address: self.address.clone(),
                reason: format!("unreadable answer: {reason}"),
            }
        }
    }

    /// One GETBULK from `from`, with retries; the varbinds copied out.
    async fn bulk(&mut self, from: &[u64]) -> Result<Vec<(Vec<u64>, Option<Value>)>, PollError> {
        let oid = Oid::from(from).map_err(|e| PollError::Protocol {
            address: self.address.clone(),
            reason: format!("bad OID {from:?}: {e:?}"),
        })?;
        let mut last = None;
        for _ in 0..=self.retries {
            if self.session.is_none() {
                match self.open().await {
                    Ok(s) => self.session = Some(s),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            let Some(session) = self.session.as_mut() else {
                continue;
            };
            let v3 = matches!(self.credentials, Credentials::V3 { .. });
            let result = tokio::time::timeout(self.timeout, async {
                let pdu = session.getbulk(&[&oid], 0, self.max_repetitions).await?;
                if pdu.error_status != 0 {
                    return Ok(Err(pdu.error_status));
                }
                Ok::<_, snmp2::Error>(Ok(pdu
                    .varbinds
                    .map(|(o, v)| (o.iter().map(|i| i.collect()).unwrap_or_default(), copy(&v)))
                    .collect::<Vec<_>>()))
            })
            .await;
            match result {
                Ok(Ok(Ok(rows))) => return Ok(rows),
                Ok(Ok(Err(status))) => {
                    return Err(PollError::Protocol {
                        address: self.address.clone(),
                        reason: format!("error-status {status} to GETBULK"),
                    })
                }
                Ok(Err(e)) => {
                    self.session = None;
                    last = Some(self.classify(e));
                }
                // The agent answered engine discovery (the session opened) and then not
                // our encrypted request: what agents do with a wrong privacy password.
                Err(_) if v3 => {
                    self.session = None;
                    last = Some(PollError::Auth {
                        address: self.address.clone(),
                        reason: "the agent answered engine discovery but not our encrypted request: most likely a wrong priv_password".into(),
                    });
                }
                Err(_) => {
                    self.session = None;
                    last = Some(PollError::Timeout {
                        address: self.address.clone(),
                        timeout: self.timeout,
                    });
                }
            }
        }
        Err(last.unwrap_or(PollError::Timeout {
            address: self.address.clone(),
            timeout: self.timeout,
        }))
    }

    /// All rows under `root`.
    pub async fn walk(&mut self, root: &[u64]) -> Result<Vec<Row>, PollError> {
        let mut rows = Vec::new();
        let mut from = root.to_vec();
        loop {
            let varbinds = self.bulk(&from).await?;
            match walk_step(root, &from, varbinds, &mut rows) {
                Step::Continue(next) => from = next,
                Step::Done => return Ok(rows),
                Step::Broken(reason) => {
                    return Err(PollError::Protocol {
                        address: self.address.clone(),
                        reason,
                    })
                }
            }
        }
    }
}

/// Parses a dotted OID (`1.3.6.1.2.1`).
pub fn parse_oid(s: &str) -> Option<Vec<u64>> {
    let arcs: Option<Vec<u64>> = s
        .trim_start_matches('.')
        .split('.')
        .map(|p| p.parse().ok())
        .collect();
    arcs.filter(|a| a.len() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vb(oid: &[u64], v: i64) -> (Vec<u64>, Option<Value>) {
        (oid.to_vec(), Some(Value::Int(v)))
    }

    #[test]
    fn walks_stop_at_the_subtree_end_mib_view_and_loops() {
        let root = [1, 3, 6, 1, 2, 1, 2, 2, 1, 8];
        let mut rows = Vec::new();
        let step = walk_step(
            &root,
            &root,
            vec![
                vb(&[1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 1], 1),
                vb(&[1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 2], 1),
            ],
            &mut rows,
        );
        assert_eq!(step, Step::Continue(vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 2]));
        // Leaving the subtree.
        let step = walk_step(
            &root,
            &[1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 2],
            vec![
                vb(&[1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 3], 2),
                vb(&[1, 3, 6, 1, 2, 1, 2, 2, 1, 9, 1], 0),
            ],
            &mut rows,
        );
        assert_eq!(step, Step::Done);
        assert_eq!(rows.len(), 3);
        // An agent that answers the same OID again (a loop), or starts the table again,
        // is broken.
        let last = [1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 3];
        assert!(matches!(
            walk_step(&root, &last, vec![vb(&last, 1)], &mut rows),
            Step::Broken(why) if why.contains("came after")
        ));
        assert!(matches!(
            walk_step(
                &root,
                &last,
                vec![vb(&[1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 1], 1)],
                &mut rows
            ),
            Step::Broken(_)
        ));
        // A decreasing OID that leaves the table is a broken agent, not the table's end.
        assert!(matches!(
            walk_step(
                &root,
                &last,
                vec![vb(&[1, 3, 6, 1, 2, 1, 2, 2, 1, 7, 9], 1)],
                &mut rows
            ),
            Step::Broken(_)
        ));
        // endOfMibView.
        assert_eq!(
            walk_step(
                &root,
                &root,
                vec![(vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 9], None)],
                &mut rows
            ),
            Step::Done
        );
        // An empty answer.
        assert_eq!(walk_step(&root, &root, vec![], &mut rows), Step::Done);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn a_walk_is_bounded() {
        let root = [1, 3];
        let mut rows = Vec::new();
        let mut from = root.to_vec();
        let mut n = 0u64;
        loop {
            let batch = (0..50)
                .map(|_| {
                    n += 1;
                    vb(&[1, 3, n], 0)
                })
                .collect();
            match walk_step(&root, &from, batch, &mut rows) {
                Step::Continue(next) => from = next,
                Step::Done => panic!("a table that never ends ended"),
                Step::Broken(why) => {
                    assert!(why.contains("past 10000 rows"), "{why}");
                    break;
                }
            }
        }
        assert_eq!(rows.len(), MAX_ROWS);
    }

    #[test]
    fn oids() {
        assert_eq!(
            parse_oid("1.3.6.1.2.1.10.20"),
            Some(vec![1, 3, 6, 1, 2, 1, 10, 20])
        );
        assert_eq!(parse_oid(".1.3.6"), Some(vec![1, 3, 6]));
        assert_eq!(parse_oid("1.3.x"), None);
        assert_eq!(parse_oid("1"), None);
    }
}
