//! The reply: its turn task (started, prepared early, dropped), the audio it yields paced out
//! to the carrier, marks, barge-in, and what of it goes into history: only what the caller
//! heard.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::CallSession;
use crate::protocols::{ErrorCode, Outbound, PlaybackMode};
use crate::providers::{ChatMessage, ChatRole};
use crate::session::history::{SpokenSentence, heard_text};
use crate::session::playout::PlayoutItem;
use crate::session::turn::{SpeechReading, TurnInput, TurnOutput, run_turn};

/// A reply turn running in its own task.
pub(super) struct ActiveTurn {
    handle: JoinHandle<()>,
    output: mpsc::Receiver<TurnOutput>,
    /// When it was started, for a reply prepared during a pause: its providers were partly or
    /// wholly waited on before the caller's turn ended and the latency clock started.
    prepared_at: Option<Instant>,
}

impl Drop for ActiveTurn {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The reply being played: its sentences and where they sit in the audio.
#[derive(Default)]
pub(super) struct Reply {
    pub(super) id: u32,
    pub(super) sentences: Vec<SpokenSentence>,
    /// Sentence texts waiting for their first frame (sample offset, text).
    captions: VecDeque<(u64, String)>,
    /// Realtime mode: the provider's item being played.
    pub(super) item_id: Option<String>,
}

impl Reply {
    /// The reply after this one (realtime mode: the provider's item `item_id`), empty.
    pub(super) fn next(&self, item_id: Option<String>) -> Reply {
        Reply {
            id: self.id.wrapping_add(1),
            item_id,
            ..Reply::default()
        }
    }
}

impl CallSession {
    /// The pipeline's greeting, when it has one.
    pub(super) fn greeting(&self) -> Option<String> {
        self.pipeline
            .config
            .spec
            .greeting
            .clone()
            .filter(|g| !g.trim().is_empty())
    }

    /// A reply is being produced or played.
    pub(super) fn is_replying(&self, now: Instant) -> bool {
        self.turn.is_some() || self.playout.is_active(now)
    }

    pub(super) fn start_turn(&mut self, input: TurnInput) {
        self.drop_early_turn();
        let turn = self.spawn_turn(input, None);
        self.install_turn(turn);
    }

    fn spawn_turn(&self, input: TurnInput, prepared_at: Option<Instant>) -> ActiveTurn {
        let (tx, rx) = mpsc::channel(32);
        let handle = self.ctx.spawn_turn(run_turn(
            self.pipeline.clone(),
            self.ctx.metrics.clone(),
            match self.playout.mode() {
                PlaybackMode::Paced => {
                    // The call task runs on its media thread.
                    SpeechReading::Paced(self.lag.clone())
                }
                PlaybackMode::PerSentence => SpeechReading::Eager,
            },
            input,
            self.out_format.sample_rate,
            tx,
        ));
        ActiveTurn {
            handle,
            output: rx,
            prepared_at,
        }
    }

    /// Makes `turn` the reply the call plays.
    pub(super) fn install_turn(&mut self, turn: ActiveTurn) {
        self.reply = self.reply.next(None);
        self.playout.clear();
        self.turn = Some(turn);
        self.inbound_rest.reply_began(Instant::now());
    }

    /// The caller paused long enough that the turn may be over: the reply to what they said so
    /// far is prepared, held until the turn really ends. Only when nothing else is in flight
    /// (a reply still playing would change the conversation the answer follows) and in
    /// cascade mode (a realtime provider detects its own turns).
    pub(super) async fn prepare_early_turn(&mut self) {
        if self.realtime.is_some()
            || self.keypad.is_typing()
            || self.utterance.is_empty()
            || self.is_replying(Instant::now())
        {
            return;
        }
        // The last reply finished playing but may not be in history yet (that waits for
        // housekeeping or the next turn): the answer must follow it.
        self.commit_finished_reply().await;
        let input = TurnInput::Speech {
            utterance: self.caller_utterance(self.utterance.clone()),
            // The upload made while the caller spoke has the audio so far: only its end is
            // left to send.
            live_upload: self.live_upload.take().map(|(upload, _)| upload),
            prompt: self.prompt(),
        };
        self.early_turn = Some(self.spawn_turn(input, Some(Instant::now())));
    }

