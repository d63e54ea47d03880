//! Carriers gone wrong, against a live worker: many connections at once send random scripts
//! (valid calls with speech, barge-in, marks and keypad digits for any name, mixed with garbage
//! frames of every protocol) and hang up or vanish. Whatever they send, the worker must not
//! panic, every call must end and release its slot, and a well-behaved call afterwards still gets
//! its answer.
//!
//! The scripts come from a seed printed at the start; `CALLFLEET_RANDOM_SEED=<hex>` replays one.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::Message;

use callfleet_tests::openai_standin::StandinHandle;
use callfleet_tests::s3proxy::S3Proxy;
use callfleet_worker::config::{RecordingFormat, ServeArgs};
use callfleet_worker::protocols::Protocol;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use support::calls::*;
use support::frames::{Frame, any_protocol, draw, frame, seeded_runner};
use support::recording::*;
use support::*;

/// Connections at once; each runs one script.
const CONNECTIONS: usize = 48;

#[derive(Debug, Clone)]
enum Step {
    /// Anything the protocol's generator makes, valid or not.
    Frame(Frame),
    /// A tone in the call's own format: starts a turn, or barges in on a reply.
    Speech {
        hz: u16,
        ms: u32,
    },
    Silence {
        ms: u32,
    },
    /// A playback acknowledgement, for names the worker sent and names it never did.
    Mark(String),
    Keypad(String),
    /// Lets replies flow before the next step.
    Pause {
        ms: u64,
    },
}

#[derive(Debug, Clone)]
enum Ending {
    /// The protocol's own end (`stop`, `end_call`, `hangup`); the worker must close.
    HangUp,
    /// The TCP connection just goes away.
    Vanish,
}

#[derive(Debug, Clone)]
struct Script {
    protocol: Protocol,
    /// Whether the call starts properly (with a valid token) before the steps.
    starts: bool,
    steps: Vec<Step>,
    ending: Ending,
}

