//! The call itself: dial, stream the caller audio in real time as 20 ms frames (then silence, as
//! a phone line does), take the reply, acknowledge marks, and hang up once the reply is over.
//! A thin async shell around `carrier`, `timeline` and `audio_file`.

use std::time::{Duration, Instant, SystemTime};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
};

use callfleet_worker::media::format::FRAME;
use callfleet_worker::media::vad::frame_dbfs;
use callfleet_worker::protocols::{Incoming, WireFrame};
use callfleet_worker::providers::openai::trust::{client_config, parse_ca_bundle};

use super::args::{Args, TokenVia};
use super::audio_file::{Mono, convert, read_wav};
use super::carrier::{Carrier, CarrierSetup, WorkerEvent};
use super::error::CallError;
use super::timeline::{Timeline, TurnLatency};
use callfleet_worker::protocols::carrier::CarrierPlayhead;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Error codes that mean "this call may not happen", whenever they arrive.
const REFUSAL_CODES: [&str; 3] = ["UNAUTHORIZED", "WORKER_FULL", "DRAINING"];

/// What the call produced.
#[derive(Debug, Default)]
pub struct CallReport {
    pub call_id: String,
    pub url: String,
    pub connect_time: Duration,
    pub caller_audio: Duration,
    pub turns: Vec<TurnLatency>,
    pub greeting: Option<Duration>,
    pub reply: Vec<i16>,
    pub reply_rate: u32,
    pub transcript: Vec<String>,
    pub marks_acknowledged: usize,
    pub clears: usize,
    /// Error frames and unreadable frames during the call: (code, message).
    pub errors: Vec<(String, String)>,
    /// The worker ended the call before we hung up (close reason or `disconnect`).
    pub ended_by_worker: Option<String>,
    /// Caller speech still had no reply when the wait ran out.
    pub unanswered: bool,
}