    /// The caller went on after a pause: the reply prepared for it is dropped and, when their
    /// words are uploaded as they speak, a new upload takes the utterance so far (the prepared
    /// reply took the last one).
    pub(super) fn resume_turn(&mut self) {
        self.drop_early_turn();
        if self.live_upload.is_none() {
            self.begin_live_upload();
        }
    }

    /// The prepared reply no longer answers the turn (the caller went on): its requests are
    /// dropped with it.
    pub(super) fn drop_early_turn(&mut self) {
        if self.early_turn.take().is_some() {
            self.ctx.metrics.early_reply("dropped");
        }
    }

    pub(super) async fn on_turn_output(&mut self, output: Option<TurnOutput>) {
        let now = Instant::now();
        match output {
            Some(TurnOutput::Heard(text)) => {
                self.history.push(ChatMessage::new(ChatRole::User, text));
            }
            Some(TurnOutput::Sentence(text)) => {
                let start = self.playout.enqueued();
                self.reply.captions.push_back((start, text.clone()));
                self.reply.sentences.push(SpokenSentence {
                    text,
                    start_sample: start,
                    end_sample: None,
                    confirmed: false,
                });
            }
            Some(TurnOutput::ProviderWait(wait)) => {
                // A reply prepared early had a head start on the turn's clock: only the wait
                // left after the turn ended counts against its first audio.
                let head_start = self
                    .turn
                    .as_ref()
                    .and_then(|turn| turn.prepared_at)
                    .zip(self.speech_ended_at)
                    .map_or(Duration::ZERO, |(at, ended)| {
                        ended.saturating_duration_since(at)
                    });
                self.provider_wait = Some(wait.saturating_sub(head_start));
            }
            Some(TurnOutput::Audio(samples)) => {
                self.playout.push(&samples);
                self.arm_playout(now);
            }
            Some(TurnOutput::SentenceDone) => {
                let index = self.reply.sentences.len().saturating_sub(1);
                if let Some(sentence) = self.reply.sentences.last_mut() {
                    sentence.end_sample = Some(self.playout.enqueued());
                }
                let mark = format!("{}.{}", self.reply.id, index);
                let items = self.playout.end_sentence(Some(mark), now);
                // Per-sentence playback sends the sentence now, with its caption; paced
                // playback attaches captions to frames as they go out.
                let caption = if items.is_empty() {
                    None
                } else {
                    self.reply.captions.pop_front().map(|(_, t)| t)
                };
                for item in items {
                    if let PlayoutItem::Audio(samples) = item {
                        self.send_audio(samples, caption.as_deref());
                    }
                }
                self.arm_playout(now);
            }
            Some(TurnOutput::Done) | None => {
                self.turn = None;
                self.commit_finished_reply().await;
            }
            Some(TurnOutput::Failed(err)) => {
                self.turn = None;
                tracing::warn!(call_id = %self.call_id, error = %err, "provider failed");
                let code = ErrorCode::from_provider_code(err.caller_code());
                self.fail(code, &err.to_string());
            }
        }
    }

    /// Starts or resumes paced playback; a reply that had run dry counts as an audible gap.
    pub(super) fn arm_playout(&mut self, now: Instant) {
        self.playout.arm(now);
        self.ctx.metrics.reply_gaps(self.playout.take_gaps());
    }

    pub(super) fn fail(&mut self, code: ErrorCode, message: &str) {
        self.had_error = true;
        self.ctx.metrics.error(code);
        self.send(Outbound::Error { code, message });
    }

    pub(super) fn on_mark(&mut self, name: &str) {
        let Some((reply, index)) = name.split_once('.') else {
            return;
        };
        if reply.parse::<u32>().ok() != Some(self.reply.id) {
            return;
        }
        if let Some(sentence) = index
            .parse::<usize>()
            .ok()
            .and_then(|i| self.reply.sentences.get_mut(i))
        {
            sentence.confirmed = true;
            self.marks_seen = true;
        }
    }

    pub(super) fn send_due_frames(&mut self) {
        // Most wake-ups come with no reply queued: no clock read for those.
        if self.playout.next_deadline().is_none() {
            return;
        }
        let mut offset = self.playout.sent();
        let due = self.playout.pop_due(Instant::now());
        self.ctx.metrics.reply_gaps(self.playout.take_gaps());
        for item in due {
            match item {
                PlayoutItem::Audio(frame) => {
                    let caption = match self.reply.captions.front() {
                        Some((at, _)) if *at < offset + frame.len() as u64 => {
                            self.reply.captions.pop_front().map(|(_, t)| t)
                        }
                        _ => None,
                    };
                    offset += frame.len() as u64;
                    self.send_audio(frame, caption.as_deref());
                }
                PlayoutItem::Mark(name) => self.send(Outbound::Mark(&name)),
            }
        }
    }

