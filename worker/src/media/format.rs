//! The audio formats carriers speak, and the frame arithmetic that goes with them.

use std::time::Duration;

/// Telephony frame length: every carrier here sends and expects 20 ms frames.
pub const FRAME: Duration = Duration::from_millis(20);

/// Sample rates the worker accepts from carriers and resamples between.
pub const SUPPORTED_RATES: [u32; 3] = [8_000, 16_000, 24_000];

/// How samples are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioEncoding {
    /// G.711 µ-law, one byte per sample.
    Mulaw,
    /// Signed 16-bit little-endian PCM.
    L16,
}

/// Encoding plus sample rate of one direction of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub encoding: AudioEncoding,
    pub sample_rate: u32,
}

impl AudioFormat {
    /// Twilio and the seed protocol's default: µ-law at 8 kHz.
    pub const MULAW_8K: AudioFormat = AudioFormat {
        encoding: AudioEncoding::Mulaw,
        sample_rate: 8_000,
    };

    /// L16 at the given rate.
    pub const fn l16(sample_rate: u32) -> Self {
        Self {
            encoding: AudioEncoding::L16,
            sample_rate,
        }
    }

    /// Samples in one 20 ms frame.
    pub const fn samples_per_frame(&self) -> usize {
        (self.sample_rate / 50) as usize
    }

    /// Bytes in one 20 ms frame on the wire.
    pub const fn bytes_per_frame(&self) -> usize {
        self.samples_per_frame() * self.bytes_per_sample()
    }

    /// Bytes per sample on the wire.
    pub const fn bytes_per_sample(&self) -> usize {
        match self.encoding {
            AudioEncoding::Mulaw => 1,
            AudioEncoding::L16 => 2,
        }
    }

    /// How long `samples` samples last at this rate.
    pub fn duration_of(&self, samples: usize) -> Duration {
        Duration::from_micros(samples as u64 * 1_000_000 / u64::from(self.sample_rate.max(1)))
    }
}

/// Whether the worker can take audio at this rate.
pub fn is_supported_rate(rate: u32) -> bool {
    SUPPORTED_RATES.contains(&rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes() {
        assert_eq!(AudioFormat::MULAW_8K.bytes_per_frame(), 160);
        assert_eq!(AudioFormat::l16(16_000).bytes_per_frame(), 640);
        assert_eq!(AudioFormat::l16(8_000).samples_per_frame(), 160);
        assert_eq!(
            AudioFormat::MULAW_8K.duration_of(8_000),
            Duration::from_secs(1)
        );
        assert!(is_supported_rate(16_000));
        assert!(!is_supported_rate(44_100));
    }
}
