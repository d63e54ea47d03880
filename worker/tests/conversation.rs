//! Conversation behaviour over real calls: greeting, history cap, resume on reconnect, idle
//! timeout, sentence prefetch, speech read in bursts, and realtime mode, against the OpenAI stand-in.

mod support;

use callfleet_tests::openai_standin::{
    Endpoint, Fault, FaultRule, OpenAiStandin, StandinConfig, StandinHandle,
};
use callfleet_worker::protocols::ErrorCode;
use callfleet_worker::providers::{ChatMessage, ChatRole};
use support::calls::*;
use support::*;

#[tokio::test]
async fn greeting_is_spoken_once_and_not_on_resume() {
    let (_standin, w) = setup(r#","greeting":"Hello, this is callfleet.""#).await;
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("greet", Some(&token("greet")))).await;
    assert_eq!(
        seed_captions(&mut s, 1).await,
        ["Hello, this is callfleet."]
    );
    // The client acknowledges playback of the greeting (the mark after its last frame), so
    // speaking now is not a barge-in on it.
    let mark = wait_for(&mut s, "type", "mark").await;
    send_text(&mut s, mark.to_string()).await;
    // Speak, get the answer, then drop the connection without end_call.
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    assert_eq!(
        seed_captions(&mut s, 2).await,
        ["I heard tone 440.", "What else can I do for you?"]
    );
    let store = w.worker().ctx.store.clone();
    eventually(async || store.load("greet").await.len() == 3).await;
    drop(s);
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.active_calls() == 0).await;

    // Reconnecting with the same call id resumes: no second greeting, history kept.
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("greet", Some(&token("greet")))).await;
    wait_for(&mut s, "status", "ready").await;
    say_seed(&mut s, &utterance(550.0, 8_000)).await;
    assert_eq!(seed_captions(&mut s, 1).await, ["I heard tone 550."]);
    eventually(async || store.load("greet").await.len() == 5).await;
    let history = store.load("greet").await;
    assert_eq!(history[0].content, "Hello, this is callfleet.");
    assert_eq!(history[1].content, "tone 440");
    assert_eq!(history[3].content, "tone 550");

    // A clean hang-up forgets the call.
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    wait_closed(&mut s).await;
    eventually(async || store.load("greet").await.is_empty()).await;
    w.stop().await;
}

#[tokio::test]
async fn history_is_capped_at_max_history_turns() {
    let (_standin, w) = setup(r#","llm":{"maxHistoryTurns":1}"#).await;
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("cap", Some(&token("cap")))).await;
    let store = w.worker().ctx.store.clone();
    for (turn, hz) in [440.0, 550.0, 660.0].into_iter().enumerate() {
        say_seed(&mut s, &utterance(hz, 8_000)).await;
        seed_captions(&mut s, 2).await;
        let expected = format!("tone {}", hz as u32);
        eventually(async || {
            let h = store.load("cap").await;
            h.len() == 2 && h[0].content == expected
        })
        .await;
        assert!(turn < 3);
    }
    w.stop().await;
}

