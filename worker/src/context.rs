//! What every call task shares with the worker: limits, admission, pipeline, metrics, store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::admission::{CapacityGate, ConnectionRateLimiter, LoadShedder, TokenSecret};
use crate::config::PipelineSource;
use crate::metrics::Metrics;
use crate::recording::Recordings;
use crate::session::SessionStore;
use crate::session::wake_grid::WakeGrid;
use crate::turn_runtime::TurnRuntime;

/// Per-call time limits.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub max_call: Duration,
    pub idle: Duration,
    /// How long a connection may stay open before announcing its call.
    pub start: Duration,
    /// How long a call leaves its socket alone between reads while no decision hangs on the
    /// caller's next frames (`session::inbound_rest`); zero reads every frame as it comes.
    pub inbound_rest: Duration,
    /// The same while no reply could be barged into (none being prepared or played).
    pub listening_rest: Duration,
    /// The grid calls' timers are moved to (`session::wake_grid`).
    pub wake_grid: WakeGrid,
}

/// Shared worker state, one per process.
pub struct WorkerContext {
    pub limits: CallLimits,
    pub pipelines: Arc<PipelineSource>,
    pub secret: TokenSecret,
    pub capacity: Arc<CapacityGate>,
    pub rate_limiter: Arc<dyn ConnectionRateLimiter>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn SessionStore>,
    /// Call recordings, when `CALLFLEET_RECORDINGS_ENABLED`.
    pub recordings: Option<Arc<Recordings>>,
    /// Load shedding: whether each media runtime keeps up.
    pub load: Arc<LoadShedder>,
    /// Where turns run when they have threads of their own (with event batching, or
    /// `CALLFLEET_TURN_THREADS`); `None`: on the call's own runtime.
    turns: Option<TurnRuntime>,
    pub started_at: Instant,
    draining: AtomicBool,
}

impl WorkerContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        limits: CallLimits,
        pipelines: Arc<PipelineSource>,
        secret: TokenSecret,
        capacity: Arc<CapacityGate>,
        rate_limiter: Arc<dyn ConnectionRateLimiter>,
        metrics: Arc<Metrics>,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        Self {
            limits,
            pipelines,
            secret,
            capacity,
            rate_limiter,
            metrics,
            store,
            recordings: None,
            load: LoadShedder::new(None, 1),
            turns: None,
            started_at: Instant::now(),
            draining: AtomicBool::new(false),
        }
    }

    /// Records calls with `recordings`.
    pub fn with_recordings(mut self, recordings: Option<Arc<Recordings>>) -> Self {
        self.recordings = recordings;
        self
    }

    /// Sheds new calls per `load`.
    pub fn with_load_shedding(mut self, load: Arc<LoadShedder>) -> Self {
        self.load = load;
        self
    }

    /// Runs turns on `turns` instead of the call's own runtime.
    pub fn with_turn_runtime(mut self, turns: Option<TurnRuntime>) -> Self {
        self.turns = turns;
        self
    }

    /// Whether turns run on a runtime of their own.
    pub fn turns_apart(&self) -> bool {
        self.turns.is_some()
    }

    /// Starts a turn: on the turn runtime if there is one, else on the current runtime.
    pub fn spawn_turn<F>(&self, turn: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.turns {
            Some(turns) => turns.spawn(turn),
            None => tokio::spawn(turn),
        }
    }

    /// Runs `f` where turns run, so the tasks it spawns (a provider request opened before its
    /// turn, such as an upload while the caller speaks) use the turns' connection pool and
    /// runtime rather than the call's.
    pub fn in_turn_context<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.turns {
            Some(turns) => turns.enter(f),
            None => f(),
        }
    }

    /// Stop admitting calls (SIGTERM).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn active_calls(&self) -> usize {
        self.capacity.active()
    }
}
