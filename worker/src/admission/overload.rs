//! Load shedding: a worker whose event loop falls behind stops taking new calls (it reports not
//! ready, and refuses the connections that still arrive) until it has caught up, so the calls
//! it already carries keep real-time audio instead of every call on it degrading together.
//!
//! The signal is event-loop lag: how late a timer that should fire every 100 ms actually fires
//! on each media runtime. Frames wait in socket buffers exactly as long as that timer does, so
//! lag is what callers hear as late or broken reply audio, whatever the cause (CPU starvation
//! by a noisy neighbour, a CPU limit, too many calls in conversation at once). It is smoothed,
//! with a hysteresis band and a minimum hold, so a single slow tick neither sheds nor flaps
//! readiness (every flip rewrites the Service's EndpointSlices).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::metrics::Metrics;

/// How often each media runtime's lag is sampled.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Weight of the newest sample in the smoothed lag (about a second of memory at 100 ms).
const SMOOTHING: f64 = 0.2;
/// Once shedding, keep shedding at least this long: readiness changes take seconds to reach
/// the load balancer anyway.
const MIN_HOLD: Duration = Duration::from_secs(5);

/// When to shed: above `enter` smoothed lag, until it is back under `leave` (and `hold` passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadPolicy {
    pub enter: Duration,
    pub leave: Duration,
    pub hold: Duration,
}

impl OverloadPolicy {
    /// Sheds above `enter_ms` of smoothed lag, recovers under a fifth of it; `0` disables.
    pub fn from_lag_ms(enter_ms: u64) -> Option<Self> {
        (enter_ms > 0).then(|| Self {
            enter: Duration::from_millis(enter_ms),
            leave: Duration::from_millis(enter_ms) / 5,
            hold: MIN_HOLD,
        })
    }
}

/// The smoothed lag of one runtime and whether it is shedding. Pure: fed samples and times.
#[derive(Debug)]
pub struct LagTracker {
    policy: OverloadPolicy,
    smoothed_secs: f64,
    shedding_since: Option<Instant>,
}

impl LagTracker {
    pub fn new(policy: OverloadPolicy) -> Self {
        Self {
            policy,
            smoothed_secs: 0.0,
            shedding_since: None,
        }
    }

    /// Takes one lag sample at `now`; returns whether the runtime is shedding after it.
    pub fn observe(&mut self, lag: Duration, now: Instant) -> bool {
        self.smoothed_secs += SMOOTHING * (lag.as_secs_f64() - self.smoothed_secs);
        let smoothed = self.smoothed();
        self.shedding_since = match self.shedding_since {
            None if smoothed > self.policy.enter => Some(now),
            Some(since)
                if smoothed < self.policy.leave
                    && now.duration_since(since) >= self.policy.hold =>
            {
                None
            }
            unchanged => unchanged,
        };
        self.shedding_since.is_some()
    }

    pub fn smoothed(&self) -> Duration {
        Duration::from_secs_f64(self.smoothed_secs.max(0.0))
    }
}

/// Whether each media runtime, and the turn runtime if there is one, is shedding, read by
/// admission and `/ready`.
#[derive(Debug)]
pub struct LoadShedder {
    policy: Option<OverloadPolicy>,
    runtimes: Vec<RuntimeLoad>,
    /// The turn runtime (`crate::turn_runtime`), which every call's turns share: behind, it
    /// delays every reply, so it sheds for all media runtimes. Never shedding when unprobed.
    turns: RuntimeLoad,
}

#[derive(Debug, Default)]
struct RuntimeLoad {
    shedding: AtomicBool,
    smoothed_lag_us: AtomicU64,
}

impl RuntimeLoad {
    fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Acquire)
    }
    fn smoothed_lag(&self) -> Duration {
        Duration::from_micros(self.smoothed_lag_us.load(Ordering::Relaxed))
    }
}

/// How far behind one call's event loops run, for its turns to read while they stream.
#[derive(Debug, Clone)]
pub struct CallLag {
    load: Arc<LoadShedder>,
    runtime: usize,
}

impl CallLag {
    /// The smoothed lag of the call's media runtime, or of the turn runtime if further behind
    /// (zero while load shedding is off: nothing is probed).
    pub fn behind(&self) -> Duration {
        self.load.smoothed_lag(self.runtime)
    }
}

/// Which runtime a probe samples, for its slot and its log lines.
#[derive(Debug, Clone, Copy)]
enum Probed {
    Media(usize),
    Turns,
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Media(index) => write!(f, "media runtime {index}"),
            Self::Turns => f.write_str("turn runtime"),
        }
    }
}

impl LoadShedder {
    /// One slot per media runtime; `policy: None` never sheds.
    pub fn new(policy: Option<OverloadPolicy>, runtimes: usize) -> Arc<Self> {
        Arc::new(Self {
            policy,
            runtimes: (0..runtimes.max(1))
                .map(|_| RuntimeLoad::default())
                .collect(),
            turns: RuntimeLoad::default(),
        })
    }

    fn slot(&self, runtime: usize) -> &RuntimeLoad {
        &self.runtimes[runtime % self.runtimes.len()]
    }

    fn load(&self, probed: Probed) -> &RuntimeLoad {
        match probed {
            Probed::Media(runtime) => self.slot(runtime),
            Probed::Turns => &self.turns,
        }
    }

    /// Whether a new connection on media runtime `runtime` is refused: that runtime, or the
    /// turn runtime all calls share, is shedding.
    pub fn is_shedding(&self, runtime: usize) -> bool {
        self.slot(runtime).is_shedding() || self.turns.is_shedding()
    }

