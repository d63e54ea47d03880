//! Rate of new connections per client IP, with GCRA (the generic cell rate algorithm).
//!
//! GCRA keeps one timestamp per key (the "theoretical arrival time"), which is why a shared
//! Redis-backed limiter can do the same check in one round trip (a small script doing this
//! arithmetic). [`ConnectionRateLimiter`] is that seam; [`GcraLimiter`] is the in-process one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allow,
    /// Over the limit; a new connection would be allowed after this long.
    Deny {
        retry_after: Duration,
    },
}

/// Decides whether a client may open another connection now.
pub trait ConnectionRateLimiter: Send + Sync {
    fn check(&self, ip: IpAddr) -> BoxFuture<'_, RateDecision>;
}

/// GCRA parameters: `per_minute` connections per minute, with a burst of the same size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time between evenly spaced requests.
    pub emission_interval: Duration,
    /// How far ahead of now the arrival time may run (burst allowance).
    pub tolerance: Duration,
}

impl Gcra {
    /// `per_minute` must be at least 1 (0 is treated as 1).
    pub fn per_minute(per_minute: u32) -> Self {
        let emission_interval = Duration::from_secs(60) / per_minute.max(1);
        Self {
            emission_interval,
            tolerance: Duration::from_secs(60).saturating_sub(emission_interval),
        }
    }

    /// One GCRA step: given the stored arrival time (`None` for a new key) and `now`, returns
    /// the decision and the arrival time to store. Times are offsets from any fixed origin.
    pub fn step(&self, stored: Option<Duration>, now: Duration) -> (RateDecision, Duration) {
        let tat = stored.unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            let retry_after = ahead - self.tolerance;
            (RateDecision::Deny { retry_after }, tat)
        } else {
            (RateDecision::Allow, tat + self.emission_interval)
        }
    }
}

/// In-process GCRA keyed by IP. The map is touched once per new connection, never on the media
/// path, so a mutex is fine; keys whose arrival time has passed are swept periodically so memory
/// stays bounded by the number of recently active clients.
pub struct GcraLimiter {
    gcra: Gcra,
    origin: Instant,
    state: Mutex<LimiterState>,
}

struct LimiterState {
    arrivals: HashMap<IpAddr, Duration>,
    last_sweep: Duration,
}

const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl GcraLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            gcra: Gcra::per_minute(per_minute),
            origin: Instant::now(),
            state: Mutex::new(LimiterState {
                arrivals: HashMap::new(),
                last_sweep: Duration::ZERO,
            }),
        }
    }

    /// The synchronous check at an explicit time offset (used by tests and by `check`).
    pub fn check_at(&self, ip: IpAddr, now: Duration) -> RateDecision {
        let mut state = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if now.saturating_sub(state.last_sweep) >= SWEEP_EVERY {
            state.arrivals.retain(|_, tat| *tat > now);
            state.last_sweep = now;
        }
        let (decision, tat) = self.gcra.step(state.arrivals.get(&ip).copied(), now);
        state.arrivals.insert(ip, tat);
        decision
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.state.lock().map(|s| s.arrivals.len()).unwrap_or(0)
    }
}

impl ConnectionRateLimiter for GcraLimiter {
    fn check(&self, ip: IpAddr) -> BoxFuture<'_, RateDecision> {
        let decision = self.check_at(ip, self.origin.elapsed());
        Box::pin(std::future::ready(decision))
    }
}

/// No limit (`CALLFLEET_RATE_LIMIT_PER_MINUTE=0`).
pub struct Unlimited;

impl ConnectionRateLimiter for Unlimited {
    fn check(&self, _ip: IpAddr) -> BoxFuture<'_, RateDecision> {
        Box::pin(std::future::ready(RateDecision::Allow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn burst_of_limit_then_steady_rate() {
        let limiter = GcraLimiter::new(100);
        let t0 = Duration::from_secs(1);
        for i in 0..100 {
            assert_eq!(limiter.check_at(IP, t0), RateDecision::Allow, "request {i}");
        }
        let denied = limiter.check_at(IP, t0);
        assert_eq!(
            denied,
            RateDecision::Deny {
                retry_after: Duration::from_millis(600)
            }
        );
        // Another client is unaffected.
        assert_eq!(limiter.check_at(OTHER, t0), RateDecision::Allow);
        // One emission interval (600 ms) later, exactly one more is allowed.
        let later = t0 + Duration::from_millis(600);
        assert_eq!(limiter.check_at(IP, later), RateDecision::Allow);
        assert!(matches!(
            limiter.check_at(IP, later),
            RateDecision::Deny { .. }
        ));
    }

    #[test]
    fn denied_requests_do_not_push_the_window() {
        let gcra = Gcra::per_minute(1);
        let (d, tat) = gcra.step(None, Duration::ZERO);
        assert_eq!(d, RateDecision::Allow);
        let (d, tat2) = gcra.step(Some(tat), Duration::from_secs(30));
        assert!(matches!(d, RateDecision::Deny { .. }));
        assert_eq!(tat, tat2);
        let (d, _) = gcra.step(Some(tat2), Duration::from_secs(60));
        assert_eq!(d, RateDecision::Allow);
    }

    #[test]
    fn idle_clients_are_swept() {
        let limiter = GcraLimiter::new(60);
        limiter.check_at(IP, Duration::from_secs(1));
        limiter.check_at(OTHER, Duration::from_secs(1));
        assert_eq!(limiter.tracked(), 2);
        limiter.check_at(OTHER, Duration::from_secs(120));
        assert_eq!(limiter.tracked(), 1);
    }
}
