//! Outbound audio: a queue of reply samples cut into 20 ms frames sent in real time (or whole
//! sentences for carriers that play files), and a model of the carrier's playhead so barge-in
//! knows how much of the reply the caller heard.
//!
//! Time is passed in, never read, so the pacing rules are plain unit tests.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::format::FRAME;
use crate::protocols::PlaybackMode;

/// Frames sent ahead of real time when a reply starts, so the carrier's jitter buffer never
/// runs dry on the first frames.
pub const LEAD_FRAMES: u32 = 2;

/// A frame may leave up to this long before it is due. Carriers stream caller audio every
/// 20 ms, so the call task is awake once in any such window anyway: that wake-up carries the
/// reply frames, and the pacing timer (set for when the frame is due) only fires when the
/// caller's audio pauses.
pub const SEND_EARLY: Duration = FRAME;

/// Reply frames leave this many at a time, in one socket write: one write (and at most one
/// wake-up, on each side) per 240 ms instead of one per frame. Three rather than two cut the
/// generator's late frames at 2,000 calls on two cores by a third or more, five rather than
/// three the worker's CPU at 1,000 calls in conversation by 5% (BENCHMARKS.md, 2026-11-30
/// afternoon and late afternoon), twelve rather than six by 2.9% (2026-12-04 evening, side by
/// side). Twelve, 240 ms, is four of the default 60 ms inbound rests, so a playing call's rests
/// end on its writes and it wakes no more often than a silent one (`inbound_rest`). The carrier
/// holds at most eleven frames more than the lead, barge-in clears them, and what the caller
/// heard is timed by the playhead model, not by the sends.
pub const FRAMES_PER_WRITE: u32 = 12;

/// After the carrier ran out of a reply's audio, playback resumes once this much is queued (or
/// the sentence is complete): speech streaming at about real time then plays on this cushion
/// instead of pausing again at every late chunk, as a video player rebuffers.
pub const REBUFFER: Duration = Duration::from_millis(100);

/// Times the carrier ran out of a reply's audio before its end, by cause.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gaps {
    /// The next audio had not arrived yet (speech streaming slower than real time, a late
    /// first byte, or the turn task behind).
    pub audio_late: u64,
    /// The audio was queued but the call task sent it late (starved of CPU).
    pub sent_late: u64,
}

/// What to send next.
#[derive(Debug, PartialEq, Eq)]
pub enum PlayoutItem {
    /// One frame (paced) or one sentence (per sentence) of samples.
    Audio(Vec<i16>),
    /// A mark to send after the audio before it.
    Mark(String),
}

/// The reply audio of one call.
#[derive(Debug)]
pub struct Playout {
    mode: PlaybackMode,
    rate: u32,
    frame_samples: usize,
    /// [`REBUFFER`] in samples.
    rebuffer_samples: usize,
    queue: VecDeque<i16>,
    /// Marks to send once this many samples of the reply have been sent.
    marks: VecDeque<(u64, String)>,
    /// More audio for the current sentence may still arrive.
    open: bool,
    enqueued: u64,
    sent: u64,
    next_frame_at: Option<Instant>,
    /// The carrier ran dry: wait for [`REBUFFER`] of audio before resuming.
    rebuffering: bool,
    /// Times the carrier ran out of this reply's audio, not yet reported.
    gaps: Gaps,
    clock: Playhead,
}

/// When the carrier plays what we handed it: audio is played back to back from when it arrives,
/// and gaps (underruns) are silence.
#[derive(Debug, Default, Clone, Copy)]
struct Playhead {
    /// Samples handed over before the current contiguous run.
    before_run: u64,
    run_start: Option<Instant>,
    run_samples: u64,
}

impl Playhead {
    fn hand_over(&mut self, now: Instant, samples: u64, rate: u32) {
        match self.run_start {
            Some(start) if start + duration(self.run_samples, rate) >= now => {
                self.run_samples += samples;
            }
            _ => {
                self.before_run += self.run_samples;
                self.run_start = Some(now);
                self.run_samples = samples;
            }
        }
    }

