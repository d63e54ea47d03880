//! A local process speaking the OpenAI wire format, for tests and the local stack: the worker's
//! provider code runs unchanged against it (base URL `http://<addr>/v1`, or `https://` when
//! started with a certificate, see [`OpenAiStandin::start_tls`]).
//!
//! Answers are deterministic so tests can check what was heard and said (`rules`), latencies are
//! configurable (`config`), faults can be injected at start or at run time (`faults`, the
//! `/admin` routes), and every endpoint counts its requests (`stats`).
//!
//! Routes: `POST /v1/audio/transcriptions`, `POST /v1/chat/completions`,
//! `POST /v1/audio/speech`, `GET /v1/realtime` (WebSocket), `GET /admin/stats`,
//! `GET|POST|DELETE /admin/faults`, `GET /health`. `/v1` requires `Authorization: Bearer <any>`.

pub mod admin;
pub mod arrival;
pub mod audio;
pub mod chat;
pub mod clock;
pub mod config;
pub mod faults;
pub mod realtime;
pub mod respond;
pub mod rules;
pub mod speech;
pub mod stats;
pub mod transcriptions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::StandinConfig;
pub use faults::{Endpoint, Fault, FaultRule};
pub use stats::{EndpointStats, StatsSnapshot};

use faults::FaultBook;
use respond::openai_error;
use stats::Stats;

/// State shared by all handlers.
pub struct Shared {
    pub config: StandinConfig,
    pub faults: FaultBook,
    pub stats: Arc<Stats>,
    /// The speech tone, synthesized once (see `speech::speech_pcm`).
    pub speech_tone: std::sync::OnceLock<bytes::Bytes>,
}

/// The server's routes over `shared` (exposed for embedding in another server).
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(
            "/audio/transcriptions",
            post(transcriptions::transcriptions),
        )
        .route("/chat/completions", post(chat::chat_completions))
        .route("/audio/speech", post(speech::speech))
        .route("/realtime", get(realtime::realtime))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_bearer,
        ))
        .layer(middleware::map_response(with_request_id));
    Router::new()
        .nest("/v1", api)
        .route("/admin/stats", get(admin::stats))
        .route(
            "/admin/faults",
            get(admin::list_faults)
                .post(admin::add_fault)
                .delete(admin::clear_faults),
        )
        .route("/health", get(|| async { "ok" }))
        .with_state(shared)
}

/// Every API response carries an `x-request-id`, as OpenAI's do (clients log it on errors).
async fn with_request_id(mut response: Response) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!("req_standin_{:x}", NEXT.fetch_add(1, Ordering::Relaxed));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Any non-empty bearer key is accepted; a missing one gets OpenAI's 401.
async fn require_bearer(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if key.is_empty() {
        shared.stats.unauthorized();
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        );
    }
    next.run(request).await
}

/// Starts the stand-in in the current runtime.
pub struct OpenAiStandin;

/// A listener on `addr` built as the worker builds its own, whose accept queue is as long as
/// the kernel allows (`net.core.somaxconn`), not Tokio's 1,024: a worker opening its provider
/// connections for a burst of turns must not see SYNs dropped (a 1 s retransmission each) and
/// count them as the provider's latency.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut listeners = callfleet_worker::media_thread::listeners(addr, 1)?;
    TcpListener::from_std(listeners.remove(0))
}

impl OpenAiStandin {
    /// Listens on an ephemeral 127.0.0.1 port.
    pub async fn start(config: StandinConfig) -> std::io::Result<StandinHandle> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Listens on `addr`.
    pub async fn start_on(
        config: StandinConfig,
        addr: SocketAddr,
    ) -> std::io::Result<StandinHandle> {
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        let listener = arrival::StampingListener::new(listener);
        Ok(Self::serve(config, listener, addr, "http"))
    }

    /// Listens on `addr` over TLS with `tls` (see [`crate::tls::TestPki::server_config`]);
    /// the base URL is `https://…` and the realtime WebSocket `wss://…`.
    pub async fn start_tls(
        config: StandinConfig,
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<StandinHandle> {
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        let listener = crate::tls::TlsListener::new(listener, tls);
        Ok(Self::serve(config, listener, addr, "https"))
    }

    fn serve<L>(
        config: StandinConfig,
        listener: L,
        addr: SocketAddr,
        scheme: &'static str,
    ) -> StandinHandle
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
        for<'a> arrival::RequestArrival: Connected<IncomingStream<'a, L>>,
    {
        let shared = Arc::new(Shared {
            faults: FaultBook::new(config.faults.clone()),
            config,
            stats: Arc::default(),
            speech_tone: Default::default(),
        });
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<arrival::RequestArrival>();
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "openai stand-in stopped");
            }
        });
        tracing::info!(%addr, scheme, "openai stand-in listening");
        StandinHandle {
            addr,
            scheme,
            shared,
            task,
        }
    }
}

/// A running stand-in. Dropping it stops accepting connections.
pub struct StandinHandle {
    addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl StandinHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The provider base URL to configure clients with (`http://127.0.0.1:<port>/v1`, or
    /// `https://…` over TLS).
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1", self.scheme, self.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Adds a fault rule (same as `POST /admin/faults`).
    pub fn inject(&self, rule: FaultRule) {
        self.shared.faults.add(rule);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Waits until `check` holds for the stats, polling; `false` if it did not within
    /// `patience` (a liveness bound, not a timing assertion).
    pub async fn wait_for_stats(
        &self,
        patience: std::time::Duration,
        check: impl Fn(&StatsSnapshot) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if check(&self.stats()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for StandinHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
