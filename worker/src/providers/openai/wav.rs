//! WAV encoding of an utterance for the transcription upload: a RIFF header in front of the
//! samples, 16-bit PCM (which every OpenAI-compatible server accepts) or G.711 µ-law (half the
//! bytes, for callers whose carrier sent µ-law).

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

/// Encodes mono samples that are all µ-law values (decoded from a µ-law carrier) as a G.711
/// µ-law WAV (format 7, 8 bits per sample): re-encoding them gives back the carrier's bytes, so
/// nothing is lost. The `fmt ` chunk carries its extension size and a `fact` chunk the sample
/// count, as the WAV specification asks of formats other than PCM.
pub fn encode_mulaw_wav(samples: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len()).unwrap_or(u32::MAX - 50);
    let mut out = Vec::with_capacity(MULAW_HEADER_LEN + samples.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&data_len.saturating_add(50).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&18u32.to_le_bytes()); // fmt chunk size, with cbSize
    out.extend_from_slice(&7u16.to_le_bytes()); // WAVE_FORMAT_MULAW
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes()); // byte rate: one byte per sample
    out.extend_from_slice(&1u16.to_le_bytes()); // block align
    out.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(&0u16.to_le_bytes()); // cbSize: no extension
    out.extend_from_slice(b"fact");
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&data_len.to_le_bytes()); // samples per channel
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    crate::media::mulaw::encode_into(samples, &mut out);
    out
}

/// Bytes in front of the samples of [`encode_mulaw_wav`]'s file.
const MULAW_HEADER_LEN: usize = 58;

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
    fn mulaw_file_layout() {
        let samples = [0i16, 8_031, -8_031, 32_124];
        let wav = encode_mulaw_wav(&samples, 8_000);
        let u16_at = |i: usize| u16::from_le_bytes([wav[i], wav[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([wav[i], wav[i + 1], wav[i + 2], wav[i + 3]]);
        assert_eq!(wav.len(), MULAW_HEADER_LEN + 4);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32_at(4) as usize, wav.len() - 8);
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(u32_at(16), 18);
        assert_eq!((u16_at(20), u16_at(22)), (7, 1), "µ-law, mono");
        assert_eq!((u32_at(24), u32_at(28)), (8_000, 8_000));
        assert_eq!((u16_at(32), u16_at(34), u16_at(36)), (1, 8, 0));
        assert_eq!(&wav[38..42], b"fact");
        assert_eq!((u32_at(42), u32_at(46)), (4, 4));
        assert_eq!(&wav[50..54], b"data");
        assert_eq!(u32_at(54), 4);
        let codes: Vec<u8> = samples
            .iter()
            .map(|&s| crate::media::mulaw::encode_sample(s))
            .collect();
        assert_eq!(&wav[MULAW_HEADER_LEN..], &codes[..]);
    }

    #[test]
    fn mulaw_upload_of_mulaw_samples_is_lossless() {
        use crate::media::mulaw::decode_sample;
        let samples: Vec<i16> = (0..=255u8).map(decode_sample).collect();
        let wav = encode_mulaw_wav(&samples, 8_000);
        let back: Vec<i16> = wav[MULAW_HEADER_LEN..]
            .iter()
            .map(|&c| decode_sample(c))
            .collect();
        assert_eq!(back, samples, "every µ-law value survives the upload");
    }

    #[test]
    fn empty_utterance_is_a_valid_file() {
        let wav = encode_wav(&[], 8_000);
        assert_eq!(wav.len(), 44);
        assert_eq!(u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]), 0);
    }
}
