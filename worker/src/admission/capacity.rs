//! The per-worker call limit: a lock-free counter and an RAII permit, so a call's slot is
//! released however its task ends (normal end, error, panic unwinding).
//!
//! A worker that reaches its limit also reports not ready until it is back under 90% of it, so
//! the Service sends new calls to workers with room instead of to one that can only refuse
//! them (a refused Twilio stream is a failed call). The band keeps a worker hovering at its
//! limit from flipping readiness, and the Service's EndpointSlices, on every call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Admits at most `max` concurrent calls.
#[derive(Debug)]
pub struct CapacityGate {
    active: AtomicUsize,
    max: usize,
    /// Set when the limit is reached, cleared at or under [`CapacityGate::reopen_at`].
    full: AtomicBool,
}

/// One admitted call; dropping it frees the slot.
#[derive(Debug)]
pub struct CallPermit {
    gate: Arc<CapacityGate>,
}

impl CapacityGate {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            active: AtomicUsize::new(0),
            max,
            full: AtomicBool::new(false),
        })
    }

    /// Takes a slot, or `None` when the worker is full.
    pub fn try_acquire(self: &Arc<Self>) -> Option<CallPermit> {
        let before = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        if before + 1 >= self.max {
            // Not atomic with the count: if a tenth of the calls ended in between, the flag
            // stays set until the next call ends, which clears it. Readiness, not admission.
            self.full.store(true, Ordering::Release);
        }
        Some(CallPermit { gate: self.clone() })
    }

    /// Active calls at or under which a full worker takes calls again (90% of the limit).
    pub fn reopen_at(&self) -> usize {
        self.max - self.max.div_ceil(10)
    }

    /// Whether the worker reached its limit and has not yet come back under
    /// [`CapacityGate::reopen_at`]: it should get no new calls.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Calls in progress.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let before = self.gate.active.fetch_sub(1, Ordering::AcqRel);
        if before - 1 <= self.gate.reopen_at() {
            self.gate.full.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_releases() {
        let gate = CapacityGate::new(2);
        let a = gate.try_acquire().unwrap();
        let _b = gate.try_acquire().unwrap();
        assert!(gate.try_acquire().is_none());
        assert_eq!(gate.active(), 2);
        drop(a);
        assert_eq!(gate.active(), 1);
        assert!(gate.try_acquire().is_some());
        assert_eq!(gate.active(), 1);
    }

    #[test]
    fn full_holds_until_back_under_ninety_percent() {
        let gate = CapacityGate::new(20);
        assert_eq!(gate.reopen_at(), 18);
        let mut held: Vec<_> = (0..19).map(|_| gate.try_acquire().unwrap()).collect();
        assert!(!gate.is_full());
        held.push(gate.try_acquire().unwrap());
        assert!(gate.is_full());
        held.pop();
        assert!(gate.is_full(), "19 of 20: still inside the band");
        held.pop();
        assert!(!gate.is_full(), "18 of 20: open again");
        held.push(gate.try_acquire().unwrap());
        assert!(!gate.is_full(), "19 of 20 on the way up is not full");
    }

    #[test]
    fn a_limit_of_one_reopens_when_its_call_ends() {
        let gate = CapacityGate::new(1);
        assert_eq!(gate.reopen_at(), 0);
        let call = gate.try_acquire().unwrap();
        assert!(gate.is_full());
        drop(call);
        assert!(!gate.is_full());
    }

    #[test]
    fn concurrent_acquire_never_exceeds_max() {
        let gate = CapacityGate::new(50);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let gate = gate.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..100 {
                        if let Some(p) = gate.try_acquire() {
                            held.push(p);
                        }
                        assert!(gate.active() <= 50);
                    }
                    held
                })
            })
            .collect();
        // Permits stay alive until every thread is joined, so exactly `max` were handed out.
        let held: Vec<Vec<CallPermit>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(held.iter().map(Vec::len).sum::<usize>(), 50);
    }
}
