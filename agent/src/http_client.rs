//! A small HTTP/1.1 client (hyper) for the `http` check, the CLI and the tests.
//!
//! One request per connection, a bounded body, and errors that tell garbage from a peer that
//! closed mid-answer. No timeout of its own: callers bound the whole call.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;

use crate::net::ConnectError;

/// A complete response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{url}` is not an http:// URL with a host: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{url} sent something that is not HTTP: {source}")]
    BadResponse { url: String, source: hyper::Error },
    #[error("{url} closed the connection in the middle of the response")]
    ClosedEarly { url: String },
    #[error("{url} answered with a body over {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
    #[error("request to {url} failed: {source}")]
    Other { url: String, source: hyper::Error },
}

impl HttpError {
    /// The bounded label value of this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            HttpError::BadUrl { .. } => "bad_url",
            HttpError::Connect(e) => e.error_type(),
            HttpError::BadResponse { .. } => "bad_response",
            HttpError::ClosedEarly { .. } => "closed_early",
            HttpError::BodyTooLarge { .. } => "body_too_large",
            HttpError::Other { .. } => "io_error",
        }
    }
}

/// Checks that `url` is a plain http:// URL with a host; returns `host:port` and the path.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("https is not supported; use http:// or a tcp check".into()),
        _ => return Err("the scheme must be http://".into()),
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    Ok((format!("{host}:{port}"), path))
}

/// Sends one request and reads the whole response, refusing bodies over `max_body` bytes.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    max_body: usize,
) -> Result<Response, HttpError> {
    let bad_url = |reason: String| HttpError::BadUrl {
        url: url.to_string(),
        reason,
    };
    let (authority, path) = split_url(url).map_err(bad_url)?;
    let stream = crate::net::connect(&authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| HttpError::Other {
            url: url.to_string(),
            source,
        })?;
    // The connection task ends with the socket; abort it if this future is dropped.
    let conn = AbortOnDrop(tokio::spawn(conn));

    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(
            hyper::header::USER_AGENT,
            concat!("telagent/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| bad_url(e.to_string()))?;
    for (k, v) in headers {
        let name = HeaderName::try_from(k.as_str()).map_err(|e| bad_url(e.to_string()))?;
        let value = HeaderValue::try_from(v.as_str()).map_err(|e| bad_url(e.to_string()))?;
        req.headers_mut().insert(name, value);
    }
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| classify(url, e))?;
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify(url, e))?;
        if let Some(chunk) = frame.data_ref() {
            if data.len() + chunk.len() > max_body {
                return Err(HttpError::BodyTooLarge {
                    url: url.to_string(),
                    limit: max_body,
                });
            }
            data.extend_from_slice(chunk);
        }
    }
    drop(conn);
    Ok(Response {
        status,
        headers: parts.headers,
        body: data,
    })
}

/// GET with no extra headers.
pub async fn get(url: &str, max_body: usize) -> Result<Response, HttpError> {
    request("GET", url, &[], Vec::new(), max_body).await
}

fn classify(url: &str, source: hyper::Error) -> HttpError {
    let url = url.to_string();
    if source.is_parse() || source.is_parse_status() {
        HttpError::BadResponse { url, source }
    } else if source.is_incomplete_message() || cut_short(&source) {
        HttpError::ClosedEarly { url }
    } else {
        HttpError::Other { url, source }
    }
}

/// True when an I/O error under `e` says the peer went away mid-message (EOF inside a
/// body, reset).
fn cut_short(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(io.kind(), UnexpectedEof | ConnectionReset | BrokenPipe);
        }
        cause = c.source();
    }
    false
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/health?x=1").unwrap(),
            ("127.0.0.1:8080".to_string(), "/health?x=1".to_string())
        );
        assert_eq!(
            split_url("http://fax1").unwrap(),
            ("fax1:80".to_string(), "/".to_string())
        );
        assert!(split_url("https://fax1/").unwrap_err().contains("https"));
        assert!(split_url("ftp://fax1/").is_err());
        assert!(split_url("not a url").is_err());
    }
}
