//! One simulated call: a single tokio task that connects, sends a media frame on every tick of
//! its one 20 ms interval, reads what the worker sends in between, acknowledges marks like a
//! carrier, and measures. No locks, no per-frame allocation on the send path. Replies are timed
//! by their arrival at the socket (the kernel's receive time, `arrival`), so a busy generator
//! does not add its own delay to the worker's latencies; that delay is reported on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::UrlError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use callfleet_worker::media::format::FRAME;

use super::pattern::{Pattern, Slot};
use super::stats::CallOutcome;
use super::timing::{ReplyPacing, lateness};
use super::wire::{
    FRAME_PAYLOAD_LEN, FrameBook, Reply, Wire, closing, mark_ack, opening, parse_reply,
};
use crate::arrival::ArrivalStream;
use callfleet_worker::protocols::carrier::CarrierPlayhead;

/// Read buffer per connection: small, like the worker's (tungstenite's 128 KiB default would be
/// zero-filled on every read and cost 128 KiB per call).
const READ_BUFFER: usize = 4 * 1024;

type Socket = WebSocketStream<ArrivalStream>;

/// What every call of a run shares (read-only but for the flags).
pub struct RunShared {
    pub wire: Wire,
    pub url: String,
    pub pattern: Pattern,
    pub frames: FrameBook,
    /// Frames of silence that end a caller turn (the pipeline's `silenceMs`).
    pub window_frames: u32,
    pub late: Duration,
    pub connect_timeout: Duration,
    /// Set once every call has connected (or failed) and the settle time passed.
    pub steady: AtomicBool,
    /// Set when the run is over: calls hang up on their next tick.
    pub stop: AtomicBool,
    /// Calls whose connection attempt finished, either way.
    pub settled: AtomicUsize,
    /// When the run began, the origin of per-turn times.
    pub began: Instant,
}

impl RunShared {
    fn steady(&self) -> bool {
        self.steady.load(Ordering::Relaxed)
    }
}

/// Who one call is.
#[derive(Debug, Clone)]
pub struct CallPlan {
    pub call_id: String,
    pub token: String,
    /// Where this call's cycles start on the run's clock (frames after the run began, modulo
    /// a cycle), to stagger calls; the call leads in with silence until then.
    pub lead_in: u32,
    /// Offset of this call's frame clock within a frame (see `timing::phase`).
    pub phase: Duration,
}

/// Runs one call until the run stops or the call fails.
pub async fn run_call(shared: Arc<RunShared>, plan: CallPlan) -> CallOutcome {
    let began = Instant::now();
    let connected = connect(&shared, &plan).await;
    shared.settled.fetch_add(1, Ordering::Relaxed);
    let mut socket = match connected {
        Ok(socket) => socket,
        Err(error) => return CallOutcome::failed(error),
    };
    let mut call = CallMeter::default();
    call.outcome.connected = true;
    call.outcome.connect_time = Some(began.elapsed());
    let error = stream(&shared, &plan, &mut socket, &mut call).await;
    match error {
        Some(error) => call.outcome.error = Some(error),
        None => {
            let _ = socket
                .send(Message::text(closing(shared.wire, &plan.call_id)))
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
        }
    }
    call.outcome
}

async fn connect(shared: &RunShared, plan: &CallPlan) -> Result<Socket, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let attempt = async {
        let request = shared.url.as_str().into_client_request()?;
        let uri = request.uri();
        // The socket is opened here to stamp receive times, without TLS: plain `ws://` only.
        if uri.scheme_str() != Some("ws") {
            return Err(WsError::Url(UrlError::UnsupportedUrlScheme));
        }
        let host = uri.host().ok_or(WsError::Url(UrlError::NoHostName))?;
        let port = uri.port_u16().unwrap_or(80);
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
        tcp.set_nodelay(true)?;
        client_async_with_config(request, ArrivalStream::new(tcp)?, Some(config)).await
    };
    let mut socket = match tokio::time::timeout(shared.connect_timeout, attempt).await {
        Ok(Ok((socket, _response))) => socket,
        Ok(Err(error)) => return Err(describe(error)),
        Err(_) => return Err("connect timeout".into()),
    };
    for frame in opening(shared.wire, &plan.call_id, &plan.token) {
        socket.send(Message::text(frame)).await.map_err(describe)?;
    }
    Ok(socket)
}

