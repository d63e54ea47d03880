//! How utterances are encoded for speech-to-text (`stt.uploadEncoding`): µ-law callers' audio
//! as µ-law WAV (half the bytes, nothing lost), everyone else's as 16-bit PCM, and a server
//! that cannot take µ-law served PCM without losing the turn. Against the real stand-in, whose
//! WAV reader is written independently of the worker's encoder.

mod support;

use std::time::Duration;

use callfleet_crds::aipipeline::{SttSpec, UploadEncoding};
use callfleet_tests::openai_standin::audio::{mulaw_decode, mulaw_encode, tone};
use callfleet_tests::openai_standin::{OpenAiStandin, StandinConfig, StandinHandle};
use callfleet_worker::metrics::Metrics;
use callfleet_worker::providers::openai::{OpenAi, ProviderHttp};
use callfleet_worker::providers::{ProviderError, SpeechToText, Utterance};
use support::calls::*;
use support::providers::client_over;
use support::*;

/// Silence, 600 ms of a 440 Hz tone, silence, 8 kHz, as a µ-law carrier delivers it: every
/// sample a µ-law value.
fn phone_utterance() -> Utterance {
    let mut samples = vec![0i16; 1_600];
    samples.extend(tone(440, 8_000, 4_800, 0.5));
    samples.extend(vec![0i16; 2_400]);
    let samples = samples
        .into_iter()
        .map(|s| mulaw_decode(mulaw_encode(s)))
        .collect();
    Utterance {
        mulaw: true,
        ..Utterance::linear(samples, 8_000)
    }
}

fn spec(encoding: UploadEncoding) -> SttSpec {
    SttSpec {
        model: "whisper-1".into(),
        upload_encoding: encoding,
        ..SttSpec::default()
    }
}

async fn standin(config: StandinConfig) -> StandinHandle {
    OpenAiStandin::start(config).await.expect("stand-in")
}

/// A client without retries that counts its uploads into `metrics`.
fn client(standin: &StandinHandle, metrics: &Metrics) -> OpenAi {
    let http = ProviderHttp::new(None)
        .expect("http client")
        .counting_upload_encodings(metrics.stt_upload_encodings.clone());
    client_over(http, standin, Duration::from_secs(5), 0)
}

