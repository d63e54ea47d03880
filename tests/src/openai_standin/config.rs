//! The stand-in's behaviour knobs: latencies per endpoint, audio shape and initial faults.
//! Flags and env vars come from the same struct; `Default` uses the same default constants but
//! never reads the environment, so in-process tests do not depend on it.

use std::time::Duration;

use clap::Parser;

use super::faults::FaultRule;

/// Defaults, shared by the flags and `Default` (which must not read the environment).
mod defaults {
    pub const TRANSCRIPTION_MS: u64 = 150;
    pub const TRANSCRIPTION_DELTA_MS: u64 = 20;
    pub const CHAT_FIRST_TOKEN_MS: u64 = 300;
    pub const CHAT_TOKEN_MS: u64 = 20;
    pub const SPEECH_FIRST_BYTE_MS: u64 = 200;
    pub const SPEECH_CHUNK_MS: u64 = 40;
    pub const SPEECH_PACE: f64 = 4.0;
    pub const SPEECH_MS_PER_CHAR: u64 = 60;
    pub const SPEECH_TONE_HZ: u32 = 660;
    pub const REALTIME_RESPONSE_MS: u64 = 300;
    pub const VAD_THRESHOLD_DBFS: f32 = -40.0;
}

/// Configuration of the OpenAI stand-in. Defaults are realistic latencies of the real API.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "callfleet-openai-standin",
    about = "Local OpenAI-compatible server"
)]
pub struct StandinConfig {
    /// Delay before a transcription answers (or sends its first delta).
    #[arg(long, env = "STANDIN_TRANSCRIPTION_MS", default_value_t = defaults::TRANSCRIPTION_MS)]
    pub transcription_ms: u64,
    /// Delay between streamed transcription deltas.
    #[arg(long, env = "STANDIN_TRANSCRIPTION_DELTA_MS", default_value_t = defaults::TRANSCRIPTION_DELTA_MS)]
    pub transcription_delta_ms: u64,
    /// Time to the first chat token.
    #[arg(long, env = "STANDIN_CHAT_FIRST_TOKEN_MS", default_value_t = defaults::CHAT_FIRST_TOKEN_MS)]
    pub chat_first_token_ms: u64,
    /// Delay between chat tokens.
    #[arg(long, env = "STANDIN_CHAT_TOKEN_MS", default_value_t = defaults::CHAT_TOKEN_MS)]
    pub chat_token_ms: u64,
    /// Time to the first byte of speech audio.
    #[arg(long, env = "STANDIN_SPEECH_FIRST_BYTE_MS", default_value_t = defaults::SPEECH_FIRST_BYTE_MS)]
    pub speech_first_byte_ms: u64,
    /// Audio per streamed speech chunk.
    #[arg(long, env = "STANDIN_SPEECH_CHUNK_MS", default_value_t = defaults::SPEECH_CHUNK_MS)]
    pub speech_chunk_ms: u64,
    /// How much faster than real time speech is streamed (OpenAI streams well ahead).
    #[arg(long, env = "STANDIN_SPEECH_PACE", default_value_t = defaults::SPEECH_PACE)]
    pub speech_pace: f64,
    /// Spoken length per character of input text, at speed 1.0.
    #[arg(long, env = "STANDIN_SPEECH_MS_PER_CHAR", default_value_t = defaults::SPEECH_MS_PER_CHAR)]
    pub speech_ms_per_char: u64,
    /// Frequency of the synthesized speech tone (distinct from test input tones).
    #[arg(long, env = "STANDIN_SPEECH_TONE_HZ", default_value_t = defaults::SPEECH_TONE_HZ)]
    pub speech_tone_hz: u32,
    /// Time from end of caller speech to the first realtime response audio.
    #[arg(long, env = "STANDIN_REALTIME_RESPONSE_MS", default_value_t = defaults::REALTIME_RESPONSE_MS)]
    pub realtime_response_ms: u64,
    /// Frames at or above this level (dBFS) count as speech for transcription and realtime VAD.
    #[arg(long, env = "STANDIN_VAD_THRESHOLD_DBFS", default_value_t = defaults::VAD_THRESHOLD_DBFS, allow_hyphen_values = true)]
    pub vad_threshold_dbfs: f32,
    /// Faults active from the start: `<endpoint|all>:<429|5xx|stall|stall_mid_stream|drop|stall_after_headers|drop_after_speech|drop_before_transcript|stall_in_speech|fail_response|garbage_events>[:count]`,
    /// e.g. `chat:429:2` or `all:500`. Endpoints: transcriptions, chat, speech, realtime.
    #[arg(long = "fault", env = "STANDIN_FAULTS", value_delimiter = ',')]
    pub faults: Vec<FaultRule>,
    /// Refuse transcription uploads without a `Content-Length` (411), as servers that cannot
    /// take a chunked request body do.
    #[arg(long, env = "STANDIN_REQUIRE_CONTENT_LENGTH")]
    pub require_content_length: bool,
    /// Refuse transcription uploads that are not 16-bit PCM WAV (400), as servers whose audio
    /// decoder knows nothing else do.
    #[arg(long, env = "STANDIN_PCM_WAV_ONLY")]
    pub pcm_wav_only: bool,
}

impl Default for StandinConfig {
    fn default() -> Self {
        Self {
            transcription_ms: defaults::TRANSCRIPTION_MS,
            transcription_delta_ms: defaults::TRANSCRIPTION_DELTA_MS,
            chat_first_token_ms: defaults::CHAT_FIRST_TOKEN_MS,
            chat_token_ms: defaults::CHAT_TOKEN_MS,
            speech_first_byte_ms: defaults::SPEECH_FIRST_BYTE_MS,
            speech_chunk_ms: defaults::SPEECH_CHUNK_MS,
            speech_pace: defaults::SPEECH_PACE,
            speech_ms_per_char: defaults::SPEECH_MS_PER_CHAR,
            speech_tone_hz: defaults::SPEECH_TONE_HZ,
            realtime_response_ms: defaults::REALTIME_RESPONSE_MS,
            vad_threshold_dbfs: defaults::VAD_THRESHOLD_DBFS,
            faults: Vec::new(),
            require_content_length: false,
            pcm_wav_only: false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai_standin::faults::{Endpoint, Fault};

    #[test]
    fn no_flags_means_default() {
        let parsed = StandinConfig::try_parse_from(["callfleet-openai-standin"]).unwrap();
        assert_eq!(parsed, StandinConfig::default());
    }

    #[test]
    fn parses_latency_and_fault_flags() {
        let parsed = StandinConfig::try_parse_from([
            "callfleet-openai-standin",
            "--chat-first-token-ms",
            "5",
            "--vad-threshold-dbfs",
            "-30",
            "--fault",
            "chat:429:1,speech:drop",
        ])
        .unwrap();
        assert_eq!(parsed.chat_first_token_ms, 5);
        assert_eq!(parsed.vad_threshold_dbfs, -30.0);
        assert_eq!(parsed.faults.len(), 2);
        assert_eq!(parsed.faults[1].endpoint, Some(Endpoint::Speech));
        assert_eq!(parsed.faults[1].fault, Fault::DropMidStream);
        assert!(StandinConfig::try_parse_from(["x", "--fault", "bogus"]).is_err());
    }
}
