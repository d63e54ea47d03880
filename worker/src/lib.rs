//! callfleet call worker: one stateful WebSocket session per call and the streaming AI voice
//! pipeline behind it. The binary (`main.rs`) is a thin shell; everything reusable (codecs,
//! protocol parsers, token minting) lives here so the load generator and smoke-test client can
//! use the same code.

pub mod admission;
pub mod config;
pub mod context;
pub mod media;
pub mod media_thread;
pub mod metrics;
pub mod protocols;
pub mod providers;
pub mod recording;
pub mod server;
pub mod session;
pub mod turn_runtime;
