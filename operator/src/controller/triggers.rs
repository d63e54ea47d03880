//! Which changes of children and media pods are worth a CallCluster reconcile.
//!
//! Children's status churns (HPA metrics, PDB counts, every step of a rollout) and each
//! reconcile costs a dozen API calls; at 1,000 fleets that churn alone would saturate the API
//! server. So each watched kind is reduced to a fingerprint of what the reconcile reads or
//! owns, and only a changed fingerprint, or a deletion (to recreate the child), triggers.

use std::{
    collections::{HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
};

use callfleet_crds::{AiPipeline, CallCluster, conditions};
use futures::{Stream, StreamExt, future};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Pod,
};
use kube::{Resource, ResourceExt, runtime::watcher};

/// Passes deletions, and applied objects whose fingerprint changed since last seen.
pub fn changes<K, S>(
    events: S,
    fingerprint: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut seen: HashMap<(Option<String>, String), u64> = HashMap::new();
    events.filter_map(move |event| {
        let out = match event {
            Err(e) => Some(Err(e)),
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let print = fingerprint(&obj);
                let previous = seen.insert((obj.namespace(), obj.name_any()), print);
                (previous != Some(print)).then_some(Ok(obj))
            }
            Ok(watcher::Event::Delete(obj)) => {
                seen.remove(&(obj.namespace(), obj.name_any()));
                Some(Ok(obj))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        };
        future::ready(out)
    })
}

fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Spec and owner-relevant metadata: a user edit (drift to undo), nothing else.
pub fn spec_generation<K: Resource>(obj: &K) -> u64 {
    hash_of((obj.meta().generation, obj.meta().labels.as_ref()))
}

/// What the CallCluster status reads from a Deployment.
pub fn deployment_state(d: &Deployment) -> u64 {
    let s = d.status.as_ref();
    hash_of((
        spec_generation(d),
        d.spec.replicas,
        s.and_then(|s| s.observed_generation),
        s.and_then(|s| s.ready_replicas),
        s.and_then(|s| s.updated_replicas),
    ))
}

/// What the CallCluster status reads from a StatefulSet.
pub fn stateful_set_state(st: &StatefulSet) -> u64 {
    let s = st.status.as_ref();
    hash_of((
        spec_generation(st),
        st.spec.replicas,
        s.and_then(|s| s.observed_generation),
        s.and_then(|s| s.ready_replicas),
        s.and_then(|s| s.updated_replicas),
    ))
}

/// What dispatch reads from a media pod: readiness, IP, terminating.
pub fn media_pod_state(pod: &Pod) -> u64 {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    hash_of((
        ready,
        status.and_then(|s| s.pod_ip.as_deref()),
        pod.metadata.deletion_timestamp.is_some(),
    ))
}

/// What a CallCluster reads from its AiPipeline: the spec, and whether it is Ready (and why
/// not). `usedBy` is left out: every fleet added to a pipeline would otherwise re-reconcile
/// every fleet using it.
pub fn pipeline_state(p: &AiPipeline) -> u64 {
    let ready = p
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::READY))
        .map(|c| (c.status.as_str(), c.message.as_str()));
    hash_of((spec_generation(p), ready))
}

/// What an AiPipeline's `usedBy` reads from a CallCluster: which pipeline it references.
pub fn pipeline_ref(cc: &CallCluster) -> u64 {
    hash_of(&cc.spec.pipeline_ref.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn deployment(generation: i64, ready: i32, available: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("fleet-worker".into());
        d.metadata.namespace = Some("calls".into());
        d.metadata.generation = Some(generation);
        d.status = Some(DeploymentStatus {
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        });
        d
    }

    async fn passed(events: Vec<watcher::Event<Deployment>>) -> Vec<(i64, i32)> {
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        changes(stream, deployment_state)
            .map(|r| {
                let d = r.unwrap();
                (
                    d.metadata.generation.unwrap_or_default(),
                    d.status.and_then(|s| s.ready_replicas).unwrap_or_default(),
                )
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn only_relevant_changes_and_deletions_pass() {
        use watcher::Event::*;
        let out = passed(vec![
            Init,
            InitApply(deployment(1, 0, 0)),
            InitDone,
            // available replicas are not read: no reconcile
            Apply(deployment(1, 0, 1)),
            // readiness is: reconcile
            Apply(deployment(1, 1, 1)),
            // a re-list with nothing new: no reconcile
            Init,
            InitApply(deployment(1, 1, 1)),
            InitDone,
            // a user edit: reconcile to undo it
            Apply(deployment(2, 1, 1)),
            // deleted: reconcile to recreate it, even though nothing else changed
            Delete(deployment(2, 1, 1)),
            // recreated with the same state as before the delete: seen as new
            Apply(deployment(2, 1, 1)),
        ])
        .await;
        assert_eq!(out, vec![(1, 0), (1, 1), (2, 1), (2, 1), (2, 1)]);
    }

    #[test]
    fn media_pod_state_tracks_dispatch_inputs_only() {
        let pod = |ready: bool, ip: Option<&str>, phase: &str| Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(Into::into),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let base = media_pod_state(&pod(true, Some("10.0.0.1"), "Running"));
        assert_eq!(
            base,
            media_pod_state(&pod(true, Some("10.0.0.1"), "Unknown"))
        );
        assert_ne!(
            base,
            media_pod_state(&pod(false, Some("10.0.0.1"), "Running"))
        );
        assert_ne!(
            base,
            media_pod_state(&pod(true, Some("10.0.0.2"), "Running"))
        );
    }

    #[test]
    fn pipeline_state_ignores_used_by() {
        let mut p: AiPipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "callfleet.dev/v1alpha1", "kind": "AiPipeline",
            "metadata": {"name": "assistant", "namespace": "calls", "generation": 1},
            "spec": {"provider": {"apiKeySecretRef": {"name": "openai"}}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "SecretFound",
                "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}], "usedBy": ["a"]}
        }))
        .unwrap();
        let base = pipeline_state(&p);
        if let Some(s) = p.status.as_mut() {
            s.used_by.push("b".into());
        }
        assert_eq!(
            pipeline_state(&p),
            base,
            "a new user must not re-reconcile every user"
        );
        if let Some(s) = p.status.as_mut() {
            s.conditions[0].status = "False".into();
        }
        assert_ne!(pipeline_state(&p), base);
        p.metadata.generation = Some(2);
        assert_ne!(pipeline_state(&p), base);
    }
}
