//! What happened when, from the caller's side: when the caller's speech ended, when reply audio
//! began (per-turn latency), and when the reply "played" so marks are acknowledged the way a
//! carrier does. Time is passed in, so this is plain unit-tested logic.

use std::time::{Duration, Instant};

/// One caller turn and how long the reply took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnLatency {
    /// Where the caller's speech ended, measured from the start of the call's audio.
    pub speech_end: Duration,
    /// End of caller speech → first reply audio.
    pub latency: Duration,
}

/// Tracks caller speech and reply audio into per-turn latencies.
#[derive(Debug)]
pub struct Timeline {
    started: Instant,
    /// The last loud caller frame not yet answered: (sent at, audio offset at its end).
    unanswered: Option<(Instant, Duration)>,
    /// Reply audio is flowing; the next caller speech starts a new turn.
    replying: bool,
    pub turns: Vec<TurnLatency>,
    /// Reply audio that came before the caller said anything (a greeting), after how long.
    pub greeting: Option<Duration>,
}

impl Timeline {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            unanswered: None,
            replying: false,
            turns: Vec::new(),
            greeting: None,
        }
    }

    /// A caller frame ending at `audio_offset` into the call was sent at `at`; `speech` says
    /// whether it was loud enough to be speech.
    pub fn caller_frame(&mut self, at: Instant, audio_offset: Duration, speech: bool) {
        if speech {
            self.unanswered = Some((at, audio_offset));
            self.replying = false;
        }
    }

    /// Reply audio arrived at `at`. Returns the turn it answered, if it is the first audio
    /// after caller speech.
    pub fn reply_audio(&mut self, at: Instant) -> Option<TurnLatency> {
        if self.replying {
            return None;
        }
        self.replying = true;
        match self.unanswered.take() {
            Some((spoken, speech_end)) => {
                let turn = TurnLatency {
                    speech_end,
                    latency: at.saturating_duration_since(spoken),
                };
                self.turns.push(turn);
                Some(turn)
            }
            None => {
                if self.turns.is_empty() && self.greeting.is_none() {
                    self.greeting = Some(at.saturating_duration_since(self.started));
                }
                None
            }
        }
    }

    /// Whether caller speech is still waiting for its reply.
    pub fn awaiting_reply(&self) -> bool {
        self.unanswered.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latency_runs_from_the_last_loud_frame_to_the_first_reply_audio() {
        let t0 = Instant::now();
        let mut timeline = Timeline::new(t0);
        for n in 0..10u32 {
            timeline.caller_frame(t0 + FRAME * n, FRAME * (n + 1), n < 5);
        }
        assert!(timeline.awaiting_reply());
        // Speech ended with frame 4, sent at 80 ms, covering audio up to 100 ms.
        let turn = timeline.reply_audio(t0 + ms(1_080)).unwrap();
        assert_eq!(
            turn,
            TurnLatency {
                speech_end: ms(100),
                latency: ms(1_000)
            }
        );
        assert!(!timeline.awaiting_reply());
        // Later frames of the same reply are not new turns.
        assert_eq!(timeline.reply_audio(t0 + ms(1_100)), None);
        // The caller speaks again: a second turn.
        timeline.caller_frame(t0 + ms(3_000), ms(3_020), true);
        let second = timeline.reply_audio(t0 + ms(3_900)).unwrap();
        assert_eq!(second.latency, ms(900));
        assert_eq!(timeline.turns.len(), 2);
        assert_eq!(timeline.greeting, None);
    }

    #[test]
    fn audio_before_any_speech_is_a_greeting() {
        let t0 = Instant::now();
        let mut timeline = Timeline::new(t0);
        timeline.caller_frame(t0, FRAME, false);
        assert_eq!(timeline.reply_audio(t0 + ms(700)), None);
        assert_eq!(timeline.greeting, Some(ms(700)));
        assert!(timeline.turns.is_empty());
    }
}
