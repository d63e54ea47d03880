//! What a simulated caller says: a cycle of speech (a tone) and silence in 20 ms frames, after
//! a per-call lead-in of silence so that thousands of calls do not all speak at the same moment.
//! The speech may hold one pause mid-sentence, shorter than the end-of-turn window: a caller
//! catching their breath, which the worker must not take for the end of the turn.
//!
//! Pure frame arithmetic: frame number in, slot out. The call task asks for every frame it
//! sends, so turn boundaries come out of the same numbers as the audio.

use std::time::Duration;

use callfleet_worker::media::format::FRAME;

/// The caller's speech/silence cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    speech_frames: u32,
    silence_frames: u32,
    /// Silent frames inside the speech: `(first, count)`.
    pause: Option<(u32, u32)>,
}

/// What one frame of a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Silence before the call's first cycle (the stagger).
    LeadIn,
    /// Frame `index` of the current cycle (`0..cycle_frames`): speech while
    /// `index < speech_frames`, silence after.
    Cycle { cycle: u64, index: u32 },
}

impl Pattern {
    /// Speech for `speech`, then silence for `silence`, repeated. Durations round to whole
    /// frames; the silence is at least one frame so a cycle always ends a turn.
    pub fn new(speech: Duration, silence: Duration) -> Self {
        Self {
            speech_frames: frames_in(speech),
            silence_frames: frames_in(silence).max(1),
            pause: None,
        }
    }

    /// The same with a pause of `length` after `after` of speech (both rounded to frames; none
    /// unless it ends before the speech does).
    pub fn with_pause(mut self, after: Duration, length: Duration) -> Self {
        let (first, count) = (frames_in(after), frames_in(length));
        self.pause = (first > 0 && count > 0 && first + count < self.speech_frames)
            .then_some((first, count));
        self
    }

    /// A caller who never speaks: connected, silent calls (memory and CPU of idle calls).
    pub fn idle() -> Self {
        Self {
            speech_frames: 0,
            silence_frames: 50,
            pause: None,
        }
    }

    pub fn speech_frames(&self) -> u32 {
        self.speech_frames
    }

    pub fn cycle_frames(&self) -> u32 {
        self.speech_frames + self.silence_frames
    }

    pub fn is_idle(&self) -> bool {
        self.speech_frames == 0
    }

    /// The slot of frame `n` (0-based, counted from the call's first media frame) of a call
    /// whose cycles start after `lead_in` frames.
    pub fn slot(&self, n: u64, lead_in: u32) -> Slot {
        let Some(position) = n.checked_sub(u64::from(lead_in)) else {
            return Slot::LeadIn;
        };
        let cycle_frames = u64::from(self.cycle_frames());
        Slot::Cycle {
            cycle: position / cycle_frames,
            index: (position % cycle_frames) as u32,
        }
    }

    /// Whether the slot carries speech.
    pub fn is_speech(&self, slot: Slot) -> bool {
        matches!(slot, Slot::Cycle { index, .. } if self.speaks_at(index))
    }

    /// Whether frame `index` of a cycle carries speech.
    pub fn speaks_at(&self, index: u32) -> bool {
        let paused = self
            .pause
            .is_some_and(|(first, count)| (first..first + count).contains(&index));
        index < self.speech_frames && !paused
    }

    /// Whether the slot is the last speech frame of its cycle: the caller's audio ends with it.
    pub fn ends_speech(&self, slot: Slot) -> bool {
        matches!(slot, Slot::Cycle { index, .. } if self.speech_frames > 0 && index + 1 == self.speech_frames)
    }

    /// Whether the slot is the `window`-th silent frame after speech: with it the worker has
    /// seen `window` frames of silence, which is when its end-of-turn timer fires.
    pub fn closes_window(&self, slot: Slot, window_frames: u32) -> bool {
        matches!(slot, Slot::Cycle { index, .. }
            if self.speech_frames > 0 && window_frames > 0 && index == self.speech_frames + window_frames - 1)
    }

    /// Whether the slot starts a cycle after an earlier one: the previous turn's answer window
    /// (its whole silence) is over.
    pub fn closes_turn(&self, slot: Slot) -> bool {
        matches!(slot, Slot::Cycle { cycle, index: 0 } if cycle > 0 && self.speech_frames > 0)
    }

    /// Lead-in of call `index` of `calls`: spreads call starts evenly over one cycle, counted
    /// from the run's start (see [`Pattern::anchored_lead_in`]).
    pub fn lead_in(&self, index: usize, calls: usize) -> u32 {
        if calls == 0 {
            return 0;
        }
        (index as u64 * u64::from(self.cycle_frames()) / calls as u64) as u32
    }

    /// The lead-in, in frames from its first frame, of a call that starts streaming `elapsed`
    /// frames after the run began, so that its cycles start `lead_in` frames (plus whole
    /// cycles) after the run began. Counted from each call's own start instead, the calls
    /// connected late in the ramp would also start their cycles late, and the turns of a run
    /// whose ramp takes a few seconds would crowd into part of the cycle (at 1,000 calls twice
    /// as many turns in three seconds of every seven as in the other four).
    pub fn anchored_lead_in(&self, lead_in: u32, elapsed: u64) -> u32 {
        let cycle = u64::from(self.cycle_frames());
        if cycle == 0 {
            return 0;
        }
        let behind = elapsed % cycle;
        ((u64::from(lead_in) + cycle - behind) % cycle) as u32
    }
}

