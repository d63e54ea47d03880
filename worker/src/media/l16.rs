//! L16: signed 16-bit little-endian PCM, the raw format of FreeSWITCH audio fork and of OpenAI's
//! `pcm` speech output.

/// The byte slice has an odd length, so it cannot be whole 16-bit samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("L16 audio must have an even number of bytes, got {0}")]
pub struct OddLength(pub usize);

/// Appends the samples in `bytes` to `out`.
pub fn decode_into(bytes: &[u8], out: &mut Vec<i16>) -> Result<(), OddLength> {
    if !bytes.len().is_multiple_of(2) {
        return Err(OddLength(bytes.len()));
    }
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
    );
    Ok(())
}

/// Appends the little-endian bytes of `samples` to `out`. Written into a resized buffer rather
/// than pushed two bytes at a time, so the loop has no capacity checks and vectorises: a
/// second of audio per turn goes through here on its way to speech-to-text.
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + samples.len() * 2, 0);
    for (pair, s) in out[start..].chunks_exact_mut(2).zip(samples) {
        pair.copy_from_slice(&s.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_little_endian() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN, 0x1234];
        let mut bytes = Vec::new();
        encode_into(&samples, &mut bytes);
        assert_eq!(&bytes[..6], &[0, 0, 1, 0, 0xFF, 0xFF]);
        assert_eq!(&bytes[10..], &[0x34, 0x12]);
        let mut back = Vec::new();
        decode_into(&bytes, &mut back).unwrap();
        assert_eq!(back, samples);
    }

    #[test]
    fn odd_length_is_an_error() {
        let mut out = Vec::new();
        assert_eq!(decode_into(&[1, 2, 3], &mut out), Err(OddLength(3)));
        assert!(out.is_empty());
    }
}
