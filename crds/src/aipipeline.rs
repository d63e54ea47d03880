//! AiPipeline: how a call is answered (provider, mode, models, turn detection).
//!
//! The spec is also the worker's pipeline contract: the operator renders it as JSON into the
//! pipeline ConfigMap (see `docs/contracts.md`) and the worker deserializes this same type, so
//! both sides share one definition. Unknown fields are ignored on read, so an older worker keeps
//! working when a newer operator adds fields.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a call is answered: which OpenAI-compatible provider, which models, and how turns are
/// detected. CallClusters reference it by name; changing it never restarts workers: new calls
/// use the new version, live calls keep theirs.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "callfleet.dev",
    version = "v1alpha1",
    kind = "AiPipeline",
    plural = "aipipelines",
    shortname = "aip",
    category = "callfleet",
    doc = "How a call is answered: an OpenAI-compatible provider, models, voice and turn detection. CallClusters reference it; changing it never restarts workers.",
    namespaced,
    status = "AiPipelineStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"LLM","type":"string","jsonPath":".spec.llm.model"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AiPipelineSpec {
    /// The OpenAI-compatible endpoint and its API key.
    pub provider: ProviderSpec,
    /// `cascade` runs STT → LLM → TTS; `realtime` uses one speech-to-speech session per call.
    #[serde(default)]
    pub mode: PipelineMode,
    /// Speech-to-text settings (cascade mode).
    #[serde(default)]
    pub stt: SttSpec,
    /// Language-model settings (cascade mode).
    #[serde(default)]
    pub llm: LlmSpec,
    /// Text-to-speech settings (cascade mode).
    #[serde(default)]
    pub tts: TtsSpec,
    /// Speech-to-speech settings (realtime mode).
    #[serde(default)]
    pub realtime: RealtimeSpec,
    /// Voice activity detection, end of turn and barge-in.
    #[serde(default)]
    pub turn_detection: TurnDetectionSpec,
    /// Spoken by the assistant when the call connects. No greeting when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2000))]
    pub greeting: Option<String>,
}

/// The pipeline's execution mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PipelineMode {
    /// Speech-to-text, then a streamed chat completion, then streamed text-to-speech.
    #[default]
    Cascade,
    /// One `/v1/realtime` WebSocket per call, audio in and out.
    Realtime,
}

/// An OpenAI-compatible API endpoint.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.caBundle) || self.caBundle.contains('-----BEGIN CERTIFICATE-----')").message("provider.caBundle must hold PEM certificates (-----BEGIN CERTIFICATE----- blocks)")
)]
pub struct ProviderSpec {
    /// Base URL including the version prefix, e.g. `https://api.openai.com/v1`.
    #[serde(default = "default_base_url")]
    #[schemars(regex(pattern = r"^(https?|wss?)://"))]
    pub base_url: String,
    /// The Secret key holding the API key, in the AiPipeline's namespace.
    pub api_key_secret_ref: SecretKeyRef,
    /// Per-request timeout in seconds for provider calls.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,
    /// Retries on 429 and 5xx, with exponential backoff.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retries: u32,
    /// PEM certificates of the certificate authorities that sign the provider's TLS
    /// certificate, trusted in addition to the public roots: for a self-hosted
    /// OpenAI-compatible server (vLLM, a gateway) behind a private CA. Certificates are
    /// public, so they live here rather than in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 262144))]
    pub ca_bundle: Option<String>,
}

/// A key in a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_api_key_key")]
    pub key: String,
}

