//! Property tests for the worker's pure parsers and stream transforms: whatever bytes a carrier
//! or a provider sends, and wherever the network splits them, nothing panics, nothing is lost
//! and the answer does not depend on the chunking.
//!
//! The example-based tests next to each module pin the expected answers; these check the
//! invariants over inputs nobody thought to write down (proptest shrinks a failure to a minimal
//! case and prints it).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use callfleet_crds::aipipeline::TurnDetectionSpec;
use callfleet_worker::admission::{
    TokenError, TokenSecret, authentic_call_id, mint_token, verify_token,
};
use callfleet_worker::media::format::is_supported_rate;
use callfleet_worker::media::{StreamResampler, Vad, VadEvent, l16, mulaw};
use callfleet_worker::protocols::{Decoder, InboundEvent, Incoming, Protocol, ProtocolError};
use callfleet_worker::providers::RealtimeEvent;
use callfleet_worker::providers::openai::chat::decode_chat_event;
use callfleet_worker::providers::openai::pcm::SampleAligner;
use callfleet_worker::providers::openai::realtime::decode_server_event;
use callfleet_worker::providers::openai::retry::parse_retry_after;
use callfleet_worker::providers::openai::sse::{SseDecoder, SseEvent};
use callfleet_worker::providers::openai::stt::{decode_transcript_event, decode_transcript_json};
use callfleet_worker::providers::openai::wav::encode_wav;
use callfleet_worker::session::sentences::SentenceSplitter;
use proptest::prelude::*;
use serde_json::{Value, json};

mod support;

use support::frames::{Frame, any_json, any_protocol, frame, loose, payload};

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// `cases` random cases per property. Failures are not written next to the sources: a failure
/// found once becomes an example test in the module it concerns (see `token.rs`, `retry.rs`).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `data` cut into consecutive pieces at arbitrary points (some empty).
fn split_at<T: Clone>(data: &[T], cuts: &[prop::sample::Index]) -> Vec<Vec<T>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for to in points.into_iter().chain([data.len()]) {
        pieces.push(data[from..to].to_vec());
        from = to;
    }
    pieces
}

fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..12)
}

