//! WAV headers for recordings: 8 kHz stereo (caller left, assistant right), 16-bit linear PCM or
//! G.711 µ-law. Pure byte layout, so the format is checked by unit tests, not by a player.

/// Recordings are telephone-band: every channel is resampled to this rate.
pub const RATE: u32 = 8_000;
/// Left: the caller. Right: the assistant audio that was sent to the carrier.
pub const CHANNELS: u16 = 2;

/// How samples are stored in the file (`CALLFLEET_RECORDINGS_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Coding {
    /// `wav`: 16-bit little-endian linear PCM.
    #[serde(rename = "wav")]
    L16,
    /// `wavMulaw`: G.711 µ-law, half the size.
    #[serde(rename = "wavMulaw")]
    Mulaw,
}

impl Coding {
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            Coding::L16 => 2,
            Coding::Mulaw => 1,
        }
    }

    /// One sample of silence in this coding (µ-law's zero is 0xFF, not 0x00).
    pub const fn silence(self) -> u8 {
        match self {
            Coding::L16 => 0x00,
            Coding::Mulaw => 0xFF,
        }
    }

    /// Bytes of one stereo frame.
    pub const fn block_align(self) -> usize {
        self.bytes_per_sample() * CHANNELS as usize
    }

    /// Length of the header [`header`] writes.
    pub const fn header_len(self) -> usize {
        match self {
            // RIFF(12) + fmt(8+16) + data(8)
            Coding::L16 => 44,
            // RIFF(12) + fmt(8+18) + fact(8+4) + data(8): non-PCM formats carry cbSize and a
            // fact chunk with the sample count.
            Coding::Mulaw => 58,
        }
    }
}

/// The header for `frames` stereo frames of audio in `coding`. Sizes saturate at the RIFF
/// limit (4 GiB, about 37 hours of L16) rather than wrap.
pub fn header(coding: Coding, frames: u64) -> Vec<u8> {
    let header_len = coding.header_len() as u64;
    let max_data = u64::from(u32::MAX) - header_len;
    let data_len = frames
        .saturating_mul(coding.block_align() as u64)
        .min(max_data);
    let data = data_len as u32;
    let riff = (data_len + header_len - 8) as u32;
    let bits = (coding.bytes_per_sample() * 8) as u16;
    let block_align = coding.block_align() as u16;
    let byte_rate = RATE * u32::from(block_align);
    let mut h = Vec::with_capacity(coding.header_len());
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&riff.to_le_bytes());
    h.extend_from_slice(b"WAVE");
    h.extend_from_slice(b"fmt ");
    let (tag, fmt_len): (u16, u32) = match coding {
        Coding::L16 => (1, 16),
        Coding::Mulaw => (7, 18),
    };
    h.extend_from_slice(&fmt_len.to_le_bytes());
    h.extend_from_slice(&tag.to_le_bytes());
    h.extend_from_slice(&CHANNELS.to_le_bytes());
    h.extend_from_slice(&RATE.to_le_bytes());
    h.extend_from_slice(&byte_rate.to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    if coding == Coding::Mulaw {
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(b"fact");
        h.extend_from_slice(&4u32.to_le_bytes());
        let frames = (data_len / coding.block_align() as u64) as u32;
        h.extend_from_slice(&frames.to_le_bytes());
    }
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    h
}

/// Interleaves two mono channels of coded samples into stereo frames, appending to `out`. The
/// shorter side is padded with silence, so both channels end together.
pub fn interleave(left: &[u8], right: &[u8], coding: Coding, out: &mut Vec<u8>) {
    let bps = coding.bytes_per_sample();
    let frames = left.len().max(right.len()) / bps;
    let silence = [coding.silence(); 2];
    out.reserve(frames * coding.block_align());
    for i in 0..frames {
        let at = i * bps..(i + 1) * bps;
        out.extend_from_slice(left.get(at.clone()).unwrap_or(&silence[..bps]));
        out.extend_from_slice(right.get(at).unwrap_or(&silence[..bps]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    #[test]
    fn l16_header_is_what_readers_expect() {
        let h = header(Coding::L16, 8_000);
        assert_eq!(h.len(), Coding::L16.header_len());
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32_at(&h, 4), 36 + 32_000);
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u32_at(&h, 16), 16);
        assert_eq!(u16_at(&h, 20), 1, "PCM");
        assert_eq!(u16_at(&h, 22), 2, "stereo");
        assert_eq!(u32_at(&h, 24), 8_000);
        assert_eq!(u32_at(&h, 28), 32_000, "byte rate");
        assert_eq!(u16_at(&h, 32), 4, "block align");
        assert_eq!(u16_at(&h, 34), 16, "bits");
        assert_eq!(&h[36..40], b"data");
        assert_eq!(u32_at(&h, 40), 32_000);
    }

    #[test]
    fn l16_header_reads_back_with_hound() {
        let mut bytes = header(Coding::L16, 3);
        interleave(
            &[1, 0, 2, 0, 3, 0],
            &[0xff, 0xff, 0xfe, 0xff, 0xfd, 0xff],
            Coding::L16,
            &mut bytes,
        );
        let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8_000, 16)
        );
        let samples: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(samples, [1, -1, 2, -2, 3, -3]);
    }

    #[test]
    fn mulaw_header_has_cbsize_and_fact() {
        let h = header(Coding::Mulaw, 100);
        assert_eq!(h.len(), 58);
        assert_eq!(u32_at(&h, 4), 50 + 200);
        assert_eq!(u32_at(&h, 16), 18);
        assert_eq!(u16_at(&h, 20), 7, "µ-law");
        assert_eq!(u32_at(&h, 28), 16_000);
        assert_eq!(u16_at(&h, 32), 2);
        assert_eq!(u16_at(&h, 34), 8);
        assert_eq!(u16_at(&h, 36), 0, "cbSize");
        assert_eq!(&h[38..42], b"fact");
        assert_eq!(u32_at(&h, 46), 100);
        assert_eq!(&h[50..54], b"data");
        assert_eq!(u32_at(&h, 54), 200);
    }

    #[test]
    fn sizes_saturate_instead_of_wrapping() {
        let h = header(Coding::L16, u64::MAX / 8);
        assert_eq!(u32_at(&h, 4), u32::MAX - 8);
        assert_eq!(u32_at(&h, 40), u32::MAX - 44);
    }

    #[test]
    fn interleave_pads_the_shorter_channel_with_silence() {
        let mut out = Vec::new();
        interleave(&[1, 2, 3], &[9], Coding::Mulaw, &mut out);
        assert_eq!(out, [1, 9, 2, 0xFF, 3, 0xFF]);
        out.clear();
        interleave(&[], &[1, 0, 2, 0], Coding::L16, &mut out);
        assert_eq!(out, [0, 0, 1, 0, 0, 0, 2, 0]);
        out.clear();
        // A torn last sample (odd byte of L16) is not a sample.
        interleave(&[1, 0, 7], &[], Coding::L16, &mut out);
        assert_eq!(out, [1, 0, 0, 0]);
    }
}
