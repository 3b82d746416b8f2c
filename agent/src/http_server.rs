//! The API's HTTP server: the accept loop in front of the router, built so that no caller
//! can take the agent down.
//!
//! - At most `[api] max_connections` connections at a time (default 256), and at most
//!   `max_connections_per_address` (default 32) from one address. When an allowlist is
//!   configured, callers outside it share at most three quarters of the connections: the
//!   rest are kept for the allowlisted ones (Prometheus, HAProxy, the peers). A connection
//!   over a limit is closed at accept, before a byte is read, and counted.
//! - A request's headers must arrive within `request_timeout` (default 10 s), and so must
//!   a request body (read by the handlers that take one, after the caller is authorized);
//!   a keep-alive connection on which no new request starts within that time is closed.
//! - Out of file descriptors at accept: counted as the agent's own fault, the loop pauses
//!   briefly instead of spinning.
//!
//! Refusals of every kind are counted in `telagent_api_refused_total{reason}`; open
//! connections are `telagent_api_connections`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::faults::{self, Faults};
use crate::metrics::{Collector, Families};

/// `[api]`: limits of the HTTP API (read at start).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Most connections open at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections open at once from one address.
    #[serde(default = "default_max_per_address")]
    pub max_connections_per_address: usize,
    /// Longest wait for a request's headers (the next request's, on a kept-alive
    /// connection), and for its body.
    #[serde(default = "default_request_timeout", with = "crate::vocab::duration")]
    pub request_timeout: Duration,
    /// A second listener that serves the same API over HTTPS (`0.0.0.0:9443`).
    #[serde(default)]
    pub tls_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain of the HTTPS listener.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of the HTTPS listener.
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CA certificates: HTTPS clients must present a certificate one of them signed.
    #[serde(default)]
    pub tls_client_ca: Option<std::path::PathBuf>,
}

fn default_max_connections() -> usize {
    256
}
fn default_max_per_address() -> usize {
    32
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_per_address(),
            request_timeout: default_request_timeout(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

impl ApiConfig {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if self.max_connections < 4 {
            return Err(("api.max_connections".into(), "must be at least 4".into()));
        }
        if self.max_connections_per_address == 0 {
            return Err((
                "api.max_connections_per_address".into(),
                "must be at least 1".into(),
            ));
        }
        if self.request_timeout < Duration::from_millis(100) {
            return Err((
                "api.request_timeout".into(),
                "must be at least 100ms".into(),
            ));
        }
        let files = [
            self.tls_cert.is_some(),
            self.tls_key.is_some(),
            self.tls_client_ca.is_some(),
        ];
        match (self.tls_listen.is_some(), files) {
            (true, [true, true, _]) | (false, [false, false, false]) => Ok(()),
            (true, _) => Err((
                "api.tls_listen".into(),
                "HTTPS needs tls_cert and tls_key (PEM files)".into(),
            )),
            (false, _) => Err((
                "api.tls_listen".into(),
                "tls_cert, tls_key and tls_client_ca apply to the HTTPS listener: set tls_listen (\"0.0.0.0:9443\")".into(),
            )),
        }
    }

    /// These limits, with `max_connections` lowered to what the process' descriptor limit
    /// leaves after the checks and the agent's own files (64): connections must never
    /// take the descriptors the probes need.
    pub fn fitted(&self, checks: usize) -> ApiConfig {
        let Some(limit) = faults::fd_limit() else {
            return self.clone();
        };
        let room = (limit as usize).saturating_sub(64 + 2 * checks);
        if room >= self.max_connections {
            return self.clone();
        }
        let fitted = room.max(4);
        tracing::warn!(
            descriptors = limit,
            checks,
            max_connections = self.max_connections,
            fitted,
            "The descriptor limit leaves room for only {fitted} API connections besides the checks; raise LimitNOFILE (ulimit -n) to allow [api] max_connections."
        );
        ApiConfig {
            max_connections: fitted,
            max_connections_per_address: self.max_connections_per_address.min(fitted),
            ..self.clone()
        }
    }

    /// The keys read only at start (all but the TLS files, which a reload reads again).
    pub fn fixed(&self) -> ApiConfig {
        ApiConfig {
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            ..self.clone()
        }
    }
}

/// Why a caller was turned away: the `reason` label.
pub const REASONS: [&str; 7] = [
    "not_allowed",
    "bad_token",
    "writes_disabled",
    "throttled",
    "too_many_connections",
    "body_too_large",
    "body_timeout",
];

/// Refusals and connections, for /metrics, and the summary log line.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; REASONS.len()],
    /// Counts at the last summary line.
    logged: Mutex<[u64; REASONS.len()]>,
    connections: AtomicU64,
}

