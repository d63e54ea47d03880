//! The caller's WAV file, turned into the mono 16-bit audio a protocol carries at its rate, and
//! the reply written back as a WAV.
//!
//! Any PCM or float WAV is accepted: channels are averaged to mono, and the rate is converted
//! with the worker's own stream resampler when both rates are telephony rates (8, 16, 24 kHz),
//! or with rubato's FFT resampler for any other pair (44.1 kHz, 48 kHz recordings).

use std::io::Read;

use rubato::{FftFixedIn, Resampler};

use callfleet_worker::media::StreamResampler;
use callfleet_worker::media::format::is_supported_rate;
use callfleet_worker::providers::openai::wav::encode_wav;

/// Why a WAV could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AudioFileError {
    #[error("not a readable WAV file: {0}")]
    Wav(#[from] hound::Error),
    #[error("unsupported WAV sample format: {bits}-bit {format}")]
    SampleFormat { bits: u16, format: &'static str },
    #[error("the WAV file holds no audio")]
    Empty,
    #[error("resampling {from} Hz to {to} Hz failed: {message}")]
    Resample { from: u32, to: u32, message: String },
}

/// Mono audio at a known rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Mono {
    pub samples: Vec<i16>,
    pub rate: u32,
}

/// Reads a WAV (8/16/24/32-bit integer or 32-bit float, any channel count) as mono.
pub fn read_wav(reader: impl Read) -> Result<Mono, AudioFileError> {
    let mut wav = hound::WavReader::new(reader)?;
    let spec = wav.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => wav.samples::<f32>().collect::<Result<_, _>>()?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            wav.samples::<i32>()
                .map(|s| s.map(|s| s as f32 * scale))
                .collect::<Result<_, _>>()?
        }
        (format, bits) => {
            return Err(AudioFileError::SampleFormat {
                bits,
                format: match format {
                    hound::SampleFormat::Float => "float",
                    hound::SampleFormat::Int => "integer",
                },
            });
        }
    };
    let samples: Vec<i16> = interleaved
        .chunks(channels)
        .map(|frame| to_i16(frame.iter().sum::<f32>() / frame.len() as f32))
        .collect();
    if samples.is_empty() {
        return Err(AudioFileError::Empty);
    }
    Ok(Mono {
        samples,
        rate: spec.sample_rate,
    })
}