fn uploads(metrics: &Metrics, encoding: &str) -> f64 {
    let text = metrics.prometheus_text(0);
    metric_value(
        &text,
        &format!(r#"callfleet_stt_uploads_total{{encoding="{encoding}"}}"#),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_mulaw_utterance_goes_as_mulaw_wav_and_is_heard() {
    let standin = standin(StandinConfig::instant()).await;
    let metrics = Metrics::new();
    let openai = client(&standin, &metrics);
    let audio = phone_utterance();
    let heard = openai
        .transcribe(audio.clone(), &spec(UploadEncoding::Auto))
        .await
        .unwrap();
    assert_eq!(heard.text, "tone 440");
    let stats = standin.stats();
    assert_eq!(stats.transcription_mulaw_uploads, 1);
    assert_eq!(stats.transcribed_samples, audio.samples.len() as u64);
    assert_eq!(
        (uploads(&metrics, "mulaw"), uploads(&metrics, "pcm")),
        (1.0, 0.0)
    );
}

#[tokio::test]
async fn linear_audio_and_upload_encoding_pcm_go_as_pcm() {
    let standin = standin(StandinConfig::instant()).await;
    let metrics = Metrics::new();
    let openai = client(&standin, &metrics);
    let linear = Utterance::linear(phone_utterance().samples, 8_000);
    let heard = openai
        .transcribe(linear, &spec(UploadEncoding::Auto))
        .await
        .unwrap();
    assert_eq!(heard.text, "tone 440");
    let heard = openai
        .transcribe(phone_utterance(), &spec(UploadEncoding::Pcm))
        .await
        .unwrap();
    assert_eq!(heard.text, "tone 440");
    assert_eq!(standin.stats().transcription_mulaw_uploads, 0);
    assert_eq!(
        (uploads(&metrics, "mulaw"), uploads(&metrics, "pcm")),
        (0.0, 2.0)
    );
}

#[tokio::test]
async fn a_server_refusing_mulaw_gets_the_utterance_as_pcm_and_pcm_from_then_on() {
    let standin = standin(StandinConfig {
        pcm_wav_only: true,
        ..StandinConfig::instant()
    })
    .await;
    let metrics = Metrics::new();
    // No retries configured: the refusal was of the encoding, not of the request.
    let openai = client(&standin, &metrics);
    let heard = openai
        .transcribe(phone_utterance(), &spec(UploadEncoding::Auto))
        .await
        .expect("taken as PCM");
    assert_eq!(heard.text, "tone 440");
    let stats = standin.stats();
    assert_eq!(stats.transcriptions.requests, 2);
    assert_eq!(stats.transcription_mulaw_uploads, 1);

    let heard = openai
        .transcribe(phone_utterance(), &spec(UploadEncoding::Auto))
        .await
        .unwrap();
    assert_eq!(heard.text, "tone 440");
    let stats = standin.stats();
    assert_eq!(stats.transcriptions.requests, 3, "straight to PCM");
    assert_eq!(stats.transcription_mulaw_uploads, 1);
    assert_eq!(
        (uploads(&metrics, "mulaw"), uploads(&metrics, "pcm")),
        (1.0, 2.0)
    );
}

#[tokio::test]
async fn a_request_refused_for_another_reason_keeps_mulaw_on() {
    let standin = standin(StandinConfig::instant()).await;
    let metrics = Metrics::new();
    let openai = client(&standin, &metrics);
    // The stand-in refuses a request without a model whatever its audio.
    let no_model = SttSpec {
        model: String::new(),
        ..spec(UploadEncoding::Auto)
    };
    for attempt in 1..=2 {
        let refused = openai.transcribe(phone_utterance(), &no_model).await;
        assert!(
            matches!(refused, Err(ProviderError::Rejected { status: 400, .. })),
            "{refused:?}"
        );
        assert_eq!(
            standin.stats().transcriptions.requests,
            2 * attempt,
            "µ-law first, then PCM, each time: PCM never worked, so µ-law stays on"
        );
    }
    let heard = openai
        .transcribe(phone_utterance(), &spec(UploadEncoding::Auto))
        .await
        .unwrap();
    assert_eq!(heard.text, "tone 440");
    assert_eq!(standin.stats().transcription_mulaw_uploads, 1);
}

/// A call over Twilio (µ-law) and one over the seed protocol sending L16: each is answered,
/// and only the µ-law caller's utterance travels as µ-law.
#[tokio::test]
async fn twilio_callers_upload_mulaw_and_l16_callers_pcm() {
    let (standin, w) = setup("").await;
    let call = "enc-twilio";
    let mut s = connect(&w.url("/ws/twilio")).await;
    send_text(&mut s, twilio_start(call)).await;
    say_twilio(&mut s, call, &utterance(440.0, 8_000)).await;
    until_history_has(&w, call, "tone 440").await;
    twilio_hang_up(&mut s, call).await;
    assert_eq!(standin.stats().transcription_mulaw_uploads, 1);

    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call("enc-seed", Some(&token("enc-seed")))).await;
    wait_for(&mut s, "status", "ready").await;
    for frame in utterance(880.0, 8_000).chunks(160) {
        let mut bytes = Vec::new();
        callfleet_worker::media::l16::encode_into(frame, &mut bytes);
        let msg = format!(
            r#"{{"type":"audio","data":"{}","format":"l16","sampleRate":8000}}"#,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
        );
        send_text(&mut s, msg).await;
    }
    until_history_has(&w, "enc-seed", "tone 880").await;
    seed_hang_up(&mut s).await;
    let stats = standin.stats();
    assert_eq!(stats.transcriptions.requests, 2);
    assert_eq!(
        stats.transcription_mulaw_uploads, 1,
        "the L16 caller's went as PCM"
    );
    w.stop().await;
}
