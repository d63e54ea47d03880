//! Audio helpers of the stand-in, written independently of the worker's media code so the
//! stand-in is a separate oracle: WAV reading, G.711 µ-law (the classic bias/segment formula),
//! tone synthesis and frame levels.

use std::f64::consts::TAU;
use std::io::Cursor;

/// The data length a WAV header carries when the file was written before its length was known
/// (an upload made while the caller spoke): decoders such as ffmpeg, and OpenAI's, read it as
/// "to the end of the file". Any other length must match the file.
const UNKNOWN_LENGTH: u32 = u32::MAX;

/// The `fmt ` format tag of G.711 µ-law.
const WAVE_FORMAT_MULAW: u16 = 7;

/// Whether `bytes` is a WAV of G.711 µ-law samples (format tag 7).
pub fn is_mulaw_wav(bytes: &[u8]) -> bool {
    fmt_chunk(bytes).is_some_and(|fmt| u16::from_le_bytes([fmt[0], fmt[1]]) == WAVE_FORMAT_MULAW)
}

/// Reads a mono or multi-channel WAV of 16-bit PCM or 8-bit G.711 µ-law, keeping the first
/// channel.
pub fn read_wav(bytes: &[u8]) -> Result<(Vec<i16>, u32), String> {
    if is_mulaw_wav(bytes) {
        return read_mulaw_wav(bytes);
    }
    // hound refuses the unknown length (not a whole number of samples): it reads a copy of
    // the header that states the length the upload turned out to have.
    let patched = streamed_header(bytes);
    let header: &[u8] = match &patched {
        Some(header) => header,
        None => bytes,
    };
    let reader = hound::WavReader::new(Cursor::new(header)).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(format!(
            "only 16-bit PCM WAV is understood, got {} bits {:?}",
            spec.bits_per_sample, spec.sample_format
        ));
    }
    let channels = usize::from(spec.channels.max(1));
    // hound has checked the header and stopped at the data: take it as it is (its per-sample
    // reader was a tenth of the stand-in's CPU under load).
    let frames = reader.duration() as usize;
    let start = reader.into_inner().position() as usize;
    let data = bytes
        .get(start..)
        .ok_or_else(|| "data chunk past the end of the file".to_owned())?;
    let frame_bytes = 2 * channels;
    if data.len() < frames * frame_bytes {
        return Err(format!(
            "data chunk holds {} bytes, its header says {}",
            data.len(),
            frames * frame_bytes
        ));
    }
    let samples = data[..frames * frame_bytes]
        .chunks_exact(frame_bytes)
        .map(|frame| i16::from_le_bytes([frame[0], frame[1]]))
        .collect();
    Ok((samples, spec.sample_rate))
}

/// A µ-law WAV (hound reads only PCM and float): the `fmt ` fields it needs, then the `data`
/// chunk's bytes, one per sample and channel.
fn read_mulaw_wav(bytes: &[u8]) -> Result<(Vec<i16>, u32), String> {
    let fmt = fmt_chunk(bytes).ok_or("no fmt chunk")?;
    if fmt.len() < 16 {
        return Err("fmt chunk too short".into());
    }
    let channels = usize::from(u16::from_le_bytes([fmt[2], fmt[3]]).max(1));
    let sample_rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
    if bits != 8 {
        return Err(format!(
            "a µ-law WAV has 8 bits per sample, this one {bits}"
        ));
    }
    let (start, len) = chunk(bytes, b"data").ok_or("no data chunk")?;
    let data = &bytes[start..];
    let len = if len == UNKNOWN_LENGTH as usize {
        data.len()
    } else {
        len
    };
    let data = data.get(..len).ok_or_else(|| {
        format!(
            "data chunk holds {} bytes, its header says {len}",
            data.len()
        )
    })?;
    if data.len() % channels != 0 {
        return Err("data chunk ends inside a frame".into());
    }
    let samples = data
        .iter()
        .step_by(channels)
        .map(|&c| mulaw_decode(c))
        .collect();
    Ok((samples, sample_rate))
}

/// The body of the `fmt ` chunk.
fn fmt_chunk(bytes: &[u8]) -> Option<&[u8]> {
    let (start, len) = chunk(bytes, b"fmt ")?;
    bytes.get(start..start + len)
}

/// Where the first chunk `id` of a RIFF/WAVE file starts, and the length it states.
fn chunk(bytes: &[u8], id: &[u8; 4]) -> Option<(usize, usize)> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    while let Some(header) = bytes.get(at..at + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if &header[..4] == id {
            return Some((at + 8, size));
        }
        // Chunks are padded to an even size.
        at = at.checked_add(8 + size + (size & 1))?;
    }
    None
}

