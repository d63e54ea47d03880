//! The call task: admission of the announced call, then the media loop that owns every piece of
//! call state, its socket included. Nothing here is shared with other calls except through
//! `WorkerContext`'s atomics, so the media path takes no locks. Realtime mode's side of the
//! loop (the provider's speech-to-speech session) is in `call/realtime.rs`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Sleep, sleep_until};

use crate::admission::{CallLag, CallPermit, TokenError, verify_token};
use crate::config::PipelineVersion;
use crate::context::WorkerContext;
use crate::media::{AudioEncoding, AudioFormat, StreamResampler, Vad, VadEvent};
use crate::protocols::{
    CallStart, Encoder, ErrorCode, InboundEvent, Outbound, PlaybackMode, Protocol,
};
use crate::providers::{
    ChatMessage, ChatRole, LiveUpload, RealtimeCommand, RealtimeSession, Utterance,
    provider_timeout,
};
use crate::recording::CallRecorder;
use crate::session::connection::PING_INTERVAL;
use crate::session::history::{History, SpokenSentence, heard_text};
use crate::session::inbound_rest::{DECISION_MARGIN, DRAIN_LIMIT, InboundRest, Interruptible};
use crate::session::keypad::{Keypad, caller_text};
use crate::session::playout::{Playout, PlayoutItem};
use crate::session::realtime_guard::RealtimeGuard;
use crate::session::recent::RecentWindow;
use crate::session::socket::{CallSocket, SocketEvent, close_code};
use crate::session::turn::{STT_SAMPLE_RATE, SpeechReading, TurnInput, TurnOutput, run_turn};
use crate::session::uplink::Uplink;
use callfleet_crds::PipelineMode;

mod realtime;

pub use realtime::LOST_WORDS;
use realtime::next_realtime;

/// Room reserved for an utterance when speech starts: most caller turns fit.
const UTTERANCE_RESERVE: Duration = Duration::from_secs(3);
/// Longest utterance kept for STT; longer speech is cut into turns of this length.
const MAX_UTTERANCE: Duration = Duration::from_secs(30);
/// How often a call checks its idle timeout and commits a finished reply: coarse, so 10,000
/// idle calls cost few wake-ups.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How many times a call task yields to its recorder when the recorder is half a queue behind
/// (a burst of caller frames): enough for it to catch up when it only lacked CPU time, few
/// enough to cost nothing when it is stuck on a slow disk (then frames are dropped and counted).
const RECORDER_YIELDS: usize = 8;
/// Audio kept from before the VAD fired, so the first syllable reaches STT.
const PREROLL: Duration = Duration::from_millis(300);

/// [`PREROLL`] in samples at `rate`.
fn preroll_samples(rate: u32) -> usize {
    (PREROLL.as_millis() as u64 * u64::from(rate) / 1000) as usize
}

