//! WAV encoding of an utterance for the transcription upload: a 44-byte RIFF header in front of
//! the samples, which every OpenAI-compatible server accepts.

/// The data length written into a WAV whose length is not known when its header is sent (an
/// utterance uploaded while the caller is still speaking): the largest size, which decoders read
/// as "until the end of the file".
pub const UNKNOWN_LENGTH: u32 = u32::MAX;

/// Encodes mono s16le PCM as a WAV file.
pub fn encode_wav(samples: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(&wav_header(sample_rate, data_len));
    crate::media::l16::encode_into(samples, &mut out);
    out
}

/// The 44-byte header of a mono s16le WAV with `data_len` bytes of samples
/// ([`UNKNOWN_LENGTH`] when they are still to come).
pub fn wav_header(sample_rate: u32, data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&(sample_rate * 2).to_le_bytes()); // byte rate
    h[32..34].copy_from_slice(&2u16.to_le_bytes()); // block align
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_samples() {
        let wav = encode_wav(&[1, -2, 0x7fff], 16_000);
        assert_eq!(wav.len(), 44 + 6);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([wav[4], wav[5], wav[6], wav[7]]), 36 + 6);
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([wav[20], wav[21]]), 1);
        assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1);
        assert_eq!(
            u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]),
            16_000
        );
        assert_eq!(
            u32::from_le_bytes([wav[28], wav[29], wav[30], wav[31]]),
            32_000
        );
        assert_eq!(&wav[36..40], b"data");
        assert_eq!(u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]), 6);
        assert_eq!(&wav[44..], &[1, 0, 0xfe, 0xff, 0xff, 0x7f]);
    }

    #[test]
    fn unknown_length_saturates() {
        let h = wav_header(8_000, UNKNOWN_LENGTH);
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), u32::MAX);
        assert_eq!(u32::from_le_bytes([h[40], h[41], h[42], h[43]]), u32::MAX);
        let whole = encode_wav(&[], 8_000);
        assert_eq!(&h[8..40], &whole[8..40], "only the sizes differ");
    }

    #[test]
    fn empty_utterance_is_a_valid_file() {
        let wav = encode_wav(&[], 8_000);
        assert_eq!(wav.len(), 44);
        assert_eq!(u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]), 0);
    }
}
