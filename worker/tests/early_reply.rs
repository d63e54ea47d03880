//! Replies prepared during a pause (`turnDetection.earlyReplyMs`): the worker transcribes and
//! answers what the caller said so far once they have been quiet for the short window, holds
//! the answer, plays it the moment the turn really ends, and drops it when the caller goes on.

mod support;

use std::time::Duration;

use callfleet_tests::openai_standin::rules::chat_reply;
use callfleet_tests::openai_standin::{StandinConfig, StandinHandle};
use callfleet_worker::providers::ChatRole;
use support::calls::{
    quick_standin, say_twilio, setup_spec, tone, twilio_hang_up, twilio_start, until_history_has,
};
use support::*;

/// A long end-of-turn window (2 s) with a short early-reply one (200 ms): anything the
/// worker answers before the caller has been quiet for 2 s was prepared early.
const EAGER: &str = r#","turnDetection":{"silenceMs":2000,"minSpeechMs":100,"earlyReplyMs":200}"#;

async fn setup(spec: &str) -> (StandinHandle, TestWorker) {
    setup_spec(StandinConfig::instant(), spec, |_| {}).await
}

fn silence(ms: u32) -> Vec<i16> {
    vec![0; (8 * ms) as usize]
}

async fn metric(w: &TestWorker, series: &str) -> f64 {
    let (_, metrics) = get_text(&w.http("/metrics"), None).await;
    metric_value(&metrics, series).unwrap_or(0.0)
}

const FIRST_AUDIO_COUNT: &str = "callfleet_turn_first_audio_seconds_count";
const USED: &str = r#"callfleet_early_replies_total{outcome="used"}"#;
const DROPPED: &str = r#"callfleet_early_replies_total{outcome="dropped"}"#;

/// A worker with [`EAGER`] turn detection and a Twilio call on it whose caller said a 440 Hz
/// tone and has been quiet for 300 ms since: past the early-reply window, not at the end of the
/// turn. Returns once the reply's speech has been asked for.
async fn paused_call(call: &str) -> (StandinHandle, TestWorker, Socket) {
    paused_call_with(EAGER, call).await
}

/// As [`paused_call`] with the pipeline's spec fields `spec`.
async fn paused_call_with(spec: &str, call: &str) -> (StandinHandle, TestWorker, Socket) {
    let (standin, w) = setup(spec).await;
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &tone(440.0, 8_000, 600)).await;
    say_twilio(&mut s, call, &silence(300)).await;
    eventually(async || standin.stats().speech.requests >= 1).await;
    (standin, w, s)
}

/// After a pause, the caller sends `audio` and falls quiet until the turn ends: the reply
/// plays, one prepared reply was used and `dropped` were dropped.
async fn go_on_then_stop(w: &TestWorker, s: &mut Socket, call: &str, audio: &[i16], dropped: f64) {
    say_twilio(s, call, audio).await;
    say_twilio(s, call, &silence(2_100)).await;
    until_reply_audio(s).await;
    eventually(async || metric(w, USED).await == 1.0).await;
    assert_eq!(metric(w, DROPPED).await, dropped);
}

/// Reads the call's messages until the first reply audio frame.
async fn until_reply_audio(s: &mut Socket) {
    loop {
        match next_json(s).await {
            Some(msg) if msg["event"] == "media" => return,
            Some(_) => {}
            None => panic!("call closed before any reply audio"),
        }
    }
}

