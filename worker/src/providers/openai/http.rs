//! The HTTP shell around provider requests: one shared connection pool, an optional
//! concurrency limit, timeouts on connect/first byte and on every later gap in a body, and the
//! retry loop (before any output only).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Sleep, timeout};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::pki_types::CertificateDer;

use super::retry::{RetryPolicy, parse_retry_after};
use super::sse::{SseDecoder, SseEvent};
use super::trust;
use crate::metrics::{LiveUploadOutcomes, ProviderRoundTrips, UploadEncodings};
use crate::providers::{ProviderConfig, ProviderError, ProviderResult};

/// One more in `family` (when the worker keeps metrics) under `label` = `value`.
fn count(
    family: &Option<Family<[(&'static str, &'static str); 1], Counter>>,
    label: &'static str,
    value: &'static str,
) {
    if let Some(family) = family {
        family.get_or_create(&[(label, value)]).inc();
    }
}

/// One per worker process: the HTTP connection pools the calls share (keep-alive connections
/// are reused across calls and pipeline versions) and the optional limit on requests in flight.
///
/// One pool per media thread ([`crate::media_thread`]): a connection is driven by the runtime
/// that opened it, so a call reusing another thread's connection would get every body chunk
/// through a cross-thread wake-up.
#[derive(Clone, Debug)]
pub struct ProviderHttp {
    clients: Arc<[reqwest::Client]>,
    limit: Option<Arc<Semaphore>>,
    /// Set when a pipeline's `caBundle` adds roots: the realtime WebSocket's TLS config.
    /// `None`: the public roots, as the HTTP pools.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Where each request's time to response headers is recorded, when the worker keeps
    /// metrics.
    round_trips: Option<ProviderRoundTrips>,
    /// Where uploads made while the caller spoke are counted by outcome.
    live_uploads: Option<LiveUploadOutcomes>,
    /// Where utterances sent whole are counted by WAV encoding.
    upload_encodings: Option<UploadEncodings>,
}

impl ProviderHttp {
    /// `max_concurrent_requests` bounds the provider requests (and open streams) of this worker;
    /// `None` leaves them unbounded. Requests over the limit wait for a slot.
    pub fn new(max_concurrent_requests: Option<usize>) -> ProviderResult<Self> {
        Self::per_thread(max_concurrent_requests, 1)
    }

    /// As [`ProviderHttp::new`], with a connection pool for each of `threads` media threads.
    pub fn per_thread(
        max_concurrent_requests: Option<usize>,
        threads: usize,
    ) -> ProviderResult<Self> {
        Ok(Self {
            clients: build_clients(threads, &[])?,
            limit: max_concurrent_requests.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            tls: None,
            round_trips: None,
            live_uploads: None,
            upload_encodings: None,
        })
    }

    /// Records every request's time to response headers into `round_trips`, by endpoint.
    pub fn observing(mut self, round_trips: ProviderRoundTrips) -> Self {
        self.round_trips = Some(round_trips);
        self
    }

    /// Counts uploads made while the caller spoke into `outcomes`.
    pub fn counting_live_uploads(mut self, outcomes: LiveUploadOutcomes) -> Self {
        self.live_uploads = Some(outcomes);
        self
    }

    /// One more upload made while the caller spoke ended with `outcome`.
    pub fn count_live_upload(&self, outcome: &'static str) {
        count(&self.live_uploads, "outcome", outcome);
    }

    /// Counts utterances sent whole into `encodings`, by WAV encoding.
    pub fn counting_upload_encodings(mut self, encodings: UploadEncodings) -> Self {
        self.upload_encodings = Some(encodings);
        self
    }

    /// One more utterance sent whole as `encoding`.
    pub fn count_upload_encoding(&self, encoding: &'static str) {
        count(&self.upload_encodings, "encoding", encoding);
    }

