//! `tcp`: connects to `host:port`, optionally sends a line and expects a string back.
//! While the connection is not answered, a new SYN is sent every third of the timeout
//! (three attempts, the first connection wins): a lost packet does not fail a probe the
//! way a dead service does (Linux itself retries a SYN only after one second).
//!
//! - **ok**: the connection was accepted (and `expect`, if set, was read).
//! - **degraded**: never; a TCP service either answers or it does not.
//! - **fail**: `dns`, `connect_refused`, `unreachable`, `connect_error`, `io_error`,
//!   `closed_early` (closed before `expect` arrived), `expect_mismatch` (64 KiB read
//!   without `expect`), or `timeout` (from the scheduler).
//!
//! Metrics: only the common `telagent_check_*` series.

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{excerpt, Check, Observation};
use crate::vocab::check_config;

/// Most bytes read while waiting for `expect`.
const MAX_READ: usize = 64 * 1024;

check_config! {
    /// `[[tcp]]`: a TCP service.
    TcpConfig {
        /// `host:port` to connect to.
        address: String,
        /// Text sent after connecting (TOML escapes such as `\r\n` apply).
        #[serde(default)]
        send: Option<String>,
        /// Text that must appear in what the service sends back.
        #[serde(default)]
        expect: Option<String>,
    }
}

impl TcpConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !crate::net::is_host_port(&self.address) {
            return Err((
                "address",
                format!(
                    "`{}` is not host:port (for example \"127.0.0.1:25\")",
                    self.address
                ),
            ));
        }
        if self.expect.as_deref() == Some("") {
            return Err(("expect", "must not be empty (leave it out instead)".into()));
        }
        Ok(())
    }
}

pub struct TcpCheck {
    config: TcpConfig,
    /// Time between two connection attempts while none answered.
    retry: std::time::Duration,
}

/// Connection attempts per probe.
const ATTEMPTS: u32 = 3;

impl TcpCheck {
    pub fn new(config: TcpConfig, timeout: std::time::Duration) -> Self {
        TcpCheck {
            config,
            retry: timeout / ATTEMPTS,
        }
    }
}

#[async_trait]
impl Check for TcpCheck {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &[
            "dns",
            "connect_refused",
            "unreachable",
            "connect_error",
            "io_error",
            "closed_early",
            "expect_mismatch",
        ]
    }

    async fn probe(&self) -> Observation {
        let c = &self.config;
        let mut stream = match crate::net::connect_redundant(&c.address, self.retry, ATTEMPTS).await
        {
            Ok(s) => s,
            Err(e) => return Observation::fail(e.error_type(), e.to_string()),
        };
        if let Some(send) = &c.send {
            if let Err(e) = stream.write_all(send.as_bytes()).await {
                return Observation::fail("io_error", format!("send to {}: {e}", c.address));
            }
        }
        let Some(expect) = &c.expect else {
            return Observation::ok(format!("connected to {}", c.address));
        };
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => {
                    return Observation::fail(
                        "closed_early",
                        format!(
                            "{} closed the connection before sending {expect:?}; got {:?}",
                            c.address,
                            excerpt(&seen, 80)
                        ),
                    )
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) => {
                    return Observation::fail("io_error", format!("read from {}: {e}", c.address))
                }
            }
            if contains(&seen, expect.as_bytes()) {
                return Observation::ok(format!("{} answered {:?}", c.address, excerpt(&seen, 80)));
            }
            if seen.len() >= MAX_READ {
                return Observation::fail(
                    "expect_mismatch",
                    format!(
                        "{} sent {} bytes without {expect:?}; starts with {:?}",
                        c.address,
                        seen.len(),
                        excerpt(&seen, 80)
                    ),
                );
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
