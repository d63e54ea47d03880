//! callfleet API types (`callfleet.dev/v1alpha1`) shared by the operator and the worker.

pub mod aipipeline;
pub mod pipeline_config;

pub use aipipeline::{AiPipeline, AiPipelineSpec, AiPipelineStatus, PipelineMode};
pub use pipeline_config::PipelineConfig;
