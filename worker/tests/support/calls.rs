//! Speaking to the worker like a carrier does: tones as "speech", the stand-in as provider.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use callfleet_tests::openai_standin::rules::{chat_reply, speech_sample_count};
use callfleet_tests::openai_standin::speech::SPEECH_SAMPLE_RATE;
use callfleet_tests::openai_standin::{OpenAiStandin, StandinConfig, StandinHandle};
use callfleet_worker::config::ServeArgs;
use callfleet_worker::media::mulaw;
use callfleet_worker::providers::ChatRole;
use callfleet_worker::session::call::LOST_WORDS;

use super::*;

/// Faster turn detection than the defaults, to keep tests short.
pub const TURNS: &str = r#","turnDetection":{"silenceMs":300,"minSpeechMs":100}"#;

pub fn tone(hz: f64, rate: u32, ms: u32) -> Vec<i16> {
    let n = (rate * ms / 1000) as usize;
    (0..n)
        .map(|i| {
            (9000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as i16
        })
        .collect()
}

/// A spoken "utterance": a tone, then enough silence to end the turn.
pub fn utterance(hz: f64, rate: u32) -> Vec<i16> {
    let mut samples = tone(hz, rate, 600);
    samples.extend(vec![0i16; (rate * 500 / 1000) as usize]);
    samples
}

pub fn mulaw_b64(samples: &[i16]) -> String {
    let mut bytes = Vec::new();
    mulaw::encode_into(samples, &mut bytes);
    STANDARD.encode(bytes)
}

/// The stand-in without artificial delays and with short replies (10 ms of speech per
/// character), for tests that take many turns.
pub fn quick_standin() -> StandinConfig {
    StandinConfig {
        speech_ms_per_char: 10,
        ..StandinConfig::instant()
    }
}

/// Hangs up a seed-protocol call (`end_call`) and waits for the worker's close code.
pub async fn seed_hang_up(socket: &mut Socket) -> Option<u16> {
    send_text(socket, r#"{"type":"end_call"}"#).await;
    wait_closed(socket).await
}

/// The stand-in (no artificial delays) and a worker using it with `extra` spec fields.
pub async fn setup_with(
    extra: &str,
    tune: impl FnOnce(&mut ServeArgs),
) -> (StandinHandle, TestWorker) {
    setup_standin(StandinConfig::instant(), extra, tune).await
}

/// A stand-in configured by `config` and a worker using it with `extra` spec fields.
pub async fn setup_standin(
    config: StandinConfig,
    extra: &str,
    tune: impl FnOnce(&mut ServeArgs),
) -> (StandinHandle, TestWorker) {
    setup_spec(config, &format!("{TURNS}{extra}"), tune).await
}

/// As [`setup_standin`] with the spec fields exactly as given (no faster [`TURNS`]).
pub async fn setup_spec(
    config: StandinConfig,
    spec: &str,
    tune: impl FnOnce(&mut ServeArgs),
) -> (StandinHandle, TestWorker) {
    let standin = OpenAiStandin::start(config).await.expect("stand-in");
    let worker = start_worker(&pipeline_json(&standin.base_url(), 1, spec), |a| {
        a.openai_api_key = Some("sk-test".into());
        tune(a);
    })
    .await;
    (standin, worker)
}

pub async fn setup(extra: &str) -> (StandinHandle, TestWorker) {
    setup_with(extra, |_| {}).await
}

pub fn twilio_start(call: &str) -> String {
    format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"MZ-{call}","start":{{"accountSid":"AC1","streamSid":"MZ-{call}","callSid":"{call}","tracks":["inbound"],"customParameters":{{"token":"{}"}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#,
        token(call)
    )
}

/// Waits until the call's stored history holds a message saying exactly `content`.
pub async fn until_history_has(w: &TestWorker, call: &str, content: &str) {
    let store = w.worker().ctx.store.clone();
    eventually(async || store.load(call).await.iter().any(|m| m.content == content)).await;
}

/// What the worker's store holds of `call`'s conversation, message by message.
pub async fn said_in(w: &TestWorker, call: &str) -> Vec<String> {
    let history = w.worker().ctx.store.load(call).await;
    history.into_iter().map(|m| m.content).collect()
}

/// Hangs up a Twilio call started with [`twilio_start`] and waits for the worker's close code.
pub async fn twilio_hang_up(socket: &mut Socket, call: &str) -> Option<u16> {
    send_text(
        socket,
        format!(r#"{{"event":"stop","streamSid":"MZ-{call}"}}"#),
    )
    .await;
    wait_closed(socket).await
}

pub fn twilio_dtmf(call: &str, digit: &str) -> String {
    format!(
        r#"{{"event":"dtmf","streamSid":"MZ-{call}","sequenceNumber":"9","dtmf":{{"track":"inbound_track","digit":"{digit}"}}}}"#
    )
}

pub fn twilio_media(call: &str, samples: &[i16]) -> String {
    format!(
        r#"{{"event":"media","streamSid":"MZ-{call}","media":{{"track":"inbound","payload":"{}"}}}}"#,
        mulaw_b64(samples)
    )
}

pub async fn say_twilio(s: &mut Socket, call: &str, samples: &[i16]) {
    for frame in samples.chunks(160) {
        send_text(s, twilio_media(call, frame)).await;
    }
}

/// Lets `frames` of the reply's Twilio media play, then talks over it (300 ms of an 880 Hz
/// tone) and waits for the worker to flush the carrier (`clear`): a barge-in.
pub async fn twilio_talk_over(s: &mut Socket, call: &str, frames: usize) {
    let mut played = 0;
    while played < frames {
        let m = next_json(s).await.expect("reply");
        if m["event"] == "media" {
            played += 1;
        }
    }
    say_twilio(s, call, &tone(880.0, 8_000, 300)).await;
    wait_for(s, "event", "clear").await;
}

/// Seed `audio` messages of 20 ms µ-law frames.
pub async fn say_seed(s: &mut Socket, samples: &[i16]) {
    for frame in samples.chunks(160) {
        let msg = format!(
            r#"{{"type":"audio","data":"{}","format":"mulaw","sampleRate":8000}}"#,
            mulaw_b64(frame)
        );
        send_text(s, msg).await;
    }
}

/// Reads seed messages until reply audio arrives (the call goes on); an error frame fails.
pub async fn until_seed_reply_audio(s: &mut Socket) {
    loop {
        let m = next_json(s).await.expect("the call goes on");
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "audio_response" {
            return;
        }
    }
}

/// Reads seed messages until `count` sentence captions arrived; returns them.
pub async fn seed_captions(s: &mut Socket, count: usize) -> Vec<String> {
    let mut texts = Vec::new();
    while texts.len() < count {
        let m = next_json(s).await.expect("reply");
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "audio_response"
            && let Some(t) = m["text"].as_str().filter(|t| !t.is_empty())
        {
            texts.push(t.to_owned());
        }
    }
    texts
}

/// The stand-in's answer to a 440 Hz "utterance".
pub const REPLY_440: &str = "I heard tone 440. What else can I do for you?";

/// A stand-in that streams speech at four times real time in 40 ms chunks, as in the benchmark,
/// and answers at once otherwise.
pub fn fast_speech_standin() -> StandinConfig {
    StandinConfig {
        speech_pace: 4.0,
        ..StandinConfig::instant()
    }
}

/// Samples of speech at `rate` the stand-in `config` speaks for each sentence of [`REPLY_440`].
pub fn reply_440_samples(config: &StandinConfig, rate: u32) -> Vec<usize> {
    ["I heard tone 440.", "What else can I do for you?"]
        .iter()
        .map(|sentence| {
            let at_24k =
                speech_sample_count(sentence, 1.0, config.speech_ms_per_char, SPEECH_SAMPLE_RATE);
            at_24k * rate as usize / SPEECH_SAMPLE_RATE as usize
        })
        .collect()
}

/// The assistant turn in history after a barge-in: some words were heard, fewer than
/// `at_most_len` bytes, and what is kept is exactly the start of the reply.
pub fn assert_truncated(heard: &str, at_most_len: usize) {
    assert!(
        !heard.is_empty() && heard.len() < at_most_len && REPLY_440.starts_with(heard),
        "{heard:?}"
    );
}

/// Checks that the history the worker keeps for `call` (after it vanished: kept for a resume)
/// says nothing the stand-in did not: every assistant turn is a non-empty start of the
/// stand-in's answer to what the caller said before it (cut where playback was, at most), or of
/// what the stand-in says when a realtime session is asked to have the caller repeat (it speaks
/// instructions as given).
pub async fn assert_history_is_the_standins_answers(w: &TestWorker, call: &str, context: &str) {
    let history = w.worker().ctx.store.load(call).await;
    let mut last_user = None;
    for message in &history {
        match message.role {
            ChatRole::User => last_user = Some(message.content.as_str()),
            ChatRole::Assistant if LOST_WORDS.starts_with(&message.content) => {}
            ChatRole::Assistant => {
                let reply = chat_reply(last_user.expect("a reply follows what the caller said"));
                assert!(
                    !message.content.is_empty() && reply.starts_with(&message.content),
                    "{call} ({context}): history says {:?} for {reply:?}\n{history:#?}",
                    message.content
                );
            }
            _ => {}
        }
    }
}
