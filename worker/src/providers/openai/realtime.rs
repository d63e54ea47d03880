//! `/realtime` over WebSocket (GA event names, beta audio names accepted): the URL, the
//! `session.update` we send first, command encoding, server event decoding, and the connect
//! shell that wires them into a [`RealtimeSession`].

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use futures::{SinkExt, future};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::http::{describe, with_retries};
use super::retry::parse_retry_after;
use crate::providers::{
    ChatRole, ProviderConfig, ProviderError, ProviderResult, RealtimeCommand, RealtimeCommands,
    RealtimeEvent, RealtimeOptions, RealtimeSession,
};
use callfleet_crds::aipipeline::RealtimeSpec;

/// Read buffer per session: tungstenite zero-fills its (default 128 KiB) buffer before every
/// read, which costs memory and CPU per call; a few KiB is plenty for 20 ms audio events.
const READ_BUFFER_BYTES: usize = 4096;

/// `ws(s)://<base>/realtime?model=<model>` from an `http(s)` or `ws(s)` base URL.
pub fn realtime_url(base_url: &str, model: &str) -> ProviderResult<String> {
    let mut url = reqwest::Url::parse(base_url)
        .map_err(|e| ProviderError::Protocol(format!("invalid provider base URL: {e}")))?;
    let scheme = match url.scheme() {
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        other => {
            return Err(ProviderError::Protocol(format!(
                "unsupported provider URL scheme {other}"
            )));
        }
    };
    // Switching between special schemes always succeeds.
    let _ = url.set_scheme(scheme);
    let path = format!("{}/realtime", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.query_pairs_mut().clear().append_pair("model", model);
    Ok(url.into())
}

/// The first message: µ-law in and out, server VAD, the instructions and the voice.
pub fn session_update(spec: &RealtimeSpec, options: &RealtimeOptions) -> Value {
    let vad = &options.vad;
    let mut input = json!({
        "format": {"type": "audio/pcmu"},
        "turn_detection": {
            "type": "server_vad",
            "threshold": vad.threshold,
            "prefix_padding_ms": vad.prefix_padding_ms,
            "silence_duration_ms": vad.silence_duration_ms,
            "create_response": true,
            "interrupt_response": vad.interrupt_response,
        },
    });
    if let Some(model) = &options.input_transcription_model {
        input["transcription"] = json!({ "model": model });
    }
    json!({
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": options.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": input,
                "output": {"format": {"type": "audio/pcmu"}, "voice": spec.voice},
            },
        },
    })
}

/// The JSON text of a client event.
pub fn encode_command(command: &RealtimeCommand) -> String {
    match command {
        // Hand-built: this runs for every 20 ms frame, and base64 needs no JSON escaping.
        RealtimeCommand::AppendAudio(mulaw) => format!(
            r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
            BASE64.encode(mulaw)
        ),
        RealtimeCommand::Truncate {
            item_id,
            audio_end_ms,
        } => json!({
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": audio_end_ms,
        })
        .to_string(),
        RealtimeCommand::CreateResponse { instructions } => match instructions {
            Some(text) => json!({"type": "response.create", "response": {"instructions": text}}),
            None => json!({"type": "response.create"}),
        }
        .to_string(),
        RealtimeCommand::CancelResponse => json!({"type": "response.cancel"}).to_string(),
        RealtimeCommand::AddMessage(message) => {
            // Text the model wrote is `output_text`; text it is given is `input_text`.
            let content_type = match message.role {
                ChatRole::Assistant => "output_text",
                ChatRole::User | ChatRole::System => "input_text",
            };
            json!({
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": message.role,
                    "content": [{"type": content_type, "text": message.content}],
                },
            })
            .to_string()
        }
    }
}

