//! AI providers behind small, object-safe traits, so the call loop does not care which vendor
//! answers and tests run the same code against the local stand-in.
//!
//! Every streaming output is a `futures::Stream` that owns what it needs (`'static`): the call task
//! keeps it in its `select!` loop, and **dropping it cancels the request in flight** (the HTTP body
//! or WebSocket is closed), which is how barge-in stops the LLM and TTS.
//!
//! Retries happen only before a stream yields its first item; after that an error ends the stream.

pub mod config;
pub mod error;
pub mod openai;
pub mod realtime;

use std::sync::Arc;

use bytes::Bytes;
use callfleet_crds::aipipeline::{LlmSpec, RealtimeSpec, SttSpec, TtsSpec};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use config::{ProviderConfig, provider_timeout};
pub use error::ProviderError;
pub use realtime::{
    RealtimeCommand, RealtimeCommands, RealtimeEvent, RealtimeOptions, RealtimeSession, ServerVad,
};

/// Result of a provider call.
pub type ProviderResult<T> = Result<T, ProviderError>;

/// Sample rate of the PCM that [`TextToSpeech`] yields (OpenAI's `pcm` format).
pub const TTS_SAMPLE_RATE: u32 = 24_000;

/// One caller utterance: mono signed 16-bit PCM (16 kHz is what the cascade sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utterance {
    pub samples: Vec<i16>,
    pub sample_rate: u32,
    /// Every sample is a G.711 µ-law value (the caller's carrier sent µ-law), so the utterance
    /// can be uploaded as µ-law, half the bytes, without losing anything.
    pub mulaw: bool,
}

impl Utterance {
    /// Linear samples at `sample_rate`, uploaded as 16-bit PCM.
    pub fn linear(samples: Vec<i16>, sample_rate: u32) -> Self {
        Self {
            samples,
            sample_rate,
            mulaw: false,
        }
    }
}

/// The text heard in an utterance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transcript {
    pub text: String,
}

/// Progress of a streamed transcription (`transcript.text.delta` / `transcript.text.done`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscriptEvent {
    /// More text; the concatenation of deltas is the transcript so far.
    Delta(String),
    /// The final transcript; always the last item of a successful stream.
    Done(Transcript),
}

/// Speech to text. Implementations stream where the model supports it and otherwise yield one
/// [`TranscriptEvent::Done`].
pub trait SpeechToText: Send + Sync {
    /// Transcribes `audio`, yielding deltas as they arrive and then exactly one `Done`.
    fn transcribe_stream(
        &self,
        audio: Utterance,
        spec: &SttSpec,
    ) -> BoxStream<'static, ProviderResult<TranscriptEvent>>;

    /// Transcribes `audio` and returns only the final text.
    fn transcribe(
        &self,
        audio: Utterance,
        spec: &SttSpec,
    ) -> BoxFuture<'static, ProviderResult<Transcript>> {
        final_transcript(self.transcribe_stream(audio, spec))
    }

    /// Opens a transcription while the caller is still speaking, so the audio is uploaded as it
    /// arrives and only the end of the utterance is left to send when the turn ends. `None`
    /// when this provider or pipeline sends utterances whole.
    fn begin_upload(&self, _sample_rate: u32, _spec: &SttSpec) -> Option<Box<dyn LiveUpload>> {
        None
    }
}

/// An utterance's transcription, uploading while the caller speaks
/// ([`SpeechToText::begin_upload`]). Dropping it without [`LiveUpload::finish`] abandons the
/// request (the burst was not a turn, or the call ended).
pub trait LiveUpload: Send {
    /// The next samples of the utterance, in order, at the rate it was begun with. Never
    /// waits: an upload that falls behind or has failed is given up, and `finish` sends the
    /// utterance whole instead.
    fn push(&mut self, samples: &[i16]);

    /// The utterance is complete; `audio` is all of it (what was pushed). Ends the upload and
    /// streams the transcript as [`SpeechToText::transcribe_stream`] does, sending `audio`
    /// whole, with the usual retries, when the early request failed or was given up.
    fn finish(
        self: Box<Self>,
        audio: Utterance,
        spec: &SttSpec,
    ) -> BoxStream<'static, ProviderResult<TranscriptEvent>>;
}

/// The final text of a transcript stream.
pub fn final_transcript(
    mut events: BoxStream<'static, ProviderResult<TranscriptEvent>>,
) -> BoxFuture<'static, ProviderResult<Transcript>> {
    Box::pin(async move {
        while let Some(event) = events.next().await {
            if let TranscriptEvent::Done(transcript) = event? {
                return Ok(transcript);
            }
        }
        Err(ProviderError::Protocol(
            "transcription ended without a final transcript".into(),
        ))
    })
}

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

/// One message of the conversation sent to the language model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// A streaming chat model.
pub trait ChatModel: Send + Sync {
    /// Streams the assistant's reply as text deltas. `messages` are sent as given: the caller
    /// puts the system prompt first and caps the history.
    fn stream_chat(
        &self,
        messages: Vec<ChatMessage>,
        spec: &LlmSpec,
    ) -> BoxStream<'static, ProviderResult<String>>;
}

/// Streaming text to speech.
pub trait TextToSpeech: Send + Sync {
    /// Streams `text` as mono s16le PCM at [`TTS_SAMPLE_RATE`]. Every chunk holds whole samples
    /// (even length), whatever the network's chunk boundaries were.
    fn stream_speech(
        &self,
        text: String,
        spec: &TtsSpec,
    ) -> BoxStream<'static, ProviderResult<Bytes>>;
}

/// Speech to speech over one long-lived session per call.
pub trait Realtime: Send + Sync {
    /// Opens a session configured for µ-law 8 kHz audio in and out and server-side VAD.
    fn connect(
        &self,
        spec: &RealtimeSpec,
        options: RealtimeOptions,
    ) -> BoxFuture<'static, ProviderResult<RealtimeSession>>;
}

/// The providers one pipeline version uses; cheap to clone into each call task.
#[derive(Clone)]
pub struct Providers {
    pub stt: Arc<dyn SpeechToText>,
    pub chat: Arc<dyn ChatModel>,
    pub tts: Arc<dyn TextToSpeech>,
    pub realtime: Arc<dyn Realtime>,
}
