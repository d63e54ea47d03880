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
//! activity detector still counts the same audio, so its `minSpeechMs` is unchanged). A
//! barge-in, decided when the speech is confirmed, is not later as long as the rest is shorter
//! than `minSpeechMs` by [`DECISION_MARGIN`]: rests while a reply could be interrupted are sized
//! that way ([`reply_period`]). While a reply plays, a rest ends no later than the call's next
//! reply write, which wakes the call anyway: the write and the read share one wake-up instead of
//! each having its own.
//!
//! While there is nothing to barge into (no reply being prepared or played: the caller talks,
//! or both are quiet), the start of speech decides nothing that cannot wait, so the call rests
//! longer ([`InboundRest::new`]'s `listening` period, 160 ms by default: eight frames a read
//! instead of three), still bounded by the frame that would end the turn. A reply that begins
//! during such a rest (a keypad entry's turn) shortens it to a short one from then. Pure state
//! with the time passed in.

use std::time::{Duration, Instant};

use crate::session::wake_grid::WakeGrid;

/// Events one read after a rest may take before the call goes back to reading as frames come:
/// a rest holds three or four frames (eight or nine while listening), so more means the caller
/// sends faster than real time.
pub const DRAIN_LIMIT: usize = 32;

/// How long before a deciding frame is due a rest ends: the last frame read may have arrived up
/// to a frame before the read, and a frame of jitter on top.
pub const DECISION_MARGIN: Duration = Duration::from_millis(40);

/// Rests shorter than a frame would save no read.
const MIN_REST: Duration = Duration::from_millis(20);

/// How long a rest lasts while a reply could be barged into, for calls whose speech is
/// confirmed `min_speech` after it begins (the pipeline's `minSpeechMs`): at least the
/// configured `period`, and up to `min_speech - DECISION_MARGIN` (never past the listening
/// length). A start of speech noticed that soon after it began is still confirmed on time,
/// and with it the barge-in: once noticed, the frames before the confirming one are counted and
/// that one is read as it comes (see the module doc). So such a rest delays no barge-in, and
/// `period` only decides when `minSpeechMs` is shorter. At the default 200 ms a playing call
/// rests 160 ms instead of 60, reading twice per 240 ms write instead of four times.
pub fn reply_period(period: Duration, listening: Duration, min_speech: Duration) -> Duration {
    if period.is_zero() {
        return Duration::ZERO;
    }
    let unnoticed = min_speech.saturating_sub(DECISION_MARGIN);
    period.max(unnoticed.min(InboundRest::longest_for(period, listening)))
}

/// What the caller's next frames could interrupt, which sets how long a rest may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruptible {
    /// Nothing: no reply is being prepared or played.
    Nothing,
    /// A reply in flight (its turn running, or its audio queued or playing): a barge-in would
    /// be noticed up to a rest late. `next_write` is when its next frames go out, if queued.
    Reply { next_write: Option<Instant> },
}

/// One call's rests from reading its socket.
#[derive(Debug, Clone)]
pub struct InboundRest {
    /// How long a rest lasts while a reply could be barged into; zero turns rests off.
    period: Duration,
    /// How long a rest lasts while there is nothing to barge into.
    listening: Duration,
    /// The current rest's end.
    until: Option<Instant>,
    /// Where rests end, so that calls resting together wake together.
    grid: WakeGrid,
}

impl InboundRest {
    /// Rests of `period` while a reply could be interrupted and of `listening` otherwise (zero,
    /// or less than `period`: `period` throughout). A zero `period` turns rests off. Rests end
    /// on `grid`'s ticks: the nearest to their length, the one before any bound.
    pub fn new(period: Duration, listening: Duration, grid: WakeGrid) -> Self {
        Self {
            period,
            listening: Self::longest_for(period, listening),
            until: None,
            grid,
        }
    }

    /// The longest rest calls configured with `period` and `listening` take (see
    /// [`InboundRest::new`]): what a read after one may have to take, which sizes the read
    /// buffer.
    pub fn longest_for(period: Duration, listening: Duration) -> Duration {
        if period.is_zero() {
            Duration::ZERO
        } else {
            listening.max(period)
        }
    }

