//! Test support: a real worker in-process on 127.0.0.1:0 and a WebSocket client for it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use callfleet_worker::admission::{TokenSecret, mint_token};
use callfleet_worker::config::ServeArgs;
use callfleet_worker::server::{RunningWorker, start};

pub mod calls;
pub mod frames;
pub mod providers;
pub mod recording;

pub const SECRET: &str = "test-secret-0123456789abcdef0123";

/// Hang guard for every wait: generous, never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A pipeline config file body for `base_url`.
pub fn pipeline_json(base_url: &str, generation: i64, extra_spec: &str) -> String {
    pipeline_json_with(base_url, generation, 5, 0, extra_spec)
}

/// As [`pipeline_json`], with the provider's timeout and retries.
pub fn pipeline_json_with(
    base_url: &str,
    generation: i64,
    timeout_seconds: u32,
    max_retries: u32,
    extra_spec: &str,
) -> String {
    format!(
        r#"{{"name":"test","generation":{generation},"spec":{{"provider":{{"baseUrl":"{base_url}","apiKeySecretRef":{{"name":"k"}},"timeoutSeconds":{timeout_seconds},"maxRetries":{max_retries}}}{extra_spec}}}}}"#
    )
}

/// Panics in this test process outside the test code itself (the worker runs in-process, so
/// they are the worker's), counted by a hook installed on first use; compare before and after.
/// A failing assertion in one test does not count against the others running beside it.
pub fn panics() -> &'static AtomicUsize {
    static PANICS: OnceLock<&'static AtomicUsize> = OnceLock::new();
    PANICS.get_or_init(|| {
        let counter: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tests = info
                .location()
                .is_some_and(|at| at.file().starts_with("worker/tests/"));
            if !in_tests {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            default_hook(info);
        }));
        counter
    })
}

/// A worker plus the temp dir holding its pipeline file.
pub struct TestWorker {
    pub worker: Option<RunningWorker>,
    pub dir: tempfile::TempDir,
}

impl TestWorker {
    pub fn pipeline_path(&self) -> PathBuf {
        self.dir.path().join("pipeline.json")
    }

    pub fn worker(&self) -> &RunningWorker {
        self.worker.as_ref().expect("worker running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.worker().addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.worker().addr)
    }

    pub async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
    }
}

/// Starts a worker with `pipeline` as its config; `tune` adjusts the settings.
pub async fn start_worker(pipeline: &str, tune: impl FnOnce(&mut ServeArgs)) -> TestWorker {
    log_when_asked();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pipeline.json");
    std::fs::write(&path, pipeline).expect("write pipeline");
    let mut args = ServeArgs::local(path, SECRET).expect("settings");
    args.pipeline_poll_ms = 50;
    // These in-process workers share one test thread with their clients and the stand-in, in
    // debug builds, on a busy CI machine: load shedding is tested on its own (admission.rs).
    args.overload_lag_ms = 0;
    tune(&mut args);
    let worker = start(&args).await.expect("worker starts");
    TestWorker {
        worker: Some(worker),
        dir,
    }
}

/// Prints the worker's logs when `RUST_LOG` is set (e.g. `RUST_LOG=callfleet_worker=debug`), to
/// chase a failure a seed replays; silent otherwise, as the tests' output is their own.
fn log_when_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        // Only the first test in a binary installs it; the others find it set.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub fn write_pipeline(path: &Path, body: &str) {
    // Write then rename, as the kubelet's symlink swap is atomic too.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

pub fn token(call_id: &str) -> String {
    let secret = TokenSecret::from_bytes(SECRET.as_bytes().to_vec()).expect("secret");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    mint_token(&secret, call_id, now + 600)
}

pub async fn connect(url: &str) -> Socket {
    let (socket, _) = tokio::time::timeout(PATIENCE, connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    socket
}

pub async fn send_text(socket: &mut Socket, text: impl Into<String>) {
    socket
        .send(Message::Text(text.into().into()))
        .await
        .expect("send");
}

pub async fn send_binary(socket: &mut Socket, bytes: Vec<u8>) {
    socket
        .send(Message::Binary(bytes.into()))
        .await
        .expect("send");
}

/// What the worker sent next (pings skipped).
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Binary(Vec<u8>),
    Closed(Option<u16>),
}

pub async fn next(socket: &mut Socket) -> Received {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("worker answered in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Received::Json(serde_json::from_str(text.as_str()).expect("json"));
            }
            Some(Ok(Message::Binary(bytes))) => return Received::Binary(bytes.to_vec()),
            Some(Ok(Message::Close(frame))) => {
                return Received::Closed(frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Received::Closed(None),
        }
    }
}

/// Next JSON message, skipping binary frames.
pub async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        match next(socket).await {
            Received::Json(v) => return Some(v),
            Received::Binary(_) => continue,
            Received::Closed(_) => return None,
        }
    }
}

/// Waits for a JSON message whose `key` equals `value`, skipping others.
pub async fn wait_for(socket: &mut Socket, key: &str, value: &str) -> Value {
    loop {
        let message = next_json(socket)
            .await
            .unwrap_or_else(|| panic!("closed before {key}={value}"));
        if message[key] == value {
            return message;
        }
    }
}

/// Reads until the socket closes; returns the close code.
pub async fn wait_closed(socket: &mut Socket) -> Option<u16> {
    loop {
        if let Received::Closed(code) = next(socket).await {
            return code;
        }
    }
}

/// One HTTP client for the tests' plain requests. Building one loads the TLS roots: tens of
/// milliseconds of CPU on the calling thread, which in these tests is often the worker's own
/// event loop, so a client per request made the overload tests' worker lag behind its own
/// readiness polls and never recover. No pooled connections: nothing ties it to one test's
/// runtime.
fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("http client")
    })
}

pub async fn get_text(url: &str, accept: Option<&str>) -> (u16, String) {
    let mut request = http_client().get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("http");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// The value of the sample `name` (exact name, no labels) in Prometheus text, if present.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Polls `check` until true (hang-guarded).
pub async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A worker binary run as a child process; killed on drop, so a failing test leaves no
/// process behind.
pub struct ChildWorker(pub std::process::Child);

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_call(call_id: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!(r#"{{"type":"start_call","callId":"{call_id}","token":"{t}"}}"#),
        None => format!(r#"{{"type":"start_call","callId":"{call_id}"}}"#),
    }
}
