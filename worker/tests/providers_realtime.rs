//! The realtime WebSocket client against the real local stand-in: µ-law in and out, server VAD,
//! transcripts, barge-in cancellation, `conversation.item.truncate`, handshake failures.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use callfleet_crds::aipipeline::{RealtimeSpec, TurnDetectionSpec};
use callfleet_tests::openai_standin::audio::{mulaw_decode, tone};
use callfleet_tests::openai_standin::rules::dominant_frequency;
use callfleet_tests::openai_standin::{
    Endpoint, Fault, FaultRule, OpenAiStandin, StandinConfig, StandinHandle,
};
use callfleet_worker::media::mulaw;
use callfleet_worker::providers::openai::{OpenAi, ProviderHttp};
use callfleet_worker::providers::{
    ProviderConfig, ProviderError, Realtime, RealtimeEvent, RealtimeOptions, RealtimeSession,
    ServerVad,
};

/// Bound on waiting for an event (liveness, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(10);

fn client(standin: &StandinHandle, api_key: &str, max_retries: u32) -> OpenAi {
    let config = ProviderConfig {
        base_url: standin.base_url(),
        api_key: api_key.into(),
        timeout: Duration::from_secs(5),
        max_retries,
    };
    OpenAi::new(ProviderHttp::new(None).unwrap(), config)
}

fn options() -> RealtimeOptions {
    let turn = TurnDetectionSpec {
        silence_ms: 300,
        ..TurnDetectionSpec::default()
    };
    RealtimeOptions {
        instructions: "Be brief.".into(),
        vad: ServerVad::from_spec(&turn),
        input_transcription_model: Some("gpt-4o-mini-transcribe".into()),
    }
}

async fn connect(openai: &OpenAi) -> Result<RealtimeSession, ProviderError> {
    openai.connect(&RealtimeSpec::default(), options()).await
}

async fn next_event(session: &mut RealtimeSession) -> RealtimeEvent {
    tokio::time::timeout(PATIENCE, session.events.next())
        .await
        .expect("an event in time")
        .expect("session open")
        .expect("no transport error")
}

/// Sends `ms` of 8 kHz µ-law audio (a 440 Hz tone, or silence) in 20 ms frames.
async fn send_audio(session: &mut RealtimeSession, ms: usize, loud: bool) {
    let samples = if loud {
        tone(440, 8000, ms * 8, 0.5)
    } else {
        vec![0i16; ms * 8]
    };
    for frame in samples.chunks(160) {
        let mut encoded = Vec::with_capacity(160);
        mulaw::encode_into(frame, &mut encoded);
        session
            .commands
            .append_audio(Bytes::from(encoded))
            .await
            .unwrap();
    }
}

/// Reads events until one matches, returning it and everything seen before.
async fn until(
    session: &mut RealtimeSession,
    done: impl Fn(&RealtimeEvent) -> bool,
) -> (RealtimeEvent, Vec<RealtimeEvent>) {
    let mut seen = Vec::new();
    loop {
        let event = next_event(session).await;
        if done(&event) {
            return (event, seen);
        }
        seen.push(event);
    }
}

/// A stand-in whose realtime endpoint fails with `fault` on every session.
async fn standin_with_realtime_fault(fault: Fault) -> StandinHandle {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    standin.inject(FaultRule::new(Some(Endpoint::Realtime), fault, None));
    standin
}

/// Opens a session, says 600 ms of a 440 Hz tone then 500 ms of silence, and reads events
/// until the response is done: the session, `response.done` and the events before it.
async fn say_a_tone(openai: &OpenAi) -> (RealtimeSession, RealtimeEvent, Vec<RealtimeEvent>) {
    let mut session = connect(openai).await.unwrap();
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::SessionUpdated
    );
    send_audio(&mut session, 600, true).await;
    send_audio(&mut session, 500, false).await;
    let (done, seen) = until(&mut session, |e| {
        matches!(e, RealtimeEvent::ResponseDone { .. })
    })
    .await;
    (session, done, seen)
}

/// What the assistant said among `events`: its transcript and its audio, decoded.
fn reply_in(events: &[RealtimeEvent]) -> (String, Vec<i16>) {
    let mut said = String::new();
    let mut audio = Vec::new();
    for event in events {
        match event {
            RealtimeEvent::AudioDelta { audio: a, .. } => {
                audio.extend(a.iter().map(|&b| mulaw_decode(b)));
            }
            RealtimeEvent::TranscriptDelta { delta, .. } => said.push_str(delta),
            _ => {}
        }
    }
    (said, audio)
}

#[tokio::test]
async fn round_trip_with_transcript_audio_and_truncate() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    let openai = client(&standin, "sk-test", 0);
    let (mut session, done, seen) = say_a_tone(&openai).await;
    let RealtimeEvent::ResponseDone { status, .. } = done else {
        unreachable!()
    };
    assert_eq!(status, "completed");
    assert!(
        matches!(seen[0], RealtimeEvent::SpeechStarted { .. }),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, RealtimeEvent::SpeechStopped { .. }))
    );
    assert!(seen.contains(&RealtimeEvent::InputTranscript {
        item_id: match &seen[0] {
            RealtimeEvent::SpeechStarted { item_id, .. } => item_id.clone(),
            _ => unreachable!(),
        },
        text: "tone 440".into()
    }));
    let item = seen
        .iter()
        .find_map(|e| match e {
            RealtimeEvent::AudioDelta { item_id, .. } => Some(item_id.clone()),
            _ => None,
        })
        .expect("assistant audio");
    let (said, audio) = reply_in(&seen);
    assert_eq!(said, "I heard tone 440. What else can I do for you?");
    assert_eq!(dominant_frequency(&audio, 8000, -40.0), Some(660));

    session.commands.truncate(item.clone(), 50).await.unwrap();
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Truncated {
            item_id: item.clone(),
            audio_end_ms: 50
        }
    );
    // beyond the audio that exists: the provider reports an error, the session stays usable
    session.commands.truncate(item, 3_600_000).await.unwrap();
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::ServerError { .. }
    ));
    assert_eq!(standin.stats().realtime_truncations, 1);
    session.commands.close().await.unwrap();
}