// ---------------------------------------------------------------------------------------------
// Carrier protocols
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// Any sequence of frames on any protocol: every frame gets an event or an error (never a
    /// panic), a call starts at most once, and once it ended every later frame is refused.
    #[test]
    fn decoders_survive_any_frames(
        (protocol, frames) in any_protocol()
            .prop_flat_map(|p| (Just(p), prop::collection::vec(frame(p), 1..16)))
    ) {
        let mut decoder = Decoder::new(protocol);
        let (mut starts, mut ended) = (0, false);
        for frame in &frames {
            let result = match frame {
                Frame::Text(text) => decoder.decode(Incoming::Text(text)),
                Frame::Binary(bytes) => decoder.decode(Incoming::Binary(bytes)),
            };
            if ended {
                prop_assert!(result.is_err(), "accepted after the end: {:?}", result);
                continue;
            }
            match result {
                Ok(InboundEvent::Start(start)) => {
                    starts += 1;
                    prop_assert!(!start.call_id.is_empty());
                    prop_assert!(is_supported_rate(start.inbound.sample_rate));
                    prop_assert!(is_supported_rate(start.outbound.sample_rate));
                }
                Ok(InboundEvent::Audio { format, .. }) => {
                    prop_assert!(starts == 1, "audio before the call started");
                    prop_assert!(is_supported_rate(format.sample_rate));
                }
                Ok(InboundEvent::End) => ended = true,
                Ok(_) => {}
                Err(error) => {
                    // Every refusal maps to a protocol error code and a message for the caller.
                    let _ = error.code();
                    prop_assert!(!error.to_string().is_empty());
                }
            }
        }
        prop_assert!(starts <= 1);
    }

    /// Audio after a valid start decodes to exactly one sample per wire sample; an L16 payload
    /// of odd length is refused, not truncated.
    #[test]
    fn audio_payloads_keep_every_sample(
        protocol in any_protocol(),
        bytes in prop::collection::vec(any::<u8>(), 0..1_000),
    ) {
        let mut decoder = Decoder::new(protocol);
        let (start, audio, bytes_per_sample) = match protocol {
            Protocol::Twilio => (
                json!({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}}),
                Frame::Text(json!({"event": "media", "media": {"payload": STANDARD.encode(&bytes)}}).to_string()),
                1,
            ),
            Protocol::CallSession => (
                json!({"type": "start_call", "callId": "c", "format": "pcm16", "sampleRate": 16000}),
                Frame::Text(json!({"type": "audio", "data": STANDARD.encode(&bytes),
                                   "format": "pcm16", "sampleRate": 16000}).to_string()),
                2,
            ),
            Protocol::FreeSwitch => (
                json!({"callId": "u", "sampleRate": 16000}),
                Frame::Binary(bytes.clone()),
                2,
            ),
        };
        let started = decoder.decode(Incoming::Text(&start.to_string()));
        prop_assert!(matches!(started, Ok(InboundEvent::Start(_))), "{:?}", started);
        let result = match &audio {
            Frame::Text(text) => decoder.decode(Incoming::Text(text)),
            Frame::Binary(bytes) => decoder.decode(Incoming::Binary(bytes)),
        };
        if bytes.len() % bytes_per_sample == 0 {
            match result {
                Ok(InboundEvent::Audio { samples, .. }) => {
                    prop_assert_eq!(samples.len(), bytes.len() / bytes_per_sample)
                }
                other => prop_assert!(false, "expected audio, got {:?}", other),
            }
        } else {
            prop_assert_eq!(result, Err(ProtocolError::OddLength(bytes.len())));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Codecs
// ---------------------------------------------------------------------------------------------

fn mulaw_round_trip(sample: i16) -> i16 {
    let mut codes = Vec::new();
    mulaw::encode_into(&[sample], &mut codes);
    mulaw::decode_sample(codes[0])
}

proptest! {
    #![proptest_config(config(256))]

    /// µ-law quantizes once: encoding a decoded value gives it back, and quantization keeps
    /// the order of samples (no wrap-around at the extremes).
    #[test]
    fn mulaw_is_stable_and_monotonic(a in any::<i16>(), b in any::<i16>()) {
        let (qa, qb) = (mulaw_round_trip(a), mulaw_round_trip(b));
        prop_assert_eq!(mulaw_round_trip(qa), qa);
        if a <= b {
            prop_assert!(qa <= qb, "{} -> {}, {} -> {}", a, qa, b, qb);
        }
        // G.711 keeps the sign and stays within its 14-bit range.
        prop_assert!(qa.signum() == a.signum() || qa == 0);
        prop_assert!(qa.unsigned_abs() <= 32_124);
    }

    /// L16 is lossless both ways.
    #[test]
    fn l16_round_trips(samples in prop::collection::vec(any::<i16>(), 0..400)) {
        let mut bytes = Vec::new();
        l16::encode_into(&samples, &mut bytes);
        prop_assert_eq!(bytes.len(), samples.len() * 2);
        let mut back = Vec::new();
        l16::decode_into(&bytes, &mut back).unwrap();
        prop_assert_eq!(back, samples);
    }

    /// The transcription upload is a WAV every reader accepts, holding exactly the utterance.
    #[test]
    fn wav_upload_holds_the_utterance(
        samples in prop::collection::vec(any::<i16>(), 0..2_000),
        rate in prop::sample::select(vec![8_000u32, 16_000, 24_000]),
    ) {
        let wav = encode_wav(&samples, rate);
        let mut reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
        prop_assert_eq!(reader.spec().sample_rate, rate);
        prop_assert_eq!(reader.spec().channels, 1);
        let back: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(back, samples);
    }
}

// ---------------------------------------------------------------------------------------------
// Streams the network splits anywhere
// ---------------------------------------------------------------------------------------------

/// An SSE event as a server writes it, with the line endings and comments the format allows.
#[derive(Debug, Clone)]
struct WrittenEvent {
    name: Option<String>,
    data_lines: Vec<String>,
    comment: bool,
    ending: &'static str,
}

fn written_event() -> impl Strategy<Value = WrittenEvent> {
    // Field values never hold a line break (the format has no escape for one).
    let value = "[^\r\n]{0,30}";
    (
        prop::option::of("[a-z._]{1,20}"),
        prop::collection::vec(value, 1..4),
        any::<bool>(),
        prop::sample::select(vec!["\n", "\r\n", "\r"]),
    )
        .prop_map(|(name, data_lines, comment, ending)| WrittenEvent {
            name,
            data_lines,
            comment,
            ending,
        })
}

fn write_events(events: &[WrittenEvent]) -> Vec<u8> {
    let mut out = String::new();
    for event in events {
        let nl = event.ending;
        if event.comment {
            out.push_str(&format!(": keep-alive{nl}"));
        }
        if let Some(name) = &event.name {
            out.push_str(&format!("event: {name}{nl}"));
        }
        for line in &event.data_lines {
            out.push_str(&format!("data: {line}{nl}"));
        }
        out.push_str(nl);
    }
    out.into_bytes()
}

proptest! {
    #![proptest_config(config(256))]

    /// Server-sent events come out whole and in order however the body is chunked, with each
    /// event's data lines joined by `\n`.
    #[test]
    fn sse_events_do_not_depend_on_chunking(
        events in prop::collection::vec(written_event(), 0..8),
        cuts in cuts(),
    ) {
        let body = write_events(&events);
        let mut decoder = SseDecoder::default();
        let decoded: Vec<SseEvent> = split_at(&body, &cuts)
            .iter()
            .flat_map(|chunk| decoder.push(chunk))
            .collect();
        let expected: Vec<SseEvent> = events
            .iter()
            .map(|e| SseEvent { event: e.name.clone(), data: e.data_lines.join("\n") })
            .collect();
        prop_assert_eq!(decoded, expected);
    }

    /// The TTS body's bytes come out as whole samples, none lost or reordered, wherever a
    /// sample is split between chunks.
    #[test]
    fn tts_samples_survive_any_chunking(
        body in prop::collection::vec(any::<u8>(), 0..600),
        cuts in cuts(),
    ) {
        let mut aligner = SampleAligner::default();
        let mut out = Vec::new();
        for chunk in split_at(&body, &cuts) {
            let whole = aligner.push(chunk.into());
            prop_assert!(whole.len() % 2 == 0);
            out.extend_from_slice(&whole);
        }
        prop_assert_eq!(&out[..], &body[..body.len() / 2 * 2]);
        prop_assert_eq!(aligner.has_partial_sample(), body.len() % 2 == 1);
    }

    /// Sentences come out the same however the LLM's deltas are cut, and no text is lost: the
    /// sentences hold every non-space character of the reply, in order.
    #[test]
    fn sentences_do_not_depend_on_deltas(
        reply in "[a-zA-Z0-9é ,.!?\"')”\n-]{0,120}",
        cuts in cuts(),
    ) {
        let whole = {
            let mut splitter = SentenceSplitter::default();
            let mut sentences = splitter.push(&reply);
            sentences.extend(splitter.finish());
            sentences
        };
        let chars: Vec<char> = reply.chars().collect();
        let mut splitter = SentenceSplitter::default();
        let mut streamed = Vec::new();
        for delta in split_at(&chars, &cuts) {
            streamed.extend(splitter.push(&delta.iter().collect::<String>()));
        }
        streamed.extend(splitter.finish());
        prop_assert_eq!(&streamed, &whole);
        prop_assert!(streamed.iter().all(|s| !s.is_empty() && s.trim() == s));
        let kept: String = streamed.concat().chars().filter(|c| !c.is_whitespace()).collect();
        let sent: String = reply.chars().filter(|c| !c.is_whitespace()).collect();
        prop_assert_eq!(kept, sent);
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Resampling gives the same samples whatever the chunk sizes, and after `flush` exactly
    /// as many as the rates say: no audio lost or invented at the end of a reply.
    #[test]
    fn resampling_does_not_depend_on_chunking(
        from in prop::sample::select(vec![8_000u32, 16_000, 24_000]),
        to in prop::sample::select(vec![8_000u32, 16_000, 24_000]),
        input in prop::collection::vec(any::<i16>(), 0..3_000),
        cuts in cuts(),
    ) {
        let run = |pieces: &[Vec<i16>]| {
            let mut resampler = StreamResampler::new(from, to).unwrap();
            let mut out = Vec::new();
            for piece in pieces {
                resampler.push(piece, &mut out).unwrap();
            }
            resampler.flush(&mut out).unwrap();
            out
        };
        let whole = run(std::slice::from_ref(&input));
        prop_assert_eq!(whole.len() as u64, input.len() as u64 * u64::from(to) / u64::from(from));
        prop_assert_eq!(run(&split_at(&input, &cuts)), whole);
    }
}

// ---------------------------------------------------------------------------------------------
// Turn detection
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// Over any audio, the VAD alternates "speech started" and "turn ended", starting with
    /// speech, with pauses (and speech resumed after them) only in between and only when an
    /// early-reply window shorter than the turn's is set; frames of any length (even empty)
    /// are measured without panicking.
    #[test]
    fn vad_events_follow_speech_pauses_and_turn_ends(
        frames in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<i16>(), 0..200),
                (any::<i16>(), 0..200usize).prop_map(|(level, n)| vec![level; n]),
            ],
            0..200,
        ),
        threshold in prop_oneof![-90i32..0, any::<i32>()],
        silence_ms in prop_oneof![20u32..400, any::<u32>()],
        min_speech_ms in prop_oneof![0u32..200, any::<u32>()],
        early_reply_ms in prop::option::of(prop_oneof![20u32..400, any::<u32>()]),
    ) {
        let mut vad = Vad::new(&TurnDetectionSpec {
            vad_threshold_dbfs: threshold,
            silence_ms,
            min_speech_ms,
            barge_in: true,
            early_reply_ms,
        });
        let pauses = early_reply_ms.is_some_and(|ms| ms < silence_ms);
        // Speech starts, may pause and resume, and ends; then the next utterance.
        let mut last = VadEvent::TurnEnded;
        for frame in &frames {
            if let Some(event) = vad.process(frame, 20) {
                let allowed: &[VadEvent] = match last {
                    VadEvent::TurnEnded => &[VadEvent::SpeechStarted],
                    VadEvent::SpeechStarted | VadEvent::Resumed => {
                        &[VadEvent::Paused, VadEvent::TurnEnded]
                    }
                    VadEvent::Paused => &[VadEvent::Resumed, VadEvent::TurnEnded],
                };
                prop_assert!(allowed.contains(&event), "{:?} after {:?}", event, last);
                prop_assert!(
                    pauses || !matches!(event, VadEvent::Paused | VadEvent::Resumed),
                    "a pause without an early-reply window shorter than the turn's"
                );
                last = event;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Call tokens
// ---------------------------------------------------------------------------------------------

fn secret() -> TokenSecret {
    TokenSecret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
}

proptest! {
    #![proptest_config(config(256))]

    /// A token minted for any call id (SIP Call-IDs hold dots and `@`) admits exactly that
    /// call until it expires.
    #[test]
    fn tokens_admit_their_call_until_expiry(
        call_id in "[^\u{0}]{1,40}",
        other in "[^\u{0}]{1,40}",
        now in 0u64..4_000_000_000,
        ttl in 1u64..1_000_000,
    ) {
        let token = mint_token(&secret(), &call_id, now + ttl);
        prop_assert_eq!(authentic_call_id(&secret(), &token, now), Ok(call_id.as_str()));
        prop_assert_eq!(verify_token(&secret(), &token, &call_id, now), Ok(()));
        prop_assert_eq!(verify_token(&secret(), &token, &call_id, now + ttl), Err(TokenError::Expired));
        if other != call_id {
            prop_assert_eq!(verify_token(&secret(), &token, &other, now), Err(TokenError::WrongCall));
        }
    }

    /// Changing any one character of a token, or cutting it short, makes it worthless.
    #[test]
    fn tampered_tokens_are_refused(
        call_id in "[A-Za-z0-9.@-]{1,30}",
        at in any::<prop::sample::Index>(),
        replacement in any::<char>(),
        keep in any::<prop::sample::Index>(),
    ) {
        let token = mint_token(&secret(), &call_id, 2_000_000_000);
        let mut chars: Vec<char> = token.chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let tampered: String = chars.iter().collect();
        prop_assert!(authentic_call_id(&secret(), &tampered, 0).is_err(), "{} accepted", tampered);
        let cut = &token[..keep.index(token.len())];
        prop_assert!(authentic_call_id(&secret(), cut, 0).is_err(), "{} accepted", cut);
    }

    /// Anything presented as a token is refused with a reason, never a panic.
    #[test]
    fn arbitrary_tokens_are_refused(token in ".{0,120}") {
        prop_assert!(authentic_call_id(&secret(), &token, 0).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Provider answers
// ---------------------------------------------------------------------------------------------

/// Text a provider might send: JSON shaped like its events, any JSON, or anything.
/// A realtime server event: a type the worker reads (or not, or none), with each field it
/// reads sometimes as the API sends it and sometimes any JSON at all, and fields it ignores.
fn realtime_event() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        8 => prop::sample::select(vec![
            "session.updated",
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
            "response.output_audio.delta",
            "response.audio.delta",
            "response.output_audio_transcript.delta",
            "response.audio_transcript.delta",
            "response.output_audio.done",
            "response.audio.done",
            "response.done",
            "conversation.item.truncated",
            "error",
            "rate_limits.updated",
        ])
        .prop_map(Value::from),
        1 => any_json(),
    ];
    let details = prop_oneof![
        3 => loose(json!("content_filter"))
            .prop_map(|reason| json!({"type": "incomplete", "reason": reason})),
        1 => any_json(),
    ];
    let response = prop_oneof![
        3 => (loose(json!("resp_1")), loose(json!("completed")), any_json(), details)
            .prop_map(|(id, status, output, details)| json!({"id": id, "status": status, "output": output, "status_details": details})),
        1 => any_json(),
    ];
    let error = prop_oneof![
        3 => (loose(json!("bad_truncate")), loose(json!("too \"long\"")))
            .prop_map(|(code, message)| json!({"type": "invalid_request_error", "code": code, "message": message})),
        1 => any_json(),
    ];
    let ms = || prop_oneof![3 => (0u64..10_000_000_000).prop_map(Value::from), 1 => any_json()];
    (
        kind,
        (loose(json!("item_\u{e9}\n1")), loose(json!("resp_1"))),
        (ms(), ms(), loose(json!("caller said \"hi\""))),
        (
            prop_oneof![2 => payload(), 1 => loose(json!(" word"))],
            response,
            error,
        ),
        (any_json(), prop::collection::vec(any::<bool>(), 9)),
    )
        .prop_map(
            |(
                kind,
                (item_id, response_id),
                (start, end, transcript),
                (delta, response, error),
                (extra, present),
            )| {
                let fields = [
                    ("type", kind),
                    ("item_id", item_id),
                    ("response_id", response_id),
                    ("audio_start_ms", start),
                    ("audio_end_ms", end),
                    ("transcript", transcript),
                    ("delta", delta),
                    ("response", response),
                    ("error", error),
                ];
                let mut event = serde_json::Map::new();
                event.insert("event_id".into(), extra);
                for ((name, value), present) in fields.into_iter().zip(present) {
                    if present || name == "type" {
                        event.insert(name.into(), value);
                    }
                }
                Value::Object(event)
            },
        )
}

/// The realtime decoder as it read events through a `serde_json::Value` (before 2026-12-01);
/// `None` for an error.
fn reference_realtime_decode(event: &Value) -> Option<Option<RealtimeEvent>> {
    let text = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let ms = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_u64)
            .map_or(0, |ms| u32::try_from(ms).unwrap_or(u32::MAX))
    };
    let decoded = match event.get("type").and_then(Value::as_str)? {
        "session.updated" => RealtimeEvent::SessionUpdated,
        "input_audio_buffer.speech_started" => RealtimeEvent::SpeechStarted {
            item_id: text("/item_id"),
            audio_start_ms: ms("/audio_start_ms"),
        },
        "input_audio_buffer.speech_stopped" => RealtimeEvent::SpeechStopped {
            item_id: text("/item_id"),
            audio_end_ms: ms("/audio_end_ms"),
        },
        "conversation.item.input_audio_transcription.completed" => RealtimeEvent::InputTranscript {
            item_id: text("/item_id"),
            text: text("/transcript"),
        },
        "response.created" => RealtimeEvent::ResponseCreated {
            response_id: text("/response/id"),
        },
        "response.output_audio.delta" | "response.audio.delta" => RealtimeEvent::AudioDelta {
            response_id: text("/response_id"),
            item_id: text("/item_id"),
            audio: STANDARD.decode(text("/delta")).ok()?.into(),
        },
        "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
            RealtimeEvent::TranscriptDelta {
                response_id: text("/response_id"),
                item_id: text("/item_id"),
                delta: text("/delta"),
            }
        }
        "response.output_audio.done" | "response.audio.done" => RealtimeEvent::AudioDone {
            item_id: text("/item_id"),
        },
        "response.done" => RealtimeEvent::ResponseDone {
            response_id: text("/response/id"),
            status: text("/response/status"),
            reason: text("/response/status_details/reason"),
        },
        "conversation.item.truncated" => RealtimeEvent::Truncated {
            item_id: text("/item_id"),
            audio_end_ms: ms("/audio_end_ms"),
        },
        "error" => RealtimeEvent::ServerError {
            code: event
                .pointer("/error/code")
                .and_then(Value::as_str)
                .map(str::to_owned),
            message: text("/error/message"),
        },
        _ => return Some(None),
    };
    Some(Some(decoded))
}

fn provider_text() -> impl Strategy<Value = String> {
    let typed = (
        prop::sample::select(vec![
            "session.created",
            "session.updated",
            "response.audio.delta",
            "response.output_audio.delta",
            "response.audio_transcript.delta",
            "response.done",
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "conversation.item.input_audio_transcription.completed",
            "transcript.text.delta",
            "transcript.text.done",
            "error",
        ]),
        any_json(),
        payload(),
    )
        .prop_map(|(kind, anything, delta)| {
            json!({"type": kind, "delta": delta, "response": anything.clone(), "error": anything,
                   "item_id": "i", "choices": [{"delta": {"content": delta}}]})
            .to_string()
        });
    prop_oneof![
        3 => typed,
        2 => any_json().prop_map(|v| v.to_string()),
        1 => ".{0,64}",
        1 => Just("[DONE]".to_owned()),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever a provider sends, its decoders answer with an event, a skip or an error.
    #[test]
    fn provider_decoders_survive_any_text(text in provider_text()) {
        let _ = decode_server_event(&text);
        let _ = decode_chat_event(&text);
        let _ = decode_transcript_event(&text);
        let _ = decode_transcript_json(text.as_bytes());
    }

    /// The realtime decoder reads every event as a `serde_json::Value` reading would (the
    /// decoder it replaced, kept below as the reference): the same event, skip or error, for
    /// every event type it knows and fields of every JSON type.
    #[test]
    fn realtime_events_decode_as_a_value_reading_does(event in realtime_event()) {
        let text = event.to_string();
        let decoded = decode_server_event(&text);
        let reference = reference_realtime_decode(&event);
        match (&decoded, &reference) {
            (Ok(got), Some(want)) => prop_assert_eq!(got, want, "{}", text),
            (Err(_), None) => {}
            _ => prop_assert!(false, "{text}: typed {decoded:?}, reference {reference:?}"),
        }
    }

    /// A retry hint of any form gives a delay or none, never a panic (a huge or odd value from a
    /// misbehaving proxy must not take the call down).
    #[test]
    fn retry_hints_never_panic(
        ms in prop_oneof![".{0,24}", any::<f64>().prop_map(|f| f.to_string()), Just("1e300".to_owned())],
        secs in prop_oneof![".{0,24}", any::<u64>().prop_map(|n| n.to_string())],
    ) {
        let _ = parse_retry_after(Some(&ms), Some(&secs));
        let _ = parse_retry_after(None, Some(&secs));
        let _ = parse_retry_after(Some(&ms), None);
    }
}
