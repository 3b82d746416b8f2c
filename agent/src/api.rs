//! HTTP endpoints: `/` (landing page), `/metrics`, `/healthz`, `/v1/status`.
//!
//! Everything is read from the model; no request triggers a probe.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::Registry;

use crate::engine::model::Model;

pub struct ApiState {
    pub model: Arc<Model>,
    pub process: Registry,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/v1/status", get(status))
        .fallback(not_found)
        .with_state(state)
}

async fn index(State(s): State<Arc<ApiState>>) -> Html<String> {
    let server = s.model.read().server.clone();
    Html(format!(
        "<!doctype html><html><head><title>telagent {v}</title></head><body>\
         <h1>telagent {v}</h1><p>Server <b>{server}</b>.</p><ul>\
         <li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\
         <li><a href=\"/v1/status\">/v1/status</a>: every target, its state and last observation (JSON)</li>\
         <li><a href=\"/healthz\">/healthz</a>: the agent itself is alive</li>\
         </ul></body></html>\n",
        v = env!("CARGO_PKG_VERSION"),
        server = escape(&server),
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn metrics(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        crate::metrics::render(&s.model, &s.process),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn status(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    Json(s.model.status_doc())
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found; see / for the endpoints of this agent\n",
    )
}