impl Refusals {
    /// Counts a refusal; the first of an interval is logged at once, the rest in the
    /// interval's summary.
    pub fn count(&self, reason: &'static str, caller: IpAddr, why: &str) {
        let Some(i) = REASONS.iter().position(|r| *r == reason) else {
            return;
        };
        let before = self.counts[i].fetch_add(1, Ordering::Relaxed);
        let logged = self
            .logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[i];
        if before == logged {
            tracing::warn!(%caller, reason, why, "API call refused; more of the same are summed up once a minute.");
        }
    }

    /// Logs what was refused since the last summary, if anything.
    pub fn summarize(&self) {
        let mut logged = self
            .logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut parts = Vec::new();
        for (i, reason) in REASONS.iter().enumerate() {
            let now = self.counts[i].load(Ordering::Relaxed);
            if now > logged[i] + 1 {
                parts.push(format!("{reason} {}", now - logged[i]));
            }
            logged[i] = now;
        }
        if !parts.is_empty() {
            tracing::warn!(refused = %parts.join(", "), "API calls refused in the last minute.");
        }
    }
}

impl Collector for Refusals {
    fn collect(&self, f: &mut Families) {
        for (i, reason) in REASONS.iter().enumerate() {
            f.counter(
                "telagent_api_refused_total",
                "API calls and connections refused, by reason.",
                &[("reason", reason)],
                self.counts[i].load(Ordering::Relaxed) as f64,
            );
        }
        f.gauge(
            "telagent_api_connections",
            "HTTP connections open now.",
            &[],
            self.connections.load(Ordering::Relaxed) as f64,
        );
    }
}

/// Repeated authorization failures per caller address: after `MAX_FAILURES` within a
/// minute, the address gets 429 without its token being looked at, until the minute
/// is over.
#[derive(Debug, Default)]
pub struct Throttle(Mutex<HashMap<IpAddr, (Instant, u32)>>);

const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (an attack from many addresses cannot grow the map).
const MAX_TRACKED: usize = 4096;

impl Throttle {
    /// Seconds until `ip` may try again, if it is throttled now.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, n) = map.get(&ip)?;
        let left = WINDOW.checked_sub(start.elapsed())?;
        (*n >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    /// Notes a failed authorization from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let e = map.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

/// Who may hold connections: the allowlist, if any.
pub type Trusted = Arc<dyn Fn(IpAddr) -> Option<bool> + Send + Sync>;

/// Connections open per address, and of callers outside the allowlist.
#[derive(Default)]
struct Open {
    per_address: HashMap<IpAddr, usize>,
    strangers: usize,
    all: usize,
}

/// One admitted connection; gives its place back when dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
    stranger: bool,
    refusals: Arc<Refusals>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut o = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        o.all -= 1;
        if self.stranger {
            o.strangers -= 1;
        }
        if let Some(n) = o.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.per_address.remove(&self.ip);
            }
        }
        self.refusals.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TLS settings a listener serves with now (replaced at each reload).
pub type TlsSlot = Arc<std::sync::RwLock<Option<Arc<rustls::ServerConfig>>>>;

/// What every listener of the API shares: the limits and the connections they count.
#[derive(Clone)]
pub struct Gate {
    pub limits: ApiConfig,
    pub trusted: Trusted,
    pub refusals: Arc<Refusals>,
    pub faults: Arc<Faults>,
    open: Arc<Mutex<Open>>,
}

