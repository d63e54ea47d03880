//! The socket shell around a call: the upgraded WebSocket becomes the call task's
//! [`CallSocket`], read and written by that one task.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocket;

use super::call::run_call;
use super::socket::CallSocket;
use crate::admission::CallPermit;
use crate::context::WorkerContext;
use crate::protocols::Protocol;
use crate::server::quiet_stream::QuietReads;

/// How often the worker pings the carrier; a peer that vanished without closing shows up as a
/// failed write or, at the latest, as the idle timeout.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Serves one upgraded WebSocket until its call ends.
pub async fn serve_socket(
    socket: WebSocket,
    reads: QuietReads,
    protocol: Protocol,
    ctx: Arc<WorkerContext>,
    permit: CallPermit,
    presented_token: Option<String>,
) {
    let socket = CallSocket::new(socket, protocol, Some(reads));
    run_call(ctx, protocol, presented_token, permit, socket).await;
}
