//! The OpenAI-compatible HTTP clients (transcriptions, chat, speech) against the real local
//! stand-in over 127.0.0.1: streaming, retries, timeouts, broken streams and cancellation.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use callfleet_crds::aipipeline::{LlmSpec, SttSpec, TtsSpec};
use callfleet_tests::openai_standin::audio::tone;
use callfleet_tests::openai_standin::rules::dominant_frequency;
use callfleet_tests::openai_standin::{
    Endpoint, Fault, FaultRule, OpenAiStandin, StandinConfig, StandinHandle,
};
use callfleet_worker::metrics::Metrics;
use callfleet_worker::providers::openai::{OpenAi, ProviderHttp};
use callfleet_worker::providers::{
    ChatMessage, ChatModel, ChatRole, ProviderConfig, ProviderError, SpeechToText, TextToSpeech,
    TranscriptEvent, Utterance,
};
use support::providers::client_over;

/// Bound on waiting for the server to observe something (liveness, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(10);

/// A stand-in with no latencies whose `endpoint` always answers with `fault`.
async fn standin_with_fault(endpoint: Endpoint, fault: Fault) -> StandinHandle {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    standin.inject(FaultRule::new(Some(endpoint), fault, None));
    standin
}

/// A stand-in with no latencies whose chat endpoint answers its first `times` requests with 429.
async fn standin_rate_limiting_chat(retry_after_ms: u64, times: u32) -> StandinHandle {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    standin.inject(FaultRule::new(
        Some(Endpoint::Chat),
        Fault::RateLimit { retry_after_ms },
        Some(times),
    ));
    standin
}

fn client(standin: &StandinHandle, timeout: Duration, max_retries: u32) -> OpenAi {
    client_with(standin, timeout, max_retries, None)
}

fn client_with(
    standin: &StandinHandle,
    timeout: Duration,
    max_retries: u32,
    limit: Option<usize>,
) -> OpenAi {
    client_over(
        ProviderHttp::new(limit).expect("http client"),
        standin,
        timeout,
        max_retries,
    )
}

/// Silence, one second of a 440 Hz tone, silence: 16 kHz mono.
fn tone_utterance() -> Utterance {
    let mut samples = vec![0i16; 4800];
    samples.extend(tone(440, 16_000, 16_000, 0.5));
    samples.extend(vec![0i16; 4800]);
    Utterance::linear(samples, 16_000)
}

/// The deltas of a chat reply to `user`, each one unwrapped.
async fn chat_reply(openai: &OpenAi, user: &str) -> Vec<String> {
    openai
        .stream_chat(chat_messages(user), &LlmSpec::default())
        .map(|d| d.unwrap())
        .collect()
        .await
}

fn chat_messages(user: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(ChatRole::System, "You are terse."),
        ChatMessage::new(ChatRole::User, user),
    ]
}

fn stt_spec(model: &str) -> SttSpec {
    SttSpec {
        model: model.into(),
        language: Some("en".into()),
        upload_while_speaking: true,
        ..SttSpec::default()
    }
}

#[tokio::test]
async fn transcription_returns_what_was_heard() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    let openai = client(&standin, Duration::from_secs(5), 0);
    let transcript = openai
        .transcribe(tone_utterance(), &stt_spec("whisper-1"))
        .await
        .unwrap();
    assert_eq!(transcript.text, "tone 440");
    assert_eq!(standin.stats().transcriptions.completed, 1);
}

#[tokio::test]
async fn streamed_transcription_yields_deltas_then_done() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    let openai = client(&standin, Duration::from_secs(5), 0);
    let events: Vec<TranscriptEvent> = openai
        .transcribe_stream(tone_utterance(), &stt_spec("gpt-4o-mini-transcribe"))
        .map(|e| e.unwrap())
        .collect()
        .await;
    let (last, deltas) = events.split_last().unwrap();
    assert_eq!(
        last,
        &TranscriptEvent::Done(callfleet_worker::providers::Transcript {
            text: "tone 440".into()
        })
    );
    assert!(deltas.len() >= 2, "{events:?}");
    let joined: String = deltas
        .iter()
        .map(|d| match d {
            TranscriptEvent::Delta(text) => text.as_str(),
            TranscriptEvent::Done(_) => panic!("Done before the end: {events:?}"),
        })
        .collect();
    assert_eq!(joined, "tone 440");
}

#[tokio::test]
async fn chat_streams_token_deltas() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    let openai = client(&standin, Duration::from_secs(5), 0);
    let deltas = chat_reply(&openai, "tone 440").await;
    assert!(deltas.len() > 5, "{deltas:?}");
    assert_eq!(
        deltas.concat(),
        "I heard tone 440. What else can I do for you?"
    );
    assert_eq!(standin.stats().chat.completed, 1);
}

