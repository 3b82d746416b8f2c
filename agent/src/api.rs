//! HTTP endpoints: `/` (the status page, [`crate::page`]), `/metrics`, `/healthz`, `/v1/status`,
//! `/v1/server` (this server's routing state, polled by peer agents), `/v1/server/health`
//! (200 while up or draining, 503 when down, unknown or without a `[[member]]`: HAProxy's
//! plain health check), `/v1/routes`, and
//! `POST /v1/server/maintenance` (drain for maintenance; bearer token and allowlist),
//! `POST /v1/events` (message events counted in the traffic store; bearer token and
//! allowlist) and `GET /v1/totals` (traffic totals over a window).
//!
//! Everything is read from what the parts of the agent publish (the model's checks, the
//! routing snapshot, the outputs' stats); no request triggers a probe.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::access::{Access, Refusal};
use crate::agent::{Info, ReloadStatus};
use crate::engine::model::{rfc3339, Model, TargetDoc};
use crate::http_server::{Refusals, Throttle};
use crate::routing::decision::ServerState;
use crate::routing::Snapshot;
use crate::serial::inventory::{Inventory, PortInfo};

pub struct ApiState {
    pub info: Arc<Info>,
    pub model: Arc<Model>,
    pub inventory: Arc<Inventory>,
    pub cluster: watch::Receiver<Arc<Snapshot>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Replaced at each reload.
    pub access: RwLock<Access>,
    pub traffic: Arc<crate::traffic::Traffic>,
    /// The last transitions, for the status page.
    pub recent: Arc<crate::audit::Recent>,
    /// The operator's maintenance drain, told to the routing task.
    pub maintenance: watch::Sender<Option<String>>,
    /// Where the drain is kept across restarts.
    pub maintenance_file: std::path::PathBuf,
    /// Refused calls, counted and summed up in the log.
    pub refusals: Arc<Refusals>,
    /// Callers that keep failing authorization.
    pub throttle: Throttle,
    /// Longest wait for a request body.
    pub body_timeout: std::time::Duration,
    /// Event bodies read at once (each up to 32 MiB): what bounds their memory.
    pub event_bodies: tokio::sync::Semaphore,
}

/// Event batches read and counted at once, of any callers.
pub const EVENT_BODIES: usize = 2;

/// Largest maintenance request: `{"drain": true, "reason": "..."}`.
const MAX_MAINTENANCE_BODY: usize = 4096;

/// /v1/status: every target, its state, since when, its last observation and last error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDoc {
    pub server: String,
    pub version: String,
    #[serde(with = "rfc3339")]
    pub started_at: std::time::SystemTime,
    pub config: ReloadStatus,
    pub targets: Vec<TargetDoc>,
    pub ports: Vec<PortInfo>,
    /// The cluster as this agent sees it (servers, routes), when members are configured.
    #[serde(default)]
    pub cluster: Option<Snapshot>,
    /// What is wrong with the agent itself (a traffic store that could not be opened or
    /// was damaged); empty when nothing is.
    #[serde(default)]
    pub problems: Vec<String>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    // Read-only endpoints that `access.protect_reads` restricts to the allowlist.
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/server", get(server))
        .route("/v1/routes", get(routes))
        .route("/v1/totals", get(totals))
        .route("/v1/lines", get(lines))
        .route("/v1/attempts", get(attempts))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard_reads));
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/v1/server/health", get(server_health))
        .route("/v1/server/maintenance", post(maintenance))
        .route("/v1/events", post(events))
        .merge(reads)
        .fallback(not_found)
        .with_state(state)
}

fn access(s: &ApiState) -> Access {
    s.access
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn refuse(s: &ApiState, r: Refusal, caller: SocketAddr, uri: &Uri) -> Response {
    let reason = r.reason();
    let (code, why) = match r {
        Refusal::NotAllowed(w) | Refusal::WritesDisabled(w) => (StatusCode::FORBIDDEN, w),
        Refusal::BadToken(w) => (StatusCode::UNAUTHORIZED, w),
    };
    // Guessing tokens is what the throttle slows down; a caller outside the allowlist
    // is refused from its address alone, cheaply, every time.
    if reason == "bad_token" {
        s.throttle.failed(caller.ip());
    }
    s.refusals
        .count(reason, caller.ip(), &format!("{} {why}", uri.path()));
    (code, format!("{why}\n")).into_response()
}

/// Checks a state-changing request from its headers alone, before a byte of its body is
/// read: the throttle, the allowlist and the bearer token. The refusal to answer, if
/// refused.
fn refuse_write(
    s: &ApiState,
    caller: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    if let Some(wait) = s.throttle.blocked(caller.ip()) {
        s.refusals.count(
            "throttled",
            caller.ip(),
            "too many failed authorizations in a minute",
        );
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, wait.to_string())],
                "too many failed authorizations from this address; try again later\n",
            )
                .into_response(),
        );
    }
    // The field may not be repeated (RFC 9110 11.6.2): two are refused, not picked from.
    if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        let r = Refusal::BadToken(format!(
            "{} sent more than one Authorization header",
            caller.ip()
        ));
        return Some(refuse(s, r, caller, uri));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    access(s)
        .check_write(caller.ip(), auth)
        .err()
        .map(|r| refuse(s, r, caller, uri))
}

