//! `callfleet-loadgen` settings. The defaults describe the benchmark's calls: Twilio Media
//! Streams, 2 s of a 440 Hz tone, then 5 s of silence (enough for the end-of-turn window and the
//! whole reply to play), repeated.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::pattern::Pattern;
use super::wire::{Voice, Wire};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "callfleet-loadgen",
    about = "Simulated phone calls against one callfleet worker (a benchmark tool, not a test)"
)]
pub struct LoadConfig {
    /// Worker address (`ws://` only: the generator stamps receive times on plain sockets); the
    /// protocol's path is added when the URL has none.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// Protocol the simulated carrier speaks.
    #[arg(long, value_enum, default_value_t = Wire::Twilio)]
    pub protocol: Wire,
    /// Concurrent calls to hold.
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// Length of the measured steady window, in seconds, after every call is connected and
    /// the settle time passed. The run ends after it.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Calls started per ramp step.
    #[arg(long, default_value_t = 100)]
    pub ramp_batch: usize,
    /// Pause between ramp steps, in milliseconds.
    #[arg(long, default_value_t = 250)]
    pub ramp_interval_ms: u64,
    /// Wait after the ramp before measuring, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Caller speech (a tone) per cycle, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub speech_ms: u64,
    /// Caller silence per cycle, in milliseconds: must cover the end-of-turn window and the
    /// reply, or the next speech barges in.
    #[arg(long, default_value_t = 5_000)]
    pub silence_ms: u64,
    /// A pause mid-sentence after this much speech, in milliseconds (with `--pause-ms`).
    #[arg(long, default_value_t = 0)]
    pub pause_after_ms: u64,
    /// Length of that pause, in milliseconds: shorter than the end-of-turn window, so it does
    /// not end the turn (0: no pause).
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// Silent callers only (connected, never speaking): for idle memory and CPU.
    #[arg(long)]
    pub idle: bool,
    /// Frequency of the speech tone.
    #[arg(long, default_value_t = 440)]
    pub tone_hz: u32,
    /// Peak amplitude of the speech tone, as a fraction of full scale.
    #[arg(long, default_value_t = 0.3)]
    pub tone_amplitude: f64,
    /// The pipeline's end-of-turn window (`turnDetection.silenceMs`).
    #[arg(long, default_value_t = 600)]
    pub turn_window_ms: u64,
    /// Configured provider latency to first audio (STT + LLM to the first sentence + TTS first
    /// byte), subtracted to give the pipeline overhead.
    #[arg(long, default_value_t = 0)]
    pub provider_ms: u64,
    /// A frame later than this after its schedule counts as late.
    #[arg(long, default_value_t = 20)]
    pub late_ms: u64,
    /// HMAC secret for call tokens.
    #[arg(long, env = "CALLFLEET_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// File holding the HMAC secret (used as stored, like the worker does).
    #[arg(long, env = "CALLFLEET_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// Prefix of the generated call ids.
    #[arg(long, default_value = "loadgen")]
    pub call_id_prefix: String,
    /// Give up on a connection attempt after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Single-threaded runtimes (one thread each) the calls are spread over; 0 runs them on
    /// the work-stealing runtime instead. One per core by default: a call then stays on one
    /// thread, and no cross-thread wake-ups or task stealing add to the generator's cost on the
    /// machine it shares with the worker.
    #[arg(long, env = "LOADGEN_RUNTIMES", default_value_t = default_runtimes())]
    pub runtimes: usize,
    /// Worker process to sample (CPU, RSS) over the steady window.
    #[arg(long)]
    pub worker_pid: Option<u32>,
    /// OpenAI stand-in process to sample too.
    #[arg(long)]
    pub standin_pid: Option<u32>,
    /// Also write every answered turn as a CSV line `window_closed_s,unix_s,call_turn,
    /// overhead_ms` (when its window closed, since the run began and on the wall clock, and the
    /// call's turn number), to see when the slow ones happened.
    #[arg(long)]
    pub turns_csv: Option<std::path::PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn default_runtimes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl LoadConfig {
    pub fn pattern(&self) -> Pattern {
        if self.idle {
            Pattern::idle()
        } else {
            Pattern::new(
                Duration::from_millis(self.speech_ms),
                Duration::from_millis(self.silence_ms),
            )
            .with_pause(
                Duration::from_millis(self.pause_after_ms),
                Duration::from_millis(self.pause_ms),
            )
        }
    }

    pub fn voice(&self) -> Voice {
        Voice {
            tone_hz: self.tone_hz,
            amplitude: self.tone_amplitude,
        }
    }

    /// The worker URL with the protocol's path.
    pub fn call_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let has_path = base
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
        if has_path {
            base.to_owned()
        } else {
            format!("{base}{}", self.protocol.path())
        }
    }

    pub fn steady_window(&self) -> Duration {
        Duration::try_from_secs_f64(self.duration).unwrap_or_default()
    }

    pub fn settle_time(&self) -> Duration {
        Duration::try_from_secs_f64(self.settle).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> LoadConfig {
        LoadConfig::try_parse_from(std::iter::once("callfleet-loadgen").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn urls_get_the_protocol_path() {
        assert_eq!(parse(&[]).call_url(), "ws://127.0.0.1:8080/ws/twilio");
        let seed = parse(&["--url", "ws://h:1/", "--protocol", "seed"]);
        assert_eq!(seed.call_url(), "ws://h:1/ws/call-session");
        assert_eq!(
            parse(&["--url", "ws://h:1/custom"]).call_url(),
            "ws://h:1/custom"
        );
    }

    #[test]
    fn idle_and_patterns() {
        assert!(parse(&["--idle"]).pattern().is_idle());
        let p = parse(&["--speech-ms", "1000", "--silence-ms", "3000"]).pattern();
        assert_eq!((p.speech_frames(), p.cycle_frames()), (50, 200));
        assert_eq!(parse(&["--duration=-1"]).steady_window(), Duration::ZERO);
    }
}
