//! Realtime mode: the worker's own account of a call's provider session, so that a caller's
//! words are never lost with the session and a session that goes quiet is noticed.
//!
//! The provider decides turns in realtime mode, and a reset connection loses whatever it had
//! not yet said (that the caller stopped, what they said, the reply it began). So the worker
//! keeps, on its own: whether the caller's latest words are still unanswered and their audio;
//! by when the provider must next be heard from; and how many sessions were lost in a row. Pure
//! state with the time passed in: the call task does the I/O and asks this what is owed.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::recent::RecentWindow;
use crate::providers::RealtimeEvent;

/// Realtime sessions a call opens again after losing one (a dropped connection, the provider's
/// session time limit), in a row without a completed response in between, before it gives up
/// and ends with an error.
pub const REALTIME_RECONNECTS: u32 = 3;

/// The caller's audio from before their turn was noticed that is kept with it (one second of
/// µ-law at 8 kHz). A turn is noticed after the VAD's `minSpeechMs`, or when the provider says
/// so: its `prefix_padding_ms` (300) plus the way back over the network later, so without it a
/// new session would hear the turn's first words cut.
const LEAD_BYTES: usize = 8_000;

/// µ-law at 8 kHz: bytes per millisecond of kept audio.
const BYTES_PER_MS: usize = 8;

/// A session the call waits on that missed a deadline: it counts as lost, for `what`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// Nothing is overdue.
    No,
    /// The session given the kept audio of an unanswered turn is alive but heard no speech in
    /// it: the worker's VAD took a noise for words that the provider's turn detection, which
    /// decides turns in realtime mode, does not. Nothing is owed (treating the silence as a
    /// loss would replay the noise to session after session until the call ended).
    NothingOwed,
    /// The provider let a deadline pass: the session is stalled and counts as lost.
    Lost(&'static str),
}

/// What a lost session leaves the call owing the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// The call was waiting for an answer (the caller had stopped, or a reply was streaming).
    answering: bool,
    /// The caller spoke and no answer to them had started.
    unanswered: bool,
    /// Their latest words are in the conversation as text (transcribed, or typed).
    in_text: bool,
}

impl Loss {
    /// Whether the caller's words are owed an answer, given whether they heard part of the
    /// reply that was stopped. Audio still playing from an earlier reply when they spoke does
    /// not answer them: their words stay unanswered until audio of a new answer arrives.
    pub fn owed(self, reply_heard: bool) -> bool {
        self.unanswered || (self.answering && !reply_heard)
    }

    /// Whether the caller's latest words are in the conversation as text, so a new session
    /// given the conversation can answer them without hearing them.
    pub fn in_text(self) -> bool {
        self.in_text
    }
}

/// One call's watch over its realtime sessions.
#[derive(Debug)]
pub struct RealtimeGuard {
    /// The pipeline's provider timeout: how long the provider may stay silent when it owes
    /// the call an event.
    timeout: Duration,
    /// Sessions lost since the last completed response.
    losses_in_a_row: u32,
    /// When the provider must next be heard from, while the call waits for an answer (after
    /// the caller stopped speaking, or during a response).
    answer_due: Option<Instant>,
    /// The provider said the caller started speaking and has not yet said they stopped: it
    /// must say so within its timeout of their last speech by the worker's own VAD.
    speech_due: Option<Instant>,
    /// The session was given the kept audio of an unanswered turn and has not yet said it hears
    /// speech (or answered).
    replayed: bool,
    /// The session has sent an event (it is alive).
    heard_from: bool,
    /// The caller spoke and no answer has started since.
    unanswered: bool,
    /// The latest response sent audio.
    response_spoke: bool,
    /// The caller's latest words are in the conversation as text (the provider transcribed
    /// them, or they were typed); until their next turn begins.
    in_text: bool,
    /// The caller's audio of that unanswered turn as sent to the provider (the last
    /// `max_kept` bytes at most), until an answer starts or the words are transcribed.
    turn_audio: Vec<u8>,
    max_kept: usize,
    /// The last [`LEAD_BYTES`] of caller audio sent while no turn was unanswered: the start of
    /// the next turn's kept audio.
    recent_audio: RecentWindow<u8>,
}

