//! The deterministic rules that make the stand-in's answers checkable by tests:
//!
//! - **Transcription**: the audio's 20 ms frames at or above the VAD threshold are kept; the
//!   dominant frequency of those samples is estimated from zero crossings and rounded to the
//!   nearest 10 Hz; the transcript is `"tone <Hz>"` (e.g. `"tone 440"`), or `""` when no frame
//!   is loud enough. Meant for a single pure tone per utterance.
//! - **Chat**: the reply to a last user message `M` is `"I heard M. What else can I do for
//!   you?"` (two sentences, so sentence splitting is exercised), or `"I did not catch that.
//!   Could you say it again?"` when `M` is blank. It streams one word per token.
//! - **Speech**: a sine tone at the configured frequency whose length is the text length times
//!   the per-character duration, divided by `speed` (at least 100 ms).

use super::audio::{dbfs, tone};

/// What the stand-in "hears" in an utterance.
pub fn transcript_of(samples: &[i16], sample_rate: u32, threshold_dbfs: f32) -> String {
    match dominant_frequency(samples, sample_rate, threshold_dbfs) {
        Some(hz) => format!("tone {hz}"),
        None => String::new(),
    }
}

/// Zero-crossing frequency estimate over the loud frames, rounded to 10 Hz.
pub fn dominant_frequency(samples: &[i16], sample_rate: u32, threshold_dbfs: f32) -> Option<u32> {
    let frame = (sample_rate as usize / 50).max(1);
    let mut crossings = 0usize;
    let mut loud_samples = 0usize;
    // Last sample of the previous frame when it was loud, so crossings at frame joins count.
    let mut previous: Option<i16> = None;
    for chunk in samples.chunks(frame) {
        if chunk.len() < frame || dbfs(chunk) < threshold_dbfs {
            previous = None;
            continue;
        }
        loud_samples += chunk.len();
        let second = usize::from(previous.is_none());
        crossings += previous
            .into_iter()
            .chain(chunk.iter().copied())
            .zip(chunk[second..].iter().copied())
            .filter(|(a, b)| (*a >= 0) != (*b >= 0))
            .count();
        previous = chunk.last().copied();
    }
    if loud_samples == 0 {
        return None;
    }
    let seconds = loud_samples as f64 / f64::from(sample_rate);
    let hz = crossings as f64 / 2.0 / seconds;
    Some(((hz / 10.0).round() * 10.0) as u32)
}

/// The assistant's reply to the last user message.
pub fn chat_reply(last_user_message: &str) -> String {
    let heard = last_user_message.trim().trim_end_matches(['.', '!', '?']);
    if heard.is_empty() {
        "I did not catch that. Could you say it again?".to_owned()
    } else {
        format!("I heard {heard}. What else can I do for you?")
    }
}

/// Splits a reply into streamed tokens: words with their leading space, which concatenate
/// back to the reply exactly.
pub fn tokens(reply: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (index, word) in reply.split(' ').enumerate() {
        if index == 0 {
            out.push(word.to_owned());
        } else {
            out.push(format!(" {word}"));
        }
    }
    out.retain(|t| !t.is_empty());
    out
}

/// Peak amplitude of the speech tone, as a fraction of full scale.
pub const SPEECH_AMPLITUDE: f64 = 0.3;

/// Samples of speech for `text`: its length follows the text (at least 100 ms).
pub fn speech_sample_count(text: &str, speed: f64, ms_per_char: u64, sample_rate: u32) -> usize {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let ms = ((text.chars().count() as u64 * ms_per_char) as f64 / speed).max(100.0);
    (ms * f64::from(sample_rate) / 1000.0) as usize
}

/// The speech audio for `text`: a tone of text-proportional length.
pub fn speech_samples(
    text: &str,
    speed: f64,
    ms_per_char: u64,
    tone_hz: u32,
    sample_rate: u32,
) -> Vec<i16> {
    let samples = speech_sample_count(text, speed, ms_per_char, sample_rate);
    tone(tone_hz, sample_rate, samples, SPEECH_AMPLITUDE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hears_a_tone_between_silences() {
        let mut audio = vec![0i16; 8000];
        audio.extend(tone(440, 16_000, 16_000, 0.5));
        audio.extend(vec![0i16; 8000]);
        assert_eq!(transcript_of(&audio, 16_000, -40.0), "tone 440");
        assert_eq!(
            transcript_of(&tone(1000, 8000, 4000, 0.2), 8000, -40.0),
            "tone 1000"
        );
        assert_eq!(transcript_of(&[0; 16000], 16_000, -40.0), "");
        assert_eq!(transcript_of(&[], 16_000, -40.0), "");
        assert_eq!(
            transcript_of(&tone(440, 16_000, 16_000, 0.001), 16_000, -40.0),
            ""
        );
    }

    #[test]
    fn replies_in_two_sentences() {
        assert_eq!(
            chat_reply("tone 440"),
            "I heard tone 440. What else can I do for you?"
        );
        assert_eq!(
            chat_reply("hello."),
            "I heard hello. What else can I do for you?"
        );
        assert_eq!(
            chat_reply("  "),
            "I did not catch that. Could you say it again?"
        );
    }

    #[test]
    fn tokens_concatenate_back() {
        let reply = chat_reply("tone 440");
        let tokens = tokens(&reply);
        assert_eq!(tokens[0], "I");
        assert_eq!(tokens[1], " heard");
        assert_eq!(tokens.concat(), reply);
    }

    #[test]
    fn speech_length_follows_text() {
        assert_eq!(speech_sample_count("abcd", 1.0, 50, 24_000), 4800);
        assert_eq!(speech_sample_count("abcd", 2.0, 50, 24_000), 2400);
        assert_eq!(speech_sample_count("", 1.0, 50, 24_000), 2400);
        assert_eq!(speech_sample_count("abcd", f64::NAN, 50, 24_000), 4800);
    }
}
