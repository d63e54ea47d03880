//! Per-object exponential backoff for failed reconciles, reset by the next success.

use std::{collections::HashMap, sync::Mutex, time::Duration};

const BASE: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(300);

/// Delay before retrying after `failures` consecutive failures (1 s, 2 s, 4 s, … 5 min).
pub fn retry_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BASE.saturating_mul(1u32 << exp).min(MAX)
}

/// Consecutive failure counts keyed by `namespace/name`.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure and returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        retry_delay(*n)
    }

    pub fn succeeded(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_cap() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(4), Duration::from_secs(8));
        assert_eq!(retry_delay(9), Duration::from_secs(256));
        assert_eq!(retry_delay(10), MAX);
        assert_eq!(retry_delay(u32::MAX), MAX);
    }

    #[test]
    fn success_resets_the_count() {
        let b = Backoff::default();
        assert_eq!(b.failed("ns/a"), Duration::from_secs(1));
        assert_eq!(b.failed("ns/a"), Duration::from_secs(2));
        assert_eq!(b.failed("ns/b"), Duration::from_secs(1));
        b.succeeded("ns/a");
        assert_eq!(b.failed("ns/a"), Duration::from_secs(1));
    }
}
