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
    let addrs: Vec<_> = tokio::net::lookup_host(address)
        .await
        .map_err(|source| ConnectError::Dns {
            address: address.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                // Probes are small request/response exchanges: send at once.
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
