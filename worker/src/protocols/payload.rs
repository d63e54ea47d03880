//! Base64 audio payloads shared by the JSON protocols.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::ProtocolError;
use crate::media::{AudioEncoding, AudioFormat, l16, mulaw};

/// Decodes a base64 payload of `format` audio into linear samples.
pub fn decode_audio(payload: &str, format: AudioFormat) -> Result<Vec<i16>, ProtocolError> {
    decode_audio_with(payload, format, &mut Vec::new())
}

/// As [`decode_audio`], reusing `scratch` for the base64 bytes (one allocation per frame
/// instead of two on the 50-frames-a-second path).
pub fn decode_audio_with(
    payload: &str,
    format: AudioFormat,
    scratch: &mut Vec<u8>,
) -> Result<Vec<i16>, ProtocolError> {
    scratch.clear();
    STANDARD
        .decode_vec(payload.as_bytes(), scratch)
        .map_err(|_| ProtocolError::BadBase64)?;
    decode_raw(scratch, format)
}

/// Decodes raw wire bytes of `format` audio into linear samples.
pub fn decode_raw(bytes: &[u8], format: AudioFormat) -> Result<Vec<i16>, ProtocolError> {
    let mut samples = Vec::with_capacity(bytes.len() / format.bytes_per_sample());
    match format.encoding {
        AudioEncoding::Mulaw => mulaw::decode_into(bytes, &mut samples),
        AudioEncoding::L16 => {
            l16::decode_into(bytes, &mut samples).map_err(|e| ProtocolError::OddLength(e.0))?
        }
    }
    Ok(samples)
}

/// Encodes linear samples as `format` wire bytes.
pub fn encode_raw(samples: &[i16], format: AudioFormat) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(samples.len() * format.bytes_per_sample());
    match format.encoding {
        AudioEncoding::Mulaw => mulaw::encode_into(samples, &mut bytes),
        AudioEncoding::L16 => l16::encode_into(samples, &mut bytes),
    }
    bytes
}

/// Encodes linear samples as base64 `format` audio.
pub fn encode_audio(samples: &[i16], format: AudioFormat) -> String {
    STANDARD.encode(encode_raw(samples, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_encodings() {
        let samples = [0i16, 1000, -1000, 32124];
        let mu = encode_audio(&samples, AudioFormat::MULAW_8K);
        assert_eq!(
            decode_audio(&mu, AudioFormat::MULAW_8K).unwrap(),
            [0, 988, -988, 32124]
        );
        let pcm = encode_audio(&samples, AudioFormat::l16(16_000));
        assert_eq!(
            decode_audio(&pcm, AudioFormat::l16(16_000)).unwrap(),
            samples
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            decode_audio("%%%", AudioFormat::MULAW_8K),
            Err(ProtocolError::BadBase64)
        );
        assert_eq!(
            decode_audio("AAAA", AudioFormat::l16(8_000)),
            Err(ProtocolError::OddLength(3))
        );
    }
}
