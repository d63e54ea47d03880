//! Recording to a real S3-compatible server (S3Proxy) from a test worker.
#![allow(dead_code)]

use std::path::Path;

use callfleet_tests::s3proxy::S3Proxy;
use callfleet_worker::config::{RecordingFormat, ServeArgs};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

/// Where test recordings go in the bucket.
pub const PREFIX: &str = "calls/";

/// Settings that make the worker record every call to `s3`, spooling under `spool`.
pub fn record_to(args: &mut ServeArgs, s3: &S3Proxy, spool: &Path, format: RecordingFormat) {
    args.recordings_enabled = true;
    args.recordings_endpoint = Some(s3.endpoint());
    args.recordings_region = Some(S3Proxy::REGION.into());
    args.recordings_bucket = Some(S3Proxy::BUCKET.into());
    args.recordings_prefix = PREFIX.into();
    args.recordings_format = format;
    args.aws_access_key_id = Some(S3Proxy::ACCESS_KEY.into());
    args.aws_secret_access_key = Some(S3Proxy::SECRET_KEY.into());
    args.recordings_spool_dir = spool.to_owned();
    args.recordings_retry_max_seconds = 1;
}

/// The recording keys under [`PREFIX`] (none while S3 is unreachable).
pub async fn keys(s3: &S3Proxy) -> Vec<String> {
    let Ok(client) = s3.client() else {
        return Vec::new();
    };
    let prefix = ObjectPath::from(PREFIX);
    client
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap_or_default()
}

/// Nothing left in the spool: every recording was finished and uploaded.
pub fn assert_spool_empty(spool: &Path) {
    for sub in ["active", "outbox"] {
        let left: Vec<_> = std::fs::read_dir(spool.join(sub))
            .expect("spool folder")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
}
