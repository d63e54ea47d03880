//! Remembers what was last applied per child of each CallCluster, so a reconcile triggered only
//! by a child's status (a pod became ready) reads status instead of re-applying a dozen
//! unchanged objects, and a change to one child (a FreeSWITCH pod joined, so the dispatcher
//! ConfigMap changed) re-applies that child alone.
//!
//! A child is (re-)applied when its rendered object differs from the last successful apply, or
//! when it was deleted or changed by someone else since ("dirty"). Our own writes are told
//! apart from others' by the `resourceVersion` the API server returned for them. Nothing here
//! survives a restart or a change of leader: a new term starts empty and applies everything once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::watch;

#[derive(Default)]
struct ChildState {
    /// Hash of the rendered object at the last successful apply; `None` once it is dirty.
    hash: Option<u64>,
    /// Bumped whenever the child is deleted or changed by someone else, so an apply that was
    /// in flight meanwhile does not mark it clean.
    dirty_epoch: u64,
}

#[derive(Default)]
struct State {
    /// Fleet (`namespace/name`) → child (`Kind/namespace/name`) → state.
    fleets: HashMap<String, HashMap<String, ChildState>>,
    /// `Kind/namespace/name` → `resourceVersion` our last apply returned.
    written: HashMap<String, String>,
}

/// Shared by the reconciler and the child watches.
pub struct AppliedCache {
    state: Mutex<State>,
    /// Child kinds whose watch has delivered its initial list (and with it every seed).
    listed: watch::Sender<HashSet<String>>,
}

impl Default for AppliedCache {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            listed: watch::Sender::new(HashSet::new()),
        }
    }
}

/// A child that must be applied, and what to hand back to [`AppliedCache::applied`] after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub child: String,
    hash: u64,
    epoch: u64,
}

