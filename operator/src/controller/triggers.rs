//! Which changes of children and media pods are worth a CallCluster reconcile.
//!
//! Children's status churns (HPA metrics, PDB counts, every step of a rollout) and each
//! reconcile costs a dozen API calls; at 1,000 fleets that churn alone would saturate the API
//! server. So each watched kind is reduced to a fingerprint of what the reconcile reads or
//! owns, and only a changed fingerprint, or a deletion (to recreate the child), triggers.

use std::{
    collections::{HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    sync::Arc,
};

use callfleet_crds::{AiPipeline, CallCluster, conditions};
use futures::{Stream, StreamExt, future};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Pod,
};
use kube::{Resource, ResourceExt, runtime::watcher};

use super::applied::AppliedCache;

/// Passes deletions, and applied objects whose fingerprint changed since last seen.
pub fn changes<K, S>(
    events: S,
    fingerprint: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    watch_changes(events, move |o| (fingerprint(o), 0), |_| {}, |_, _| {})
}

/// Like [`changes`] for children of CallClusters, split into what the spec says and what the
/// status reads: both trigger, but only a deletion or someone else's spec change marks the
/// fleet for re-apply in `applied`.
pub fn child_changes<K, S>(
    events: S,
    spec: fn(&K) -> u64,
    status: fn(&K) -> u64,
    applied: Arc<AppliedCache>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let seeds = applied.clone();
    let lists = applied.clone();
    let events = events.inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            lists.listed(&K::kind(&()));
        }
    });
    watch_changes(
        events,
        move |o| (spec(o), status(o)),
        move |child: &K| {
            if let (Some((fleet, key)), Some(hash)) = (keys_of(child), seed_of(child)) {
                seeds.seed(&fleet, &key, hash);
            }
        },
        move |child: &K, deleted| {
            if let Some((fleet, key)) = keys_of(child) {
                applied.child_changed(&fleet, &key, child.resource_version().as_deref(), deleted);
            }
        },
    )
}

/// The fleet key of the CallCluster that controls `child`, and the child's own key.
fn keys_of<K: Resource<DynamicType = ()>>(child: &K) -> Option<(String, String)> {
    let owner = child
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == CallCluster::kind(&()))?;
    let namespace = child.namespace().unwrap_or_default();
    Some((
        fleet_key(&namespace, &owner.name),
        child_key(&K::kind(&()), &namespace, &child.name_any()),
    ))
}

/// `namespace/name` of a CallCluster, as [`AppliedCache`] keys fleets.
pub fn fleet_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `Kind/namespace/name` of a child, as [`AppliedCache`] keys children.
pub fn child_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// Rendered hash of a child an earlier term applied, if it is still as that term left it: it
/// carries our rendered-hash annotation, and no one but the operator and Kubernetes' own
/// controllers has written its spec or metadata since (`managedFields`).
fn seed_of<K: Resource>(child: &K) -> Option<u64> {
    let meta = child.meta();
    let hash = crate::render::rendered_hash_of(meta)?;
    let edited_by_others = meta.managed_fields.iter().flatten().any(|m| {
        let manager = m.manager.as_deref().unwrap_or_default();
        let on_status = m.subresource.as_deref() == Some("status");
        !on_status && manager != super::context::MANAGER && manager != "kube-controller-manager"
    });
    (!edited_by_others).then_some(hash)
}

