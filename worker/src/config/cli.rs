//! `callfleet-worker [serve]` and `callfleet-worker token`. Every flag has the env var the
//! operator sets on the worker Deployment (`docs/contracts.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::recording::{Coding, PART_SIZE, RecordingSettings, UploadSettings};
use crate::turn_runtime::TurnRuntime;

#[derive(Debug, Parser)]
#[command(name = "callfleet-worker", version, about = "callfleet call worker")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve calls (the default).
    Serve,
    /// Mint a call token from the worker's token secret and print it.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The call id the token is for (Twilio CallSid, FreeSWITCH UUID, any id without '.').
    #[arg(long)]
    pub call_id: String,
    /// How long the token stays valid.
    #[arg(long, default_value_t = 600)]
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `CALLFLEET_RECORDINGS_FORMAT`, as the operator renders it from the CallCluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordingFormat {
    /// 16-bit linear PCM WAV.
    #[value(name = "wav")]
    Wav,
    /// G.711 µ-law WAV.
    #[value(name = "wavMulaw")]
    WavMulaw,
}

/// Recordings are on but cannot work.
#[derive(Debug, thiserror::Error)]
#[error("CALLFLEET_RECORDINGS_ENABLED is true but CALLFLEET_RECORDINGS_BUCKET is not set")]
pub struct MissingBucket;