/// Whole 20 ms frames in `duration`, rounded to the nearest frame.
pub fn frames_in(duration: Duration) -> u32 {
    let frame = FRAME.as_micros();
    ((duration.as_micros() + frame / 2) / frame) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern() -> Pattern {
        Pattern::new(Duration::from_millis(100), Duration::from_millis(200))
    }

    #[test]
    fn durations_become_frames() {
        assert_eq!(frames_in(Duration::from_secs(2)), 100);
        assert_eq!(frames_in(Duration::from_millis(29)), 1);
        assert_eq!(frames_in(Duration::from_millis(31)), 2);
        let p = Pattern::new(Duration::from_secs(2), Duration::ZERO);
        assert_eq!(p.cycle_frames(), 101, "silence is at least one frame");
    }

    #[test]
    fn slots_follow_the_cycle_after_the_lead_in() {
        let p = pattern();
        assert_eq!(p.cycle_frames(), 15);
        assert_eq!(p.slot(0, 3), Slot::LeadIn);
        assert_eq!(p.slot(2, 3), Slot::LeadIn);
        assert_eq!(p.slot(3, 3), Slot::Cycle { cycle: 0, index: 0 });
        assert_eq!(p.slot(3 + 15 + 4, 3), Slot::Cycle { cycle: 1, index: 4 });
        let speech: Vec<bool> = (0..15).map(|n| p.is_speech(p.slot(n, 0))).collect();
        assert_eq!(speech.iter().filter(|s| **s).count(), 5);
        assert!(speech[4] && !speech[5]);
        assert!(!p.is_speech(Slot::LeadIn));
    }

    #[test]
    fn turn_boundaries() {
        let p = pattern();
        let at = |index| Slot::Cycle { cycle: 2, index };
        assert!(p.ends_speech(at(4)));
        assert!(!p.ends_speech(at(3)) && !p.ends_speech(at(5)));
        // A 3-frame end-of-turn window closes with the third silent frame.
        assert!(p.closes_window(at(7), 3));
        assert!(!p.closes_window(at(6), 3) && !p.closes_window(at(8), 3));
        assert!(p.closes_turn(at(0)));
        assert!(!p.closes_turn(Slot::Cycle { cycle: 0, index: 0 }));
        assert!(!p.closes_turn(at(1)));
    }

    #[test]
    fn a_pause_silences_frames_inside_the_speech_only() {
        let p = pattern().with_pause(Duration::from_millis(40), Duration::from_millis(40));
        let speech: Vec<bool> = (0..15)
            .map(|i| p.is_speech(Slot::Cycle { cycle: 0, index: i }))
            .collect();
        assert_eq!(&speech[..6], [true, true, false, false, true, false]);
        assert!(
            p.ends_speech(Slot::Cycle { cycle: 0, index: 4 }),
            "the turn ends where it did"
        );
        // A pause reaching the end of the speech is none.
        let p = pattern().with_pause(Duration::from_millis(40), Duration::from_millis(60));
        assert!((0..5).all(|i| p.is_speech(Slot::Cycle { cycle: 0, index: i })));
    }

    #[test]
    fn idle_calls_never_speak_or_end_turns() {
        let p = Pattern::idle();
        for n in 0..500 {
            let slot = p.slot(n, 7);
            assert!(!p.is_speech(slot));
            assert!(!p.ends_speech(slot));
            assert!(!p.closes_turn(slot));
            assert!(!p.closes_window(slot, 30));
        }
    }

    #[test]
    fn lead_ins_count_from_the_run_start() {
        let p = pattern(); // a 15-frame cycle
        // Streaming from the run's first frame: the lead-in as planned.
        assert_eq!(p.anchored_lead_in(6, 0), 6);
        // Starting 4 frames late: 4 fewer; 10 late, past the planned start: the next cycle's.
        assert_eq!(p.anchored_lead_in(6, 4), 2);
        assert_eq!(p.anchored_lead_in(6, 10), 11);
        assert_eq!(p.anchored_lead_in(6, 6 + 15 * 3), 0);
        // Whatever the delay, the cycle starts at the planned phase of the run's clock.
        for elapsed in 0..100u64 {
            let lead = u64::from(p.anchored_lead_in(9, elapsed));
            assert!(lead < 15);
            assert_eq!((elapsed + lead) % 15, 9);
        }
    }

    #[test]
    fn lead_ins_spread_over_one_cycle() {
        let p = pattern();
        let leads: Vec<u32> = (0..5).map(|i| p.lead_in(i, 5)).collect();
        assert_eq!(leads, [0, 3, 6, 9, 12]);
        assert_eq!(p.lead_in(0, 0), 0);
        assert!((0..1000).all(|i| p.lead_in(i, 1000) < p.cycle_frames()));
    }
}