impl RealtimeGuard {
    /// A guard for a call whose provider times out after `timeout` and whose turns are kept up
    /// to `max_turn` long.
    pub fn new(timeout: Duration, max_turn: Duration) -> Self {
        Self {
            timeout,
            losses_in_a_row: 0,
            answer_due: None,
            speech_due: None,
            replayed: false,
            heard_from: false,
            unanswered: false,
            response_spoke: false,
            in_text: false,
            turn_audio: Vec::new(),
            max_kept: max_turn.as_millis() as usize * BYTES_PER_MS,
            recent_audio: RecentWindow::new(LEAD_BYTES),
        }
    }

    /// A new session was opened: it has not been heard from yet.
    pub fn session_opened(&mut self) {
        self.heard_from = false;
        self.replayed = false;
    }

    /// The call now waits to hear from the provider, within its timeout.
    pub fn expect_answer(&mut self, now: Instant) {
        self.answer_due = Some(now + self.timeout);
    }

    /// The session was given the kept audio of the unanswered turn: it should hear and answer
    /// it like any turn.
    pub fn replayed(&mut self, now: Instant) {
        self.replayed = true;
        self.expect_answer(now);
    }

    /// The caller is taking a turn (by the uplink's VAD): until an answer starts, their audio
    /// is kept, beginning with the lead-in before the turn was noticed.
    pub fn caller_spoke(&mut self) {
        if !self.unanswered {
            self.unanswered = true;
            self.in_text = false;
            self.recent_audio.move_into(&mut self.turn_audio);
        }
    }

    /// The caller typed an entry (keypad), now in the conversation as a user message: a turn
    /// owed an answer that a new session can read, so no audio is kept for it.
    pub fn caller_typed(&mut self, now: Instant) {
        self.unanswered = true;
        self.in_text = true;
        self.turn_audio = Vec::new();
        self.expect_answer(now);
    }

    /// Caller audio was sent to the provider (µ-law): kept with an unanswered turn, or as the
    /// lead-in of the next one.
    pub fn audio_sent(&mut self, mulaw: &[u8]) {
        if self.unanswered {
            self.turn_audio.extend_from_slice(mulaw);
            let excess = self.turn_audio.len().saturating_sub(self.max_kept);
            self.turn_audio.drain(..excess);
        } else {
            self.recent_audio.push(mulaw);
        }
    }

    /// Updates the deadlines and the kept turn for an event from the session.
    pub fn on_event(&mut self, event: &RealtimeEvent, now: Instant) {
        self.heard_from = true;
        match event {
            RealtimeEvent::SpeechStarted { .. } => {
                // The caller talks: no answer is awaited until they stop, and their words are
                // kept (the provider may hear speech the worker's own VAD takes for quiet).
                self.replayed = false;
                self.answer_due = None;
                self.speech_due = Some(now + self.timeout);
                self.caller_spoke();
            }
            RealtimeEvent::SpeechStopped { .. } => {
                self.speech_due = None;
                self.expect_answer(now);
            }
            RealtimeEvent::InputTranscript { .. } => {
                // The words are known now: a new session would be given them as text.
                self.speech_due = None;
                self.in_text = true;
                self.turn_audio = Vec::new();
            }
            RealtimeEvent::ResponseCreated { .. } => {
                self.response_spoke = false;
                self.replayed = false;
                self.speech_due = None;
                self.expect_answer(now);
            }
            RealtimeEvent::AudioDelta { .. } => {
                // An answer plays: the caller's words are answered.
                self.response_spoke = true;
                self.replayed = false;
                self.speech_due = None;
                self.unanswered = false;
                self.turn_audio = Vec::new();
                self.expect_answer(now);
            }
            RealtimeEvent::ResponseDone { status, .. } => {
                self.answer_due = None;
                // A session that answered is healthy again: losses are counted in a row.
                if status == "completed" {
                    self.losses_in_a_row = 0;
                }
            }
            RealtimeEvent::SessionUpdated
            | RealtimeEvent::TranscriptDelta { .. }
            | RealtimeEvent::AudioDone { .. }
            | RealtimeEvent::Truncated { .. }
            | RealtimeEvent::ServerError { .. } => {}
        }
    }

