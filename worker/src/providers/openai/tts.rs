//! `POST /audio/speech` with `response_format: "pcm"` (mono s16le at 24 kHz, streamed raw).

use serde_json::{Value, json};

use callfleet_crds::aipipeline::TtsSpec;

/// The request body for streamed raw PCM speech.
pub fn speech_request_body(text: &str, spec: &TtsSpec) -> Value {
    json!({
        "model": spec.model,
        "input": text,
        "voice": spec.voice,
        "response_format": "pcm",
        "speed": spec.speed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_raw_pcm() {
        let body = speech_request_body("Hello.", &TtsSpec::default());
        assert_eq!(body["response_format"], "pcm");
        assert_eq!(body["input"], "Hello.");
        assert_eq!(body["voice"], "alloy");
    }
}
