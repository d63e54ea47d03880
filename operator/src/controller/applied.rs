//! Remembers what was last applied per CallCluster, so a reconcile triggered only by a child's
//! status (a pod became ready) reads status instead of re-applying a dozen unchanged objects.
//!
//! Children are re-applied when the rendered objects differ from the last successful apply, or
//! when a child was deleted or changed by someone else since ("dirty"). Our own writes are told
//! apart from others' by the `resourceVersion` the API server returned for them. Nothing here
//! survives a restart or a change of leader: a new term starts empty and applies everything once.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

#[derive(Default)]
struct Fleet {
    /// Hash of the rendered children at the last successful apply.
    hash: Option<u64>,
    /// Bumped whenever a child is deleted or changed by someone else.
    dirty_epoch: u64,
    /// `dirty_epoch` as read when the last successful apply started.
    applied_epoch: u64,
}

#[derive(Default)]
struct State {
    fleets: HashMap<String, Fleet>,
    /// `Kind/namespace/name` → `resourceVersion` our last apply returned.
    written: HashMap<String, String>,
}

/// Shared by the reconciler and the child watches.
#[derive(Default)]
pub struct AppliedCache {
    state: Mutex<State>,
}

/// What a reconcile saw at its start; hand it back to [`AppliedCache::applied`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
}

impl AppliedCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether children rendered to `hash` must be applied, and the ticket for this attempt.
    pub fn check(&self, fleet: &str, hash: u64) -> (bool, Ticket) {
        let state = self.lock();
        match state.fleets.get(fleet) {
            Some(f) => (
                f.hash != Some(hash) || f.dirty_epoch != f.applied_epoch,
                Ticket {
                    epoch: f.dirty_epoch,
                },
            ),
            None => (true, Ticket { epoch: 0 }),
        }
    }

    /// Records a successful apply of `hash`. A child made dirty while it ran keeps the fleet
    /// dirty (its epoch moved past the ticket's).
    pub fn applied(&self, fleet: &str, hash: u64, ticket: Ticket) {
        let mut state = self.lock();
        let f = state.fleets.entry(fleet.to_owned()).or_default();
        f.hash = Some(hash);
        f.applied_epoch = ticket.epoch;
    }

    /// Forgets a fleet (apply failed, or it was deleted): the next reconcile applies.
    pub fn forget(&self, fleet: &str) {
        self.lock().fleets.remove(fleet);
    }

    /// Records the `resourceVersion` our apply of a child returned.
    pub fn wrote(&self, child: String, resource_version: Option<String>) {
        let mut state = self.lock();
        match resource_version {
            Some(rv) => state.written.insert(child, rv),
            None => state.written.remove(&child),
        };
    }

    /// A child of `fleet` changed or was deleted. Our own write (same `resourceVersion`) is
    /// not drift.
    pub fn child_changed(
        &self,
        fleet: &str,
        child: &str,
        resource_version: Option<&str>,
        deleted: bool,
    ) {
        let mut state = self.lock();
        let ours = !deleted
            && resource_version.is_some()
            && state.written.get(child).map(String::as_str) == resource_version;
        if ours {
            return;
        }
        if deleted {
            state.written.remove(child);
        }
        if let Some(f) = state.fleets.get_mut(fleet) {
            f.dirty_epoch = f.dirty_epoch.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_when_new_changed_or_dirty() {
        let c = AppliedCache::default();
        let (apply, t) = c.check("ns/a", 1);
        assert!(apply, "never applied");
        c.applied("ns/a", 1, t);
        assert!(!c.check("ns/a", 1).0, "same render, nothing dirty: skip");
        assert!(c.check("ns/a", 2).0, "render changed");

        // Our own write echoed back by the watch is not drift; someone else's is.
        c.wrote("Deployment/ns/a-worker".into(), Some("10".into()));
        c.child_changed("ns/a", "Deployment/ns/a-worker", Some("10"), false);
        assert!(!c.check("ns/a", 1).0);
        c.child_changed("ns/a", "Deployment/ns/a-worker", Some("11"), false);
        let (apply, t) = c.check("ns/a", 1);
        assert!(apply, "edited by someone else");
        c.applied("ns/a", 1, t);
        assert!(!c.check("ns/a", 1).0);

        c.child_changed("ns/a", "Deployment/ns/a-worker", Some("11"), true);
        assert!(c.check("ns/a", 1).0, "deleted child");
    }

    #[test]
    fn drift_during_an_apply_is_not_lost() {
        let c = AppliedCache::default();
        let (_, t) = c.check("ns/a", 1);
        c.applied("ns/a", 1, t);
        let (_, ticket) = c.check("ns/a", 1);
        // A child is deleted while this reconcile is applying.
        c.child_changed("ns/a", "HorizontalPodAutoscaler/ns/a-worker", None, true);
        c.applied("ns/a", 1, ticket);
        assert!(c.check("ns/a", 1).0, "the next reconcile must still apply");
    }

    #[test]
    fn forgotten_fleets_apply_again() {
        let c = AppliedCache::default();
        let (_, t) = c.check("ns/a", 1);
        c.applied("ns/a", 1, t);
        c.forget("ns/a");
        assert!(c.check("ns/a", 1).0);
    }
}