    pub(super) fn send_audio(&mut self, samples: Vec<i16>, text: Option<&str>) {
        if let Some(ended) = self.speech_ended_at.take() {
            let latency = ended.elapsed();
            self.ctx.metrics.observe_first_audio(latency);
            if let Some(wait) = self.provider_wait.take() {
                let overhead = latency.saturating_sub(wait);
                self.ctx
                    .metrics
                    .turn_overhead
                    .observe(overhead.as_secs_f64());
            }
        }
        let frame = self.encoder.encode(Outbound::Audio {
            samples: &samples,
            format: self.out_format,
            text,
        });
        if let Some(frame) = frame {
            // A carrier that stops reading loses frames, not the call.
            if !self.socket.send_audio(frame) {
                tracing::debug!(call_id = %self.call_id, "carrier not reading, frame dropped");
                self.ctx.metrics.reply_frames_dropped.inc();
                return;
            }
            // The recording holds what the carrier was handed, nothing it never got.
            if let Some(recorder) = &self.recorder {
                recorder.assistant(samples, self.out_format.sample_rate);
            }
        }
    }

    pub(super) fn send(&mut self, out: Outbound<'_>) {
        if let Some(frame) = self.encoder.encode(out) {
            self.socket.send(frame);
        }
    }

    /// Caller speech over the reply: stop everything, flush the carrier, keep in history only
    /// what was heard.
    pub(super) async fn barge_in(&mut self) {
        if self.stop_reply().await {
            self.ctx.metrics.barge_ins.inc();
        }
    }

    /// Stops the reply in progress: cancels its turn, flushes the carrier, and keeps in history
    /// what the caller heard of it. Returns whether any of it had been played.
    pub(super) async fn stop_reply(&mut self) -> bool {
        let now = Instant::now();
        self.turn = None;
        let was_playing = self.playout.sent() > 0;
        if was_playing {
            self.send(Outbound::Clear);
            if let Some(recorder) = &self.recorder {
                recorder.cut();
            }
        }
        let heard = self.heard_so_far(now);
        if let (Some(item_id), Some(rt)) = (self.reply.item_id.take(), self.realtime.as_mut()) {
            let played_ms =
                (self.playout.played(now) * 1000 / u64::from(self.playout.rate().max(1))) as u32;
            let _ = rt.commands.truncate(item_id, played_ms).await;
        }
        self.playout.clear();
        self.reply.sentences.clear();
        self.reply.captions.clear();
        self.speech_ended_at = None;
        self.provider_wait = None;
        if !heard.is_empty() {
            self.history
                .push(ChatMessage::new(ChatRole::Assistant, heard));
            self.save_history().await;
        }
        was_playing
    }

    pub(super) fn heard_so_far(&mut self, now: Instant) -> String {
        let enqueued = self.playout.enqueued();
        for sentence in &mut self.reply.sentences {
            if sentence.end_sample.is_none() {
                sentence.end_sample = Some(enqueued);
            }
        }
        heard_text(
            &self.reply.sentences,
            self.playout.played(now),
            self.marks_seen,
        )
    }

    /// A reply that finished playing goes into history whole.
    pub(super) async fn commit_finished_reply(&mut self) {
        if self.turn.is_some() || self.reply.sentences.is_empty() {
            return;
        }
        if self.playout.is_active(Instant::now()) {
            return;
        }
        let text = self
            .reply
            .sentences
            .drain(..)
            .map(|s| s.text)
            .collect::<Vec<_>>()
            .join(" ");
        self.history
            .push(ChatMessage::new(ChatRole::Assistant, text));
        self.save_history().await;
    }

    pub(super) async fn save_history(&mut self) {
        let messages: Vec<ChatMessage> = self.history.messages().cloned().collect();
        self.ctx.store.save(&self.call_id, messages).await;
    }
}

pub(super) async fn next_output(turn: &mut Option<ActiveTurn>) -> Option<TurnOutput> {
    match turn {
        Some(turn) => turn.output.recv().await,
        None => std::future::pending().await,
    }
}
