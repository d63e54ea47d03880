//! Admission against a real in-process worker: tokens, the call limit, the rate limit, drain,
//! load shedding.

mod support;

use support::*;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Error as WsError;

const NO_PROVIDER: &str = "http://127.0.0.1:9/v1";

/// The HTTP answer refusing a WebSocket upgrade.
struct Refusal {
    status: u16,
    body: String,
    retry_after: bool,
}

/// Connects to `url` expecting the worker to refuse before the upgrade.
async fn refusal(url: &str) -> Refusal {
    match connect_async(url).await {
        Err(WsError::Http(response)) => Refusal {
            status: response.status().as_u16(),
            body: String::from_utf8(response.body().clone().unwrap_or_default()).unwrap(),
            retry_after: response.headers().contains_key("retry-after"),
        },
        other => panic!("expected a refusal from {url}, got {other:?}"),
    }
}

async fn refused_with(socket: &mut Socket, code: &str) {
    let error = wait_for(socket, "type", "error").await;
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(wait_closed(socket).await, Some(1008));
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |_| {}).await;

    // No token at all.
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("c1", None)).await;
    refused_with(&mut s, "UNAUTHORIZED").await;

    // A token for another call.
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("c1", Some(&token("c2")))).await;
    refused_with(&mut s, "UNAUTHORIZED").await;

    // A forged token.
    let forged = token("c1").replace(".", ".9");
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("c1", Some(&forged))).await;
    refused_with(&mut s, "UNAUTHORIZED").await;

    // An expired token, presented in the query string.
    let secret = callfleet_worker::admission::TokenSecret::from_bytes(SECRET.into()).unwrap();
    let expired = callfleet_worker::admission::mint_token(&secret, "c1", 1_000);
    let mut s = connect(&w.url(&format!("/ws/call-session?token={expired}"))).await;
    send_text(&mut s, start_call("c1", None)).await;
    refused_with(&mut s, "UNAUTHORIZED").await;

    // Twilio: token in the custom parameters, checked against callSid.
    let mut s = connect(&w.url("/ws/twilio")).await;
    let start = format!(
        r#"{{"event":"start","streamSid":"MZ1","start":{{"streamSid":"MZ1","callSid":"CA1","customParameters":{{"token":"{}"}}}}}}"#,
        token("CA2")
    );
    send_text(&mut s, start).await;
    assert_eq!(wait_closed(&mut s).await, Some(1008));

    // FreeSWITCH: token in the metadata frame.
    let mut s = connect(&w.url("/ws/freeswitch")).await;
    send_text(&mut s, r#"{"callId":"u1","token":"nope"}"#).await;
    refused_with(&mut s, "UNAUTHORIZED").await;

    // A valid token (as a bearer header this time) is admitted.
    let request = w
        .url("/ws/call-session")
        .into_client_request_with_bearer(&token("c1"))
        .expect("request");
    let (mut s, _) = connect_async(request).await.expect("connect");
    send_text(&mut s, start_call("c1", None)).await;
    let status = wait_for(&mut s, "type", "status").await;
    assert_eq!(status["status"], "ready");
    w.stop().await;
}

/// Builds a request with an `Authorization: Bearer` header.
trait BearerRequest {
    fn into_client_request_with_bearer(
        self,
        token: &str,
    ) -> Option<tokio_tungstenite::tungstenite::handshake::client::Request>;
}

impl BearerRequest for String {
    fn into_client_request_with_bearer(
        self,
        token: &str,
    ) -> Option<tokio_tungstenite::tungstenite::handshake::client::Request> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = self.into_client_request().ok()?;
        let value = format!("Bearer {token}").parse().ok()?;
        request.headers_mut().insert("authorization", value);
        Some(request)
    }
}