/// When the `data` chunk says [`UNKNOWN_LENGTH`]: the header up to the samples, with the
/// length the rest of the upload has.
fn streamed_header(bytes: &[u8]) -> Option<Vec<u8>> {
    let (body, size) = chunk(bytes, b"data")?;
    if size != UNKNOWN_LENGTH as usize {
        return None;
    }
    let actual = u32::try_from(bytes.len() - body).ok()?;
    let mut header = bytes[..body].to_vec();
    header[body - 4..body].copy_from_slice(&actual.to_le_bytes());
    Some(header)
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

/// A sine tone at `amplitude` (0..1 of full scale). An integer frequency repeats exactly every
/// `rate / gcd(rate, frequency)` samples, so one period is computed and repeated: the stand-in
/// speaks for every call of a load test, and a sine per sample was a third of its CPU.
pub fn tone(frequency_hz: u32, sample_rate: u32, samples: usize, amplitude: f64) -> Vec<i16> {
    let rate = sample_rate.max(1);
    let step = TAU * f64::from(frequency_hz) / f64::from(rate);
    let period = (rate / gcd(rate, frequency_hz)) as usize;
    let one_period: Vec<i16> = (0..period.min(samples))
        .map(|n| ((n as f64 * step).sin() * amplitude * f64::from(i16::MAX)) as i16)
        .collect();
    one_period.iter().copied().cycle().take(samples).collect()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
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

    /// A 16-bit PCM WAV file of interleaved `samples`.
    fn wav(channels: u16, sample_rate: u32, samples: &[i16]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let spec = hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(Cursor::new(&mut bytes), spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        bytes
    }

    #[test]
    fn reads_wav() {
        let bytes = wav(1, 16_000, &[1, -2, 3]);
        assert_eq!(read_wav(&bytes).unwrap(), (vec![1, -2, 3], 16_000));
        assert!(read_wav(b"not a wav").is_err());
        // A header promising more than the upload holds is refused.
        let cut = &bytes[..bytes.len() - 2];
        assert!(read_wav(cut).is_err());
    }

    #[test]
    fn reads_a_streamed_wav_to_its_end() {
        let mut bytes = wav(1, 8_000, &[]);
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes[40..44].copy_from_slice(&UNKNOWN_LENGTH.to_le_bytes());
        for s in [5i16, -6, 7] {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        assert_eq!(read_wav(&bytes).unwrap(), (vec![5, -6, 7], 8_000));
        bytes.push(1);
        assert!(read_wav(&bytes).is_err(), "half a sample at the end");
    }

    /// A µ-law WAV as a telephony tool writes one (`fmt ` with cbSize, a `fact` chunk),
    /// written here byte by byte rather than by the worker's encoder.
    fn mulaw_wav(channels: u16, codes: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(50 + codes.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&18u32.to_le_bytes());
        for v in [7u16, channels] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&8_000u32.to_le_bytes());
        b.extend_from_slice(&(8_000 * u32::from(channels)).to_le_bytes());
        for v in [channels, 8, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(b"fact");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&(codes.len() as u32 / u32::from(channels)).to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(codes.len() as u32).to_le_bytes());
        b.extend_from_slice(codes);
        b
    }

    #[test]
    fn reads_mulaw_wav() {
        let bytes = mulaw_wav(1, &[0xFF, 0x80, 0x00]);
        assert!(is_mulaw_wav(&bytes));
        assert!(!is_mulaw_wav(&wav(1, 8_000, &[1])));
        assert_eq!(read_wav(&bytes).unwrap(), (vec![0, 32124, -32124], 8_000));
        let stereo = mulaw_wav(2, &[0x80, 0xFF, 0x00, 0xFF]);
        assert_eq!(read_wav(&stereo).unwrap(), (vec![32124, -32124], 8_000));
        let cut = &bytes[..bytes.len() - 1];
        assert!(
            read_wav(cut).is_err(),
            "a header promising more than the upload holds"
        );
    }

    #[test]
    fn reads_the_first_channel_of_stereo() {
        let bytes = wav(2, 8_000, &[1, 100, -2, 200, 3, 300]);
        assert_eq!(read_wav(&bytes).unwrap(), (vec![1, -2, 3], 8_000));
    }

    #[test]
    fn a_repeated_period_is_the_same_tone() {
        for (hz, rate) in [(660, 24_000), (440, 8_000), (997, 16_000)] {
            let step = TAU * f64::from(hz) / f64::from(rate);
            let direct: Vec<i16> = (0..30_000)
                .map(|n| ((n as f64 * step).sin() * 0.3 * f64::from(i16::MAX)) as i16)
                .collect();
            let tiled = tone(hz, rate, 30_000, 0.3);
            let worst = direct
                .iter()
                .zip(&tiled)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .max();
            assert!(worst <= Some(1), "{hz} Hz at {rate}: off by {worst:?}");
        }
    }
}
