//! When to try a provider request again and how long to wait first.
//!
//! Pure decisions; the async loop that sleeps lives in `http.rs`. Retries only ever happen
//! before a stream has yielded anything, so the caller never sees text or audio twice.

use std::time::Duration;

use crate::providers::ProviderError;

/// Backoff parameters. Exponential from `base`, capped at `cap`, with "equal jitter": half the
/// delay is fixed and half random, so synchronized callers spread out without ever retrying
/// immediately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
    /// A `Retry-After` longer than this is not waited for: on a phone call the caller has hung
    /// up by then, so the error is reported instead.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(10),
        }
    }

    /// How long to wait before retry number `retries_done + 1` after `error`, or `None` to give
    /// up. `jitter` is a uniform random number in `[0, 1)`.
    pub fn delay_before_retry(
        &self,
        error: &ProviderError,
        retries_done: u32,
        jitter: f64,
    ) -> Option<Duration> {
        if retries_done >= self.max_retries || !error.is_retryable() {
            return None;
        }
        if let ProviderError::RateLimited {
            retry_after: Some(after),
            ..
        } = error
        {
            return (*after <= self.max_retry_after).then_some(*after);
        }
        let exponential = self
            .base
            .saturating_mul(1u32 << retries_done.min(16))
            .min(self.cap);
        let half = exponential / 2;
        Some(half + half.mul_f64(jitter.clamp(0.0, 1.0)))
    }
}

/// Reads the server's retry hint: OpenAI's `retry-after-ms` (milliseconds) when present, else
/// the standard `Retry-After` in whole seconds. HTTP-date values are ignored (backoff applies).
pub fn parse_retry_after(
    retry_after_ms: Option<&str>,
    retry_after: Option<&str>,
) -> Option<Duration> {
    let millis = retry_after_ms
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        // A hint beyond what a Duration holds means "not soon": longer than any wait we take.
        .map(|ms| Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX));
    millis.or_else(|| {
        retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error() -> ProviderError {
        ProviderError::Server {
            status: 500,
            message: String::new(),
        }
    }

    #[test]
    fn backs_off_exponentially_with_bounded_jitter() {
        let p = RetryPolicy::new(10);
        let e = server_error();
        assert_eq!(
            p.delay_before_retry(&e, 0, 0.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            p.delay_before_retry(&e, 0, 1.0),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            p.delay_before_retry(&e, 2, 0.0),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            p.delay_before_retry(&e, 4, 1.0),
            Some(Duration::from_millis(3200))
        );
        // capped
        assert_eq!(
            p.delay_before_retry(&e, 5, 1.0),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            p.delay_before_retry(&e, 9, 0.0),
            Some(Duration::from_secs(2))
        );
        // out-of-range jitter is clamped
        assert_eq!(
            p.delay_before_retry(&e, 0, 7.0),
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn gives_up_after_max_retries_and_on_permanent_errors() {
        let p = RetryPolicy::new(2);
        assert!(p.delay_before_retry(&server_error(), 2, 0.5).is_none());
        let auth = ProviderError::Auth {
            status: 401,
            message: String::new(),
        };
        assert!(p.delay_before_retry(&auth, 0, 0.5).is_none());
        let proto = ProviderError::Protocol("bad json".into());
        assert!(p.delay_before_retry(&proto, 0, 0.5).is_none());
        assert!(
            RetryPolicy::new(0)
                .delay_before_retry(&server_error(), 0, 0.5)
                .is_none()
        );
    }

    #[test]
    fn honours_retry_after_unless_too_long() {
        let p = RetryPolicy::new(3);
        let limited = |after| ProviderError::RateLimited {
            retry_after: Some(after),
            message: String::new(),
        };
        assert_eq!(
            p.delay_before_retry(&limited(Duration::from_millis(1500)), 0, 0.9),
            Some(Duration::from_millis(1500))
        );
        assert!(
            p.delay_before_retry(&limited(Duration::from_secs(60)), 0, 0.9)
                .is_none()
        );
        let no_hint = ProviderError::RateLimited {
            retry_after: None,
            message: String::new(),
        };
        assert_eq!(
            p.delay_before_retry(&no_hint, 1, 0.0),
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn parses_retry_after_headers() {
        assert_eq!(
            parse_retry_after(Some("250"), Some("3")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_retry_after(None, Some(" 3 ")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(Some("soon"), Some("2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_retry_after(Some("-5"), None), None);
        assert_eq!(
            parse_retry_after(None, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None, None), None);
        // Found by the property tests: a hint too large for a Duration panicked.
        assert_eq!(
            parse_retry_after(Some("1e300"), Some("1")),
            Some(Duration::MAX)
        );
        assert_eq!(
            RetryPolicy::new(3).delay_before_retry(
                &ProviderError::RateLimited {
                    retry_after: Some(Duration::MAX),
                    message: String::new(),
                },
                0,
                0.5
            ),
            None
        );
    }
}