/// Reads an authorized request's body: at most `limit` bytes, within the body timeout.
async fn read_body(
    s: &ApiState,
    caller: SocketAddr,
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, Response> {
    match tokio::time::timeout(s.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|c| c.is::<http_body_util::LengthLimitError>());
            if too_large {
                s.refusals.count(
                    "body_too_large",
                    caller.ip(),
                    &format!("a body over {limit} bytes"),
                );
                Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {limit} bytes\n"),
                )
                    .into_response())
            } else {
                Err((
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}\n"),
                )
                    .into_response())
            }
        }
        Err(_) => {
            s.refusals.count(
                "body_timeout",
                caller.ip(),
                "the body did not arrive in time",
            );
            Err((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}\n",
                    humantime::format_duration(s.body_timeout)
                ),
            )
                .into_response())
        }
    }
}

/// Refuses a read from a caller outside the allowlist when reads are protected.
async fn guard_reads(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    match access(&s).check_read(caller.ip()) {
        Ok(()) => next.run(req).await,
        Err(r) => {
            let uri = req.uri().clone();
            refuse(&s, r, caller, &uri)
        }
    }
}

async fn server(State(s): State<Arc<ApiState>>) -> Response {
    let doc = s.cluster.borrow().doc();
    match doc {
        Some(doc) => Json(doc).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no [[member]] for this server is configured\n",
        )
            .into_response(),
    }
}

async fn server_health(State(s): State<Arc<ApiState>>) -> Response {
    let snap = s.cluster.borrow().clone();
    match snap.own() {
        Some(v) if matches!(v.state, ServerState::Up | ServerState::Drain) => {
            (StatusCode::OK, format!("{}\n", v.state.as_str())).into_response()
        }
        // Panic mode keeps every server of the group routed: HAProxy too.
        Some(v) if snap.in_panic(&v.name) => (
            StatusCode::OK,
            format!("{}, routed in panic mode: {}\n", v.state.as_str(), v.reason),
        )
            .into_response(),
        Some(v) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}: {}\n", v.state.as_str(), v.reason),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no [[member]] for this server is configured\n",
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct RoutesQuery {
    group: Option<String>,
}

async fn routes(State(s): State<Arc<ApiState>>, Query(q): Query<RoutesQuery>) -> Response {
    let all = s.cluster.borrow().routes.clone();
    match q.group {
        None => Json(all).into_response(),
        Some(g) => match all.into_iter().find(|r| r.group == g) {
            Some(r) => Json(vec![r]).into_response(),
            None => (StatusCode::NOT_FOUND, format!("no routing group `{g}`\n")).into_response(),
        },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Maintenance {
    drain: bool,
    #[serde(default)]
    reason: Option<String>,
}

async fn maintenance(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(refused) = refuse_write(&s, caller, &uri, &headers) {
        return refused;
    }
    let body = match read_body(&s, caller, body, MAX_MAINTENANCE_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let m: Maintenance = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"drain\": true|false, \"reason\": \"...\"}}: {e}\n"),
            )
                .into_response()
        }
    };
    let reason = m
        .reason
        .unwrap_or_else(|| format!("set by {}", caller.ip()));
    // Kept on disk before it is acted on: a drain survives a restart of the agent.
    let (file, kept) = (s.maintenance_file.clone(), m.drain.then(|| reason.clone()));
    let saved = tokio::task::spawn_blocking(move || {
        crate::routing::save_maintenance(&file, kept.as_deref())
    })
    .await;
    if !matches!(saved, Ok(Ok(()))) {
        let why = match saved {
            Ok(Err(e)) => e.to_string(),
            _ => "the writer task ended".to_string(),
        };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "cannot keep the drain in {}: {why}; nothing was changed, try again\n",
                s.maintenance_file.display()
            ),
        )
            .into_response();
    }
    s.maintenance.send_replace(m.drain.then(|| reason.clone()));
    tracing::warn!(caller = %caller.ip(), drain = m.drain, reason = %reason, "Maintenance drain changed.");
    (
        StatusCode::OK,
        if m.drain {
            "draining\n"
        } else {
            "maintenance ended\n"
        },
    )
        .into_response()
}

