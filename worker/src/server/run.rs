//! Starting and stopping a worker: used by `main` and, in-process, by the tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::admission::{
    CapacityGate, ConnectionRateLimiter, GcraLimiter, LoadShedder, OverloadPolicy, TokenSecret,
    Unlimited,
};
use crate::config::{PipelineSource, ServeArgs};
use crate::context::{CallLimits, WorkerContext};
use crate::media_thread;
use crate::metrics::Metrics;
use crate::providers::openai::ProviderHttp;
use crate::recording::Recordings;
use crate::server::quiet_stream::{Peer, QuietListener};
use crate::session::InMemorySessionStore;
use crate::session::wake_grid::WakeGrid;
use crate::turn_runtime::TurnRuntime;

/// How long a dropped call's history is kept for a reconnect.
const RESUME_WINDOW: Duration = Duration::from_secs(600);
/// How long a connection may take to announce its call.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the shared state from settings (loads the token secret and the first pipeline, opens
/// the recordings spool), with a provider connection pool for each of `media_threads` threads,
/// or, when turns run on a runtime of their own (with event batching, or as configured), that
/// runtime and its one pool. Runs inside the Tokio runtime.
pub fn build_context(args: &ServeArgs, media_threads: usize) -> anyhow::Result<Arc<WorkerContext>> {
    for warning in args.unused_settings() {
        tracing::warn!("{warning}");
    }
    let secret = TokenSecret::load(&args.token_secret_file, args.token_secret.as_deref())?;
    let metrics = Arc::new(Metrics::new());
    let limit = (args.provider_max_concurrency > 0).then_some(args.provider_max_concurrency);
    // Turns get a runtime of their own with event batching (so the pause does not hold provider
    // answers, see `turn_runtime`) or when configured; its pool is then the only one in use.
    let turns = match args.turn_runtime_threads() {
        0 => None,
        threads => Some(TurnRuntime::start(threads)?),
    };
    let pools = if turns.is_some() { 1 } else { media_threads };
    let http = ProviderHttp::per_thread(limit, pools)?
        .observing(metrics.provider_round_trips.clone())
        .counting_live_uploads(metrics.stt_live_uploads.clone())
        .counting_upload_encodings(metrics.stt_upload_encodings.clone());
    let pipelines = Arc::new(PipelineSource::new(
        args.pipeline_file.clone(),
        args.provider_api_key_file.clone(),
        args.openai_api_key.clone(),
        http,
        metrics.clone(),
    ));
    pipelines.reload();
    let load = LoadShedder::new(
        OverloadPolicy::from_lag_ms(args.overload_lag_ms),
        media_threads,
    );
    // Every call's turns share the turn runtime: it is probed like a media runtime (the media
    // runtimes' probes are started where each serves), and sheds for all of them.
    if let Some(turns) = &turns {
        turns.spawn(load.clone().probe_turns(metrics.clone()));
    }
    let recordings = match args.recordings()? {
        Some(settings) => Some(Recordings::start(&settings, metrics.clone())?),
        None => None,
    };
    Ok(Arc::new(
        WorkerContext::new(
            CallLimits {
                max_call: args.max_call_duration(),
                idle: args.idle_timeout(),
                start: START_TIMEOUT.min(args.idle_timeout()),
                inbound_rest: args.inbound_rest(),
                listening_rest: args.listening_rest(),
                wake_grid: WakeGrid::new(args.wake_tick()),
            },
            pipelines,
            secret,
            CapacityGate::new(args.max_calls),
            rate_limiter(args.rate_limit_per_minute),
            metrics,
            Arc::new(InMemorySessionStore::new(RESUME_WINDOW)),
        )
        .with_recordings(recordings)
        .with_load_shedding(load)
        .with_turn_runtime(turns),
    ))
}

fn rate_limiter(per_minute: u32) -> Arc<dyn ConnectionRateLimiter> {
    if per_minute == 0 {
        Arc::new(Unlimited)
    } else {
        Arc::new(GcraLimiter::new(per_minute))
    }
}

/// A worker serving on a bound address.
pub struct RunningWorker {
    pub addr: SocketAddr,
    pub ctx: Arc<WorkerContext>,
    server: JoinHandle<std::io::Result<()>>,
    watcher: JoinHandle<()>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// Media sockets: frames go out the moment they are written (no Nagle delay waiting for the
/// peer's ACK), and the kernel buffers a bounded amount per call.
fn tune_connection(tcp: &TcpStream, send_buffer: usize) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY");
    }
    if send_buffer > 0
        && let Err(err) = socket2::SockRef::from(tcp).set_send_buffer_size(send_buffer)
    {
        tracing::debug!(error = %err, "could not set SO_SNDBUF");
    }
}

