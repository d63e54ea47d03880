//! Energy voice activity detection with hysteresis, and end of turn after silence.
//!
//! Per frame it computes the RMS level in dBFS, which costs one multiply-add per sample: cheap
//! enough for thousands of calls per core, unlike a neural VAD. Speech starts when a frame is at
//! or above the threshold and continues while frames stay above the release level (6 dB lower),
//! so a voice fading between syllables does not flap. A burst shorter than `min_speech_ms`
//! (cough, click) is dropped; after confirmed speech, `silence_ms` of quiet ends the turn.
//! With an early-reply window configured, quiet that long inside the turn is reported as a
//! pause, and sound after it ([`RESUME_MS`] of it: a click restarts the silence but does not
//! end the pause) as the pause ending, so a reply can be prepared in between.

use callfleet_crds::aipipeline::TurnDetectionSpec;

/// Sound after a pause that ends it: longer than a click, and short, because every
/// millisecond the prepared reply goes on after the caller did costs provider work (at 200 ms
/// its transcript is usually back and its chat request out). Never more than `min_speech_ms`.
pub const RESUME_MS: u32 = 60;

/// Release level below the start threshold, in dB.
pub const HYSTERESIS_DB: f32 = 6.0;

/// Level reported for digital silence, instead of minus infinity.
pub const FLOOR_DBFS: f32 = -120.0;

/// What a frame changed about the caller's speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech lasted `min_speech_ms`: the caller is talking (drives barge-in).
    SpeechStarted,
    /// Confirmed speech was followed by `silence_ms` of quiet: the caller's turn is over.
    TurnEnded,
    /// Confirmed speech was followed by the early-reply window of quiet: the turn may be over.
    Paused,
    /// Speech again after [`VadEvent::Paused`]: the turn goes on.
    Resumed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Quiet,
    /// Loud frames seen, not yet `min_speech_ms` of them.
    Candidate {
        speech_ms: u32,
    },
    Speaking {
        silence_ms: u32,
        /// Since a pause was reported and until speech ends it: the loud frames in a row
        /// since (a burst shorter than [`RESUME_MS`], a click, restarts the silence but does
        /// not end the pause).
        pause_burst_ms: Option<u32>,
    },
}

/// Per-call VAD state. Feed it every inbound frame in order.
#[derive(Debug, Clone)]
pub struct Vad {
    start_dbfs: f32,
    release_dbfs: f32,
    min_speech_ms: u32,
    silence_ms: u32,
    /// Quiet after which a pause is reported; only when shorter than `silence_ms`.
    pause_ms: Option<u32>,
    state: State,
}

impl Vad {
    /// Builds a detector from the pipeline's turn-detection settings.
    pub fn new(spec: &TurnDetectionSpec) -> Self {
        let start = spec.vad_threshold_dbfs as f32;
        Self {
            start_dbfs: start,
            release_dbfs: start - HYSTERESIS_DB,
            min_speech_ms: spec.min_speech_ms,
            silence_ms: spec.silence_ms,
            pause_ms: spec.early_reply_ms.filter(|&ms| ms < spec.silence_ms),
            state: State::Quiet,
        }
    }

    /// Whether the caller is currently in confirmed speech.
    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// Whether the detector is in the middle of a possible utterance (candidate or speaking);
    /// audio should be kept for STT while this is true.
    pub fn in_utterance(&self) -> bool {
        !matches!(self.state, State::Quiet)
    }

    /// Whether no decision hangs on when the next frames come: quiet, or in speech whose last
    /// frame was loud. A possible start of speech, or silence that may end the turn, is not.
    pub fn settled(&self) -> bool {
        matches!(
            self.state,
            State::Quiet
                | State::Speaking {
                    silence_ms: 0,
                    pause_burst_ms: None,
                }
        )
    }

