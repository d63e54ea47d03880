//! When reply audio moves from the turn task to the call task.
//!
//! TTS streams faster than real time in small chunks (40 ms pieces several times a second), and
//! every hand-off wakes the call task. Audio is therefore batched, but only while the call
//! already holds enough unplayed audio that waiting cannot starve its playout: the first audio
//! of a reply goes at once, and when TTS streams no faster than real time every chunk goes at
//! once, as before.
//!
//! Reading the provider's stream rests, too, while the call holds plenty of unplayed audio: each
//! chunk read as it arrives costs a wake-up of the HTTP connection's task, a receive system call
//! and a wake-up of the turn task, and at several chunks per 100 ms that was about a tenth of an
//! active worker's CPU. While reading rests, what the provider sends waits in the socket's receive
//! buffer and is then read in one go. Rests are short ([`REST`]) so that a provider streaming
//! several times faster than real time does not fill that buffer: it is never held back, and its
//! connection is free as soon as it has sent everything, as without resting.

use std::time::{Duration, Instant};

/// A batch is handed over once it holds this much audio.
pub const BATCH: Duration = Duration::from_millis(100);
/// Held audio is handed over at the latest when the call's unplayed audio would drop to this.
pub const MARGIN: Duration = Duration::from_millis(60);

/// Reading the provider's stream rests while the call holds more than this much unplayed
/// audio, for as long as leaves it holding this much when reading resumes: more than a batch
/// above the margin. 200 ms rather than 300 took 2.3% off a call in conversation with no more
/// underruns (side by side, four rounds, 2026-12-04 evening)...
pub const KEEP_AT_RESUME: Duration = Duration::from_millis(200);
/// ...but no longer than this: at four times real time a provider sends 0.8 s of 24 kHz audio
/// (38 KB) meanwhile, well within a socket's receive buffer. Rests grow with the audio held: a
/// provider streaming four times faster than real time lets a call rest 40 ms once it holds
/// 240 ms, and each rest brings back four times its length, so reading reaches full rests after
/// two short ones instead of reading every chunk up to 500 ms ahead (half the chunks of a short
/// sentence, each a wake-up).
pub const REST: Duration = Duration::from_millis(200);
/// Rests shorter than this are not taken: they would save a chunk or two.
pub const MIN_REST: Duration = Duration::from_millis(40);
/// A chunk waited for at least this long came live from the provider, so what had accumulated
/// was all read; one that came sooner was part of it, and reading goes on without a rest.
pub const LIVE_WAIT: Duration = Duration::from_millis(3);
/// Between two rests at least twice the last rest's length of audio is read. On a worker short
/// of CPU every chunk is waited for longer than [`LIVE_WAIT`], backlog or not, and without this
/// reading would fall to a chunk per rest: slower than real time, with the call's audio down to
/// what it held at the rest, where any further delay is a gap the caller hears.
pub const BETWEEN_RESTS_PER_REST: u32 = 2;
/// Reading does not rest while the call's event loops run this far behind (smoothed lag of its
/// runtimes, as load shedding measures it; a keeping-up loop's timers are under a millisecond
/// late). Measured on a saturated worker, resting made gaps and late frames more frequent even
/// with less CPU per call (more threads parking and waking), so rests are for a worker that
/// keeps up, where the CPU they save is what an autoscaler counts.
pub const REST_LAG_LIMIT: Duration = Duration::from_millis(2);

// After a rest the call still holds more than a batch above the margin.
const _: () = assert!(KEEP_AT_RESUME.as_millis() > MARGIN.as_millis() + BATCH.as_millis());

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
    /// What had been handed over when reading last rested, and how long that rest was.
    last_rest: Option<(u64, Duration)>,
}