async fn events(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(refused) = refuse_write(&s, caller, &uri, &headers) {
        return refused;
    }
    // At most EVENT_BODIES batches in memory at once; the others wait their turn.
    let Ok(Ok(_turn)) = tokio::time::timeout(s.body_timeout, s.event_bodies.acquire()).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "busy counting other batches; send this one again\n",
        )
            .into_response();
    };
    let body = match read_body(&s, caller, body, crate::traffic::events::MAX_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let large = body.len() > 1 << 20;
    let traffic = s.traffic.clone();
    let outcome = tokio::task::spawn_blocking(move || traffic.post(&body)).await;
    use crate::traffic::{store::Ingested, PostError};
    let (label, response) = match outcome {
        Ok(Ok(Ingested::Counted(n))) => (
            "counted",
            Json(serde_json::json!({"counted": n, "duplicate": false})).into_response(),
        ),
        Ok(Ok(Ingested::Duplicate)) => (
            "duplicate",
            Json(serde_json::json!({"counted": 0, "duplicate": true})).into_response(),
        ),
        Ok(Err(PostError::Invalid(why))) => {
            // What a caller sent is quoted, never copied whole into the log or the answer.
            let why = crate::checks::excerpt(why.as_bytes(), 300);
            tracing::warn!(caller = %caller.ip(), reason = %why, "Event batch rejected.");
            (
                "rejected",
                (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
            )
        }
        Ok(Err(PostError::Store(why))) => {
            tracing::error!(error = %why, "Event batch not stored.");
            (
                "failed",
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{why}; nothing of the batch was counted, send it again\n"),
                )
                    .into_response(),
            )
        }
        Err(_) => (
            "failed",
            (StatusCode::INTERNAL_SERVER_ERROR, "the store task ended\n").into_response(),
        ),
    };
    s.traffic.stats.batch(label);
    if large {
        // Give the pages of a large batch back to the system, not only to the allocator.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttemptsParams {
    since: i64,
    line: String,
    direction: Option<String>,
    server: Option<String>,
}

/// `GET /v1/attempts?since=<unix seconds>&line=L[&direction=sent|received][&server=NAME]`:
/// the newest attempts of a line (at most 1,000), newest first: how a peer's canary finds
/// its page received here.
async fn attempts(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<AttemptsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let usage = "expected ?since=<unix seconds>&line=LINE[&direction=sent|received][&server=NAME]";
    let p = match q {
        Ok(Query(p)) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}; {usage}\n")).into_response(),
    };
    let now = crate::traffic::events::unix_now();
    let direction = match p.direction.as_deref() {
        None => None,
        Some(d) => match crate::traffic::Direction::parse(d) {
            Some(d) => Some(d),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("direction `{d}` is not sent or received; {usage}\n"),
                )
                    .into_response()
            }
        },
    };
    if !(0..=now).contains(&p.since) || p.line.is_empty() || p.line.len() > 64 {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "since must be Unix seconds from 0 to now and line 1 to 64 characters; {usage}\n"
            ),
        )
            .into_response();
    }
    let traffic = s.traffic.clone();
    match store_query(move || traffic.attempts(p.since, &p.line, direction, p.server.as_deref()))
        .await
    {
        Ok(a) => {
            Json(serde_json::json!({ "server": s.traffic.server, "attempts": a })).into_response()
        }
        Err(r) => r,
    }
}

/// Runs a query of the traffic store off the async threads: its answer, or the response
/// that says why there is none (503 without a store).
async fn store_query<T: Send + 'static>(
    q: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(q).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()),
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the query ended abnormally: {e}\n"),
        )
            .into_response()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinesParams {
    since: i64,
    server: Option<String>,
    by: Option<String>,
    limit: Option<usize>,
}

/// Most destinations one answer lists.
const MAX_DESTINATIONS: usize = 1000;

