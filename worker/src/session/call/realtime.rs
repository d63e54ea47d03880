//! Realtime mode of a call: the provider's speech-to-speech session opened, fed, listened
//! to and, when it is lost, replaced without the caller losing their words.

use std::time::Instant;

use futures::StreamExt;

use super::{CallSession, Ending};
use crate::media::{StreamResampler, mulaw};
use crate::protocols::ErrorCode;
use crate::providers::{
    ChatMessage, ChatRole, ProviderError, RealtimeCommand, RealtimeEvent, RealtimeOptions,
    RealtimeSession, ServerVad,
};
use crate::session::history::SpokenSentence;
use crate::session::playout::PlayoutItem;
use crate::session::realtime_guard::Overdue;
use crate::session::uplink::Uplink;

/// What a new realtime session is told when the caller's last words were lost with the old one.
/// Instructions, not a script, so the model answers in the conversation's language.
pub const LOST_WORDS: &str = "The connection dropped while the caller was speaking and their last \
words were lost. Briefly apologise and ask them to say it again.";

impl CallSession {
    /// Opens a provider session for the call, given the conversation so far; on a call that
    /// has had no conversation yet, it is asked for the greeting. Returns whether it was.
    pub(super) async fn open_realtime(&mut self) -> Result<bool, ProviderError> {
        let spec = &self.pipeline.config.spec;
        let options = RealtimeOptions {
            instructions: spec.llm.system_prompt.clone(),
            vad: ServerVad::from_spec(&spec.turn_detection),
            input_transcription_model: Some(spec.stt.model.clone()),
        };
        let session = self
            .pipeline
            .providers
            .realtime
            .connect(&spec.realtime, options)
            .await?;
        self.realtime = Some(session);
        self.realtime_guard.session_opened();
        self.uplink = Some(Uplink::new(
            &spec.turn_detection,
            spec.realtime.input_chunk_ms,
        ));
        if self.in_rate != 8_000 {
            self.to_8k = StreamResampler::new(self.in_rate, 8_000).ok();
        }
        if self.out_format.sample_rate != 8_000 {
            self.from_8k = StreamResampler::new(8_000, self.out_format.sample_rate).ok();
        }
        // A resumed call: the new provider session starts empty, so it is given what was said.
        if let Some(rt) = self.realtime.as_mut() {
            for message in self.history.messages() {
                if message.role == ChatRole::System {
                    continue;
                }
                let add = RealtimeCommand::AddMessage(message.clone());
                rt.commands.send(add).await?;
            }
        }
        if self.history.is_empty()
            && let Some(greeting) = self.greeting()
            && let Some(rt) = self.realtime.as_mut()
        {
            let instructions = Some(format!("Say exactly: {greeting}"));
            let _ = rt
                .commands
                .send(RealtimeCommand::CreateResponse { instructions })
                .await;
            self.realtime_guard.expect_answer(Instant::now());
            return Ok(true);
        }
        Ok(false)
    }

