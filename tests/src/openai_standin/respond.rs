//! Shared response plumbing: OpenAI's error JSON, the fault gate every request passes, and
//! paced streaming bodies that can stall or break mid-stream on demand.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream;
use serde_json::json;
use tokio::time::Instant;

use super::Shared;
use super::faults::{Endpoint, Fault};
use super::stats::Tracked;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub fn openai_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let body = json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    });
    (status, axum::Json(body)).into_response()
}

/// A 400 for a request the stand-in cannot understand.
pub fn bad_request(message: &str) -> Response {
    openai_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        message,
    )
}

/// What happens to a request after the fault gate.
pub enum Gate {
    /// Serve it; `Some` fault is to be applied after the first chunk.
    Serve(Option<Fault>),
    /// Answer this instead (injected 429/5xx).
    Refuse(Response),
}

/// Counts the request and applies the next injected fault for `endpoint`, if any. A `Stall`
/// never returns: the client must time out (or cancel).
pub async fn gate(shared: &Shared, endpoint: Endpoint) -> Gate {
    shared.stats.request(endpoint);
    let Some(fault) = shared.faults.take(endpoint) else {
        return Gate::Serve(None);
    };
    shared.stats.fault(endpoint);
    match fault {
        Fault::RateLimit { retry_after_ms } => Gate::Refuse(rate_limited(retry_after_ms)),
        Fault::ServerError { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Gate::Refuse(openai_error(
                status,
                "server_error",
                None,
                "The server had an error while processing your request (injected).",
            ))
        }
        Fault::Stall => std::future::pending().await,
        Fault::StallMidStream
        | Fault::StallInSpeech
        | Fault::DropMidStream
        | Fault::StallAfterHeaders
        | Fault::DropAfterSpeech
        | Fault::DropBeforeTranscript
        | Fault::FailResponse
        | Fault::ContentFilter
        | Fault::GarbageEvents => Gate::Serve(Some(fault)),
    }
}

fn rate_limited(retry_after_ms: u64) -> Response {
    let mut response = openai_error(
        StatusCode::TOO_MANY_REQUESTS,
        "requests",
        Some("rate_limit_exceeded"),
        "Rate limit reached for requests (injected).",
    );
    let headers = response.headers_mut();
    headers.insert("retry-after-ms", HeaderValue::from(retry_after_ms));
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_ms.div_ceil(1000)),
    );
    response
}

/// One part of a streamed body, sent after `delay`.
pub struct Piece {
    pub delay: Duration,
    pub bytes: Bytes,
}

impl Piece {
    pub fn new(delay: Duration, bytes: impl Into<Bytes>) -> Self {
        Self {
            delay,
            bytes: bytes.into(),
        }
    }
}

/// A streamed response sending `pieces` at their pace, the first one its delay after `arrived`
/// (when the request came in), each later one its delay after the one before. With a mid-stream
/// fault, only the first piece (or the first half of a single piece) is sent, then the stream
/// stalls or breaks.
pub fn paced_response(
    shared: &Shared,
    endpoint: Endpoint,
    content_type: &'static str,
    arrived: Instant,
    pieces: Vec<Piece>,
    mid_stream: Option<Fault>,
) -> Response {
    let mut pieces = VecDeque::from(pieces);
    if mid_stream.is_some()
        && pieces.len() == 1
        && let Some(only) = pieces.pop_front()
    {
        let half = only.bytes.len() / 2;
        pieces.push_back(Piece::new(only.delay, only.bytes.slice(..half)));
        pieces.push_back(Piece::new(Duration::ZERO, only.bytes.slice(half..)));
    }
    let body = stream::unfold((pieces, 0usize), move |(mut pieces, sent)| async move {
        if sent == 0 && mid_stream == Some(Fault::StallAfterHeaders) {
            std::future::pending::<()>().await;
        }
        if sent == 1 {
            match mid_stream {
                Some(
                    Fault::DropMidStream
                    | Fault::DropAfterSpeech
                    | Fault::DropBeforeTranscript
                    | Fault::FailResponse
                    | Fault::ContentFilter
                    | Fault::GarbageEvents,
                ) => {
                    // Let the server flush what was sent (it does while the body is pending),
                    // so the client really sees a response break, not a refused request.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let broken =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected drop");
                    return Some((Err(broken), (VecDeque::new(), usize::MAX)));
                }
                Some(Fault::StallMidStream | Fault::StallInSpeech) => {
                    std::future::pending::<()>().await
                }
                _ => {}
            }
        }
        let piece = pieces.pop_front()?;
        if sent == 0 {
            // The first byte is due its delay after the request arrived, as with a real
            // provider: reading the upload and preparing the answer take from that time, not
            // add to it.
            super::clock::sleep_until(arrived + piece.delay).await;
        } else if !piece.delay.is_zero() {
            tokio::time::sleep(piece.delay).await;
        }
        Some((Ok(piece.bytes), (pieces, sent.saturating_add(1))))
    });
    let tracked = Tracked::new(body, Arc::clone(&shared.stats), endpoint);
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(tracked))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One server-sent event carrying `data`.
pub fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}