impl AppliedCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Of the rendered children (`Kind/namespace/name`, hash of the object), the ones that
    /// must be applied, in the given order, each with its ticket.
    pub fn plan(&self, fleet: &str, rendered: &[(String, u64)]) -> Vec<Option<Ticket>> {
        let state = self.lock();
        let known = state.fleets.get(fleet);
        rendered
            .iter()
            .map(|(child, hash)| {
                let current = known.and_then(|f| f.get(child));
                let clean = current.is_some_and(|c| c.hash == Some(*hash));
                (!clean).then(|| Ticket {
                    child: child.clone(),
                    hash: *hash,
                    epoch: current.map_or(0, |c| c.dirty_epoch),
                })
            })
            .collect()
    }

    /// Records a successful apply. A child made dirty while it ran stays dirty (its epoch
    /// moved past the ticket's).
    pub fn applied(&self, fleet: &str, ticket: &Ticket) {
        let mut state = self.lock();
        let child = state
            .fleets
            .entry(fleet.to_owned())
            .or_default()
            .entry(ticket.child.clone())
            .or_default();
        if child.dirty_epoch == ticket.epoch {
            child.hash = Some(ticket.hash);
        }
    }

    /// Learns, from a child seen by a watch, that it was applied as rendered to `hash` (its
    /// rendered-hash annotation) by an earlier term. Only fills gaps: what this term applied or
    /// marked dirty itself wins.
    pub fn seed(&self, fleet: &str, child: &str, hash: u64) {
        let mut state = self.lock();
        state
            .fleets
            .entry(fleet.to_owned())
            .or_default()
            .entry(child.to_owned())
            .or_insert(ChildState {
                hash: Some(hash),
                dirty_epoch: 0,
            });
    }

    /// The watch of child `kind` has delivered its initial list.
    pub fn listed(&self, kind: &str) {
        self.listed
            .send_if_modified(|kinds| kinds.insert(kind.to_owned()));
    }

    /// Waits until `kinds` child watches have listed, so the first reconciles of a term see
    /// every seed instead of re-applying children an earlier term left current. Gives up after
    /// `limit` (a watch that cannot list, e.g. forbidden, must not stop reconciling): the cost
    /// is only re-applying.
    pub async fn wait_listed(&self, kinds: usize, limit: Duration) {
        let mut rx = self.listed.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|k| k.len() >= kinds)).await;
    }

    /// Forgets a fleet (it was deleted, or an apply failed in a way that leaves its state
    /// unknown): the next reconcile applies every child.
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
        if let Some(c) = state.fleets.get_mut(fleet).and_then(|f| f.get_mut(child)) {
            c.hash = None;
            c.dirty_epoch = c.dirty_epoch.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &str = "Deployment/ns/a-worker";
    const CM: &str = "ConfigMap/ns/a-sip";

    fn render(worker: u64, config: u64) -> Vec<(String, u64)> {
        vec![(W.into(), worker), (CM.into(), config)]
    }

    /// Applies what the plan says, all successfully; returns which children were applied.
    fn apply_all(c: &AppliedCache, rendered: &[(String, u64)]) -> Vec<String> {
        let plan = c.plan("ns/a", rendered);
        let mut done = Vec::new();
        for ticket in plan.into_iter().flatten() {
            c.applied("ns/a", &ticket);
            done.push(ticket.child);
        }
        done
    }

    #[test]
    fn applies_only_new_changed_or_dirty_children() {
        let c = AppliedCache::default();
        assert_eq!(apply_all(&c, &render(1, 1)), [W, CM], "never applied");
        assert!(apply_all(&c, &render(1, 1)).is_empty(), "same render: skip");
        assert_eq!(apply_all(&c, &render(1, 2)), [CM], "only the changed child");

        // Our own write echoed back by the watch is not drift; someone else's is.
        c.wrote(W.into(), Some("10".into()));
        c.child_changed("ns/a", W, Some("10"), false);
        assert!(apply_all(&c, &render(1, 2)).is_empty());
        c.child_changed("ns/a", W, Some("11"), false);
        assert_eq!(apply_all(&c, &render(1, 2)), [W], "edited by someone else");
        assert!(apply_all(&c, &render(1, 2)).is_empty());

        c.child_changed("ns/a", W, Some("11"), true);
        assert_eq!(apply_all(&c, &render(1, 2)), [W], "deleted child");
    }

    #[test]
    fn drift_during_an_apply_is_not_lost() {
        let c = AppliedCache::default();
        apply_all(&c, &render(1, 1));
        c.child_changed("ns/a", W, None, true);
        let plan = c.plan("ns/a", &render(1, 1));
        // The child is deleted again while this reconcile is applying it.
        c.child_changed("ns/a", W, None, true);
        for ticket in plan.iter().flatten() {
            c.applied("ns/a", ticket);
        }
        assert_eq!(
            apply_all(&c, &render(1, 1)),
            [W],
            "the next reconcile must apply"
        );
    }

    #[test]
    fn seeded_children_are_not_applied_again_unless_changed() {
        let c = AppliedCache::default();
        c.seed("ns/a", W, 1);
        c.seed("ns/a", CM, 5);
        assert_eq!(
            apply_all(&c, &render(1, 1)),
            [CM],
            "the seed says W is current"
        );
        // A seed never overrides what this term knows.
        c.child_changed("ns/a", W, Some("12"), false);
        c.seed("ns/a", W, 1);
        assert_eq!(apply_all(&c, &render(1, 1)), [W]);
    }

    #[test]
    fn failed_children_and_forgotten_fleets_apply_again() {
        let c = AppliedCache::default();
        let plan = c.plan("ns/a", &render(1, 1));
        // Only the first apply succeeded.
        c.applied("ns/a", plan[0].as_ref().unwrap());
        assert_eq!(apply_all(&c, &render(1, 1)), [CM]);
        c.forget("ns/a");
        assert_eq!(apply_all(&c, &render(1, 1)), [W, CM]);
    }
}