/// Decodes one server event; `Ok(None)` for events the call loop does not need.
pub fn decode_server_event(text: &str) -> ProviderResult<Option<RealtimeEvent>> {
    let event: Value = serde_json::from_str(text)
        .map_err(|e| ProviderError::Protocol(format!("bad realtime event: {e}")))?;
    let str_at = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let ms_at = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_u64)
            .map_or(0, |ms| u32::try_from(ms).unwrap_or(u32::MAX))
    };
    let Some(kind) = event.get("type").and_then(Value::as_str) else {
        return Err(ProviderError::Protocol(
            "realtime event without type".into(),
        ));
    };
    let decoded = match kind {
        "session.updated" => RealtimeEvent::SessionUpdated,
        "input_audio_buffer.speech_started" => RealtimeEvent::SpeechStarted {
            item_id: str_at("/item_id"),
            audio_start_ms: ms_at("/audio_start_ms"),
        },
        "input_audio_buffer.speech_stopped" => RealtimeEvent::SpeechStopped {
            item_id: str_at("/item_id"),
            audio_end_ms: ms_at("/audio_end_ms"),
        },
        "conversation.item.input_audio_transcription.completed" => RealtimeEvent::InputTranscript {
            item_id: str_at("/item_id"),
            text: str_at("/transcript"),
        },
        "response.created" => RealtimeEvent::ResponseCreated {
            response_id: str_at("/response/id"),
        },
        "response.output_audio.delta" | "response.audio.delta" => {
            let audio = BASE64
                .decode(str_at("/delta"))
                .map_err(|e| ProviderError::Protocol(format!("bad audio delta: {e}")))?;
            RealtimeEvent::AudioDelta {
                response_id: str_at("/response_id"),
                item_id: str_at("/item_id"),
                audio: Bytes::from(audio),
            }
        }
        "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
            RealtimeEvent::TranscriptDelta {
                response_id: str_at("/response_id"),
                item_id: str_at("/item_id"),
                delta: str_at("/delta"),
            }
        }
        "response.output_audio.done" | "response.audio.done" => RealtimeEvent::AudioDone {
            item_id: str_at("/item_id"),
        },
        "response.done" => RealtimeEvent::ResponseDone {
            response_id: str_at("/response/id"),
            status: str_at("/response/status"),
        },
        "conversation.item.truncated" => RealtimeEvent::Truncated {
            item_id: str_at("/item_id"),
            audio_end_ms: ms_at("/audio_end_ms"),
        },
        "error" => RealtimeEvent::ServerError {
            code: event
                .pointer("/error/code")
                .and_then(Value::as_str)
                .map(str::to_owned),
            message: str_at("/error/message"),
        },
        _ => return Ok(None),
    };
    Ok(Some(decoded))
}

/// Opens the WebSocket (retrying like HTTP requests), sends `session.update`, and returns the
/// session's two halves.
pub async fn connect(
    config: &ProviderConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    spec: &RealtimeSpec,
    options: &RealtimeOptions,
) -> ProviderResult<RealtimeSession> {
    let url = realtime_url(&config.base_url, &spec.model)?;
    let authorization =
        HeaderValue::from_str(&format!("Bearer {}", config.api_key)).map_err(|_| {
            ProviderError::Auth {
                status: 0,
                message: "API key is not a valid header value".into(),
            }
        })?;
    let (url, authorization, tls) = (&url, &authorization, &tls);
    let socket = with_retries(config.max_retries, move || async move {
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ProviderError::Protocol(describe(&e)))?;
        request
            .headers_mut()
            .insert("authorization", authorization.clone());
        let ws_config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let connector = tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let handshake = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            true,
            connector,
        );
        match timeout(config.timeout, handshake).await {
            Err(_) => Err(ProviderError::Timeout("realtime handshake")),
            Ok(Err(e)) => Err(handshake_error(e)),
            Ok(Ok((socket, _response))) => Ok(socket),
        }
    })
    .await?;

    let (mut sink, stream) = socket.split();
    let update = session_update(spec, options).to_string();
    sink.send(Message::Text(update.into()))
        .await
        .map_err(ws_error)?;

    let commands = sink
        .sink_map_err(ws_error)
        .with(|command: RealtimeCommand| {
            future::ready(Ok::<_, ProviderError>(Message::Text(
                encode_command(&command).into(),
            )))
        });
    let events = stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        loop {
            match stream.next().await? {
                Ok(Message::Text(text)) => match decode_server_event(&text) {
                    Ok(Some(event)) => return Some((Ok(event), Some(stream))),
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "skipping undecodable realtime event");
                        continue;
                    }
                },
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue, // pings are answered by tungstenite; binary is not used
                Err(e) => return Some((Err(ws_error(e)), None)),
            }
        }
    });
    Ok(RealtimeSession {
        commands: RealtimeCommands::new(commands),
        events: events.boxed(),
    })
}

/// Classifies a failed handshake: an HTTP refusal keeps its status (429, 401, 5xx, ...).
fn handshake_error(error: tungstenite::Error) -> ProviderError {
    match error {
        tungstenite::Error::Http(response) => {
            let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
            let retry_after = parse_retry_after(header("retry-after-ms"), header("retry-after"));
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            ProviderError::from_status(
                response.status().as_u16(),
                retry_after,
                &body,
                header("x-request-id"),
            )
        }
        other => ws_error(other),
    }
}

