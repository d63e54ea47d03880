//! Uploads finished recordings from the spool's outbox to the bucket, and retries until the
//! bucket has them. A WAV is streamed from its file in parts: at most one part per upload is in
//! memory, however long the call was, and uploads run on a few workers shared by all calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, ObjectStore, PutMultipartOptions, PutOptions};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::spool::{Finished, Spool};
use crate::metrics::Metrics;

/// S3's smallest part (all but the last): files up to this size go up in one PUT.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// First wait after a failed upload; it doubles up to the configured maximum.
const RETRY_MIN: Duration = Duration::from_millis(500);

/// Why an upload attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading the spooled recording: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("invalid object key: {0}")]
    Key(#[from] object_store::path::Error),
}

impl UploadError {
    /// The spooled file is gone (someone removed it): retrying cannot help.
    fn is_gone(&self) -> bool {
        matches!(self, UploadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// How uploads run.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Uploads in flight at once.
    pub workers: usize,
    /// Longest wait between attempts while the bucket is unreachable.
    pub retry_max: Duration,
    /// Multipart part size (S3: at least 5 MiB).
    pub part_size: usize,
}

/// The upload queue: recordings waiting for the bucket.
pub struct Uploads {
    tx: mpsc::UnboundedSender<Finished>,
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

struct Worker {
    store: Arc<dyn ObjectStore>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    settings: UploadSettings,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Finished>>>,
    tx: mpsc::UnboundedSender<Finished>,
    pending: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Uploads {
    /// Starts the upload workers; they stop when `stop` is cancelled.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        settings: UploadSettings,
        stop: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(AtomicUsize::new(0));
        for _ in 0..settings.workers.max(1) {
            let worker = Worker {
                store: store.clone(),
                spool: spool.clone(),
                metrics: metrics.clone(),
                settings: settings.clone(),
                rx: rx.clone(),
                tx: tx.clone(),
                pending: pending.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(worker.run());
        }
        Self {
            tx,
            pending,
            metrics,
        }
    }

    /// Queues a finished recording for upload.
    pub fn enqueue(&self, finished: Finished) {
        let n = self.pending.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.recordings.backlog.set(n as i64);
        // The workers hold a sender too, so the queue is open while they run.
        let _ = self.tx.send(finished);
    }

    /// Recordings queued or uploading.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

impl Worker {
    async fn run(self) {
        let mut backoff = RETRY_MIN;
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => return,
                next = async { self.rx.lock().await.recv().await } => next,
            };
            let Some(finished) = next else { return };
            let result = tokio::select! {
                _ = self.stop.cancelled() => return,
                result = upload(&*self.store, &finished, self.settings.part_size) => result,
            };
            match result {
                Ok(bytes) => {
                    backoff = RETRY_MIN;
                    self.metrics.recordings.uploaded.inc();
                    self.metrics.recordings.uploaded_bytes.inc_by(bytes);
                    tracing::info!(key = %finished.key, bytes, "recording uploaded");
                    let spool = self.spool.clone();
                    let done = finished.clone();
                    if let Err(err) = super::blocking(move || spool.remove(&done)).await {
                        tracing::warn!(key = %finished.key, error = %err, "uploaded recording not removed from the spool");
                        self.metrics.recordings.errors.inc();
                    }
                    self.done();
                }
                Err(err) if err.is_gone() => {
                    tracing::warn!(key = %finished.key, error = %err, "spooled recording vanished before upload");
                    self.metrics.recordings.errors.inc();
                    self.done();
                }
                Err(err) => {
                    tracing::warn!(key = %finished.key, error = %err, retry_in = ?backoff, "recording upload failed");
                    self.metrics.recordings.upload_failures.inc();
                    let _ = self.tx.send(finished);
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.settings.retry_max.max(RETRY_MIN));
                }
            }
        }
    }

    fn done(&self) {
        let n = self
            .pending
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        self.metrics.recordings.backlog.set(n as i64);
    }
}

/// Puts one spooled WAV at its key: one PUT when it fits in a part, else a multipart upload
/// fed part by part from the file. Returns the bytes uploaded.
pub async fn upload(
    store: &dyn ObjectStore,
    finished: &Finished,
    part_size: usize,
) -> Result<u64, UploadError> {
    let path = ObjectPath::parse(&finished.key)?;
    let mut file = tokio::fs::File::open(&finished.wav).await?;
    let len = file.metadata().await?.len();
    let attributes = Attributes::from_iter([(Attribute::ContentType, "audio/wav")]);
    if len <= part_size as u64 {
        let mut body = Vec::with_capacity(len as usize);
        file.read_to_end(&mut body).await?;
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        store.put_opts(&path, body.into(), options).await?;
        return Ok(len);
    }
    let options = PutMultipartOptions {
        attributes,
        ..PutMultipartOptions::default()
    };
    let mut upload = store.put_multipart_opts(&path, options).await?;
    let mut sent = 0u64;
    loop {
        let mut part = Vec::with_capacity(part_size);
        let read = async {
            (&mut file)
                .take(part_size as u64)
                .read_to_end(&mut part)
                .await
        };
        if let Err(err) = read.await {
            let _ = upload.abort().await;
            return Err(err.into());
        }
        if part.is_empty() {
            break;
        }
        sent += part.len() as u64;
        if let Err(err) = upload.put_part(part.into()).await {
            let _ = upload.abort().await;
            return Err(err.into());
        }
    }
    upload.complete().await?;
    Ok(sent)
}
