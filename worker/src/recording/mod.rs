//! Call recordings: each call is recorded as an 8 kHz stereo WAV (caller left, the assistant
//! audio sent to the carrier right), spooled to a local file while the call runs and uploaded
//! to S3-compatible storage when it ends.
//!
//! The call task never waits on a recording: it hands frames to a per-call recorder task over a
//! bounded channel ([`CallRecorder`]) and frames that do not fit are dropped and counted. A
//! recording costs a call two 16 KiB write buffers, flat however long the call; uploads stream
//! the finished file in 5 MiB parts on a few shared workers. Spooled files are deleted only once
//! the bucket has them, and a restarted worker uploads what an earlier run left in the spool.

mod key;
mod recorder;
mod spool;
mod timeline;
mod upload;
mod wav;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, RetryConfig};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

pub use key::{object_key, safe_call_id};
pub use recorder::CallRecorder;
pub use spool::{Finished, Spool, assemble_wav};
pub use upload::{PART_SIZE, UploadError, UploadSettings, upload};
pub use wav::{CHANNELS, Coding, RATE, header, interleave};

/// Recordings assembled into WAVs at once: each is a short burst of disk I/O.
const ASSEMBLERS: usize = 2;

/// Where and how recordings go (`CALLFLEET_RECORDINGS_*`).
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// S3-compatible endpoint URL; AWS S3 when `None`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: String,
    /// Object key prefix, used as is (include the trailing `/`).
    pub prefix: String,
    pub coding: Coding,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Local folder recordings are spooled to until uploaded.
    pub spool_dir: PathBuf,
    pub uploads: UploadSettings,
}

/// Why recordings could not be set up (the worker does not start: it was asked to record).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("recordings spool folder {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("recordings object store: {0}")]
    Store(#[from] object_store::Error),
}

/// The worker's recordings: spool, uploads and the count of recordings still being written.
pub struct Recordings {
    spool: Arc<Spool>,
    prefix: String,
    coding: Coding,
    uploads: upload::Uploads,
    metrics: Arc<Metrics>,
    recording: AtomicUsize,
    assemblers: Semaphore,
    stop: CancellationToken,
}

impl Recordings {
    /// Opens the spool, starts the uploads, and queues what an earlier run left in the spool.
    /// Must run inside the Tokio runtime.
    pub fn start(
        settings: &RecordingSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, SetupError> {
        let store = Arc::new(s3_store(settings)?);
        Self::start_with(settings, store, metrics)
    }

    /// [`Recordings::start`] with any object store.
    pub fn start_with(
        settings: &RecordingSettings,
        store: Arc<dyn ObjectStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, SetupError> {
        let spool = Spool::open(&settings.spool_dir).map_err(|source| SetupError::Spool {
            path: settings.spool_dir.clone(),
            source,
        })?;
        let spool = Arc::new(spool);
        // Listed before any call records, so recovery only touches an earlier run's files.
        let leftovers = spool.leftovers();
        let stop = CancellationToken::new();
        let uploads = upload::Uploads::start(
            store,
            spool.clone(),
            metrics.clone(),
            settings.uploads.clone(),
            stop.clone(),
        );
        let recordings = Arc::new(Self {
            spool,
            prefix: settings.prefix.clone(),
            coding: settings.coding,
            uploads,
            metrics,
            recording: AtomicUsize::new(0),
            assemblers: Semaphore::new(ASSEMBLERS),
            stop,
        });
        if !leftovers.is_empty() {
            // Counted as being recorded until recovered, so a drain waits for them too.
            recordings.recording.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(recordings.clone().recover(leftovers));
        }
        Ok(recordings)
    }

    async fn recover(self: Arc<Self>, leftovers: spool::Leftovers) {
        let spool = self.spool.clone();
        let recovered = tokio::task::spawn_blocking(move || spool.recover(&leftovers)).await;
        match recovered {
            Ok(recovered) => {
                for (stem, err) in recovered.errors {
                    tracing::warn!(%stem, error = %err, "spooled recording could not be recovered");
                    self.metrics.recordings.errors.inc();
                }
                if !recovered.finished.is_empty() {
                    tracing::info!(
                        recordings = recovered.finished.len(),
                        "uploading recordings left in the spool"
                    );
                }
                for finished in recovered.finished {
                    self.uploads.enqueue(finished);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "spool recovery failed");
                self.metrics.recordings.errors.inc();
            }
        }
        self.recorder_done();
    }

    /// Starts recording a call. Never blocks: files are created by the recorder task.
    pub fn start_call(self: &Arc<Self>, call_id: &str) -> CallRecorder {
        let now = chrono::Utc::now();
        let stem = key::spool_stem(call_id, now, rand::random());
        let meta = spool::Meta {
            call_id: call_id.to_owned(),
            key: key::object_key(&self.prefix, call_id, now),
            coding: self.coding,
        };
        let (tx, rx) = mpsc::channel(recorder::QUEUE);
        self.recording.fetch_add(1, Ordering::AcqRel);
        let job = recorder::Job {
            recordings: self.clone(),
            stem,
            meta,
            started: Instant::now(),
        };
        tokio::spawn(recorder::record(job, rx));
        CallRecorder::new(tx, self.metrics.clone())
    }

    /// Assembles a recording whose call ended and queues it for upload. On failure the files
    /// stay in the spool, and the next start of the worker tries again.
    async fn finish(&self, stem: String, call_id: String) {
        let permit = self.assemblers.acquire().await;
        let spool = self.spool.clone();
        let finished = blocking(move || spool.finish(&stem)).await;
        drop(permit);
        match finished {
            Ok(finished) => self.uploads.enqueue(finished),
            Err(err) => {
                tracing::warn!(%call_id, error = %err, "recording could not be assembled");
                self.metrics.recordings.errors.inc();
            }
        }
        self.recorder_done();
    }

    fn recorder_done(&self) {
        self.recording.fetch_sub(1, Ordering::AcqRel);
    }

    /// Nothing being recorded, assembled or uploaded: a draining worker may exit.
    pub fn is_settled(&self) -> bool {
        self.recording.load(Ordering::Acquire) == 0 && self.uploads.pending() == 0
    }

    /// Recordings queued or uploading.
    pub fn pending_uploads(&self) -> usize {
        self.uploads.pending()
    }

    /// Waits until [`Recordings::is_settled`] or `timeout`; returns whether it settled.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_settled() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Stops the upload workers (what is left stays in the spool for the next start).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Runs blocking file work off the runtime's threads; a panic there is an I/O error here.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// The S3 client. Credentials come from the settings when given, else from the usual AWS
/// sources (`AWS_*` environment, web identity, instance metadata). Requests are path-style so
/// any S3-compatible server works without wildcard DNS.
fn s3_store(settings: &RecordingSettings) -> Result<impl ObjectStore, object_store::Error> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&settings.bucket)
        .with_region(settings.region.as_deref().unwrap_or("us-east-1"))
        .with_virtual_hosted_style_request(false)
        .with_retry(RetryConfig {
            // A few quick retries per attempt; the upload workers retry for as long as it takes.
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(id) = &settings.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &settings.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    builder.build()
}