fn ws_error(error: tungstenite::Error) -> ProviderError {
    match error {
        tungstenite::Error::Url(e) => ProviderError::Protocol(format!("realtime URL: {e}")),
        other => ProviderError::Transport(describe(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{ChatMessage, ServerVad};
    use callfleet_crds::aipipeline::TurnDetectionSpec;

    #[test]
    fn builds_realtime_urls() {
        assert_eq!(
            realtime_url("https://api.openai.com/v1", "gpt-realtime").unwrap(),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(
            realtime_url("http://127.0.0.1:9000/v1/", "m x").unwrap(),
            "ws://127.0.0.1:9000/v1/realtime?model=m+x"
        );
        assert!(realtime_url("ftp://x/v1", "m").is_err());
        assert!(realtime_url("not a url", "m").is_err());
    }

    #[test]
    fn session_update_asks_for_pcmu_and_server_vad() {
        let options = RealtimeOptions {
            instructions: "be brief".into(),
            vad: ServerVad::from_spec(&TurnDetectionSpec::default()),
            input_transcription_model: Some("gpt-4o-mini-transcribe".into()),
        };
        let update = session_update(&RealtimeSpec::default(), &options);
        assert_eq!(update["type"], "session.update");
        let session = &update["session"];
        assert_eq!(session["audio"]["input"]["format"]["type"], "audio/pcmu");
        assert_eq!(session["audio"]["output"]["format"]["type"], "audio/pcmu");
        assert_eq!(
            session["audio"]["input"]["turn_detection"]["type"],
            "server_vad"
        );
        assert_eq!(
            session["audio"]["input"]["turn_detection"]["silence_duration_ms"],
            TurnDetectionSpec::default().silence_ms
        );
        assert_eq!(
            session["audio"]["input"]["transcription"]["model"],
            "gpt-4o-mini-transcribe"
        );
        assert_eq!(session["instructions"], "be brief");
    }

    #[test]
    fn encodes_commands() {
        let append: Value = serde_json::from_str(&encode_command(&RealtimeCommand::AppendAudio(
            Bytes::from_static(&[0xff, 0x7f]),
        )))
        .unwrap();
        assert_eq!(append["type"], "input_audio_buffer.append");
        assert_eq!(append["audio"], "/38=");
        let truncate: Value = serde_json::from_str(&encode_command(&RealtimeCommand::Truncate {
            item_id: "item_1".into(),
            audio_end_ms: 1234,
        }))
        .unwrap();
        assert_eq!(truncate["type"], "conversation.item.truncate");
        assert_eq!(truncate["content_index"], 0);
        assert_eq!(truncate["audio_end_ms"], 1234);
        let create: Value =
            serde_json::from_str(&encode_command(&RealtimeCommand::CreateResponse {
                instructions: Some("greet".into()),
            }))
            .unwrap();
        assert_eq!(create["response"]["instructions"], "greet");
        let said: Value = serde_json::from_str(&encode_command(&RealtimeCommand::AddMessage(
            ChatMessage::new(ChatRole::Assistant, "Hello \"there\""),
        )))
        .unwrap();
        assert_eq!(said["type"], "conversation.item.create");
        assert_eq!(said["item"]["role"], "assistant");
        assert_eq!(said["item"]["content"][0]["type"], "output_text");
        assert_eq!(said["item"]["content"][0]["text"], "Hello \"there\"");
        let heard: Value = serde_json::from_str(&encode_command(&RealtimeCommand::AddMessage(
            ChatMessage::new(ChatRole::User, "tone 440"),
        )))
        .unwrap();
        assert_eq!(heard["item"]["role"], "user");
        assert_eq!(heard["item"]["content"][0]["type"], "input_text");
    }

    #[test]
    fn decodes_server_events() {
        let delta = r#"{"type":"response.output_audio.delta","response_id":"r1","item_id":"i1","output_index":0,"content_index":0,"delta":"/38="}"#;
        assert_eq!(
            decode_server_event(delta).unwrap(),
            Some(RealtimeEvent::AudioDelta {
                response_id: "r1".into(),
                item_id: "i1".into(),
                audio: Bytes::from_static(&[0xff, 0x7f]),
            })
        );
        let beta =
            r#"{"type":"response.audio.delta","response_id":"r1","item_id":"i1","delta":""}"#;
        assert!(matches!(
            decode_server_event(beta).unwrap(),
            Some(RealtimeEvent::AudioDelta { .. })
        ));
        let started =
            r#"{"type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"u1"}"#;
        assert_eq!(
            decode_server_event(started).unwrap(),
            Some(RealtimeEvent::SpeechStarted {
                item_id: "u1".into(),
                audio_start_ms: 1000
            })
        );
        let done = r#"{"type":"response.done","response":{"id":"r1","status":"cancelled"}}"#;
        assert_eq!(
            decode_server_event(done).unwrap(),
            Some(RealtimeEvent::ResponseDone {
                response_id: "r1".into(),
                status: "cancelled".into()
            })
        );
        let error = r#"{"type":"error","error":{"type":"invalid_request_error","code":"bad_truncate","message":"too long"}}"#;
        assert_eq!(
            decode_server_event(error).unwrap(),
            Some(RealtimeEvent::ServerError {
                code: Some("bad_truncate".into()),
                message: "too long".into()
            })
        );
        assert_eq!(
            decode_server_event(r#"{"type":"rate_limits.updated"}"#).unwrap(),
            None
        );
        assert!(decode_server_event("{}").is_err());
        assert!(decode_server_event("[").is_err());
        let bad_audio = r#"{"type":"response.output_audio.delta","delta":"***"}"#;
        assert!(decode_server_event(bad_audio).is_err());
    }
}