    fn played(&self, now: Instant, rate: u32) -> u64 {
        let Some(start) = self.run_start else {
            return self.before_run;
        };
        let elapsed = now.saturating_duration_since(start);
        let in_run =
            (elapsed.as_micros() as u64 * u64::from(rate) / 1_000_000).min(self.run_samples);
        self.before_run + in_run
    }
}

fn duration(samples: u64, rate: u32) -> Duration {
    Duration::from_micros(samples * 1_000_000 / u64::from(rate.max(1)))
}

impl Playout {
    /// How the carrier plays the reply.
    pub fn mode(&self) -> PlaybackMode {
        self.mode
    }

    pub fn new(mode: PlaybackMode, rate: u32) -> Self {
        Self {
            mode,
            rate,
            frame_samples: (rate / 50) as usize,
            rebuffer_samples: (REBUFFER.as_millis() as usize * rate as usize / 1000)
                .max((rate / 50) as usize),
            queue: VecDeque::new(),
            marks: VecDeque::new(),
            open: false,
            enqueued: 0,
            sent: 0,
            next_frame_at: None,
            rebuffering: false,
            gaps: Gaps::default(),
            clock: Playhead::default(),
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples of the reply received so far.
    pub fn enqueued(&self) -> u64 {
        self.enqueued
    }

    /// Samples of the reply handed to the carrier so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Adds reply samples for the current sentence.
    pub fn push(&mut self, samples: &[i16]) {
        self.queue.extend(samples);
        self.enqueued += samples.len() as u64;
        self.open = true;
    }

    /// Ends the current sentence. Paced: the mark goes out after its last frame (returns
    /// nothing now). Per sentence: returns the whole sentence to send at once.
    pub fn end_sentence(&mut self, mark: Option<String>, now: Instant) -> Vec<PlayoutItem> {
        self.open = false;
        match self.mode {
            PlaybackMode::Paced => {
                if let Some(mark) = mark {
                    self.marks.push_back((self.enqueued, mark));
                }
                Vec::new()
            }
            PlaybackMode::PerSentence => {
                let queued = self.queue.len();
                let samples = take_front(&mut self.queue, queued, 0);
                if samples.is_empty() {
                    return Vec::new();
                }
                self.sent += samples.len() as u64;
                self.clock.hand_over(now, samples.len() as u64, self.rate);
                vec![PlayoutItem::Audio(samples)]
            }
        }
    }

    /// When the next paced frame is due, if one is ready.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.mode != PlaybackMode::Paced || !self.frame_ready() {
            return None;
        }
        self.next_frame_at
    }

    /// What to send at `now`: nothing until the next frame is within [`SEND_EARLY`] of being
    /// due, then [`FRAMES_PER_WRITE`] frames (or every overdue one), each followed by its marks.
    /// Frames sent more than a frame later than the lead covers (the call task was starved of
    /// CPU) mean the carrier ran dry: that counts as a gap.
    pub fn pop_due(&mut self, now: Instant) -> Vec<PlayoutItem> {
        let mut items = Vec::new();
        let Some(first) = self.next_deadline().filter(|&at| at <= now + SEND_EARLY) else {
            return items;
        };
        if self.sent > 0 && first + FRAME * (LEAD_FRAMES + 1) < now {
            self.gaps.sent_late += 1;
        }
        let last = (first + FRAME * (FRAMES_PER_WRITE - 1)).max(now);
        while self.next_deadline().is_some_and(|at| at <= last) {
            self.pop_frame_into(now, &mut items);
        }
        items
    }

    fn frame_ready(&self) -> bool {
        let needed = if self.rebuffering {
            self.rebuffer_samples
        } else {
            self.frame_samples
        };
        self.queue.len() >= needed || (!self.queue.is_empty() && !self.open)
    }

