//! Transcriptions uploaded while the caller speaks.
//!
//! By default a turn uploads its utterance after the caller stopped: a second or more of audio
//! on the critical path of every reply (46 KB for three seconds at 8 kHz; over a real uplink,
//! with TCP slow start, tens of milliseconds). With `stt.uploadWhileSpeaking` the request is
//! opened once the VAD confirms speech, with a WAV header of unknown length
//! ([`wav::UNKNOWN_LENGTH`]) and a chunked body that receives the audio every [`CHUNK`] as it
//! arrives. When the turn ends only the last chunk and the multipart trailer are left to send.
//! Over a real network that is more than the transfer time of the rest: a keep-alive connection
//! idle since the last turn restarts TCP slow start, so a whole three-second utterance (46 KB
//! at 8 kHz, 92 KB at 16 kHz) can take two or three round trips to the provider to upload,
//! each tens of milliseconds.
//!
//! It costs 2-5% more worker CPU per call in conversation and a provider connection per
//! speaking caller (BENCHMARKS.md), hence opt-in.
//!
//! The request cannot be replayed, so it gets no retries of its own: when it fails (or falls
//! [`QUEUE`] chunks behind, or a server refuses chunked uploads), the turn sends the utterance
//! whole through the usual retry loop, the failed attempt counting as the first.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::http::OpenResponse;
use super::{OpenAi, stt, transcript_events, wav};
use crate::media::l16;
use crate::providers::{LiveUpload, ProviderError, ProviderResult, TranscriptEvent, Utterance};
use callfleet_crds::aipipeline::SttSpec;

/// Audio gathered before it goes into the body: two or three writes a second per speaking
/// caller rather than fifty (each costs a wake-up on both sides), and at most this much left to
/// send when the turn ends: 6.4 KB at 8 kHz, 12.8 KB at 16 kHz, within the ten segments TCP
/// may send at once on a connection that sat idle between turns, so the end of the upload
/// never waits a round trip for the congestion window to grow.
pub const CHUNK: Duration = Duration::from_millis(400);

/// Chunks that may wait for the connection (3.2 s of audio) before the upload is given up:
/// enough for a new TLS connection to a distant provider, bounded so a stuck one cannot
/// hold a caller's audio.
pub const QUEUE: usize = 8;

/// What the call task hands the request body.
enum Piece {
    Audio(Bytes),
    /// The utterance is complete: the body ends (a dropped sender without it aborts it).
    End,
}

/// Aborts the request task when the upload is dropped unfinished.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One utterance's transcription request, open while the caller speaks.
pub struct LiveTranscription {
    openai: OpenAi,
    /// Encoded audio not yet handed to the body.
    pending: Vec<u8>,
    chunk_bytes: usize,
    /// The body's feed; `None` once the upload was given up.
    body: Option<mpsc::Sender<Piece>>,
    /// Starts the response timeout: fired when the utterance is complete.
    body_done: Option<oneshot::Sender<()>>,
    /// The response (headers read), from the request's task.
    response: oneshot::Receiver<ProviderResult<OpenResponse>>,
    request: AbortOnDrop,
}

impl LiveTranscription {
    /// Opens the request on the current runtime (the call's media thread, whose connection
    /// pool it uses) and queues the WAV header.
    pub fn begin(openai: OpenAi, sample_rate: u32, spec: &SttSpec) -> Self {
        let (body_tx, body_rx) = mpsc::channel(QUEUE);
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let (response_tx, response_rx) = oneshot::channel();
        let streamed = stt::supports_streaming(&spec.model);
        let body = reqwest::Body::wrap_stream(body_stream(body_rx));
        let form = stt::live_transcription_form(body, spec, streamed);
        let this = openai.clone();
        let task = tokio::spawn(async move {
            let url = this.url("/audio/transcriptions");
            let done = async {
                let _ = done_rx.await;
            };
            let response = this
                .http
                .send_live(
                    &this.config,
                    "transcriptions",
                    |client| client.post(&url).multipart(form),
                    done,
                )
                .await;
            let _ = response_tx.send(response);
        });
        let chunk_bytes = (sample_rate as usize * 2 * CHUNK.as_millis() as usize / 1000).max(2);
        let mut pending = Vec::with_capacity(chunk_bytes + 44);
        pending.extend_from_slice(&wav::wav_header(sample_rate, wav::UNKNOWN_LENGTH));
        Self {
            openai,
            pending,
            chunk_bytes,
            body: Some(body_tx),
            body_done: Some(done_tx),
            response: response_rx,
            request: AbortOnDrop(task.abort_handle()),
        }
    }

