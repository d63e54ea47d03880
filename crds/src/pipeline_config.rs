//! The pipeline contract between operator and worker.
//!
//! The operator writes one [`PipelineConfig`] as JSON under [`PIPELINE_CONFIG_KEY`] in the
//! CallCluster's pipeline ConfigMap; workers mount that ConfigMap as a directory (never
//! `subPath`, so the kubelet's atomic symlink swap reaches running pods) and reload it when the
//! file changes. New calls take the new version; calls in progress keep the one they started
//! with. The API key is never in the ConfigMap: it is mounted from the Secret named by
//! `spec.provider.apiKeySecretRef` at [`PROVIDER_API_KEY_PATH`].

use serde::{Deserialize, Serialize};

use crate::AiPipelineSpec;

/// ConfigMap key holding the JSON-encoded [`PipelineConfig`].
pub const PIPELINE_CONFIG_KEY: &str = "pipeline.json";
/// Directory where workers mount the pipeline ConfigMap.
pub const PIPELINE_CONFIG_DIR: &str = "/etc/callfleet/pipeline";
/// File the worker reads the provider API key from (mounted from the AiPipeline's Secret).
pub const PROVIDER_API_KEY_PATH: &str = "/etc/callfleet/provider/api-key";

/// One version of a pipeline as handed to workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineConfig {
    /// AiPipeline name.
    pub name: String,
    /// `metadata.generation` of the AiPipeline this was rendered from; workers log and expose it
    /// so operators can see which version a call used.
    pub generation: i64,
    /// The AiPipeline spec.
    pub spec: AiPipelineSpec,
}