    /// The provider's realtime session ended mid-call (a dropped connection, the provider's
    /// session time limit): a new one is opened with the conversation so far, and the caller
    /// only hears the reply in progress stop, as after a barge-in. Errors a new session would
    /// meet again (a refused key, a bad request), a new session that cannot be opened, and more
    /// than [`crate::session::realtime_guard::REALTIME_RECONNECTS`] losses in a row end the call with an
    /// error.
    async fn realtime_lost(&mut self, err: Option<ProviderError>) -> Option<Ending> {
        let (code, message): (ErrorCode, String) = match &err {
            Some(err) => (
                ErrorCode::from_provider_code(err.caller_code()),
                err.to_string(),
            ),
            None => (ErrorCode::InternalError, "realtime session closed".into()),
        };
        self.realtime = None;
        let loss = self.realtime_guard.session_lost();
        let still_speaking = self.uplink.as_ref().is_some_and(Uplink::caller_speaking);
        let retryable = err.as_ref().is_none_or(ProviderError::is_retryable);
        if retryable && self.realtime_guard.may_reopen() {
            // The reply in progress stops, as after a barge-in; the caller's words are owed an
            // answer unless they heard part of it.
            let heard_some = self.stop_reply().await;
            let owed = loss.owed(heard_some);
            tracing::warn!(call_id = %self.call_id, error = %message, attempt = self.realtime_guard.losses_in_a_row(), "realtime session lost; opening a new one");
            match self.open_realtime().await {
                Ok(greeting) => {
                    self.ctx.metrics.realtime_reconnects.inc();
                    // Words owed an answer are never left in silence. Words the old session
                    // took down with it (a reset connection loses what was in flight) are
                    // played to the new one, whose turn detection answers them as usual (or
                    // hears the rest, if the caller is still talking); the worker keeps them
                    // until answered or transcribed, as the new session may be lost with them
                    // too. Words the old session had transcribed, or typed ones, are in the
                    // conversation, so the new session is asked to answer; if neither, the
                    // caller is asked to say it again. A greeting lost before the caller heard
                    // any of it was asked of the new session already: the caller said nothing
                    // to lose.
                    let turn_audio = self.realtime_guard.kept_audio();
                    tracing::debug!(call_id = %self.call_id, owed, heard_some, still_speaking, kept_audio_bytes = turn_audio.len(), "realtime session replaced");
                    if owed && !turn_audio.is_empty() {
                        if let Some(rt) = self.realtime.as_mut()
                            && rt.commands.append_audio(turn_audio).await.is_ok()
                        {
                            self.realtime_guard.replayed(Instant::now());
                        }
                    } else if owed && !still_speaking && !greeting {
                        let instructions = (!loss.in_text()).then(|| LOST_WORDS.to_owned());
                        self.request_realtime_response(instructions).await;
                    }
                    return None;
                }
                Err(reopen) => {
                    // The caller hears why the call cannot go on: the new session's failure.
                    let code = ErrorCode::from_provider_code(reopen.caller_code());
                    self.fail(code, &format!("{message}; a new session failed: {reopen}"));
                    return Some(Ending::ProviderLost);
                }
            }
        }
        self.fail(code, &message);
        Some(Ending::ProviderLost)
    }

    /// Housekeeping: a session that let a deadline pass counts as lost.
    pub(super) async fn watch_realtime(&mut self, now: Instant) -> Option<Ending> {
        let speaking = self.uplink.as_ref().is_some_and(Uplink::caller_speaking);
        match self.realtime_guard.check(now, speaking) {
            Overdue::No => None,
            Overdue::NothingOwed => {
                tracing::debug!(call_id = %self.call_id, "kept audio held no speech for the new realtime session");
                None
            }
            Overdue::Lost(what) => self.realtime_lost(Some(ProviderError::Timeout(what))).await,
        }
    }

    /// Asks the realtime session for a response to the conversation as it stands (with
    /// `instructions` for this response only, when given).
    async fn request_realtime_response(&mut self, instructions: Option<String>) {
        let respond = RealtimeCommand::CreateResponse { instructions };
        if let Some(rt) = self.realtime.as_mut()
            && rt.commands.send(respond).await.is_ok()
        {
            self.realtime_guard.expect_answer(Instant::now());
        }
    }

    pub(super) async fn forward_to_realtime(&mut self, samples: &[i16], rate: u32) {
        let mut resampled = Vec::new();
        let samples = match self.to_8k.as_mut() {
            Some(r) if rate != 8_000 => {
                if r.push(samples, &mut resampled).is_err() {
                    return;
                }
                &resampled[..]
            }
            _ => samples,
        };
        let Some(uplink) = self.uplink.as_mut() else {
            return;
        };
        let mulaw = uplink.push(samples);
        if uplink.caller_speaking() {
            self.realtime_guard.caller_spoke();
        }
        let Some(mulaw) = mulaw else {
            return;
        };
        self.realtime_guard.audio_sent(&mulaw);
        if let Some(rt) = self.realtime.as_mut() {
            // Logged once per session: once the sink failed every frame fails the same way
            // until the session is replaced.
            let failed_before = rt.commands.has_failed();
            if let Err(err) = rt.commands.append_audio(mulaw).await
                && !failed_before
            {
                tracing::warn!(call_id = %self.call_id, error = %err, "realtime append failed");
            }
        }
    }