/// Settings of a serving worker.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address for the WebSocket endpoints, /health, /ready and /metrics.
    #[arg(long, env = "CALLFLEET_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Pipeline config file (the mounted `<callcluster>-pipeline` ConfigMap).
    #[arg(
        long,
        env = "CALLFLEET_PIPELINE_FILE",
        default_value = "/etc/callfleet/pipeline/pipeline.json"
    )]
    pub pipeline_file: PathBuf,
    /// Provider API key file (re-read on every reload).
    #[arg(
        long,
        env = "CALLFLEET_PROVIDER_API_KEY_FILE",
        default_value = "/etc/callfleet/provider/api-key"
    )]
    pub provider_api_key_file: PathBuf,
    /// Provider API key when the key file is absent (local runs).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// HMAC secret file for call tokens.
    #[arg(
        long,
        env = "CALLFLEET_TOKEN_SECRET_FILE",
        default_value = "/etc/callfleet/auth/token-secret"
    )]
    pub token_secret_file: PathBuf,
    /// HMAC secret when the file is absent (local runs).
    #[arg(long, env = "CALLFLEET_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Admission limit: concurrent calls on this worker.
    #[arg(long, env = "CALLFLEET_MAX_CALLS", default_value_t = 10_000)]
    pub max_calls: usize,
    /// Max call duration in seconds.
    #[arg(long, env = "CALLFLEET_MAX_CALL_SECONDS", default_value_t = 300)]
    pub max_call_seconds: u64,
    /// No inbound frame for this long ends the call.
    #[arg(long, env = "CALLFLEET_IDLE_TIMEOUT_SECONDS", default_value_t = 30)]
    pub idle_timeout_seconds: u64,
    /// Redis URL the operator passes from the CallCluster (not used yet: see `warn_unused`).
    #[arg(long, env = "CALLFLEET_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// PostgreSQL URL for call logs (not used yet: see `warn_unused`).
    #[arg(long, env = "CALLFLEET_CALL_LOG_URL", hide_env_values = true)]
    pub call_log_url: Option<String>,
    /// Kernel send buffer per connection in bytes (SO_SNDBUF; 0 leaves the kernel's
    /// autotuning, which lets a carrier that stops reading pin up to `tcp_wmem` max, often
    /// 4 MiB, per call). 64 KiB holds seconds of any protocol's reply audio.
    #[arg(long, env = "CALLFLEET_SOCKET_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub socket_send_buffer: usize,
    /// Media threads. 0 (default): one work-stealing runtime over the usable cores, or a
    /// single-threaded one when the pod may use one core. N: N single-threaded runtimes, each
    /// with its own listener on the shared port (SO_REUSEPORT, the kernel spreads connections),
    /// so a call is served start to end on one thread with no cross-thread wake-ups.
    #[arg(long, env = "CALLFLEET_MEDIA_THREADS", default_value_t = 0)]
    pub media_threads: usize,
    /// Event batching, in microseconds: a media thread that runs out of work waits this long
    /// before asking the kernel for new events, so under load it takes many calls' frames per
    /// wake-up instead of waking for each. Turns then run on a runtime of their own that does
    /// not batch (`turn_runtime`), so provider answers do not wait. At 1 ms it took 5–14% off
    /// the CPU per call at 1,000–2,000 calls in conversation, first audio about 1.2 ms later at
    /// p50; since resting calls' connections went quiet it saves nothing (2026-12-04: 2–5% more
    /// at 1,000 calls). 0 (default): every event is taken as it comes and turns run beside their
    /// calls. At most 20,000 (one frame).
    #[arg(long, env = "CALLFLEET_EVENT_BATCH_US", default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=20_000))]
    pub event_batch_us: u64,
    /// Milliseconds a call leaves its socket alone between reads while no decision hangs on
    /// the caller's next frames (quiet, or talking with the last frame loud): the kernel holds
    /// what arrives and one read takes three frames instead of three wake-ups and reads. The
    /// frame that ends a turn is always read as it comes; noticing that the caller began to speak
    /// may come up to this much later, and a barge-in when `minSpeechMs` is under this plus 40
    /// ms (otherwise rests while a reply could be barged into last up to `minSpeechMs` - 40 ms,
    /// at most `listening_rest_ms`: speech noticed that soon is still confirmed on time). 0:
    /// every frame is read as it comes. At most 100.
    #[arg(long, env = "CALLFLEET_INBOUND_REST_MS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(0..=100))]
    pub inbound_rest_ms: u64,
    /// Milliseconds between reads, as `inbound_rest_ms`, while there is nothing to barge into
    /// (no reply being prepared or played: the caller talks, or both are quiet), when noticing
    /// the start of speech late delays nothing; still never past the frame that would end the
    /// turn or report an early-reply pause. Eight frames a read instead of three. Never less
    /// than `inbound_rest_ms` (0: the same); no effect when that is 0. At most 300.
    #[arg(long, env = "CALLFLEET_LISTENING_REST_MS", default_value_t = 160,
        value_parser = clap::value_parser!(u64).range(0..=300))]
    pub listening_rest_ms: u64,
    /// Milliseconds between the instants calls' timers are moved to (the ends of rests from
    /// reading, reply writes, housekeeping), so that calls due within one tick wake together
    /// and a thread wakes once per tick for all of them rather than about once a millisecond
    /// for one or two. Writes and bounded rests move earlier, never later; a rest's plain
    /// length to the nearest tick (a barge-in noticed up to half a tick later). 10 ms took
    /// 10–25% off idle calls' CPU. 0: every timer at its own instant. At most 20 (a reply
    /// frame may leave up to one frame early).
    #[arg(long, env = "CALLFLEET_WAKE_TICK_MS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wake_tick_ms: u64,
    /// Threads for a runtime that runs turns (provider requests, stream decoding, resampling)
    /// apart from the calls' frames. Unset (default): one per two media cores when event
    /// batching is on, none otherwise. 0: turns always run beside their calls.
    #[arg(long, env = "CALLFLEET_TURN_THREADS")]
    pub turn_threads: Option<usize>,
    /// Load shedding: while a media runtime's event loop is on average this many milliseconds
    /// behind, the worker reports not ready and refuses new calls (`OVERLOADED`) so its live
    /// calls stay real-time; it takes calls again under a fifth of it. `0` turns it off.
    #[arg(long, env = "CALLFLEET_OVERLOAD_LAG_MS", default_value_t = 50)]
    pub overload_lag_ms: u64,
    /// New connections per client IP per minute (0 = no limit). Connections that present a
    /// valid token in the URL or an `Authorization` header are not counted.
    #[arg(long, env = "CALLFLEET_RATE_LIMIT_PER_MINUTE", default_value_t = 100)]
    pub rate_limit_per_minute: u32,
    /// On SIGTERM: stop admitting and wait this long for calls to end.
    #[arg(long, env = "CALLFLEET_DRAIN_SECONDS", default_value_t = 330)]
    pub drain_seconds: u64,
    /// Log format.
    #[arg(long, env = "CALLFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How often the pipeline file is checked for changes, in milliseconds.
    #[arg(long, env = "CALLFLEET_PIPELINE_POLL_MS", default_value_t = 2_000)]
    pub pipeline_poll_ms: u64,
    /// Upper bound on provider requests in flight from this worker (0 = unbounded).
    #[arg(long, env = "CALLFLEET_PROVIDER_MAX_CONCURRENCY", default_value_t = 0)]
    pub provider_max_concurrency: usize,
    /// Record calls to S3-compatible storage (`true`/`false`).
    #[arg(long, env = "CALLFLEET_RECORDINGS_ENABLED", action = ArgAction::Set, default_value_t = false)]
    pub recordings_enabled: bool,
    /// S3-compatible endpoint URL (AWS S3 when unset).
    #[arg(long, env = "CALLFLEET_RECORDINGS_ENDPOINT")]
    pub recordings_endpoint: Option<String>,
    /// Region for request signing.
    #[arg(long, env = "CALLFLEET_RECORDINGS_REGION")]
    pub recordings_region: Option<String>,
    /// Bucket recordings are uploaded to.
    #[arg(long, env = "CALLFLEET_RECORDINGS_BUCKET")]
    pub recordings_bucket: Option<String>,
    /// Object key prefix, used as is: keys are `<prefix><YYYY>/<MM>/<DD>/<call id>-<HHMMSSmmm>.wav`.
    #[arg(
        long,
        env = "CALLFLEET_RECORDINGS_PREFIX",
        default_value = "recordings/"
    )]
    pub recordings_prefix: String,
    /// Sample coding of recordings.
    #[arg(long, env = "CALLFLEET_RECORDINGS_FORMAT", value_enum, default_value_t = RecordingFormat::Wav)]
    pub recordings_format: RecordingFormat,
    /// Access key id for the recordings bucket (else the usual AWS credential sources).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    /// Secret access key for the recordings bucket.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// Local folder recordings are written to until the bucket has them; what a previous run
    /// left there is uploaded on start.
    #[arg(
        long,
        env = "CALLFLEET_RECORDINGS_SPOOL_DIR",
        default_value = "/var/lib/callfleet/recordings"
    )]
    pub recordings_spool_dir: PathBuf,
    /// Recordings uploaded at once.
    #[arg(long, env = "CALLFLEET_RECORDINGS_UPLOADS", default_value_t = 4)]
    pub recordings_uploads: usize,
    /// Longest wait between upload attempts while the bucket is unreachable, in seconds.
    #[arg(
        long,
        env = "CALLFLEET_RECORDINGS_RETRY_MAX_SECONDS",
        default_value_t = 60
    )]
    pub recordings_retry_max_seconds: u64,
}

