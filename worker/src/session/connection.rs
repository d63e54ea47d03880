//! The socket shell around a call: a reader task that parses frames into events, a writer task
//! that sends frames and heartbeats, and the call task between them. Bounded channels connect
//! them, so a slow side applies backpressure instead of growing memory.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::call::run_call;
use super::channels::{ReaderEvent, WriterCommand};
use crate::admission::CallPermit;
use crate::context::WorkerContext;
use crate::protocols::{Decoder, Incoming, Protocol, WireFrame};

/// How often the worker pings the carrier; a peer that vanished without closing shows up as a
/// failed write or, at the latest, as the idle timeout.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Depth of the reader → call and call → writer queues (about a second of 20 ms frames).
const QUEUE_DEPTH: usize = 64;

/// Serves one upgraded WebSocket until its call ends.
pub async fn serve_socket(
    socket: WebSocket,
    protocol: Protocol,
    ctx: Arc<WorkerContext>,
    permit: CallPermit,
    presented_token: Option<String>,
) {
    let (sink, stream) = socket.split();
    let (event_tx, event_rx) = mpsc::channel(QUEUE_DEPTH);
    let (command_tx, command_rx) = mpsc::channel(QUEUE_DEPTH);
    let reader = tokio::spawn(read_frames(stream, Decoder::new(protocol), event_tx));
    let writer = tokio::spawn(write_frames(sink, command_rx));
    run_call(ctx, protocol, presented_token, permit, event_rx, command_tx).await;
    // The call is over: the writer drains and closes; the reader has nothing left to do.
    let _ = writer.await;
    reader.abort();
}

async fn read_frames(
    mut stream: SplitStream<WebSocket>,
    mut decoder: Decoder,
    events: mpsc::Sender<ReaderEvent>,
) {
    while let Some(message) = stream.next().await {
        let event = match message {
            Ok(Message::Text(text)) => decode(&mut decoder, Incoming::Text(text.as_str())),
            Ok(Message::Binary(bytes)) => decode(&mut decoder, Incoming::Binary(&bytes)),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) | Err(_) => break,
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
    let _ = events.send(ReaderEvent::Closed).await;
}

fn decode(decoder: &mut Decoder, frame: Incoming<'_>) -> ReaderEvent {
    match decoder.decode(frame) {
        Ok(event) => ReaderEvent::Event(event),
        Err(err) => ReaderEvent::Invalid(err),
    }
}

async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut commands: mpsc::Receiver<WriterCommand>,
) {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        let result = tokio::select! {
            command = commands.recv() => match command {
                Some(WriterCommand::Frame(WireFrame::Text(text))) => sink.send(Message::Text(text.into())).await,
                Some(WriterCommand::Frame(WireFrame::Binary(bytes))) => sink.send(Message::Binary(bytes)).await,
                Some(WriterCommand::Close { code, reason }) => {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                None => {
                    let _ = sink.close().await;
                    break;
                }
            },
            _ = ping.tick() => sink.send(Message::Ping(Default::default())).await,
        };
        if result.is_err() {
            // The peer is gone; keep draining so the call task never blocks on us.
            while commands.recv().await.is_some() {}
            break;
        }
    }
}