    pub(super) async fn on_realtime(
        &mut self,
        event: Option<Result<RealtimeEvent, ProviderError>>,
    ) -> Option<Ending> {
        let now = Instant::now();
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(err)) => return self.realtime_lost(Some(err)).await,
            None => return self.realtime_lost(None).await,
        };
        if !matches!(
            event,
            RealtimeEvent::AudioDelta { .. } | RealtimeEvent::TranscriptDelta { .. }
        ) {
            tracing::debug!(call_id = %self.call_id, ?event, due = ?self.realtime_guard.answer_due_in(now), unanswered = self.realtime_guard.unanswered(), "realtime event");
        }
        if let RealtimeEvent::ResponseDone { status, .. } = &event
            && status == "failed"
        {
            // The provider gave up on the answer: the caller would wait in silence, so the
            // session counts as lost and a new one answers what is owed.
            let failed = ProviderError::Failed(format!("realtime response {status}"));
            return self.realtime_lost(Some(failed)).await;
        }
        self.realtime_guard.on_event(&event, now);
        if let RealtimeEvent::ResponseDone { status, reason, .. } = &event
            && let Some(cause) = self.realtime_guard.unspoken_cause(status, reason)
        {
            // Nothing to replay or retry: the same words would be cut off again. The caller
            // hears silence and speaks again; operators see it counted.
            tracing::warn!(call_id = %self.call_id, %status, %reason, "realtime response ended before it said anything");
            self.ctx.metrics.unspoken_reply(cause);
        }
        match event {
            RealtimeEvent::SpeechStarted { .. } => {
                if self.playout.is_active(now) && self.pipeline.config.spec.turn_detection.barge_in
                {
                    self.barge_in().await;
                }
                // A reply that finished playing goes into history before what the caller now
                // says (housekeeping would commit it only within the next second).
                self.commit_finished_reply().await;
            }
            RealtimeEvent::SpeechStopped { .. } => {
                self.speech_ended_at = Some(now);
            }
            RealtimeEvent::InputTranscript { text, .. } => {
                // A new session would be given the words as text.
                self.commit_finished_reply().await;
                self.history.push(ChatMessage::new(ChatRole::User, text));
            }
            RealtimeEvent::AudioDelta { item_id, audio, .. } => {
                if self.reply.item_id.as_deref() != Some(item_id.as_str()) {
                    self.commit_finished_reply().await;
                    self.reply = self.reply.next(Some(item_id));
                    self.playout.clear();
                    self.reply.sentences.push(SpokenSentence {
                        text: String::new(),
                        start_sample: 0,
                        end_sample: None,
                        confirmed: false,
                    });
                }
                let mut pcm = Vec::with_capacity(audio.len());
                mulaw::decode_into(&audio, &mut pcm);
                if let Some(r) = self.from_8k.as_mut() {
                    let mut out = Vec::new();
                    if r.push(&pcm, &mut out).is_ok() {
                        pcm = out;
                    }
                }
                self.playout.push(&pcm);
                self.arm_playout(now);
            }
            RealtimeEvent::TranscriptDelta { delta, .. } => {
                if let Some(sentence) = self.reply.sentences.last_mut() {
                    sentence.text.push_str(&delta);
                }
            }
            RealtimeEvent::AudioDone { .. } => {
                if let Some(sentence) = self.reply.sentences.last_mut() {
                    sentence.end_sample = Some(self.playout.enqueued());
                }
                let mark = format!("{}.0", self.reply.id);
                for item in self.playout.end_sentence(Some(mark), now) {
                    if let PlayoutItem::Audio(samples) = item {
                        self.send_audio(samples, None);
                    }
                }
                self.arm_playout(now);
            }
            RealtimeEvent::ServerError { code, message } => {
                tracing::warn!(call_id = %self.call_id, ?code, %message, "realtime provider error");
            }
            RealtimeEvent::ResponseDone { .. }
            | RealtimeEvent::ResponseCreated { .. }
            | RealtimeEvent::SessionUpdated
            | RealtimeEvent::Truncated { .. } => {}
        }
        None
    }
}

pub(super) async fn next_realtime(
    session: &mut Option<RealtimeSession>,
) -> Option<Result<RealtimeEvent, ProviderError>> {
    match session {
        Some(session) => session.events.next().await,
        None => std::future::pending().await,
    }
}
