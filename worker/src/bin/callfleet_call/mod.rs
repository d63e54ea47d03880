//! `callfleet-call`: places one call to a worker from a WAV file over any of the three
//! protocols, streams it in real time, acknowledges marks like a carrier, writes the reply
//! audio and transcript, and prints per-turn latency. A smoke test for a deployment.

pub mod args;
pub mod audio_file;
pub mod carrier;
pub mod error;
pub mod session;
pub mod timeline;