#[tokio::test]
async fn a_full_worker_refuses_new_calls() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |a| a.max_calls = 1).await;
    let mut first = connect(&w.url("/ws/call-session")).await;
    send_text(&mut first, start_call("a", Some(&token("a")))).await;
    wait_for(&mut first, "type", "status").await;
    // Full: not ready, so the Service sends new calls to workers with room.
    let (status, ready) = get_text(&w.http("/ready"), None).await;
    assert_eq!(status, 503);
    assert!(ready.contains(r#""full":true"#), "{ready}");

    let refused = refusal(&w.url("/ws/call-session")).await;
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("WORKER_FULL"), "{}", refused.body);
    // The admitted call is unaffected, and its slot frees when it ends.
    send_text(&mut first, r#"{"type":"end_call"}"#).await;
    wait_closed(&mut first).await;
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.active_calls() == 0).await;
    assert_eq!(get_text(&w.http("/ready"), None).await.0, 200);
    let mut again = connect(&w.url("/ws/call-session")).await;
    send_text(&mut again, start_call("b", Some(&token("b")))).await;
    wait_for(&mut again, "type", "status").await;
    w.stop().await;
}

#[tokio::test]
async fn new_connections_are_rate_limited_per_ip() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |a| {
        a.rate_limit_per_minute = 2
    })
    .await;
    let _a = connect(&w.url("/ws/call-session")).await;
    let _b = connect(&w.url("/ws/call-session")).await;
    let refused = refusal(&w.url("/ws/call-session")).await;
    assert_eq!(refused.status, 429);
    assert!(refused.retry_after);
    w.stop().await;
}

