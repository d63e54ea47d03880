//! `POST /v1/chat/completions`: replies per `rules::chat_reply`, streamed over SSE token by
//! token (or as one JSON completion when `stream` is false).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::Shared;
use super::arrival::RequestArrival;
use super::config::StandinConfig;
use super::faults::{Endpoint, Fault};
use super::respond::{Gate, Piece, bad_request, gate, paced_response, sse};
use super::rules::{chat_reply, tokens};

/// The text of the last `user` message (string content or text parts).
fn last_user_text(messages: &[Value]) -> Option<String> {
    let message = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match message.get("content")? {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

pub async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    arrival: RequestArrival,
    Json(request): Json<Value>,
) -> Response {
    let arrived = arrival.or_now();
    let mid_stream = match gate(&shared, Endpoint::Chat).await {
        Gate::Serve(mid_stream) => mid_stream,
        Gate::Refuse(response) => return response,
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return bad_request("you must provide a model parameter");
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return bad_request("'messages' is a required property");
    };
    shared.stats.chat_prompt(messages.len());
    let reply = chat_reply(&last_user_text(messages).unwrap_or_default());
    let limit = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_u64))
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let filtered = mid_stream == Some(Fault::ContentFilter);
    let (mid_stream, all_tokens) = if filtered {
        (None, Vec::new())
    } else {
        (mid_stream, tokens(&reply))
    };
    let finish_reason = if filtered {
        "content_filter"
    } else if all_tokens.len() > limit {
        "length"
    } else {
        "stop"
    };
    let tokens: Vec<String> = all_tokens.into_iter().take(limit).collect();
    let config = &shared.config;
    let first = StandinConfig::ms(config.chat_first_token_ms);
    let streamed = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !streamed {
        let body = json!({
            "id": "chatcmpl-standin", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": tokens.concat()}, "finish_reason": finish_reason}],
        });
        return paced_response(
            &shared,
            Endpoint::Chat,
            "application/json",
            arrived,
            vec![Piece::new(first, body.to_string())],
            mid_stream,
        );
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        sse(&json!({
            "id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string())
    };
    let mut pieces = vec![Piece::new(
        first,
        chunk(json!({"role": "assistant", "content": ""}), None),
    )];
    for token in &tokens {
        pieces.push(Piece::new(
            StandinConfig::ms(config.chat_token_ms),
            chunk(json!({"content": token}), None),
        ));
    }
    pieces.push(Piece::new(
        Default::default(),
        chunk(json!({}), Some(finish_reason)),
    ));
    pieces.push(Piece::new(Default::default(), sse("[DONE]")));
    paced_response(
        &shared,
        Endpoint::Chat,
        "text/event-stream",
        arrived,
        pieces,
        mid_stream,
    )
}
