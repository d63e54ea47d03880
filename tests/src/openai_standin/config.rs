//! The stand-in's behaviour knobs: latencies per endpoint, audio shape and initial faults.
//! Flags and env vars come from the same struct, and `Default` is "no flags given", so the
//! binary and in-process tests cannot drift apart.

use std::time::Duration;

use clap::Parser;

use super::faults::FaultRule;

/// Configuration of the OpenAI stand-in. Defaults are realistic latencies of the real API.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "callfleet-openai-standin",
    about = "Local OpenAI-compatible server"
)]
pub struct StandinConfig {
    /// Delay before a transcription answers (or sends its first delta).
    #[arg(long, env = "STANDIN_TRANSCRIPTION_MS", default_value_t = 150)]
    pub transcription_ms: u64,
    /// Delay between streamed transcription deltas.
    #[arg(long, env = "STANDIN_TRANSCRIPTION_DELTA_MS", default_value_t = 20)]
    pub transcription_delta_ms: u64,
    /// Time to the first chat token.
    #[arg(long, env = "STANDIN_CHAT_FIRST_TOKEN_MS", default_value_t = 300)]
    pub chat_first_token_ms: u64,
    /// Delay between chat tokens.
    #[arg(long, env = "STANDIN_CHAT_TOKEN_MS", default_value_t = 20)]
    pub chat_token_ms: u64,
    /// Time to the first byte of speech audio.
    #[arg(long, env = "STANDIN_SPEECH_FIRST_BYTE_MS", default_value_t = 200)]
    pub speech_first_byte_ms: u64,
    /// Audio per streamed speech chunk.
    #[arg(long, env = "STANDIN_SPEECH_CHUNK_MS", default_value_t = 40)]
    pub speech_chunk_ms: u64,
    /// How much faster than real time speech is streamed (OpenAI streams well ahead).
    #[arg(long, env = "STANDIN_SPEECH_PACE", default_value_t = 4.0)]
    pub speech_pace: f64,
    /// Spoken length per character of input text, at speed 1.0.
    #[arg(long, env = "STANDIN_SPEECH_MS_PER_CHAR", default_value_t = 60)]
    pub speech_ms_per_char: u64,
    /// Frequency of the synthesized speech tone (distinct from test input tones).
    #[arg(long, env = "STANDIN_SPEECH_TONE_HZ", default_value_t = 660)]
    pub speech_tone_hz: u32,
    /// Time from end of caller speech to the first realtime response audio.
    #[arg(long, env = "STANDIN_REALTIME_RESPONSE_MS", default_value_t = 300)]
    pub realtime_response_ms: u64,
    /// Frames at or above this level (dBFS) count as speech for transcription and realtime VAD.
    #[arg(long, env = "STANDIN_VAD_THRESHOLD_DBFS", default_value_t = -40.0, allow_hyphen_values = true)]
    pub vad_threshold_dbfs: f32,
    /// Faults active from the start: `<endpoint|all>:<429|5xx|stall|stall_mid_stream|drop>[:count]`,
    /// e.g. `chat:429:2` or `all:500`. Endpoints: transcriptions, chat, speech, realtime.
    #[arg(long = "fault", env = "STANDIN_FAULTS", value_delimiter = ',')]
    pub faults: Vec<FaultRule>,
}

impl Default for StandinConfig {
    fn default() -> Self {
        Self::parse_from(["callfleet-openai-standin"])
    }
}

impl StandinConfig {
    /// No artificial delays: for tests that check behaviour, not timing.
    pub fn instant() -> Self {
        Self {
            transcription_ms: 0,
            transcription_delta_ms: 0,
            chat_first_token_ms: 0,
            chat_token_ms: 0,
            speech_first_byte_ms: 0,
            speech_pace: 1000.0,
            realtime_response_ms: 0,
            ..Self::default()
        }
    }

    pub(crate) fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }
}