/// The runtime layout serving calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaRuntime {
    /// One work-stealing runtime over this many threads: idle threads take over a busy or
    /// descheduled one's calls, which keeps reply pacing when the CPU is oversubscribed.
    WorkStealing(usize),
    /// This many single-threaded runtimes, each with its own listener: 12–16% less CPU per call
    /// with one thread than two work-stealing threads; with several, no cheaper than work
    /// stealing and worse at pacing under CPU contention (BENCHMARKS.md).
    PerThread(usize),
}

impl MediaRuntime {
    /// `configured` threads (0 = automatic) on a process that may use `cores` cores.
    pub fn choose(configured: usize, cores: usize) -> Self {
        match (configured, cores) {
            (0, 0 | 1) => Self::PerThread(1),
            (0, cores) => Self::WorkStealing(cores),
            (threads, _) => Self::PerThread(threads),
        }
    }

    /// Threads serving calls.
    pub fn cores(self) -> usize {
        match self {
            Self::WorkStealing(threads) | Self::PerThread(threads) => threads.max(1),
        }
    }

    /// Listeners (and provider connection pools) to set up: one per single-threaded runtime.
    pub fn listeners(self) -> usize {
        match self {
            Self::WorkStealing(_) => 1,
            Self::PerThread(threads) => threads.max(1),
        }
    }
}

impl ServeArgs {
    pub fn max_call_duration(&self) -> Duration {
        Duration::from_secs(self.max_call_seconds)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }
    /// How calls are spread over threads: as configured, or by the cores the process may use
    /// (`available_parallelism` reads the cgroup CPU quota too).
    pub fn media_runtime(&self) -> MediaRuntime {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        MediaRuntime::choose(self.media_threads, cores)
    }
    pub fn inbound_rest(&self) -> Duration {
        Duration::from_millis(self.inbound_rest_ms)
    }
    pub fn listening_rest(&self) -> Duration {
        Duration::from_millis(self.listening_rest_ms)
    }
    pub fn wake_tick(&self) -> Duration {
        Duration::from_millis(self.wake_tick_ms)
    }
    pub fn event_batch(&self) -> Duration {
        Duration::from_micros(self.event_batch_us)
    }
    /// Threads of the turn runtime, 0 for none (see `turn_threads`).
    pub fn turn_runtime_threads(&self) -> usize {
        self.turn_threads.unwrap_or_else(|| {
            if self.event_batch().is_zero() {
                0
            } else {
                TurnRuntime::threads_for(self.media_runtime().cores())
            }
        })
    }
    pub fn pipeline_poll(&self) -> Duration {
        Duration::from_millis(self.pipeline_poll_ms.max(10))
    }