#[tokio::test]
async fn idle_calls_are_ended() {
    let (_standin, w) = setup_with("", |a| a.idle_timeout_seconds = 1).await;
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("idle", Some(&token("idle")))).await;
    wait_for(&mut s, "status", "ready").await;
    let error = wait_for(&mut s, "type", "error").await;
    assert_eq!(error["code"], "TIMEOUT");
    assert_eq!(wait_closed(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn realtime_mode_answers_and_barge_in_truncates() {
    let (standin, w) = setup(r#","mode":"realtime""#).await;
    let call = "CA-rt";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &utterance(440.0, 8_000)).await;
    let mut frames = 0;
    while frames < 25 {
        let m = next_json(&mut s).await.expect("reply");
        if m["event"] == "media" {
            let payload = m["media"]["payload"].as_str().unwrap();
            assert_eq!(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload)
                    .unwrap()
                    .len(),
                160
            );
            frames += 1;
        }
    }
    // Talk over the reply: the provider's VAD reports speech, the worker flushes Twilio.
    say_twilio(&mut s, call, &tone(880.0, 8_000, 400)).await;
    wait_for(&mut s, "event", "clear").await;
    let store = w.worker().ctx.store.clone();
    eventually(async || store.load(call).await.len() >= 2).await;
    let history = store.load(call).await;
    assert_eq!(history[0].content, "tone 440");
    assert_truncated(&history[1].content, REPLY_440.len());
    assert!(standin.stats().endpoint(Endpoint::Realtime).requests >= 1);
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn the_next_sentence_is_fetched_while_one_plays_so_a_reply_has_no_pauses() {
    // Speech takes 1.5 s to its first byte, then streams at three times real time: the first
    // sentence (about 1 s of audio) is all received long before the second sentence's first
    // byte would come if it were asked for only then.
    let config = StandinConfig {
        speech_first_byte_ms: 1_500,
        speech_pace: 3.0,
        ..StandinConfig::instant()
    };
    let (standin, w) = setup_standin(config, "", |_| {}).await;
    let call = "CA-prefetch";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &utterance(440.0, 8_000)).await;
    // A mark follows each sentence's last frame: after the second, the reply was all sent.
    wait_for(&mut s, "event", "mark").await;
    wait_for(&mut s, "event", "mark").await;
    assert_eq!(standin.stats().speech.requests, 2);
    // No pause for want of audio (a busy test machine may still send some frames late).
    assert_eq!(w.worker().ctx.metrics.reply_gaps_with("audio_late"), 0);
    until_history_has(&w, call, REPLY_440).await;
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn speech_streamed_faster_than_real_time_is_read_in_bursts_and_played_whole() {
    // Speech streams at four times real time in 40 ms chunks, as in the benchmark: once the call
    // holds enough unplayed audio, reading the stream rests and then takes what accumulated.
    let config = fast_speech_standin();
    let spoken: usize = reply_440_samples(&config, 8_000).iter().sum();
    let (standin, w) = setup_standin(config, "", |_| {}).await;
    let call = "CA-bursts";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &utterance(440.0, 8_000)).await;
    // A mark follows each sentence's last frame.
    let mut played = 0;
    let mut marks = 0;
    while marks < 2 {
        let m = next_json(&mut s).await.expect("reply");
        match m["event"].as_str() {
            Some("media") => {
                let payload = m["media"]["payload"].as_str().unwrap();
                played +=
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload)
                        .unwrap()
                        .len();
            }
            Some("mark") => marks += 1,
            _ => {}
        }
    }
    // Every chunk arrived, in full (both sentences' speech is whole 20 ms frames at 8 kHz).
    assert_eq!(played, spoken, "samples at 8 kHz played, of those spoken");
    let metrics = &w.worker().ctx.metrics;
    assert!(metrics.speech_read_rests.get() >= 1, "reading never rested");
    assert_eq!(metrics.reply_gaps_with("audio_late"), 0);
    assert_eq!(standin.stats().speech.completed, 2);
    until_history_has(&w, call, REPLY_440).await;
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn a_next_sentence_whose_speech_fails_is_reported_after_the_sentence_before_it() {
    let (standin, w) = setup("").await;
    // The second speech request (the reply's second sentence, read ahead) fails.
    let fault = Fault::ServerError { status: 500 };
    standin.inject(FaultRule::new(Some(Endpoint::Speech), fault, Some(1)).after(1));
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(
        &mut s,
        start_call("prefetch-fail", Some(&token("prefetch-fail"))),
    )
    .await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    let mut captions = Vec::new();
    let error = loop {
        let m = next_json(&mut s).await.expect("reply");
        if m["type"] == "error" {
            break m;
        }
        if let Some(text) = m["text"].as_str().filter(|t| !t.is_empty()) {
            captions.push(text.to_owned());
        }
    };
    assert_eq!(
        captions,
        ["I heard tone 440."],
        "the first sentence is spoken in full"
    );
    assert_eq!(error["code"], "INTERNAL_ERROR", "{error}");
    // The call goes on, and the next reply is whole.
    say_seed(&mut s, &utterance(550.0, 8_000)).await;
    assert_eq!(
        seed_captions(&mut s, 2).await,
        ["I heard tone 550.", "What else can I do for you?"]
    );
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    wait_closed(&mut s).await;
    w.stop().await;
}

/// A realtime-mode worker whose provider drops its first `drops` sessions on their first reply
/// (then applies `then`), and a seed-protocol call `call` started on it.
async fn realtime_call_with_drops(
    drops: u32,
    then: &[FaultRule],
    call: &str,
) -> (StandinHandle, TestWorker, Socket) {
    let drop = FaultRule::new(Some(Endpoint::Realtime), Fault::DropMidStream, Some(drops));
    let rules: Vec<FaultRule> = std::iter::once(drop).chain(then.iter().copied()).collect();
    realtime_call(&rules, 5, call).await
}

/// A realtime-mode worker whose provider applies `rules` and gives up on a silent session after
/// `timeout_seconds`, and a seed-protocol call `call` started on it.
async fn realtime_call(
    rules: &[FaultRule],
    timeout_seconds: u32,
    call: &str,
) -> (StandinHandle, TestWorker, Socket) {
    realtime_call_on(quick_standin(), TURNS, rules, timeout_seconds, call).await
}

/// As [`realtime_call`], on a stand-in configured by `config`, with `turns` as the pipeline's
/// turn-detection fields.
async fn realtime_call_on(
    config: StandinConfig,
    turns: &str,
    rules: &[FaultRule],
    timeout_seconds: u32,
    call: &str,
) -> (StandinHandle, TestWorker, Socket) {
    let standin = OpenAiStandin::start(config).await.expect("stand-in");
    let spec = format!(r#"{turns},"mode":"realtime""#);
    let pipeline = pipeline_json_with(&standin.base_url(), 1, timeout_seconds, 0, &spec);
    let w = start_worker(&pipeline, |a| a.openai_api_key = Some("sk-test".into())).await;
    for rule in rules {
        standin.inject(*rule);
    }
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call(call, Some(&token(call)))).await;
    wait_for(&mut s, "status", "ready").await;
    (standin, w, s)
}

#[tokio::test]
async fn realtime_history_keeps_the_order_of_the_conversation() {
    let (_standin, w, mut s) = realtime_call(&[], 5, "rt-order").await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    // The caller speaks again just after the reply has played (its mark acknowledged), before
    // the once-a-second housekeeping would have committed it: the reply still goes into
    // history before their next words.
    let mark = wait_for(&mut s, "type", "mark").await;
    send_text(&mut s, mark.to_string()).await;
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    say_seed(&mut s, &utterance(880.0, 8_000)).await;
    let reply_880 = "I heard tone 880. What else can I do for you?";
    until_history_has(&w, "rt-order", reply_880).await;
    let said = said_in(&w, "rt-order").await;
    assert_eq!(said, ["tone 440", REPLY_440, "tone 880", reply_880]);
    assert_eq!(seed_hang_up(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn a_realtime_session_refused_at_the_start_reports_why() {
    let limited = FaultRule::new(
        Some(Endpoint::Realtime),
        Fault::RateLimit { retry_after_ms: 0 },
        None,
    );
    let (_standin, w, mut s) = realtime_call(&[limited], 5, "rt-limited").await;
    let error = wait_for(&mut s, "type", "error").await;
    assert_eq!(error["code"], "RATE_LIMIT", "{error}");
    wait_closed(&mut s).await;
    w.stop().await;
}

#[tokio::test]
async fn a_silent_realtime_session_is_replaced_and_the_caller_answered() {
    // The first session takes the caller's audio but never answers.
    let stall = FaultRule::new(Some(Endpoint::Realtime), Fault::StallAfterHeaders, Some(1));
    let call = "rt-silent";
    let (standin, w, mut s) = realtime_call(&[stall], 2, call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    // After the provider timeout the session counts as lost; the new one answers what the
    // caller said, without their saying it again.
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.metrics.realtime_reconnects.get() == 1).await;
    until_seed_reply_audio(&mut s).await;
    until_history_has(&w, call, REPLY_440).await;
    assert_eq!(standin.stats().endpoint(Endpoint::Realtime).requests, 2);
    assert_eq!(seed_hang_up(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn words_lost_with_a_realtime_session_reach_the_next_one() {
    // The connection drops as the caller stops speaking, before the provider says so: their
    // words never reach history as text.
    let lost = FaultRule::new(Some(Endpoint::Realtime), Fault::DropAfterSpeech, Some(1));
    let call = "rt-lost-words";
    let (standin, w, mut s) = realtime_call(&[lost], 5, call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    // The worker kept the audio of the unanswered turn and plays it to the new session, which
    // answers it without the caller saying it again.
    answered_after_losses(standin, w, s, call, 0, 1).await;
}

#[tokio::test]
async fn words_lost_with_a_realtime_session_after_a_reply_are_answered() {
    // The greeting plays in full; then the connection drops as the caller stops speaking. The
    // greeting was audio the caller heard, but no answer to their words: the new session must
    // still hear them (once, the worker took an earlier reply's audio for part of the answer
    // and left the caller in silence).
    let lost = FaultRule::new(Some(Endpoint::Realtime), Fault::DropAfterSpeech, Some(1));
    let call = "rt-lost-after-greeting";
    let greeting = format!(r#"{TURNS},"greeting":"Hello.""#);
    let (standin, w, mut s) = realtime_call_on(quick_standin(), &greeting, &[lost], 5, call).await;
    // The caller speaks once the greeting is over (had they spoken over it, they would have
    // barged in and stopped it).
    greeting_played(&w, &mut s, call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    answered_after_losses(standin, w, s, call, 1, 1).await;
}

#[tokio::test]
async fn a_greeting_lost_with_a_realtime_session_is_said_by_the_next() {
    // The first session takes the greeting's request but never answers it. The new session is
    // asked for the greeting again, and for nothing else: the caller has said nothing, so
    // there are no lost words to apologise for (once, the worker asked for both, and the
    // apology replaced the greeting).
    let stall = FaultRule::new(Some(Endpoint::Realtime), Fault::StallAfterHeaders, Some(1));
    let call = "rt-lost-greeting";
    let greeting = format!(r#"{TURNS},"greeting":"Hello.""#);
    let (standin, w, mut s) = realtime_call_on(quick_standin(), &greeting, &[stall], 1, call).await;
    greeting_played(&w, &mut s, call).await;
    let said = said_in(&w, call).await;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].ends_with("Hello."), "{said:?}");
    assert_eq!(w.worker().ctx.metrics.realtime_reconnects.get(), 1);
    assert_eq!(standin.stats().endpoint(Endpoint::Realtime).requests, 2);
    assert_eq!(seed_hang_up(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn a_keypad_entry_lost_with_a_realtime_session_is_answered_by_the_next() {
    // The first session stalls once the greeting's first audio is out; the caller then types an
    // entry (barge-in off: the greeting is not stopped), which the stalled session never
    // answers. The entry is in the conversation as text, so the new session is asked to answer
    // it (once, the greeting's audio counted as the answer and the caller was left in silence).
    let turns = r#","turnDetection":{"silenceMs":300,"minSpeechMs":100,"bargeIn":false}"#;
    let spec = format!(r#"{turns},"greeting":"Hello.""#);
    let (standin, w) = realtime_worker_stalling_first_reply(quick_standin(), &spec).await;
    let call = "CA-rt-keys-lost";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    wait_for(&mut s, "event", "media").await;
    for digit in ["5", "#"] {
        send_text(&mut s, twilio_dtmf(call, digit)).await;
    }
    let answer = "I heard Keypad input: 5. What else can I do for you?";
    until_history_has(&w, call, answer).await;
    let said = said_in(&w, call).await;
    assert_eq!(
        said[said.len() - 2..],
        ["Keypad input: 5", answer],
        "{said:?}"
    );
    assert_eq!(w.worker().ctx.metrics.realtime_reconnects.get(), 1);
    assert_eq!(standin.stats().endpoint(Endpoint::Realtime).requests, 2);
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn a_realtime_response_the_provider_fails_is_answered_by_a_new_session() {
    // The first session hears and transcribes the caller, then reports every response it
    // starts as failed (no audio). The caller is not left waiting: the session counts as
    // lost and the new one, given the conversation, answers.
    let failing = FaultRule::new(Some(Endpoint::Realtime), Fault::FailResponse, Some(1));
    let call = "rt-failed-response";
    let (standin, w, mut s) = realtime_call(&[failing], 5, call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    answered_after_losses(standin, w, s, call, 0, 1).await;
}

#[tokio::test]
async fn a_realtime_response_cut_off_before_speaking_is_silence_counted_not_a_loss() {
    // The session filters every answer (`response.done` `incomplete`, reason
    // `content_filter`, no audio). Opening a new session would only be filtered again: the
    // session stays, the caller hears silence, each such turn is counted by its reason, and
    // the call goes on and hangs up cleanly.
    let filtered = FaultRule::new(Some(Endpoint::Realtime), Fault::ContentFilter, Some(1));
    let call = "rt-filtered";
    let (standin, w, mut s) = realtime_call(&[filtered], 1, call).await;
    let metrics = w.worker().ctx.metrics.clone();
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    eventually(async || metrics.unspoken_replies_with("content_filter") == 1).await;
    say_seed(&mut s, &utterance(880.0, 8_000)).await;
    eventually(async || metrics.unspoken_replies_with("content_filter") == 2).await;
    // Past the provider timeout (1 s) twice: time enough for a wrongly owed answer to count
    // as lost.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(metrics.realtime_reconnects.get(), 0);
    assert_eq!(standin.stats().endpoint(Endpoint::Realtime).requests, 1);
    assert_eq!(metrics.errors_with(ErrorCode::InternalError), 0);
    let said = said_in(&w, call).await;
    assert!(
        said.iter().all(|m| m.starts_with("tone ")),
        "nothing was said back: {said:?}"
    );
    assert_eq!(seed_hang_up(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn words_lost_with_two_realtime_sessions_in_a_row_reach_the_third() {
    // The session given the caller's kept words drops with them too: the worker still has them
    // for the next, rather than asking the caller to say them again.
    let lost = FaultRule::new(Some(Endpoint::Realtime), Fault::DropAfterSpeech, Some(2));
    let call = "rt-lost-twice";
    let (standin, w, mut s) = realtime_call(&[lost], 5, call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    answered_after_losses(standin, w, s, call, 0, 2).await;
}

#[tokio::test]
async fn a_realtime_session_wedged_while_the_caller_speaks_is_replaced() {
    // The provider says the caller started speaking, then nothing more: no word that they
    // stopped, so no answer is ever due. Once the caller is quiet for the provider timeout the
    // session counts as lost, and the new one answers their words.
    let wedged = FaultRule::new(Some(Endpoint::Realtime), Fault::StallInSpeech, Some(1));
    let call = "rt-wedged";
    let (standin, w, mut s) = realtime_call(&[wedged], 1, call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    answered_after_losses(standin, w, s, call, 0, 1).await;
}

#[tokio::test]
async fn a_noise_only_the_worker_took_for_words_is_not_answered_after_a_lost_session() {
    // The provider hears speech from -25 dBFS, the worker's own VAD from -40. The first
    // session stalls on its first reply's first audio; meanwhile the caller makes a noise at
    // about -34 dBFS, which the worker takes for words and keeps. The new session is given it,
    // hears no speech, and owes no answer: the call goes on (before, that silence counted as a
    // loss too, and the noise went to session after session until the call ended).
    let hears_less = StandinConfig {
        vad_threshold_dbfs: -25.0,
        ..quick_standin()
    };
    let (standin, w) = realtime_worker_stalling_first_reply(hears_less, TURNS).await;
    // A resumed call (no greeting): the first session's first audio is a reply to the caller.
    let call = "rt-noise";
    let ctx = w.worker().ctx.clone();
    let earlier = vec![
        ChatMessage::new(ChatRole::User, "tone 300"),
        ChatMessage::new(ChatRole::Assistant, "I heard tone 300."),
    ];
    ctx.store.save(call, earlier).await;
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call(call, Some(&token(call)))).await;
    wait_for(&mut s, "status", "ready").await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    wait_for(&mut s, "type", "audio_response").await;
    let noise: Vec<i16> = utterance(300.0, 8_000).iter().map(|s| s / 10).collect();
    say_seed(&mut s, &noise).await;
    eventually(async || ctx.metrics.realtime_reconnects.get() == 1).await;
    // Three provider timeouts: time enough for the new session to have counted as lost again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    say_seed(&mut s, &utterance(880.0, 8_000)).await;
    until_history_has(&w, call, "I heard tone 880. What else can I do for you?").await;
    assert_eq!(ctx.metrics.realtime_reconnects.get(), 1);
    assert_eq!(standin.stats().endpoint(Endpoint::Realtime).requests, 2);
    assert_eq!(seed_hang_up(&mut s).await, Some(1000));
    w.stop().await;
}

/// A realtime-mode worker (pipeline fields `spec`, a one-second provider timeout) on a
/// stand-in configured by `config` whose first session stalls after its first reply's first
/// audio.
async fn realtime_worker_stalling_first_reply(
    config: StandinConfig,
    spec: &str,
) -> (StandinHandle, TestWorker) {
    let standin = OpenAiStandin::start(config).await.expect("stand-in");
    let spec = format!(r#"{spec},"mode":"realtime""#);
    let pipeline = pipeline_json_with(&standin.base_url(), 1, 1, 0, &spec);
    let w = start_worker(&pipeline, |a| a.openai_api_key = Some("sk-test".into())).await;
    let stall = FaultRule::new(Some(Endpoint::Realtime), Fault::StallMidStream, Some(1));
    standin.inject(stall);
    (standin, w)
}

/// Waits until a seed-protocol call's greeting has played: acknowledges its mark, as the
/// carrier does, and waits for it to reach the call's history.
async fn greeting_played(w: &TestWorker, s: &mut Socket, call: &str) {
    let mark = wait_for(s, "type", "mark").await;
    send_text(s, mark.to_string()).await;
    let store = w.worker().ctx.store.clone();
    eventually(async || !store.load(call).await.is_empty()).await;
}

/// Ends a test whose caller said one 440 Hz turn while `losses` realtime sessions in a row were
/// lost: the next session answers it (history holds the turn and its answer after `earlier`
/// messages) without the caller saying it again, and the call hangs up cleanly.
async fn answered_after_losses(
    standin: StandinHandle,
    w: TestWorker,
    mut s: Socket,
    call: &str,
    earlier: usize,
    losses: u64,
) {
    until_seed_reply_audio(&mut s).await;
    until_history_has(&w, call, REPLY_440).await;
    let said = said_in(&w, call).await;
    assert_eq!(said[earlier..], ["tone 440", REPLY_440], "{call}: {said:?}");
    assert_eq!(w.worker().ctx.metrics.realtime_reconnects.get(), losses);
    assert_eq!(
        standin.stats().endpoint(Endpoint::Realtime).requests,
        losses + 1
    );
    assert_eq!(seed_hang_up(&mut s).await, Some(1000));
    w.stop().await;
}

/// A realtime call on a provider that hears quieter speech (-60 dBFS) than the worker's own
/// VAD (-30 dBFS) and drops its first session with `fault`, and a quiet caller's turn on it.
async fn quiet_caller_lost_with(fault: Fault, call: &str) -> (StandinHandle, TestWorker, Socket) {
    let hears_more = StandinConfig {
        vad_threshold_dbfs: -60.0,
        ..quick_standin()
    };
    let quiet_turns =
        r#","turnDetection":{"silenceMs":300,"minSpeechMs":100,"vadThresholdDbfs":-30}"#;
    let drop = FaultRule::new(Some(Endpoint::Realtime), fault, Some(1));
    let (standin, w, mut s) = realtime_call_on(hears_more, quiet_turns, &[drop], 5, call).await;
    // About -48 dBFS: a 440 Hz tone at a fiftieth of the test tones' level, at the pace a
    // carrier sends it (the provider's word that the caller started comes back while they talk).
    let quiet: Vec<i16> = utterance(440.0, 8_000).iter().map(|s| s / 50).collect();
    for frame in quiet.chunks(160) {
        say_seed(&mut s, frame).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (standin, w, s)
}

#[tokio::test]
async fn words_only_the_provider_heard_are_answered_by_the_next_session() {
    // The session drops while the provider hears the caller (before it says they stopped, or
    // after, before it transcribed them). The worker's own VAD took the quiet speech for
    // silence, but the provider said the caller started: the worker kept their audio from
    // then, with the half second before, and the new session answers it.
    for (fault, call) in [
        (Fault::DropAfterSpeech, "rt-quiet-1"),
        (Fault::DropBeforeTranscript, "rt-quiet-2"),
    ] {
        let (standin, w, s) = quiet_caller_lost_with(fault, call).await;
        answered_after_losses(standin, w, s, call, 0, 1).await;
    }
}

#[tokio::test]
async fn a_realtime_session_stalled_mid_reply_is_replaced() {
    let stall = FaultRule::new(Some(Endpoint::Realtime), Fault::StallMidStream, Some(1));
    let call = "rt-stalled";
    let (_standin, w, mut s) = realtime_call(&[stall], 2, call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.metrics.realtime_reconnects.get() == 1).await;
    // The caller heard the start of that reply; the next turn is answered in full.
    say_seed(&mut s, &utterance(880.0, 8_000)).await;
    until_history_has(&w, call, "I heard tone 880. What else can I do for you?").await;
    assert_eq!(seed_hang_up(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn a_lost_realtime_session_is_opened_again_with_the_conversation_so_far() {
    // The provider drops the first session's connection right after its first audio.
    let call = "rt-lost";
    let (standin, w, mut s) = realtime_call_with_drops(1, &[], call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.metrics.realtime_reconnects.get() == 1).await;
    assert_eq!(standin.stats().endpoint(Endpoint::Realtime).requests, 2);
    // The new session was given what was said before it.
    assert!(standin.stats().realtime_items_created >= 1);
    // The call goes on: the next turn is answered, and the caller never saw an error.
    say_seed(&mut s, &utterance(880.0, 8_000)).await;
    until_seed_reply_audio(&mut s).await;
    until_history_has(&w, call, "tone 880").await;
    assert_eq!(seed_hang_up(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn a_realtime_session_lost_again_and_again_ends_the_call() {
    // Every session drops on its first reply: three are opened again, the fourth loss ends it.
    let call = "rt-flaky";
    let (standin, w, mut s) = realtime_call_with_drops(4, &[], call).await;
    let ctx = w.worker().ctx.clone();
    for lost in 1..=3 {
        say_seed(&mut s, &utterance(440.0, 8_000)).await;
        eventually(async || ctx.metrics.realtime_reconnects.get() == lost).await;
    }
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    let error = wait_for(&mut s, "type", "error").await;
    assert_eq!(error["code"], "INTERNAL_ERROR", "{error}");
    wait_closed(&mut s).await;
    assert_eq!(standin.stats().endpoint(Endpoint::Realtime).requests, 4);
    w.stop().await;
}

#[tokio::test]
async fn a_realtime_session_that_cannot_be_opened_again_ends_the_call_with_an_error() {
    // Every session after the first is refused.
    let refused = FaultRule::new(
        Some(Endpoint::Realtime),
        Fault::ServerError { status: 503 },
        None,
    );
    let call = "rt-gone";
    let (_standin, w, mut s) = realtime_call_with_drops(1, &[refused], call).await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    let error = wait_for(&mut s, "type", "error").await;
    assert_eq!(error["code"], "INTERNAL_ERROR", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("a new session failed"),
        "{error}"
    );
    wait_closed(&mut s).await;
    assert_eq!(w.worker().ctx.metrics.realtime_reconnects.get(), 0);
    w.stop().await;
}

#[tokio::test]
async fn realtime_mode_sends_quiet_audio_in_chunks_and_speech_frame_by_frame() {
    let (standin, w) = setup(r#","mode":"realtime","realtime":{"inputChunkMs":100}"#).await;
    let call = "CA-rt-chunks";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    // A second of quiet reaches the provider as ten 100 ms appends, not fifty 20 ms ones.
    say_twilio(&mut s, call, &vec![0; 8_000]).await;
    eventually(async || standin.stats().realtime_appended_ms == 1_000).await;
    assert_eq!(standin.stats().realtime_appends, 10);
    // Speech (600 ms) and the end-of-turn window after it (300 ms here) go frame by frame, so
    // the provider's VAD hears them as early as ever; the quiet after that is chunked again.
    say_twilio(&mut s, call, &utterance(440.0, 8_000)).await;
    eventually(async || standin.stats().realtime_appended_ms == 2_100).await;
    assert_eq!(standin.stats().realtime_appends, 10 + 30 + 15 + 2);
    wait_for(&mut s, "event", "media").await;
    until_history_has(&w, call, "tone 440").await;
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn a_resumed_realtime_call_gives_the_provider_its_earlier_conversation() {
    let (standin, w) = setup(r#","mode":"realtime","greeting":"Hello.""#).await;
    let call = "CA-rt-resume";
    // What an earlier connection of this call left behind (a dropped socket keeps history).
    let store = w.worker().ctx.store.clone();
    store
        .save(
            call,
            vec![
                ChatMessage::new(ChatRole::User, "tone 440"),
                ChatMessage::new(ChatRole::Assistant, REPLY_440),
            ],
        )
        .await;
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    // The stand-in checks each item's role and content type, and counts what it accepted.
    eventually(async || standin.stats().realtime_items_created == 2).await;
    assert!(standin.stats().endpoint(Endpoint::Realtime).requests >= 1);
    // The conversation goes on where it was: no second greeting, a new turn is answered.
    say_twilio(&mut s, call, &utterance(880.0, 8_000)).await;
    wait_for(&mut s, "event", "media").await;
    eventually(async || store.load(call).await.len() >= 4).await;
    let history = store.load(call).await;
    assert_eq!(history[0].content, "tone 440");
    assert_eq!(history[2].content, "tone 880");
    assert!(history.iter().all(|m| m.content != "Hello."), "{history:?}");
    // Keypad input reaches the realtime model as a user message and gets a response.
    for digit in ["5", "#"] {
        send_text(&mut s, twilio_dtmf(call, digit)).await;
    }
    eventually(async || standin.stats().realtime_items_created == 3).await;
    until_history_has(
        &w,
        call,
        "I heard Keypad input: 5. What else can I do for you?",
    )
    .await;
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn keypad_entries_are_caller_turns() {
    let (standin, w) = setup("").await;
    let call = "CA-keys";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    // `#` ends an entry; the model gets it as text, no speech-to-text involved.
    for digit in ["4", "2", "#"] {
        send_text(&mut s, twilio_dtmf(call, digit)).await;
    }
    wait_for(&mut s, "event", "media").await;
    let store = w.worker().ctx.store.clone();
    eventually(async || store.load(call).await.len() >= 2).await;
    let history = store.load(call).await;
    assert_eq!(history[0].content, "Keypad input: 42");
    assert_eq!(
        history[1].content,
        "I heard Keypad input: 42. What else can I do for you?"
    );
    assert_eq!(
        standin.stats().endpoint(Endpoint::Transcriptions).requests,
        0
    );
    // A lone digit ends by itself once no other follows; junk is ignored.
    send_text(&mut s, twilio_dtmf(call, "nine")).await;
    send_text(&mut s, twilio_dtmf(call, "7")).await;
    eventually(async || store.load(call).await.len() >= 3).await;
    assert_eq!(store.load(call).await[2].content, "Keypad input: 7");
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

/// A lone digit's entry ends on a timer, while the call may be resting from its socket with
/// nothing to barge into (a listening rest): the reply it starts is barged into all the same,
/// and history keeps what was heard of it.
#[tokio::test]
async fn a_reply_to_a_keypad_entry_is_barged_into() {
    let (_standin, w) = setup("").await;
    let call = "CA-keys-barge";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &vec![0i16; 1_600]).await;
    send_text(&mut s, twilio_dtmf(call, "7")).await;
    twilio_talk_over(&mut s, call, 30).await;

    let store = w.worker().ctx.store.clone();
    eventually(async || store.load(call).await.len() >= 2).await;
    let history = store.load(call).await;
    assert_eq!(history[0].content, "Keypad input: 7");
    assert_truncated(&history[1].content, "I heard Keypad input: 7.".len());
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn live_calls_keep_their_pipeline_version_new_calls_take_the_new_one() {
    let (standin, w) = setup("").await;
    let store = w.worker().ctx.store.clone();
    let mut live = connect(&w.url("/ws/call-session")).await;
    send_text(&mut live, start_call("v1-call", Some(&token("v1-call")))).await;
    wait_for(&mut live, "status", "ready").await;

    // Version 2: a greeting and a one-turn history cap.
    let v2 = format!(r#"{TURNS},"greeting":"Version two.","llm":{{"maxHistoryTurns":1}}"#);
    write_pipeline(
        &w.pipeline_path(),
        &pipeline_json(&standin.base_url(), 2, &v2),
    );
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.pipelines.current().map(|p| p.config.generation) == Some(2)).await;

    // The live call keeps version 1: no cap, so two turns make four messages.
    for hz in [440.0, 550.0] {
        say_seed(&mut live, &utterance(hz, 8_000)).await;
        seed_captions(&mut live, 2).await;
        let mark = loop {
            let m = wait_for(&mut live, "type", "mark").await;
            if m["name"].as_str().is_some_and(|n| n.ends_with(".1")) {
                break m;
            }
        };
        send_text(&mut live, mark.to_string()).await;
    }
    eventually(async || store.load("v1-call").await.len() == 4).await;

    // A new call takes version 2: it is greeted.
    let mut new = connect(&w.url("/ws/call-session")).await;
    send_text(&mut new, start_call("v2-call", Some(&token("v2-call")))).await;
    assert_eq!(seed_captions(&mut new, 1).await, ["Version two."]);
    w.stop().await;
}
