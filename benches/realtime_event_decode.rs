//! Decoding realtime server events (a benchmark, not a test): CPU per event for the worker's
//! `decode_server_event` on one assistant response as the OpenAI Realtime API sends it with
//! `audio/pcmu` output: `response.created`, the item and content part announcements, 100 ms
//! audio deltas (800 µ-law bytes, 1,068 base64 characters) interleaved with transcript deltas,
//! the done events and `response.done` with its usage. In realtime mode this runs for every
//! event of every call's replies, so it is per-call CPU while the assistant speaks.
//!
//! `cargo bench -p callfleet-tests --bench realtime_event_decode -- [responses]` (default 5,000).

use std::hint::black_box;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use callfleet_worker::providers::RealtimeEvent;
use callfleet_worker::providers::openai::realtime::decode_server_event;

/// Seconds of assistant audio in the response.
const RESPONSE_SECONDS: usize = 6;

fn response_events() -> Vec<String> {
    let ids = r#""event_id":"event_AbCdEf0123456789","response_id":"resp_AbCdEf0123456789","item_id":"item_AbCdEf0123456789","output_index":0,"content_index":0"#;
    let mut events = vec![
        r#"{"type":"response.created","event_id":"event_AbCdEf0123456780","response":{"object":"realtime.response","id":"resp_AbCdEf0123456789","status":"in_progress","status_details":null,"output":[],"conversation_id":"conv_AbCdEf0123456789","output_modalities":["audio"],"max_output_tokens":"inf","audio":{"output":{"format":{"type":"audio/pcmu"},"voice":"alloy"}},"usage":null,"metadata":null}}"#.to_owned(),
        r#"{"type":"response.output_item.added","event_id":"event_AbCdEf0123456781","response_id":"resp_AbCdEf0123456789","output_index":0,"item":{"id":"item_AbCdEf0123456789","type":"message","status":"in_progress","role":"assistant","content":[]}}"#.to_owned(),
        r#"{"type":"response.content_part.added","event_id":"event_AbCdEf0123456782","response_id":"resp_AbCdEf0123456789","item_id":"item_AbCdEf0123456789","output_index":0,"content_index":0,"part":{"type":"audio","transcript":""}}"#.to_owned(),
    ];
    let audio = BASE64.encode(
        (0..800u32)
            .map(|i| (i * 37 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let words = "Sure, I can move your appointment to Thursday at ten in the morning. \
        Doctor Patel has that slot free, and you will get a text message to confirm it."
        .split(' ')
        .collect::<Vec<_>>();
    for delta in 0..RESPONSE_SECONDS * 10 {
        if let Some(word) = words.get(delta) {
            events.push(format!(
                r#"{{"type":"response.output_audio_transcript.delta",{ids},"delta":" {word}"}}"#
            ));
        }
        events.push(format!(
            r#"{{"type":"response.output_audio.delta",{ids},"delta":"{audio}"}}"#
        ));
    }
    events.push(format!(r#"{{"type":"response.output_audio.done",{ids}}}"#));
    events.push(format!(
        r#"{{"type":"response.output_audio_transcript.done",{ids},"transcript":"{}"}}"#,
        words.join(" ")
    ));
    events.push(r#"{"type":"response.done","event_id":"event_AbCdEf0123456783","response":{"object":"realtime.response","id":"resp_AbCdEf0123456789","status":"completed","status_details":null,"output":[{"id":"item_AbCdEf0123456789","type":"message","status":"completed","role":"assistant","content":[{"type":"output_audio","transcript":"Sure, I can move your appointment."}]}],"usage":{"total_tokens":412,"input_tokens":150,"output_tokens":262,"input_token_details":{"text_tokens":120,"audio_tokens":30,"cached_tokens":0},"output_token_details":{"text_tokens":40,"audio_tokens":222}},"metadata":null}}"#.to_owned());
    events
}

fn main() {
    let responses: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5_000);
    let events = response_events();
    let bytes: usize = events.iter().map(String::len).sum();
    let mut audio_bytes = 0usize;
    let started = Instant::now();
    for _ in 0..responses {
        for event in &events {
            if let Ok(Some(RealtimeEvent::AudioDelta { audio, .. })) =
                decode_server_event(black_box(event))
            {
                audio_bytes += audio.len();
            }
        }
    }
    let elapsed = started.elapsed();
    let decoded = responses * events.len();
    println!(
        "{responses} responses, {} events each ({bytes} bytes): {:.0} ns per event, {:.1} µs per response ({} audio bytes)",
        events.len(),
        elapsed.as_nanos() as f64 / decoded as f64,
        elapsed.as_secs_f64() * 1e6 / responses as f64,
        audio_bytes / responses,
    );
}