#[tokio::test]
async fn speech_streams_whole_samples_of_the_tone() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    let openai = client(&standin, Duration::from_secs(5), 0);
    let text = "Hello there.";
    let chunks: Vec<Bytes> = openai
        .stream_speech(text.into(), &TtsSpec::default())
        .map(|c| c.unwrap())
        .collect()
        .await;
    assert!(chunks.len() > 1);
    assert!(chunks.iter().all(|c| c.len() % 2 == 0 && !c.is_empty()));
    let pcm: Vec<i16> = chunks
        .iter()
        .flat_map(|c| c.chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]])))
        .collect();
    // 12 characters x 60 ms at 24 kHz
    assert_eq!(pcm.len(), 12 * 60 * 24);
    assert_eq!(dominant_frequency(&pcm, 24_000, -40.0), Some(660));
}

#[tokio::test]
async fn missing_api_key_is_an_auth_error() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    let config = ProviderConfig {
        base_url: standin.base_url(),
        api_key: String::new(),
        timeout: Duration::from_secs(5),
        max_retries: 3,
    };
    let openai = OpenAi::new(ProviderHttp::new(None).unwrap(), config);
    let first = openai
        .stream_chat(chat_messages("hi"), &LlmSpec::default())
        .next()
        .await
        .unwrap();
    assert!(
        matches!(first, Err(ProviderError::Auth { status: 401, .. })),
        "{first:?}"
    );
    // not retried
    assert_eq!(standin.stats().unauthorized, 1);
}

#[tokio::test]
async fn rate_limit_is_retried_then_succeeds() {
    let standin = standin_rate_limiting_chat(20, 2).await;
    let openai = client(&standin, Duration::from_secs(5), 2);
    let reply = chat_reply(&openai, "again").await;
    assert_eq!(reply.concat(), "I heard again. What else can I do for you?");
    let chat = standin.stats().chat;
    assert_eq!((chat.requests, chat.faults, chat.completed), (3, 2, 1));
}

/// The `count` of one endpoint's series of `callfleet_provider_response_headers_seconds`.
fn round_trips(metrics: &Metrics, endpoint: &str) -> u64 {
    let series =
        format!("callfleet_provider_response_headers_seconds_count{{endpoint=\"{endpoint}\"}}");
    support::metric_value(&metrics.prometheus_text(0), &series).map_or(0, |count| count as u64)
}

#[tokio::test]
async fn every_attempt_records_its_round_trip_by_endpoint() {
    let standin = standin_rate_limiting_chat(10, 1).await;
    let metrics = Metrics::new();
    let http = ProviderHttp::new(None)
        .unwrap()
        .observing(metrics.provider_round_trips.clone());
    let openai = client_over(http, &standin, Duration::from_secs(5), 1);
    openai
        .transcribe(tone_utterance(), &stt_spec("whisper-1"))
        .await
        .unwrap();
    let reply = chat_reply(&openai, "hi").await;
    assert!(!reply.is_empty());
    let speech: Vec<Bytes> = openai
        .stream_speech("Hi.".into(), &TtsSpec::default())
        .map(|chunk| chunk.unwrap())
        .collect()
        .await;
    assert!(!speech.is_empty());
    assert_eq!(round_trips(&metrics, "transcriptions"), 1);
    // The rate-limited attempt had a round trip too: it is where a provider's 429s show.
    assert_eq!(round_trips(&metrics, "chat"), 2);
    assert_eq!(round_trips(&metrics, "speech"), 1);
}

