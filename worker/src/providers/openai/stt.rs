//! `POST /audio/transcriptions`: the multipart upload and decoding of both the plain JSON
//! answer and the streamed `transcript.text.*` events.

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use super::http::Step;
use crate::providers::{ProviderError, ProviderResult, Transcript, TranscriptEvent};
use callfleet_crds::aipipeline::SttSpec;

/// Whether the model answers `stream=true` with `transcript.text.delta` events (the GPT-4o
/// transcribe family; `whisper-1` does not stream).
pub fn supports_streaming(model: &str) -> bool {
    model.starts_with("gpt-4o-transcribe") || model.starts_with("gpt-4o-mini-transcribe")
}

/// The multipart form for one attempt (forms are single-use; `wav` is shared, not copied).
pub fn transcription_form(wav: &Bytes, spec: &SttSpec, stream: bool) -> Form {
    let file = Part::stream_with_length(wav.clone(), wav.len() as u64);
    with_file(fields(spec, stream), file)
}

/// The multipart form of an upload made while the caller speaks: the WAV is `body`, written as
/// the audio arrives (no length, so the request goes chunked).
pub fn live_transcription_form(body: reqwest::Body, spec: &SttSpec, stream: bool) -> Form {
    with_file(fields(spec, stream), Part::stream(body))
}

/// The text fields, sent before the file so a server can refuse a bad request before the audio.
fn fields(spec: &SttSpec, stream: bool) -> Form {
    let mut form = Form::new()
        .text("model", spec.model.clone())
        .text("response_format", "json");
    if let Some(language) = spec.language.as_ref().filter(|l| !l.is_empty()) {
        form = form.text("language", language.clone());
    }
    if stream {
        form = form.text("stream", "true");
    }
    form
}

fn with_file(form: Form, file: Part) -> Form {
    let file = file.file_name("utterance.wav");
    // "audio/wav" always parses; the fallback only keeps this free of a panic path.
    match file.mime_str("audio/wav") {
        Ok(file) => form.part("file", file),
        Err(_) => form,
    }
}

/// Decodes the non-streamed answer `{"text": ...}`.
pub fn decode_transcript_json(body: &[u8]) -> ProviderResult<Transcript> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Protocol(format!("bad transcription response: {e}")))?;
    let text = value
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Protocol("transcription response has no text".into()))?;
    Ok(Transcript {
        text: text.trim().to_owned(),
    })
}

/// Decodes one SSE `data:` payload of a streamed transcription.
pub fn decode_transcript_event(data: &str) -> Step<TranscriptEvent> {
    if data.trim() == "[DONE]" {
        return Step::Finish;
    }
    let event: Value = match serde_json::from_str(data) {
        Ok(event) => event,
        Err(e) => {
            return Step::Fail(ProviderError::Protocol(format!(
                "bad transcription event: {e}"
            )));
        }
    };
    let text_field = |name| {
        event
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match event.get("type").and_then(Value::as_str) {
        Some("transcript.text.delta") => Step::Yield(TranscriptEvent::Delta(text_field("delta"))),
        Some("transcript.text.done") => Step::Last(TranscriptEvent::Done(Transcript {
            text: text_field("text").trim().to_owned(),
        })),
        Some("error") => {
            let message = event
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            Step::Fail(ProviderError::Protocol(format!(
                "provider error mid-stream: {message}"
            )))
        }
        _ => Step::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_models() {
        assert!(supports_streaming("gpt-4o-mini-transcribe"));
        assert!(supports_streaming("gpt-4o-transcribe"));
        assert!(!supports_streaming("whisper-1"));
    }

    #[test]
    fn decodes_json_answer() {
        assert_eq!(
            decode_transcript_json(br#"{"text":" tone 440 ","usage":{}}"#)
                .unwrap()
                .text,
            "tone 440"
        );
        assert!(decode_transcript_json(b"{}").is_err());
        assert!(decode_transcript_json(b"<html>").is_err());
    }

    #[test]
    fn decodes_stream_events() {
        let delta = r#"{"type":"transcript.text.delta","delta":"tone"}"#;
        assert!(
            matches!(decode_transcript_event(delta), Step::Yield(TranscriptEvent::Delta(d)) if d == "tone")
        );
        let done = r#"{"type":"transcript.text.done","text":"tone 440"}"#;
        assert!(matches!(
            decode_transcript_event(done),
            Step::Last(TranscriptEvent::Done(Transcript { text })) if text == "tone 440"
        ));
        let segment = r#"{"type":"transcript.text.segment","text":"x"}"#;
        assert!(matches!(decode_transcript_event(segment), Step::Skip));
        assert!(matches!(decode_transcript_event("[DONE]"), Step::Finish));
        assert!(matches!(decode_transcript_event("nope"), Step::Fail(_)));
    }
}