    /// The lag behind a call on media runtime `runtime`.
    pub fn lag_of(self: &Arc<Self>, runtime: usize) -> CallLag {
        CallLag {
            load: Arc::clone(self),
            runtime,
        }
    }

    /// Whether any runtime is shedding: the pod should get no new calls.
    pub fn any_shedding(&self) -> bool {
        self.turns.is_shedding() || self.runtimes.iter().any(RuntimeLoad::is_shedding)
    }

    /// Smoothed event-loop lag behind media runtime `runtime`'s calls: its own, or the turn
    /// runtime's if that is further behind.
    pub fn smoothed_lag(&self, runtime: usize) -> Duration {
        self.slot(runtime)
            .smoothed_lag()
            .max(self.turns.smoothed_lag())
    }

    /// Samples the lag of the media runtime it runs on, forever (spawn one per media runtime).
    pub async fn probe(self: Arc<Self>, runtime: usize, metrics: Arc<Metrics>) {
        self.sample(Probed::Media(runtime), metrics).await
    }

    /// Samples the lag of the turn runtime, forever (spawn it there).
    pub async fn probe_turns(self: Arc<Self>, metrics: Arc<Metrics>) {
        self.sample(Probed::Turns, metrics).await
    }

    async fn sample(self: Arc<Self>, probed: Probed, metrics: Arc<Metrics>) {
        let mut tracker = self.policy.map(LagTracker::new);
        let mut ticks = tokio::time::interval(PROBE_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let due = ticks.tick().await;
            let now = Instant::now();
            let lag = now.saturating_duration_since(due);
            metrics.event_loop_lag.observe(lag.as_secs_f64());
            let Some(tracker) = tracker.as_mut() else {
                continue;
            };
            let shedding = tracker.observe(lag, now);
            let slot = self.load(probed);
            slot.smoothed_lag_us.store(
                u64::try_from(tracker.smoothed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            if slot.shedding.swap(shedding, Ordering::AcqRel) != shedding {
                let lag_ms = tracker.smoothed().as_secs_f64() * 1000.0;
                if shedding {
                    metrics.overloaded_runtimes.inc();
                    tracing::warn!(runtime = %probed, lag_ms, "event loop behind: refusing new calls");
                } else {
                    metrics.overloaded_runtimes.dec();
                    tracing::info!(runtime = %probed, lag_ms, "event loop caught up: taking calls again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OverloadPolicy {
        OverloadPolicy::from_lag_ms(50).expect("enabled")
    }

    #[test]
    fn zero_disables_and_leave_is_a_fifth_of_enter() {
        assert_eq!(OverloadPolicy::from_lag_ms(0), None);
        let p = policy();
        assert_eq!(p.enter, Duration::from_millis(50));
        assert_eq!(p.leave, Duration::from_millis(10));
    }

    #[test]
    fn one_slow_tick_does_not_shed() {
        let mut t = LagTracker::new(policy());
        let start = Instant::now();
        assert!(!t.observe(Duration::from_millis(200), start));
        for i in 1..20 {
            assert!(!t.observe(Duration::ZERO, start + PROBE_EVERY * i));
        }
    }

    #[test]
    fn sustained_lag_sheds_and_holds_until_caught_up() {
        let mut t = LagTracker::new(policy());
        let start = Instant::now();
        let mut at = start;
        let mut ticks = 0;
        while !t.observe(Duration::from_millis(80), at) {
            ticks += 1;
            at += PROBE_EVERY;
            assert!(ticks < 20, "never shed at 80 ms of lag");
        }
        let shed_at = at;
        // Lag gone at once: still shedding until the smoothed lag is under `leave` and the
        // hold has passed.
        let mut recovered = None;
        for i in 1..200 {
            at += PROBE_EVERY;
            if !t.observe(Duration::ZERO, at) {
                recovered = Some(at);
                break;
            }
            assert!(i < 199, "never recovered");
        }
        let recovered = recovered.expect("recovered");
        assert!(recovered.duration_since(shed_at) >= MIN_HOLD);
        assert!(t.smoothed() < policy().leave);
    }

    #[test]
    fn lag_between_leave_and_enter_keeps_the_current_state() {
        let mut t = LagTracker::new(policy());
        let start = Instant::now();
        for i in 0..100 {
            assert!(!t.observe(Duration::from_millis(30), start + PROBE_EVERY * i));
        }
        let mut at = start + PROBE_EVERY * 100;
        while !t.observe(Duration::from_millis(90), at) {
            at += PROBE_EVERY;
        }
        for _ in 0..200 {
            at += PROBE_EVERY;
            assert!(
                t.observe(Duration::from_millis(30), at),
                "recovered inside the band"
            );
        }
    }

    #[test]
    fn shedding_is_per_runtime_and_any_one_makes_the_pod_unready() {
        let shedder = LoadShedder::new(policy().into(), 2);
        assert!(!shedder.any_shedding());
        shedder.slot(1).shedding.store(true, Ordering::Release);
        assert!(!shedder.is_shedding(0));
        assert!(shedder.is_shedding(1));
        assert!(shedder.any_shedding());
    }

    #[test]
    fn a_turn_runtime_behind_sheds_for_every_media_runtime() {
        let shedder = LoadShedder::new(policy().into(), 2);
        shedder
            .turns
            .smoothed_lag_us
            .store(80_000, Ordering::Relaxed);
        shedder.turns.shedding.store(true, Ordering::Release);
        assert!(shedder.is_shedding(0) && shedder.is_shedding(1));
        assert!(shedder.any_shedding());
        assert_eq!(shedder.smoothed_lag(0), Duration::from_millis(80));
    }
}
