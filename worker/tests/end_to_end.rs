//! Speech in → reply audio out, over each protocol, against the local OpenAI stand-in (the real
//! provider clients, the real worker): frame sizes and formats, barge-in with history
//! truncation, provider failure.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use callfleet_tests::openai_standin::{Endpoint, Fault, FaultRule, OpenAiStandin, StandinConfig};
use callfleet_worker::media::l16;
use callfleet_worker::protocols::ErrorCode;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use support::calls::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn seed_protocol_speech_in_reply_out() {
    let (_standin, w) = setup("").await;
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("seed-1", Some(&token("seed-1")))).await;
    wait_for(&mut s, "status", "ready").await;
    for frame in utterance(440.0, 8_000).chunks(160) {
        let msg = format!(
            r#"{{"type":"audio","data":"{}","format":"mulaw","sampleRate":8000}}"#,
            mulaw_b64(frame)
        );
        send_text(&mut s, msg).await;
    }
    wait_for(&mut s, "status", "processing").await;
    let mut texts = Vec::new();
    let mut frames = 0;
    let mut marks = 0;
    while marks < 2 {
        let m = next_json(&mut s).await.expect("reply");
        match m["type"].as_str() {
            Some("audio_response") => {
                let audio = STANDARD.decode(m["audio"].as_str().unwrap()).unwrap();
                assert_eq!(audio.len(), 160, "20 ms of µ-law 8 kHz");
                frames += 1;
                if let Some(t) = m["text"].as_str().filter(|t| !t.is_empty()) {
                    texts.push(t.to_owned());
                }
            }
            Some("mark") => marks += 1,
            Some("error") => panic!("{m}"),
            _ => {}
        }
    }
    assert_eq!(texts, ["I heard tone 440.", "What else can I do for you?"]);
    assert!(frames > 10);
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    assert_eq!(wait_closed(&mut s).await, Some(1000));
    // Every stage of the turn was measured once.
    let (_, metrics) = get_text(&w.http("/metrics"), None).await;
    for histogram in [
        "callfleet_turn_first_audio_seconds",
        "callfleet_stt_latency_seconds",
        "callfleet_llm_first_token_seconds",
        "callfleet_turn_overhead_seconds",
    ] {
        assert!(
            metrics.contains(&format!("{histogram}_count 1")),
            "{histogram} in {metrics}"
        );
    }
    // The worker's own share is what is left of the first-audio latency once the provider
    // waits (the stand-in's configured latencies among them) are taken out.
    let sum = |name: &str| -> f64 {
        metric_value(&metrics, &format!("{name}_sum"))
            .unwrap_or_else(|| panic!("{name}_sum in {metrics}"))
    };
    let (overhead, first_audio) = (
        sum("callfleet_turn_overhead_seconds"),
        sum("callfleet_turn_first_audio_seconds"),
    );
    assert!(
        overhead >= 0.0 && overhead < first_audio,
        "overhead {overhead} s of first audio {first_audio} s"
    );
    // One TTS request per sentence.
    assert!(
        metrics.contains("callfleet_tts_first_byte_seconds_count 2"),
        "{metrics}"
    );
    // Each request's round trip to response headers, by endpoint.
    for (endpoint, requests) in [("transcriptions", 1), ("chat", 1), ("speech", 2)] {
        let series = format!(
            "callfleet_provider_response_headers_seconds_count{{endpoint=\"{endpoint}\"}} {requests}"
        );
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    w.stop().await;
}

