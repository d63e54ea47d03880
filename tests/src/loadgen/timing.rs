//! The clocks of a simulated call, as pure functions of instants passed in: when each outbound
//! frame was due, when each reply frame should arrive under the worker's pacing, and when a
//! carrier would have finished playing what it received (to acknowledge marks).

use std::time::{Duration, Instant};

use callfleet_worker::media::format::FRAME;
use callfleet_worker::session::playout::LEAD_FRAMES;

/// When frame `n` of a stream that started at `start` is due.
pub fn due(start: Instant, n: u64) -> Instant {
    start + FRAME * u32::try_from(n).unwrap_or(u32::MAX)
}

/// Offset of call `index`'s frame clock within the 20 ms frame, spreading the calls of one
/// ramp batch evenly: calls that connect together would otherwise all send in the same
/// instant, a burst no real carrier produces.
pub fn phase(index: usize, batch: usize) -> Duration {
    let batch = batch.max(1);
    let slot = (index % batch) as u64;
    Duration::from_micros(slot * FRAME.as_micros() as u64 / batch as u64)
}

/// How late `actual` is against `due` (zero when early or on time).
pub fn lateness(due: Instant, actual: Instant) -> Duration {
    actual.saturating_duration_since(due)
}

/// Expected arrival of reply frames: the worker sends `LEAD_FRAMES` frames ahead of real time
/// when a reply starts, so frames `0..=LEAD_FRAMES` are due on arrival of the first one, and
/// one frame per 20 ms after that.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplyPacing {
    anchor: Option<Instant>,
    frames: u64,
}

impl ReplyPacing {
    /// Forgets the reply (a new caller turn, or a `clear`): the next frame anchors a new one.
    pub fn restart(&mut self) {
        *self = Self::default();
    }

    /// Records a reply frame arriving `at`; returns how late it is against the pacing.
    pub fn arrive(&mut self, at: Instant) -> Duration {
        let anchor = *self.anchor.get_or_insert(at);
        let paced = self.frames.saturating_sub(u64::from(LEAD_FRAMES));
        self.frames += 1;
        lateness(due(anchor, paced), at)
    }

    /// Frames of the current reply so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn frame_schedule_and_lateness() {
        let t0 = Instant::now();
        assert_eq!(due(t0, 0), t0);
        assert_eq!(due(t0, 50), t0 + Duration::from_secs(1));
        assert_eq!(lateness(t0 + ms(20), t0 + ms(25)), ms(5));
        assert_eq!(lateness(t0 + ms(20), t0 + ms(15)), Duration::ZERO);
    }

    #[test]
    fn phases_spread_a_batch_over_one_frame() {
        let phases: Vec<Duration> = (0..4).map(|i| phase(i, 4)).collect();
        assert_eq!(phases, [ms(0), ms(5), ms(10), ms(15)]);
        assert_eq!(phase(4, 4), ms(0), "the next batch starts over");
        assert!((0..1000).all(|i| phase(i, 100) < FRAME));
        assert_eq!(phase(3, 0), ms(0));
    }

    #[test]
    fn reply_pacing_allows_the_lead_burst() {
        let t0 = Instant::now();
        let mut pacing = ReplyPacing::default();
        // The lead frames and the first paced frame arrive together: none is late.
        for _ in 0..=LEAD_FRAMES {
            assert_eq!(pacing.arrive(t0), Duration::ZERO);
        }
        // Then one frame per 20 ms.
        assert_eq!(pacing.arrive(t0 + ms(20)), Duration::ZERO);
        assert_eq!(pacing.arrive(t0 + ms(47)), ms(7));
        // Early frames are never late.
        assert_eq!(pacing.arrive(t0 + ms(50)), Duration::ZERO);
        assert_eq!(pacing.frames(), u64::from(LEAD_FRAMES) + 4);
        pacing.restart();
        assert_eq!(pacing.arrive(t0 + ms(500)), Duration::ZERO);
        assert_eq!(pacing.frames(), 1);
    }
}
