//! A load run: ramp the calls up in batches, wait for them to settle, measure a steady window
//! (calls' own counters plus `/proc` samples of the worker), stop, and merge the outcomes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use callfleet_worker::admission::{TokenSecret, mint_token};

use super::call::{CallPlan, RunShared, run_call};
use super::config::LoadConfig;
use super::pattern::frames_in;
use super::procstat::{MachineUsage, ProcSample, ProcUsage, machine, sample};
use super::report::Report;
use super::stats::{summarize, timed_overhead, turns_csv};
use super::timing::phase;
use super::wire::FrameBook;

/// How long calls' tokens stay valid beyond the run.
const TOKEN_SLACK: Duration = Duration::from_secs(600);

/// Runs the load described by `config` and reports on it.
pub async fn run(config: LoadConfig) -> Result<Report> {
    if config.calls == 0 {
        bail!("--calls must be at least 1");
    }
    let secret = load_secret(&config)?;
    let pattern = config.pattern();
    let shared = Arc::new(RunShared {
        wire: config.protocol,
        url: config.call_url(),
        frames: FrameBook::new(config.protocol, &pattern, config.voice()),
        pattern,
        window_frames: frames_in(Duration::from_millis(config.turn_window_ms)),
        late: Duration::from_millis(config.late_ms),
        connect_timeout: Duration::from_secs(config.connect_timeout.max(1)),
        steady: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        settled: AtomicUsize::new(0),
        began: Instant::now(),
    });
    // The run's origin on the wall clock too, so the turns' CSV lines up with other samplers.
    let began_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let watched = Watched::new(&config);
    let before_ramp = watched.sample()?;

    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let expires = SystemTime::now().duration_since(UNIX_EPOCH)?
        + config.steady_window()
        + config.settle_time()
        + TOKEN_SLACK;
    let runtimes = CallRuntimes::start(config.runtimes)?;
    let ramp_started = Instant::now();
    let mut calls = JoinSet::new();
    for index in 0..config.calls {
        if index > 0 && index % config.ramp_batch.max(1) == 0 {
            tokio::time::sleep(Duration::from_millis(config.ramp_interval_ms)).await;
        }
        let call_id = format!("{}-{run_id}-{index}", config.call_id_prefix);
        let plan = CallPlan {
            token: mint_token(&secret, &call_id, expires.as_secs()),
            call_id,
            lead_in: shared.pattern.lead_in(index, config.calls),
            phase: phase(index, config.ramp_batch),
        };
        match runtimes.pick(index) {
            Some(runtime) => calls.spawn_on(run_call(shared.clone(), plan), runtime),
            None => calls.spawn(run_call(shared.clone(), plan)),
        };
    }
    // Every call connected or failed (each attempt is bounded by the connect timeout).
    while shared.settled.load(Ordering::Relaxed) < config.calls {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp = ramp_started.elapsed();
    tokio::time::sleep(config.settle_time()).await;

    shared.steady.store(true, Ordering::Relaxed);
    let window_started = Instant::now();
    let at_start = watched.sample()?;
    let machine_start = machine()?;
    tokio::time::sleep(config.steady_window()).await;
    let at_end = watched.sample()?;
    let machine_usage = MachineUsage::between(machine_start, machine()?);
    let window = window_started.elapsed();
    shared.stop.store(true, Ordering::Relaxed);

    let mut outcomes = Vec::with_capacity(config.calls);
    while let Some(outcome) = calls.join_next().await {
        outcomes.push(outcome.context("a call task panicked")?);
    }
    runtimes.stop();
    let provider = Duration::from_millis(config.provider_ms);
    if let Some(path) = &config.turns_csv {
        let csv = turns_csv(&timed_overhead(&outcomes, provider), began_unix);
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    let calls = summarize(&outcomes, provider);
    Ok(Report::new(
        &config,
        calls,
        ramp,
        window,
        watched.usage(before_ramp, at_start, at_end, window),
        machine_usage,
    ))
}

/// Single-threaded runtimes, each driven by its own thread until [`CallRuntimes::stop`].
struct CallRuntimes(Vec<CallRuntime>);

struct CallRuntime {
    handle: Handle,
    /// Dropping it ends the thread's `block_on`.
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl CallRuntimes {
    fn start(count: usize) -> Result<Self> {
        let mut runtimes = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a call runtime")?;
            let (stop, stopped) = oneshot::channel::<()>();
            let handle = runtime.handle().clone();
            let thread = std::thread::Builder::new()
                .name(format!("calls-{index}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })
                .context("starting a call runtime's thread")?;
            runtimes.push(CallRuntime {
                handle,
                stop,
                thread,
            });
        }
        Ok(Self(runtimes))
    }

    /// The runtime for call `index`, round robin; `None` to use the caller's runtime.
    fn pick(&self, index: usize) -> Option<&Handle> {
        let slot = index.checked_rem(self.0.len())?;
        self.0.get(slot).map(|runtime| &runtime.handle)
    }

    /// Ends the threads (after every call finished).
    fn stop(self) {
        for runtime in self.0 {
            drop(runtime.stop);
            let _ = runtime.thread.join();
        }
    }
}

fn load_secret(config: &LoadConfig) -> Result<TokenSecret> {
    let secret = match (&config.token_secret_file, &config.token_secret) {
        (Some(file), _) => TokenSecret::from_bytes(
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        ),
        (None, Some(secret)) => TokenSecret::from_bytes(secret.as_bytes().to_vec()),
        (None, None) => bail!(
            "no token secret: pass --token-secret, --token-secret-file or CALLFLEET_TOKEN_SECRET"
        ),
    };
    Ok(secret?)
}

/// The processes sampled over the run: the worker, the stand-in, and the generator itself.
struct Watched {
    pids: [Option<u32>; 3],
}

/// Samples of the watched processes, in `Watched::pids` order.
type Samples = [Option<ProcSample>; 3];

impl Watched {
    fn new(config: &LoadConfig) -> Self {
        Self {
            pids: [
                config.worker_pid,
                config.standin_pid,
                Some(std::process::id()),
            ],
        }
    }

    fn sample(&self) -> Result<Samples> {
        let mut samples = [None; 3];
        for (slot, pid) in samples.iter_mut().zip(self.pids) {
            if let Some(pid) = pid {
                *slot = Some(sample(pid)?);
            }
        }
        Ok(samples)
    }

    fn usage(
        &self,
        before: Samples,
        start: Samples,
        end: Samples,
        window: Duration,
    ) -> [Option<ProcUsage>; 3] {
        let mut usage = [None; 3];
        for (i, slot) in usage.iter_mut().enumerate() {
            if let (Some(pid), Some(b), Some(s), Some(e)) =
                (self.pids[i], before[i], start[i], end[i])
            {
                *slot = Some(ProcUsage::between(pid, b, s, e, window));
            }
        }
        usage
    }
}