#[tokio::test]
async fn twilio_speech_in_reply_out() {
    let (_standin, w) = setup("").await;
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(
        &mut s,
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    )
    .await;
    send_text(&mut s, twilio_start("CA-e2e")).await;
    say_twilio(&mut s, "CA-e2e", &utterance(440.0, 8_000)).await;
    let mut frames = 0;
    let mut marks = Vec::new();
    while marks.len() < 2 {
        let m = next_json(&mut s).await.expect("reply");
        assert_eq!(m["streamSid"], "MZ-CA-e2e", "{m}");
        match m["event"].as_str() {
            Some("media") => {
                let audio = STANDARD
                    .decode(m["media"]["payload"].as_str().unwrap())
                    .unwrap();
                assert_eq!(audio.len(), 160);
                frames += 1;
            }
            Some("mark") => marks.push(m["mark"]["name"].as_str().unwrap().to_owned()),
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    assert!(frames > 10);
    // Twilio echoes marks when played; the history then holds the whole reply.
    for name in &marks {
        send_text(
            &mut s,
            format!(r#"{{"event":"mark","streamSid":"MZ-CA-e2e","mark":{{"name":"{name}"}}}}"#),
        )
        .await;
    }
    let store = w.worker().ctx.store.clone();
    eventually(async || store.load("CA-e2e").await.len() == 2).await;
    let history = store.load("CA-e2e").await;
    assert_eq!(history[0].content, "tone 440");
    assert_eq!(
        history[1].content,
        "I heard tone 440. What else can I do for you?"
    );
    send_text(
        &mut s,
        r#"{"event":"stop","streamSid":"MZ-CA-e2e","stop":{}}"#,
    )
    .await;
    assert_eq!(wait_closed(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn barge_in_clears_playback_and_truncates_history() {
    let (_standin, w) = setup("").await;
    barge_in(w).await;
}

/// The same with event batching, where turns run on a runtime of their own: barge-in still
/// cancels the turn (across runtimes) and cuts the history to what was played.
#[tokio::test]
async fn barge_in_with_turns_on_their_own_runtime() {
    let (_standin, w) = setup_with("", |a| a.event_batch_us = 1000).await;
    barge_in(w).await;
}

/// And with a turn thread asked for without batching (`CALLFLEET_TURN_THREADS`).
#[tokio::test]
async fn barge_in_with_a_turn_thread_and_no_batching() {
    let (_standin, w) = setup_with("", |a| a.turn_threads = Some(1)).await;
    assert!(w.worker().ctx.turns_apart());
    barge_in(w).await;
}

async fn barge_in(w: TestWorker) {
    let call = "CA-barge";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &utterance(440.0, 8_000)).await;
    // Let part of the first sentence play, then talk over it.
    twilio_talk_over(&mut s, call, 30).await;

    let store = w.worker().ctx.store.clone();
    eventually(async || store.load(call).await.len() >= 2).await;
    let history = store.load(call).await;
    assert_eq!(history[0].content, "tone 440");
    // Cut inside the first sentence.
    assert_truncated(&history[1].content, "I heard tone 440.".len());

    // The interrupting speech is the next turn.
    say_twilio(&mut s, call, &vec![0i16; 4_000]).await;
    eventually(async || store.load(call).await.len() >= 3).await;
    assert_eq!(store.load(call).await[2].content, "tone 880");
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

async fn freeswitch_call(w: &TestWorker, call: &str, metadata_extra: &str) -> Socket {
    let mut s = connect(&w.url("/ws/freeswitch")).await;
    let meta = format!(
        r#"{{"callId":"{call}","token":"{}","sampleRate":16000{metadata_extra}}}"#,
        token(call)
    );
    send_text(&mut s, meta).await;
    for frame in utterance(440.0, 16_000).chunks(320) {
        let mut bytes = Vec::new();
        l16::encode_into(frame, &mut bytes);
        send_binary(&mut s, bytes).await;
    }
    s
}

#[tokio::test]
async fn freeswitch_play_audio_and_streaming() {
    let (_standin, w) = setup("").await;
    let mut s = freeswitch_call(&w, "fs-play", "").await;
    let mut sentences = Vec::new();
    while sentences.len() < 2 {
        let m = next_json(&mut s).await.expect("reply");
        assert_eq!(m["type"], "playAudio", "{m}");
        let data = &m["data"];
        assert_eq!(data["audioContentType"], "raw");
        assert_eq!(data["sampleRate"], 16000);
        let audio = STANDARD
            .decode(data["audioContent"].as_str().unwrap())
            .unwrap();
        assert!(audio.len() > 640 && audio.len() % 2 == 0);
        sentences.push(data["textContent"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        sentences,
        ["I heard tone 440.", "What else can I do for you?"]
    );
    send_text(&mut s, r#"{"type":"stop"}"#).await;
    wait_for(&mut s, "type", "disconnect").await;

    let mut s = freeswitch_call(
        &w,
        "fs-stream",
        r#","bidirectionalAudio":{"enabled":true,"streaming":true,"sampleRate":8000}"#,
    )
    .await;
    let mut frames = 0;
    while frames < 20 {
        match next(&mut s).await {
            Received::Binary(bytes) => {
                assert_eq!(bytes.len(), 320, "20 ms of L16 8 kHz");
                frames += 1;
            }
            Received::Json(m) => assert_ne!(m["type"], "error", "{m}"),
            Received::Closed(_) => panic!("closed"),
        }
    }
    w.stop().await;
}

/// A sentence the carrier plays as a file starts playing only once it is complete, so its speech
/// is read as it arrives, never resting, however far ahead of real time the provider streams.
#[tokio::test]
async fn speech_for_play_audio_is_read_without_rests() {
    let config = fast_speech_standin();
    let spoken: Vec<usize> = reply_440_samples(&config, 16_000)
        .iter()
        .map(|samples| samples * 2)
        .collect();
    let (_standin, w) = setup_standin(config, "", |_| {}).await;
    let mut s = freeswitch_call(&w, "fs-eager", "").await;
    let mut bytes = Vec::new();
    while bytes.len() < 2 {
        let m = next_json(&mut s).await.expect("reply");
        assert_eq!(m["type"], "playAudio", "{m}");
        let audio = m["data"]["audioContent"].as_str().unwrap();
        bytes.push(STANDARD.decode(audio).unwrap().len());
    }
    assert_eq!(bytes, spoken, "16 kHz L16 bytes per sentence");
    assert_eq!(w.worker().ctx.metrics.speech_read_rests.get(), 0);
    send_text(&mut s, r#"{"type":"stop"}"#).await;
    wait_for(&mut s, "type", "disconnect").await;
    w.stop().await;
}

/// FreeSWITCH ends a fork by closing the socket: a close frame is its hang-up, and the call's
/// history goes at once; a connection that drops without one keeps it for a reconnect.
#[tokio::test]
async fn a_freeswitch_close_frame_hangs_up_and_a_dropped_connection_does_not() {
    let (_standin, w) = setup("").await;
    let store = w.worker().ctx.store.clone();
    let ctx = w.worker().ctx.clone();
    for (call, close_frame) in [("fs-closed", true), ("fs-dropped", false)] {
        let mut s = freeswitch_call(&w, call, "").await;
        wait_for(&mut s, "type", "playAudio").await;
        until_history_has(&w, call, "tone 440").await;
        if close_frame {
            s.close(None).await.unwrap();
        }
        drop(s);
        eventually(async || ctx.active_calls() == 0).await;
        let kept = store.load(call).await;
        if close_frame {
            eventually(async || store.load(call).await.is_empty()).await;
        } else {
            assert!(!kept.is_empty(), "history kept for a reconnect");
        }
    }
    w.stop().await;
}

#[tokio::test]
async fn provider_failure_gives_a_clear_error_and_the_call_goes_on() {
    let (standin, w) = setup("").await;
    standin.inject(FaultRule::new(
        Some(Endpoint::Chat),
        Fault::ServerError { status: 500 },
        Some(1),
    ));
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("fail-1", Some(&token("fail-1")))).await;
    wait_for(&mut s, "status", "ready").await;
    let speak = |samples: Vec<i16>| {
        samples
            .chunks(160)
            .map(|f| format!(r#"{{"type":"audio","data":"{}"}}"#, mulaw_b64(f)))
            .collect::<Vec<_>>()
    };
    for msg in speak(utterance(440.0, 8_000)) {
        send_text(&mut s, msg).await;
    }
    let error: Value = wait_for(&mut s, "type", "error").await;
    assert_eq!(error["code"], "INTERNAL_ERROR", "{error}");
    // The fault was one-shot: the next turn is answered.
    for msg in speak(utterance(550.0, 8_000)) {
        send_text(&mut s, msg).await;
    }
    let reply = loop {
        let m = wait_for(&mut s, "type", "audio_response").await;
        if m["text"].as_str().is_some_and(|t| !t.is_empty()) {
            break m;
        }
    };
    assert_eq!(reply["text"], "I heard tone 550.");
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    wait_closed(&mut s).await;
    w.stop().await;
}

#[tokio::test]
async fn a_filtered_chat_reply_is_silence_counted_not_an_error() {
    // The chat model's answer is filtered out: it streams no text and finishes with
    // `content_filter`. Nothing is spoken and no error reaches the caller (the provider did not
    // fail); operators see it counted, and the next turn is answered as usual.
    let (standin, w) = setup("").await;
    standin.inject(FaultRule::new(
        Some(Endpoint::Chat),
        Fault::ContentFilter,
        Some(1),
    ));
    let metrics = w.worker().ctx.metrics.clone();
    let call = "filtered-1";
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call(call, Some(&token(call)))).await;
    wait_for(&mut s, "status", "ready").await;
    let say = async |s: &mut Socket, hz: f64| {
        for frame in utterance(hz, 8_000).chunks(160) {
            let msg = format!(r#"{{"type":"audio","data":"{}"}}"#, mulaw_b64(frame));
            send_text(s, msg).await;
        }
    };
    say(&mut s, 440.0).await;
    eventually(async || metrics.unspoken_replies_with("empty_completion") == 1).await;
    say(&mut s, 550.0).await;
    let reply = loop {
        let m = next_json(&mut s).await.expect("reply");
        match m["type"].as_str() {
            Some("error") => panic!("a filtered reply is not an error: {m}"),
            Some("audio_response") => {
                let text = m["text"].as_str().unwrap_or_default();
                assert!(!text.contains("440"), "the filtered turn said nothing: {m}");
                if !text.is_empty() {
                    break m;
                }
            }
            _ => {}
        }
    };
    assert_eq!(reply["text"], "I heard tone 550.");
    assert_eq!(standin.stats().chat.requests, 2);
    assert_eq!(metrics.errors_with(ErrorCode::InternalError), 0);
    let (_, text) = get_text(&w.http("/metrics"), None).await;
    assert!(
        text.contains(r#"callfleet_unspoken_replies_total{cause="empty_completion"} 1"#),
        "{text}"
    );
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    wait_closed(&mut s).await;
    w.stop().await;
}

#[tokio::test]
async fn rate_limited_provider_is_retried_and_the_turn_is_answered() {
    // The production retry path: the pipeline allows retries, the chat endpoint answers 429
    // (with Retry-After) once, and the caller only ever sees the reply.
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .expect("stand-in");
    let pipeline = pipeline_json(&standin.base_url(), 1, TURNS)
        .replace(r#""maxRetries":0"#, r#""maxRetries":2"#);
    let w = start_worker(&pipeline, |a| a.openai_api_key = Some("sk-test".into())).await;
    standin.inject(FaultRule::new(
        Some(Endpoint::Chat),
        Fault::RateLimit { retry_after_ms: 50 },
        Some(1),
    ));
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("retry-1", Some(&token("retry-1")))).await;
    wait_for(&mut s, "status", "ready").await;
    for frame in utterance(440.0, 8_000).chunks(160) {
        let msg = format!(r#"{{"type":"audio","data":"{}"}}"#, mulaw_b64(frame));
        send_text(&mut s, msg).await;
    }
    let reply = loop {
        let m = next_json(&mut s).await.expect("reply");
        match m["type"].as_str() {
            Some("error") => panic!("the retry should hide the 429: {m}"),
            Some("audio_response") if m["text"].as_str().is_some_and(|t| !t.is_empty()) => {
                break m;
            }
            _ => {}
        }
    };
    assert_eq!(reply["text"], "I heard tone 440.");
    let chat = standin.stats().chat;
    assert_eq!(
        chat.requests, 2,
        "one refused with 429, one answered: {chat:?}"
    );
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    wait_closed(&mut s).await;
    w.stop().await;
}

/// A carrier whose socket stops draining (a stalled media server): the call drops reply audio
/// instead of queueing it or stalling, other calls go on, and once the carrier reads again the
/// same call still listens and answers.
#[tokio::test]
async fn a_carrier_that_stops_reading_loses_reply_audio_not_the_call() {
    // About 17 s of greeting audio: far more than the socket buffers hold.
    let greeting = "This is a long greeting that keeps talking for a while. ".repeat(5);
    let (_standin, w) = setup_with(&format!(r#","greeting":"{greeting}""#), |a| {
        // A small kernel buffer on the worker's side too, so the queue fills in seconds.
        a.socket_send_buffer = 4096;
    })
    .await;
    let call = "CA-stalled";
    let addr = w.worker().addr;
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let tcp = tcp.connect(addr).await.expect("connect");
    let (mut stalled, _) = tokio_tungstenite::client_async(
        w.url("/ws/twilio"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .expect("handshake");
    send_text(&mut stalled, twilio_start(call)).await;
    // Not reading: the worker's queue for this carrier fills and reply frames are dropped.
    eventually(async || {
        let (_, metrics) = get_text(&w.http("/metrics"), None).await;
        metric_value(&metrics, "callfleet_reply_frames_dropped_total")
            .is_some_and(|dropped| dropped > 0.0)
    })
    .await;
    // Another call on the same worker is served meanwhile.
    let mut other = connect(&w.url("/ws/twilio")).await;
    send_text(&mut other, twilio_start("CA-other")).await;
    wait_for(&mut other, "event", "media").await;
    twilio_hang_up(&mut other, "CA-other").await;
    // The stalled carrier reads again and speaks over the greeting: the call is alive, and
    // what it hears is answered.
    let (mut to_worker, mut from_worker) = stalled.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = from_worker.next().await {} });
    for frame in utterance(880.0, 8_000).chunks(160) {
        to_worker
            .send(Message::Text(twilio_media(call, frame).into()))
            .await
            .expect("send");
    }
    until_history_has(&w, call, "tone 880").await;
    to_worker
        .send(Message::Text(
            format!(r#"{{"event":"stop","streamSid":"MZ-{call}"}}"#).into(),
        ))
        .await
        .expect("send");
    let _ = tokio::time::timeout(PATIENCE, drain).await;
    w.stop().await;
}

/// With several media threads the kernel spreads calls over their listeners, and each thread
/// serves its calls whole (socket, timers, provider requests): every call gets its reply, and
/// more than one thread served calls.
#[tokio::test]
async fn calls_spread_over_media_threads_are_each_answered() {
    calls_spread_over_four_media_threads(0).await;
}

/// The same with event batching on the media threads (the first one is the test's runtime):
/// a batching thread still answers every call.
#[tokio::test]
async fn calls_on_batching_media_threads_are_each_answered() {
    calls_spread_over_four_media_threads(1000).await;
}

async fn calls_spread_over_four_media_threads(event_batch_us: u64) {
    const CALLS: usize = 16;
    let (_standin, w) = setup_with("", |a| {
        a.media_threads = 4;
        a.event_batch_us = event_batch_us;
    })
    .await;
    let calls = (0..CALLS).map(|n| {
        let url = w.url("/ws/twilio");
        async move {
            let call = format!("CA-thread-{n}");
            let mut s = connect(&url).await;
            send_text(&mut s, twilio_start(&call)).await;
            say_twilio(&mut s, &call, &utterance(440.0, 8_000)).await;
            loop {
                let m = next_json(&mut s).await.expect("reply");
                if m["event"] == "media" {
                    break;
                }
            }
            twilio_hang_up(&mut s, &call).await
        }
    });
    for closed in futures::future::join_all(calls).await {
        assert_eq!(closed, Some(1000));
    }
    let metrics = reqwest::get(w.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let per_thread: Vec<f64> = (0..4)
        .filter_map(|t| {
            metric_value(
                &metrics,
                &format!("callfleet_media_thread_calls_total{{thread=\"{t}\"}}"),
            )
        })
        .collect();
    assert_eq!(per_thread.iter().sum::<f64>(), CALLS as f64, "{metrics}");
    assert!(
        per_thread.len() > 1,
        "all calls on one thread: {per_thread:?}"
    );
}
