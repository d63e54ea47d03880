//! `POST /v1/audio/speech` with `response_format: "pcm"`: a tone (see `rules`) as raw s16le
//! 24 kHz, streamed in chunks whose byte lengths are deliberately odd and even in turn, the way
//! a real network splits a body mid-sample.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::Shared;
use super::arrival::RequestArrival;
use super::audio::tone;
use super::config::StandinConfig;
use super::faults::Endpoint;
use super::respond::{Gate, Piece, bad_request, gate, paced_response};
use super::rules::{SPEECH_AMPLITUDE, speech_sample_count};

/// The only rate of OpenAI's `pcm` format.
pub const SPEECH_SAMPLE_RATE: u32 = 24_000;

pub async fn speech(
    State(shared): State<Arc<Shared>>,
    arrival: RequestArrival,
    Json(request): Json<Value>,
) -> Response {
    let arrived = arrival.or_now();
    let mid_stream = match gate(&shared, Endpoint::Speech).await {
        Gate::Serve(mid_stream) => mid_stream,
        Gate::Refuse(response) => return response,
    };
    let Some(input) = request.get("input").and_then(Value::as_str) else {
        return bad_request("'input' is a required property");
    };
    if request.get("model").and_then(Value::as_str).is_none() {
        return bad_request("'model' is a required property");
    }
    match request.get("response_format").and_then(Value::as_str) {
        Some("pcm") => {}
        other => {
            return bad_request(&format!(
                "the stand-in only produces response_format \"pcm\", not {other:?}"
            ));
        }
    }
    let config = &shared.config;
    let speed = request.get("speed").and_then(Value::as_f64).unwrap_or(1.0);
    let samples = speech_sample_count(input, speed, config.speech_ms_per_char, SPEECH_SAMPLE_RATE);
    let pcm = speech_pcm(&shared, samples);

    let chunk_bytes =
        (SPEECH_SAMPLE_RATE as usize * 2 * config.speech_chunk_ms.max(1) as usize / 1000).max(2);
    let pace = if config.speech_pace > 0.0 {
        config.speech_pace
    } else {
        1.0
    };
    let between = StandinConfig::ms(config.speech_chunk_ms).div_f64(pace);
    let mut pieces = Vec::new();
    let mut offset = 0;
    while offset < pcm.len() {
        // odd, then even-minus-one... so sample boundaries fall inside chunks
        let len = if pieces.len() % 2 == 0 {
            chunk_bytes + 1
        } else {
            chunk_bytes - 1
        };
        let end = (offset + len).min(pcm.len());
        let delay = if pieces.is_empty() {
            StandinConfig::ms(config.speech_first_byte_ms)
        } else {
            between
        };
        pieces.push(Piece::new(delay, pcm.slice(offset..end)));
        offset = end;
    }
    paced_response(
        &shared,
        Endpoint::Speech,
        "audio/pcm",
        arrived,
        pieces,
        mid_stream,
    )
}

/// Speech kept synthesized, enough for any reply the stand-in writes.
const CACHED_SPEECH_SECONDS: usize = 60;

/// `samples` of speech as s16le: a slice of the cached tone, or (longer than that) a new one.
/// Every response is a prefix of one tone (it starts at phase 0), so slicing replaces
/// synthesizing and copying per request: the stand-in's CPU at 1,000 calls in conversation went
/// from 22% to 18% of a core, on the machine the worker under test shares with it.
fn speech_pcm(shared: &Shared, samples: usize) -> Bytes {
    let tone_hz = shared.config.speech_tone_hz;
    let cached = shared
        .speech_tone
        .get_or_init(|| tone_bytes(tone_hz, CACHED_SPEECH_SECONDS * SPEECH_SAMPLE_RATE as usize));
    if samples * 2 <= cached.len() {
        cached.slice(..samples * 2)
    } else {
        tone_bytes(tone_hz, samples)
    }
}

fn tone_bytes(tone_hz: u32, samples: usize) -> Bytes {
    let tone = tone(tone_hz, SPEECH_SAMPLE_RATE, samples, SPEECH_AMPLITUDE);
    let mut bytes = Vec::with_capacity(samples * 2);
    for sample in tone {
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_speech_is_the_same_tone_as_synthesized() {
        let shared = Shared {
            config: StandinConfig::default(),
            faults: Default::default(),
            stats: Default::default(),
            speech_tone: Default::default(),
        };
        let short = speech_pcm(&shared, 4_800);
        assert_eq!(short, tone_bytes(shared.config.speech_tone_hz, 4_800));
        let long = CACHED_SPEECH_SECONDS * SPEECH_SAMPLE_RATE as usize + 10;
        assert_eq!(speech_pcm(&shared, long).len(), long * 2);
    }
}
