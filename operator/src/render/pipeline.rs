//! The pipeline ConfigMap: the AiPipeline as the worker reads it (`docs/contracts.md`,
//! "Pipeline configuration"). Workers mount it as a directory and hot-reload it, so updating
//! this ConfigMap never restarts a worker.

use callfleet_crds::pipeline_config::PIPELINE_CONFIG_KEY;
use callfleet_crds::{AiPipeline, PipelineConfig};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::RenderError;
use super::common::{Component, Context, names, string_map};

/// Annotation recording which AiPipeline generation the ConfigMap holds, for humans and tests.
/// It is on the ConfigMap only, never on pod templates.
pub const PIPELINE_GENERATION_ANNOTATION: &str = "callfleet.dev/pipeline-generation";

/// `<name>-pipeline` with `pipeline.json` = [`PipelineConfig`] of `pipeline`.
pub fn config_map(ctx: &Context<'_>, pipeline: &AiPipeline) -> Result<ConfigMap, RenderError> {
    let config = PipelineConfig {
        name: pipeline.name_any(),
        generation: pipeline.metadata.generation.unwrap_or(0),
        spec: pipeline.spec.clone(),
    };
    let name = names::pipeline(ctx.name);
    let json = serde_json::to_string_pretty(&config).map_err(|source| RenderError::Serialize {
        kind: "ConfigMap",
        name: name.clone(),
        source,
    })?;
    let mut meta = ctx.meta(name, Component::Pipeline);
    meta.annotations = Some(string_map([(
        PIPELINE_GENERATION_ANNOTATION,
        config.generation.to_string(),
    )]));
    Ok(ConfigMap {
        metadata: meta,
        data: Some(string_map([(PIPELINE_CONFIG_KEY, json)])),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixtures::{call_cluster, pipeline};
    use super::*;

    #[test]
    fn config_map_holds_the_worker_contract() {
        let cc = call_cluster(json!({}));
        let ctx = Context::new(&cc).unwrap();
        let ai = pipeline(12, "Answer in French.");
        let cm = config_map(&ctx, &ai).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("support-pipeline"));
        assert_eq!(
            cm.metadata.annotations.unwrap()[PIPELINE_GENERATION_ANNOTATION],
            "12"
        );
        let data = cm.data.unwrap();
        assert_eq!(data.len(), 1);
        let config: PipelineConfig = serde_json::from_str(&data[PIPELINE_CONFIG_KEY]).unwrap();
        assert_eq!(config.name, "support-pipeline");
        assert_eq!(config.generation, 12);
        assert_eq!(config.spec, ai.spec);
        assert!(
            !data[PIPELINE_CONFIG_KEY].contains("sk-"),
            "no key material in the ConfigMap"
        );
    }
}
