//! What the caller sends, in cascade mode: audio through the VAD into the utterance (uploaded
//! while they speak where it can be), turns that end on silence or a keypad entry, and the
//! barge-in their first sound or digit causes.

use std::time::{Duration, Instant};

use super::{CallSession, Ending, MAX_UTTERANCE, preroll_samples};
use crate::media::{AudioEncoding, AudioFormat, VadEvent};
use crate::protocols::{InboundEvent, Outbound};
use crate::providers::{ChatMessage, ChatRole, RealtimeCommand, Utterance};
use crate::session::keypad::caller_text;
use crate::session::recent::RecentWindow;
use crate::session::turn::{STT_SAMPLE_RATE, TurnInput};

/// Room reserved for an utterance when speech starts: most caller turns fit.
const UTTERANCE_RESERVE: Duration = Duration::from_secs(3);
/// How many times a call task yields to its recorder when the recorder is half a queue behind
/// (a burst of caller frames): enough for it to catch up when it only lacked CPU time, few
/// enough to cost nothing when it is stuck on a slow disk (then frames are dropped and counted).
const RECORDER_YIELDS: usize = 8;

impl CallSession {
    pub(super) async fn on_inbound(&mut self, event: InboundEvent) -> Option<Ending> {
        match event {
            InboundEvent::Audio { samples, format } => {
                self.on_audio(&samples, format).await;
                if let Some(recorder) = &self.recorder {
                    recorder.caller(samples, format.sample_rate);
                    // A few turns for the recorder to catch up with a burst; never a wait.
                    for _ in 0..RECORDER_YIELDS {
                        if !recorder.is_behind() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
                None
            }
            InboundEvent::Mark(name) => {
                self.on_mark(&name);
                None
            }
            InboundEvent::Dtmf(digit) => {
                self.on_keypad(&digit).await;
                None
            }
            InboundEvent::End => Some(Ending::Hangup),
            InboundEvent::Start(_) | InboundEvent::Ignored => None,
        }
    }

    async fn on_audio(&mut self, samples: &[i16], format: AudioFormat) {
        if self.realtime.is_some() {
            self.forward_to_realtime(samples, format.sample_rate).await;
            return;
        }
        let mulaw = format.encoding == AudioEncoding::Mulaw;
        if format.sample_rate != self.in_rate || mulaw != self.in_mulaw {
            // The seed protocol fixes the format (rate and encoding) with the first audio
            // message.
            self.in_rate = format.sample_rate;
            self.in_mulaw = mulaw;
            self.utterance.clear();
            self.live_upload = None;
            self.preroll = RecentWindow::new(preroll_samples(self.in_rate));
            self.drop_early_turn();
        }
        let frame = (self.in_rate / 50).max(1) as usize;
        for chunk in samples.chunks(frame) {
            let frame_ms = (chunk.len() as u64 * 1000 / u64::from(self.in_rate)) as u32;
            let was_in_utterance = self.vad.in_utterance();
            let event = self.vad.process(chunk, frame_ms.max(1));
            if self.vad.in_utterance() || event == Some(VadEvent::TurnEnded) {
                if !was_in_utterance {
                    // Sized for a typical turn up front rather than regrown a dozen times.
                    self.utterance
                        .reserve(self.in_rate as usize * UTTERANCE_RESERVE.as_secs() as usize);
                    self.preroll.move_into(&mut self.utterance);
                }
                self.utterance.extend_from_slice(chunk);
                self.feed_live_upload();
            } else {
                if was_in_utterance {
                    // A burst too short to be speech.
                    self.utterance.clear();
                    self.live_upload = None;
                }
                self.preroll.push(chunk);
            }
            let too_long =
                self.utterance.len() as u64 >= MAX_UTTERANCE.as_secs() * u64::from(self.in_rate);
            match event {
                Some(VadEvent::SpeechStarted) => {
                    self.begin_live_upload();
                    self.on_caller_input_started().await
                }
                Some(VadEvent::TurnEnded) => self.on_turn_ended().await,
                Some(VadEvent::Paused) => self.prepare_early_turn().await,
                Some(VadEvent::Resumed) => self.resume_turn(),
                None if too_long => {
                    self.vad.reset();
                    self.on_turn_ended().await;
                }
                None => {}
            }
        }
    }

    /// Confirmed speech: its transcription starts uploading now, from the first sample kept.
    pub(super) fn begin_live_upload(&mut self) {
        self.live_upload = None;
        if self.in_rate > STT_SAMPLE_RATE {
            // Resampled for speech-to-text when the turn ends: sent whole then.
            return;
        }
        let stt = &self.pipeline.providers.stt;
        let spec = &self.pipeline.config.spec.stt;
        self.live_upload = self
            .ctx
            .in_turn_context(|| stt.begin_upload(self.in_rate, spec))
            .map(|upload| (upload, 0));
        self.feed_live_upload();
    }

    /// Hands the live upload what the utterance gained since it last did.
    fn feed_live_upload(&mut self) {
        if let Some((upload, fed)) = self.live_upload.as_mut()
            && let Some(new) = self.utterance.get(*fed..)
        {
            upload.push(new);
            *fed = self.utterance.len();
        }
    }

    /// The caller began speaking or typing: with barge-in on, the reply in flight stops.
    async fn on_caller_input_started(&mut self) {
        if self.is_replying(Instant::now()) && self.pipeline.config.spec.turn_detection.barge_in {
            self.barge_in().await;
        }
    }

    /// The caller finished a turn: a reply still in flight is superseded and the latency clock
    /// starts.
    async fn begin_caller_turn(&mut self, status: &str) {
        if self.is_replying(Instant::now()) {
            self.barge_in().await;
        }
        self.commit_finished_reply().await;
        self.speech_ended_at = Some(Instant::now());
        self.provider_wait = None;
        self.send(Outbound::Status {
            status: "processing",
            message: status,
        });
    }

    /// The system prompt and the conversation so far: what the next answer follows.
    pub(super) fn prompt(&self) -> Vec<ChatMessage> {
        self.history
            .prompt(&self.pipeline.config.spec.llm.system_prompt)
    }

    async fn on_turn_ended(&mut self) {
        let samples = std::mem::take(&mut self.utterance);
        let live_upload = self.live_upload.take().map(|(upload, _)| upload);
        if samples.is_empty() {
            self.drop_early_turn();
            return;
        }
        let early = self.early_turn.take();
        self.begin_caller_turn("caller turn ended").await;
        if let Some(early) = early {
            // The caller stayed quiet since the pause: what was prepared answers the turn (the
            // audio since is silence).
            self.ctx.metrics.early_reply("used");
            self.install_turn(early);
            return;
        }
        self.start_turn(TurnInput::Speech {
            utterance: self.caller_utterance(samples),
            live_upload,
            prompt: self.prompt(),
        });
    }

    /// The caller's `samples` as an utterance for speech-to-text.
    pub(super) fn caller_utterance(&self, samples: Vec<i16>) -> Utterance {
        Utterance {
            samples,
            sample_rate: self.in_rate,
            mulaw: self.in_mulaw,
        }
    }

    /// A keypad digit: the first of an entry interrupts the reply as speech does.
    async fn on_keypad(&mut self, digit: &str) {
        if !self.keypad.is_typing() {
            self.drop_early_turn();
            self.on_caller_input_started().await;
        }
        match self.keypad.press(digit, Instant::now()) {
            Ok(Some(entry)) => self.on_keypad_entry(entry).await,
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(call_id = %self.call_id, error = %err, "dtmf ignored");
            }
        }
    }

    /// A finished keypad entry is a caller turn, answered without speech-to-text.
    pub(super) async fn on_keypad_entry(&mut self, entry: String) {
        let text = caller_text(&entry);
        tracing::debug!(call_id = %self.call_id, %entry, "keypad entry");
        if let Some(rt) = self.realtime.as_mut() {
            let add = RealtimeCommand::AddMessage(ChatMessage::new(ChatRole::User, text.clone()));
            let respond = RealtimeCommand::CreateResponse { instructions: None };
            if rt.commands.send(add).await.is_err() || rt.commands.send(respond).await.is_err() {
                tracing::warn!(call_id = %self.call_id, "realtime session gone; keypad entry lost");
                return;
            }
            // A reply that finished playing goes into history before the entry.
            self.commit_finished_reply().await;
            self.history.push(ChatMessage::new(ChatRole::User, text));
            self.realtime_guard.caller_typed(Instant::now());
            return;
        }
        self.begin_caller_turn("keypad entry").await;
        self.start_turn(TurnInput::Typed {
            text,
            prompt: self.prompt(),
        });
    }
}
