//! AiPipeline controller: status only. An AiPipeline owns no objects; the CallClusters that use
//! it render it into their pipeline ConfigMaps. Here we report whether it can work (its API-key
//! Secret exists) and who uses it.

use std::sync::Arc;

use callfleet_crds::{
    AiPipeline, AiPipelineStatus,
    conditions::{self, READY},
};
use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use super::{
    context::{Context, MANAGER, namespace_of},
    error::{Error, Result},
    secrets,
};
use crate::render::status::ai_pipeline_status;

pub const KIND: &str = "AiPipeline";

/// Rechecks periodically so a missed event (e.g. a CallCluster deleted during a watch restart)
/// never leaves `usedBy` stale for long.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

/// Names of the CallClusters in the pipeline's namespace that reference it.
fn used_by(ctx: &Context, namespace: &str, name: &str) -> Vec<String> {
    ctx.call_clusters
        .state()
        .iter()
        .filter(|cc| {
            cc.namespace().as_deref() == Some(namespace)
                && cc.spec.pipeline_ref.name == name
                && cc.meta().deletion_timestamp.is_none()
        })
        .map(|cc| cc.name_any())
        .collect()
}

#[tracing::instrument(skip_all, fields(kind = KIND, name = %pipeline.name_any(), namespace = pipeline.namespace().unwrap_or_default()))]
pub async fn reconcile(pipeline: Arc<AiPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let namespace = namespace_of(KIND, pipeline.as_ref())?;
    let name = pipeline.name_any();
    let key_ref = &pipeline.spec.provider.api_key_secret_ref;
    let secret_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let api_key = secrets::key_state(&secret_api, &key_ref.name, &key_ref.key).await?;

    let now = Time(Timestamp::now());
    let status = ai_pipeline_status(&pipeline, api_key, used_by(&ctx, &namespace, &name), &now);
    if pipeline.status.as_ref() != Some(&status) {
        let api: Api<AiPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": AiPipeline::api_version(&()),
            "kind": AiPipeline::kind(&()),
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::Status {
            name: name.clone(),
            source,
        })?;
        publish_transition(&ctx, &pipeline, &status).await;
    }
    ctx.reset_backoff(KIND, pipeline.as_ref());
    Ok(Action::requeue(RESYNC))
}

/// An Event when readiness changes (or is first known), not on every status write.
async fn publish_transition(ctx: &Context, pipeline: &AiPipeline, status: &AiPipelineStatus) {
    let Some(ready) = conditions::find(&status.conditions, READY) else {
        return;
    };
    let before = pipeline
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY));
    if before.is_some_and(|b| b.status == ready.status && b.reason == ready.reason) {
        return;
    }
    let type_ = if ready.status == "True" {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.event(
        pipeline,
        type_,
        &ready.reason,
        "Validate",
        ready.message.clone(),
    )
    .await;
}

pub fn error_policy(pipeline: Arc<AiPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_error(KIND, pipeline.as_ref(), error)
}

/// AiPipelines in `namespace` whose API key lives in Secret `secret`.
pub fn pipelines_using_secret(
    pipelines: &[Arc<AiPipeline>],
    namespace: &str,
    secret: &str,
) -> Vec<Arc<AiPipeline>> {
    pipelines
        .iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace)
                && p.spec.provider.api_key_secret_ref.name == secret
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use callfleet_crds::AiPipelineSpec;

    fn pipeline() -> AiPipeline {
        let spec: AiPipelineSpec = serde_json::from_value(json!({
            "provider": {"apiKeySecretRef": {"name": "openai"}}
        }))
        .unwrap();
        let mut p = AiPipeline::new("assistant", spec);
        p.metadata.namespace = Some("calls".into());
        p
    }

    #[test]
    fn maps_secrets_to_pipelines() {
        let p = Arc::new(pipeline());
        let all = vec![p.clone()];
        assert_eq!(pipelines_using_secret(&all, "calls", "openai").len(), 1);
        assert!(pipelines_using_secret(&all, "other", "openai").is_empty());
        assert!(pipelines_using_secret(&all, "calls", "nope").is_empty());
    }
}
