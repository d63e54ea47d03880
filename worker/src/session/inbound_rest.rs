//! Reading the caller's frames a few at a time while nothing waits on them.
//!
//! A call's frames come every 20 ms, and reading each as it comes costs a wake-up of the call
//! task and a `recv` per frame: most of an idle call's CPU. While no decision hangs on the
//! exact time of the next frame (the caller is quiet, or talking with their last frame loud)
//! the call leaves its socket alone for a short rest, the kernel holds what arrives, and one
//! read takes it all. The bare receive floor falls by 40% that way (`benches/recv_floor.rs`,
//! "tokio, reading every 80 ms"). No decision is read late: while the caller pauses, or may
//! have begun to speak, the call rests only until two frames before the one that would end the
//! turn (or report the early-reply pause) or confirm the speech, and reads the last ones as
//! they come. What may come up to one rest later is noticing the first loud frame (the voice
//! activity detector still counts the same audio, so its `minSpeechMs` is unchanged), and with
//! it a barge-in. While a reply plays, a rest ends no later than the call's next reply write,
//! which wakes the call anyway: the write and the read share one wake-up instead of each
//! having its own. Pure state with the time passed in.

use std::time::{Duration, Instant};

/// Events one read after a rest may take before the call goes back to reading as frames come:
/// a rest holds three or four frames, so more means the caller sends faster than real time.
pub const DRAIN_LIMIT: usize = 32;

/// How long before a deciding frame is due a rest ends: the last frame read may have arrived up
/// to a frame before the read, and a frame of jitter on top.
pub const DECISION_MARGIN: Duration = Duration::from_millis(40);

/// Rests shorter than a frame would save no read.
const MIN_REST: Duration = Duration::from_millis(20);

/// One call's rests from reading its socket.
#[derive(Debug, Clone)]
pub struct InboundRest {
    /// How long a rest lasts; zero turns rests off.
    period: Duration,
    /// The current rest's end.
    until: Option<Instant>,
}