#[tokio::test]
async fn rate_limit_beyond_retries_is_a_typed_error() {
    let standin =
        standin_with_fault(Endpoint::Speech, Fault::RateLimit { retry_after_ms: 10 }).await;
    let openai = client(&standin, Duration::from_secs(5), 1);
    let first = openai
        .stream_speech("Hi.".into(), &TtsSpec::default())
        .next()
        .await
        .unwrap();
    match first {
        Err(error @ ProviderError::RateLimited { .. }) => {
            assert_eq!(error.caller_code(), "RATE_LIMIT");
            assert!(
                matches!(error, ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_millis(10))
            );
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(standin.stats().speech.requests, 2);
}

#[tokio::test]
async fn server_errors_exhaust_retries() {
    let standin =
        standin_with_fault(Endpoint::Transcriptions, Fault::ServerError { status: 503 }).await;
    let openai = client(&standin, Duration::from_secs(5), 2);
    let result = openai
        .transcribe(tone_utterance(), &stt_spec("whisper-1"))
        .await;
    match result {
        // The last attempt's request id, for the provider's support.
        Err(ProviderError::Server {
            status: 503,
            message,
        }) => assert!(message.contains("(request req_standin_"), "{message}"),
        other => panic!("expected Server 503, got {other:?}"),
    }
    let stats = standin.stats().transcriptions;
    assert_eq!((stats.requests, stats.faults), (3, 3));
}

#[tokio::test]
async fn stalled_request_times_out() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    standin.inject(FaultRule::new(Some(Endpoint::Speech), Fault::Stall, None));
    let openai = client(&standin, Duration::from_millis(300), 1);
    let first = openai
        .stream_speech("Hi.".into(), &TtsSpec::default())
        .next()
        .await
        .unwrap();
    assert!(matches!(first, Err(ProviderError::Timeout(_))), "{first:?}");
    // a timeout before any output is retried
    assert_eq!(standin.stats().speech.requests, 2);
}

#[tokio::test]
async fn stall_after_the_stream_started_times_out_without_retry() {
    let standin = standin_with_fault(Endpoint::Chat, Fault::StallMidStream).await;
    let openai = client(&standin, Duration::from_millis(300), 3);
    let items: Vec<_> = openai
        .stream_chat(chat_messages("hi"), &LlmSpec::default())
        .collect()
        .await;
    assert!(
        matches!(items.last(), Some(Err(ProviderError::Timeout(_)))),
        "{items:?}"
    );
    assert_eq!(standin.stats().chat.requests, 1);
}

#[tokio::test]
async fn dropped_connection_mid_stream_is_an_error_without_retry() {
    let standin = standin_with_fault(Endpoint::Speech, Fault::DropMidStream).await;
    let openai = client(&standin, Duration::from_secs(5), 3);
    let items: Vec<_> = openai
        .stream_speech(
            "A sentence long enough for many chunks.".into(),
            &TtsSpec::default(),
        )
        .collect()
        .await;
    let (last, before) = items.split_last().unwrap();
    let lengths: Vec<_> = items.iter().map(|i| i.as_ref().map(Bytes::len)).collect();
    assert!(
        matches!(last, Err(ProviderError::Transport(_))),
        "{lengths:?}"
    );
    assert!(before.iter().all(|i| i.is_ok()));
    // far less than the whole audio arrived
    let received: usize = before.iter().flatten().map(Bytes::len).sum();
    assert!(received < 39 * 60 * 24 * 2);
    assert_eq!(standin.stats().speech.requests, 1);
}

#[tokio::test]
async fn dropped_chat_stream_is_not_mistaken_for_a_complete_reply() {
    let standin = standin_with_fault(Endpoint::Chat, Fault::DropMidStream).await;
    let openai = client(&standin, Duration::from_secs(5), 0);
    let items: Vec<_> = openai
        .stream_chat(chat_messages("hi"), &LlmSpec::default())
        .collect()
        .await;
    assert!(matches!(items.last(), Some(Err(_))), "{items:?}");
}

#[tokio::test]
async fn dropping_the_speech_stream_cancels_it_on_the_server() {
    let config = StandinConfig {
        speech_first_byte_ms: 0,
        speech_pace: 1.0,
        ..StandinConfig::default()
    };
    let standin = OpenAiStandin::start(config).await.unwrap();
    let openai = client(&standin, Duration::from_secs(5), 0);
    // about 12 s of audio at real-time pace
    let text = "This reply is long enough that nobody would wait for it to finish. ".repeat(3);
    let mut speech = openai.stream_speech(text, &TtsSpec::default());
    let first = speech.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(speech);
    let cancelled = standin
        .wait_for_stats(PATIENCE, |s| s.speech.aborted == 1)
        .await;
    assert!(cancelled, "{:?}", standin.stats());
    assert_eq!(standin.stats().speech.completed, 0);
}

#[tokio::test]
async fn concurrency_limit_holds_requests_until_a_slot_frees() {
    let config = StandinConfig {
        chat_first_token_ms: 0,
        chat_token_ms: 200,
        ..StandinConfig::instant()
    };
    let standin = OpenAiStandin::start(config).await.unwrap();
    let openai = client_with(&standin, Duration::from_secs(5), 0, Some(1));
    let mut first = openai.stream_chat(chat_messages("one"), &LlmSpec::default());
    assert!(first.next().await.unwrap().is_ok());
    let second = tokio::spawn({
        let stream = openai.stream_chat(chat_messages("two"), &LlmSpec::default());
        async move {
            stream
                .map(|d| d.unwrap())
                .collect::<Vec<_>>()
                .await
                .concat()
        }
    });
    // The second request cannot be sent while the first stream holds the only slot.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(standin.stats().chat.requests, 1);
    drop(first);
    let reply = tokio::time::timeout(PATIENCE, second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "I heard two. What else can I do for you?");
    assert_eq!(standin.stats().chat.requests, 2);
}

#[tokio::test]
async fn faults_and_stats_over_the_admin_api() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    let admin = reqwest::Client::new();
    let base = format!("http://{}", standin.addr());
    let added = admin
        .post(format!("{base}/admin/faults"))
        .json(&serde_json::json!({"endpoint": "chat", "fault": {"kind": "server_error", "status": 500}, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 204);
    let openai = client(&standin, Duration::from_secs(5), 0);
    let first = openai
        .stream_chat(chat_messages("hi"), &LlmSpec::default())
        .next()
        .await
        .unwrap();
    assert!(
        matches!(first, Err(ProviderError::Server { status: 500, .. })),
        "{first:?}"
    );
    // the counted fault is used up
    let second = chat_reply(&openai, "hi").await;
    assert!(!second.is_empty());
    let stats: serde_json::Value = admin
        .get(format!("{base}/admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["chat"]["requests"], 2);
    assert_eq!(stats["chat"]["faults"], 1);
    assert_eq!(stats["chat"]["completed"], 1);
}
