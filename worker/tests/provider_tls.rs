//! Provider connections over real TLS, as production reaches OpenAI: a stand-in serving HTTPS
//! with a certificate from a private CA, trusted through the pipeline's `provider.caBundle`
//! (both the HTTP pools and the realtime WebSocket), and refused clearly without it.

mod support;

use std::net::SocketAddr;

use callfleet_tests::openai_standin::{Endpoint, OpenAiStandin, StandinConfig, StandinHandle};
use callfleet_tests::tls::TestPki;
use serde_json::Value;
use support::calls::*;
use support::*;

/// A seed-protocol call on `w` that has said a 440 Hz tone (the stand-in hears "tone 440").
async fn seed_call_saying_440(w: &TestWorker, call: &str) -> Socket {
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call(call, Some(&token(call)))).await;
    wait_for(&mut s, "status", "ready").await;
    say_seed(&mut s, &utterance(440.0, 8_000)).await;
    s
}

async fn hang_up(s: &mut Socket) {
    send_text(s, r#"{"type":"end_call"}"#).await;
    wait_closed(s).await;
}

/// The stand-in (no artificial delays) serving HTTPS with `pki`'s server certificate.
async fn https_standin(pki: &TestPki) -> StandinHandle {
    OpenAiStandin::start_tls(
        StandinConfig::instant(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        pki.server_config().expect("server TLS config"),
    )
    .await
    .expect("stand-in")
}

/// An HTTPS stand-in with a fresh private CA, and a worker whose pipeline (with `extra` spec
/// fields) trusts that CA when `trust` is set.
async fn tls_setup(extra: &str, trust: bool) -> (StandinHandle, TestWorker, TestPki) {
    let pki = TestPki::generate().expect("test CA");
    let standin = https_standin(&pki).await;
    assert!(standin.base_url().starts_with("https://"));
    let mut pipeline: Value = serde_json::from_str(&pipeline_json(
        &standin.base_url(),
        1,
        &format!("{TURNS}{extra}"),
    ))
    .expect("pipeline JSON");
    if trust {
        pipeline["spec"]["provider"]["caBundle"] = Value::String(pki.ca_pem.clone());
    }
    let worker = start_worker(&pipeline.to_string(), |a| {
        a.openai_api_key = Some("sk-test".into());
    })
    .await;
    (standin, worker, pki)
}

#[tokio::test]
async fn a_cascade_call_reaches_a_provider_behind_a_private_ca() {
    let (standin, w, _pki) = tls_setup("", true).await;
    let mut s = seed_call_saying_440(&w, "tls-1").await;
    assert_eq!(
        seed_captions(&mut s, 2).await,
        ["I heard tone 440.", "What else can I do for you?"]
    );
    for endpoint in [Endpoint::Transcriptions, Endpoint::Chat, Endpoint::Speech] {
        assert!(
            standin.stats().endpoint(endpoint).requests >= 1,
            "{endpoint:?}"
        );
    }
    hang_up(&mut s).await;
    w.stop().await;
}

#[tokio::test]
async fn an_untrusted_provider_certificate_is_a_clear_error_and_the_call_goes_on() {
    let (standin, w, _pki) = tls_setup("", false).await;
    let mut s = seed_call_saying_440(&w, "tls-2").await;
    let error = wait_for(&mut s, "type", "error").await;
    assert_eq!(error["code"], "INTERNAL_ERROR", "{error}");
    let message = error["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(message.contains("certificate"), "{message}");
    // No request got through the handshake.
    assert_eq!(
        standin.stats().endpoint(Endpoint::Transcriptions).requests,
        0
    );
    // The call is still up: it hangs up cleanly.
    hang_up(&mut s).await;
    w.stop().await;
}

#[tokio::test]
async fn realtime_mode_opens_its_websocket_through_the_private_ca() {
    let (standin, w, _pki) = tls_setup(r#","mode":"realtime""#, true).await;
    let call = "CA-tls-rt";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &utterance(440.0, 8_000)).await;
    let media = wait_for(&mut s, "event", "media").await;
    assert!(
        media["media"]["payload"]
            .as_str()
            .is_some_and(|p| !p.is_empty())
    );
    assert!(standin.stats().endpoint(Endpoint::Realtime).requests >= 1);
    twilio_hang_up(&mut s, call).await;
    w.stop().await;
}

#[tokio::test]
async fn a_bad_ca_bundle_is_refused_at_reload_and_the_previous_version_stays() {
    let (standin, w, pki) = tls_setup("", true).await;
    let metrics_url = w.http("/metrics");
    let reload_errors = async || {
        let (_, text) = get_text(&metrics_url, None).await;
        metric_value(&text, "callfleet_pipeline_reload_errors_total").unwrap_or(0.0)
    };
    let errors_before = reload_errors().await;
    let mut broken: Value =
        serde_json::from_str(&pipeline_json(&standin.base_url(), 2, TURNS)).expect("pipeline JSON");
    broken["spec"]["provider"]["caBundle"] = Value::String("not a certificate".into());
    write_pipeline(&w.pipeline_path(), &broken.to_string());
    eventually(async || reload_errors().await > errors_before).await;
    // Generation 1, with the good bundle, still serves new calls.
    let current = w.worker().ctx.pipelines.current().expect("a pipeline");
    assert_eq!(current.config.generation, 1);
    assert_eq!(
        current.config.spec.provider.ca_bundle.as_deref(),
        Some(pki.ca_pem.as_str())
    );
    let mut s = seed_call_saying_440(&w, "tls-3").await;
    assert_eq!(seed_captions(&mut s, 1).await, ["I heard tone 440."]);
    hang_up(&mut s).await;
    w.stop().await;
}

#[tokio::test]
async fn a_new_pipeline_version_brings_its_own_ca_and_endpoint() {
    let (first, w, _pki) = tls_setup("", true).await;
    // Another provider behind another private CA; the reloaded pipeline points there.
    let pki = TestPki::generate().expect("second CA");
    let second = https_standin(&pki).await;
    let mut pipeline: Value =
        serde_json::from_str(&pipeline_json(&second.base_url(), 2, TURNS)).expect("pipeline JSON");
    pipeline["spec"]["provider"]["caBundle"] = Value::String(pki.ca_pem.clone());
    write_pipeline(&w.pipeline_path(), &pipeline.to_string());
    let pipelines = w.worker().ctx.pipelines.clone();
    eventually(async || {
        pipelines
            .current()
            .is_some_and(|p| p.config.generation == 2)
    })
    .await;

    let mut s = seed_call_saying_440(&w, "tls-4").await;
    assert_eq!(seed_captions(&mut s, 1).await, ["I heard tone 440."]);
    assert!(second.stats().endpoint(Endpoint::Chat).requests >= 1);
    assert_eq!(first.stats().endpoint(Endpoint::Chat).requests, 0);
    hang_up(&mut s).await;
    w.stop().await;
}