    /// How much audio can come before a frame may decide something: the loud audio a possible
    /// start of speech still needs to be confirmed (a quiet frame only drops it), or the quiet
    /// a caller pausing in speech still needs before the turn ends or, first, a pause is
    /// reported (a loud frame only continues the turn); in speech whose last frame was loud,
    /// the whole of that quiet (the caller may fall silent with the next frame). Such frames
    /// can be read in one go as long as the deciding one is read as it comes. `None` while
    /// quiet (only the start of speech is left to notice, see [`Vad::settled`]) and after a
    /// pause was reported (any frame may resume the turn).
    pub fn undecided_for(&self) -> Option<std::time::Duration> {
        let left = match self.state {
            State::Candidate { speech_ms } => self.min_speech_ms.saturating_sub(speech_ms),
            State::Speaking {
                silence_ms,
                pause_burst_ms: None,
            } => {
                let decision = match self.pause_ms {
                    Some(pause) if silence_ms < pause => pause,
                    _ => self.silence_ms,
                };
                decision.saturating_sub(silence_ms)
            }
            _ => return None,
        };
        Some(std::time::Duration::from_millis(u64::from(left)))
    }

    /// Processes one frame of `samples` lasting `frame_ms`.
    pub fn process(&mut self, samples: &[i16], frame_ms: u32) -> Option<VadEvent> {
        let level = frame_dbfs(samples);
        self.process_level(level, frame_ms)
    }

    /// The state machine on an already measured level (kept separate for tests).
    pub fn process_level(&mut self, level_dbfs: f32, frame_ms: u32) -> Option<VadEvent> {
        let loud = level_dbfs >= self.start_dbfs;
        let above_release = level_dbfs >= self.release_dbfs;
        match self.state {
            State::Quiet => {
                if loud {
                    return self.add_candidate(0, frame_ms);
                }
                None
            }
            State::Candidate { speech_ms } => {
                if above_release {
                    self.add_candidate(speech_ms, frame_ms)
                } else {
                    self.state = State::Quiet;
                    None
                }
            }
            State::Speaking {
                silence_ms,
                pause_burst_ms,
            } => {
                if above_release {
                    let burst = pause_burst_ms.map(|ms| ms.saturating_add(frame_ms));
                    let resumed = burst.is_some_and(|ms| ms >= RESUME_MS.min(self.min_speech_ms));
                    self.state = State::Speaking {
                        silence_ms: 0,
                        pause_burst_ms: burst.filter(|_| !resumed),
                    };
                    return resumed.then_some(VadEvent::Resumed);
                }
                let silence_ms = silence_ms.saturating_add(frame_ms);
                if silence_ms >= self.silence_ms {
                    self.state = State::Quiet;
                    return Some(VadEvent::TurnEnded);
                }
                let pauses = pause_burst_ms.is_none()
                    && self.pause_ms.is_some_and(|pause| silence_ms >= pause);
                self.state = State::Speaking {
                    silence_ms,
                    pause_burst_ms: (pauses || pause_burst_ms.is_some()).then_some(0),
                };
                pauses.then_some(VadEvent::Paused)
            }
        }
    }

    fn add_candidate(&mut self, speech_ms: u32, frame_ms: u32) -> Option<VadEvent> {
        let speech_ms = speech_ms.saturating_add(frame_ms);
        if speech_ms >= self.min_speech_ms {
            self.state = State::Speaking {
                silence_ms: 0,
                pause_burst_ms: None,
            };
            Some(VadEvent::SpeechStarted)
        } else {
            self.state = State::Candidate { speech_ms };
            None
        }
    }

    /// Forgets any speech in progress (e.g. after the turn was handed to STT by other means).
    pub fn reset(&mut self) {
        self.state = State::Quiet;
    }
}

