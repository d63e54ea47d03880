//! Utterances uploaded while the caller speaks (`stt.uploadWhileSpeaking`): the provider gets
//! the audio as it arrives over a chunked request, hears the same utterance as from a whole
//! upload, and every way that request can fail ends in the whole utterance being sent instead.

mod support;

use std::time::Duration;

use callfleet_crds::aipipeline::SttSpec;
use callfleet_tests::openai_standin::audio::tone;
use callfleet_tests::openai_standin::{
    Endpoint, Fault, FaultRule, OpenAiStandin, StandinConfig, StandinHandle,
};
use callfleet_worker::metrics::LiveUploadOutcomes;
use callfleet_worker::providers::openai::{OpenAi, ProviderHttp};
use callfleet_worker::providers::{
    LiveUpload, ProviderError, ProviderResult, SpeechToText, Transcript, Utterance,
    final_transcript,
};
use support::calls::{setup, setup_standin, twilio_hang_up, twilio_start, until_history_has};
use support::providers::client_over;
use support::*;

const RATE: u32 = 16_000;

fn client(standin: &StandinHandle, timeout: Duration, max_retries: u32) -> OpenAi {
    client_over(
        ProviderHttp::new(None).expect("http client"),
        standin,
        timeout,
        max_retries,
    )
}

fn spec(model: &str) -> SttSpec {
    SttSpec {
        model: model.into(),
        upload_while_speaking: true,
        ..SttSpec::default()
    }
}

/// A worker pipeline's extra spec fields turning uploads while speaking on.
const LIVE: &str = r#","stt":{"uploadWhileSpeaking":true}"#;

/// A tone of `ms` between short silences, 16 kHz.
fn spoken(ms: u32) -> Utterance {
    let mut samples = vec![0i16; 3_200];
    samples.extend(tone(440, RATE, (RATE * ms / 1000) as usize, 0.5));
    samples.extend(vec![0i16; 4_800]);
    Utterance::linear(samples, RATE)
}

/// Pushes `audio` in 20 ms frames, as the call task does, yielding between them.
async fn speak(upload: &mut Box<dyn LiveUpload>, audio: &Utterance, pace: Duration) {
    for frame in audio.samples.chunks(320) {
        upload.push(frame);
        tokio::time::sleep(pace).await;
    }
}

/// An utterance (whisper-1) uploaded while "spoken" at `pace` per frame, then its transcript.
async fn say_live(
    openai: &OpenAi,
    audio: &Utterance,
    pace: Duration,
) -> ProviderResult<Transcript> {
    let mut upload = openai
        .begin_upload(RATE, &spec("whisper-1"))
        .expect("uploads live");
    speak(&mut upload, audio, pace).await;
    final_transcript(upload.finish(audio.clone(), &spec("whisper-1"))).await
}

async fn standin(config: StandinConfig) -> StandinHandle {
    OpenAiStandin::start(config).await.expect("stand-in")
}

#[tokio::test]
async fn an_upload_made_while_speaking_is_heard_like_a_whole_one() {
    for model in ["whisper-1", "gpt-4o-mini-transcribe"] {
        let standin = standin(StandinConfig::instant()).await;
        let openai = client(&standin, Duration::from_secs(5), 0);
        let audio = spoken(800);
        let mut upload = openai
            .begin_upload(RATE, &spec(model))
            .expect("uploads live");
        speak(&mut upload, &audio, Duration::from_millis(2)).await;
        // The request is open and the provider has the audio so far; nothing is answered yet.
        eventually(async || standin.stats().transcription_chunked_uploads == 1).await;
        assert_eq!(standin.stats().transcriptions.completed, 0);
        let transcript = final_transcript(upload.finish(audio.clone(), &spec(model)))
            .await
            .expect("transcript");
        assert_eq!(transcript.text, "tone 440", "{model}");
        let stats = standin.stats();
        assert_eq!(stats.transcriptions.requests, 1, "one request: {stats:?}");
        assert_eq!(
            stats.transcribed_samples,
            audio.samples.len() as u64,
            "every sample, once"
        );
    }
}

#[tokio::test]
async fn the_response_timeout_starts_when_the_caller_stops_not_when_the_upload_starts() {
    let standin = standin(StandinConfig::instant()).await;
    let openai = client(&standin, Duration::from_millis(300), 0);
    let audio = spoken(1_000);
    // Speaking for longer than the provider timeout (real time: 20 ms per frame).
    let transcript = say_live(&openai, &audio, Duration::from_millis(20)).await;
    assert_eq!(transcript.expect("no timeout").text, "tone 440");
    assert_eq!(standin.stats().transcriptions.requests, 1);
}

