//! Providers gone wrong, against a live worker: while calls take turns, random faults come and
//! go on the stand-in (rate limits, server errors, stalls before and during a stream, dropped
//! streams; on one endpoint or all, for a few requests, after letting some through). Every turn
//! must end with the reply or a clear error frame (`RATE_LIMIT`, `TIMEOUT`, `INTERNAL_ERROR`),
//! never hang; the call must stay usable; history must not hold text the caller did not hear;
//! and nothing may panic.
//!
//! The schedule comes from a seed printed at the start; `CALLFLEET_RANDOM_SEED=<hex>` replays
//! one (the interleaving with the calls still varies).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callfleet_tests::openai_standin::faults::{Endpoint, Fault, FaultRule};
use callfleet_tests::openai_standin::{OpenAiStandin, StandinConfig, StandinHandle};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

use support::calls::*;
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
    ]
}

fn change() -> impl Strategy<Value = Change> {
    let endpoint = prop::sample::select(vec![
        None,
        Some(Endpoint::Transcriptions),
        Some(Endpoint::Chat),
        Some(Endpoint::Speech),
    ]);
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
}

/// Speaks one utterance and reads until the reply's last sentence was played (its mark) or an
/// error frame came; acknowledges every mark, as a carrier does once audio has played.
async fn take_turn(s: &mut Socket, hz: f64) -> Outcome {
    say_seed(s, &utterance(hz, 8_000)).await;
    loop {
        let message = next_json(s).await.expect("the call stays open");
        match message["type"].as_str() {
            Some("error") => {
                let code = message["code"].as_str().unwrap_or_default().to_owned();
                assert!(
                    ["RATE_LIMIT", "TIMEOUT", "INTERNAL_ERROR"].contains(&code.as_str()),
                    "a provider failure is reported with one of the seed's codes: {message}"
                );
                return Outcome::Failed(code);
            }
            Some("mark") => {
                let name = message["name"].as_str().unwrap_or_default().to_owned();
                send_text(
                    s,
                    serde_json::json!({"type": "mark", "name": name}).to_string(),
                )
                .await;
                // The stand-in's replies have two sentences; marks are `<reply>.<sentence>`.
                if name.ends_with(".1") {
                    return Outcome::Answered;
                }
            }
            _ => {}
        }
    }
}

/// A call that takes turns until `stop` is set (at least `min_turns`), then vanishes (no
/// `end_call`), so the worker keeps its history for a resume and it can be checked.
async fn call(url: String, call: String, min_turns: usize, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    let mut s = connect(&url).await;
    send_text(&mut s, start_call(&call, Some(&token(&call)))).await;
    wait_for(&mut s, "status", "ready").await;
    let mut outcomes = Vec::new();
    while outcomes.len() < min_turns || !stop.load(Ordering::SeqCst) {
        let hz = [440.0, 880.0, 300.0][outcomes.len() % 3];
        outcomes.push(take_turn(&mut s, hz).await);
    }
    drop(s);
    outcomes
}

fn seed() -> ([u8; 32], String) {
    let seed: [u8; 32] = match std::env::var("CALLFLEET_RANDOM_SEED") {
        Ok(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex seed"))
            .collect::<Vec<u8>>()
            .try_into()
            .expect("32-byte seed"),
        Err(_) => rand::random(),
    };
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    println!("CALLFLEET_RANDOM_SEED={hex}");
    (seed, hex)
}

async fn quick_standin() -> StandinHandle {
    // Short replies (10 ms of speech per character) keep the turns quick.
    OpenAiStandin::start(StandinConfig {
        speech_ms_per_char: 10,
        ..StandinConfig::instant()
    })
    .await
    .expect("stand-in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_provider_faults_end_every_turn_cleanly() {
    let panics_before = panics().load(Ordering::SeqCst);
    let (seed, hex) = seed();
    let mut runner = TestRunner::new_with_rng(
        Default::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let schedule: Vec<Change> = prop::collection::vec(change(), 10..30)
        .new_tree(&mut runner)
        .expect("schedule")
        .current();

    let standin = quick_standin().await;
    // A one-second provider timeout keeps stalls short; one retry exercises the retry path.
    let pipeline = pipeline_json_with(&standin.base_url(), 1, 1, 1, TURNS);
    let w = start_worker(&pipeline, |a| a.openai_api_key = Some("sk-test".into())).await;

    // The calls take turns for as long as the faults come and go.
    let stop = Arc::new(AtomicBool::new(false));
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let url = w.url("/ws/call-session");
            tokio::spawn(call(url, format!("pf-{i}"), 1, stop.clone()))
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
            .expect("call task");
        for outcome in outcomes {
            let key = match outcome {
                Outcome::Answered => "answered".to_owned(),
                Outcome::Failed(code) => code,
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
    let after = call(w.url("/ws/call-session"), "pf-0".into(), 1, once).await;
    assert!(
        matches!(after[..], [Outcome::Answered]),
        "{after:?} (seed {hex})"
    );
    assert_eq!(
        panics().load(Ordering::SeqCst),
        panics_before,
        "the worker panicked (seed {hex})"
    );
    w.stop().await;
}