/// RMS level of a frame in dBFS (0 dBFS = full-scale square wave).
pub fn frame_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return FLOOR_DBFS;
    }
    let sum: i64 = samples.iter().map(|&s| i64::from(s) * i64::from(s)).sum();
    let mean = sum as f64 / samples.len() as f64;
    if mean <= 0.0 {
        return FLOOR_DBFS;
    }
    let rms = mean.sqrt() / 32768.0;
    ((20.0 * rms.log10()) as f32).max(FLOOR_DBFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(threshold: i32, silence_ms: u32, min_speech_ms: u32) -> TurnDetectionSpec {
        TurnDetectionSpec {
            vad_threshold_dbfs: threshold,
            silence_ms,
            min_speech_ms,
            barge_in: true,
            early_reply_ms: None,
        }
    }

    fn feed(vad: &mut Vad, level: f32, frames: usize) -> Vec<VadEvent> {
        (0..frames)
            .filter_map(|_| vad.process_level(level, 20))
            .collect()
    }

    #[test]
    fn levels() {
        assert_eq!(frame_dbfs(&[0; 160]), FLOOR_DBFS);
        assert!((frame_dbfs(&[i16::MAX; 160]) - 0.0).abs() < 0.01);
        let half: Vec<i16> = vec![16384; 160];
        assert!((frame_dbfs(&half) + 6.02).abs() < 0.05);
    }

    #[test]
    fn settled_only_when_the_next_frames_decide_nothing() {
        let mut vad = Vad::new(&spec(-40, 600, 200));
        assert!(vad.settled(), "quiet");
        feed(&mut vad, -20.0, 1);
        assert!(!vad.settled(), "a possible start of speech");
        feed(&mut vad, -20.0, 9);
        assert!(vad.is_speaking());
        assert!(vad.settled(), "speech, its last frame loud");
        feed(&mut vad, -60.0, 1);
        assert!(!vad.settled(), "silence that may end the turn");
        assert_eq!(feed(&mut vad, -60.0, 29), vec![VadEvent::TurnEnded]);
        assert!(vad.settled(), "quiet again");
    }

    #[test]
    fn undecided_for_counts_down_to_the_deciding_frame() {
        use std::time::Duration;
        let mut vad = Vad::new(&spec(-40, 600, 200));
        assert_eq!(vad.undecided_for(), None, "quiet");
        feed(&mut vad, -20.0, 1);
        assert_eq!(
            vad.undecided_for(),
            Some(Duration::from_millis(180)),
            "a possible start of speech, confirmed by the 10th loud frame"
        );
        feed(&mut vad, -20.0, 9);
        assert_eq!(
            vad.undecided_for(),
            Some(Duration::from_millis(600)),
            "speech, its last frame loud: the turn's whole window of quiet"
        );
        feed(&mut vad, -60.0, 1);
        assert_eq!(vad.undecided_for(), Some(Duration::from_millis(580)));
        feed(&mut vad, -60.0, 28);
        assert_eq!(vad.undecided_for(), Some(Duration::from_millis(20)));
        feed(&mut vad, -60.0, 1);
        assert_eq!(vad.undecided_for(), None, "the turn ended");

        let mut early = Vad::new(&TurnDetectionSpec {
            early_reply_ms: Some(200),
            ..spec(-40, 600, 200)
        });
        feed(&mut early, -20.0, 10);
        assert_eq!(
            early.undecided_for(),
            Some(Duration::from_millis(200)),
            "in speech the pause is the nearest decision"
        );
        feed(&mut early, -60.0, 2);
        assert_eq!(
            early.undecided_for(),
            Some(Duration::from_millis(160)),
            "the pause decides first"
        );
        assert_eq!(feed(&mut early, -60.0, 8), vec![VadEvent::Paused]);
        assert_eq!(
            early.undecided_for(),
            None,
            "after a pause every frame may resume the turn"
        );
    }

    #[test]
    fn speech_then_silence_ends_turn() {
        let mut vad = Vad::new(&spec(-40, 600, 200));
        assert!(feed(&mut vad, -60.0, 10).is_empty());
        // 200 ms of speech = 10 frames: confirmed on the 10th.
        assert_eq!(feed(&mut vad, -20.0, 10), [VadEvent::SpeechStarted]);
        assert!(vad.is_speaking());
        // 580 ms of silence is not enough, 600 is.
        assert!(feed(&mut vad, -70.0, 29).is_empty());
        assert_eq!(feed(&mut vad, -70.0, 1), [VadEvent::TurnEnded]);
        assert!(!vad.in_utterance());
    }

    #[test]
    fn short_bursts_are_ignored() {
        let mut vad = Vad::new(&spec(-40, 600, 200));
        for _ in 0..20 {
            assert!(feed(&mut vad, -20.0, 5).is_empty());
            assert!(feed(&mut vad, -70.0, 1).is_empty());
        }
        assert!(!vad.is_speaking());
    }

    #[test]
    fn hysteresis_keeps_speech_between_threshold_and_release() {
        let mut vad = Vad::new(&spec(-40, 100, 40));
        assert_eq!(feed(&mut vad, -35.0, 2), [VadEvent::SpeechStarted]);
        // -44 dBFS is below the threshold but above the -46 release: still speech.
        assert!(feed(&mut vad, -44.0, 50).is_empty());
        assert!(vad.is_speaking());
        // Below release: silence accumulates and the turn ends after 100 ms.
        assert_eq!(feed(&mut vad, -47.0, 5), [VadEvent::TurnEnded]);
    }

    #[test]
    fn below_threshold_never_starts_speech() {
        let mut vad = Vad::new(&spec(-40, 100, 40));
        assert!(feed(&mut vad, -42.0, 100).is_empty());
        assert!(!vad.in_utterance());
    }

    #[test]
    fn silence_resets_on_speech() {
        let mut vad = Vad::new(&spec(-40, 100, 20));
        assert_eq!(feed(&mut vad, -30.0, 1), [VadEvent::SpeechStarted]);
        assert!(feed(&mut vad, -70.0, 4).is_empty());
        assert!(feed(&mut vad, -30.0, 1).is_empty());
        assert!(feed(&mut vad, -70.0, 4).is_empty());
        assert_eq!(feed(&mut vad, -70.0, 1), [VadEvent::TurnEnded]);
    }

    fn with_pause(spec: TurnDetectionSpec, early_reply_ms: u32) -> TurnDetectionSpec {
        TurnDetectionSpec {
            early_reply_ms: Some(early_reply_ms),
            ..spec
        }
    }

    /// A detector with a 200 ms pause window (600 ms turn window, 200 ms minimum speech)
    /// that has heard 200 ms of speech.
    fn speaking_with_pauses() -> Vad {
        let mut vad = Vad::new(&with_pause(spec(-40, 600, 200), 200));
        assert_eq!(feed(&mut vad, -20.0, 10), [VadEvent::SpeechStarted]);
        vad
    }

    #[test]
    fn a_pause_is_reported_once_before_the_turn_ends() {
        let mut vad = speaking_with_pauses();
        // 180 ms of quiet is not yet a pause; 200 ms is, and it is said once.
        assert!(feed(&mut vad, -70.0, 9).is_empty());
        assert_eq!(feed(&mut vad, -70.0, 1), [VadEvent::Paused]);
        assert!(feed(&mut vad, -70.0, 19).is_empty());
        assert_eq!(feed(&mut vad, -70.0, 1), [VadEvent::TurnEnded]);
    }

    #[test]
    fn speech_after_a_pause_resumes_the_turn_and_a_later_pause_is_reported_again() {
        let mut vad = speaking_with_pauses();
        assert_eq!(feed(&mut vad, -70.0, 15), [VadEvent::Paused]);
        assert_eq!(feed(&mut vad, -20.0, 5), [VadEvent::Resumed]);
        assert!(vad.is_speaking());
        // Speech before the pause window is no resumption.
        assert!(feed(&mut vad, -70.0, 5).is_empty());
        assert!(feed(&mut vad, -20.0, 5).is_empty());
        assert_eq!(
            feed(&mut vad, -70.0, 30),
            [VadEvent::Paused, VadEvent::TurnEnded]
        );
    }

    #[test]
    fn a_click_after_a_pause_does_not_end_it() {
        let mut vad = speaking_with_pauses();
        assert_eq!(feed(&mut vad, -70.0, 10), [VadEvent::Paused]);
        // A 40 ms click: the silence starts again, the pause holds (no second one either).
        assert!(feed(&mut vad, -20.0, 2).is_empty());
        assert!(feed(&mut vad, -70.0, 29).is_empty());
        assert_eq!(feed(&mut vad, -70.0, 1), [VadEvent::TurnEnded]);
        // 60 ms of sound ends the pause.
        assert_eq!(feed(&mut vad, -20.0, 10), [VadEvent::SpeechStarted]);
        assert_eq!(feed(&mut vad, -70.0, 10), [VadEvent::Paused]);
        assert!(feed(&mut vad, -20.0, 2).is_empty());
        assert_eq!(feed(&mut vad, -20.0, 1), [VadEvent::Resumed]);
    }

    #[test]
    fn a_pause_window_not_shorter_than_the_turn_window_is_ignored() {
        let mut vad = Vad::new(&with_pause(spec(-40, 600, 200), 600));
        assert_eq!(feed(&mut vad, -20.0, 10), [VadEvent::SpeechStarted]);
        assert_eq!(feed(&mut vad, -70.0, 30), [VadEvent::TurnEnded]);
    }
}
