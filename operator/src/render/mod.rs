//! Pure rendering: a CallCluster and what the reconciler resolved about it in, the typed child
//! objects out. No I/O, no clock, no randomness here: the async shell (the controller) reads the
//! cluster, fills [`RenderInputs`], server-side applies the [`Child`]ren and writes the status
//! computed by [`status`].
//!
//! Upgrade safety: nothing that changes with the operator release (version labels, config
//! hashes, rendered-at stamps) goes into a pod template. A new operator version re-applies
//! byte-identical pod templates, so no worker or FreeSWITCH pod carrying calls is rolled; pods
//! only roll when the user edits the CallCluster spec (images, resources, ports).

pub mod common;
#[cfg(test)]
mod fixtures;
pub mod media;
pub mod pipeline;
#[cfg(test)]
mod properties;
pub mod sip;
pub mod status;
pub mod token;
pub mod worker;

use callfleet_crds::{AiPipeline, CallCluster};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ApiResource;
use serde_json::Value;

pub use sip::{Destination, render_dispatcher_list};

/// What the reconciler resolved about a CallCluster before rendering it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderInputs<'a> {
    /// The AiPipeline named by `spec.pipelineRef`, when it exists. Without it neither the
    /// pipeline ConfigMap nor the worker Deployment and autoscaler are rendered: whatever was
    /// applied last stays in place, so a deleted pipeline never rolls workers.
    pub pipeline: Option<&'a AiPipeline>,
    /// Fresh random bytes for the call-token Secret. Pass `Some` only when the CallCluster names
    /// no `spec.auth.tokenSecretRef` and Secret `<name>-call-token` does not exist yet: the
    /// Secret is then rendered once and never re-applied, so the key never changes under live
    /// calls.
    pub new_token_secret: Option<&'a [u8; 32]>,
    /// Ready FreeSWITCH pods Kamailio dispatches to (rendered into `dispatcher.list`).
    pub dispatcher_destinations: &'a [Destination],
}

/// One object owned by a CallCluster, ready for server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    PodDisruptionBudget(PodDisruptionBudget),
}

/// A child as the dynamic API wants it: `Api::<DynamicObject>::namespaced_with(client, ns,
/// &obj.api_resource).patch(&obj.name, &PatchParams::apply(MANAGER), &Patch::Apply(&obj.value))`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyObject {
    pub api_resource: ApiResource,
    pub name: String,
    /// The full object including `apiVersion` and `kind`.
    pub value: Value,
}