    /// Settings the operator passes that this worker does not act on yet, each with what that
    /// means for the user, so a configured Redis or call log is never silently ignored.
    pub fn unused_settings(&self) -> Vec<&'static str> {
        let mut unused = Vec::new();
        if self.redis_url.as_deref().is_some_and(|u| !u.is_empty()) {
            unused.push(
                "CALLFLEET_REDIS_URL is set but not used yet: call history and rate limits stay \
                 in this worker's memory, so a call resumes only on the worker that had it",
            );
        }
        if self.call_log_url.as_deref().is_some_and(|u| !u.is_empty()) {
            unused.push("CALLFLEET_CALL_LOG_URL is set but not used yet: no call logs are written");
        }
        unused
    }

    /// The recordings settings, or `None` when recordings are off.
    pub fn recordings(&self) -> Result<Option<RecordingSettings>, MissingBucket> {
        if !self.recordings_enabled {
            return Ok(None);
        }
        let bucket = self
            .recordings_bucket
            .clone()
            .filter(|b| !b.is_empty())
            .ok_or(MissingBucket)?;
        let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        Ok(Some(RecordingSettings {
            endpoint: nonempty(&self.recordings_endpoint),
            region: nonempty(&self.recordings_region),
            bucket,
            prefix: self.recordings_prefix.clone(),
            coding: match self.recordings_format {
                RecordingFormat::Wav => Coding::L16,
                RecordingFormat::WavMulaw => Coding::Mulaw,
            },
            access_key_id: nonempty(&self.aws_access_key_id),
            secret_access_key: nonempty(&self.aws_secret_access_key),
            spool_dir: self.recordings_spool_dir.clone(),
            uploads: UploadSettings {
                workers: self.recordings_uploads.max(1),
                retry_max: Duration::from_secs(self.recordings_retry_max_seconds.max(1)),
                part_size: PART_SIZE,
            },
        }))
    }

    /// Defaults (and `CALLFLEET_*` env) for a worker started in-process (tests, local runs),
    /// listening on an ephemeral loopback port.
    pub fn local(pipeline_file: PathBuf, token_secret: &str) -> Result<Self, clap::Error> {
        let mut args = Cli::try_parse_from(["callfleet-worker"])?.serve;
        args.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        args.pipeline_file = pipeline_file;
        args.provider_api_key_file = PathBuf::from("/nonexistent/callfleet/api-key");
        args.token_secret_file = PathBuf::from("/nonexistent/callfleet/token-secret");
        args.token_secret = Some(token_secret.to_owned());
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's command line with `args` after the program name.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("callfleet-worker").chain(args.iter().copied()))
    }

    #[test]
    fn media_runtime_follows_the_usable_cores_unless_configured() {
        assert_eq!(MediaRuntime::choose(0, 1), MediaRuntime::PerThread(1));
        assert_eq!(MediaRuntime::choose(0, 4), MediaRuntime::WorkStealing(4));
        assert_eq!(MediaRuntime::choose(3, 8), MediaRuntime::PerThread(3));
        assert_eq!(MediaRuntime::WorkStealing(4).listeners(), 1);
        assert_eq!(MediaRuntime::PerThread(3).listeners(), 3);
        assert_eq!(MediaRuntime::WorkStealing(4).cores(), 4);
        assert_eq!(MediaRuntime::PerThread(3).cores(), 3);
    }

    #[test]
    fn turns_get_threads_of_their_own_with_batching_or_when_asked() {
        let threads = |args: &[&str]| {
            let mut argv = vec!["callfleet-worker", "--media-threads", "4"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
                .unwrap()
                .serve
                .turn_runtime_threads()
        };
        assert_eq!(threads(&[]), 0);
        assert_eq!(threads(&["--event-batch-us", "1000"]), 2);
        assert_eq!(threads(&["--turn-threads", "1"]), 1);
        assert_eq!(
            threads(&["--event-batch-us", "1000", "--turn-threads", "0"]),
            0
        );
    }

    #[test]
    fn inbound_rests_default_to_60_ms_and_at_most_100() {
        let rest = |args: &[&str]| parse(args).unwrap().serve.inbound_rest();
        assert_eq!(rest(&[]), Duration::from_millis(60));
        assert_eq!(rest(&["--inbound-rest-ms", "0"]), Duration::ZERO);
        assert_eq!(
            rest(&["--inbound-rest-ms", "100"]),
            Duration::from_millis(100)
        );
        let too_long = parse(&["--inbound-rest-ms", "101"])
            .unwrap_err()
            .to_string();
        assert!(too_long.contains("--inbound-rest-ms"), "{too_long}");
    }

    #[test]
    fn wake_ticks_default_to_10_ms_and_at_most_a_frame() {
        let tick = |args: &[&str]| parse(args).unwrap().serve.wake_tick();
        assert_eq!(tick(&[]), Duration::from_millis(10));
        assert_eq!(tick(&["--wake-tick-ms", "0"]), Duration::ZERO);
        let too_long = parse(&["--wake-tick-ms", "21"]).unwrap_err().to_string();
        assert!(too_long.contains("--wake-tick-ms"), "{too_long}");
    }

    #[test]
    fn listening_rests_default_to_160_ms_and_at_most_300() {
        let rest = |args: &[&str]| parse(args).unwrap().serve.listening_rest();
        assert_eq!(rest(&[]), Duration::from_millis(160));
        assert_eq!(rest(&["--listening-rest-ms", "0"]), Duration::ZERO);
        let too_long = parse(&["--listening-rest-ms", "301"])
            .unwrap_err()
            .to_string();
        assert!(too_long.contains("--listening-rest-ms"), "{too_long}");
    }

    #[test]
    fn event_batching_is_at_most_one_frame() {
        let parse = |us: &str| Cli::try_parse_from(["callfleet-worker", "--event-batch-us", us]);
        assert_eq!(
            parse("1000").unwrap().serve.event_batch(),
            Duration::from_millis(1)
        );
        assert!(parse("20000").is_ok());
        let too_long = parse("20001").unwrap_err().to_string();
        assert!(too_long.contains("--event-batch-us"), "{too_long}");
        assert!(parse("-1").is_err());
    }

    #[test]
    fn settings_not_acted_on_yet_are_named() {
        let cli = Cli::try_parse_from([
            "callfleet-worker",
            "--redis-url",
            "redis://redis:6379",
            "--call-log-url",
            "postgres://logs",
        ])
        .unwrap();
        let unused = cli.serve.unused_settings();
        assert_eq!(unused.len(), 2);
        assert!(unused[0].starts_with("CALLFLEET_REDIS_URL"));
        assert!(unused[1].starts_with("CALLFLEET_CALL_LOG_URL"));
    }

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["callfleet-worker"]).unwrap();
        assert!(cli.command.is_none());
        let s = cli.serve;
        assert_eq!(s.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.max_calls, 10_000);
        assert!(s.unused_settings().is_empty());
        assert_eq!(s.max_call_seconds, 300);
        assert_eq!(s.idle_timeout_seconds, 30);
        assert_eq!(s.rate_limit_per_minute, 100);
        assert_eq!(s.drain_seconds, 330);
        assert_eq!(s.pipeline_poll(), Duration::from_secs(2));
        assert_eq!(s.event_batch(), Duration::ZERO);
        assert!(!s.recordings_enabled);
        assert!(s.recordings().unwrap().is_none());
        assert_eq!(
            s.recordings_spool_dir,
            PathBuf::from("/var/lib/callfleet/recordings")
        );
    }

    #[test]
    fn recordings_as_the_operator_renders_them() {
        let cli = Cli::try_parse_from([
            "callfleet-worker",
            "--recordings-enabled",
            "true",
            "--recordings-endpoint",
            "http://127.0.0.1:9000",
            "--recordings-bucket",
            "calls",
            "--recordings-prefix",
            "acme/",
            "--recordings-format",
            "wavMulaw",
        ])
        .unwrap();
        let r = cli.serve.recordings().unwrap().unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(r.bucket, "calls");
        assert_eq!(r.prefix, "acme/");
        assert_eq!(r.coding, Coding::Mulaw);
        assert_eq!(r.region, None);

        let cli =
            Cli::try_parse_from(["callfleet-worker", "--recordings-enabled", "true"]).unwrap();
        assert!(cli.serve.recordings().is_err(), "no bucket");
    }

    #[test]
    fn token_subcommand() {
        let cli = Cli::try_parse_from([
            "callfleet-worker",
            "token",
            "--call-id",
            "CA1",
            "--ttl-seconds",
            "60",
        ])
        .unwrap();
        let Some(Command::Token(t)) = cli.command else {
            panic!("not token")
        };
        assert_eq!(t.call_id, "CA1");
        assert_eq!(t.ttl_seconds, 60);
    }
}
