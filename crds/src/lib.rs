//! callfleet API types (`callfleet.dev/v1alpha1`) shared by the operator and the worker.

pub mod aipipeline;
pub mod callcluster;
pub mod conditions;
pub mod crdgen;
pub mod pipeline_config;
pub mod schema;

pub use aipipeline::{AiPipeline, AiPipelineSpec, AiPipelineStatus, PipelineMode};
pub use callcluster::{CallCluster, CallClusterSpec, CallClusterStatus};
pub use pipeline_config::PipelineConfig;
