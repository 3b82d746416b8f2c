//! Outbound TCP connections with errors that say what failed and map to a bounded type.

use tokio::net::TcpStream;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {address}: {source}; check the host name and /etc/hosts or DNS")]
    Dns {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} resolves to no address")]
    NoAddress { address: String },
    #[error("connection to {address} refused: nothing listens there (is the service running?)")]
    Refused { address: String },
    #[error("cannot connect to {address}: {source}")]
    Other {
        address: String,
        source: std::io::Error,
    },
}

impl ConnectError {
    /// The bounded label value of this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            ConnectError::Dns { .. } | ConnectError::NoAddress { .. } => "dns",
            ConnectError::Refused { .. } => "connect_refused",
            ConnectError::Other { source, .. } => match source.kind() {
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                    "unreachable"
                }
                _ => "connect_error",
            },
        }
    }
}

/// Resolves `host:port` and connects to the first address that accepts.
pub async fn connect(address: &str) -> Result<TcpStream, ConnectError> {
    connect_redundant(address, std::time::Duration::from_secs(3600), 1).await
}

/// [`connect`], with our own retransmission of a lost SYN: a new attempt every `every`
/// (at most `attempts` in all) while none has answered, the first connection wins. Linux
/// sends a lost SYN again only after a second, longer than many probe timeouts; without
/// this, one lost packet of twenty would fail a probe. A refusal or an error is an
/// answer: it ends the wait at once.
pub async fn connect_redundant(
    address: &str,
    every: std::time::Duration,
    attempts: u32,
) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<_> = tokio::net::lookup_host(address)
        .await
        .map_err(|source| ConnectError::Dns {
            address: address.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        // The first attempt runs in this task; a SYN sent again is a task of its own, only
        // once `every` has passed without an answer (rare: most answer before).
        let first = TcpStream::connect(addr);
        tokio::pin!(first);
        let mut set = tokio::task::JoinSet::new();
        let mut started = 1;
        let outcome = loop {
            tokio::select! {
                r = &mut first => match r {
                    Ok(s) => break Ok(s),
                    // A refusal or an error is an answer.
                    Err(e) => break Err(e),
                },
                r = set.join_next(), if !set.is_empty() => match r {
                    Some(Ok(Ok(s))) => break Ok(s),
                    Some(Ok(Err(e))) => break Err(e),
                    // A task cannot panic or be cancelled here; take it as no answer.
                    Some(Err(_)) | None => {}
                },
                _ = tokio::time::sleep(every), if started < attempts => {
                    set.spawn(TcpStream::connect(addr));
                    started += 1;
                }
                else => break Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
            }
        };
        match outcome {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let address = address.to_string();
    Err(match last {
        None => ConnectError::NoAddress { address },
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            ConnectError::Refused { address }
        }
        Some(source) => ConnectError::Other { address, source },
    })
}

/// True when `s` is `host:port` with a non-empty host and a port from 1 to 65535.
pub fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_rules() {
        assert!(is_host_port("127.0.0.1:25"));
        assert!(is_host_port("[::1]:25"));
        assert!(is_host_port("fax1.example.org:4559"));
        assert!(!is_host_port("127.0.0.1"));
        assert!(!is_host_port("127.0.0.1:0"));
        assert!(!is_host_port(":25"));
        assert!(!is_host_port("host:99999"));
        assert!(!is_host_port("bad host:25"));
    }

    #[tokio::test]
    async fn refused_connection_is_typed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = connect(&addr).await.unwrap_err();
        assert_eq!(e.error_type(), "connect_refused");
        assert!(e.to_string().contains(&addr));
    }
}