/// `GET /v1/lines?since=<unix seconds>[&server=NAME][&by=destination[&limit=N]]`: per line
/// and direction (or per remote end) since `since`: attempts, success, pages, rates,
/// failure classes, last success.
async fn lines(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<LinesParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let usage =
        "expected ?since=<unix seconds>[&server=NAME][&by=line|destination][&limit=1..1000]";
    let p = match q {
        Ok(Query(p)) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}; {usage}\n")).into_response(),
    };
    let now = crate::traffic::events::unix_now();
    let by_destination = match p.by.as_deref() {
        None | Some("line") => false,
        Some("destination") => true,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("by `{other}` is not line or destination; {usage}\n"),
            )
                .into_response()
        }
    };
    let limit = p.limit.unwrap_or(20);
    let bad = if !(0..=now).contains(&p.since) {
        Some(format!(
            "since {} is not Unix seconds from 0 to now ({now})",
            p.since
        ))
    } else if !(1..=MAX_DESTINATIONS).contains(&limit) {
        Some(format!("limit {limit} is not 1 to {MAX_DESTINATIONS}"))
    } else {
        None
    };
    if let Some(why) = bad {
        return (StatusCode::BAD_REQUEST, format!("{why}; {usage}\n")).into_response();
    }
    let traffic = s.traffic.clone();
    let server = p.server.clone();
    let answer = store_query(move || {
        if by_destination {
            traffic
                .destinations(p.since, server.as_deref(), limit)
                .map(|d| serde_json::json!({ "destinations": d }))
        } else {
            traffic
                .lines(p.since, server.as_deref())
                .map(|l| serde_json::json!({ "lines": l }))
        }
    })
    .await;
    match answer {
        Ok(mut body) => {
            body["server"] = serde_json::json!(s.traffic.server);
            body["since"] = serde_json::json!(p.since);
            Json(body).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct TotalsParams {
    since: i64,
    until: Option<i64>,
    server: Option<String>,
    by: Option<crate::traffic::totals::Split>,
}

async fn totals(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<TotalsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(p)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            "expected ?since=<unix seconds>[&until=<unix seconds>][&server=NAME][&by=line|hour]\n",
        )
            .into_response();
    };
    let now = crate::traffic::events::unix_now();
    let query = crate::traffic::totals::Query {
        since: p.since,
        // The window ends after the current second: an event of this second counts.
        until: p.until.unwrap_or(now + 1),
        server: p.server,
        by: p.by,
    };
    // From 1970 to a century ahead: anything else is a mistake, not a window.
    let latest = now + 100 * 365 * 86_400;
    let bad = if !(0..=latest).contains(&query.since) || !(0..=latest).contains(&query.until) {
        Some(format!(
            "since and until must be Unix seconds between 0 and {latest}"
        ))
    } else if query.since >= query.until {
        Some(format!(
            "the window is empty: since ({}) is not before until ({})",
            query.since, query.until
        ))
    } else {
        None
    };
    if let Some(why) = bad {
        return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
    }
    let traffic = s.traffic.clone();
    let q2 = query.clone();
    // Rows, or the servers known when the one asked about is not among them.
    let answer = tokio::task::spawn_blocking(move || -> Result<_, String> {
        if let Some(server) = &q2.server {
            let known = traffic.servers()?;
            if !known.contains(server) {
                return Ok(Err(known));
            }
        }
        Ok(Ok(traffic.totals(&q2)?))
    })
    .await;
    match answer {
        Ok(Ok(Ok(rows))) => Json(serde_json::json!({
            "server": s.traffic.server,
            "query": query,
            "rows": rows,
        }))
        .into_response(),
        Ok(Ok(Err(known))) => (
            StatusCode::NOT_FOUND,
            format!(
                "no traffic was ever counted for server `{}` here; the servers known are: {}\n",
                query.server.as_deref().unwrap_or(""),
                if known.is_empty() {
                    "(none)".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the store task ended\n").into_response(),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    part: Option<String>,
}

async fn index(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let only_main = matches!(&q, Ok(Query(PageQuery { part: Some(p) })) if p == "main");
    let now = std::time::SystemTime::now();
    let midnight = {
        let t = crate::traffic::events::unix_now();
        t - t.rem_euclid(86_400)
    };
    let traffic = s.traffic.clone();
    let today = tokio::task::spawn_blocking(move || {
        traffic.totals(&crate::traffic::totals::Query {
            since: midnight,
            until: crate::traffic::events::unix_now() + 1,
            server: None,
            by: None,
        })
    })
    .await
    .unwrap_or_else(|_| Err("the store task ended".into()));
    let recent = s.recent.entries();
    let cluster = s.cluster.borrow().clone();
    let extras = crate::page::Extras {
        server: &s.info.server,
        cluster: &cluster,
        recent: &recent,
        today: today.as_deref().map_err(String::as_str),
        now,
    };
    let m = s.model.read();
    let html = if only_main {
        crate::page::main(&m.targets, &extras, "refresh")
    } else {
        crate::page::page(&m.targets, &extras)
    };
    drop(m);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn status(State(s): State<Arc<ApiState>>) -> Response {
    let cluster = s.cluster.borrow().clone();
    Json(StatusDoc {
        server: s.info.server.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: s.info.started_at,
        config: s.info.reload(),
        targets: s.model.target_docs(),
        ports: s.inventory.ports(),
        cluster: Some((*cluster).clone()),
        problems: s.traffic.problems(),
    })
    .into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found; see / for the endpoints of this agent\n",
    )
}