#[tokio::test]
async fn caller_speech_cancels_the_response_in_flight() {
    let config = StandinConfig {
        speech_pace: 1.0, // response audio at real-time pace, so it is still playing
        ..StandinConfig::instant()
    };
    let standin = OpenAiStandin::start(config).await.unwrap();
    let openai = client(&standin, "sk-test", 0);
    let mut session = connect(&openai).await.unwrap();
    send_audio(&mut session, 400, true).await;
    send_audio(&mut session, 400, false).await;
    let (first_audio, _) = until(&mut session, |e| {
        matches!(e, RealtimeEvent::AudioDelta { .. })
    })
    .await;
    let RealtimeEvent::AudioDelta { item_id, .. } = first_audio else {
        unreachable!()
    };

    // barge-in
    send_audio(&mut session, 100, true).await;
    let (done, seen) = until(&mut session, |e| {
        matches!(e, RealtimeEvent::ResponseDone { .. })
    })
    .await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, RealtimeEvent::SpeechStarted { .. }))
    );
    assert!(
        matches!(&done, RealtimeEvent::ResponseDone { status, .. } if status == "cancelled"),
        "{done:?}"
    );
    assert_eq!(standin.stats().realtime_cancelled_responses, 1);

    // keep only what was heard of the interrupted item
    session
        .commands
        .truncate(item_id.clone(), 40)
        .await
        .unwrap();
    let (truncated, _) = until(&mut session, |e| {
        matches!(e, RealtimeEvent::Truncated { .. })
    })
    .await;
    assert_eq!(
        truncated,
        RealtimeEvent::Truncated {
            item_id,
            audio_end_ms: 40
        }
    );
}

/// A provider whose events the worker cannot decode (here every one preceded by garbage: not
/// JSON, or audio that is not base64) costs those events only: the session goes on and the
/// reply arrives whole.
#[tokio::test]
async fn undecodable_events_are_skipped_and_the_session_goes_on() {
    let standin = standin_with_realtime_fault(Fault::GarbageEvents).await;
    let openai = client(&standin, "sk-test", 0);
    let (mut session, done, seen) = say_a_tone(&openai).await;
    assert!(
        matches!(&done, RealtimeEvent::ResponseDone { status, .. } if status == "completed"),
        "{done:?}"
    );
    let (said, audio) = reply_in(&seen);
    assert_eq!(said, "I heard tone 440. What else can I do for you?");
    assert_eq!(dominant_frequency(&audio, 8000, -40.0), Some(660));
    session.commands.close().await.unwrap();
}

#[tokio::test]
async fn rate_limited_handshake_is_retried() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    standin.inject(FaultRule::new(
        Some(Endpoint::Realtime),
        Fault::RateLimit { retry_after_ms: 20 },
        Some(1),
    ));
    let openai = client(&standin, "sk-test", 1);
    let mut session = connect(&openai).await.unwrap();
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::SessionUpdated
    );
    assert_eq!(standin.stats().realtime.requests, 2);
}

#[tokio::test]
async fn missing_key_is_refused_at_handshake() {
    let standin = OpenAiStandin::start(StandinConfig::instant())
        .await
        .unwrap();
    // A key that is only whitespace is sent as "Bearer  " and refused like a missing one.
    let openai = client(&standin, " ", 2);
    let result = connect(&openai).await;
    assert!(
        matches!(
            &result,
            Err(ProviderError::Auth { status: 401, message }) if message.contains("(request req_standin_")
        ),
        "{:?}",
        result.err()
    );
    assert_eq!(standin.stats().unauthorized, 1);
}

#[tokio::test]
async fn dropped_connection_ends_the_session_with_an_error() {
    let standin = standin_with_realtime_fault(Fault::DropMidStream).await;
    let openai = client(&standin, "sk-test", 0);
    let mut session = connect(&openai).await.unwrap();
    send_audio(&mut session, 400, true).await;
    send_audio(&mut session, 400, false).await;
    let mut saw_audio = false;
    let error = loop {
        match tokio::time::timeout(PATIENCE, session.events.next())
            .await
            .expect("event in time")
        {
            Some(Ok(RealtimeEvent::AudioDelta { .. })) => saw_audio = true,
            Some(Ok(_)) => {}
            Some(Err(error)) => break error,
            None => panic!("session ended without an error"),
        }
    };
    assert!(saw_audio);
    assert!(matches!(error, ProviderError::Transport(_)), "{error:?}");
    assert!(session.events.next().await.is_none());
}

/// An `https` base URL goes through TLS (rustls must be wired with a crypto provider): against
/// a server that is not TLS the handshake fails with a typed error, never a panic.
#[tokio::test]
async fn tls_handshake_failure_is_a_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"this is not TLS\r\n\r\n").await;
        }
    });
    let config = ProviderConfig {
        base_url: format!("https://{addr}/v1"),
        api_key: "sk-test".into(),
        timeout: Duration::from_secs(5),
        max_retries: 0,
    };
    let openai = OpenAi::new(ProviderHttp::new(None).unwrap(), config);
    let result = connect(&openai).await;
    assert!(
        matches!(result, Err(ProviderError::Transport(_))),
        "{:?}",
        result.err()
    );
    server.abort();
}