    /// Why a response that just ended left the caller in silence: for one cut off
    /// (`incomplete`) before any audio, the `callfleet_unspoken_replies_total` cause its
    /// `reason` maps to; `None` for a response that spoke, completed, or was cancelled (the
    /// caller interrupted it).
    pub fn unspoken_cause(&self, status: &str, reason: &str) -> Option<&'static str> {
        if status != "incomplete" || self.response_spoke {
            return None;
        }
        Some(match reason {
            "content_filter" => "content_filter",
            "max_output_tokens" => "max_output_tokens",
            _ => "incomplete",
        })
    }

    /// Housekeeping: whether the session missed a deadline. `caller_speaking` is the worker's
    /// own VAD: while the caller talks, the provider's word that they stopped is not yet due.
    pub fn check(&mut self, now: Instant, caller_speaking: bool) -> Overdue {
        if self.answer_due.is_some_and(|due| now >= due) {
            if self.replayed && self.heard_from {
                self.answer_due = None;
                self.replayed = false;
                self.unanswered = false;
                self.turn_audio.clear();
                return Overdue::NothingOwed;
            }
            return Overdue::Lost("realtime response");
        }
        if let Some(due) = self.speech_due {
            if caller_speaking {
                self.speech_due = Some(now + self.timeout);
            } else if now >= due {
                return Overdue::Lost("realtime end of speech");
            }
        }
        Overdue::No
    }

    /// The session is gone: its deadlines with it. Returns what the call owes the caller.
    pub fn session_lost(&mut self) -> Loss {
        self.speech_due = None;
        Loss {
            answering: self.answer_due.take().is_some(),
            unanswered: self.unanswered,
            in_text: self.in_text,
        }
    }

    /// Counts a lost session; whether another may be opened.
    pub fn may_reopen(&mut self) -> bool {
        if self.losses_in_a_row >= REALTIME_RECONNECTS {
            return false;
        }
        self.losses_in_a_row += 1;
        true
    }

    /// Sessions lost since the last completed response.
    pub fn losses_in_a_row(&self) -> u32 {
        self.losses_in_a_row
    }

    /// The kept audio of the unanswered turn, to play to a new session. A copy: the guard
    /// keeps it until the turn is answered or transcribed, as that session may be lost too.
    pub fn kept_audio(&self) -> Bytes {
        Bytes::copy_from_slice(&self.turn_audio)
    }

    /// Whether the caller's latest words are still unanswered.
    pub fn unanswered(&self) -> bool {
        self.unanswered
    }

    /// How long until the provider must next be heard from, for logs.
    pub fn answer_due_in(&self, now: Instant) -> Option<Duration> {
        self.answer_due
            .map(|due| due.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn guard() -> RealtimeGuard {
        RealtimeGuard::new(TIMEOUT, Duration::from_secs(30))
    }

    fn speech_started() -> RealtimeEvent {
        RealtimeEvent::SpeechStarted {
            item_id: "in".into(),
            audio_start_ms: 0,
        }
    }

    fn speech_stopped() -> RealtimeEvent {
        RealtimeEvent::SpeechStopped {
            item_id: "in".into(),
            audio_end_ms: 1_000,
        }
    }

    fn created() -> RealtimeEvent {
        RealtimeEvent::ResponseCreated {
            response_id: "r".into(),
        }
    }

    fn audio_delta() -> RealtimeEvent {
        RealtimeEvent::AudioDelta {
            response_id: "r".into(),
            item_id: "out".into(),
            audio: Bytes::from_static(&[0xff; 160]),
        }
    }

    #[test]
    fn an_incomplete_response_without_audio_is_unspoken() {
        let mut g = guard();
        let now = Instant::now();
        g.on_event(&created(), now);
        assert_eq!(
            g.unspoken_cause("incomplete", "content_filter"),
            Some("content_filter")
        );
        assert_eq!(
            g.unspoken_cause("incomplete", "max_output_tokens"),
            Some("max_output_tokens")
        );
        assert_eq!(g.unspoken_cause("incomplete", ""), Some("incomplete"));
        assert_eq!(g.unspoken_cause("completed", ""), None);
        assert_eq!(g.unspoken_cause("cancelled", "turn_detected"), None);
        g.on_event(&audio_delta(), now);
        assert_eq!(
            g.unspoken_cause("incomplete", "max_output_tokens"),
            None,
            "a reply cut off after it began speaking was heard"
        );
        g.on_event(&created(), now);
        assert_eq!(
            g.unspoken_cause("incomplete", "content_filter"),
            Some("content_filter"),
            "each response counts on its own"
        );
    }

    fn done(status: &str) -> RealtimeEvent {
        RealtimeEvent::ResponseDone {
            response_id: "r".into(),
            status: status.into(),
            reason: String::new(),
        }
    }

    #[test]
    fn losses_end_the_call_only_in_a_row() {
        let mut g = guard();
        for _ in 0..REALTIME_RECONNECTS {
            assert!(g.may_reopen(), "a new session is opened");
        }
        assert!(!g.may_reopen(), "one loss too many in a row");
        // A completed response in between: a long call outlives many session limits.
        let mut g = guard();
        for _ in 0..10 {
            assert!(g.may_reopen());
            g.on_event(&done("completed"), Instant::now());
        }
        assert_eq!(g.losses_in_a_row(), 0);
        // A cancelled one is no sign of health.
        g.may_reopen();
        g.on_event(&done("cancelled"), Instant::now());
        assert_eq!(g.losses_in_a_row(), 1);
    }

    #[test]
    fn a_provider_silent_after_the_caller_stopped_is_overdue() {
        let mut g = guard();
        let t0 = Instant::now();
        g.on_event(&speech_started(), t0);
        g.on_event(&speech_stopped(), t0 + Duration::from_secs(1));
        assert_eq!(g.check(t0 + Duration::from_secs(5), false), Overdue::No);
        let late = t0 + Duration::from_secs(6);
        assert_eq!(g.check(late, false), Overdue::Lost("realtime response"));
        // An answer streaming pushes the deadline on; a completed one clears it.
        g.on_event(&audio_delta(), late);
        assert_eq!(g.check(late + Duration::from_secs(4), false), Overdue::No);
        g.on_event(&done("completed"), late);
        assert_eq!(g.check(late + Duration::from_secs(60), false), Overdue::No);
    }

    #[test]
    fn a_provider_that_never_says_the_caller_stopped_is_overdue_once_they_are_quiet() {
        let mut g = guard();
        let t0 = Instant::now();
        g.on_event(&speech_started(), t0);
        // While the caller talks (by the worker's VAD) the deadline moves with them.
        let talking = t0 + Duration::from_secs(20);
        assert_eq!(g.check(talking, true), Overdue::No);
        assert_eq!(
            g.check(talking + Duration::from_secs(4), false),
            Overdue::No
        );
        assert_eq!(
            g.check(talking + TIMEOUT, false),
            Overdue::Lost("realtime end of speech")
        );
    }

    #[test]
    fn words_are_owed_unless_their_answer_was_heard() {
        // The caller spoke; the session is lost before any answer: owed, whatever played
        // before (an earlier reply still counted in the playout is no answer to them).
        let mut g = guard();
        g.caller_spoke();
        assert!(g.session_lost().owed(true));
        // The caller stopped, the answer was streaming and they heard some: not owed.
        let mut g = guard();
        g.caller_spoke();
        g.on_event(&speech_stopped(), Instant::now());
        g.on_event(&audio_delta(), Instant::now());
        let loss = g.session_lost();
        assert!(!loss.owed(true));
        assert!(
            loss.owed(false),
            "an answer the caller never heard is no answer"
        );
        // Nothing said, nothing awaited: nothing owed.
        assert!(!guard().session_lost().owed(false));
    }

    #[test]
    fn the_kept_turn_starts_with_its_lead_in_and_survives_lost_sessions() {
        let mut g = guard();
        g.audio_sent(&[1; 6_000]);
        g.audio_sent(&[2; 4_000]);
        g.caller_spoke();
        g.audio_sent(&[3; 800]);
        let kept = g.kept_audio();
        assert_eq!(
            kept.len(),
            LEAD_BYTES + 800,
            "a second of lead-in, then the turn"
        );
        assert_eq!(kept[0], 1);
        assert_eq!(kept[LEAD_BYTES - 1], 2);
        assert_eq!(kept[LEAD_BYTES], 3);
        // Lost twice: still there for the third session.
        for _ in 0..2 {
            g.session_lost();
            g.session_opened();
            g.replayed(Instant::now());
            assert_eq!(g.kept_audio(), kept);
        }
        // Transcribed: the words are in the conversation as text, the audio goes.
        g.on_event(
            &RealtimeEvent::InputTranscript {
                item_id: "in".into(),
                text: "hello".into(),
            },
            Instant::now(),
        );
        assert!(g.kept_audio().is_empty());
    }

    #[test]
    fn words_in_text_are_known_until_the_next_turn() {
        let mut g = guard();
        g.caller_spoke();
        assert!(!g.session_lost().in_text(), "spoken, not yet transcribed");
        let transcript = RealtimeEvent::InputTranscript {
            item_id: "in".into(),
            text: "hello".into(),
        };
        g.on_event(&transcript, Instant::now());
        assert!(g.session_lost().in_text());
        // Answered, then a new turn begins: its words are audio until transcribed.
        g.on_event(&audio_delta(), Instant::now());
        assert!(g.session_lost().in_text(), "still the last words");
        g.on_event(&speech_started(), Instant::now());
        assert!(!g.session_lost().in_text());
    }

    #[test]
    fn a_typed_entry_is_owed_an_answer_in_text() {
        let mut g = guard();
        // Speech the worker's VAD took for a turn, then an entry: the entry is what is owed.
        g.caller_spoke();
        g.audio_sent(&[1; 800]);
        let t0 = Instant::now();
        g.caller_typed(t0);
        assert!(
            g.kept_audio().is_empty(),
            "nothing to replay: a new session reads it"
        );
        assert_eq!(
            g.check(t0 + TIMEOUT, false),
            Overdue::Lost("realtime response")
        );
        let loss = g.session_lost();
        assert!(
            loss.owed(true),
            "audio of an earlier reply is no answer to it"
        );
        assert!(loss.in_text());
    }

    #[test]
    fn the_kept_turn_is_capped_at_its_end() {
        let mut g = RealtimeGuard::new(TIMEOUT, Duration::from_millis(100));
        g.caller_spoke();
        g.audio_sent(&[1; 700]);
        g.audio_sent(&[2; 300]);
        let kept = g.kept_audio();
        assert_eq!(kept.len(), 800);
        assert_eq!((kept[0], kept[799]), (1, 2));
        // An answer starts: the turn is answered and nothing is kept.
        g.on_event(&audio_delta(), Instant::now());
        assert!(!g.unanswered());
        assert!(g.kept_audio().is_empty());
    }

    /// A guard whose caller said `words` (unanswered), whose session was lost, and whose new
    /// session was just given the kept audio; and when.
    fn replayed_to_a_new_session(words: &[u8]) -> (RealtimeGuard, Instant) {
        let mut g = guard();
        g.caller_spoke();
        g.audio_sent(words);
        g.session_lost();
        g.session_opened();
        let t0 = Instant::now();
        g.replayed(t0);
        (g, t0)
    }

    #[test]
    fn a_replay_a_live_session_hears_no_speech_in_owes_nothing() {
        let (mut g, t0) = replayed_to_a_new_session(&[5; 1_600]);
        g.on_event(&RealtimeEvent::SessionUpdated, t0);
        let late = t0 + TIMEOUT;
        assert_eq!(g.check(late, false), Overdue::NothingOwed);
        assert!(!g.unanswered());
        assert!(g.kept_audio().is_empty());
        assert_eq!(g.check(late + TIMEOUT, false), Overdue::No);
    }

    #[test]
    fn a_replay_to_a_session_never_heard_from_is_a_loss() {
        let (mut g, t0) = replayed_to_a_new_session(&[5; 1_600]);
        assert_eq!(
            g.check(t0 + TIMEOUT, false),
            Overdue::Lost("realtime response")
        );
    }

    #[test]
    fn a_replay_the_session_hears_speech_in_is_awaited_as_any_turn() {
        let (mut g, t0) = replayed_to_a_new_session(&[5; 1_600]);
        g.on_event(&speech_started(), t0);
        g.on_event(&speech_stopped(), t0);
        assert_eq!(
            g.check(t0 + TIMEOUT, false),
            Overdue::Lost("realtime response")
        );
    }
}
