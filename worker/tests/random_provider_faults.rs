//! Providers gone wrong, against a live worker: while calls take turns, random faults come and
//! go on the stand-in (rate limits, server errors, stalls before, at and during a stream, dropped
//! streams; on one endpoint or all, for a few requests, after letting some through). Every turn
//! must end with the reply or a clear error frame (`RATE_LIMIT`, `TIMEOUT`, `INTERNAL_ERROR`),
//! never hang; history must not hold text the caller did not hear; and nothing may panic. In
//! the cascade (STT, chat, TTS over HTTP) the call always stays usable; in realtime mode a call
//! may end, but only after an error frame saying why (its session could not be replaced).
//!
//! The schedule comes from a seed printed at the start; `CALLFLEET_RANDOM_SEED=<hex>` replays
//! one (the interleaving with the calls still varies).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::SinkExt;

use callfleet_tests::openai_standin::OpenAiStandin;
use callfleet_tests::openai_standin::faults::{Endpoint, Fault, FaultRule};
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::Message;

use support::calls::*;
use support::frames::{draw, seeded_runner};
use support::*;

/// Calls at once, each taking turns while faults come and go.
const CALLS: usize = 8;

/// One change to the stand-in's faults, after a pause.
#[derive(Debug, Clone)]
struct Change {
    after_ms: u64,
    /// A fault to add, or `None` to clear them all.
    rule: Option<FaultRule>,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0u64..300).prop_map(|retry_after_ms| Fault::RateLimit { retry_after_ms }),
        prop::sample::select(vec![500u16, 502, 503])
            .prop_map(|status| Fault::ServerError { status }),
        Just(Fault::Stall),
        Just(Fault::StallMidStream),
        Just(Fault::DropMidStream),
        Just(Fault::StallAfterHeaders),
        Just(Fault::DropAfterSpeech),
        Just(Fault::DropBeforeTranscript),
        Just(Fault::StallInSpeech),
        Just(Fault::FailResponse),
    ]
}

/// How the worker under test answers: the cascade or one realtime session per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cascade,
    Realtime,
}

impl Mode {
    /// The pipeline spec fields for this mode.
    fn spec(self) -> String {
        match self {
            // Uploads while speaking: their fallbacks to whole uploads meet every fault too. And
            // replies prepared in the pause before the turn ends, so faults also land in
            // replies held back, dropped or played.
            Mode::Cascade => {
                r#","turnDetection":{"silenceMs":300,"minSpeechMs":100,"earlyReplyMs":120},"stt":{"uploadWhileSpeaking":true}"#.to_owned()
            }
            Mode::Realtime => format!(r#"{TURNS},"mode":"realtime""#),
        }
    }

    /// The end of a reply's last mark (`<reply>.<sentence>`): the cascade speaks the
    /// stand-in's two sentences separately, realtime mode a response as one.
    fn last_mark(self) -> &'static str {
        match self {
            Mode::Cascade => ".1",
            Mode::Realtime => ".0",
        }
    }
}

fn change(mode: Mode) -> impl Strategy<Value = Change> {
    let endpoints = match mode {
        Mode::Cascade => vec![
            None,
            Some(Endpoint::Transcriptions),
            Some(Endpoint::Chat),
            Some(Endpoint::Speech),
        ],
        Mode::Realtime => vec![None, Some(Endpoint::Realtime)],
    };
    let endpoint = prop::sample::select(endpoints);
    let rule = (endpoint, fault(), 1u32..4, 0u32..3).prop_map(|(endpoint, fault, count, skip)| {
        FaultRule::new(endpoint, fault, Some(count)).after(skip)
    });
    (0u64..600, prop::option::weighted(0.85, rule))
        .prop_map(|(after_ms, rule)| Change { after_ms, rule })
}

/// How one turn ended, from the caller's side.
#[derive(Debug)]
enum Outcome {
    Answered,
    Failed(String),
    /// The worker flushed a reply before its end: realtime mode replaced the provider session
    /// mid-reply, or the caller's words barged in on audio still playing after an error. The
    /// caller heard it stop and speaks again.
    Cut,
    /// The worker closed the call.
    Ended,
}

/// Speaks one utterance and reads until the reply's last sentence was played (its mark) or an
/// error frame came; acknowledges every mark, as a carrier does once audio has played.
async fn take_turn(s: &mut Socket, hz: f64, mode: Mode) -> Outcome {
    // Sending fails once the worker closed the call; what it said before closing is still read.
    let mut closed = false;
    let mut speech = utterance(hz, 8_000);
    if mode == Mode::Cascade && hz == 880.0 {
        // A pause mid-sentence, longer than the early-reply window: a reply is prepared, then
        // dropped when the caller goes on.
        let second_half = speech.split_off(4_800);
        speech.extend(vec![0i16; 1_600]);
        speech.extend(tone(hz, 8_000, 300));
        speech.extend(second_half);
    }
    for frame in speech.chunks(160) {
        let audio = serde_json::json!({"type": "audio", "data": mulaw_b64(frame)}).to_string();
        if s.send(Message::Text(audio.into())).await.is_err() {
            closed = true;
            break;
        }
    }
    let mut heard = false;
    loop {
        let Some(message) = next_json(s).await else {
            return Outcome::Ended;
        };
        match message["type"].as_str() {
            Some("error") => {
                let code = message["code"].as_str().unwrap_or_default().to_owned();
                assert!(
                    ["RATE_LIMIT", "TIMEOUT", "INTERNAL_ERROR"].contains(&code.as_str()),
                    "a provider failure is reported with one of the seed's codes: {message}"
                );
                // The caller stops sending after speaking, so only a worker that left them
                // waiting in silence for the whole idle timeout ends a turn this way.
                let why = message["message"].as_str().unwrap_or_default();
                assert!(
                    !why.contains("idle timeout"),
                    "the caller was left in silence: {message}"
                );
                return Outcome::Failed(code);
            }
            _ if closed => {}
            Some("audio_response") => heard = true,
            // A flush before this turn's reply began is the caller's own barge-in on the end
            // of the reply before (they speak as soon as its last frame is sent).
            Some("clear") if heard => return Outcome::Cut,
            Some("mark") => {
                let name = message["name"].as_str().unwrap_or_default().to_owned();
                let played = serde_json::json!({"type": "mark", "name": name}).to_string();
                if s.send(Message::Text(played.into())).await.is_err() {
                    return Outcome::Ended;
                }
                if name.ends_with(mode.last_mark()) {
                    return Outcome::Answered;
                }
            }
            _ => {}
        }
    }
}