/// Binds and serves `args` on the current runtime. With
/// [`crate::config::MediaRuntime::PerThread`] layouts (`--media-threads N`) the current runtime
/// serves the first listener and each further one gets a thread of its own with a
/// single-threaded runtime.
pub async fn start(args: &ServeArgs) -> anyhow::Result<RunningWorker> {
    let threads = args.media_runtime().listeners();
    let ctx = build_context(args, threads)?;
    let mut listeners = media_thread::listeners(args.listen, threads)?.into_iter();
    let first = listeners
        .next()
        .ok_or_else(|| anyhow::anyhow!("no listener"))?;
    let addr = first.local_addr()?;
    let watcher = tokio::spawn(ctx.pipelines.clone().watch(args.pipeline_poll()));
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let serving = Serving {
        ctx: ctx.clone(),
        send_buffer: args.socket_send_buffer,
        event_batch: args.event_batch(),
        stop,
    };
    for (n, listener) in listeners.enumerate() {
        spawn_media_thread(n + 1, listener, serving.clone())?;
    }
    let server = tokio::spawn(serving.serve(TcpListener::from_std(first)?));
    tracing::info!(%addr, media_threads = threads, "worker listening");
    Ok(RunningWorker {
        addr,
        ctx,
        server,
        watcher,
        shutdown,
    })
}

/// What every media thread needs to serve its listener.
#[derive(Clone)]
struct Serving {
    ctx: Arc<WorkerContext>,
    send_buffer: usize,
    /// Each further media thread's event batching (the first runs on the caller's runtime).
    event_batch: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Serving {
    /// Serves `listener` on the current runtime until the worker stops.
    async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let Self {
            ctx,
            send_buffer,
            mut stop,
            ..
        } = self;
        let listener = QuietListener::new(listener, move |tcp: &TcpStream| {
            tune_connection(tcp, send_buffer)
        });
        // Each media runtime measures its own lag: it is that runtime's calls that wait.
        let probe = tokio::spawn(
            ctx.load
                .clone()
                .probe(media_thread::index(), ctx.metrics.clone()),
        );
        let app = crate::server::router(ctx).into_make_service_with_connect_info::<Peer>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await;
        probe.abort();
        served
    }
}

/// Starts media thread `index`: a single-threaded runtime serving `listener`. A thread that
/// cannot start its runtime logs why; its listener closes and the kernel stops sending it calls.
fn spawn_media_thread(
    index: usize,
    listener: std::net::TcpListener,
    serving: Serving,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("callfleet-media-{index}"))
        .spawn(move || {
            media_thread::enter(index);
            let runtime = match media_thread::runtime(serving.event_batch) {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!(index, error = %err, "media thread: no runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let served = match TcpListener::from_std(listener) {
                    Ok(listener) => serving.serve(listener).await,
                    Err(err) => Err(err),
                };
                if let Err(err) = served {
                    tracing::error!(index, error = %err, "media thread stopped serving");
                }
            });
        })
        .map(|_| ())
}

impl RunningWorker {
    /// Graceful drain: stop admitting (`/ready` turns 503, new connections are refused), wait
    /// up to `timeout` for live calls to end and their recordings to reach the bucket, then
    /// stop serving. Recordings still waiting then stay in the spool for the next start.
    pub async fn drain(self, timeout: Duration) {
        self.ctx.start_draining();
        let deadline = Instant::now() + timeout;
        while self.ctx.active_calls() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.ctx.active_calls();
        if left > 0 {
            tracing::warn!(calls = left, "drain timeout: cutting remaining calls");
        }
        if let Some(recordings) = &self.ctx.recordings {
            let left = deadline.saturating_duration_since(Instant::now());
            if !recordings.settle(left).await {
                tracing::warn!(
                    pending = recordings.pending_uploads(),
                    "drain timeout: recordings left in the spool"
                );
            }
        }
        self.stop().await;
    }

    /// Stops serving now.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.watcher.abort();
        if let Some(recordings) = &self.ctx.recordings {
            recordings.stop();
        }
        // Live WebSocket calls keep the server future alive; don't wait for them past a beat.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.server).await;
    }
}