    /// Pacing starts (or restarts after an underrun) as soon as a frame is ready. When the
    /// carrier ran out of this reply's audio before it (its next frame is later than the lead
    /// the frames before it were sent with, a pause the caller heard), that is an `audio_late`
    /// gap for [`Playout::take_gaps`], and playback waits for [`REBUFFER`] of audio.
    pub fn arm(&mut self, now: Instant) {
        if self.mode != PlaybackMode::Paced {
            return;
        }
        let ran_dry = self
            .next_frame_at
            .is_some_and(|at| at + FRAME * LEAD_FRAMES < now);
        if ran_dry {
            self.next_frame_at = None;
            self.rebuffering = true;
            self.gaps.audio_late += 1;
        }
        if !self.frame_ready() {
            return;
        }
        if self.next_frame_at.is_none_or(|at| at + FRAME < now) {
            self.next_frame_at = Some(now - FRAME * LEAD_FRAMES);
        }
        self.rebuffering = false;
    }

    /// Appends the frame due at `now` and the marks that follow it. A last partial frame is
    /// padded with silence so every frame has the carrier's frame size.
    fn pop_frame_into(&mut self, now: Instant, items: &mut Vec<PlayoutItem>) {
        if !self.frame_ready() {
            return;
        }
        let take = self.frame_samples.min(self.queue.len());
        let mut frame = take_front(&mut self.queue, take, self.frame_samples);
        self.sent += take as u64;
        frame.resize(self.frame_samples, 0);
        self.clock
            .hand_over(now, self.frame_samples as u64, self.rate);
        items.push(PlayoutItem::Audio(frame));
        while let Some((at, _)) = self.marks.front() {
            if *at > self.sent {
                break;
            }
            if let Some((_, name)) = self.marks.pop_front() {
                items.push(PlayoutItem::Mark(name));
            }
        }
        self.next_frame_at = self.next_frame_at.map(|at| at + FRAME);
    }

    /// Gaps (the carrier ran out of this reply's audio) since the last call.
    pub fn take_gaps(&mut self) -> Gaps {
        std::mem::take(&mut self.gaps)
    }

    /// Samples the caller has heard by `now`, by the playhead model.
    pub fn played(&self, now: Instant) -> u64 {
        self.clock.played(now, self.rate).min(self.sent)
    }

    /// Whether reply audio is still queued or playing at `now`.
    pub fn is_active(&self, now: Instant) -> bool {
        !self.queue.is_empty() || self.played(now) < self.sent
    }

    /// Drops everything queued (barge-in) and starts a new reply.
    pub fn clear(&mut self) {
        *self = Self::new(self.mode, self.rate);
    }
}