/// Turns taken per connection: then the caller vanishes and the call is resumed on a new one
/// (as after a dropped carrier leg), so new provider sessions meet the faults of the moment.
const TURNS_PER_CONNECTION: usize = 2;

/// A call that takes turns until `stop` is set (at least `min_turns`). Each connection vanishes
/// (no `end_call`) after a few turns or when the worker closed it, and the call resumes on a
/// new one; the worker keeps its history in between, so it can be checked at the end. Errors
/// name a worker that closed a call without an error frame saying why, or in the cascade.
async fn call(
    url: String,
    call: String,
    mode: Mode,
    min_turns: usize,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Outcome>, String> {
    let mut outcomes = Vec::new();
    while outcomes.len() < min_turns || !stop.load(Ordering::SeqCst) {
        let mut s = connect(&url).await;
        send_text(&mut s, start_call(&call, Some(&token(&call)))).await;
        wait_for(&mut s, "status", "ready").await;
        let mut last: Option<Outcome> = None;
        for turn in 0..TURNS_PER_CONNECTION {
            let hz = [440.0, 880.0, 300.0][(outcomes.len() + turn) % 3];
            let outcome = take_turn(&mut s, hz, mode).await;
            if matches!(outcome, Outcome::Ended) {
                if mode == Mode::Cascade {
                    return Err(format!("{call}: the worker ended a cascade call"));
                }
                if !matches!(last, Some(Outcome::Failed(_))) {
                    return Err(format!("{call}: ended without an error frame saying why"));
                }
                break;
            }
            outcomes.extend(last.replace(outcome));
        }
        outcomes.extend(last);
    }
    Ok(outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_provider_faults_end_every_turn_cleanly() {
    random_provider_faults(Mode::Cascade).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_realtime_faults_end_every_turn_cleanly() {
    random_provider_faults(Mode::Realtime).await;
}

async fn random_provider_faults(mode: Mode) {
    let panics_before = panics().load(Ordering::SeqCst);
    let (mut runner, hex) = seeded_runner();
    let schedule: Vec<Change> = draw(prop::collection::vec(change(mode), 10..30), &mut runner);

    let standin = OpenAiStandin::start(quick_standin())
        .await
        .expect("stand-in");
    // A one-second provider timeout keeps stalls short; one retry exercises the retry path.
    let pipeline = pipeline_json_with(&standin.base_url(), 1, 1, 1, &mode.spec());
    let w = start_worker(&pipeline, |a| a.openai_api_key = Some("sk-test".into())).await;

    // The calls take turns for as long as the faults come and go.
    let stop = Arc::new(AtomicBool::new(false));
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let url = w.url("/ws/call-session");
            tokio::spawn(call(url, format!("pf-{i}"), mode, 1, stop.clone()))
        })
        .collect();
    for change in &schedule {
        tokio::time::sleep(Duration::from_millis(change.after_ms)).await;
        match change.rule {
            Some(rule) => standin.inject(rule),
            None => standin.clear_faults(),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for (i, call) in calls.into_iter().enumerate() {
        let outcomes = tokio::time::timeout(PATIENCE * 3, call)
            .await
            .unwrap_or_else(|_| panic!("call pf-{i} hung (seed {hex})\n{schedule:#?}"))
            .expect("call task")
            .unwrap_or_else(|e| panic!("{e} (seed {hex})\n{schedule:#?}"));
        for outcome in outcomes {
            let key = match outcome {
                Outcome::Answered => "answered".to_owned(),
                Outcome::Failed(code) => code,
                Outcome::Cut => "cut".to_owned(),
                Outcome::Ended => "ended".to_owned(),
            };
            *tally.entry(key).or_default() += 1;
        }
    }
    println!("turns: {tally:?}");
    standin.clear_faults();

    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.active_calls() == 0).await;
    for i in 0..CALLS {
        assert_history_is_the_standins_answers(&w, &format!("pf-{i}"), &format!("seed {hex}"))
            .await;
    }
    // With the faults gone, a resumed call is answered as usual.
    let once = Arc::new(AtomicBool::new(true));
    let after = call(w.url("/ws/call-session"), "pf-0".into(), mode, 1, once)
        .await
        .expect("a clean call");
    assert!(
        matches!(after[..], [Outcome::Answered, Outcome::Answered]),
        "{after:?} (seed {hex})"
    );
    assert_eq!(
        panics().load(Ordering::SeqCst),
        panics_before,
        "the worker panicked (seed {hex})"
    );
    w.stop().await;
}