/// Sends media on schedule and handles replies until stopped; returns why the call broke, if
/// it did.
async fn stream(
    shared: &RunShared,
    plan: &CallPlan,
    socket: &mut Socket,
    call: &mut CallMeter,
) -> Option<String> {
    let start = tokio::time::Instant::now() + plan.phase;
    let since_run_began = start.into_std().saturating_duration_since(shared.began);
    let lead_in = shared.pattern.anchored_lead_in(
        plan.lead_in,
        (since_run_began.as_micros() / FRAME.as_micros()) as u64,
    );
    let mut ticks = tokio::time::interval_at(start, FRAME);
    // A late tick fires at once and keeps the schedule: every frame's lateness is measured
    // against its own slot.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            due = ticks.tick() => {
                if shared.stop.load(Ordering::Relaxed) {
                    return None;
                }
                let slot = shared.pattern.slot(n, lead_in);
                let frame = match slot {
                    Slot::LeadIn => shared.frames.silence(),
                    Slot::Cycle { index, .. } => shared.frames.frame(index),
                };
                if let Err(error) = socket.send(Message::Text(frame)).await {
                    return Some(describe(error));
                }
                let now = Instant::now();
                call.sent(shared, slot, due.into_std(), now);
                for name in call.playhead.due_marks(now) {
                    let ack = mark_ack(shared.wire, &plan.call_id, &name);
                    if let Err(error) = socket.send(Message::text(ack)).await {
                        return Some(describe(error));
                    }
                    call.outcome.marks_acknowledged += u64::from(shared.steady());
                }
                n += 1;
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let read = Instant::now();
                    let arrived = socket.get_ref().last_arrival().unwrap_or(read).min(read);
                    call.received(shared, parse_reply(shared.wire, text.as_str()), arrived, read);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(match frame {
                        Some(frame) => format!("closed by worker: {} {}", u16::from(frame.code), frame.reason),
                        None => "closed by worker".into(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Some(describe(error)),
                None => return Some("connection lost".into()),
            },
        }
    }
}

/// The turn the caller is in: from the end of its speech until its next speech.
#[derive(Debug, Clone, Copy)]
struct Turn {
    /// The call's turn number, from 1.
    ordinal: u64,
    speech_end: Instant,
    window_closed: Option<Instant>,
    answered: bool,
    /// Its speech ended inside the steady window.
    measured: bool,
}

/// Per-call measurement state, updated by the call task only.
#[derive(Default)]
struct CallMeter {
    outcome: CallOutcome,
    turn: Option<Turn>,
    /// Reply audio is flowing that was already accounted for (answer or unprompted).
    reply_open: bool,
    pacing: ReplyPacing,
    playhead: CarrierPlayhead,
}

impl CallMeter {
    /// A frame for `slot`, due at `due`, finished sending at `now`.
    fn sent(&mut self, shared: &RunShared, slot: Slot, due: Instant, now: Instant) {
        let steady = shared.steady();
        if steady {
            let late = lateness(due, now);
            self.outcome.frames_sent += 1;
            if late > shared.late {
                self.outcome.frames_late += 1;
            }
            self.outcome.max_send_lateness = self.outcome.max_send_lateness.max(late);
        }
        let pattern = &shared.pattern;
        if pattern.closes_turn(slot)
            && let Some(turn) = self.turn.take()
            && turn.measured
            && steady
        {
            self.outcome.turns += 1;
            self.outcome.turns_answered += u64::from(turn.answered);
        }
        if pattern.ends_speech(slot) {
            self.turn = Some(Turn {
                ordinal: match slot {
                    Slot::Cycle { cycle, .. } => cycle + 1,
                    Slot::LeadIn => 0,
                },
                speech_end: now,
                window_closed: None,
                answered: false,
                measured: steady,
            });
            self.reply_open = false;
            self.pacing.restart();
        }
        if pattern.closes_window(slot, shared.window_frames)
            && let Some(turn) = self.turn.as_mut()
        {
            turn.window_closed = Some(now);
        }
    }