#[tokio::test]
async fn draining_turns_ready_off_and_refuses_calls() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |_| {}).await;
    assert_eq!(get_text(&w.http("/ready"), None).await.0, 200);
    let (status, body) = get_text(&w.http("/health"), None).await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    for key in ["timestamp", "version", "activeCalls", "uptime"] {
        assert!(health.get(key).is_some(), "{key} in {health}");
    }

    let mut live = connect(&w.url("/ws/call-session")).await;
    send_text(&mut live, start_call("live", Some(&token("live")))).await;
    wait_for(&mut live, "type", "status").await;

    w.worker().ctx.start_draining();
    assert_eq!(get_text(&w.http("/ready"), None).await.0, 503);
    assert_eq!(refusal(&w.url("/ws/twilio")).await.status, 503);
    // The live call goes on until it ends.
    send_text(&mut live, r#"{"type":"mark","name":"x"}"#).await;
    send_text(&mut live, r#"{"type":"end_call"}"#).await;
    assert_eq!(wait_closed(&mut live).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn max_call_duration_ends_the_call_cleanly() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |a| {
        a.max_call_seconds = 1
    })
    .await;
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("long", Some(&token("long")))).await;
    wait_for(&mut s, "type", "status").await;
    let error = wait_for(&mut s, "type", "error").await;
    assert_eq!(error["code"], "TIMEOUT");
    assert_eq!(error["message"], "max call duration reached");
    assert_eq!(wait_closed(&mut s).await, Some(1000));

    // FreeSWITCH gets a disconnect before the close.
    let mut s = connect(&w.url("/ws/freeswitch")).await;
    let meta = format!(r#"{{"callId":"fs","token":"{}"}}"#, token("fs"));
    send_text(&mut s, meta).await;
    wait_for(&mut s, "type", "disconnect").await;
    assert_eq!(wait_closed(&mut s).await, Some(1000));
    w.stop().await;
}

#[tokio::test]
async fn authenticated_connections_bypass_the_ip_rate_limit() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |a| {
        a.rate_limit_per_minute = 1
    })
    .await;
    let _anonymous = connect(&w.url("/ws/freeswitch")).await;
    // One carrier address, many calls: each presents its own token in the URL.
    for i in 0..5 {
        let call = format!("fs-{i}");
        let mut s = connect(&w.url(&format!("/ws/freeswitch?token={}", token(&call)))).await;
        send_text(&mut s, format!(r#"{{"callId":"{call}"}}"#)).await;
        send_text(&mut s, r#"{"type":"stop"}"#).await;
        wait_for(&mut s, "type", "disconnect").await;
    }
    let forged = refusal(&w.url("/ws/freeswitch?token=forged.1.x")).await;
    assert_eq!(forged.status, 429, "a bad token is rate limited");
    w.stop().await;
}

#[tokio::test]
async fn a_worker_whose_event_loop_falls_behind_sheds_new_calls_then_recovers() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |a| {
        a.overload_lag_ms = 50
    })
    .await;
    let mut live = connect(&w.url("/ws/call-session")).await;
    send_text(&mut live, start_call("live", Some(&token("live")))).await;
    wait_for(&mut live, "type", "status").await;

    // Starve the worker's event loop the way a CPU hog does: this test's runtime is the
    // worker's, and this task blocks its thread 80 ms at a time.
    let hogging = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hog = tokio::spawn(hog_thread(hogging.clone()));
    eventually(async || get_text(&w.http("/ready"), None).await.0 == 503).await;
    let (_, ready) = get_text(&w.http("/ready"), None).await;
    assert!(ready.contains(r#""overloaded":true"#), "{ready}");
    let refused = refusal(&w.url("/ws/call-session")).await;
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("OVERLOADED"), "{}", refused.body);
    assert!(refused.body.contains("ms behind"), "{}", refused.body);

    // The hog stops: the worker catches up and takes calls again; the live call was never cut.
    let _next = stop_hog_and_call_again(&w, &hogging, hog).await;
    assert_eq!(w.worker().ctx.active_calls(), 2);
    let (_, metrics) = get_text(&w.http("/metrics"), None).await;
    assert!(
        metric_value(&metrics, r#"callfleet_errors_total{code="OVERLOADED"}"#) >= Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "callfleet_overloaded_runtimes"),
        Some(0.0)
    );
    assert!(metrics.contains("callfleet_event_loop_lag_seconds_bucket"));
    w.stop().await;
}

/// With event batching, turns share a runtime of their own: when that runtime falls behind,
/// every reply would be late, so the worker sheds new calls on every media runtime, then
/// recovers when it catches up.
#[tokio::test]
async fn a_turn_runtime_that_falls_behind_sheds_new_calls_then_recovers() {
    let w = start_worker(&pipeline_json(NO_PROVIDER, 1, ""), |a| {
        a.overload_lag_ms = 50;
        a.event_batch_us = 1000;
    })
    .await;
    // A hog on the turn runtime's thread, as a burst of turns decoding speech would be.
    let hogging = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hog = w.worker().ctx.spawn_turn(hog_thread(hogging.clone()));
    eventually(async || get_text(&w.http("/ready"), None).await.0 == 503).await;
    let refused = refusal(&w.url("/ws/call-session")).await;
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("OVERLOADED"), "{}", refused.body);

    stop_hog_and_call_again(&w, &hogging, hog).await;
    w.stop().await;
}

/// Ends the hog, waits until the worker is ready again, and starts a new call on it (returned
/// live).
async fn stop_hog_and_call_again(
    w: &TestWorker,
    hogging: &std::sync::atomic::AtomicBool,
    hog: tokio::task::JoinHandle<()>,
) -> Socket {
    hogging.store(false, std::sync::atomic::Ordering::Relaxed);
    hog.await.expect("hog task");
    eventually(async || get_text(&w.http("/ready"), None).await.0 == 200).await;
    let mut next = connect(&w.url("/ws/call-session")).await;
    send_text(&mut next, start_call("next", Some(&token("next")))).await;
    wait_for(&mut next, "type", "status").await;
    next
}

/// Blocks the thread it runs on 80 ms at a time, the way a CPU hog starves an event loop, while
/// `hogging` is set.
async fn hog_thread(hogging: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    while hogging.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(80));
        tokio::task::yield_now().await;
    }
}