    /// New connection pools that also trust `extra` CA certificates (a pipeline's
    /// `caBundle`), under the same worker-wide request limit.
    pub fn trusting(&self, extra: &[CertificateDer<'static>]) -> ProviderResult<Self> {
        let tls =
            trust::client_config(extra).map_err(|e| ProviderError::Transport(e.to_string()))?;
        Ok(Self {
            clients: build_clients(self.clients.len(), extra)?,
            limit: self.limit.clone(),
            tls: Some(tls),
            round_trips: self.round_trips.clone(),
            live_uploads: self.live_uploads.clone(),
            upload_encodings: self.upload_encodings.clone(),
        })
    }

    /// Whether `self` and `other` are the same connection pools (not merely alike).
    pub fn same_pools(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.clients, &other.clients)
    }

    /// The TLS config for the realtime WebSocket when it differs from the default roots.
    pub fn realtime_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// The calling media thread's connection pool.
    fn client(&self) -> &reqwest::Client {
        &self.clients[crate::media_thread::index() % self.clients.len()]
    }

    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        match &self.limit {
            // The semaphore is never closed, so acquiring only fails if that changes.
            Some(limit) => limit.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    /// Sends a request to `endpoint` (a metrics label) built by `build` (called again for each
    /// attempt) with the API key, and returns the successful response with its headers read.
    /// 429, 5xx, timeouts and connection errors are retried per the config; other statuses
    /// become typed errors at once.
    pub async fn send(
        &self,
        config: &ProviderConfig,
        endpoint: &'static str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Sync,
    ) -> ProviderResult<OpenResponse> {
        self.send_after(config, endpoint, None, build).await
    }

    /// As [`ProviderHttp::send`], when a first attempt made another way already failed with
    /// `first`: it counts as one attempt and its error decides whether and when to retry.
    pub async fn send_after(
        &self,
        config: &ProviderConfig,
        endpoint: &'static str,
        first: Option<ProviderError>,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Sync,
    ) -> ProviderResult<OpenResponse> {
        let build = &build;
        with_retries_after(config.max_retries, first, move || async move {
            let permit = self.permit().await;
            let request = build(self.client()).bearer_auth(&config.api_key);
            // After the permit: a wait for the worker's own request limit is not a round trip.
            let sent = Instant::now();
            let response = match timeout(config.timeout, request.send()).await {
                Err(_) => return Err(ProviderError::Timeout("waiting for the response")),
                Ok(Err(e)) => return Err(request_error(&e)),
                Ok(Ok(response)) => response,
            };
            self.observe_round_trip(endpoint, sent);
            accept(response, config, permit).await
        })
        .await
    }

    /// Sends one request whose body is still being written (`build` gets the calling media
    /// thread's pool), without retries: the body cannot be replayed. The timeout for the
    /// response starts when `body_done` fires, not at the request: until then the caller is
    /// still talking. A response that comes before (a refusal) is taken at once.
    pub async fn send_live(
        &self,
        config: &ProviderConfig,
        endpoint: &'static str,
        build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
        body_done: impl Future<Output = ()>,
    ) -> ProviderResult<OpenResponse> {
        let permit = self.permit().await;
        let send = build(self.client()).bearer_auth(&config.api_key).send();
        tokio::pin!(send);
        let early = tokio::select! {
            biased;
            response = &mut send => Some(response),
            () = body_done => None,
        };
        let response = match early {
            Some(response) => response,
            None => {
                let sent = Instant::now();
                let response = timeout(config.timeout, send)
                    .await
                    .map_err(|_| ProviderError::Timeout("waiting for the response"))?;
                self.observe_round_trip(endpoint, sent);
                response
            }
        };
        let response = response.map_err(|e| request_error(&e))?;
        accept(response, config, permit).await
    }

    fn observe_round_trip(&self, endpoint: &'static str, sent: Instant) {
        if let Some(round_trips) = &self.round_trips {
            round_trips
                .get_or_create(&[("endpoint", endpoint)])
                .observe(sent.elapsed().as_secs_f64());
        }
    }
}

/// A response with its headers read: the open body when the status is a success, else the
/// typed error (with the server's retry hint and request id).
async fn accept(
    response: reqwest::Response,
    config: &ProviderConfig,
    permit: Option<OwnedSemaphorePermit>,
) -> ProviderResult<OpenResponse> {
    let status = response.status();
    if status.is_success() {
        return Ok(OpenResponse {
            response,
            idle_timeout: config.timeout,
            _permit: permit,
        });
    }
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
    let retry_after = parse_retry_after(header("retry-after-ms"), header("retry-after"));
    let request_id = header("x-request-id").map(str::to_owned);
    let body = match timeout(config.timeout, response.text()).await {
        Ok(Ok(body)) => body,
        _ => String::new(),
    };
    Err(ProviderError::from_status(
        status.as_u16(),
        retry_after,
        &body,
        request_id.as_deref(),
    ))
}

/// One reqwest client per media thread, trusting the public roots plus `extra`.
fn build_clients(
    threads: usize,
    extra: &[CertificateDer<'static>],
) -> ProviderResult<Arc<[reqwest::Client]>> {
    (0..threads.max(1))
        .map(|_| {
            let mut builder = reqwest::Client::builder()
                .user_agent(concat!("callfleet-worker/", env!("CARGO_PKG_VERSION")))
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90));
            for cert in extra {
                let cert = reqwest::Certificate::from_der(cert)
                    .map_err(|e| ProviderError::Transport(describe(&e)))?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build()
                .map_err(|e| ProviderError::Transport(describe(&e)))
        })
        .collect()
}

/// Runs `attempt` until it succeeds, fails permanently or the retries are used up, sleeping
/// per [`RetryPolicy`] in between.
pub async fn with_retries<T, F, Fut>(max_retries: u32, attempt: F) -> ProviderResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ProviderResult<T>>,
{
    with_retries_after(max_retries, None, attempt).await
}

/// As [`with_retries`], when a first attempt made elsewhere already failed with `first`
/// (`None`: nothing tried yet): it counts as an attempt, and its error decides the first wait.
pub async fn with_retries_after<T, F, Fut>(
    max_retries: u32,
    first: Option<ProviderError>,
    mut attempt: F,
) -> ProviderResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ProviderResult<T>>,
{
    let policy = RetryPolicy::new(max_retries);
    let mut retries_done = 0;
    let mut failed = first;
    loop {
        let error = match failed.take() {
            Some(error) => error,
            None => match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            },
        };
        match policy.delay_before_retry(&error, retries_done, rand::random::<f64>()) {
            Some(delay) => {
                tracing::warn!(%error, retry = retries_done + 1, ?delay, "provider request failed, retrying");
                tokio::time::sleep(delay).await;
                retries_done += 1;
            }
            None => return Err(error),
        }
    }
}