#[tokio::test]
async fn a_server_that_needs_a_length_gets_utterances_whole_from_then_on() {
    let standin = standin(StandinConfig {
        require_content_length: true,
        ..StandinConfig::instant()
    })
    .await;
    let openai = client(&standin, Duration::from_secs(5), 0);
    let audio = spoken(600);
    let transcript = say_live(&openai, &audio, Duration::ZERO).await;
    // Refused (411) and sent whole, even with no retries configured: the refusal was of the
    // way it was sent, not of the request.
    assert_eq!(transcript.expect("sent whole").text, "tone 440");
    let stats = standin.stats();
    assert_eq!(
        (
            stats.transcriptions.requests,
            stats.transcription_chunked_uploads
        ),
        (2, 1)
    );
    assert!(
        openai.begin_upload(RATE, &spec("whisper-1")).is_none(),
        "later utterances go whole"
    );
    // A pipeline that asks for whole uploads (the default) never opens one early.
    let fresh = client(&standin, Duration::from_secs(5), 0);
    assert!(fresh.begin_upload(RATE, &SttSpec::default()).is_none());
}

#[tokio::test]
async fn an_upload_refused_with_a_rate_limit_is_retried_whole_after_the_wait() {
    let rate_limited = |times| {
        FaultRule::new(
            Some(Endpoint::Transcriptions),
            Fault::RateLimit { retry_after_ms: 50 },
            Some(times),
        )
    };
    let standin = standin(StandinConfig::instant()).await;
    standin.inject(rate_limited(1));
    let openai = client(&standin, Duration::from_secs(5), 1);
    let audio = spoken(600);
    let transcript = say_live(&openai, &audio, Duration::from_millis(1)).await;
    assert_eq!(transcript.expect("retried whole").text, "tone 440");
    assert_eq!(standin.stats().transcriptions.requests, 2);

    // The early attempt counts: with no retries, its rate limit is the answer.
    let standin = standin_again(rate_limited(1)).await;
    let openai = client(&standin, Duration::from_secs(5), 0);
    let result = say_live(&openai, &audio, Duration::from_millis(1)).await;
    assert!(
        matches!(result, Err(ProviderError::RateLimited { .. })),
        "{result:?}"
    );
    assert_eq!(standin.stats().transcriptions.requests, 1);
}

async fn standin_again(rule: FaultRule) -> StandinHandle {
    let standin = standin(StandinConfig::instant()).await;
    standin.inject(rule);
    standin
}

#[tokio::test]
async fn a_server_that_stalls_on_the_upload_is_given_the_utterance_again() {
    let standin = standin_again(FaultRule::new(
        Some(Endpoint::Transcriptions),
        Fault::Stall,
        Some(1),
    ))
    .await;
    let openai = client(&standin, Duration::from_millis(300), 1);
    let audio = spoken(600);
    let transcript = say_live(&openai, &audio, Duration::from_millis(1)).await;
    assert_eq!(transcript.expect("retried whole").text, "tone 440");
    assert_eq!(standin.stats().transcriptions.requests, 2);
}

#[tokio::test]
async fn an_upload_that_falls_behind_is_given_up_and_the_utterance_sent_whole() {
    let standin = standin(StandinConfig::instant()).await;
    let outcomes = LiveUploadOutcomes::default();
    let http = ProviderHttp::new(None)
        .unwrap()
        .counting_live_uploads(outcomes.clone());
    let openai = client_over(http, &standin, Duration::from_secs(5), 0);
    // Ten seconds of audio handed over in 400 ms pieces without the request getting a turn to
    // send any (the test's runtime has one thread): more than its queue holds.
    let audio = spoken(10_000);
    let mut upload = openai.begin_upload(RATE, &spec("whisper-1")).unwrap();
    for piece in audio.samples.chunks(6_400) {
        upload.push(piece);
    }
    let transcript = final_transcript(upload.finish(audio.clone(), &spec("whisper-1"))).await;
    assert_eq!(transcript.expect("sent whole").text, "tone 440");
    let count = |outcome| outcomes.get_or_create(&[("outcome", outcome)]).get();
    assert_eq!((count("given_up"), count("heard")), (1, 0));
    let stats = standin.stats();
    assert_eq!(stats.transcriptions.completed, 1);
    assert_eq!(stats.transcribed_samples, audio.samples.len() as u64);
}

