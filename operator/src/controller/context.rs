//! What every reconcile shares: the client, the caches, Events, metrics and backoff.

use std::sync::Arc;

use callfleet_crds::{AiPipeline, CallCluster};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
        reflector::Store,
    },
};

use super::{applied::AppliedCache, backoff::Backoff, error::Error};
use crate::metrics::Metrics;

/// The one field manager for every object and status the operator writes.
pub const MANAGER: &str = "callfleet-operator";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub backoff: Backoff,
    /// What was last applied per fleet, to skip re-applying unchanged children.
    pub applied: Arc<AppliedCache>,
    /// The CallCluster controller's cache (AiPipeline `usedBy`, Secret/pipeline mapping).
    pub call_clusters: Store<CallCluster>,
    /// The AiPipeline controller's cache.
    pub pipelines: Store<AiPipeline>,
    /// FreeSWITCH pods (label-selected, trimmed to what dispatch needs).
    pub media_pods: Store<Pod>,
}

impl Context {
    /// Publishes an Event about `obj`. Failing to publish is logged, never fatal: Events are
    /// a courtesy to humans, not state.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(%error, reason, "cannot publish Event");
        }
    }

    /// Shared error policy: count the failure and retry with per-object exponential backoff.
    pub fn retry_after_error<K: Resource>(
        &self,
        kind: &'static str,
        obj: &K,
        error: &Error,
    ) -> Action {
        self.metrics.reconcile_failed(kind, error.reason());
        let delay = self.backoff.failed(&backoff_key(kind, obj));
        tracing::warn!(
            kind,
            name = %obj.name_any(),
            namespace = obj.namespace().unwrap_or_default(),
            %error,
            retry_in = ?delay,
            "reconcile failed"
        );
        Action::requeue(delay)
    }

    pub fn reset_backoff<K: Resource>(&self, kind: &'static str, obj: &K) {
        self.backoff.succeeded(&backoff_key(kind, obj));
    }
}

fn backoff_key<K: Resource>(kind: &str, obj: &K) -> String {
    format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The object's namespace, or a typed error (both kinds are namespaced; a cluster-scoped
/// object here would be a bug in the watch setup, not a panic).
pub fn namespace_of<K: Resource>(kind: &'static str, obj: &K) -> Result<String, Error> {
    obj.namespace().ok_or_else(|| Error::NoNamespace {
        kind,
        name: obj.name_any(),
    })
}
