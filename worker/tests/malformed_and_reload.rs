//! Malformed input of every kind gets an error frame (or, on Twilio, a counted drop), never a
//! panic, and other calls are unaffected; the pipeline config hot-reloads.

mod support;

use std::time::Duration;

use support::*;

const NO_PROVIDER: &str = "http://127.0.0.1:9/v1";

async fn expect_bad_request(socket: &mut Socket, what: &str) {
    let error = wait_for(socket, "type", "error").await;
    assert_eq!(error["code"], "BAD_REQUEST", "{what}: {error}");
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_spare_other_calls() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |_| {}).await;
    let mut bystander = connect(&w.url("/ws/call-session")).await;
    send_text(&mut bystander, start_call("calm", Some(&token("calm")))).await;
    wait_for(&mut bystander, "type", "status").await;

    let mut s = connect(&w.url("/ws/call-session")).await;
    // Before the call started.
    send_text(&mut s, r#"{"type":"audio","data":"//8="}"#).await;
    expect_bad_request(&mut s, "audio before start").await;
    send_text(&mut s, start_call("bad", Some(&token("bad")))).await;
    wait_for(&mut s, "type", "status").await;

    let cases: Vec<(&str, String)> = vec![
        ("bad json", "{not json".into()),
        ("unknown type", r#"{"type":"teleport"}"#.into()),
        ("bad base64", r#"{"type":"audio","data":"@@@"}"#.into()),
        (
            "wrong sample rate",
            r#"{"type":"audio","data":"//8=","format":"mulaw","sampleRate":44100}"#.into(),
        ),
        (
            "oversize frame",
            format!(r#"{{"type":"audio","data":"{}"}}"#, "A".repeat(600 * 1024)),
        ),
        ("second start", start_call("bad", Some(&token("bad")))),
    ];
    for (what, frame) in cases {
        send_text(&mut s, frame).await;
        expect_bad_request(&mut s, what).await;
    }
    send_binary(&mut s, vec![1, 2, 3]).await;
    expect_bad_request(&mut s, "binary on a text protocol").await;

    // The call is still usable: a good audio frame produces no error, a mark neither.
    send_text(
        &mut s,
        r#"{"type":"audio","data":"//8=","format":"mulaw","sampleRate":8000}"#,
    )
    .await;
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    send_text(&mut s, r#"{"type":"audio","data":"//8="}"#).await;
    // After end_call: either the frame is refused or the call already closed; never a panic.
    loop {
        match next(&mut s).await {
            Received::Json(m) if m["type"] == "error" => {
                assert_eq!(m["code"], "BAD_REQUEST", "{m}")
            }
            Received::Closed(code) => {
                assert_eq!(code, Some(1000));
                break;
            }
            _ => {}
        }
    }

    // The bystander never saw any of it and still answers.
    send_text(&mut bystander, r#"{"type":"teleport"}"#).await;
    expect_bad_request(&mut bystander, "bystander alive").await;
    send_text(&mut bystander, r#"{"type":"end_call"}"#).await;
    assert_eq!(wait_closed(&mut bystander).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn twilio_and_freeswitch_survive_garbage() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |_| {}).await;
    let ctx = w.worker().ctx.clone();
    let bad_before = ctx
        .metrics
        .errors_with(callfleet_worker::protocols::ErrorCode::BadRequest);

    let mut t = connect(&w.url("/ws/twilio")).await;
    send_text(
        &mut t,
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    )
    .await;
    let start = format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"MZ9","start":{{"streamSid":"MZ9","callSid":"CA9","customParameters":{{"token":"{}"}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#,
        token("CA9")
    );
    send_text(&mut t, start).await;
    send_text(&mut t, "{oops").await;
    send_text(&mut t, r#"{"event":"media","media":{"payload":"***"}}"#).await;
    send_binary(&mut t, vec![0; 10]).await;
    // Twilio has no error message: drops are counted, the stream goes on.
    eventually(async || {
        ctx.metrics
            .errors_with(callfleet_worker::protocols::ErrorCode::BadRequest)
            >= bad_before + 3
    })
    .await;
    send_text(&mut t, r#"{"event":"stop","streamSid":"MZ9","stop":{}}"#).await;
    assert_eq!(wait_closed(&mut t).await, Some(1000));

    let mut f = connect(&w.url("/ws/freeswitch")).await;
    send_binary(&mut f, vec![0; 320]).await;
    expect_bad_request(&mut f, "audio before metadata").await;
    let meta = format!(
        r#"{{"callId":"fs1","token":"{}","sampleRate":16000}}"#,
        token("fs1")
    );
    send_text(&mut f, meta).await;
    send_binary(&mut f, vec![0; 321]).await;
    expect_bad_request(&mut f, "odd L16 length").await;
    send_binary(&mut f, vec![0; 600 * 1024]).await;
    expect_bad_request(&mut f, "oversize").await;
    send_text(&mut f, r#"{"type":"hangup"}"#).await;
    wait_for(&mut f, "type", "disconnect").await;
    assert_eq!(wait_closed(&mut f).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn pipeline_config_hot_reloads_and_survives_a_bad_file() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |_| {}).await;
    let ctx = w.worker().ctx.clone();
    let generation = || ctx.pipelines.current().map(|p| p.config.generation);
    assert_eq!(generation(), Some(1));
    let live = ctx.pipelines.current().unwrap();

    write_pipeline(&w.pipeline_path(), &pipeline_json(NO_PROVIDER, 2, ""));
    eventually(async || generation() == Some(2)).await;
    // What a live call holds does not change.
    assert_eq!(live.config.generation, 1);

    let errors_before = ctx.metrics.reload_errors.get();
    write_pipeline(&w.pipeline_path(), "{\"name\": 5");
    eventually(async || ctx.metrics.reload_errors.get() > errors_before).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(generation(), Some(2), "bad file keeps the previous version");
    let (_, text) = get_text(&w.http("/metrics"), None).await;
    assert!(
        text.contains("callfleet_pipeline_reload_errors_total 1"),
        "{text}"
    );
    assert_eq!(get_text(&w.http("/ready"), None).await.0, 200);

    write_pipeline(&w.pipeline_path(), &pipeline_json(NO_PROVIDER, 3, ""));
    eventually(async || generation() == Some(3)).await;
    w.stop().await;
}

#[tokio::test]
async fn metrics_json_summary_on_accept_header() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |_| {}).await;
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("m", Some(&token("m")))).await;
    wait_for(&mut s, "type", "status").await;
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    wait_closed(&mut s).await;
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.active_calls() == 0).await;
    let (status, body) = get_text(&w.http("/metrics"), Some("application/json")).await;
    assert_eq!(status, 200);
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["totalCalls"], 1);
    assert_eq!(summary["activeCalls"], 0);
    for key in ["averageCallDuration", "errorRate", "averageLatency"] {
        assert!(summary[key].is_number(), "{key} in {summary}");
    }
    let (_, text) = get_text(&w.http("/metrics"), None).await;
    assert!(text.contains("callfleet_calls_total 1"), "{text}");
    assert!(text.contains("callfleet_turn_first_audio_seconds"));
    assert!(text.contains("callfleet_stt_latency_seconds"));
    assert!(text.contains("callfleet_llm_first_token_seconds"));
    assert!(text.contains("callfleet_tts_first_byte_seconds"));
    w.stop().await;
}
