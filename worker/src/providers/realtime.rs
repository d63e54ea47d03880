//! The provider-neutral shape of a realtime (speech-to-speech) session: commands the call loop
//! sends, events it receives. Audio is G.711 µ-law at 8 kHz both ways, so phone audio passes
//! through without transcoding.

use std::pin::Pin;

use bytes::Bytes;
use callfleet_crds::aipipeline::TurnDetectionSpec;
use futures::stream::BoxStream;
use futures::{Sink, SinkExt};

use super::{ChatMessage, ProviderError, ProviderResult};

/// How a realtime session is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeOptions {
    /// System instructions for the whole session.
    pub instructions: String,
    /// Server-side voice activity detection.
    pub vad: ServerVad,
    /// Transcribe the caller's speech with this model (for history and logs); none when `None`.
    pub input_transcription_model: Option<String>,
}

/// Settings of the provider's `server_vad` turn detection.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerVad {
    /// Activation threshold, 0.0 to 1.0 (provider-defined scale).
    pub threshold: f32,
    /// Audio kept before detected speech.
    pub prefix_padding_ms: u32,
    /// Silence that ends the caller's turn.
    pub silence_duration_ms: u32,
    /// Whether caller speech cancels the response in flight (barge-in).
    pub interrupt_response: bool,
}

impl ServerVad {
    /// Maps the pipeline's turn detection onto `server_vad`. The dBFS threshold of the local
    /// energy VAD has no equivalent on the provider's scale, so its default is kept.
    pub fn from_spec(spec: &TurnDetectionSpec) -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: spec.silence_ms,
            interrupt_response: spec.barge_in,
        }
    }
}

/// What the call loop asks of a realtime session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealtimeCommand {
    /// Caller audio, µ-law 8 kHz (`input_audio_buffer.append`).
    AppendAudio(Bytes),
    /// Cut an assistant item to what the caller actually heard (`conversation.item.truncate`).
    Truncate { item_id: String, audio_end_ms: u32 },
    /// Ask for a response now (`response.create`), e.g. the greeting; `instructions` override
    /// the session's for this response only.
    CreateResponse { instructions: Option<String> },
    /// Stop the response in flight (`response.cancel`).
    CancelResponse,
    /// Add an earlier message to the provider's conversation (`conversation.item.create`): a
    /// resumed call's history, so the model answers with what was already said.
    AddMessage(ChatMessage),
}

/// What a realtime session reports. Unknown provider events are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealtimeEvent {
    /// The provider accepted the session configuration.
    SessionUpdated,
    /// The caller started speaking (barge-in trigger while the assistant plays).
    SpeechStarted {
        item_id: String,
        audio_start_ms: u32,
    },
    /// The caller stopped speaking.
    SpeechStopped { item_id: String, audio_end_ms: u32 },
    /// Transcript of the caller's item, when input transcription is on.
    InputTranscript { item_id: String, text: String },
    /// A response began.
    ResponseCreated { response_id: String },
    /// Assistant audio, µ-law 8 kHz.
    AudioDelta {
        response_id: String,
        item_id: String,
        audio: Bytes,
    },
    /// Text of what the assistant is saying.
    TranscriptDelta {
        response_id: String,
        item_id: String,
        delta: String,
    },
    /// The assistant item's audio is complete.
    AudioDone { item_id: String },
    /// A response ended; `status` is `completed`, `cancelled`, `incomplete` or `failed`, and
    /// `reason` says why one did not complete (`content_filter`, `max_output_tokens`,
    /// `turn_detected`, ...; empty when the provider gave none).
    ResponseDone {
        response_id: String,
        status: String,
        reason: String,
    },
    /// The provider confirmed a truncation.
    Truncated { item_id: String, audio_end_ms: u32 },
    /// A non-fatal error the provider reported for one of our commands.
    ServerError {
        code: Option<String>,
        message: String,
    },
}

/// The sending half of a session.
pub struct RealtimeCommands {
    sink: Pin<Box<dyn Sink<RealtimeCommand, Error = ProviderError> + Send>>,
    /// The first failure: a failed sink must not be polled again (futures' adapters panic
    /// when they are), so later commands fail with it at once.
    failed: Option<ProviderError>,
}

impl RealtimeCommands {
    pub fn new(sink: impl Sink<RealtimeCommand, Error = ProviderError> + Send + 'static) -> Self {
        Self {
            sink: Box::pin(sink),
            failed: None,
        }
    }

    /// Sends one command and flushes it.
    pub async fn send(&mut self, command: RealtimeCommand) -> ProviderResult<()> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.sink.send(command).await;
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// Whether a command failed already (later ones fail at once with the same error).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Appends caller audio (µ-law 8 kHz).
    pub async fn append_audio(&mut self, mulaw: Bytes) -> ProviderResult<()> {
        self.send(RealtimeCommand::AppendAudio(mulaw)).await
    }

    /// Truncates an assistant item to the first `audio_end_ms` of its audio.
    pub async fn truncate(&mut self, item_id: String, audio_end_ms: u32) -> ProviderResult<()> {
        self.send(RealtimeCommand::Truncate {
            item_id,
            audio_end_ms,
        })
        .await
    }

    /// Closes the session cleanly (nothing to do once it failed).
    pub async fn close(&mut self) -> ProviderResult<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.sink.close().await
    }
}

/// One open realtime session. The halves are separate fields so a `select!` loop can await
/// events while sending audio; dropping both closes the connection.
pub struct RealtimeSession {
    pub commands: RealtimeCommands,
    pub events: BoxStream<'static, ProviderResult<RealtimeEvent>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::sink;

    #[tokio::test]
    async fn a_failed_command_sink_is_not_polled_again() {
        // A sink adapter that panics when polled after it failed, like the WebSocket's.
        let failing = sink::unfold(0u32, |calls, _command: RealtimeCommand| async move {
            assert_eq!(calls, 0, "polled again after failing");
            Err::<u32, _>(ProviderError::Transport("reset".into()))
        });
        let mut commands = RealtimeCommands::new(failing);
        assert!(!commands.has_failed());
        let audio = || RealtimeCommand::AppendAudio(Bytes::from_static(&[0xff; 160]));
        for _ in 0..3 {
            assert_eq!(
                commands.send(audio()).await,
                Err(ProviderError::Transport("reset".into()))
            );
        }
        assert!(commands.has_failed());
        assert_eq!(commands.close().await, Ok(()));
    }
}
