//! When reply audio moves from the turn task to the call task.
//!
//! TTS streams faster than real time in small chunks (40 ms pieces several times a second), and
//! every hand-off wakes the call task. Audio is therefore batched, but only while the call
//! already holds enough unplayed audio that waiting cannot starve its playout: the first audio
//! of a reply goes at once, and when TTS streams no faster than real time every chunk goes at
//! once, as before.

use std::time::{Duration, Instant};

/// A batch is handed over once it holds this much audio.
pub const BATCH: Duration = Duration::from_millis(100);
/// Held audio is handed over at the latest when the call's unplayed audio would drop to this.
pub const MARGIN: Duration = Duration::from_millis(60);

/// What to do with the audio held so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    Now,
    /// Keep collecting until this instant (or until the batch is full).
    HoldUntil(Instant),
}

/// Tracks how far ahead of its playout a call is, from what it was handed and when.
#[derive(Debug, Clone)]
pub struct HandOffPacer {
    rate: u32,
    /// When the first audio of this reply was handed over: playout starts about then.
    first: Option<Instant>,
    handed_samples: u64,
}

impl HandOffPacer {
    /// A pacer for audio at `rate` Hz.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate.max(1),
            first: None,
            handed_samples: 0,
        }
    }

    /// Whether `held` samples should be handed over now.
    pub fn decide(&self, held: usize, now: Instant) -> HandOff {
        let Some(first) = self.first else {
            return HandOff::Now;
        };
        if held as u64 >= self.samples(BATCH) {
            return HandOff::Now;
        }
        // Assumes playout ran without a gap since the first hand-off; a gap only means more is
        // really unplayed than estimated, so the estimate errs on the safe side.
        let handed = Duration::from_micros(self.handed_samples * 1_000_000 / u64::from(self.rate));
        match (first + handed).checked_sub(MARGIN) {
            Some(latest) if latest > now => HandOff::HoldUntil(latest),
            _ => HandOff::Now,
        }
    }

    /// Whether nothing of this reply was handed over yet: the next hand-off is its first audio,
    /// which the caller is waiting for.
    pub fn before_first(&self) -> bool {
        self.first.is_none()
    }

    /// Records that `samples` were handed over at `now`.
    pub fn handed(&mut self, samples: usize, now: Instant) {
        if samples == 0 {
            return;
        }
        self.first.get_or_insert(now);
        self.handed_samples += samples as u64;
    }

    fn samples(&self, span: Duration) -> u64 {
        span.as_millis() as u64 * u64::from(self.rate) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn samples(ms: usize) -> usize {
        ms * RATE as usize / 1000
    }

    #[test]
    fn the_first_audio_of_a_reply_goes_at_once() {
        let pacer = HandOffPacer::new(RATE);
        assert_eq!(pacer.decide(1, Instant::now()), HandOff::Now);
    }

    #[test]
    fn audio_streamed_faster_than_real_time_is_batched_until_the_margin() {
        let t0 = Instant::now();
        let mut pacer = HandOffPacer::new(RATE);
        pacer.handed(samples(400), t0);
        // 400 ms handed at t0: the call can wait until 340 ms before it runs low.
        assert_eq!(
            pacer.decide(samples(40), t0 + ms(10)),
            HandOff::HoldUntil(t0 + ms(340))
        );
        assert_eq!(pacer.decide(samples(40), t0 + ms(340)), HandOff::Now);
        assert_eq!(
            pacer.decide(samples(100), t0 + ms(10)),
            HandOff::Now,
            "a full batch goes at once"
        );
    }

    #[test]
    fn audio_streamed_in_real_time_is_never_held() {
        let t0 = Instant::now();
        let mut pacer = HandOffPacer::new(RATE);
        let mut now = t0;
        for _ in 0..20 {
            assert_eq!(pacer.decide(samples(40), now), HandOff::Now);
            pacer.handed(samples(40), now);
            now += ms(40);
        }
    }

    #[test]
    fn empty_hand_offs_do_not_start_the_clock() {
        let t0 = Instant::now();
        let mut pacer = HandOffPacer::new(RATE);
        pacer.handed(0, t0);
        assert_eq!(pacer.decide(1, t0 + ms(500)), HandOff::Now);
    }
}