/// Places the call described by `args`; `on_text` gets each reply sentence as it arrives and
/// `on_turn` each turn's latency.
pub async fn place_call(
    args: &Args,
    mut on_text: impl FnMut(&str),
    mut on_turn: impl FnMut(usize, &TurnLatency),
) -> Result<CallReport, CallError> {
    let endpoint = args.endpoint()?;
    let (call_id, token) = args.credentials(SystemTime::now())?;
    let mut carrier = Carrier::new(CarrierSetup {
        protocol: args.protocol,
        call_id: call_id.clone(),
        token: (args.token_via == TokenVia::Protocol).then(|| token.clone()),
        format: args.send_format()?,
        streaming: args.streaming,
    });
    let format = carrier.send_format();
    let audio = load_audio(args, format.sample_rate)?;

    let began = Instant::now();
    let mut socket = dial(args, &endpoint, &token).await?;
    let mut report = CallReport {
        call_id,
        url: endpoint,
        connect_time: began.elapsed(),
        caller_audio: format.duration_of(audio.len()),
        ..CallReport::default()
    };
    for frame in carrier.opening() {
        send(&mut socket, frame).await?;
    }

    let frame_samples = format.samples_per_frame();
    let total_frames = audio.len().div_ceil(frame_samples) as u64;
    let mut frame = vec![0i16; frame_samples];
    let started = Instant::now();
    let mut timeline = Timeline::new(started);
    let mut playback = CarrierPlayhead::default();
    let mut ticks = tokio::time::interval(FRAME);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    let mut audio_done: Option<Instant> = None;
    let mut last_reply: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let now = Instant::now();
                caller_frame(&audio, n, &mut frame);
                send(&mut socket, carrier.media(&frame)).await?;
                n += 1;
                let offset = FRAME * u32::try_from(n).unwrap_or(u32::MAX);
                timeline.caller_frame(now, offset, n <= total_frames && frame_dbfs(&frame) >= args.speech_dbfs);
                for name in playback.due_marks(now) {
                    if let Some(ack) = carrier.mark_ack(&name) {
                        send(&mut socket, ack).await?;
                        report.marks_acknowledged += 1;
                    }
                }
                if n < total_frames {
                    continue;
                }
                let done = *audio_done.get_or_insert(now);
                let reply_over = last_reply.is_some()
                    && !timeline.awaiting_reply()
                    && playback.done_at().is_none_or(|at| at + args.quiet() <= now)
                    && last_reply.is_some_and(|at| at + args.quiet() <= now);
                if reply_over {
                    break;
                }
                if now.duration_since(done) >= args.max_wait() {
                    report.unanswered = timeline.awaiting_reply();
                    break;
                }
            }
            message = socket.next() => {
                let now = Instant::now();
                let event = match &message {
                    Some(Ok(Message::Text(text))) => carrier.parse(Incoming::Text(text.as_str())),
                    Some(Ok(Message::Binary(bytes))) => carrier.parse(Incoming::Binary(bytes)),
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.as_ref().map(|f| f.reason.to_string()).unwrap_or_default();
                        let code = frame.as_ref().map_or(CloseCode::Status, |f| f.code);
                        if code == CloseCode::Policy || REFUSAL_CODES.contains(&reason.as_str()) {
                            return Err(CallError::refusal(&reason, ""));
                        }
                        report.ended_by_worker = Some(if reason.is_empty() { format!("closed ({})", u16::from(code)) } else { reason });
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(CallError::Failed(format!("connection lost: {error}"))),
                    None => return Err(CallError::Failed("connection lost".into())),
                };
                match event {
                    Ok(WorkerEvent::Audio { samples, rate, text }) => {
                        if let Some(turn) = timeline.reply_audio(now) {
                            on_turn(timeline.turns.len(), &turn);
                        }
                        let length = add_reply(&mut report, samples, rate)?;
                        playback.audio(now, length);
                        last_reply = Some(now);
                        if let Some(text) = text {
                            on_text(&text);
                            report.transcript.push(text);
                        }
                    }
                    Ok(WorkerEvent::Mark(name)) => playback.mark(now, name),
                    Ok(WorkerEvent::Clear) => {
                        playback.clear(now);
                        report.clears += 1;
                    }
                    Ok(WorkerEvent::Status { status, message }) => {
                        eprintln!("status: {status} ({message})");
                    }
                    Ok(WorkerEvent::Error { code, message }) => {
                        if REFUSAL_CODES.contains(&code.as_str()) {
                            return Err(CallError::refusal(&code, &message));
                        }
                        eprintln!("worker error: {code}: {message}");
                        report.errors.push((code, message));
                    }
                    Ok(WorkerEvent::Hangup) => {
                        report.ended_by_worker = Some("the worker hung up (disconnect)".into());
                        break;
                    }
                    Ok(WorkerEvent::Ignored) => {}
                    Err(error) => {
                        eprintln!("warning: {error}");
                        report.errors.push(("BAD_FRAME".into(), error.to_string()));
                    }
                }
            }
        }
    }
    report.greeting = timeline.greeting;
    report.turns = timeline.turns;
    hang_up(&mut socket, &mut carrier).await;
    Ok(report)
}

