//! Routes. Admission checks that need no call id (drain, load, rate limit, capacity) run before
//! the WebSocket upgrade, so a refused connection costs one HTTP response; the token is checked
//! on the call's first message because it must match the call id announced there.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Deserialize;
use serde_json::json;

use crate::admission::{RateDecision, authentic_call_id};
use crate::context::WorkerContext;
use crate::protocols::{ErrorCode, MAX_FRAME_BYTES, Protocol};
use crate::server::quiet_stream::Peer;
use crate::session::call::unix_now;
use crate::session::connection::serve_socket;
use crate::session::inbound_rest::InboundRest;

/// WebSocket write batching: frames are buffered until this much is queued or the call task
/// flushes, which it does after handing over everything one loop turn queued (a pair of reply
/// frames and their marks), so those leave in one socket write instead of one each. Eager
/// writes (0) cost a send syscall per frame, the worker's largest single cost under load.
pub const WS_WRITE_BATCH: usize = 16 * 1024;

pub fn router(ctx: Arc<WorkerContext>) -> Router {
    Router::new()
        .route("/ws/call-session", websocket(Protocol::CallSession))
        .route("/ws/twilio", websocket(Protocol::Twilio))
        .route("/ws/freeswitch", websocket(Protocol::FreeSwitch))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

/// The WebSocket endpoint of one protocol.
fn websocket(protocol: Protocol) -> MethodRouter<Arc<WorkerContext>> {
    get(
        move |state: State<Arc<WorkerContext>>,
              peer: ConnectInfo<Peer>,
              query: Query<TokenQuery>,
              headers: HeaderMap,
              ws: WebSocketUpgrade| upgrade(protocol, state, peer, query, headers, ws),
    )
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn upgrade(
    protocol: Protocol,
    State(ctx): State<Arc<WorkerContext>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if ctx.is_draining() {
        return refuse(
            &ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Draining,
            "worker is draining",
            None,
        );
    }
    let runtime = crate::media_thread::index();
    if ctx.load.is_shedding(runtime) {
        let lag_ms = ctx.load.smoothed_lag(runtime).as_millis();
        return refuse(
            &ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            &format!("worker is overloaded (its event loop is {lag_ms} ms behind); try another"),
            Some(1),
        );
    }
    let token = query.token.or_else(|| bearer(&headers));
    let authenticated = token
        .as_deref()
        .is_some_and(|t| authentic_call_id(&ctx.secret, t, unix_now()).is_ok());
    if !authenticated
        && let RateDecision::Deny { retry_after } = ctx.rate_limiter.check(peer.addr.ip()).await
    {
        return refuse(
            &ctx,
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimit,
            "too many new connections from this address",
            Some(retry_after.as_secs().max(1)),
        );
    }
    let Some(permit) = ctx.capacity.try_acquire() else {
        return refuse(
            &ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::WorkerFull,
            "worker is at its call limit",
            Some(1),
        );
    };
    // A rest lets its frames and one more arrive before the read that takes them.
    let longest_rest = InboundRest::longest_for(ctx.limits.inbound_rest, ctx.limits.listening_rest);
    let frames_per_read = 1 + (longest_rest.as_millis() / 20) as usize;
    ws.read_buffer_size(protocol.read_buffer_for(frames_per_read))
        .write_buffer_size(WS_WRITE_BATCH)
        .max_message_size(MAX_FRAME_BYTES * 2)
        .on_upgrade(move |socket| serve_socket(socket, peer.reads, protocol, ctx, permit, token))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_owned())
}

/// An HTTP refusal in the seed's error shape.
fn refuse(
    ctx: &WorkerContext,
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    ctx.metrics.error(code);
    let body = json!({"type": "error", "code": code.as_str(), "message": message});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn health(State(ctx): State<Arc<WorkerContext>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "timestamp": unix_now(),
        "version": env!("CARGO_PKG_VERSION"),
        "activeCalls": ctx.active_calls(),
        "uptime": ctx.started_at.elapsed().as_secs(),
    }))
    .into_response()
}

async fn ready(State(ctx): State<Arc<WorkerContext>>) -> Response {
    let has_pipeline = ctx.pipelines.current().is_some();
    let overloaded = ctx.load.any_shedding();
    let full = ctx.capacity.is_full();
    let ready = !ctx.is_draining() && has_pipeline && !overloaded && !full;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "draining": ctx.is_draining(),
        "pipelineLoaded": has_pipeline,
        "overloaded": overloaded,
        "full": full,
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(ctx): State<Arc<WorkerContext>>, headers: HeaderMap) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let active = ctx.active_calls();
    if wants_json {
        return axum::Json(ctx.metrics.summary(active)).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.prometheus_text(active),
    )
        .into_response()
}
