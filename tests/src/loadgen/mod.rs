//! A load generator for the call worker (a benchmark tool, not a test): N simulated calls from
//! one process, each a single tokio task (spread over one single-threaded runtime per core, so a
//! call's ticks stay on one thread) sending 20 ms media frames on schedule with a
//! speech/silence pattern, acknowledging marks like a carrier, and measuring late frames, turns
//! answered, time to first audio and the pipeline's overhead. `run` drives a whole run;
//! `benches/worker-load` runs it against a release worker and the OpenAI stand-in.

pub mod call;
pub mod config;
pub mod pattern;
pub mod procstat;
pub mod report;
pub mod run;
pub mod stats;
pub mod timing;
pub mod wire;

pub use config::LoadConfig;
pub use report::Report;
pub use run::run;
