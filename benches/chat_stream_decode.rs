//! Decoding a streamed chat completion (a benchmark, not a test): CPU per SSE chunk for the
//! worker's decoder (`SseDecoder` framing, then `decode_chat_event` per event) on a reply as
//! the OpenAI API streams it, one token per event with its `id`, `model`, `system_fingerprint`
//! and `choices` fields, the body arriving in network chunks of 1,400 bytes. It runs for every
//! token of every reply, so it is per-turn CPU that grows with reply length.
//!
//! `cargo bench -p callfleet-tests --bench chat_stream_decode -- [replies]` (default 20,000).

use std::hint::black_box;
use std::time::Instant;

use callfleet_worker::providers::openai::chat::decode_chat_event;
use callfleet_worker::providers::openai::http::Step;
use callfleet_worker::providers::openai::sse::SseDecoder;

/// A 60-token reply, with the role chunk first and the finish chunk and `[DONE]` last.
fn openai_stream() -> Vec<u8> {
    let head = r#"{"id":"chatcmpl-AbCdEf0123456789","object":"chat.completion.chunk","created":1764547200,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0123456789","choices":[{"index":0,"#;
    let mut body = String::new();
    let mut event = |choice: &str| {
        body.push_str("data: ");
        body.push_str(head);
        body.push_str(choice);
        body.push_str("}]}\n\n");
    };
    event(
        r#""delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null"#,
    );
    let words = "Sure, I can move your appointment to Thursday at ten in the morning. \
        Doctor Patel has that slot free, and you will get a text message to confirm it. \
        Is there anything else I can help you with today, like directions or parking?";
    for (i, word) in words.split(' ').enumerate() {
        let token = if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        };
        event(&format!(
            r#""delta":{{"content":"{token}"}},"logprobs":null,"finish_reason":null"#
        ));
    }
    event(r#""delta":{},"logprobs":null,"finish_reason":"stop""#);
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}

fn main() {
    let replies: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let stream = openai_stream();
    let mut events = 0usize;
    let mut text_bytes = 0usize;
    let started = Instant::now();
    for _ in 0..replies {
        let mut decoder = SseDecoder::default();
        for chunk in stream.chunks(1_400) {
            for event in decoder.push(black_box(chunk)) {
                events += 1;
                if let Step::Yield(text) = decode_chat_event(&event.data) {
                    text_bytes += text.len();
                }
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{replies} replies, {} events each, {} bytes of body: {:.0} ns per event, {:.1} µs per reply ({} text bytes)",
        events / replies,
        stream.len(),
        elapsed.as_nanos() as f64 / events as f64,
        elapsed.as_secs_f64() * 1e6 / replies as f64,
        text_bytes / replies,
    );
}
