//! Turns on threads of their own, for workers whose media threads batch events
//! (`CALLFLEET_EVENT_BATCH_US`).
//!
//! A batching media thread sleeps before it takes new events; a provider's answer arriving
//! meanwhile would wait too, and a turn waits on several (transcript, first token, first speech
//! bytes). Turns (their provider requests, SSE and speech decoding, resampling) therefore run
//! on a runtime that takes every event as it comes, while the calls' frames, the bulk of the
//! wake-ups, are batched. Measured at 1,000 calls in conversation: batching alone cost about
//! 3.5 ms of first-audio latency at p50 and p99, batching with this runtime about 1.2 ms at p50
//! and 0–1.5 ms at p99, for as much CPU saved (BENCHMARKS.md, 2026-11-30 evening).
//!
//! Load shedding probes this runtime too (`LoadShedder::probe_turns`): it carries every call's
//! turns, so when it falls behind the worker refuses new calls on all media runtimes.

use std::future::Future;
use std::io;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The runtime turns are spawned on; it stops when this is dropped.
pub struct TurnRuntime {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl TurnRuntime {
    /// Starts a runtime over `threads` threads: one drives a single-threaded runtime (the
    /// cheapest while one thread keeps up), more share a work-stealing one.
    pub fn start(threads: usize) -> io::Result<Self> {
        let runtime = if threads <= 1 {
            Builder::new_current_thread().enable_all().build()?
        } else {
            Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("callfleet-turns")
                .enable_all()
                .build()?
        };
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("callfleet-turns".into())
            .spawn(move || {
                // Sender dropped (the worker's context is gone): the runtime shuts down here,
                // cancelling whatever turns are left.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Threads for a worker whose media runs on `media_cores` cores: turns are about half of
    /// a conversation call's CPU, so half as many threads, at least one.
    pub fn threads_for(media_cores: usize) -> usize {
        media_cores.div_ceil(2).max(1)
    }

    pub fn spawn<F>(&self, turn: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(turn)
    }

    /// Runs `f` with this runtime as the current one, so what it spawns runs here.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = self.handle.enter();
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(str::to_owned)
    }

    #[test]
    fn turns_run_on_their_own_threads_and_stop_with_the_runtime() {
        for threads in [1, 2] {
            let turns = TurnRuntime::start(threads).unwrap();
            let caller = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let ran_on = caller.block_on(async {
                let turn = turns.spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    thread_name()
                });
                turn.await.unwrap()
            });
            assert_eq!(
                ran_on.as_deref(),
                Some("callfleet-turns"),
                "{threads} threads"
            );

            // A turn still running when the runtime goes is cancelled, not leaked.
            let forever = turns.spawn(std::future::pending::<()>());
            drop(turns);
            let ended = caller.block_on(forever);
            assert!(ended.unwrap_err().is_cancelled());
        }
    }

    #[test]
    fn half_the_media_cores_at_least_one() {
        assert_eq!(TurnRuntime::threads_for(0), 1);
        assert_eq!(TurnRuntime::threads_for(1), 1);
        assert_eq!(TurnRuntime::threads_for(2), 1);
        assert_eq!(TurnRuntime::threads_for(4), 2);
        assert_eq!(TurnRuntime::threads_for(8), 4);
    }
}
