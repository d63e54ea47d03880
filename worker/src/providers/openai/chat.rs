//! `POST /chat/completions` with `stream: true`: request body and decoding of the SSE chunks.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::Step;
use crate::providers::{ChatMessage, ProviderError};
use callfleet_crds::aipipeline::LlmSpec;

/// The request body for a streamed chat completion.
pub fn chat_request_body(messages: &[ChatMessage], spec: &LlmSpec) -> Value {
    json!({
        "model": spec.model,
        "messages": messages,
        "stream": true,
        "temperature": spec.temperature,
        "max_completion_tokens": spec.max_tokens,
    })
}

/// One streamed chat chunk, as far as the reply needs it. Typed and borrowing from the event
/// (a delta's text is copied only when it holds escapes): the decoder runs for every token of
/// every reply, and a `serde_json::Value` built a map for each chunk's dozen fields. Unknown
/// fields (`id`, `model`, `usage`, filter results...) are skipped, and `null` reads as absent
/// wherever a compatible server might send it.
#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default, borrow)]
    error: Option<StreamError<'a>>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

/// An error a provider reports inside a stream (`{"error": {"message": ...}}`).
#[derive(Deserialize, Default)]
pub(super) struct StreamError<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

impl StreamError<'_> {
    /// The error the stream ends with.
    pub(super) fn mid_stream(self) -> ProviderError {
        let message = self.message.unwrap_or(Cow::Borrowed("unknown error"));
        ProviderError::Protocol(format!("provider error mid-stream: {message}"))
    }
}

/// Decodes one SSE `data:` payload: a text delta, nothing (role-only or final chunks), the
/// `[DONE]` terminator, or an error the provider reported mid-stream.
pub fn decode_chat_event(data: &str) -> Step<String> {
    if data.trim() == "[DONE]" {
        return Step::Finish;
    }
    let chunk: ChatChunk = match serde_json::from_str(data) {
        Ok(chunk) => chunk,
        Err(e) => return Step::Fail(ProviderError::Protocol(format!("bad chat chunk: {e}"))),
    };
    if let Some(error) = chunk.error {
        return Step::Fail(error.mid_stream());
    }
    let first = chunk.choices.and_then(|choices| choices.into_iter().next());
    match first.and_then(|choice| choice.delta?.content) {
        Some(text) if !text.is_empty() => Step::Yield(text.into_owned()),
        _ => Step::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatRole;

    #[test]
    fn body_has_stream_model_and_messages() {
        let spec = LlmSpec::default();
        let body = chat_request_body(&[ChatMessage::new(ChatRole::System, "be brief")], &spec);
        assert_eq!(body["stream"], true);
        assert_eq!(body["model"], spec.model.as_str());
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][0]["content"], "be brief");
        assert_eq!(body["max_completion_tokens"], spec.max_tokens);
    }

    #[test]
    fn decodes_deltas_done_and_errors() {
        let delta = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
        assert!(matches!(decode_chat_event(delta), Step::Yield(t) if t == "Hel"));
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert!(matches!(decode_chat_event(role), Step::Skip));
        let stop = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert!(matches!(decode_chat_event(stop), Step::Skip));
        assert!(matches!(decode_chat_event("[DONE]"), Step::Finish));
        let err = r#"{"error":{"message":"overloaded","type":"server_error"}}"#;
        assert!(
            matches!(decode_chat_event(err), Step::Fail(ProviderError::Protocol(m)) if m.contains("overloaded"))
        );
        assert!(matches!(
            decode_chat_event("{not json"),
            Step::Fail(ProviderError::Protocol(_))
        ));
    }

    #[test]
    fn decodes_what_compatible_servers_add_or_leave_out() {
        let escaped = r#"{"choices":[{"delta":{"content":"say \"hi\"\n"}}]}"#;
        assert!(matches!(decode_chat_event(escaped), Step::Yield(t) if t == "say \"hi\"\n"));
        let null_content = r#"{"choices":[{"delta":{"content":null,"tool_calls":[]}}]}"#;
        assert!(matches!(decode_chat_event(null_content), Step::Skip));
        let usage_only = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":9}}"#;
        assert!(matches!(decode_chat_event(usage_only), Step::Skip));
        let filtered = r#"{"choices":[],"prompt_filter_results":[{"prompt_index":0}]}"#;
        assert!(matches!(decode_chat_event(filtered), Step::Skip));
        let no_delta = r#"{"choices":[{"index":0,"finish_reason":"length"}]}"#;
        assert!(matches!(decode_chat_event(no_delta), Step::Skip));
        let second_choice = r#"{"choices":[{"delta":{}},{"delta":{"content":"x"}}]}"#;
        assert!(
            matches!(decode_chat_event(second_choice), Step::Skip),
            "only the first choice"
        );
        let bare_error = r#"{"error":{"code":500}}"#;
        assert!(
            matches!(decode_chat_event(bare_error), Step::Fail(ProviderError::Protocol(m)) if m.contains("unknown error"))
        );
        for nulls in [
            r#"{"choices":null}"#,
            r#"{"choices":[{"delta":null,"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":{"content":null}}],"error":null}"#,
        ] {
            assert!(matches!(decode_chat_event(nulls), Step::Skip), "{nulls}");
        }
        let unicode = r#"{"choices":[{"delta":{"content":"\u00e9t\u00e9 你"}}]}"#;
        assert!(matches!(decode_chat_event(unicode), Step::Yield(t) if t == "été 你"));
    }
}
