//! The HTTP edge: webhook receivers at `/hooks/<path-token>`, plus
//! `/healthz`, `/readyz` and `/metrics`, on one listener.
//!
//! Status codes: 202 accepted (a sync was triggered), 200 ping or ignored,
//! 400 malformed request, 401 missing/wrong signature, 404 unknown path,
//! 413 body over the limit. Every answer to a hook carries a short JSON reason.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};
use serde_json::json;
use tokio::net::TcpListener;

use super::config::{Receiver, ReceiverConfig};
use super::signature::constant_time_eq;
use super::trigger::{Trigger, TriggerSender};
use super::{Decision, Reject, decide};
use crate::metrics::Metrics;

/// Readiness reported on `/readyz`, set by the agent (e.g. once it holds a
/// fresh clone and reached every member cluster). Starts not ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Set whether the agent is ready.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether the agent said it is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything the handlers share.
#[derive(Clone, Debug)]
pub struct ServerState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: ReceiverConfig,
    triggers: TriggerSender,
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

impl ServerState {
    /// State for [`router`].
    pub fn new(config: ReceiverConfig, triggers: TriggerSender, metrics: Arc<Metrics>, readiness: Readiness) -> Self {
        ServerState(Arc::new(Inner { config, triggers, metrics, readiness }))
    }

    /// Find the receiver at `token`, comparing against every configured token
    /// in constant time so response timing does not reveal a valid prefix.
    fn receiver(&self, token: &str) -> Option<&Receiver> {
        let mut found = None;
        for r in &self.0.config.receivers {
            if constant_time_eq(r.path_token.as_bytes(), token.as_bytes()) {
                found = Some(r);
            }
        }
        found
    }
}

/// The agent's HTTP routes.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/hooks/{token}", post(hook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(json!({"result": "not_found"}))) })
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` completes, then finish
/// in-flight requests. Callers bind the listener, so tests use `127.0.0.1:0`.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn readyz(State(s): State<ServerState>) -> Response {
    if s.0.readiness.is_ready() { (StatusCode::OK, "ready\n").into_response() } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response() }
}

async fn metrics(State(s): State<ServerState>) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], s.0.metrics.encode()).into_response()
}

/// Read at most `limit` bytes; the Content-Length check refuses honest
/// oversized requests before reading anything, the running count catches
/// chunked or lying ones.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Reject> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Reject::TooLarge { limit });
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        // A broken upload is as unusable as a malformed one.
        let chunk = chunk.map_err(|e| Reject::InvalidPayload { event: "request".into(), message: format!("reading body: {e}") })?;
        if out.len() + chunk.len() > limit {
            return Err(Reject::TooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn reject(s: &ServerState, provider: &str, receiver: Option<&str>, r: Reject) -> Response {
    let result = r.result_label();
    s.0.metrics.webhook_request(provider, result);
    tracing::warn!(provider, receiver = receiver.unwrap_or("-"), result, error = %r, "webhook rejected");
    (r.status(), axum::Json(json!({"result": result, "error": r.to_string()}))).into_response()
}

async fn hook(State(s): State<ServerState>, Path(token): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let Some(receiver) = s.receiver(&token) else {
        // The token is not logged: a near-miss may be a real one mistyped.
        return reject(&s, "unknown", None, Reject::UnknownPath);
    };
    let provider = receiver.provider.as_str();
    let name = receiver.name.as_str();
    let body = match read_body(&headers, body, s.0.config.body_limit).await {
        Ok(b) => b,
        Err(r) => return reject(&s, provider, Some(name), r),
    };
    // Verify before parsing: unauthenticated bytes never reach the JSON parser.
    if let Err(r) = receiver.provider.verify(&headers, &body, receiver.secret.expose()) {
        return reject(&s, provider, Some(name), r);
    }
    // GitHub and Gitea can be set to send `payload=<urlencoded JSON>`; say how to fix it.
    let form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        let r = Reject::InvalidPayload { event: "request".into(), message: "form-encoded body: set the webhook's content type to application/json at the forge".into() };
        return reject(&s, provider, Some(name), r);
    }
    let event = match receiver.provider.parse(&headers, &body) {
        Ok(e) => e,
        Err(r) => return reject(&s, provider, Some(name), r),
    };
    let (status, result, reason) = match decide(&receiver.target, &event) {
        Decision::Trigger { after } => {
            s.0.triggers.trigger(Trigger { receiver: name.to_owned(), provider: receiver.provider, after: after.clone() });
            (StatusCode::ACCEPTED, "accepted", format!("sync triggered for {}", after.as_deref().unwrap_or("the branch head")))
        }
        Decision::Ping => (StatusCode::OK, "ping", "pong".to_owned()),
        Decision::Ignore(reason) => (StatusCode::OK, "ignored", reason),
    };
    s.0.metrics.webhook_request(provider, result);
    tracing::info!(provider, receiver = name, result, reason = %reason, "webhook");
    (status, axum::Json(json!({"result": result, "reason": reason}))).into_response()
}
