//! Where audio lands on a recording's timeline: one 8 kHz clock from the call's start, each
//! channel written in order. Pure, so the placement rules are unit tests.
//!
//! Caller audio is placed where it was captured (a frame that arrives at `t` ends at `t`);
//! assistant audio where the carrier starts playing it (at `t`, or right after what it was
//! already handed: carriers play what they get back to back, so a whole sentence handed over
//! at once runs ahead of the clock, as it does on the phone).

use std::time::Duration;

use super::wav::RATE;

/// A hole shorter than this is network jitter, not silence: the chunk is appended right after
/// the previous one instead of opening a click-sized gap.
pub const JITTER: u64 = RATE as u64 / 5;

/// Which side of the call a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Audio from the carrier: it ends when it arrives.
    Caller,
    /// Audio we sent: it starts playing when it is sent.
    Assistant,
}

/// The 8 kHz sample position of `elapsed` since the recording started.
pub fn position(elapsed: Duration) -> u64 {
    (elapsed.as_micros() * u128::from(RATE) / 1_000_000) as u64
}

/// Silence to write before a chunk of `len` samples that arrived at `arrival` on a channel
/// whose audio so far ends at `cursor`.
pub fn gap_before(side: Side, cursor: u64, arrival: u64, len: u64) -> u64 {
    let start = match side {
        Side::Caller => arrival.saturating_sub(len),
        Side::Assistant => arrival,
    };
    let gap = start.saturating_sub(cursor);
    if gap > JITTER { gap } else { 0 }
}

/// Barge-in at `now`: the carrier drops what it had not played yet, so a channel that runs
/// ahead of the clock is cut back to `now`.
pub fn cut_at(cursor: u64, now: u64) -> Option<u64> {
    (cursor > now).then_some(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_8khz_samples() {
        assert_eq!(position(Duration::from_millis(20)), 160);
        assert_eq!(position(Duration::from_secs(3600)), 28_800_000);
    }

    #[test]
    fn a_steady_stream_is_contiguous_despite_jitter() {
        // Frames of 160 arriving a little late or early are appended back to back.
        assert_eq!(gap_before(Side::Caller, 0, 160, 160), 0);
        assert_eq!(gap_before(Side::Caller, 160, 380, 160), 0);
        assert_eq!(gap_before(Side::Caller, 320, 420, 160), 0, "early");
    }

    #[test]
    fn real_pauses_become_silence() {
        // The carrier stopped sending for a second: the next frame starts a second later.
        assert_eq!(gap_before(Side::Caller, 160, 8_320, 160), 8_000);
        // The first reply frame two seconds into the call.
        assert_eq!(gap_before(Side::Assistant, 0, 16_000, 160), 16_000);
    }

    #[test]
    fn assistant_audio_queues_behind_what_is_still_playing() {
        // A 3 s sentence handed over at 1 s, then the next one at 1.5 s: it plays after.
        let cursor = 8_000 + 24_000;
        assert_eq!(gap_before(Side::Assistant, cursor, 12_000, 8_000), 0);
    }

    #[test]
    fn barge_in_cuts_what_was_not_played() {
        assert_eq!(cut_at(32_000, 20_000), Some(20_000));
        assert_eq!(cut_at(20_000, 20_000), None);
        assert_eq!(cut_at(100, 20_000), None);
    }
}
