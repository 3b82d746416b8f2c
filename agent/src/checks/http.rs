//! `http`: one HTTP/1.1 request; judges the status code and, optionally, the body.
//!
//! - **ok**: the status is expected (`expect_status`, default any 2xx or 3xx) and the body
//!   contains `expect_body` if set.
//! - **degraded**: the status is listed in `degraded_status` (say 503: alive, no capacity).
//! - **fail**: `bad_url`, `dns`, `connect_refused`, `unreachable`, `connect_error`, `bad_response` (not
//!   HTTP), `closed_early` (closed mid-response), `body_too_large`, `unexpected_status`,
//!   `body_mismatch`, `io_error`, or `timeout` (from the scheduler).
//!
//! Metrics: `telagent_http_status_code{check}` and `telagent_http_response_bytes{check}`
//! of the last response, beside the common `telagent_check_*` series.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{excerpt, Check, Observation};
use crate::http_client;
use crate::vocab::check_config;

check_config! {
    /// `[[http]]`: an HTTP endpoint.
    HttpConfig {
        /// `http://host[:port]/path`.
        url: String,
        /// Request method.
        #[serde(default = "default_method")]
        method: String,
        /// Extra request headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Status codes that mean ok; empty means any 2xx or 3xx.
        #[serde(default)]
        expect_status: Vec<u16>,
        /// Status codes that mean alive but degraded.
        #[serde(default)]
        degraded_status: Vec<u16>,
        /// Text that must appear in the body.
        #[serde(default)]
        expect_body: Option<String>,
        /// Largest body read; a longer one fails as `body_too_large`.
        #[serde(default = "default_max_body_bytes")]
        max_body_bytes: usize,
    }
}

fn default_method() -> String {
    "GET".into()
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

impl HttpConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        http_client::split_url(&self.url).map_err(|reason| {
            (
                "url",
                format!(
                    "`{}` is not usable: {reason} (for example \"http://127.0.0.1:8080/health\")",
                    self.url
                ),
            )
        })?;
        if !matches!(self.method.as_str(), "GET" | "HEAD" | "POST" | "OPTIONS") {
            return Err(("method", "must be GET, HEAD, POST or OPTIONS".into()));
        }
        for (key, codes) in [
            ("expect_status", &self.expect_status),
            ("degraded_status", &self.degraded_status),
        ] {
            if let Some(c) = codes.iter().find(|c| !(100..=599).contains(*c)) {
                return Err((key, format!("{c} is not an HTTP status code (100 to 599)")));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(("max_body_bytes", "must be at least 1".into()));
        }
        Ok(())
    }

    fn status_ok(&self, code: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..400).contains(&code)
        } else {
            self.expect_status.contains(&code)
        }
    }
}

pub struct HttpCheck {
    config: HttpConfig,
    headers: Vec<(String, String)>,
}

impl HttpCheck {
    pub fn new(config: HttpConfig) -> Self {
        let headers = config
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        HttpCheck { config, headers }
    }
}

#[async_trait]
impl Check for HttpCheck {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn error_types(&self) -> &'static [&'static str] {
        &[
            "dns",
            "connect_refused",
            "unreachable",
            "connect_error",
            "bad_response",
            "closed_early",
            "body_too_large",
            "unexpected_status",
            "body_mismatch",
            "io_error",
            "bad_url",
        ]
    }

    async fn probe(&self) -> Observation {
        let c = &self.config;
        let resp = match http_client::request(
            &c.method,
            &c.url,
            &self.headers,
            Vec::new(),
            c.max_body_bytes,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return Observation::fail(e.error_type(), e.to_string()),
        };
        let code = resp.status;
        let obs = if c.degraded_status.contains(&code) {
            Observation::degraded("unexpected_status", format!("{} answered {code}", c.url))
        } else if !c.status_ok(code) {
            Observation::fail(
                "unexpected_status",
                format!(
                    "{} answered {code}; body starts {:?}",
                    c.url,
                    excerpt(&resp.body, 80)
                ),
            )
        } else {
            match &c.expect_body {
                Some(want) if !String::from_utf8_lossy(&resp.body).contains(want.as_str()) => {
                    Observation::fail(
                        "body_mismatch",
                        format!(
                            "{} answered {code} without {want:?} in the body; body starts {:?}",
                            c.url,
                            excerpt(&resp.body, 80)
                        ),
                    )
                }
                _ => Observation::ok(format!("{} answered {code}", c.url)),
            }
        };
        obs.with_value(
            "status_code",
            "HTTP status code of the last response.",
            code.into(),
        )
        .with_value(
            "response_bytes",
            "Body size of the last response in bytes.",
            resp.body.len() as f64,
        )
    }
}
