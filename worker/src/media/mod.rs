//! Audio on the media path: G.711 µ-law, L16, resampling and voice activity detection.
//!
//! Everything here is synchronous and allocation-light, because it runs for every 20 ms frame
//! of every call.

pub mod format;
pub mod l16;
pub mod mulaw;
pub mod resample;
pub mod vad;

pub use format::{AudioEncoding, AudioFormat};
pub use resample::{ResampleError, StreamResampler};
pub use vad::{Vad, VadEvent};
