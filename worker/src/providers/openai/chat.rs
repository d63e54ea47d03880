//! `POST /chat/completions` with `stream: true`: request body and decoding of the SSE chunks.

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

/// Decodes one SSE `data:` payload: a text delta, nothing (role-only or final chunks), the
/// `[DONE]` terminator, or an error the provider reported mid-stream.
pub fn decode_chat_event(data: &str) -> Step<String> {
    if data.trim() == "[DONE]" {
        return Step::Finish;
    }
    let chunk: Value = match serde_json::from_str(data) {
        Ok(chunk) => chunk,
        Err(e) => return Step::Fail(ProviderError::Protocol(format!("bad chat chunk: {e}"))),
    };
    if let Some(error) = chunk.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        return Step::Fail(ProviderError::Protocol(format!(
            "provider error mid-stream: {message}"
        )));
    }
    match chunk
        .pointer("/choices/0/delta/content")
        .and_then(Value::as_str)
    {
        Some(text) if !text.is_empty() => Step::Yield(text.to_owned()),
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
}