/// Ends a wait for the next chunk of a stream that took longer than the timeout, with one timer
/// per stream instead of one per chunk: the timer is armed once and only moved when it fires
/// with a later wait under way. A timer registered and cancelled for every chunk was 2% of a
/// call's CPU in conversation (speech arrives in tens of chunks per sentence).
struct StallTimer {
    timeout: Duration,
    /// When the current wait began.
    since: Instant,
    timer: Pin<Box<Sleep>>,
}

impl StallTimer {
    fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            timeout,
            since: now,
            timer: Box::pin(tokio::time::sleep_until((now + timeout).into())),
        }
    }

    /// A wait for the next chunk begins now.
    fn begin_wait(&mut self) {
        self.since = Instant::now();
    }

    /// Completes once the current wait has lasted the timeout.
    async fn stalled(&mut self) {
        loop {
            self.timer.as_mut().await;
            let deadline = self.since + self.timeout;
            if Instant::now() >= deadline {
                return;
            }
            self.timer.as_mut().reset(deadline.into());
        }
    }
}

/// A successful response whose body has not been read yet. Holds the concurrency slot until
/// the body is finished or dropped.
pub struct OpenResponse {
    response: reqwest::Response,
    idle_timeout: Duration,
    _permit: Option<OwnedSemaphorePermit>,
}