/// Speech-to-text (`/v1/audio/transcriptions`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SttSpec {
    /// Transcription model. Models that support `stream=true` are streamed.
    #[serde(default = "default_stt_model")]
    #[schemars(length(min = 1))]
    pub model: String,
    /// ISO-639-1 language hint, e.g. `en`. Detected when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}$"))]
    pub language: Option<String>,
    /// Upload the caller's audio while they speak (a chunked request opened once speech is
    /// confirmed), so only the last fraction of a second is sent after their turn ends: saves
    /// a round trip or two per turn to a distant provider, for a few percent more worker CPU
    /// and an open provider connection per speaking caller. The OpenAI API accepts this; a
    /// server that refuses it gets the whole utterance instead, and the worker stops trying for
    /// that pipeline version. Off by default: each utterance is uploaded when the turn ends.
    #[serde(default)]
    pub upload_while_speaking: bool,
    /// How an utterance sent whole is encoded. `auto` (default): callers whose carrier sends
    /// G.711 µ-law (Twilio Media Streams, µ-law seed calls) go as µ-law WAV, half the bytes of
    /// 16-bit PCM and nothing lost (every sample already was a µ-law value), which saves a
    /// round trip to a distant provider on most turns; everyone else as 16-bit PCM WAV. A
    /// server that refuses µ-law WAV gets the utterance again as PCM, and that pipeline version
    /// sends PCM from then on. `pcm`: always 16-bit PCM, for a server that takes µ-law WAV but
    /// decodes it wrong. Uploads made while the caller speaks are always PCM.
    #[serde(default)]
    pub upload_encoding: UploadEncoding,
}

/// The WAV encoding of an utterance sent whole to speech-to-text (`stt.uploadEncoding`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UploadEncoding {
    /// µ-law WAV for callers whose carrier sends µ-law, 16-bit PCM WAV otherwise.
    #[default]
    Auto,
    /// 16-bit PCM WAV for every caller.
    Pcm,
}

/// Chat completions (`/v1/chat/completions`, streamed over SSE).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmSpec {
    /// Chat model.
    #[serde(default = "default_llm_model")]
    #[schemars(length(min = 1))]
    pub model: String,
    /// The system prompt that starts every conversation.
    #[serde(default = "default_system_prompt")]
    #[schemars(length(max = 32768))]
    pub system_prompt: String,
    /// Sampling temperature.
    #[serde(default = "default_temperature")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: f64,
    /// Upper bound on tokens per reply.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1, max = 16384))]
    pub max_tokens: u32,
    /// Conversation turns (user + assistant pairs) kept in the prompt; older turns are dropped.
    #[serde(default = "default_max_history_turns")]
    #[schemars(range(min = 1, max = 200))]
    pub max_history_turns: u32,
}

/// Text-to-speech (`/v1/audio/speech`, `pcm` 24 kHz streamed).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TtsSpec {
    /// Speech model.
    #[serde(default = "default_tts_model")]
    #[schemars(length(min = 1))]
    pub model: String,
    /// Voice name.
    #[serde(default = "default_voice")]
    #[schemars(length(min = 1))]
    pub voice: String,
    /// Speaking rate.
    #[serde(default = "default_speed")]
    #[schemars(range(min = 0.25, max = 4.0))]
    pub speed: f64,
}

/// Speech-to-speech over `/v1/realtime`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeSpec {
    /// Realtime model.
    #[serde(default = "default_realtime_model")]
    #[schemars(length(min = 1))]
    pub model: String,
    /// Voice name.
    #[serde(default = "default_voice")]
    #[schemars(length(min = 1))]
    pub voice: String,
    /// Caller audio per `input_audio_buffer.append` while the caller is quiet: one provider
    /// message per this many ms instead of one per 20 ms frame. Speech, its onset, and the
    /// end-of-turn window after it always go frame by frame, so batching adds no latency to
    /// barge-in or to the end of a turn.
    #[serde(default = "default_input_chunk_ms")]
    #[schemars(range(min = 20, max = 1000))]
    pub input_chunk_ms: u32,
}