fn step(protocol: Protocol) -> impl Strategy<Value = Step> {
    let name = prop_oneof![
        (0u32..4, 0usize..4).prop_map(|(reply, sentence)| format!("{reply}.{sentence}")),
        ".{0,12}",
        Just("18446744073709551616.1".to_owned()),
    ];
    prop_oneof![
        3 => frame(protocol).prop_map(Step::Frame),
        3 => (prop::sample::select(vec![440u16, 880, 300]), 20u32..900)
            .prop_map(|(hz, ms)| Step::Speech { hz, ms }),
        2 => (20u32..800).prop_map(|ms| Step::Silence { ms }),
        1 => name.prop_map(Step::Mark),
        1 => prop_oneof![Just("5".to_owned()), Just("#".to_owned()), ".{0,4}"].prop_map(Step::Keypad),
        2 => (0u64..400).prop_map(|ms| Step::Pause { ms }),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    any_protocol().prop_flat_map(|protocol| {
        (
            prop::bool::weighted(0.9),
            prop::collection::vec(step(protocol), 0..30),
            prop_oneof![Just(Ending::HangUp), Just(Ending::Vanish)],
        )
            .prop_map(move |(starts, steps, ending)| Script {
                protocol,
                starts,
                steps,
                ending,
            })
    })
}

/// The wire frames for one step of call `call`.
fn wire(protocol: Protocol, call: &str, step: &Step) -> Vec<Message> {
    let text = |t: String| vec![Message::Text(t.into())];
    let audio = |samples: Vec<i16>| -> Vec<Message> {
        match protocol {
            Protocol::Twilio => samples
                .chunks(160)
                .map(|f| Message::Text(twilio_media(call, f).into()))
                .collect(),
            Protocol::CallSession => samples
                .chunks(160)
                .map(|f| {
                    let data = mulaw_b64(f);
                    Message::Text(format!(r#"{{"type":"audio","data":"{data}"}}"#).into())
                })
                .collect(),
            Protocol::FreeSwitch => samples
                .chunks(320)
                .map(|f| Message::Binary(f.iter().flat_map(|s| s.to_le_bytes()).collect()))
                .collect(),
        }
    };
    let rate = match protocol {
        Protocol::FreeSwitch => 16_000,
        _ => 8_000,
    };
    match step {
        Step::Frame(Frame::Text(t)) => text(t.clone()),
        Step::Frame(Frame::Binary(b)) => vec![Message::Binary(b.clone().into())],
        Step::Speech { hz, ms } => audio(tone(f64::from(*hz), rate, *ms)),
        Step::Silence { ms } => audio(vec![0; (rate * ms / 1000) as usize]),
        Step::Mark(name) => text(match protocol {
            Protocol::Twilio => {
                serde_json::json!({"event": "mark", "streamSid": format!("MZ-{call}"),
                                                   "mark": {"name": name}})
                .to_string()
            }
            Protocol::CallSession => serde_json::json!({"type": "mark", "name": name}).to_string(),
            Protocol::FreeSwitch => {
                serde_json::json!({"type": "mark", "data": {"name": name}}).to_string()
            }
        }),
        Step::Keypad(digit) => text(match protocol {
            Protocol::Twilio => {
                serde_json::json!({"event": "dtmf", "dtmf": {"digit": digit}}).to_string()
            }
            Protocol::CallSession => r#"{"type":"teleport"}"#.to_owned(), // the seed has no keypad
            Protocol::FreeSwitch => {
                serde_json::json!({"type": "dtmf", "data": {"dtmf": digit}}).to_string()
            }
        }),
        Step::Pause { .. } => Vec::new(),
    }
}

fn start(protocol: Protocol, call: &str) -> Message {
    let body = match protocol {
        Protocol::Twilio => twilio_start(call),
        Protocol::CallSession => start_call(call, Some(&token(call))),
        Protocol::FreeSwitch => serde_json::json!({
            "callId": call, "token": token(call), "sampleRate": 16000,
            "bidirectionalAudio": {"enabled": true, "streaming": true, "sampleRate": 16000},
        })
        .to_string(),
    };
    Message::Text(body.into())
}

fn hang_up(protocol: Protocol, call: &str) -> Message {
    let body = match protocol {
        Protocol::Twilio => format!(r#"{{"event":"stop","streamSid":"MZ-{call}"}}"#),
        Protocol::CallSession => r#"{"type":"end_call"}"#.to_owned(),
        Protocol::FreeSwitch => r#"{"type":"hangup"}"#.to_owned(),
    };
    Message::Text(body.into())
}

fn path(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Twilio => "/ws/twilio",
        Protocol::CallSession => "/ws/call-session",
        Protocol::FreeSwitch => "/ws/freeswitch",
    }
}

/// Runs one script; an error says what the worker did wrong.
async fn run(url: String, call: String, script: Script) -> Result<(), String> {
    let socket = connect(&url).await;
    let (mut sink, mut stream) = socket.split();
    // Drain whatever the worker sends until it closes (replies, errors, flushes).
    let reader = tokio::spawn(async move {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    if serde_json::from_str::<serde_json::Value>(text.as_str()).is_err() {
                        return Err(format!("worker sent text that is not JSON: {text}"));
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok(())
    });
    let mut sent = !script.starts || sink.send(start(script.protocol, &call)).await.is_ok();
    for step in &script.steps {
        if !sent {
            break; // the worker closed the call (refused token, after the end): fine
        }
        if let Step::Pause { ms } = step {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
        }
        for message in wire(script.protocol, &call, step) {
            sent = sink.send(message).await.is_ok();
            if !sent {
                break;
            }
        }
    }
    match script.ending {
        Ending::HangUp => {
            let _ = sink.send(hang_up(script.protocol, &call)).await;
            match tokio::time::timeout(PATIENCE, reader).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(format!("reader failed: {e}")),
                Err(_) => Err("the worker did not close the call after the hang-up".into()),
            }
        }
        Ending::Vanish => {
            reader.abort();
            drop(sink);
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_carriers_never_break_the_worker() {
    random_carriers("", |_| {}).await.w.stop().await;
}

/// The same on four batching media threads, with turns on their own runtime: every hand-off
/// between a call and its turn crosses threads. Utterances are uploaded while callers speak,
/// so those uploads are opened from call threads onto the turn runtime, and abandoned by
/// callers who vanish mid-sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_carriers_never_break_a_batching_worker() {
    random_carriers(r#","stt":{"uploadWhileSpeaking":true}"#, |a| {
        a.media_threads = 4;
        a.event_batch_us = 1_000;
    })
    .await
    .w
    .stop()
    .await;
}

/// The same with every call recorded to a real S3-compatible server: each call that started,
/// however it went and ended, is in the bucket as one playable recording, and nothing is left
/// behind in the spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_carriers_lose_no_recording() {
    let s3 = S3Proxy::start().await.expect("S3Proxy");
    let spool = tempfile::tempdir().unwrap();
    let run = random_carriers("", |a| {
        record_to(a, &s3, spool.path(), RecordingFormat::Wav)
    })
    .await;
    let recordings = run.w.worker().ctx.recordings.clone().expect("recording");
    eventually(async || recordings.is_settled()).await;

    let mut expected: Vec<String> = (0..run.scripts.len())
        .filter(|&i| run.scripts[i].starts)
        .map(|i| format!("rnd-{i}"))
        .collect();
    expected.push("CA-after".into());
    let keys = keys(&s3).await;
    let client = s3.client().expect("client");
    for call in &expected {
        let mine: Vec<&String> = keys
            .iter()
            .filter(|k| {
                k.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with(&format!("{call}-")))
            })
            .collect();
        assert_eq!(mine.len(), 1, "{call} (seed {}): {keys:?}", run.hex);
        let object = client
            .get(&ObjectPath::from(mine[0].as_str()))
            .await
            .expect("get");
        let bytes = object.bytes().await.expect("body").to_vec();
        let wav = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV");
        assert_eq!(wav.spec().channels, 2, "{call}");
        assert_eq!(wav.len() as usize % 2, 0, "{call}: whole stereo frames");
    }
    assert_eq!(
        keys.len(),
        expected.len(),
        "no recording of a call that never started"
    );
    let (_, metrics) = get_text(&run.w.http("/metrics"), None).await;
    for line in [
        "callfleet_recording_errors_total 0",
        "callfleet_recording_frames_dropped_total 0",
        "callfleet_recording_spool_backlog 0",
    ] {
        assert!(
            metrics.contains(line),
            "{line} (seed {}) in {metrics}",
            run.hex
        );
    }
    assert_spool_empty(spool.path());
    run.w.stop().await;
}

/// What a run leaves for further checks.
struct Run {
    w: TestWorker,
    scripts: Vec<Script>,
    /// The seed, for failure messages.
    hex: String,
    _standin: StandinHandle,
}

/// 48 random carrier scripts against one worker whose pipeline has `extra` spec fields.
async fn random_carriers(extra: &str, tune: impl FnOnce(&mut ServeArgs)) -> Run {
    let panics_before = panics().load(Ordering::SeqCst);
    let (mut runner, hex) = seeded_runner();
    let scripts: Vec<Script> = (0..CONNECTIONS)
        .map(|_| draw(script(), &mut runner))
        .collect();

    // A short idle timeout (which also bounds the wait for a call's start) ends the scripts
    // that never start a call sooner; no script pauses that long.
    let (standin, w) = setup_with(extra, |a| {
        a.idle_timeout_seconds = 3;
        tune(a);
    })
    .await;
    let runs: Vec<_> = scripts
        .iter()
        .enumerate()
        .map(|(i, script)| {
            let call = format!("rnd-{i}");
            // A token on the URL, as carriers pass it, also spares started calls the per-IP
            // limit on new connections (they all come from 127.0.0.1).
            let url = match script.starts {
                true => format!("{}?token={}", w.url(path(script.protocol)), token(&call)),
                false => w.url(path(script.protocol)),
            };
            tokio::spawn(run(url, call, script.clone()))
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        if let Err(e) = run.await.expect("script task") {
            panic!("script {i} (seed {hex}): {e}\n{:#?}", scripts[i]);
        }
    }

    // Every call ended and gave its slot back, vanished ones included.
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.active_calls() == 0).await;
    assert_eq!(
        panics().load(Ordering::SeqCst),
        panics_before,
        "the worker panicked (seed {hex})"
    );

    // No call data made up: what history kept of a vanished call (it stays for a resume) says
    // only what the stand-in answered, cut where playback was at most.
    for (i, script) in scripts.iter().enumerate() {
        if matches!(script.ending, Ending::Vanish) {
            let call = format!("rnd-{i}");
            assert_history_is_the_standins_answers(&w, &call, &format!("seed {hex}")).await;
        }
    }

    // A well-behaved call afterwards is answered as usual.
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start("CA-after")).await;
    say_twilio(&mut s, "CA-after", &utterance(440.0, 8_000)).await;
    let mark = wait_for(&mut s, "event", "mark").await;
    assert_eq!(mark["streamSid"], "MZ-CA-after");
    assert_eq!(twilio_hang_up(&mut s, "CA-after").await, Some(1000));
    let (status, _) = get_text(&w.http("/health"), None).await;
    assert_eq!(status, 200);
    Run {
        w,
        scripts,
        hex,
        _standin: standin,
    }
}