    /// A frame from the worker arrived at `at` (the kernel's receive time) and was read at
    /// `read`.
    fn received(&mut self, shared: &RunShared, reply: Reply<'_>, at: Instant, read: Instant) {
        let steady = shared.steady();
        match reply {
            Reply::Audio { payload_len } => {
                // The carrier's buffer ran dry before this frame: an audible gap (the first
                // frame of a reply has nothing before it to run dry).
                let underrun = self.pacing.frames() > 0 && !self.playhead.playing(at);
                self.playhead.audio(at, FRAME);
                let late = self.pacing.arrive(at);
                if steady {
                    self.outcome.reply_frames += 1;
                    self.outcome.reply_frames_late += u64::from(late > shared.late);
                    self.outcome.reply_underruns += u64::from(underrun);
                    self.outcome.reply_frames_misfit += u64::from(payload_len != FRAME_PAYLOAD_LEN);
                }
                self.first_audio(shared.began, at, read, steady);
            }
            Reply::Mark(name) => self.playhead.mark(at, name.to_owned()),
            Reply::Clear => {
                self.playhead.clear(at);
                self.pacing.restart();
                self.outcome.clears += u64::from(steady);
            }
            Reply::Error { code } => {
                *self
                    .outcome
                    .error_frames
                    .entry(code.to_owned())
                    .or_default() += 1;
            }
            Reply::Malformed => {
                *self
                    .outcome
                    .error_frames
                    .entry("MALFORMED_FRAME".into())
                    .or_default() += 1;
            }
            Reply::Other => {}
        }
    }

    /// Reply audio: the answer to the current turn if its window closed, else unprompted.
    fn first_audio(&mut self, began: Instant, at: Instant, read: Instant, steady: bool) {
        if self.reply_open {
            return;
        }
        self.reply_open = true;
        match self.turn.as_mut() {
            Some(turn) if !turn.answered && turn.window_closed.is_some() => {
                turn.answered = true;
                if turn.measured {
                    self.outcome
                        .ttfa
                        .push(at.saturating_duration_since(turn.speech_end));
                    self.outcome
                        .first_audio_read_delay
                        .push(read.saturating_duration_since(at));
                    if let Some(closed) = turn.window_closed {
                        self.outcome
                            .after_window
                            .push(at.saturating_duration_since(closed));
                        self.outcome
                            .window_closed_at
                            .push((closed.saturating_duration_since(began), turn.ordinal));
                    }
                }
            }
            _ => self.outcome.unprompted_replies += u64::from(steady),
        }
    }
}

