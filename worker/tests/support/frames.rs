//! Random carrier input for property tests: messages of each protocol with every field
//! sometimes right and sometimes wrong, raw text, truncated JSON and binary frames.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use callfleet_worker::protocols::Protocol;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

/// Any JSON value, a few levels deep.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field value that is sometimes what the protocol expects and sometimes anything.
pub fn loose(expected: Value) -> impl Strategy<Value = Value> {
    prop_oneof![3 => Just(expected), 1 => any_json()]
}

/// Base64 of arbitrary bytes, or text that is not base64 at all.
pub fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..400).prop_map(|b| Value::from(STANDARD.encode(b))),
        1 => ".{0,40}".prop_map(Value::from),
        1 => any_json(),
    ]
}

/// Sample rates: the supported ones, their neighbours, and anything.
pub fn rate() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![8_000u32, 16_000, 24_000, 44_100, 0, 7_999])
            .prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any_json(),
    ]
}

/// A message of this protocol with each field sometimes right and sometimes wrong, or a type
/// nobody knows, so the generator reaches past the JSON parser into every branch.
pub fn message(protocol: Protocol) -> BoxedStrategy<Value> {
    let kind = |known: &'static [&'static str]| {
        prop_oneof![
            4 => prop::sample::select(known).prop_map(Value::from),
            1 => any_json(),
        ]
    };
    match protocol {
        Protocol::Twilio => (
            kind(&["connected", "start", "media", "mark", "dtmf", "stop"]),
            payload(),
            loose(json!("inbound")),
            loose(json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})),
            loose(json!({"token": "t"})),
            any_json(),
        )
            .prop_map(|(event, payload, track, format, params, other)| {
                json!({
                    "event": event,
                    "streamSid": "MZ1",
                    "media": {"track": track, "payload": payload},
                    "start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": format,
                              "customParameters": params},
                    "mark": {"name": other},
                    "dtmf": {"digit": "5"},
                })
            })
            .boxed(),
        Protocol::CallSession => (
            kind(&["start_call", "audio", "end_call", "mark"]),
            loose(json!("call-1")),
            payload(),
            loose(json!("mulaw")),
            rate(),
            any_json(),
        )
            .prop_map(|(kind, call_id, data, format, rate, name)| {
                let mut message =
                    json!({"type": kind, "callId": call_id, "data": data, "name": name});
                // Format fields only sometimes: their absence is the seed's default.
                if !format.is_null() {
                    message["format"] = format;
                    message["sampleRate"] = rate;
                }
                message
            })
            .boxed(),
        Protocol::FreeSwitch => (
            kind(&["dtmf", "mark", "stop", "hangup"]),
            loose(json!("uuid-1")),
            rate(),
            loose(json!({"enabled": true, "streaming": true, "sampleRate": 16000})),
            any_json(),
        )
            .prop_map(|(kind, call_id, rate, bidirectional, data)| {
                json!({
                    "callId": call_id,
                    "sampleRate": rate,
                    "bidirectionalAudio": bidirectional,
                    "type": kind,
                    "data": data,
                })
            })
            .boxed(),
    }
}

/// One frame as a carrier might send it: a protocol message, raw text, or binary.
#[derive(Debug, Clone)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

pub fn frame(protocol: Protocol) -> impl Strategy<Value = Frame> {
    prop_oneof![
        6 => message(protocol).prop_map(|m| Frame::Text(m.to_string())),
        1 => ".{0,64}".prop_map(Frame::Text),
        // Truncated messages: valid JSON cut anywhere.
        1 => (message(protocol), any::<prop::sample::Index>()).prop_map(|(m, at)| {
            let text = m.to_string();
            let cut = text.char_indices().map(|(i, _)| i).nth(at.index(text.chars().count()));
            Frame::Text(text[..cut.unwrap_or(0)].to_owned())
        }),
        2 => prop::collection::vec(any::<u8>(), 0..700).prop_map(Frame::Binary),
    ]
}

pub fn any_protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(vec![
        Protocol::CallSession,
        Protocol::Twilio,
        Protocol::FreeSwitch,
    ])
}

/// A proptest runner for the live random tests, seeded from `CALLFLEET_RANDOM_SEED` (64 hex
/// digits) when set, else at random. The seed is printed, and returned as hex for failure
/// messages, so a failing run can be replayed.
pub fn seeded_runner() -> (TestRunner, String) {
    let seed: [u8; 32] = match std::env::var("CALLFLEET_RANDOM_SEED") {
        Ok(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex seed"))
            .collect::<Vec<u8>>()
            .try_into()
            .expect("32-byte seed"),
        Err(_) => rand::random(),
    };
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    println!("CALLFLEET_RANDOM_SEED={hex}");
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
    (TestRunner::new_with_rng(Default::default(), rng), hex)
}

/// One value of `strategy`, drawn by `runner` (no shrinking: the seed replays the run).
pub fn draw<S: Strategy>(strategy: S, runner: &mut TestRunner) -> S::Value {
    strategy.new_tree(runner).expect("a value").current()
}