    /// The longest rest, what a read after one may have to take.
    pub fn longest(&self) -> Duration {
        self.listening
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

    /// A reply began (its turn started) while the call may be in a listening rest: the rest
    /// ends no later than a short one from `now` (its nearest tick), so a barge-in is noticed
    /// as promptly as during any reply.
    pub fn reply_began(&mut self, now: Instant) {
        let latest = self.grid.nearest(now + self.period);
        self.until = self.until.map(|until| until.min(latest));
    }

    /// After frames were read: rests from now if the next frames may wait (`room`: how long
    /// nothing is decided by their timing; `None` while they decide, e.g. a possible start of
    /// speech) for a frame or more and the read did not stop at [`DRAIN_LIMIT`] (`backlog`).
    /// The rest lasts the listening period when nothing could be interrupted; otherwise one
    /// period, and no longer than the reply's next write (which wakes the call anyway) if that
    /// is still ahead; never beyond the end of `room`. Returns whether it rests.
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
        interruptible: Interruptible,
    ) -> bool {
        let room = room.filter(|&room| room >= MIN_REST && !backlog && !self.period.is_zero());
        let grid = self.grid;
        // A rest of `len` unless `room` is shorter: the tick nearest its end, or the one before
        // the end of `room`.
        let end = |len: Duration, room: Duration| {
            if room < len {
                grid.before(now + room)
            } else {
                grid.nearest(now + len)
            }
        };
        self.until = room.map(|room| match interruptible {
            Interruptible::Nothing => end(self.listening, room),
            Interruptible::Reply { next_write } => {
                let full = end(self.period, room);
                next_write
                    .filter(|&wake| wake > now)
                    // The tick before the write (it may go up to a frame early), unless that
                    // has passed.
                    .map(|wake| {
                        Some(grid.before(wake))
                            .filter(|&at| at > now)
                            .unwrap_or(wake)
                    })
                    .map_or(full, |wake| wake.min(full))
            }
        });
        self.until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(60);
    const LISTENING: Duration = Duration::from_millis(160);
    /// A reply being prepared, none of its audio queued yet.
    const REPLY: Interruptible = Interruptible::Reply { next_write: None };

    fn writing(next_write: Instant) -> Interruptible {
        Interruptible::Reply {
            next_write: Some(next_write),
        }
    }
    /// Frames that decide nothing however long they wait.
    const ANY: Option<Duration> = Some(Duration::MAX);

    #[test]
    fn reply_rests_last_as_long_as_a_start_of_speech_is_still_confirmed_on_time() {
        let ms = Duration::from_millis;
        assert_eq!(reply_period(PERIOD, LISTENING, ms(200)), ms(160));
        assert_eq!(
            reply_period(PERIOD, LISTENING, ms(80)),
            PERIOD,
            "a short minSpeechMs: the configured period"
        );
        assert_eq!(
            reply_period(PERIOD, LISTENING, ms(500)),
            LISTENING,
            "never past the listening length"
        );
        assert_eq!(
            reply_period(PERIOD, Duration::ZERO, ms(500)),
            PERIOD,
            "listening rests off: the period throughout"
        );
        assert_eq!(
            reply_period(Duration::ZERO, LISTENING, ms(200)),
            Duration::ZERO,
            "rests off"
        );
    }

    #[test]
    fn rests_end_on_the_shared_grid_and_never_past_a_bound() {
        let tick = Duration::from_millis(10);
        let grid = WakeGrid::new(tick);
        let mut rest = InboundRest::new(PERIOD, LISTENING, grid);
        let now = Instant::now();
        let on_grid = |at: Instant| grid.before(at) == at;
        assert!(rest.after_read(ANY, false, now, Interruptible::Nothing));
        let due = rest.due().unwrap();
        assert!(on_grid(due));
        let plain = now + LISTENING;
        assert!(
            due.max(plain) - due.min(plain) <= tick / 2,
            "about its length"
        );
        let room = Duration::from_millis(75);
        assert!(rest.after_read(Some(room), false, now, REPLY));
        let due = rest.due().unwrap();
        assert!(
            on_grid(due) && due <= now + room && due > now,
            "never past the room"
        );
        let write = now + Duration::from_millis(47);
        assert!(rest.after_read(ANY, false, now, writing(write)));
        let due = rest.due().unwrap();
        assert!(
            on_grid(due) && due <= write && due > now,
            "never past the write"
        );
    }

    #[test]
    fn a_settled_call_rests_one_period_then_drains() {
        let mut rest = InboundRest::new(PERIOD, LISTENING, WakeGrid::OFF);
        let now = Instant::now();
        assert!(rest.after_read(ANY, false, now, REPLY));
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
        let mut rest = InboundRest::new(PERIOD, LISTENING, WakeGrid::OFF);
        assert!(
            !rest.after_read(None, false, now, REPLY),
            "the detector counts trailing silence or an onset: frames are read as they come"
        );
        assert!(
            !rest.after_read(ANY, true, now, REPLY),
            "a backlog beyond one drain"
        );
        assert!(!rest.resting());
        assert!(rest.after_read(ANY, false, now, REPLY));
        assert!(!rest.after_read(None, false, now, REPLY));
        assert!(
            !rest.resting(),
            "a read that unsettles the call ends its rest"
        );
    }

    #[test]
    fn a_rest_ends_at_the_next_reply_write_when_that_comes_sooner() {
        let now = Instant::now();
        let mut rest = InboundRest::new(PERIOD, LISTENING, WakeGrid::OFF);
        let write = now + Duration::from_millis(40);
        assert!(rest.after_read(ANY, false, now, writing(write)));
        assert_eq!(
            rest.due(),
            Some(write),
            "one wake-up for the write and the read"
        );
        let far = now + Duration::from_millis(100);
        rest.after_read(ANY, false, now, writing(far));
        assert_eq!(rest.due(), Some(now + PERIOD), "never longer than a period");
        rest.after_read(ANY, false, now, writing(now));
        assert_eq!(
            rest.due(),
            Some(now + PERIOD),
            "a write due now goes out on this wake-up, not the rest's end"
        );
    }

    #[test]
    fn a_reply_written_every_two_periods_costs_no_wake_up_of_its_own() {
        // Writes every 120 ms, rests of 60 ms: every wake-up is both a rest's end
        // and, every other time, a write, so a playing call wakes as often as a silent one.
        let write_every = 2 * PERIOD;
        let t0 = Instant::now();
        let mut next_write = t0 + write_every;
        let mut rest = InboundRest::new(PERIOD, LISTENING, WakeGrid::OFF);
        let mut now = t0;
        let mut wakes = Vec::new();
        rest.after_read(ANY, false, now, writing(next_write));
        while now < t0 + 10 * write_every {
            now = rest.due().expect("resting");
            assert!(rest.over(now));
            if now >= next_write {
                next_write += write_every;
            }
            wakes.push(now - t0);
            rest.after_read(ANY, false, now, writing(next_write));
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
        let mut rest = InboundRest::new(PERIOD, LISTENING, WakeGrid::OFF);
        let ms = Duration::from_millis;
        let nothing = Interruptible::Nothing;
        assert!(rest.after_read(Some(ms(540)), false, now, nothing));
        assert_eq!(
            rest.due(),
            Some(now + LISTENING),
            "a full rest, far from the decision"
        );
        assert!(rest.after_read(Some(ms(30)), false, now, nothing));
        assert_eq!(
            rest.due(),
            Some(now + ms(30)),
            "until the deciding frame is near"
        );
        assert!(
            !rest.after_read(Some(ms(10)), false, now, nothing),
            "the last frames are read as they come"
        );
        assert!(!rest.resting());
    }

    #[test]
    fn with_nothing_to_barge_into_rests_are_longer() {
        let now = Instant::now();
        let mut rest = InboundRest::new(PERIOD, LISTENING, WakeGrid::OFF);
        assert_eq!(rest.longest(), LISTENING);
        assert!(rest.after_read(ANY, false, now, Interruptible::Nothing));
        assert_eq!(rest.due(), Some(now + LISTENING));
        assert!(rest.after_read(ANY, false, now, REPLY));
        assert_eq!(
            rest.due(),
            Some(now + PERIOD),
            "a reply being prepared: a barge-in is noticed within a short rest"
        );
        for listening in [Duration::ZERO, PERIOD / 2] {
            let short = InboundRest::new(PERIOD, listening, WakeGrid::OFF);
            assert_eq!(short.longest(), PERIOD, "never shorter than the period");
        }
        assert_eq!(
            InboundRest::new(Duration::ZERO, LISTENING, WakeGrid::OFF).longest(),
            Duration::ZERO,
            "no rests at all"
        );
    }

    #[test]
    fn a_reply_that_begins_during_a_long_rest_shortens_it() {
        let now = Instant::now();
        let mut rest = InboundRest::new(PERIOD, LISTENING, WakeGrid::OFF);
        rest.after_read(ANY, false, now, Interruptible::Nothing);
        let later = now + Duration::from_millis(20);
        rest.reply_began(later);
        assert_eq!(rest.due(), Some(later + PERIOD));
        rest.reply_began(later + Duration::from_millis(90));
        assert_eq!(rest.due(), Some(later + PERIOD), "never lengthened");
        let mut reading = InboundRest::new(PERIOD, LISTENING, WakeGrid::OFF);
        reading.reply_began(now);
        assert!(!reading.resting(), "a call reading as frames come goes on");
    }

    #[test]
    fn a_zero_period_never_rests() {
        let mut off = InboundRest::new(Duration::ZERO, LISTENING, WakeGrid::OFF);
        assert!(!off.after_read(ANY, false, Instant::now(), REPLY));
        assert_eq!(off.due(), None);
    }
}