impl InboundRest {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            until: None,
        }
    }

    /// Whether the socket is being left alone now.
    pub fn resting(&self) -> bool {
        self.until.is_some()
    }

    /// When the current rest ends, to wake the call then.
    pub fn due(&self) -> Option<Instant> {
        self.until
    }

    /// Ends the rest if it is over; returns whether it was (the socket is then to be drained).
    pub fn over(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|until| now >= until) {
            self.until = None;
            return true;
        }
        false
    }

    /// After frames were read: rests from now if the next frames may wait (`room`: how long
    /// nothing is decided by their timing; `None` while they decide, e.g. a possible start of
    /// speech) for a frame or more and the read did not stop at [`DRAIN_LIMIT`] (`backlog`).
    /// The rest ends one period from now, at the end of `room`, or at `next_wake` (when the
    /// call wakes anyway, e.g. for its next reply write) if that comes sooner and is still
    /// ahead. Returns whether it rests.
    ///
    /// A worker whose event loops run late rests all the same: rests are what makes its calls
    /// lighter, and a late rest delays nothing that a late loop would not (the end of a turn is
    /// never rested on). Skipping them under load, as the first version did, made a busy worker
    /// busier: at 1,000 calls in conversation on a slow host it read 12% more often.
    pub fn after_read(
        &mut self,
        room: Option<Duration>,
        backlog: bool,
        now: Instant,
        next_wake: Option<Instant>,
    ) -> bool {
        let room = room.filter(|&room| room >= MIN_REST && !backlog && !self.period.is_zero());
        self.until = room.map(|room| {
            let full = now + self.period.min(room);
            next_wake
                .filter(|&wake| wake > now)
                .map_or(full, |wake| wake.min(full))
        });
        self.until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(60);
    /// Frames that decide nothing however long they wait.
    const ANY: Option<Duration> = Some(Duration::MAX);

    #[test]
    fn a_settled_call_rests_one_period_then_drains() {
        let mut rest = InboundRest::new(PERIOD);
        let now = Instant::now();
        assert!(rest.after_read(ANY, false, now, None));
        assert!(rest.resting());
        assert_eq!(rest.due(), Some(now + PERIOD));
        assert!(!rest.over(now + PERIOD / 2), "not over yet");
        assert!(rest.resting());
        assert!(rest.over(now + PERIOD), "over: drain the socket");
        assert!(!rest.resting());
        assert!(!rest.over(now + PERIOD), "over once");
    }

    #[test]
    fn no_rest_while_a_frame_decides_or_after_a_backlog() {
        let now = Instant::now();
        let mut rest = InboundRest::new(PERIOD);
        assert!(
            !rest.after_read(None, false, now, None),
            "the detector counts trailing silence or an onset: frames are read as they come"
        );
        assert!(
            !rest.after_read(ANY, true, now, None),
            "a backlog beyond one drain"
        );
        assert!(!rest.resting());
        assert!(rest.after_read(ANY, false, now, None));
        assert!(!rest.after_read(None, false, now, None));
        assert!(
            !rest.resting(),
            "a read that unsettles the call ends its rest"
        );
    }

    #[test]
    fn a_rest_ends_at_the_next_reply_write_when_that_comes_sooner() {
        let now = Instant::now();
        let mut rest = InboundRest::new(PERIOD);
        let write = now + Duration::from_millis(40);
        assert!(rest.after_read(ANY, false, now, Some(write)));
        assert_eq!(
            rest.due(),
            Some(write),
            "one wake-up for the write and the read"
        );
        let far = now + Duration::from_millis(100);
        rest.after_read(ANY, false, now, Some(far));
        assert_eq!(rest.due(), Some(now + PERIOD), "never longer than a period");
        rest.after_read(ANY, false, now, Some(now));
        assert_eq!(
            rest.due(),
            Some(now + PERIOD),
            "a write due now goes out on this wake-up, not the rest's end"
        );
    }

    #[test]
    fn a_reply_written_every_two_periods_costs_no_wake_up_of_its_own() {
        // Writes every 120 ms (six frames), rests of 60 ms: every wake-up is both a rest's end
        // and, every other time, a write, so a playing call wakes as often as a silent one.
        let write_every = 2 * PERIOD;
        let t0 = Instant::now();
        let mut next_write = t0 + write_every;
        let mut rest = InboundRest::new(PERIOD);
        let mut now = t0;
        let mut wakes = Vec::new();
        rest.after_read(ANY, false, now, Some(next_write));
        while now < t0 + 10 * write_every {
            now = rest.due().expect("resting");
            assert!(rest.over(now));
            if now >= next_write {
                next_write += write_every;
            }
            wakes.push(now - t0);
            rest.after_read(ANY, false, now, Some(next_write));
        }
        assert!(
            wakes
                .iter()
                .enumerate()
                .all(|(i, &at)| at == PERIOD * (i as u32 + 1)),
            "{wakes:?}"
        );
    }

    #[test]
    fn a_pausing_caller_is_rested_on_until_the_deciding_frame_is_near() {
        let now = Instant::now();
        let mut rest = InboundRest::new(PERIOD);
        let ms = Duration::from_millis;
        assert!(rest.after_read(Some(ms(540)), false, now, None));
        assert_eq!(
            rest.due(),
            Some(now + PERIOD),
            "a full rest, far from the decision"
        );
        assert!(rest.after_read(Some(ms(30)), false, now, None));
        assert_eq!(
            rest.due(),
            Some(now + ms(30)),
            "until the deciding frame is near"
        );
        assert!(
            !rest.after_read(Some(ms(10)), false, now, None),
            "the last frames are read as they come"
        );
        assert!(!rest.resting());
    }

    #[test]
    fn a_zero_period_never_rests() {
        let mut off = InboundRest::new(Duration::ZERO);
        assert!(!off.after_read(ANY, false, Instant::now(), None));
        assert_eq!(off.due(), None);
    }
}