    /// Hands the pending audio to the body; gives the upload up when the body is gone (the
    /// request failed) or too far behind.
    fn send_pending(&mut self) {
        let Some(body) = &self.body else {
            return;
        };
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(self.chunk_bytes));
        if body.try_send(Piece::Audio(Bytes::from(chunk))).is_err() {
            self.give_up();
        }
    }

    fn give_up(&mut self) {
        self.body = None;
        self.pending = Vec::new();
        self.request.0.abort();
    }
}

impl LiveUpload for LiveTranscription {
    fn push(&mut self, samples: &[i16]) {
        if self.body.is_none() {
            return;
        }
        l16::encode_into(samples, &mut self.pending);
        if self.pending.len() >= self.chunk_bytes {
            self.send_pending();
        }
    }

    fn finish(
        mut self: Box<Self>,
        audio: Utterance,
        spec: &SttSpec,
    ) -> BoxStream<'static, ProviderResult<TranscriptEvent>> {
        if !self.pending.is_empty() {
            self.send_pending();
        }
        let live = match self.body.take() {
            Some(body) if body.try_send(Piece::End).is_ok() => true,
            Some(_) => {
                self.give_up();
                false
            }
            None => false,
        };
        if let Some(done) = self.body_done.take() {
            let _ = done.send(());
        }
        let LiveTranscription {
            openai,
            mut response,
            request,
            ..
        } = *self;
        let spec = spec.clone();
        let transcript = async move {
            let _request = request;
            let first_error = if live {
                match (&mut response).await {
                    Ok(Ok(open)) => {
                        openai.http.count_live_upload("heard");
                        return transcript_events(open).await;
                    }
                    Ok(Err(error)) => Some(error),
                    // The request's task went away without an answer: its outcome is unknown,
                    // so the utterance goes whole, with every retry.
                    Err(_) => None,
                }
            } else {
                // Given up: the request may have failed first (its error decides the wait).
                response.try_recv().ok().and_then(Result::err)
            };
            // A server that refused the request itself (4xx other than auth and rate limits)
            // may only be refusing a chunked upload: the whole utterance gets every retry.
            let refused = matches!(first_error, Some(ProviderError::Rejected { .. }));
            openai
                .http
                .count_live_upload(match (&first_error, refused) {
                    (_, true) => "refused",
                    (Some(_), false) => "failed",
                    (None, false) => "given_up",
                });
            let first_error = if refused { None } else { first_error };
            let whole = openai.transcribe_whole(audio, &spec, first_error).await;
            if refused && whole.is_ok() && !openai.live_refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    base_url = %openai.config.base_url,
                    "the provider refused an utterance uploaded while the caller spoke and took it whole: this pipeline version sends utterances whole from now on"
                );
            }
            whole
        };
        stream::once(transcript).try_flatten().boxed()
    }
}

/// The request body: the pieces as they come, ending at [`Piece::End`]. A feed dropped before
/// it (the upload abandoned) is an error, so the request is aborted rather than completed with
/// a truncated utterance.
fn body_stream(
    pieces: mpsc::Receiver<Piece>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    stream::unfold(Some(pieces), |state| async move {
        let mut pieces = state?;
        match pieces.recv().await {
            Some(Piece::Audio(bytes)) => Some((Ok(bytes), Some(pieces))),
            Some(Piece::End) => None,
            None => Some((
                Err(std::io::Error::other("utterance abandoned before its end")),
                None,
            )),
        }
    })
}