/// Runs one connection's call from the first frame to the close.
pub async fn run_call(
    ctx: Arc<WorkerContext>,
    protocol: Protocol,
    presented_token: Option<String>,
    permit: CallPermit,
    mut socket: CallSocket,
) {
    let early = Encoder::before_start(protocol);
    let Some(start) = await_start(&ctx, &early, &mut socket).await else {
        socket.shutdown().await;
        return;
    };
    let token = start.token.clone().or(presented_token);
    let now_unix = unix_now();
    let verdict = match token.as_deref() {
        None => Err(TokenError::Missing),
        Some(token) => verify_token(&ctx.secret, token, &start.call_id, now_unix),
    };
    if let Err(err) = verdict {
        tracing::info!(call_id = %start.call_id, error = %err, "call refused");
        ctx.metrics.error(ErrorCode::Unauthorized);
        reject(
            &early,
            socket,
            ErrorCode::Unauthorized,
            &err.to_string(),
            close_code::POLICY,
        )
        .await;
        return;
    }
    let Some(pipeline) = ctx.pipelines.current() else {
        ctx.metrics.error(ErrorCode::InternalError);
        reject(
            &early,
            socket,
            ErrorCode::InternalError,
            "no pipeline is configured on this worker",
            close_code::INTERNAL,
        )
        .await;
        return;
    };
    ctx.metrics.call_started();
    let earlier = ctx.store.load(&start.call_id).await;
    let session = CallSession::new(ctx.clone(), protocol, start, pipeline, earlier, socket);
    tracing::info!(call_id = %session.call_id, protocol = protocol.as_str(), "call started");
    session.run().await;
    drop(permit);
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Waits for the protocol's start message, answering bad frames with error frames. On a
/// timeout the socket is told why and closed (the caller then only shuts it down).
async fn await_start(
    ctx: &WorkerContext,
    encoder: &Encoder,
    socket: &mut CallSocket,
) -> Option<CallStart> {
    let deadline = tokio::time::Instant::now() + ctx.limits.start;
    loop {
        let event = tokio::select! {
            event = socket.next() => event,
            _ = sleep_until(deadline) => {
                ctx.metrics.error(ErrorCode::Timeout);
                send_error(encoder, socket, ErrorCode::Timeout, "no call was started in time");
                socket.close(close_code::POLICY, ErrorCode::Timeout.as_str());
                return None;
            }
        };
        match event {
            SocketEvent::Event(InboundEvent::Start(start)) => return Some(*start),
            SocketEvent::Event(InboundEvent::End)
            | SocketEvent::Closed
            | SocketEvent::ClosedByPeer => return None,
            SocketEvent::Event(_) => {}
            SocketEvent::Invalid(err) => {
                ctx.metrics.error(err.code());
                send_error(encoder, socket, err.code(), &err.to_string());
            }
        }
    }
}

fn send_error(encoder: &Encoder, socket: &mut CallSocket, code: ErrorCode, message: &str) {
    if let Some(frame) = encoder.encode(Outbound::Error { code, message }) {
        socket.send(frame);
    }
}

/// Error frame, then close: the answer to a connection that may not have a call.
async fn reject(
    encoder: &Encoder,
    mut socket: CallSocket,
    code: ErrorCode,
    message: &str,
    close: u16,
) {
    send_error(encoder, &mut socket, code, message);
    socket.close(close, code.as_str());
    socket.shutdown().await;
}

/// A reply turn running in its own task.
struct ActiveTurn {
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
struct Reply {
    id: u32,
    sentences: Vec<SpokenSentence>,
    /// Sentence texts waiting for their first frame (sample offset, text).
    captions: VecDeque<(u64, String)>,
    /// Realtime mode: the provider's item being played.
    item_id: Option<String>,
}

/// How a call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The caller or carrier ended the call: forget its history.
    Hangup,
    /// The socket went away: keep history so a reconnect resumes.
    Lost,
    MaxDuration,
    Idle,
    ProviderLost,
}

impl Ending {
    /// How a call ends when its carrier closes the WebSocket with a close frame. FreeSWITCH's
    /// `mod_audio_fork` has no hang-up message: closing the socket is how it says the call or
    /// the fork ended, so that is a hang-up (history forgotten at once, not kept 10 minutes for
    /// a reconnect that will not come). The seed's protocol and Twilio's hang up with
    /// `end_call` and `stop`; a bare close there may be a client about to reconnect (a browser
    /// reloading), so the call is kept for it, as when the connection drops.
    fn on_close_frame(protocol: Protocol) -> Self {
        match protocol {
            Protocol::FreeSwitch => Ending::Hangup,
            Protocol::CallSession | Protocol::Twilio => Ending::Lost,
        }
    }
}

/// All state of one call.
struct CallSession {
    ctx: Arc<WorkerContext>,
    call_id: String,
    protocol: Protocol,
    encoder: Encoder,
    socket: CallSocket,
    pipeline: Arc<PipelineVersion>,
    out_format: AudioFormat,
    vad: Vad,
    utterance: Vec<i16>,
    /// The utterance's transcription, uploading while the caller speaks (from confirmed
    /// speech to the end of the turn), and how many of its samples it has been given.
    live_upload: Option<(Box<dyn LiveUpload>, usize)>,
    preroll: RecentWindow<i16>,
    in_rate: u32,
    /// The caller's audio comes as µ-law: its utterances can be uploaded as µ-law.
    in_mulaw: bool,
    history: History,
    /// Keypad digits of the entry being typed.
    keypad: Keypad,
    playout: Playout,
    reply: Reply,
    turn: Option<ActiveTurn>,
    /// A reply prepared during a pause in the caller's turn (`turnDetection.earlyReplyMs`).
    /// Its output is not read until the turn ends there, so it waits, holding no more than its
    /// channel, and is dropped (its requests with it) if the caller speaks again first.
    early_turn: Option<ActiveTurn>,
    /// Carrier acknowledges marks: trust them over the pacing estimate.
    marks_seen: bool,
    speech_ended_at: Option<Instant>,
    /// The current turn's waits on providers before its first audio.
    provider_wait: Option<Duration>,
    started_at: Instant,
    last_inbound: Instant,
    had_error: bool,
    realtime: Option<RealtimeSession>,
    /// Realtime mode: what the call owes the caller if the session is lost, and by when the
    /// provider must next be heard from.
    realtime_guard: RealtimeGuard,
    /// Realtime mode: caller audio to 8 kHz, when the carrier's rate differs.
    to_8k: Option<StreamResampler>,
    /// Realtime mode: provider audio to the carrier's rate, when it differs.
    from_8k: Option<StreamResampler>,
    /// Realtime mode: caller audio collected into fewer provider messages while quiet.
    uplink: Option<Uplink>,
    /// This call's recording, when the worker records calls: it is handed frames, never
    /// waited on.
    recorder: Option<CallRecorder>,
    /// Rests from reading the socket while no decision hangs on the caller's next frames.
    inbound_rest: InboundRest,
    /// How far behind this call's event loops run, for its turns' rests from reading speech.
    lag: CallLag,
}

impl CallSession {
    fn new(
        ctx: Arc<WorkerContext>,
        protocol: Protocol,
        start: CallStart,
        pipeline: Arc<PipelineVersion>,
        earlier: Vec<ChatMessage>,
        socket: CallSocket,
    ) -> Self {
        let spec = &pipeline.config.spec;
        let now = Instant::now();
        let recorder = ctx
            .recordings
            .as_ref()
            .map(|r| r.start_call(&start.call_id));
        Self {
            encoder: Encoder::new(protocol, &start),
            vad: Vad::new(&spec.turn_detection),
            history: History::new(spec.llm.max_history_turns, earlier),
            keypad: Keypad::default(),
            playout: Playout::new(start.playback, start.outbound.sample_rate),
            out_format: start.outbound,
            in_rate: start.inbound.sample_rate,
            in_mulaw: start.inbound.encoding == AudioEncoding::Mulaw,
            call_id: start.call_id,
            protocol,
            socket,
            utterance: Vec::new(),
            live_upload: None,
            preroll: RecentWindow::new(preroll_samples(start.inbound.sample_rate)),
            reply: Reply::default(),
            turn: None,
            early_turn: None,
            marks_seen: false,
            speech_ended_at: None,
            provider_wait: None,
            started_at: now,
            last_inbound: now,
            had_error: false,
            realtime: None,
            realtime_guard: RealtimeGuard::new(provider_timeout(&spec.provider), MAX_UTTERANCE),
            to_8k: None,
            from_8k: None,
            uplink: None,
            recorder,
            inbound_rest: InboundRest::new(
                ctx.limits.inbound_rest,
                ctx.limits.listening_rest,
                ctx.limits.wake_grid,
            ),
            lag: ctx.load.lag_of(crate::media_thread::index()),
            pipeline,
            ctx,
        }
    }

    async fn run(mut self) {
        self.send(Outbound::Status {
            status: "ready",
            message: "call started",
        });
        if self.pipeline.config.spec.mode == PipelineMode::Realtime {
            if let Err(err) = self.open_realtime().await {
                let code = ErrorCode::from_provider_code(err.caller_code());
                self.fail(code, &err.to_string());
                self.finish(Ending::ProviderLost).await;
                return;
            }
        } else if self.history.is_empty()
            && let Some(greeting) = self.greeting()
        {
            self.start_turn(TurnInput::Say(greeting));
        }
        let max_end = self.started_at + self.ctx.limits.max_call;
        // One timer for everything the call waits on besides its socket and its turn (the
        // next reply frame, a keypad entry's end, housekeeping, the maximum duration), set to
        // the earliest and re-armed only when that changes: the loop turns 50 times a second
        // per call, and every timer in the select is polled (its waker registered) each time.
        let timer = sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let grid = self.ctx.limits.wake_grid;
        let mut next_housekeeping = grid.before(Instant::now() + HOUSEKEEPING);
        let mut last_ping = Instant::now();
        // Set by a read (to whether it left a backlog): the next rest is decided at the top of
        // the loop, once the reply frames due on this wake-up are out.
        let mut read: Option<bool> = None;
        let ending = loop {
            // Whatever woke the call (mostly the caller's own 20 ms frames) also sends the reply
            // frames that are nearly due: the pacing timer is the fallback, not the clock.
            self.send_due_frames();
            if let Some(backlog) = read.take() {
                self.rest_from_reading(backlog);
            }
            // Before the socket is polled for frames as they come, never after.
            self.socket.rest(self.inbound_rest.resting());
            if self.inbound_rest.resting() {
                // A call that is not reading would otherwise write only when it reads again.
                self.socket.flush_now();
            }
            let due = [
                // A frame may leave up to a frame early: the tick before it is due.
                self.playout.next_deadline().map(|at| grid.before(at)),
                self.keypad.due(),
                self.inbound_rest.due(),
            ]
            .into_iter()
            .flatten()
            .fold(max_end.min(next_housekeeping), Instant::min);
            rearm(timer.as_mut(), due, &mut armed);
            tokio::select! {
                biased;
                event = self.socket.next(), if !self.inbound_rest.resting() => {
                    if let Some(ending) = self.on_socket_event(event).await {
                        break ending;
                    }
                    read = Some(false);
                }
                output = next_output(&mut self.turn) => self.on_turn_output(output).await,
                event = next_realtime(&mut self.realtime) => {
                    if let Some(ending) = self.on_realtime(event).await {
                        break ending;
                    }
                }
                // Reply frames go out at the top of the loop; the rest is checked here.
                _ = &mut timer => {
                    armed = None;
                    let now = Instant::now();
                    if now >= max_end {
                        break Ending::MaxDuration;
                    }
                    if self.inbound_rest.over(now) {
                        match self.drain_socket().await {
                            Ok(backlog) => read = Some(backlog),
                            Err(ending) => break ending,
                        }
                    }
                    if let Some(entry) = self.keypad.take_due(now) {
                        self.on_keypad_entry(entry).await;
                    }
                    if now < next_housekeeping {
                        continue;
                    }
                    next_housekeeping = grid.before(now + HOUSEKEEPING);
                    if let Some(ending) = self.watch_realtime(now).await {
                        break ending;
                    }
                    if self.last_inbound.elapsed() >= self.ctx.limits.idle {
                        break Ending::Idle;
                    }
                    if last_ping.elapsed() >= PING_INTERVAL {
                        last_ping = Instant::now();
                        self.socket.ping();
                    }
                    self.commit_finished_reply().await;
                }
            }
        };
        self.finish(ending).await;
    }

    async fn on_socket_event(&mut self, event: SocketEvent) -> Option<Ending> {
        match event {
            SocketEvent::Event(event) => {
                self.last_inbound = Instant::now();
                self.on_inbound(event).await
            }
            SocketEvent::Invalid(err) => {
                self.last_inbound = Instant::now();
                tracing::debug!(call_id = %self.call_id, error = %err, "bad frame");
                self.ctx.metrics.error(err.code());
                self.send(Outbound::Error {
                    code: err.code(),
                    message: &err.to_string(),
                });
                None
            }
            SocketEvent::Closed => Some(Ending::Lost),
            SocketEvent::ClosedByPeer => Some(Ending::on_close_frame(self.protocol)),
        }
    }

    /// After a rest: takes what arrived meanwhile, up to [`DRAIN_LIMIT`] frames. `Ok(true)`
    /// when more is waiting.
    async fn drain_socket(&mut self) -> Result<bool, Ending> {
        self.socket.read_through();
        for _ in 0..DRAIN_LIMIT {
            let Some(event) = self.socket.try_next() else {
                return Ok(false);
            };
            if let Some(ending) = self.on_socket_event(event).await {
                return Err(ending);
            }
        }
        Ok(true)
    }

    /// After reading: rests from the socket when nothing hangs on the caller's next frames
    /// (see `inbound_rest`). Realtime calls read as frames come: the provider decides their
    /// turns from the audio it is sent.
    ///
    /// While a reply plays, the rest ends at its next write, so one wake-up serves both (called
    /// once the reply frames due on this wake-up are out: the write after them is the one to
    /// meet). With no reply to barge into, rests are longer.
    fn rest_from_reading(&mut self, backlog: bool) {
        let room = if self.realtime.is_some() {
            None
        } else if let Some(left) = self.vad.undecided_for() {
            // Speech, a possible start of it, or a caller pausing in it: the frames before the
            // one that may decide (confirm the speech, end the turn, report a pause).
            Some(left.saturating_sub(DECISION_MARGIN))
        } else if self.vad.settled() {
            // Quiet: only a start of speech to notice, up to a rest late.
            Some(Duration::MAX)
        } else {
            None
        };
        let now = Instant::now();
        let interruptible = if self.is_replying(now) {
            Interruptible::Reply {
                next_write: self.playout.next_deadline(),
            }
        } else {
            Interruptible::Nothing
        };
        self.inbound_rest
            .after_read(room, backlog, now, interruptible);
    }

    /// The pipeline's greeting, when it has one.
    fn greeting(&self) -> Option<String> {
        self.pipeline
            .config
            .spec
            .greeting
            .clone()
            .filter(|g| !g.trim().is_empty())
    }

    async fn on_inbound(&mut self, event: InboundEvent) -> Option<Ending> {
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
    fn begin_live_upload(&mut self) {
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

    /// A reply is being produced or played.
    fn is_replying(&self, now: Instant) -> bool {
        self.turn.is_some() || self.playout.is_active(now)
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
    fn prompt(&self) -> Vec<ChatMessage> {
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
    fn caller_utterance(&self, samples: Vec<i16>) -> Utterance {
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
    async fn on_keypad_entry(&mut self, entry: String) {
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

    fn start_turn(&mut self, input: TurnInput) {
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
    fn install_turn(&mut self, turn: ActiveTurn) {
        self.reply = Reply {
            id: self.reply.id.wrapping_add(1),
            ..Reply::default()
        };
        self.playout.clear();
        self.turn = Some(turn);
        self.inbound_rest.reply_began(Instant::now());
    }

    /// The caller paused long enough that the turn may be over: the reply to what they said so
    /// far is prepared, held until the turn really ends. Only when nothing else is in flight
    /// (a reply still playing would change the conversation the answer follows) and in
    /// cascade mode (a realtime provider detects its own turns).
    async fn prepare_early_turn(&mut self) {
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
    fn resume_turn(&mut self) {
        self.drop_early_turn();
        if self.live_upload.is_none() {
            self.begin_live_upload();
        }
    }

    /// The prepared reply no longer answers the turn (the caller went on): its requests are
    /// dropped with it.
    fn drop_early_turn(&mut self) {
        if self.early_turn.take().is_some() {
            self.ctx.metrics.early_reply("dropped");
        }
    }

    async fn on_turn_output(&mut self, output: Option<TurnOutput>) {
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
    fn arm_playout(&mut self, now: Instant) {
        self.playout.arm(now);
        self.ctx.metrics.reply_gaps(self.playout.take_gaps());
    }

    fn fail(&mut self, code: ErrorCode, message: &str) {
        self.had_error = true;
        self.ctx.metrics.error(code);
        self.send(Outbound::Error { code, message });
    }

    fn on_mark(&mut self, name: &str) {
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

    fn send_due_frames(&mut self) {
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

    fn send_audio(&mut self, samples: Vec<i16>, text: Option<&str>) {
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

    fn send(&mut self, out: Outbound<'_>) {
        if let Some(frame) = self.encoder.encode(out) {
            self.socket.send(frame);
        }
    }

    /// Caller speech over the reply: stop everything, flush the carrier, keep in history only
    /// what was heard.
    async fn barge_in(&mut self) {
        if self.stop_reply().await {
            self.ctx.metrics.barge_ins.inc();
        }
    }

    /// Stops the reply in progress: cancels its turn, flushes the carrier, and keeps in history
    /// what the caller heard of it. Returns whether any of it had been played.
    async fn stop_reply(&mut self) -> bool {
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

    fn heard_so_far(&mut self, now: Instant) -> String {
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
    async fn commit_finished_reply(&mut self) {
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

    async fn save_history(&mut self) {
        let messages: Vec<ChatMessage> = self.history.messages().cloned().collect();
        self.ctx.store.save(&self.call_id, messages).await;
    }

    async fn finish(mut self, ending: Ending) {
        let now = Instant::now();
        self.turn = None;
        if !self.reply.sentences.is_empty() {
            let heard = self.heard_so_far(now);
            self.history
                .push(ChatMessage::new(ChatRole::Assistant, heard));
        }
        match ending {
            Ending::Hangup => self.ctx.store.end(&self.call_id).await,
            _ => self.save_history().await,
        }
        let (close, reason) = match ending {
            Ending::MaxDuration => (close_code::NORMAL, "max call duration reached"),
            Ending::Idle => (close_code::NORMAL, "no audio received: idle timeout"),
            Ending::ProviderLost => (close_code::INTERNAL, "provider unavailable"),
            Ending::Hangup | Ending::Lost => (close_code::NORMAL, "call ended"),
        };
        if matches!(ending, Ending::MaxDuration | Ending::Idle) {
            // Time limits are the seed's TIMEOUT, told to the caller before the close.
            self.fail(ErrorCode::Timeout, reason);
        }
        if ending != Ending::Lost {
            self.send(Outbound::Hangup);
            self.socket.close(close, reason);
        }
        if let Some(mut rt) = self.realtime.take() {
            let _ = rt.commands.close().await;
        }
        let duration = self.started_at.elapsed();
        self.ctx.metrics.call_ended(duration, self.had_error);
        tracing::info!(
            call_id = %self.call_id,
            protocol = self.protocol.as_str(),
            ?ending,
            seconds = duration.as_secs_f64(),
            "call ended"
        );
        self.socket.shutdown().await;
    }
}

/// Points a reused timer at `due` unless it is armed for that already (`armed` is `None`
/// after it fired).
fn rearm(timer: Pin<&mut Sleep>, due: Instant, armed: &mut Option<Instant>) {
    if *armed != Some(due) {
        timer.reset(tokio::time::Instant::from_std(due));
        *armed = Some(due);
    }
}

async fn next_output(turn: &mut Option<ActiveTurn>) -> Option<TurnOutput> {
    match turn {
        Some(turn) => turn.output.recv().await,
        None => std::future::pending().await,
    }
}
