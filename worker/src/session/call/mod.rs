//! The call task: admission of the announced call, then the media loop that owns every piece of
//! call state, its socket included. Nothing here is shared with other calls except through
//! `WorkerContext`'s atomics, so the media path takes no locks. The loop's parts live beside
//! it: what the caller sends in cascade mode (`call/caller.rs`), the reply and what of it goes
//! into history (`call/reply.rs`), and realtime mode's side (the provider's speech-to-speech
//! session, `call/realtime.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::{Sleep, sleep_until};

use crate::admission::{CallLag, CallPermit, TokenError, verify_token};
use crate::config::PipelineVersion;
use crate::context::WorkerContext;
use crate::media::{AudioEncoding, AudioFormat, StreamResampler, Vad};
use crate::protocols::{CallStart, Encoder, ErrorCode, InboundEvent, Outbound, Protocol};
use crate::providers::{ChatMessage, ChatRole, LiveUpload, RealtimeSession, provider_timeout};
use crate::recording::CallRecorder;
use crate::session::connection::PING_INTERVAL;
use crate::session::history::History;
use crate::session::inbound_rest::{
    DECISION_MARGIN, DRAIN_LIMIT, InboundRest, Interruptible, reply_period,
};
use crate::session::keypad::Keypad;
use crate::session::playout::Playout;
use crate::session::realtime_guard::RealtimeGuard;
use crate::session::recent::RecentWindow;
use crate::session::socket::{CallSocket, SocketEvent, close_code};
use crate::session::turn::TurnInput;
use crate::session::uplink::Uplink;
use callfleet_crds::PipelineMode;

mod caller;
mod realtime;
mod reply;

use reply::{ActiveTurn, Reply, next_output};

pub use realtime::LOST_WORDS;
use realtime::next_realtime;

/// Longest utterance kept for STT; longer speech is cut into turns of this length.
const MAX_UTTERANCE: Duration = Duration::from_secs(30);
/// How often a call checks its idle timeout and commits a finished reply: coarse, so 10,000
/// idle calls cost few wake-ups.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
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
                reply_period(
                    ctx.limits.inbound_rest,
                    ctx.limits.listening_rest,
                    Duration::from_millis(u64::from(spec.turn_detection.min_speech_ms)),
                ),
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