/// Why a CallCluster could not be rendered. The API server's schema rejects most bad specs;
/// these cover objects that bypassed it (offline `render -f`, stored before a schema change).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("CallCluster has no metadata.{0}")]
    MissingMetadata(&'static str),
    #[error("CallCluster name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("cannot serialize {kind} {name}: {source}")]
    Serialize {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The generated call-token Secret alone: the operator creates it once, when absent, and never
/// re-applies it (a second random key would invalidate every token in flight).
pub fn render_token_secret(cc: &CallCluster, bytes: &[u8; 32]) -> Result<Child, RenderError> {
    let ctx = common::Context::new(cc)?;
    Ok(Child::Secret(token::secret(&ctx, bytes)))
}

/// Every child of a CallCluster, in apply order: configuration and Secrets before the workloads
/// that mount them, workloads before their autoscalers and disruption budgets.
pub fn render_call_cluster(
    cc: &CallCluster,
    inputs: &RenderInputs<'_>,
) -> Result<Vec<Child>, RenderError> {
    let ctx = common::Context::new(cc)?;
    let mut children = Vec::with_capacity(14);
    if let Some(pipeline) = inputs.pipeline {
        children.push(Child::ConfigMap(pipeline::config_map(&ctx, pipeline)?));
    }
    if let Some(bytes) = inputs.new_token_secret
        && cc.spec.auth.token_secret_ref.is_none()
    {
        children.push(Child::Secret(token::secret(&ctx, bytes)));
    }
    children.push(Child::ConfigMap(media::config_map(&ctx)));
    children.push(Child::ConfigMap(sip::config_map(
        &ctx,
        inputs.dispatcher_destinations,
    )));
    children.push(Child::Service(worker::service(&ctx)));
    children.push(Child::Service(media::headless_service(&ctx)));
    children.push(Child::Service(sip::service(&ctx)));
    // Workers need to know which Secret holds the provider key. Until the AiPipeline exists
    // their Deployment is left alone: created later, or kept as it is if the pipeline was
    // deleted, rather than re-rendered without a key (which would roll every worker).
    if let Some(pipeline) = inputs.pipeline {
        children.push(Child::Deployment(worker::deployment(&ctx, pipeline)));
    }
    children.push(Child::StatefulSet(media::stateful_set(&ctx)?));
    children.push(Child::Deployment(sip::deployment(&ctx)));
    if inputs.pipeline.is_some() {
        children.push(Child::HorizontalPodAutoscaler(worker::autoscaler(&ctx)));
    }
    children.push(Child::PodDisruptionBudget(worker::disruption_budget(&ctx)));
    children.push(Child::PodDisruptionBudget(media::disruption_budget(&ctx)));
    Ok(children)
}

/// Annotation on every applied child: the hash of the object as rendered (without this
/// annotation). A restarted operator or a new leader reads it from its watches and skips
/// re-applying children that are already as it would render them.
pub const RENDERED_HASH_ANNOTATION: &str = "callfleet.dev/rendered-hash";

/// The rendered hash of the generated call-token Secret: its content is random, and only its
/// existence matters.
pub const GENERATED_TOKEN_HASH: u64 = 0;

/// Pure: the [`RENDERED_HASH_ANNOTATION`] of a live object, if it carries a valid one.
pub fn rendered_hash_of(meta: &ObjectMeta) -> Option<u64> {
    let value = meta.annotations.as_ref()?.get(RENDERED_HASH_ANNOTATION)?;
    u64::from_str_radix(value, 16).ok()
}

impl Child {
    fn meta(&self) -> &ObjectMeta {
        match self {
            Child::ConfigMap(o) => &o.metadata,
            Child::Secret(o) => &o.metadata,
            Child::Service(o) => &o.metadata,
            Child::Deployment(o) => &o.metadata,
            Child::StatefulSet(o) => &o.metadata,
            Child::HorizontalPodAutoscaler(o) => &o.metadata,
            Child::PodDisruptionBudget(o) => &o.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Child::ConfigMap(o) => &mut o.metadata,
            Child::Secret(o) => &mut o.metadata,
            Child::Service(o) => &mut o.metadata,
            Child::Deployment(o) => &mut o.metadata,
            Child::StatefulSet(o) => &mut o.metadata,
            Child::HorizontalPodAutoscaler(o) => &mut o.metadata,
            Child::PodDisruptionBudget(o) => &mut o.metadata,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// Hashes the object as rendered and records the hash in [`RENDERED_HASH_ANNOTATION`];
    /// returns it. The generated call-token Secret takes [`GENERATED_TOKEN_HASH`] instead.
    pub fn stamp_rendered_hash(&mut self) -> Result<u64, RenderError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&self.to_value()?.to_string(), &mut h);
        let hash = std::hash::Hasher::finish(&h);
        self.annotate_rendered_hash(hash);
        Ok(hash)
    }

    /// Sets [`RENDERED_HASH_ANNOTATION`].
    pub fn annotate_rendered_hash(&mut self, hash: u64) {
        self.meta_mut()
            .annotations
            .get_or_insert_with(Default::default)
            .insert(RENDERED_HASH_ANNOTATION.into(), format!("{hash:016x}"));
    }

    /// The Kubernetes kind, e.g. `Deployment`.
    pub fn kind(&self) -> &'static str {
        match self {
            Child::ConfigMap(_) => "ConfigMap",
            Child::Secret(_) => "Secret",
            Child::Service(_) => "Service",
            Child::Deployment(_) => "Deployment",
            Child::StatefulSet(_) => "StatefulSet",
            Child::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Child::PodDisruptionBudget(_) => "PodDisruptionBudget",
        }
    }

    /// Group, version, kind and plural, for `Api::<DynamicObject>`.
    pub fn api_resource(&self) -> ApiResource {
        match self {
            Child::ConfigMap(_) => ApiResource::erase::<ConfigMap>(&()),
            Child::Secret(_) => ApiResource::erase::<Secret>(&()),
            Child::Service(_) => ApiResource::erase::<Service>(&()),
            Child::Deployment(_) => ApiResource::erase::<Deployment>(&()),
            Child::StatefulSet(_) => ApiResource::erase::<StatefulSet>(&()),
            Child::HorizontalPodAutoscaler(_) => ApiResource::erase::<HorizontalPodAutoscaler>(&()),
            Child::PodDisruptionBudget(_) => ApiResource::erase::<PodDisruptionBudget>(&()),
        }
    }

    /// `apiVersion`, e.g. `apps/v1`.
    pub fn api_version(&self) -> String {
        self.api_resource().api_version
    }

    /// The object as JSON, with `apiVersion` and `kind`.
    pub fn to_value(&self) -> Result<Value, RenderError> {
        let result = match self {
            Child::ConfigMap(o) => serde_json::to_value(o),
            Child::Secret(o) => serde_json::to_value(o),
            Child::Service(o) => serde_json::to_value(o),
            Child::Deployment(o) => serde_json::to_value(o),
            Child::StatefulSet(o) => serde_json::to_value(o),
            Child::HorizontalPodAutoscaler(o) => serde_json::to_value(o),
            Child::PodDisruptionBudget(o) => serde_json::to_value(o),
        };
        result.map_err(|source| RenderError::Serialize {
            kind: self.kind(),
            name: self.name().to_owned(),
            source,
        })
    }

    /// Everything server-side apply through the dynamic API needs.
    pub fn to_apply_object(&self) -> Result<ApplyObject, RenderError> {
        Ok(ApplyObject {
            api_resource: self.api_resource(),
            name: self.name().to_owned(),
            value: self.to_value()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fixtures::{self, NAME, NAMESPACE, UID, call_cluster, find, kinds_and_names};
    use super::*;

    fn names(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_render_every_child_in_apply_order() {
        let children = fixtures::render(&call_cluster(json!({})));
        assert_eq!(
            kinds_and_names(&children),
            names(&[
                ("ConfigMap", "support-pipeline"),
                ("ConfigMap", "support-media-config"),
                ("ConfigMap", "support-sip-config"),
                ("Service", "support-worker"),
                ("Service", "support-media"),
                ("Service", "support-sip"),
                ("Deployment", "support-worker"),
                ("StatefulSet", "support-media"),
                ("Deployment", "support-sip"),
                ("HorizontalPodAutoscaler", "support-worker"),
                ("PodDisruptionBudget", "support-worker"),
                ("PodDisruptionBudget", "support-media"),
            ])
        );
    }

    #[test]
    fn every_child_is_owned_by_the_call_cluster() {
        let pipeline = fixtures::pipeline(1, "hi");
        let bytes = [7u8; 32];
        let children = render_call_cluster(
            &call_cluster(json!({})),
            &RenderInputs {
                pipeline: Some(&pipeline),
                new_token_secret: Some(&bytes),
                ..Default::default()
            },
        )
        .unwrap();
        for child in &children {
            let value = child.to_value().unwrap();
            let meta = &value["metadata"];
            assert_eq!(meta["namespace"], NAMESPACE, "{}", child.name());
            assert_eq!(
                meta["ownerReferences"],
                json!([{
                    "apiVersion": "callfleet.dev/v1alpha1",
                    "kind": "CallCluster",
                    "name": NAME,
                    "uid": UID,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }]),
                "{} {}",
                child.kind(),
                child.name()
            );
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], NAME);
            assert_eq!(
                meta["labels"]["app.kubernetes.io/managed-by"],
                "callfleet-operator"
            );
            assert_eq!(meta["labels"]["callfleet.dev/callcluster"], NAME);
        }
    }

    #[test]
    fn without_a_pipeline_workers_are_left_alone() {
        let children =
            render_call_cluster(&call_cluster(json!({})), &RenderInputs::default()).unwrap();
        let rendered = kinds_and_names(&children);
        for absent in [
            ("ConfigMap", "support-pipeline"),
            ("Deployment", "support-worker"),
            ("HorizontalPodAutoscaler", "support-worker"),
        ] {
            assert!(
                !rendered.contains(&(absent.0.to_owned(), absent.1.to_owned())),
                "{absent:?} rendered without a pipeline"
            );
        }
        find(&children, "StatefulSet", "support-media");
        find(&children, "Deployment", "support-sip");
        find(&children, "Service", "support-worker");
    }

    #[test]
    fn token_secret_only_when_asked_and_not_user_provided() {
        let bytes = [1u8; 32];
        let inputs = RenderInputs {
            new_token_secret: Some(&bytes),
            ..Default::default()
        };
        let generated = render_call_cluster(&call_cluster(json!({})), &inputs).unwrap();
        find(&generated, "Secret", "support-call-token");

        let existing =
            render_call_cluster(&call_cluster(json!({})), &RenderInputs::default()).unwrap();
        assert!(existing.iter().all(|c| c.kind() != "Secret"));

        let user = call_cluster(json!({"auth": {"tokenSecretRef": {"name": "mine"}}}));
        let user = render_call_cluster(&user, &inputs).unwrap();
        assert!(user.iter().all(|c| c.kind() != "Secret"));
    }

    #[test]
    fn apply_objects_carry_api_version_kind_and_plural() {
        let children = fixtures::render(&call_cluster(json!({})));
        let hpa = find(&children, "HorizontalPodAutoscaler", "support-worker")
            .to_apply_object()
            .unwrap();
        assert_eq!(hpa.api_resource.api_version, "autoscaling/v2");
        assert_eq!(hpa.api_resource.plural, "horizontalpodautoscalers");
        assert_eq!(hpa.value["apiVersion"], "autoscaling/v2");
        assert_eq!(hpa.value["kind"], "HorizontalPodAutoscaler");
        assert_eq!(hpa.name, "support-worker");
        let sts = find(&children, "StatefulSet", "support-media");
        assert_eq!(sts.api_version(), "apps/v1");
        let pdb = find(&children, "PodDisruptionBudget", "support-media");
        assert_eq!(pdb.api_version(), "policy/v1");
    }

    #[test]
    fn objects_that_bypassed_the_schema_get_clear_errors() {
        let mut cc = call_cluster(json!({}));
        cc.metadata.uid = None;
        assert!(matches!(
            render_call_cluster(&cc, &RenderInputs::default()),
            Err(RenderError::MissingMetadata("uid"))
        ));

        let mut cc = call_cluster(json!({}));
        cc.metadata.name = Some("Support_Line".into());
        let err = render_call_cluster(&cc, &RenderInputs::default()).unwrap_err();
        assert!(err.to_string().contains("Support_Line"), "{err}");

        let mut cc = call_cluster(json!({}));
        cc.metadata.name = Some("a".repeat(41));
        assert!(matches!(
            render_call_cluster(&cc, &RenderInputs::default()),
            Err(RenderError::InvalidName { .. })
        ));

        let cc = call_cluster(json!({"media": {"rtpPortRange": {"start": 20001, "end": 30000}}}));
        let err = render_call_cluster(&cc, &RenderInputs::default()).unwrap_err();
        assert!(err.to_string().contains("rtpPortRange"), "{err}");
    }

    /// A new AiPipeline generation changes the pipeline ConfigMap and nothing else: no worker
    /// restarts, no dropped calls.
    #[test]
    fn pipeline_change_only_touches_the_pipeline_config_map() {
        let cc = call_cluster(json!({}));
        let render_with = |generation, prompt| {
            let pipeline = fixtures::pipeline(generation, prompt);
            render_call_cluster(
                &cc,
                &RenderInputs {
                    pipeline: Some(&pipeline),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let before = render_with(7, "Be brief.");
        let after = render_with(8, "Be very brief and polite.");
        assert_eq!(before.len(), after.len());
        for (old, new) in before.iter().zip(&after) {
            if old.kind() == "ConfigMap" && old.name() == "support-pipeline" {
                assert_ne!(old, new);
            } else {
                assert_eq!(old, new, "{} {} changed", old.kind(), old.name());
            }
        }
    }

    /// Pod templates carry nothing tied to the operator release (version labels, config hashes),
    /// so an operator upgrade re-applies identical templates and rolls no pod with live calls.
    #[test]
    fn pod_templates_carry_no_release_or_hash_metadata() {
        let children = fixtures::render(&call_cluster(json!({})));
        for child in &children {
            let value = child.to_value().unwrap();
            let template = &value["spec"]["template"]["metadata"];
            if template.is_null() {
                continue;
            }
            let keys: Vec<&String> = template["labels"]
                .as_object()
                .into_iter()
                .chain(template["annotations"].as_object())
                .flat_map(|m| m.keys())
                .collect();
            for key in keys {
                assert!(
                    !key.contains("version") && !key.contains("hash") && !key.contains("checksum"),
                    "{} {} pod template carries {key}",
                    child.kind(),
                    child.name()
                );
            }
            let text = template.to_string();
            assert!(!text.contains(env!("CARGO_PKG_VERSION")), "{text}");
        }
    }

    #[test]
    fn paused_does_not_change_what_would_be_rendered() {
        let running = fixtures::render(&call_cluster(json!({})));
        let paused = fixtures::render(&call_cluster(json!({"paused": true})));
        assert_eq!(running, paused);
    }

    /// The shipped samples parse and render: what users apply first must work.
    #[test]
    fn samples_render() {
        let mut cc: CallCluster =
            serde_yaml::from_str(include_str!("../../../config/samples/callcluster.yaml")).unwrap();
        let pipeline: AiPipeline =
            serde_yaml::from_str(include_str!("../../../config/samples/aipipeline.yaml")).unwrap();
        assert_eq!(
            cc.spec.pipeline_ref.name,
            pipeline.metadata.name.clone().unwrap()
        );
        cc.metadata.namespace = Some("default".into());
        cc.metadata.uid = Some(UID.into());
        let media = &cc.spec.media;
        assert!(
            (media.rtp_port_range.end - media.rtp_port_range.start + 1) / 2
                >= media.max_sessions_per_pod
        );
        let children = render_call_cluster(
            &cc,
            &RenderInputs {
                pipeline: Some(&pipeline),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(children.len(), 12);
    }

    #[test]
    fn rendered_hash_annotation_round_trips() {
        let cc = call_cluster(json!({"pipelineRef": {"name": "p"}}));
        let mut child = fixtures::render(&cc).remove(0);
        child.annotate_rendered_hash(0xdead_beef);
        assert_eq!(rendered_hash_of(child.meta()), Some(0xdead_beef));
        let mut meta = child.meta().clone();
        meta.annotations
            .as_mut()
            .unwrap()
            .insert(RENDERED_HASH_ANNOTATION.into(), "not hex".into());
        assert_eq!(rendered_hash_of(&meta), None);
    }
}
