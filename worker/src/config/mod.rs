//! Worker configuration: the command line and env vars of `docs/contracts.md`, and the
//! hot-reloaded pipeline config.

pub mod cli;
pub mod pipeline;

pub use cli::{Cli, Command, LogFormat, MediaRuntime, RecordingFormat, ServeArgs, TokenArgs};
pub use pipeline::{PipelineError, PipelineSource, PipelineVersion, parse_pipeline};
