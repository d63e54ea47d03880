//! Request counters per endpoint, so tests can assert what the server saw (e.g. that a
//! cancelled speech stream was really dropped, or how many retries arrived).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use serde::{Deserialize, Serialize};

use super::faults::Endpoint;

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    faults: AtomicU64,
    completed: AtomicU64,
    aborted: AtomicU64,
}

/// Live counters, shared by all handlers.
#[derive(Debug, Default)]
pub struct Stats {
    endpoints: [Counters; 4],
    unauthorized: AtomicU64,
    truncations: AtomicU64,
    cancelled_responses: AtomicU64,
    items_created: AtomicU64,
    appends: AtomicU64,
    appended_ms: AtomicU64,
    chunked_uploads: AtomicU64,
    mulaw_uploads: AtomicU64,
    broken_uploads: AtomicU64,
    transcribed_samples: AtomicU64,
    chat_last_messages: AtomicU64,
}

/// What one endpoint saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// Authorized requests (realtime: WebSocket handshakes).
    pub requests: u64,
    /// Requests answered with an injected fault.
    pub faults: u64,
    /// Responses (or realtime sessions) that ran to their end.
    pub completed: u64,
    /// Streamed responses the client dropped before the end (cancellation).
    pub aborted: u64,
}

/// A copy of all counters (`GET /admin/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub transcriptions: EndpointStats,
    pub chat: EndpointStats,
    pub speech: EndpointStats,
    pub realtime: EndpointStats,
    /// Requests refused for a missing bearer token.
    pub unauthorized: u64,
    /// `conversation.item.truncate` accepted.
    pub realtime_truncations: u64,
    /// Realtime responses cancelled (barge-in or `response.cancel`).
    pub realtime_cancelled_responses: u64,
    /// `conversation.item.create` messages accepted (a resumed call's history).
    pub realtime_items_created: u64,
    /// `input_audio_buffer.append` messages accepted, and the audio they carried.
    pub realtime_appends: u64,
    pub realtime_appended_ms: u64,
    /// Transcription uploads sent without a length (chunked: made while the caller spoke).
    pub transcription_chunked_uploads: u64,
    /// Transcription uploads of G.711 µ-law WAV (the rest are 16-bit PCM).
    pub transcription_mulaw_uploads: u64,
    /// Transcription uploads whose body broke off before its end (the client gave it up).
    pub transcription_broken_uploads: u64,
    /// Samples of audio in the transcription uploads that were read whole.
    pub transcribed_samples: u64,
    /// Messages in the latest chat request's prompt (system prompt and history included).
    pub chat_last_messages: u64,
}

impl StatsSnapshot {
    pub fn endpoint(&self, endpoint: Endpoint) -> EndpointStats {
        match endpoint {
            Endpoint::Transcriptions => self.transcriptions,
            Endpoint::Chat => self.chat,
            Endpoint::Speech => self.speech,
            Endpoint::Realtime => self.realtime,
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    fn of(&self, endpoint: Endpoint) -> &Counters {
        &self.endpoints[endpoint as usize]
    }
    pub fn request(&self, endpoint: Endpoint) {
        bump(&self.of(endpoint).requests);
    }
    pub fn fault(&self, endpoint: Endpoint) {
        bump(&self.of(endpoint).faults);
    }
    pub fn completed(&self, endpoint: Endpoint) {
        bump(&self.of(endpoint).completed);
    }
    pub fn aborted(&self, endpoint: Endpoint) {
        bump(&self.of(endpoint).aborted);
    }
    pub fn unauthorized(&self) {
        bump(&self.unauthorized);
    }
    pub fn truncation(&self) {
        bump(&self.truncations);
    }
    pub fn cancelled_response(&self) {
        bump(&self.cancelled_responses);
    }
    pub fn item_created(&self) {
        bump(&self.items_created);
    }
    pub fn mulaw_upload(&self) {
        bump(&self.mulaw_uploads);
    }

    pub fn chunked_upload(&self) {
        bump(&self.chunked_uploads);
    }
    pub fn broken_upload(&self) {
        bump(&self.broken_uploads);
    }
    pub fn transcribed(&self, samples: usize) {
        self.transcribed_samples
            .fetch_add(samples as u64, Ordering::Relaxed);
    }
    pub fn chat_prompt(&self, messages: usize) {
        self.chat_last_messages
            .store(messages as u64, Ordering::Relaxed);
    }
    pub fn appended(&self, ms: u64) {
        bump(&self.appends);
        self.appended_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let endpoint = |e| {
            let c = self.of(e);
            EndpointStats {
                requests: c.requests.load(Ordering::Relaxed),
                faults: c.faults.load(Ordering::Relaxed),
                completed: c.completed.load(Ordering::Relaxed),
                aborted: c.aborted.load(Ordering::Relaxed),
            }
        };
        StatsSnapshot {
            transcriptions: endpoint(Endpoint::Transcriptions),
            chat: endpoint(Endpoint::Chat),
            speech: endpoint(Endpoint::Speech),
            realtime: endpoint(Endpoint::Realtime),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            realtime_truncations: self.truncations.load(Ordering::Relaxed),
            realtime_cancelled_responses: self.cancelled_responses.load(Ordering::Relaxed),
            realtime_items_created: self.items_created.load(Ordering::Relaxed),
            realtime_appends: self.appends.load(Ordering::Relaxed),
            realtime_appended_ms: self.appended_ms.load(Ordering::Relaxed),
            transcription_chunked_uploads: self.chunked_uploads.load(Ordering::Relaxed),
            transcription_mulaw_uploads: self.mulaw_uploads.load(Ordering::Relaxed),
            transcription_broken_uploads: self.broken_uploads.load(Ordering::Relaxed),
            transcribed_samples: self.transcribed_samples.load(Ordering::Relaxed),
            chat_last_messages: self.chat_last_messages.load(Ordering::Relaxed),
        }
    }
}

/// A response body stream that records whether it ran to its end (`completed`) or was dropped
/// before (`aborted`: the client went away).
pub struct Tracked<S> {
    inner: Pin<Box<S>>,
    stats: std::sync::Arc<Stats>,
    endpoint: Endpoint,
    finished: bool,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, stats: std::sync::Arc<Stats>, endpoint: Endpoint) -> Self {
        Self {
            inner: Box::pin(inner),
            stats,
            endpoint,
            finished: false,
        }
    }
}

impl<S: Stream> Stream for Tracked<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = polled
            && !self.finished
        {
            self.finished = true;
            self.stats.completed(self.endpoint);
        }
        polled
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.aborted(self.endpoint);
        }
    }
}