/// The filter: `prints` gives (spec, status) fingerprints; `on_first_seen` hears objects the
/// first time they appear (the initial list included); `on_spec_change` hears deletions and
/// spec changes of objects seen before (not creations: those are ours or irrelevant).
fn watch_changes<K, S>(
    events: S,
    prints: impl Fn(&K) -> (u64, u64) + Send + 'static,
    mut on_first_seen: impl FnMut(&K) + Send + 'static,
    mut on_spec_change: impl FnMut(&K, bool) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut seen: HashMap<(Option<String>, String), (u64, u64)> = HashMap::new();
    events.filter_map(move |event| {
        let out = match event {
            Err(e) => Some(Err(e)),
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let now = prints(&obj);
                let previous = seen.insert((obj.namespace(), obj.name_any()), now);
                match previous {
                    None => on_first_seen(&obj),
                    Some(p) if p.0 != now.0 => on_spec_change(&obj, false),
                    Some(_) => {}
                }
                (previous != Some(now)).then_some(Ok(obj))
            }
            Ok(watcher::Event::Delete(obj)) => {
                seen.remove(&(obj.namespace(), obj.name_any()));
                on_spec_change(&obj, true);
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

/// Any change at all, for kinds without `generation` or status (ConfigMap, Secret, Service).
pub fn any_change<K: Resource>(obj: &K) -> u64 {
    hash_of(obj.meta().resource_version.as_ref())
}

/// For kinds whose status the reconcile does not read.
pub fn nothing<K>(_: &K) -> u64 {
    0
}

/// What the CallCluster status reads from a Deployment's status.
pub fn deployment_state(d: &Deployment) -> u64 {
    let s = d.status.as_ref();
    hash_of((
        d.spec.replicas,
        s.and_then(|s| s.observed_generation),
        s.and_then(|s| s.ready_replicas),
        s.and_then(|s| s.updated_replicas),
    ))
}

/// What the CallCluster status reads from a StatefulSet's status.
pub fn stateful_set_state(st: &StatefulSet) -> u64 {
    let s = st.status.as_ref();
    hash_of((
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn deployment(generation: i64, ready: i32, available: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("fleet-worker".into());
        d.metadata.namespace = Some("calls".into());
        d.metadata.generation = Some(generation);
        d.metadata.resource_version = Some(format!("{generation}-{ready}-{available}"));
        d.metadata.owner_references = Some(vec![OwnerReference {
            kind: "CallCluster".into(),
            name: "fleet".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        d.status = Some(DeploymentStatus {
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        });
        d
    }

    const CHILD: &str = "Deployment/calls/fleet-worker";

    fn needs_apply(applied: &AppliedCache) -> bool {
        applied.plan("calls/fleet", &[(CHILD.into(), 7)])[0].is_some()
    }

    fn mark_applied(applied: &AppliedCache) {
        let plan = applied.plan("calls/fleet", &[(CHILD.into(), 7)]);
        applied.applied("calls/fleet", plan[0].as_ref().unwrap());
    }

    async fn passed(
        events: Vec<watcher::Event<Deployment>>,
        applied: Arc<AppliedCache>,
    ) -> Vec<(i64, i32)> {
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        child_changes(stream, spec_generation, deployment_state, applied)
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
        let applied = Arc::new(AppliedCache::default());
        mark_applied(&applied);
        let out = passed(
            vec![
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
            ],
            applied.clone(),
        )
        .await;
        assert_eq!(out, vec![(1, 0), (1, 1)]);
        assert!(!needs_apply(&applied), "status changes are not drift");

        // A user edit: reconcile, and re-apply to undo it.
        let out = passed(
            vec![Apply(deployment(1, 1, 1)), Apply(deployment(2, 1, 1))],
            applied.clone(),
        )
        .await;
        assert_eq!(out, vec![(1, 1), (2, 1)]);
        assert!(needs_apply(&applied), "someone else's spec change is drift");

        // Deleted: reconcile to recreate it.
        let applied = Arc::new(AppliedCache::default());
        mark_applied(&applied);
        let out = passed(vec![Delete(deployment(2, 1, 1))], applied.clone()).await;
        assert_eq!(out, vec![(2, 1)]);
        assert!(needs_apply(&applied));
    }

    #[test]
    fn seeds_only_children_left_as_an_earlier_term_applied_them() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let entry = |manager: &str, subresource: Option<&str>| ManagedFieldsEntry {
            manager: Some(manager.into()),
            subresource: subresource.map(Into::into),
            ..ManagedFieldsEntry::default()
        };
        let mut d = deployment(1, 1, 1);
        assert_eq!(
            seed_of(&d),
            None,
            "no annotation: an older operator's child"
        );
        d.metadata.annotations = Some(
            [(
                crate::render::RENDERED_HASH_ANNOTATION.to_owned(),
                "00000000000000ff".to_owned(),
            )]
            .into(),
        );
        d.metadata.managed_fields = Some(vec![
            entry(crate::controller::context::MANAGER, None),
            entry("kube-controller-manager", None),
            entry("kube-controller-manager", Some("status")),
            entry("kwok", Some("status")),
        ]);
        assert_eq!(seed_of(&d), Some(0xff));
        assert_eq!(
            keys_of(&d),
            Some(("calls/fleet".to_owned(), CHILD.to_owned()))
        );
        d.metadata
            .managed_fields
            .as_mut()
            .unwrap()
            .push(entry("kubectl-edit", None));
        assert_eq!(
            seed_of(&d),
            None,
            "edited by a user while no operator watched"
        );
        d.metadata.managed_fields = Some(vec![entry("kubectl", Some("scale"))]);
        assert_eq!(seed_of(&d), None, "scaled by a user");
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
