//! The per-worker call limit: a lock-free counter and an RAII permit, so a call's slot is
//! released however its task ends (normal end, error, panic unwinding).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Admits at most `max` concurrent calls.
#[derive(Debug)]
pub struct CapacityGate {
    active: AtomicUsize,
    max: usize,
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
        })
    }

    /// Takes a slot, or `None` when the worker is full.
    pub fn try_acquire(self: &Arc<Self>) -> Option<CallPermit> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| CallPermit { gate: self.clone() })
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
        self.gate.active.fetch_sub(1, Ordering::AcqRel);
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