/// Energy VAD with hysteresis, end of turn and barge-in.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.earlyReplyMs) || self.earlyReplyMs < self.silenceMs").message("turnDetection.earlyReplyMs must be shorter than turnDetection.silenceMs")
)]
pub struct TurnDetectionSpec {
    /// Frame energy (dBFS) above which a frame counts as speech. Speech ends 6 dB below it.
    #[serde(default = "default_vad_threshold_dbfs")]
    #[schemars(range(min = -90, max = 0))]
    pub vad_threshold_dbfs: i32,
    /// Silence after speech that ends the caller's turn.
    #[serde(default = "default_silence_ms")]
    #[schemars(range(min = 100, max = 5000))]
    pub silence_ms: u32,
    /// Speech shorter than this is ignored (coughs, clicks).
    #[serde(default = "default_min_speech_ms")]
    #[schemars(range(min = 20, max = 5000))]
    pub min_speech_ms: u32,
    /// Caller speech during assistant playback stops the playback and the reply in flight.
    #[serde(default = "default_true")]
    pub barge_in: bool,
    /// Cascade mode: silence after which the reply is prepared (transcription, the model's
    /// answer, its first speech) before the turn is over. It is played the moment `silenceMs`
    /// is reached, and dropped if the caller speaks again first, so a reply can start as soon
    /// as after a short window while the turn still ends only after the long one. Each pause
    /// of this length that the caller talks through costs a transcription, and a chat request
    /// (and the first speech) too when the pause outlasts the transcription. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 5000))]
    pub early_reply_ms: Option<u32>,
}

/// Observed state of an AiPipeline.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when the spec is valid and the API-key Secret exists.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// CallClusters that reference this pipeline.
    #[serde(default)]
    pub used_by: Vec<String>,
}

fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_timeout_seconds() -> u32 {
    30
}
fn default_max_retries() -> u32 {
    2
}
fn default_api_key_key() -> String {
    "api-key".into()
}
fn default_stt_model() -> String {
    "gpt-4o-mini-transcribe".into()
}
fn default_llm_model() -> String {
    "gpt-4o-mini".into()
}
fn default_system_prompt() -> String {
    "You are a friendly phone assistant. Answer in one or two short sentences.".into()
}
fn default_temperature() -> f64 {
    0.7
}
fn default_max_tokens() -> u32 {
    256
}
fn default_max_history_turns() -> u32 {
    20
}
fn default_tts_model() -> String {
    "gpt-4o-mini-tts".into()
}
fn default_voice() -> String {
    "alloy".into()
}
fn default_speed() -> f64 {
    1.0
}
fn default_realtime_model() -> String {
    "gpt-realtime".into()
}
fn default_input_chunk_ms() -> u32 {
    100
}
fn default_vad_threshold_dbfs() -> i32 {
    -40
}
fn default_silence_ms() -> u32 {
    600
}
fn default_min_speech_ms() -> u32 {
    200
}
fn default_true() -> bool {
    true
}

impl Default for SttSpec {
    fn default() -> Self {
        Self {
            model: default_stt_model(),
            language: None,
            upload_while_speaking: false,
            upload_encoding: UploadEncoding::Auto,
        }
    }
}
impl Default for LlmSpec {
    fn default() -> Self {
        Self {
            model: default_llm_model(),
            system_prompt: default_system_prompt(),
            temperature: default_temperature(),
            max_tokens: default_max_tokens(),
            max_history_turns: default_max_history_turns(),
        }
    }
}
impl Default for TtsSpec {
    fn default() -> Self {
        Self {
            model: default_tts_model(),
            voice: default_voice(),
            speed: default_speed(),
        }
    }
}
impl Default for RealtimeSpec {
    fn default() -> Self {
        Self {
            model: default_realtime_model(),
            voice: default_voice(),
            input_chunk_ms: default_input_chunk_ms(),
        }
    }
}
impl Default for TurnDetectionSpec {
    fn default() -> Self {
        Self {
            vad_threshold_dbfs: default_vad_threshold_dbfs(),
            silence_ms: default_silence_ms(),
            min_speech_ms: default_min_speech_ms(),
            barge_in: true,
            early_reply_ms: None,
        }
    }
}