impl OpenResponse {
    /// Whether the body is `text/event-stream`.
    pub fn is_event_stream(&self) -> bool {
        self.response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    }

    /// The body as it arrives. A gap longer than the timeout ends it with `Timeout`; a broken
    /// connection with `Transport`. Dropping the stream closes the connection.
    pub fn into_chunks(self) -> impl Stream<Item = ProviderResult<Bytes>> + Send + 'static {
        let stall = StallTimer::new(self.idle_timeout);
        stream::unfold(Some((self, stall)), |state| async move {
            let (mut open, mut stall) = state?;
            stall.begin_wait();
            let chunk = tokio::select! {
                biased;
                chunk = open.response.chunk() => chunk,
                () = stall.stalled() => {
                    return Some((Err(ProviderError::Timeout("stream stalled")), None));
                }
            };
            match chunk {
                Err(e) => Some((Err(body_error(&e)), None)),
                Ok(None) => None,
                Ok(Some(chunk)) => Some((Ok(chunk), Some((open, stall)))),
            }
        })
    }

    /// The whole body, with the same timeout applied to the wait.
    pub async fn bytes(self) -> ProviderResult<Bytes> {
        match timeout(self.idle_timeout, self.response.bytes()).await {
            Err(_) => Err(ProviderError::Timeout("reading the response body")),
            Ok(Err(e)) => Err(body_error(&e)),
            Ok(Ok(body)) => Ok(body),
        }
    }

    /// The body decoded as server-sent events.
    pub fn into_sse(self) -> impl Stream<Item = ProviderResult<SseEvent>> + Send + 'static {
        let mut decoder = SseDecoder::default();
        self.into_chunks()
            .map(move |chunk| {
                let events: Vec<ProviderResult<SseEvent>> = match chunk {
                    Ok(chunk) => decoder.push(&chunk).into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                stream::iter(events)
            })
            .flatten()
    }
}

/// What to do with one decoded event of a provider stream.
pub enum Step<T> {
    /// Yield this item and continue.
    Yield(T),
    /// Yield this item; the stream is complete.
    Last(T),
    /// Nothing to yield for this event.
    Skip,
    /// The stream is complete.
    Finish,
    /// The stream failed.
    Fail(ProviderError),
}

/// Turns a stream of events into a stream of items via `decode`, ending at the first error.
/// An input that ends before `decode` says `Finish`/`Last` is truncated: it yields a
/// `Protocol` error naming `what`, so a cut-off reply is never mistaken for a complete one.
pub fn decode_stream<E, T>(
    events: impl Stream<Item = ProviderResult<E>> + Send + 'static,
    what: &'static str,
    decode: impl FnMut(E) -> Step<T> + Send + 'static,
) -> BoxStream<'static, ProviderResult<T>>
where
    E: Send + 'static,
    T: Send + 'static,
{
    stream::unfold(Some((Box::pin(events), decode)), move |state| async move {
        let (mut events, mut decode) = state?;
        loop {
            let Some(event) = events.next().await else {
                let truncated = ProviderError::Protocol(format!("{what} ended early"));
                return Some((Err(truncated), None));
            };
            let step = match event {
                Ok(event) => decode(event),
                Err(e) => Step::Fail(e),
            };
            match step {
                Step::Yield(item) => return Some((Ok(item), Some((events, decode)))),
                Step::Last(item) => return Some((Ok(item), None)),
                Step::Skip => continue,
                Step::Finish => return None,
                Step::Fail(e) => return Some((Err(e), None)),
            }
        }
    })
    .boxed()
}

/// Classifies a failure to get a response.
fn request_error(e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout("waiting for the response")
    } else if e.is_builder() {
        ProviderError::Protocol(describe(e))
    } else {
        ProviderError::Transport(describe(e))
    }
}

/// Classifies a failure while reading a body: with no content decoding enabled, anything but a
/// timeout means the connection broke or closed early.
fn body_error(e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout("stream stalled")
    } else {
        ProviderError::Transport(describe(e))
    }
}

/// The error and its causes on one line (reqwest's top-level message alone hides the reason).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
