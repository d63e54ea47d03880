//! The call's WebSocket, read and written by the call task itself.
//!
//! One task owns the socket: an inbound frame is decoded where it is read, and replies are
//! written from the same task, so a frame costs no channel hop, no extra task wake-up and no lock
//! (a split socket shares its two halves through one). Writes never block the call: frames wait
//! in a small outbox that is written out whenever the task polls the socket, and audio for a
//! carrier that stops reading is dropped rather than queued without bound.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{Sink, Stream};

use crate::protocols::{Decoder, InboundEvent, Incoming, Protocol, ProtocolError, WireFrame};
use crate::server::quiet_stream::QuietReads;

/// Frames queued for a carrier before audio is dropped: about a second of 20 ms frames.
const AUDIO_QUEUE: usize = 64;
/// Frames queued before the peer counts as gone: control frames (marks, errors, clears) are
/// never dropped, but a peer that reads nothing at all must not grow memory without bound.
const HARD_QUEUE: usize = 4 * AUDIO_QUEUE;
/// How long the last frames (error, hang-up, close) may take to leave at the end of a call.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What reading the socket produced.
#[derive(Debug)]
pub enum SocketEvent {
    Event(InboundEvent),
    /// A frame that could not be used; the call goes on.
    Invalid(ProtocolError),
    /// The peer closed the WebSocket with a close frame: it meant to end the connection.
    ClosedByPeer,
    /// The connection failed or ended without a close frame, or the peer stopped reading
    /// altogether.
    Closed,
}

/// A call's WebSocket with its protocol decoder and outbox.
pub struct CallSocket {
    ws: WebSocket,
    decoder: Decoder,
    outbox: VecDeque<Message>,
    /// Frames were handed to the socket since the last successful flush.
    unflushed: bool,
    /// Nothing more can be read or written: the peer is gone.
    gone: bool,
    /// The connection's readiness signals, quieted while the call rests from reading
    /// (`server::quiet_stream`); none where the connection cannot be quieted.
    reads: Option<QuietReads>,
    /// The kernel is not signaling this connection's frames.
    quiet: bool,
}

impl CallSocket {
    pub fn new(ws: WebSocket, protocol: Protocol, reads: Option<QuietReads>) -> Self {
        Self {
            ws,
            decoder: Decoder::new(protocol),
            outbox: VecDeque::new(),
            unflushed: false,
            gone: false,
            reads,
            quiet: false,
        }
    }

    /// While the call rests from reading (`resting`), the kernel signals none of the frames
    /// that arrive: they would wake the event loop for a task that is not listening. Once it
    /// reads frames as they come again, every frame is signaled. A change of state costs one
    /// system call; a connection that cannot be quieted is left signaling.
    pub fn rest(&mut self, resting: bool) {
        if resting == self.quiet {
            return;
        }
        let Some(reads) = &self.reads else {
            return;
        };
        match reads.quiet(resting) {
            Ok(()) => self.quiet = resting,
            Err(err) => {
                tracing::debug!(error = %err, "cannot quiet the connection; it keeps signaling");
                if !self.quiet {
                    self.reads = None;
                }
            }
        }
    }

    /// Queues a control frame (status, mark, clear, error): it is kept until written.
    pub fn send(&mut self, frame: WireFrame) {
        self.queue(to_message(frame));
    }

    /// Queues an audio frame unless the carrier is already a second behind; returns whether it
    /// was queued. Audio is never worth stalling the call for.
    pub fn send_audio(&mut self, frame: WireFrame) -> bool {
        if self.gone || self.outbox.len() >= AUDIO_QUEUE {
            return false;
        }
        self.outbox.push_back(to_message(frame));
        true
    }

    /// Queues a keep-alive ping.
    pub fn ping(&mut self) {
        self.queue(Message::Ping(Default::default()));
    }

    /// Queues the close frame; [`CallSocket::shutdown`] sends it.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.queue(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })));
    }

    fn queue(&mut self, message: Message) {
        if self.gone {
            return;
        }
        if self.outbox.len() >= HARD_QUEUE {
            tracing::debug!("peer reads nothing; treating the connection as lost");
            self.fail();
            return;
        }
        self.outbox.push_back(message);
    }

    fn fail(&mut self) {
        self.gone = true;
        self.outbox.clear();
    }

    /// Writes what is queued and waits for the next inbound frame. Cancel-safe: queued frames
    /// stay queued and a partly read frame stays in the socket's buffer.
    pub async fn next(&mut self) -> SocketEvent {
        poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// The next inbound frame if one is already here, without waiting and without asking to
    /// be woken when one comes (a resting call is woken by its own timer). Writes what is
    /// queued, as far as the socket takes it now.
    pub fn try_next(&mut self) -> Option<SocketEvent> {
        match self.poll_next_event(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(event) => Some(event),
            Poll::Pending => None,
        }
    }

    /// The next read takes what waits in the kernel, signaled or not (a quiet connection's
    /// frames are not): for the reads that end a rest.
    pub fn read_through(&mut self) {
        if let Some(reads) = &self.reads {
            reads.read_through();
        }
    }

    /// Writes what is queued, as far as the socket takes it now, without asking to be woken:
    /// for a call that is not reading, which would otherwise write only when it reads.
    pub fn flush_now(&mut self) {
        if !self.gone {
            let _ = self.poll_write(&mut Context::from_waker(Waker::noop()));
        }
    }

    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<SocketEvent> {
        if self.gone {
            return Poll::Ready(SocketEvent::Closed);
        }
        let _ = self.poll_write(cx);
        if self.gone {
            return Poll::Ready(SocketEvent::Closed);
        }
        loop {
            let message = match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(message))) => message,
                Poll::Ready(Some(Err(_)) | None) => {
                    self.fail();
                    return Poll::Ready(SocketEvent::Closed);
                }
            };
            let frame = match &message {
                Message::Text(text) => Incoming::Text(text.as_str()),
                Message::Binary(bytes) => Incoming::Binary(bytes),
                // tungstenite answers pings itself; the answer leaves with the next write.
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => {
                    self.fail();
                    return Poll::Ready(SocketEvent::ClosedByPeer);
                }
            };
            return Poll::Ready(match self.decoder.decode(frame) {
                Ok(event) => SocketEvent::Event(event),
                Err(err) => SocketEvent::Invalid(err),
            });
        }
    }

    /// Hands queued frames to the socket and flushes; `Ready` once everything is written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.outbox.is_empty() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    self.fail();
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
            let Some(message) = self.outbox.pop_front() else {
                break;
            };
            if Pin::new(&mut self.ws).start_send(message).is_err() {
                self.fail();
                return Poll::Ready(());
            }
            self.unflushed = true;
        }
        if self.unflushed {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => {
                    self.fail();
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// Writes the last queued frames (bounded by a grace period) and drops the connection.
    pub async fn shutdown(mut self) {
        if self.gone {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, poll_fn(|cx| self.poll_write(cx))).await;
    }
}

fn to_message(frame: WireFrame) -> Message {
    match frame {
        WireFrame::Text(text) => Message::Text(text.into()),
        WireFrame::Binary(bytes) => Message::Binary(bytes),
    }
}

/// WebSocket close codes used by the worker.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_LATER: u16 = 1013;
}
