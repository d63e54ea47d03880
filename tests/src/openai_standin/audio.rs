//! Audio helpers of the stand-in, written independently of the worker's media code so the
//! stand-in is a separate oracle: WAV reading, G.711 µ-law (the classic bias/segment formula),
//! tone synthesis and frame levels.

use std::f64::consts::TAU;
use std::io::Cursor;

/// Reads a mono or multi-channel 16-bit WAV, keeping the first channel.
pub fn read_wav(bytes: &[u8]) -> Result<(Vec<i16>, u32), String> {
    let mut reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(format!(
            "only 16-bit PCM WAV is understood, got {} bits {:?}",
            spec.bits_per_sample, spec.sample_format
        ));
    }
    let channels = usize::from(spec.channels.max(1));
    let samples = reader
        .samples::<i16>()
        .step_by(channels)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((samples, spec.sample_rate))
}

const MULAW_BIAS: i32 = 0x84;

/// G.711 µ-law encoding of one sample.
pub fn mulaw_encode(sample: i16) -> u8 {
    let mut value = i32::from(sample);
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    value = (value + MULAW_BIAS).min(0x7FFF);
    let exponent = (15 - (value as u16).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (value >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// G.711 µ-law decoding of one byte.
pub fn mulaw_decode(code: u8) -> i16 {
    let code = !code;
    let exponent = i32::from((code >> 4) & 0x07);
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS;
    if code & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// A sine tone at `amplitude` (0..1 of full scale).
pub fn tone(frequency_hz: u32, sample_rate: u32, samples: usize, amplitude: f64) -> Vec<i16> {
    let step = TAU * f64::from(frequency_hz) / f64::from(sample_rate.max(1));
    (0..samples)
        .map(|n| ((n as f64 * step).sin() * amplitude * f64::from(i16::MAX)) as i16)
        .collect()
}

/// RMS level of a frame in dBFS (-100 for silence or an empty frame).
pub fn dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -100.0;
    }
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / frame.len() as f64).sqrt() / f64::from(i16::MAX);
    if rms <= 0.0 {
        -100.0
    } else {
        (20.0 * rms.log10()).max(-100.0) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_round_trip_is_close() {
        for sample in [
            -32768i16, -20000, -1000, -100, -1, 0, 1, 100, 1000, 20000, 32767,
        ] {
            let back = mulaw_decode(mulaw_encode(sample));
            let error = (i32::from(back) - i32::from(sample)).abs();
            assert!(
                error <= (i32::from(sample).abs() / 16).max(8),
                "{sample} -> {back}"
            );
        }
        // well-known codes
        assert_eq!(mulaw_encode(0), 0xFF);
        assert_eq!(mulaw_decode(0xFF), 0);
        assert_eq!(mulaw_decode(0x80), 32124);
        assert_eq!(mulaw_decode(0x00), -32124);
    }

    #[test]
    fn levels() {
        assert_eq!(dbfs(&[0; 160]), -100.0);
        let loud = tone(440, 8000, 160, 0.5);
        assert!((dbfs(&loud) + 9.0).abs() < 0.5, "{}", dbfs(&loud));
    }

    #[test]
    fn reads_wav() {
        let mut bytes = Vec::new();
        {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 16_000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::new(Cursor::new(&mut bytes), spec).unwrap();
            for s in [1i16, -2, 3] {
                w.write_sample(s).unwrap();
            }
            w.finalize().unwrap();
        }
        assert_eq!(read_wav(&bytes).unwrap(), (vec![1, -2, 3], 16_000));
        assert!(read_wav(b"not a wav").is_err());
    }
}