#[tokio::test]
async fn an_abandoned_upload_is_broken_off_not_completed() {
    let standin = standin(StandinConfig::instant()).await;
    let openai = client(&standin, Duration::from_secs(5), 0);
    let mut upload = openai.begin_upload(RATE, &spec("whisper-1")).unwrap();
    speak(&mut upload, &spoken(400), Duration::from_millis(1)).await;
    eventually(async || standin.stats().transcription_chunked_uploads == 1).await;
    drop(upload);
    eventually(async || standin.stats().transcription_broken_uploads == 1).await;
    let stats = standin.stats();
    assert_eq!(stats.transcriptions.completed, 0, "nothing transcribed");
    assert_eq!(stats.transcribed_samples, 0);
}

/// A Twilio call that has said `samples` (and not yet ended its turn).
async fn call_saying(w: &TestWorker, call: &str, samples: &[i16]) -> Socket {
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    support::calls::say_twilio(&mut s, call, samples).await;
    s
}

#[tokio::test]
async fn a_call_uploads_while_the_caller_speaks_and_is_answered_as_before() {
    let speech = support::calls::tone(440.0, 8_000, 600);
    let silence = vec![0i16; 4_000];

    let (standin, w) = setup(LIVE).await;
    let mut s = call_saying(&w, "CA-live", &speech).await;
    // The caller is still "speaking" (no end of turn yet): the upload is under way.
    eventually(async || standin.stats().transcription_chunked_uploads == 1).await;
    assert_eq!(standin.stats().transcriptions.completed, 0);
    support::calls::say_twilio(&mut s, "CA-live", &silence).await;
    until_history_has(
        &w,
        "CA-live",
        "I heard tone 440. What else can I do for you?",
    )
    .await;
    let live = standin.stats();
    twilio_hang_up(&mut s, "CA-live").await;
    w.stop().await;

    let (standin, w) = setup(r#","stt":{"uploadWhileSpeaking":false}"#).await;
    let mut s = call_saying(&w, "CA-whole", &speech).await;
    support::calls::say_twilio(&mut s, "CA-whole", &silence).await;
    until_history_has(
        &w,
        "CA-whole",
        "I heard tone 440. What else can I do for you?",
    )
    .await;
    let whole = standin.stats();
    twilio_hang_up(&mut s, "CA-whole").await;
    w.stop().await;

    assert_eq!(whole.transcription_chunked_uploads, 0);
    assert_eq!(
        live.transcribed_samples, whole.transcribed_samples,
        "the same utterance either way"
    );
    assert_eq!(live.transcriptions.requests, 1);
}

#[tokio::test]
async fn the_worker_counts_how_its_uploads_ended() {
    let (standin, w) = setup(LIVE).await;
    let heard = r#"callfleet_stt_live_uploads_total{outcome="heard"}"#;
    let failed = r#"callfleet_stt_live_uploads_total{outcome="failed"}"#;
    let mut s = call_saying(&w, "CA-count", &support::calls::utterance(440.0, 8_000)).await;
    until_history_has(&w, "CA-count", "tone 440").await;
    standin.inject(FaultRule::new(
        Some(Endpoint::Transcriptions),
        Fault::ServerError { status: 503 },
        Some(1),
    ));
    support::calls::say_twilio(&mut s, "CA-count", &support::calls::utterance(550.0, 8_000)).await;
    // No retries configured: the failed early request is the turn's one attempt.
    eventually(async || {
        let (_, metrics) = get_text(&w.http("/metrics"), None).await;
        metric_value(&metrics, heard) == Some(1.0) && metric_value(&metrics, failed) == Some(1.0)
    })
    .await;
    twilio_hang_up(&mut s, "CA-count").await;
    w.stop().await;
}

#[tokio::test]
async fn a_caller_who_hangs_up_mid_sentence_leaves_no_transcription() {
    let (standin, w) = setup_standin(StandinConfig::instant(), LIVE, |_| {}).await;
    let mut s = call_saying(&w, "CA-gone", &support::calls::tone(440.0, 8_000, 600)).await;
    eventually(async || standin.stats().transcription_chunked_uploads == 1).await;
    twilio_hang_up(&mut s, "CA-gone").await;
    eventually(async || standin.stats().transcription_broken_uploads == 1).await;
    assert_eq!(standin.stats().transcriptions.completed, 0);
    let ctx = w.worker().ctx.clone();
    eventually(async || ctx.active_calls() == 0).await;
    w.stop().await;
}