/// The first `n` queued samples as one vector with room for `capacity`: two slice copies
/// rather than a sample-by-sample drain (this runs for every reply frame of every call).
fn take_front(queue: &mut VecDeque<i16>, n: usize, capacity: usize) -> Vec<i16> {
    let mut taken = Vec::with_capacity(capacity.max(n));
    let (head, tail) = queue.as_slices();
    let from_head = n.min(head.len());
    taken.extend_from_slice(&head[..from_head]);
    taken.extend_from_slice(&tail[..n - from_head]);
    queue.drain(..n);
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Playout {
        /// The next frame regardless of its due time.
        fn pop_frame(&mut self, now: Instant) -> Vec<PlayoutItem> {
            let mut items = Vec::new();
            self.pop_frame_into(now, &mut items);
            items
        }
    }

    /// Frames in the first write of a reply (or of playback resuming): the lead and the frame
    /// due now, or a whole batch when that is more.
    const FIRST_WRITE: usize = if FRAMES_PER_WRITE > LEAD_FRAMES + 1 {
        FRAMES_PER_WRITE as usize
    } else {
        LEAD_FRAMES as usize + 1
    };

    /// A paced 8 kHz playout holding `frames` frames, armed at `t0`.
    fn armed(t0: Instant, frames: usize) -> Playout {
        let mut p = Playout::new(PlaybackMode::Paced, 8_000);
        p.push(&vec![1; 160 * frames]);
        p.arm(t0);
        p
    }

    /// Arms `p` at `now`; whether that found the carrier had run dry.
    fn arm_finds_gap(p: &mut Playout, now: Instant) -> bool {
        p.arm(now);
        p.take_gaps().audio_late > 0
    }

    fn audio_len(items: &[PlayoutItem]) -> Vec<usize> {
        items
            .iter()
            .filter_map(|i| match i {
                PlayoutItem::Audio(a) => Some(a.len()),
                PlayoutItem::Mark(_) => None,
            })
            .collect()
    }

    #[test]
    fn paced_frames_with_lead_and_marks() {
        let t0 = Instant::now();
        let mut p = Playout::new(PlaybackMode::Paced, 8_000);
        p.push(&[1; 400]);
        assert_eq!(p.next_deadline(), None, "not armed yet");
        p.arm(t0);
        // The lead frames are due at once.
        let first = p.next_deadline().unwrap();
        assert!(first <= t0);
        assert_eq!(audio_len(&p.pop_frame(t0)), [160]);
        assert_eq!(audio_len(&p.pop_frame(t0)), [160]);
        // 80 samples left but the sentence is still open: wait for more audio.
        assert_eq!(p.next_deadline(), None);
        p.end_sentence(Some("s0".into()), t0);
        let last = p.pop_frame(t0);
        assert_eq!(
            last,
            [
                PlayoutItem::Audio({
                    let mut v = vec![1; 80];
                    v.resize(160, 0);
                    v
                }),
                PlayoutItem::Mark("s0".into())
            ]
        );
        assert_eq!(p.next_deadline(), None);
        // Played follows the clock, capped at what was sent.
        assert_eq!(p.played(t0), 0);
        assert_eq!(p.played(t0 + Duration::from_millis(30)), 240);
        assert_eq!(p.played(t0 + Duration::from_secs(5)), 400);
        assert!(p.is_active(t0));
        assert!(!p.is_active(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn audio_arriving_after_the_carrier_ran_dry_is_a_gap() {
        let t0 = Instant::now();
        let mut p = armed(t0, 2);
        assert_eq!(
            audio_len(&p.pop_due(t0)).len(),
            2,
            "the lead leaves at once"
        );
        // The carrier plays those two frames until t0 + 40 ms: audio by then is no gap, even
        // though pacing restarts for it.
        p.push(&[1; 160]);
        assert!(!arm_finds_gap(&mut p, t0 + Duration::from_millis(30)));
        assert_eq!(
            audio_len(&p.pop_due(t0 + Duration::from_millis(30))).len(),
            1
        );
        p.push(&[1; 160]);
        assert!(
            arm_finds_gap(&mut p, t0 + Duration::from_millis(200)),
            "a pause"
        );
        // Playback resumes once 100 ms are queued, not with the first late frame.
        assert_eq!(p.next_deadline(), None, "rebuffering");
        p.push(&[1; 480]);
        assert!(
            !arm_finds_gap(&mut p, t0 + Duration::from_millis(230)),
            "the same gap"
        );
        assert_eq!(p.next_deadline(), None, "80 ms queued");
        p.push(&[1; 160]);
        assert!(!arm_finds_gap(&mut p, t0 + Duration::from_millis(250)));
        let resumed = audio_len(&p.pop_due(t0 + Duration::from_millis(250)));
        assert_eq!(
            resumed.len(),
            FIRST_WRITE.min(5),
            "the lead and the frame due now (a batch when that is more) of the five queued"
        );
        assert!(
            !arm_finds_gap(&mut Playout::new(PlaybackMode::Paced, 8_000), t0),
            "nothing to play"
        );
        let mut fresh = Playout::new(PlaybackMode::Paced, 8_000);
        fresh.push(&[1; 160]);
        assert!(!arm_finds_gap(&mut fresh, t0), "the start of a reply");
    }

    #[test]
    fn frames_sent_after_the_lead_ran_out_count_as_a_gap() {
        let t0 = Instant::now();
        let mut p = armed(t0, 60);
        assert_eq!(
            audio_len(&p.pop_due(t0)).len(),
            FIRST_WRITE,
            "the lead and the frame due now, or a batch"
        );
        assert_eq!(
            p.take_gaps(),
            Gaps::default(),
            "the start of a reply is no gap"
        );
        // On time, and late by less than a frame beyond the lead: no gap.
        p.pop_due(t0 + Duration::from_millis(20));
        p.pop_due(t0 + Duration::from_millis(100));
        assert_eq!(p.take_gaps(), Gaps::default());
        // The call task was starved for more than a batch beyond 200 ms: the overdue frames go
        // at once, and the carrier had run dry.
        let now = t0 + Duration::from_millis(300) + FRAME * FRAMES_PER_WRITE;
        let burst = audio_len(&p.pop_due(now));
        assert!(burst.len() > FRAMES_PER_WRITE as usize, "{burst:?}");
        assert!(
            p.next_deadline().is_some_and(|at| at > now),
            "every overdue frame went"
        );
        assert_eq!(p.take_gaps().sent_late, 1);
        assert_eq!(p.take_gaps(), Gaps::default(), "reported once");
    }

    #[test]
    fn a_rebuffering_sentence_that_ends_plays_what_it_has() {
        let t0 = Instant::now();
        let mut p = armed(t0, 2);
        p.pop_due(t0);
        p.push(&[1; 160]);
        assert!(arm_finds_gap(&mut p, t0 + Duration::from_millis(200)));
        assert_eq!(p.next_deadline(), None);
        p.end_sentence(Some("s".into()), t0 + Duration::from_millis(200));
        p.arm(t0 + Duration::from_millis(200));
        assert!(
            p.next_deadline().is_some(),
            "nothing more is coming: play it"
        );
    }

    #[test]
    fn deadlines_advance_one_frame_at_a_time() {
        let t0 = Instant::now();
        let mut p = armed(t0, 10);
        let mut deadlines = Vec::new();
        while let Some(at) = p.next_deadline() {
            deadlines.push(at);
            p.pop_frame(at.max(t0));
            if deadlines.len() == 5 {
                break;
            }
        }
        for pair in deadlines.windows(2) {
            assert_eq!(pair[1] - pair[0], FRAME);
        }
        assert_eq!(deadlines[LEAD_FRAMES as usize], t0);
    }

    /// Sends a 50-frame reply by calling `pop_due` at each of `wakes` (and at the playout's own
    /// wake time whenever that comes first); returns (sent at, due at, frames in that write).
    /// The lead frames are due before the reply starts, so they are left out.
    fn send_reply(
        t0: Instant,
        wakes: impl Iterator<Item = Instant>,
    ) -> Vec<(Instant, Instant, usize)> {
        let mut p = armed(t0, 50);
        p.end_sentence(None, t0);
        let first_due = t0 - FRAME * LEAD_FRAMES;
        let mut sent = Vec::new();
        let mut wakes = wakes.peekable();
        while let Some(timer) = p.next_deadline() {
            let now = match wakes.peek() {
                Some(&inbound) if inbound < timer => {
                    wakes.next();
                    inbound
                }
                _ => timer.max(t0),
            };
            let batch = audio_len(&p.pop_due(now)).len();
            for _ in 0..batch {
                sent.push((now, first_due + FRAME * sent.len() as u32, batch));
            }
        }
        assert_eq!(sent.len(), 50);
        sent.split_off(LEAD_FRAMES as usize)
    }

    #[test]
    fn inbound_wakeups_carry_reply_frames_in_batches() {
        let t0 = Instant::now();
        // Caller frames every 20 ms at some phase against the reply's pacing.
        let inbound = (0..200).map(|n| t0 + Duration::from_millis(7) + FRAME * n);
        let sent = send_reply(t0, inbound);
        for &(at, due, _) in &sent {
            assert!(at <= due, "a frame left late");
            assert!(
                due <= at + SEND_EARLY + FRAME * (FRAMES_PER_WRITE - 1),
                "a frame left too early"
            );
        }
        // After the first write, every write carries a full batch (but the last), and none
        // comes from the timer.
        let (first_write, last_write) = (sent[0].0, sent[sent.len() - 1].0);
        let steady: Vec<_> = sent
            .iter()
            .filter(|s| s.0 != first_write && s.0 != last_write)
            .collect();
        assert!(steady.len() >= 50 - FIRST_WRITE - FRAMES_PER_WRITE as usize);
        assert!(
            steady
                .iter()
                .all(|&&(_, _, batch)| batch == FRAMES_PER_WRITE as usize)
        );
        let phase = Duration::from_millis(7);
        assert!(
            steady
                .iter()
                .all(|&&(at, _, _)| (at - t0).as_micros() % FRAME.as_micros() == phase.as_micros())
        );
    }

    #[test]
    fn without_inbound_audio_the_timer_sends_batches_on_time() {
        let sent = send_reply(Instant::now(), std::iter::empty());
        for &(at, due, _) in &sent {
            assert!(at <= due, "a frame left late");
        }
        let batch = FRAMES_PER_WRITE as usize;
        // 50 frames: the first write, then the rest in full batches but for the remainder.
        let after_first = 50 - FIRST_WRITE;
        let in_full_batches = sent[FIRST_WRITE - LEAD_FRAMES as usize..]
            .iter()
            .filter(|&&(_, _, b)| b == batch)
            .count();
        assert_eq!(
            in_full_batches,
            after_first / batch * batch,
            "every frame after the first write leaves in a full batch"
        );
    }

    #[test]
    fn a_write_starts_at_most_one_frame_early() {
        let t0 = Instant::now();
        let mut p = armed(t0, FIRST_WRITE + FRAMES_PER_WRITE as usize);
        assert_eq!(audio_len(&p.pop_due(t0)).len(), FIRST_WRITE);
        let due = p.next_deadline().unwrap();
        assert_eq!(due, t0 + FRAME * (FIRST_WRITE as u32 - LEAD_FRAMES));
        assert!(
            p.pop_due(due - SEND_EARLY - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            audio_len(&p.pop_due(due - SEND_EARLY)),
            vec![160; FRAMES_PER_WRITE as usize]
        );
    }

    #[test]
    fn per_sentence_hands_over_whole_sentences() {
        let t0 = Instant::now();
        let mut p = Playout::new(PlaybackMode::PerSentence, 16_000);
        p.push(&[3; 8_000]);
        p.push(&[3; 8_000]);
        assert_eq!(p.next_deadline(), None);
        let items = p.end_sentence(Some("ignored".into()), t0);
        assert_eq!(audio_len(&items), [16_000]);
        assert_eq!(p.played(t0 + Duration::from_millis(500)), 8_000);
        // A second sentence queues behind the first on the playhead.
        p.push(&[3; 1_600]);
        p.end_sentence(None, t0 + Duration::from_millis(500));
        assert_eq!(p.played(t0 + Duration::from_millis(1_050)), 16_800);
    }

    #[test]
    fn clear_forgets_the_reply() {
        let t0 = Instant::now();
        let mut p = Playout::new(PlaybackMode::Paced, 8_000);
        p.push(&[1; 1_000]);
        p.arm(t0);
        p.pop_frame(t0);
        p.clear();
        assert_eq!(p.enqueued(), 0);
        assert!(!p.is_active(t0));
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn take_front_keeps_order_across_the_ring_buffers_wrap() {
        let mut queue: VecDeque<i16> = VecDeque::with_capacity(8);
        queue.extend([0, 0, 0, 0, 0, 1, 2, 3]);
        queue.drain(..5);
        queue.extend([4, 5, 6, 7]); // now stored wrapped around the buffer's end
        assert!(!queue.as_slices().1.is_empty());
        let taken = take_front(&mut queue, 5, 160);
        assert_eq!(taken, [1, 2, 3, 4, 5]);
        assert!(taken.capacity() >= 160);
        assert_eq!(queue, [6, 7]);
        assert_eq!(take_front(&mut queue, 2, 0), [6, 7]);
        assert!(queue.is_empty());
    }
}