#[tokio::test]
async fn a_reply_prepared_in_a_pause_is_held_until_the_turn_ends_then_played() {
    let call = "CA-early";
    // 200 ms into the pause the whole reply is asked for: transcription, chat and speech.
    let (standin, w, mut s) = paused_call(call).await;
    let stats = standin.stats();
    assert_eq!((stats.transcriptions.requests, stats.chat.requests), (1, 1));
    // The turn is not over (300 of 2,000 ms of quiet): nothing of it is played. (Audio let
    // through would be on the wire within milliseconds; the wait only bounds the check.)
    let played = tokio::time::timeout(Duration::from_millis(500), until_reply_audio(&mut s)).await;
    assert!(played.is_err(), "reply audio before the turn ended");
    assert_eq!(metric(&w, FIRST_AUDIO_COUNT).await, 0.0);
    assert_eq!(metric(&w, USED).await, 0.0);

    say_twilio(&mut s, call, &silence(1_800)).await;
    until_reply_audio(&mut s).await;
    until_history_has(&w, call, &chat_reply("tone 440")).await;
    let stats = standin.stats();
    assert_eq!(
        (stats.transcriptions.requests, stats.chat.requests),
        (1, 1),
        "the prepared reply answered the turn; nothing was asked again"
    );
    assert_eq!(metric(&w, USED).await, 1.0);
    assert_eq!(metric(&w, DROPPED).await, 0.0);
    assert_eq!(metric(&w, FIRST_AUDIO_COUNT).await, 1.0);
    // The worker's own overhead is still measured: against the wait left after the turn ended.
    assert_eq!(
        metric(&w, "callfleet_turn_overhead_seconds_count").await,
        1.0
    );
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn a_caller_who_goes_on_after_a_pause_is_answered_for_everything_they_said() {
    let call = "CA-goes-on";
    // The reply to the first half is prepared...
    let (standin, w, mut s) = paused_call(call).await;
    // ...and the caller goes on: it is dropped, and the turn continues.
    go_on_then_stop(&w, &mut s, call, &tone(660.0, 8_000, 600), 1.0).await;

    // One caller turn, answered once, for both halves (the stand-in hears the mean pitch).
    let store = w.worker().ctx.store.clone();
    eventually(async || {
        store
            .load(call)
            .await
            .iter()
            .any(|m| m.role == ChatRole::Assistant)
    })
    .await;
    let history = store.load(call).await;
    let said: Vec<&str> = history
        .iter()
        .filter(|m| m.role == ChatRole::User)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(said.len(), 1, "one caller turn: {history:?}");
    assert!(
        said[0].starts_with("tone ") && said[0] != "tone 440",
        "the whole utterance was heard: {history:?}"
    );
    let answers: Vec<&str> = history
        .iter()
        .filter(|m| m.role == ChatRole::Assistant)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(answers, [chat_reply(said[0]).as_str()], "{history:?}");
    // The first half's transcription, then the whole's, prepared in the second pause.
    assert_eq!(standin.stats().transcriptions.requests, 2);
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn without_an_early_reply_window_nothing_is_asked_before_the_turn_ends() {
    let (standin, w) = setup(r#","turnDetection":{"silenceMs":2000,"minSpeechMs":100}"#).await;
    let call = "CA-patient";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &tone(440.0, 8_000, 600)).await;
    say_twilio(&mut s, call, &silence(2_100)).await;
    until_reply_audio(&mut s).await;
    let stats = standin.stats();
    assert_eq!((stats.transcriptions.requests, stats.chat.requests), (1, 1));
    assert_eq!(metric(&w, USED).await + metric(&w, DROPPED).await, 0.0);
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn a_keypad_entry_during_a_pause_drops_the_prepared_reply() {
    let call = "CA-typed";
    let (_standin, w, mut s) = paused_call(call).await;
    send_text(&mut s, support::calls::twilio_dtmf(call, "7")).await;
    eventually(async || metric(&w, DROPPED).await == 1.0).await;
    assert_eq!(metric(&w, USED).await, 0.0);
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn a_reply_prepared_just_after_the_last_one_played_follows_it() {
    let (standin, w) = setup_spec(quick_standin(), EAGER, |_| {}).await;
    let call = "CA-follows";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &tone(440.0, 8_000, 600)).await;
    say_twilio(&mut s, call, &silence(2_100)).await;
    // The first reply's last sentence has gone out...
    loop {
        let msg = next_json(&mut s).await.expect("the call goes on");
        if msg["event"] == "mark"
            && msg["mark"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(".1"))
        {
            break;
        }
    }
    // ...and played (the worker keeps the reply out of history until it has, and commits it
    // on its next housekeeping round, up to a second later).
    tokio::time::sleep(Duration::from_millis(300)).await;
    say_twilio(&mut s, call, &tone(660.0, 8_000, 600)).await;
    say_twilio(&mut s, call, &silence(300)).await;
    eventually(async || standin.stats().chat.requests == 2).await;
    assert_eq!(
        standin.stats().chat_last_messages,
        4,
        "the prepared reply's prompt: system, the caller, the first reply, the caller again"
    );
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

/// [`EAGER`] with the caller's words uploaded as they speak.
const EAGER_LIVE: &str = r#","turnDetection":{"silenceMs":2000,"minSpeechMs":100,"earlyReplyMs":200},"stt":{"uploadWhileSpeaking":true}"#;

#[tokio::test]
async fn a_reply_prepared_in_a_pause_finishes_the_upload_made_while_the_caller_spoke() {
    let call = "CA-early-live";
    let (standin, w, mut s) = paused_call_with(EAGER_LIVE, call).await;
    // The caller goes on: a new upload takes the whole utterance, and the reply prepared in the
    // next pause finishes it.
    go_on_then_stop(&w, &mut s, call, &tone(440.0, 8_000, 600), 1.0).await;
    let stats = standin.stats();
    assert_eq!(
        (
            stats.transcriptions.requests,
            stats.transcription_chunked_uploads
        ),
        (2, 2),
        "every transcription was an upload made while the caller spoke: {stats:?}"
    );
    until_history_has(&w, call, &chat_reply("tone 440")).await;
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

/// `samples` as FreeSWITCH `mod_audio_fork` sends them: binary L16 frames of 20 ms.
async fn say_l16(s: &mut Socket, samples: &[i16], rate: u32) {
    for frame in samples.chunks((rate / 50) as usize) {
        let mut bytes = Vec::new();
        callfleet_worker::media::l16::encode_into(frame, &mut bytes);
        send_binary(s, bytes).await;
    }
}

#[tokio::test]
async fn on_freeswitch_the_prepared_reply_plays_sentence_by_sentence_once_the_turn_ends() {
    let (standin, w) = setup(EAGER).await;
    let call = "fs-early";
    let mut s = connect(&w.url("/ws/freeswitch")).await;
    let meta = format!(
        r#"{{"callId":"{call}","token":"{}","sampleRate":16000}}"#,
        token(call)
    );
    send_text(&mut s, meta).await;
    say_l16(&mut s, &tone(440.0, 16_000, 600), 16_000).await;
    say_l16(&mut s, &vec![0; 16 * 300], 16_000).await;
    eventually(async || standin.stats().speech.requests >= 1).await;
    let early = tokio::time::timeout(Duration::from_millis(500), next_json(&mut s)).await;
    assert!(early.is_err(), "nothing before the turn ended: {early:?}");

    say_l16(&mut s, &vec![0; 16 * 1_800], 16_000).await;
    let mut sentences = Vec::new();
    while sentences.len() < 2 {
        let m = next_json(&mut s).await.expect("reply");
        assert_eq!(m["type"], "playAudio", "{m}");
        sentences.push(
            m["data"]["textContent"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(
        sentences,
        ["I heard tone 440.", "What else can I do for you?"]
    );
    assert_eq!(metric(&w, USED).await, 1.0);
    assert_eq!(standin.stats().transcriptions.requests, 1);
    send_text(&mut s, r#"{"type":"stop"}"#).await;
    w.stop().await;
}

#[tokio::test]
async fn a_click_in_the_pause_keeps_the_prepared_reply() {
    let call = "CA-click";
    let (standin, w, mut s) = paused_call(call).await;
    // A 40 ms click, shorter than the 60 ms that end a pause: the prepared reply still answers
    // the turn, which ends 2 s after the click.
    go_on_then_stop(&w, &mut s, call, &tone(440.0, 8_000, 40), 0.0).await;
    assert_eq!(standin.stats().transcriptions.requests, 1);
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}
