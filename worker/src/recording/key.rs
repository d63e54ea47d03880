//! Names of recordings: the object key in the bucket and the spool file stem.
//!
//! Key: `<prefix><YYYY>/<MM>/<DD>/<call id>-<HHMMSSmmm>.wav`, with the UTC date and time the
//! call started on this worker. The date partitions keep bucket listings cheap; the start time
//! keeps a call that reconnects (same call id, a second recording) from overwriting the first.

use chrono::{DateTime, Utc};

/// Longest call id kept in a name; the start time keeps truncated names apart.
const MAX_ID_LEN: usize = 128;

/// The call id as a key and file-name segment: ASCII letters, digits, `-` and `_` kept, anything
/// else (`/`, `.`, spaces, non-ASCII) becomes `_`, so an id can never climb out of its folder.
pub fn safe_call_id(call_id: &str) -> String {
    let safe: String = call_id
        .chars()
        .take(MAX_ID_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() { "_".into() } else { safe }
}

/// The object key of a recording that started at `started`.
pub fn object_key(prefix: &str, call_id: &str, started: DateTime<Utc>) -> String {
    format!(
        "{prefix}{}/{}-{}.wav",
        started.format("%Y/%m/%d"),
        safe_call_id(call_id),
        started.format("%H%M%S%3f"),
    )
}

/// The spool file stem: unique on this worker, sortable by start time.
pub fn spool_stem(call_id: &str, started: DateTime<Utc>, nonce: u32) -> String {
    format!(
        "{}-{}-{nonce:08x}",
        started.format("%Y%m%dT%H%M%S%3fZ"),
        safe_call_id(call_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 7, 9, 5, 2).unwrap() + chrono::Duration::milliseconds(45)
    }

    #[test]
    fn keys_are_date_partitioned() {
        assert_eq!(
            object_key("recordings/", "CA123", at()),
            "recordings/2026/03/07/CA123-090502045.wav"
        );
        assert_eq!(object_key("", "x", at()), "2026/03/07/x-090502045.wav");
    }

    #[test]
    fn call_ids_cannot_escape_their_folder() {
        assert_eq!(safe_call_id("../../etc/passwd"), "______etc_passwd");
        assert_eq!(safe_call_id("a b/c.d~é"), "a_b_c_d__");
        assert_eq!(safe_call_id(""), "_");
        assert_eq!(safe_call_id(&"x".repeat(500)).len(), MAX_ID_LEN);
        assert_eq!(
            safe_call_id("0f6c1c1e-3b5d-4f65-a1b4-9a4e2f1b2c3d"),
            "0f6c1c1e-3b5d-4f65-a1b4-9a4e2f1b2c3d"
        );
    }

    #[test]
    fn spool_stems() {
        assert_eq!(
            spool_stem("CA/1", at(), 0xbeef),
            "20260307T090502045Z-CA_1-0000beef"
        );
    }
}