fn to_i16(value: f32) -> i16 {
    (value * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// `audio` at `rate`, keeping its duration.
pub fn convert(audio: &Mono, rate: u32) -> Result<Vec<i16>, AudioFileError> {
    let fail = |message: String| AudioFileError::Resample {
        from: audio.rate,
        to: rate,
        message,
    };
    if audio.rate == rate {
        return Ok(audio.samples.clone());
    }
    if is_supported_rate(audio.rate) && is_supported_rate(rate) {
        let mut resampler =
            StreamResampler::new(audio.rate, rate).map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::new();
        resampler
            .push(&audio.samples, &mut out)
            .map_err(|e| fail(e.to_string()))?;
        resampler.flush(&mut out).map_err(|e| fail(e.to_string()))?;
        return Ok(out);
    }
    resample_any(&audio.samples, audio.rate, rate).map_err(fail)
}

/// One-shot FFT resampling between arbitrary rates: the resampler's delay is trimmed and the
/// length is `n * to / from`, like the worker's stream resampler.
fn resample_any(samples: &[i16], from: u32, to: u32) -> Result<Vec<i16>, String> {
    const CHUNK: usize = 1024;
    let mut resampler = FftFixedIn::<f32>::new(from as usize, to as usize, CHUNK, 1, 1)
        .map_err(|e| e.to_string())?;
    let wanted = (samples.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let delay = resampler.output_delay();
    let input: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
    let mut out: Vec<f32> = Vec::with_capacity(wanted + delay + CHUNK);
    let mut block = vec![0.0f32; CHUNK];
    let mut offset = 0;
    while out.len() < wanted + delay {
        block.fill(0.0);
        if offset < input.len() {
            let take = CHUNK.min(input.len() - offset);
            block[..take].copy_from_slice(&input[offset..offset + take]);
            offset += take;
        }
        let produced = resampler
            .process(&[&block[..]], None)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&produced[0]);
    }
    Ok(out[delay..delay + wanted]
        .iter()
        .map(|&v| to_i16(v))
        .collect())
}

/// The reply as a mono 16-bit WAV file.
pub fn reply_wav(samples: &[i16], rate: u32) -> Vec<u8> {
    encode_wav(samples, rate)
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;
    use std::io::Cursor;

    use super::*;

    fn wav(
        spec: hound::WavSpec,
        write: impl FnOnce(&mut hound::WavWriter<Cursor<&mut Vec<u8>>>),
    ) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut writer = hound::WavWriter::new(Cursor::new(&mut bytes), spec).unwrap();
        write(&mut writer);
        writer.finalize().unwrap();
        bytes
    }

    fn spec(channels: u16, rate: u32, bits: u16, format: hound::SampleFormat) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: format,
        }
    }

    fn sine(rate: u32, hz: f64, n: usize, amplitude: f64) -> Vec<f64> {
        (0..n)
            .map(|i| (TAU * hz * i as f64 / f64::from(rate)).sin() * amplitude)
            .collect()
    }

    /// Frequency from zero crossings.
    fn frequency(samples: &[i16], rate: u32) -> f64 {
        let crossings = samples
            .windows(2)
            .filter(|w| (w[0] >= 0) != (w[1] >= 0))
            .count();
        crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(rate))
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        let bytes = wav(spec(2, 8_000, 16, hound::SampleFormat::Int), |w| {
            for (l, r) in [(1000i16, 3000i16), (-2000, 0), (32767, 32767)] {
                w.write_sample(l).unwrap();
                w.write_sample(r).unwrap();
            }
        });
        let mono = read_wav(Cursor::new(bytes)).unwrap();
        assert_eq!(
            mono,
            Mono {
                samples: vec![2000, -1000, 32767],
                rate: 8_000
            }
        );
    }

    #[test]
    fn reads_24_bit_8_bit_and_float() {
        let b24 = wav(spec(1, 16_000, 24, hound::SampleFormat::Int), |w| {
            w.write_sample(4_194_304i32).unwrap(); // half scale
            w.write_sample(-8_388_608i32).unwrap();
        });
        assert_eq!(read_wav(Cursor::new(b24)).unwrap().samples, [16384, -32768]);
        let b8 = wav(spec(1, 8_000, 8, hound::SampleFormat::Int), |w| {
            w.write_sample(64i8).unwrap();
        });
        assert_eq!(read_wav(Cursor::new(b8)).unwrap().samples, [16384]);
        let float = wav(spec(1, 48_000, 32, hound::SampleFormat::Float), |w| {
            w.write_sample(0.25f32).unwrap();
            w.write_sample(2.0f32).unwrap();
        });
        assert_eq!(read_wav(Cursor::new(float)).unwrap().samples, [8192, 32767]);
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(matches!(
            read_wav(Cursor::new(b"RIFF....nope".to_vec())),
            Err(AudioFileError::Wav(_))
        ));
        let empty = wav(spec(1, 8_000, 16, hound::SampleFormat::Int), |_| {});
        assert!(matches!(
            read_wav(Cursor::new(empty)),
            Err(AudioFileError::Empty)
        ));
    }

    #[test]
    fn converts_telephony_and_studio_rates() {
        for (from, to) in [
            (16_000, 8_000),
            (8_000, 24_000),
            (44_100, 8_000),
            (48_000, 16_000),
            (22_050, 24_000),
        ] {
            let tone: Vec<i16> = sine(from, 440.0, from as usize, 0.5)
                .into_iter()
                .map(|v| (v * 32767.0) as i16)
                .collect();
            let out = convert(
                &Mono {
                    samples: tone,
                    rate: from,
                },
                to,
            )
            .unwrap();
            assert_eq!(out.len(), to as usize, "{from} -> {to}");
            let middle = &out[to as usize / 10..to as usize * 9 / 10];
            let hz = frequency(middle, to);
            assert!((hz - 440.0).abs() < 5.0, "{from} -> {to}: {hz} Hz");
            let peak = middle.iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(
                (14_000..18_500).contains(&peak),
                "{from} -> {to}: peak {peak}"
            );
        }
        let same = Mono {
            samples: vec![1, 2, 3],
            rate: 8_000,
        };
        assert_eq!(convert(&same, 8_000).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn reply_wav_reads_back() {
        let bytes = reply_wav(&[1, -1, 300], 8_000);
        assert_eq!(
            read_wav(Cursor::new(bytes)).unwrap(),
            Mono {
                samples: vec![1, -1, 300],
                rate: 8_000
            }
        );
    }
}