fn load_audio(args: &Args, rate: u32) -> Result<Vec<i16>, CallError> {
    let fail = |reason: String| CallError::Audio {
        path: args.wav.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(&args.wav).map_err(|e| fail(e.to_string()))?;
    let mono: Mono = read_wav(std::io::BufReader::new(file)).map_err(|e| fail(e.to_string()))?;
    convert(&mono, rate).map_err(|e| fail(e.to_string()))
}

/// Frame `n` of the caller audio into `frame` (the last one padded with silence), or silence
/// once the audio is over.
fn caller_frame(audio: &[i16], n: u64, frame: &mut [i16]) {
    let start = usize::try_from(n)
        .unwrap_or(usize::MAX)
        .saturating_mul(frame.len());
    let rest = audio.get(start..).unwrap_or_default();
    let take = rest.len().min(frame.len());
    frame[..take].copy_from_slice(&rest[..take]);
    frame[take..].fill(0);
}

/// Appends reply audio at the report's rate (the first reply's), returning its length.
fn add_reply(report: &mut CallReport, samples: Vec<i16>, rate: u32) -> Result<Duration, CallError> {
    if report.reply_rate == 0 {
        report.reply_rate = rate;
    }
    let length = Duration::from_micros(samples.len() as u64 * 1_000_000 / u64::from(rate.max(1)));
    if rate == report.reply_rate {
        report.reply.extend_from_slice(&samples);
    } else {
        let converted = convert(&Mono { samples, rate }, report.reply_rate)
            .map_err(|e| CallError::Failed(e.to_string()))?;
        report.reply.extend_from_slice(&converted);
    }
    Ok(length)
}

async fn dial(args: &Args, endpoint: &str, token: &str) -> Result<Socket, CallError> {
    let url = match args.token_via {
        TokenVia::Query => format!("{endpoint}?token={token}"),
        _ => endpoint.to_owned(),
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| CallError::BadUrl(format!("{endpoint}: {e}")))?;
    if args.token_via == TokenVia::Header {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CallError::Usage("the token is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let connector = match &args.ca_file {
        None => None,
        Some(path) => Some(trusting(path)?),
    };
    let timeout = Duration::from_secs(args.connect_timeout.max(1));
    let connect_error = |reason: String| CallError::Connect {
        url: endpoint.to_owned(),
        reason,
    };
    match tokio::time::timeout(
        timeout,
        connect_async_tls_with_config(request, Some(config), true, connector),
    )
    .await
    {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(WsError::Http(response))) => {
            let body: Option<serde_json::Value> = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok());
            let field = |name: &str| {
                body.as_ref()
                    .and_then(|b| b.get(name))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (code, message) = (field("code"), field("message"));
            if code.is_empty() {
                Err(CallError::Refused(format!(
                    "HTTP {} (is this a callfleet worker?)",
                    response.status()
                )))
            } else {
                Err(CallError::refusal(
                    &code,
                    &format!("HTTP {}: {message}", response.status().as_u16()),
                ))
            }
        }
        Ok(Err(WsError::Url(error))) => Err(CallError::BadUrl(format!("{endpoint}: {error}"))),
        Ok(Err(error)) => Err(connect_error(error.to_string())),
        Err(_) => Err(connect_error(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

/// A TLS connector trusting the public roots and the CA certificates in `path`.
fn trusting(path: &std::path::Path) -> Result<Connector, CallError> {
    let usage =
        |reason: String| CallError::Usage(format!("--ca-file {}: {reason}", path.display()));
    let pem = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
    let certs = parse_ca_bundle(&pem).map_err(|e| usage(e.to_string()))?;
    let config = client_config(&certs).map_err(|e| usage(e.to_string()))?;
    Ok(Connector::Rustls(config))
}

async fn send(socket: &mut Socket, frame: WireFrame) -> Result<(), CallError> {
    let message = match frame {
        WireFrame::Text(text) => Message::text(text),
        WireFrame::Binary(bytes) => Message::Binary(bytes),
    };
    socket
        .send(message)
        .await
        .map_err(|e| CallError::Failed(format!("sending to the worker failed: {e}")))
}

/// Ends the call the protocol's way, then closes and waits briefly for the worker's close.
async fn hang_up(socket: &mut Socket, carrier: &mut Carrier) {
    if let Some(frame) = carrier.hangup() {
        let _ = send(socket, frame).await;
    }
    let _ = socket.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_frames_pad_and_then_fall_silent() {
        let audio: Vec<i16> = (1..=5).collect();
        let mut frame = [9i16; 2];
        let mut at = |n| {
            caller_frame(&audio, n, &mut frame);
            frame
        };
        assert_eq!(at(0), [1, 2]);
        assert_eq!(at(2), [5, 0]);
        assert_eq!(at(3), [0, 0]);
        assert_eq!(at(u64::MAX), [0, 0]);
    }

    #[test]
    fn reply_audio_keeps_the_first_rate() {
        let mut report = CallReport::default();
        let length = add_reply(&mut report, vec![100; 160], 8_000).unwrap();
        assert_eq!(length, FRAME);
        add_reply(&mut report, vec![100; 320], 16_000).unwrap();
        assert_eq!(report.reply_rate, 8_000);
        assert_eq!(report.reply.len(), 320);
    }
}