/// A short reason for a failed connection or socket, e.g. `HTTP 503 WORKER_FULL`.
pub fn describe(error: WsError) -> String {
    match error {
        WsError::Http(response) => {
            let code = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
                .and_then(|json| json.get("code").and_then(|c| c.as_str()).map(str::to_owned));
            match code {
                Some(code) => format!("HTTP {} {code}", response.status().as_u16()),
                None => format!("HTTP {}", response.status().as_u16()),
            }
        }
        WsError::Io(error) => format!("io: {}", error.kind()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "connection closed".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::wire::Voice;

    fn shared(window_frames: u32) -> RunShared {
        let pattern = Pattern::new(Duration::from_millis(40), Duration::from_millis(100));
        RunShared {
            wire: Wire::Twilio,
            url: String::new(),
            frames: FrameBook::new(
                Wire::Twilio,
                &pattern,
                Voice {
                    tone_hz: 440,
                    amplitude: 0.3,
                },
            ),
            pattern,
            window_frames,
            late: Duration::from_millis(20),
            connect_timeout: Duration::from_secs(1),
            steady: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            settled: AtomicUsize::new(0),
            began: Instant::now(),
        }
    }

    /// Frames `range` of the pattern, each due at `due(n)` and sent `delay` after it.
    fn send_frames(
        meter: &mut CallMeter,
        shared: &RunShared,
        range: std::ops::Range<u64>,
        due: impl Fn(u64) -> Instant,
        delay: Duration,
    ) {
        for n in range {
            meter.sent(shared, shared.pattern.slot(n, 0), due(n), due(n) + delay);
        }
    }

    fn audio() -> Reply<'static> {
        Reply::Audio {
            payload_len: FRAME_PAYLOAD_LEN,
        }
    }

    /// Drives the meter through two cycles (2 speech + 5 silence frames each) with a reply in
    /// the first: times are synthetic, so this checks the bookkeeping, not a clock.
    #[test]
    fn turns_answers_and_overhead() {
        let shared = shared(2);
        let mut meter = CallMeter::default();
        let t0 = Instant::now();
        let at = |n: u64| t0 + FRAME * n as u32;
        send_frames(&mut meter, &shared, 0..4, at, Duration::from_millis(1));
        // Frame 1 ended speech; frame 3 closed the 2-frame window. Reply 100 ms after frame 3.
        let reply_at = at(3) + Duration::from_millis(100);
        // The worker's pacing: the lead frames with the first, then one per 20 ms; the sixth
        // frame comes 40 ms behind that schedule. The generator reads each 7 ms after it
        // arrived: the times are the arrivals.
        for offset in [0, 0, 0, 20, 40, 100] {
            let arrived = reply_at + Duration::from_millis(offset);
            let read = arrived + Duration::from_millis(7);
            meter.received(&shared, audio(), arrived, read);
        }
        meter.received(&shared, Reply::Mark("1.0"), reply_at, reply_at);
        send_frames(&mut meter, &shared, 4..8, at, Duration::from_millis(30));
        let o = &meter.outcome;
        assert_eq!(
            (o.turns, o.turns_answered),
            (1, 1),
            "closed by frame 7, the next cycle"
        );
        assert_eq!(o.ttfa, [reply_at - (at(1) + Duration::from_millis(1))]);
        assert_eq!(o.after_window, [Duration::from_millis(99)]);
        assert_eq!(
            o.window_closed_at.iter().map(|t| t.1).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(o.first_audio_read_delay, [Duration::from_millis(7)]);
        assert_eq!((o.reply_frames, o.reply_frames_late), (6, 1));
        // The playhead ran dry at +100 ms, just as the sixth frame arrived.
        assert_eq!(o.reply_underruns, 1);
        assert_eq!(o.unprompted_replies, 0);
        assert_eq!((o.frames_sent, o.frames_late), (8, 4));
        assert_eq!(o.max_send_lateness, Duration::from_millis(30));
        // The mark waits for the six frames to play.
        assert!(meter.playhead.due_marks(reply_at + FRAME * 5).is_empty());
        assert_eq!(meter.playhead.due_marks(reply_at + FRAME * 6), ["1.0"]);
    }

    #[test]
    fn unanswered_turns_and_unprompted_audio() {
        let shared = shared(2);
        let mut meter = CallMeter::default();
        let t0 = Instant::now();
        // A greeting before the caller ever spoke.
        meter.received(&shared, audio(), t0, t0);
        assert_eq!(meter.outcome.unprompted_replies, 1);
        send_frames(&mut meter, &shared, 0..15, |_| t0, Duration::ZERO);
        let o = &meter.outcome;
        assert_eq!((o.turns, o.turns_answered), (2, 0));
        assert!(o.ttfa.is_empty());
        meter.received(&shared, Reply::Error { code: "TIMEOUT" }, t0, t0);
        meter.received(&shared, Reply::Malformed, t0, t0);
        let codes: Vec<&String> = meter.outcome.error_frames.keys().collect();
        assert_eq!(codes, ["MALFORMED_FRAME", "TIMEOUT"]);
    }

    #[test]
    fn nothing_is_counted_before_the_steady_window() {
        let shared = shared(2);
        shared.steady.store(false, Ordering::Relaxed);
        let mut meter = CallMeter::default();
        let t0 = Instant::now();
        send_frames(&mut meter, &shared, 0..4, |_| t0, Duration::from_secs(1));
        shared.steady.store(true, Ordering::Relaxed);
        meter.received(
            &shared,
            audio(),
            t0 + Duration::from_secs(2),
            t0 + Duration::from_secs(2),
        );
        send_frames(&mut meter, &shared, 4..8, |_| t0, Duration::ZERO);
        let o = &meter.outcome;
        assert_eq!(o.frames_sent, 4);
        assert_eq!(o.turns, 0, "its speech ended before the window");
        assert!(o.ttfa.is_empty());
    }
}
