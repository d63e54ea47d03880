//! Test support for callfleet's end-to-end tests: a real local Kubernetes control plane
//! (`cluster`) and a local OpenAI-compatible server (`openai_standin`).

pub mod cluster;
pub mod loadgen;
pub mod openai_standin;
