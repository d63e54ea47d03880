//! Test support for callfleet's end-to-end tests: a real local Kubernetes control plane
//! (`cluster`), a local OpenAI-compatible server (`openai_standin`, over TLS with `tls`) and a
//! real S3-compatible server (`s3proxy`).

pub mod arrival;
pub mod cluster;
pub mod loadgen;
pub mod openai_standin;
pub mod recv_floor;
pub mod s3proxy;
pub mod tls;