impl Gate {
    pub fn new(
        limits: ApiConfig,
        trusted: Trusted,
        refusals: Arc<Refusals>,
        faults: Arc<Faults>,
    ) -> Gate {
        Gate {
            limits,
            trusted,
            refusals,
            faults,
            open: Arc::default(),
        }
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `cancel`; then lets
/// open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    gate: Gate,
    tls: Option<TlsSlot>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let Gate {
        limits,
        trusted,
        refusals,
        faults,
        open,
    } = gate;
    let mut connections = tokio::task::JoinSet::new();
    let mut summary = tokio::time::interval(Duration::from_secs(60));
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = summary.tick() => {
                refusals.summarize();
                continue;
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) if faults::is_fd_exhaustion(&e) => {
                    faults.count(faults::FD_EXHAUSTED, "accepting an API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Accepting a connection failed.");
                    continue;
                }
            },
        };
        let Some(admitted) = admit(&open, &limits, &trusted, &refusals, peer.ip()) else {
            drop(stream);
            continue;
        };
        let (router, limits, cancel) = (router.clone(), limits.clone(), cancel.clone());
        let tls = tls.as_ref().and_then(|slot| {
            slot.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        });
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => connection(stream, peer, router, &limits, cancel).await,
                Some(config) => {
                    // The handshake is bounded like a request's headers.
                    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(limits.request_timeout, accept).await {
                        Ok(Ok(tls)) => connection(tls, peer, router, &limits, cancel).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed."),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
                    }
                }
            }
            drop(admitted);
        });
    }
    // Open connections finish their requests; the caller bounds how long that may take.
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Takes a place for a connection from `ip`, or counts the refusal.
fn admit(
    open: &Arc<Mutex<Open>>,
    limits: &ApiConfig,
    trusted: &Trusted,
    refusals: &Arc<Refusals>,
    ip: IpAddr,
) -> Option<Admitted> {
    let stranger = trusted(ip) == Some(false);
    let mut o = open
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mine = o.per_address.get(&ip).copied().unwrap_or(0);
    let stranger_share = limits.max_connections * 3 / 4;
    let full = if o.all >= limits.max_connections {
        Some(format!("{} connections open (max_connections)", o.all))
    } else if mine >= limits.max_connections_per_address {
        Some(format!(
            "{mine} connections open from this address (max_connections_per_address)"
        ))
    } else if stranger && o.strangers >= stranger_share {
        Some(format!(
            "{} connections open from callers outside the allowlist (their share: {stranger_share})",
            o.strangers
        ))
    } else {
        None
    };
    if let Some(why) = full {
        drop(o);
        refusals.count("too_many_connections", ip, &why);
        return None;
    }
    o.all += 1;
    *o.per_address.entry(ip).or_insert(0) += 1;
    if stranger {
        o.strangers += 1;
    }
    refusals.connections.fetch_add(1, Ordering::Relaxed);
    Some(Admitted {
        open: open.clone(),
        ip,
        stranger,
        refusals: refusals.clone(),
    })
}

/// Serves one connection: HTTP/1.1, each request's headers within `request_timeout` (the
/// wait for the next one on a kept-alive connection included).
async fn connection<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    limits: &ApiConfig,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_blocks_after_repeated_failures_only() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed(ip);
        }
        assert_eq!(t.blocked(ip), None);
        t.failed(ip);
        assert!(t.blocked(ip).is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(t.blocked("192.0.2.8".parse().unwrap()), None);
    }

    #[test]
    fn limits_per_address_and_for_strangers() {
        let open: Arc<Mutex<Open>> = Arc::default();
        let limits = ApiConfig {
            max_connections: 8,
            max_connections_per_address: 4,
            ..Default::default()
        };
        let trusted: Trusted = Arc::new(|ip: IpAddr| Some(ip.is_loopback()));
        let r = Arc::new(Refusals::default());
        let friend: IpAddr = "127.0.0.1".parse().unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(admit(&open, &limits, &trusted, &r, a).unwrap());
        }
        assert!(
            admit(&open, &limits, &trusted, &r, a).is_none(),
            "per address"
        );
        for _ in 0..2 {
            held.push(admit(&open, &limits, &trusted, &r, b).unwrap());
        }
        assert!(
            admit(&open, &limits, &trusted, &r, b).is_none(),
            "strangers share 6 of 8"
        );
        held.push(admit(&open, &limits, &trusted, &r, friend).unwrap());
        held.push(admit(&open, &limits, &trusted, &r, friend).unwrap());
        assert!(
            admit(&open, &limits, &trusted, &r, friend).is_none(),
            "all 8"
        );
        assert_eq!(r.counts[4].load(Ordering::Relaxed), 3);
        held.clear();
        assert_eq!(open.lock().unwrap().all, 0, "every place given back");
        assert_eq!(r.connections.load(Ordering::Relaxed), 0);
    }
}
