//! `POST /audio/transcriptions`: the multipart upload and decoding of both the plain JSON
//! answer and the streamed `transcript.text.*` events.

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use std::borrow::Cow;

use serde::Deserialize;

use super::chat::StreamError;
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

/// The plain JSON answer, as far as the turn needs it (`usage` and the rest are skipped).
#[derive(Deserialize)]
struct TranscriptJson<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

/// Decodes the non-streamed answer `{"text": ...}`.
pub fn decode_transcript_json(body: &[u8]) -> ProviderResult<Transcript> {
    let answer: TranscriptJson = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Protocol(format!("bad transcription response: {e}")))?;
    let text = answer
        .text
        .ok_or_else(|| ProviderError::Protocol("transcription response has no text".into()))?;
    Ok(Transcript {
        text: text.trim().to_owned(),
    })
}

/// One streamed transcription event, typed and borrowing as the chat stream's chunks are
/// (`logprobs`, `usage` and the rest are skipped).
#[derive(Deserialize)]
struct TranscriptStreamEvent<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error: Option<StreamError<'a>>,
}

/// Decodes one SSE `data:` payload of a streamed transcription.
pub fn decode_transcript_event(data: &str) -> Step<TranscriptEvent> {
    if data.trim() == "[DONE]" {
        return Step::Finish;
    }
    let event: TranscriptStreamEvent = match serde_json::from_str(data) {
        Ok(event) => event,
        Err(e) => {
            return Step::Fail(ProviderError::Protocol(format!(
                "bad transcription event: {e}"
            )));
        }
    };
    match event.kind.as_deref().unwrap_or_default() {
        "transcript.text.delta" => Step::Yield(TranscriptEvent::Delta(
            event.delta.unwrap_or_default().into_owned(),
        )),
        "transcript.text.done" => Step::Last(TranscriptEvent::Done(Transcript {
            text: event.text.unwrap_or_default().trim().to_owned(),
        })),
        "error" => Step::Fail(event.error.unwrap_or_default().mid_stream()),
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
        let with_logprobs = r#"{"type":"transcript.text.delta","delta":" caf\u00e9","logprobs":[{"token":" caf","logprob":-0.1}]}"#;
        assert!(
            matches!(decode_transcript_event(with_logprobs), Step::Yield(TranscriptEvent::Delta(d)) if d == " café")
        );
        let error = r#"{"type":"error","error":{"message":"audio too short","type":"invalid_request_error"}}"#;
        assert!(
            matches!(decode_transcript_event(error), Step::Fail(ProviderError::Protocol(m)) if m.contains("audio too short"))
        );
        let nulls = r#"{"type":null,"delta":null,"text":null,"error":null}"#;
        assert!(matches!(decode_transcript_event(nulls), Step::Skip));
        let bare_error = r#"{"type":"error"}"#;
        assert!(
            matches!(decode_transcript_event(bare_error), Step::Fail(ProviderError::Protocol(m)) if m.contains("unknown error"))
        );
    }
}
