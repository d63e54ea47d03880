//! Starting and stopping a worker: used by `main` and, in-process, by the tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::{Listener, ListenerExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::admission::{CapacityGate, ConnectionRateLimiter, GcraLimiter, TokenSecret, Unlimited};
use crate::config::{PipelineSource, ServeArgs};
use crate::context::{CallLimits, WorkerContext};
use crate::metrics::Metrics;
use crate::providers::openai::ProviderHttp;
use crate::recording::Recordings;
use crate::session::InMemorySessionStore;

/// How long a dropped call's history is kept for a reconnect.
const RESUME_WINDOW: Duration = Duration::from_secs(600);
/// How long a connection may take to announce its call.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the shared state from settings (loads the token secret and the first pipeline, opens
/// the recordings spool). Runs inside the Tokio runtime.
pub fn build_context(args: &ServeArgs) -> anyhow::Result<Arc<WorkerContext>> {
    for warning in args.unused_settings() {
        tracing::warn!("{warning}");
    }
    let secret = TokenSecret::load(&args.token_secret_file, args.token_secret.as_deref())?;
    let metrics = Arc::new(Metrics::new());
    let limit = (args.provider_max_concurrency > 0).then_some(args.provider_max_concurrency);
    let http = ProviderHttp::new(limit)?;
    let pipelines = Arc::new(PipelineSource::new(
        args.pipeline_file.clone(),
        args.provider_api_key_file.clone(),
        args.openai_api_key.clone(),
        http,
        metrics.clone(),
    ));
    pipelines.reload();
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
            },
            pipelines,
            secret,
            CapacityGate::new(args.max_calls),
            rate_limiter(args.rate_limit_per_minute),
            metrics,
            Arc::new(InMemorySessionStore::new(RESUME_WINDOW)),
        )
        .with_recordings(recordings),
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
fn tune_connection(tcp: &mut TcpStream, send_buffer: usize) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY");
    }
    if send_buffer > 0
        && let Err(err) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer)
    {
        tracing::debug!(error = %err, "could not set SO_SNDBUF");
    }
}

/// Binds and serves `args` in the current runtime.
pub async fn start(args: &ServeArgs) -> anyhow::Result<RunningWorker> {
    let ctx = build_context(args)?;
    let send_buffer = args.socket_send_buffer;
    let listener = TcpListener::bind(args.listen)
        .await?
        .tap_io(move |tcp| tune_connection(tcp, send_buffer));
    let addr = listener.local_addr()?;
    let watcher = tokio::spawn(ctx.pipelines.clone().watch(args.pipeline_poll()));
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let app =
        crate::server::router(ctx.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(%addr, "worker listening");
    Ok(RunningWorker {
        addr,
        ctx,
        server,
        watcher,
        shutdown,
    })
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
