//! The far end's view of reply audio: a carrier (Twilio, FreeSWITCH, a phone) plays received
//! audio back to back and acknowledges a `mark` once the audio before it has played, or at once
//! when playback is cleared. The smoke-test client and the load generator act as that carrier;
//! time is passed in, so this is plain unit-tested logic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A carrier's playhead: received audio plays back to back from when it arrives; a mark is
/// acknowledged once everything received before it has played, and at once on `clear` (as
/// Twilio does).
#[derive(Debug, Default)]
pub struct CarrierPlayhead {
    /// When the audio received so far will have played.
    until: Option<Instant>,
    /// Marks waiting for their audio to play: (when, name).
    pending: VecDeque<(Instant, String)>,
}

impl CarrierPlayhead {
    /// Audio lasting `length` arrived at `at`.
    pub fn audio(&mut self, at: Instant, length: Duration) {
        let start = self.until.map_or(at, |until| until.max(at));
        self.until = Some(start + length);
    }

    /// A mark arrived at `at`: it is acknowledged when the audio before it has played.
    pub fn mark(&mut self, at: Instant, name: String) {
        let when = self.until.map_or(at, |until| until.max(at));
        self.pending.push_back((when, name));
    }

    /// Playback was flushed at `at`: every pending mark is due now.
    pub fn clear(&mut self, at: Instant) {
        self.until = Some(at);
        for (when, _) in &mut self.pending {
            *when = at;
        }
    }

    /// Marks whose audio has played by `now`, in order.
    pub fn due_marks(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while self.pending.front().is_some_and(|(when, _)| *when <= now) {
            if let Some((_, name)) = self.pending.pop_front() {
                due.push(name);
            }
        }
        due
    }

    /// When everything received so far will have played.
    pub fn done_at(&self) -> Option<Instant> {
        self.until
    }

    /// Whether audio is still playing at `now`.
    pub fn playing(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::format::FRAME;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn marks_wait_for_their_audio() {
        let t0 = Instant::now();
        let mut head = CarrierPlayhead::default();
        // Three frames arrive at once: they play until t0 + 60 ms.
        for _ in 0..3 {
            head.audio(t0, FRAME);
        }
        head.mark(t0, "1.0".into());
        assert!(head.due_marks(t0 + ms(59)).is_empty());
        assert_eq!(head.due_marks(t0 + ms(60)), ["1.0"]);
        assert_eq!(head.done_at(), Some(t0 + ms(60)));
        assert!(head.due_marks(t0 + ms(60)).is_empty(), "acknowledged once");
        // A gap: audio arriving after the playhead ran dry starts playing on arrival.
        head.audio(t0 + ms(200), FRAME);
        assert!(head.playing(t0 + ms(210)));
        assert!(!head.playing(t0 + ms(220)));
        // A mark with no audio before it is due at once.
        head.mark(t0 + ms(300), "2.0".into());
        assert_eq!(head.due_marks(t0 + ms(300)), ["2.0"]);
    }

    #[test]
    fn clear_acknowledges_pending_marks() {
        let t0 = Instant::now();
        let mut head = CarrierPlayhead::default();
        head.audio(t0, Duration::from_secs(5));
        head.mark(t0, "a".into());
        head.mark(t0, "b".into());
        head.clear(t0 + ms(100));
        assert!(!head.playing(t0 + ms(100)));
        assert_eq!(head.due_marks(t0 + ms(100)), ["a", "b"]);
        assert_eq!(head.done_at(), Some(t0 + ms(100)));
    }
}