impl HandOffPacer {
    /// A pacer for audio at `rate` Hz.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate.max(1),
            first: None,
            handed_samples: 0,
            last_rest: None,
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
        match (first + self.handed_span()).checked_sub(MARGIN) {
            Some(latest) if latest > now => HandOff::HoldUntil(latest),
            _ => HandOff::Now,
        }
    }

    /// Whether reading the provider's stream rests now, after a chunk that was waited for
    /// `waited`, with the call's event loops `behind`, and until when: only once reading has
    /// caught up with the provider, the call holds more than [`KEEP_AT_RESUME`] of unplayed
    /// audio by at least [`MIN_REST`], twice the last rest's length was handed over since it,
    /// and the event loops are less than [`REST_LAG_LIMIT`] behind (everything held must be
    /// handed over before resting). The rest leaves [`KEEP_AT_RESUME`] unplayed, and lasts at
    /// most [`REST`].
    pub fn rest(&mut self, waited: Duration, behind: Duration, now: Instant) -> Option<Instant> {
        if behind >= REST_LAG_LIMIT || waited < LIVE_WAIT {
            return None;
        }
        let progressed = self.last_rest.is_none_or(|(at, length)| {
            self.handed_samples.saturating_sub(at) >= self.samples(length * BETWEEN_RESTS_PER_REST)
        });
        let length = self.unplayed(now).saturating_sub(KEEP_AT_RESUME).min(REST);
        if !progressed || length < MIN_REST {
            return None;
        }
        self.last_rest = Some((self.handed_samples, length));
        Some(now + length)
    }

    /// Audio handed over and not yet played, assuming playout ran without a gap since the
    /// first hand-off (a gap only means more is really unplayed).
    fn unplayed(&self, now: Instant) -> Duration {
        let Some(first) = self.first else {
            return Duration::ZERO;
        };
        (first + self.handed_span()).saturating_duration_since(now)
    }

    fn handed_span(&self) -> Duration {
        Duration::from_micros(self.handed_samples * 1_000_000 / u64::from(self.rate))
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
    fn reading_rests_only_when_caught_up_and_well_ahead() {
        let t0 = Instant::now();
        let mut pacer = HandOffPacer::new(RATE);
        let live = LIVE_WAIT;
        assert_eq!(
            pacer.rest(live, Duration::ZERO, t0),
            None,
            "nothing handed yet"
        );
        pacer.handed(samples(230), t0);
        assert_eq!(
            pacer.rest(live, Duration::ZERO, t0),
            None,
            "230 ms ahead leaves too short a rest above the 200 ms kept"
        );
        pacer.handed(samples(270), t0);
        assert_eq!(
            pacer.rest(live - ms(1), Duration::ZERO, t0 + ms(50)),
            None,
            "a chunk that came at once was part of a backlog: read on"
        );
        assert_eq!(
            pacer.rest(live, Duration::ZERO, t0 + ms(270)),
            None,
            "played down to 230 ms ahead"
        );
        assert_eq!(
            pacer.rest(live, Duration::ZERO, t0 + ms(50)),
            Some(t0 + ms(50) + REST),
            "450 ms ahead: a full rest"
        );
    }

    #[test]
    fn rests_grow_with_the_audio_held() {
        let t0 = Instant::now();
        let mut pacer = HandOffPacer::new(RATE);
        pacer.handed(samples(260), t0);
        assert_eq!(
            pacer.rest(LIVE_WAIT, Duration::ZERO, t0),
            Some(t0 + ms(60)),
            "260 ms ahead: a rest that leaves 200"
        );
        // Four times real time: the rest brought 240 ms, twice its length.
        let after = t0 + ms(60);
        pacer.handed(samples(240), after);
        assert_eq!(
            pacer.rest(LIVE_WAIT, Duration::ZERO, after),
            Some(after + ms(200)),
            "440 ms ahead: a rest that leaves 200, the longest"
        );
    }

    #[test]
    fn reading_does_not_rest_on_a_worker_running_behind() {
        let t0 = Instant::now();
        let mut pacer = HandOffPacer::new(RATE);
        pacer.handed(samples(1_000), t0);
        assert_eq!(pacer.rest(LIVE_WAIT, REST_LAG_LIMIT, t0), None);
        assert_eq!(
            pacer.rest(LIVE_WAIT, REST_LAG_LIMIT - ms(1), t0),
            Some(t0 + REST)
        );
    }

    #[test]
    fn between_rests_reading_runs_ahead_of_playout() {
        let t0 = Instant::now();
        let mut pacer = HandOffPacer::new(RATE);
        pacer.handed(samples(1_000), t0);
        assert_eq!(pacer.rest(LIVE_WAIT, Duration::ZERO, t0), Some(t0 + REST));
        // After the rest a chunk is read and the call is still well ahead, but what was read
        // since the last rest does not yet make up for it.
        let after = t0 + REST;
        pacer.handed(samples(40), after);
        assert_eq!(pacer.rest(LIVE_WAIT, Duration::ZERO, after), None);
        pacer.handed(samples(360), after);
        assert_eq!(
            pacer.rest(LIVE_WAIT, Duration::ZERO, after),
            Some(after + REST)
        );
    }

    #[test]
    fn empty_hand_offs_do_not_start_the_clock() {
        let t0 = Instant::now();
        let mut pacer = HandOffPacer::new(RATE);
        pacer.handed(0, t0);
        assert_eq!(pacer.decide(1, t0 + ms(500)), HandOff::Now);
    }
}
