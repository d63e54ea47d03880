//! `/realtime` over WebSocket (GA event names, beta audio names accepted): the URL, the
//! `session.update` we send first, command encoding, server event decoding, and the connect
//! shell that wires them into a [`RealtimeSession`].

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use futures::{SinkExt, future};
use serde::Deserialize;
use serde_json::value::RawValue;
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

/// The fields of a server event the call loop reads, each kept as the event's own JSON text.
/// One struct serves every event type without building a map per event (an audio delta's
/// base64 is decoded straight from the frame), and since a raw value takes any JSON, a field
/// whose type differs between events (`item_id: null`, a numeric id) never fails the decode:
/// it reads as absent, as it did through a `serde_json::Value`. (One difference: a key given
/// twice in one event is refused, where a `Value` kept the last; the API's events have unique
/// keys, and an undecodable event is skipped with a warning.)
#[derive(Deserialize)]
struct ServerEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    item_id: Option<&'a RawValue>,
    #[serde(borrow)]
    response_id: Option<&'a RawValue>,
    #[serde(borrow)]
    audio_start_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    audio_end_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    transcript: Option<&'a RawValue>,
    #[serde(borrow)]
    delta: Option<&'a RawValue>,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// `response` of `response.created` and `response.done`.
#[derive(Default, Deserialize)]
struct ResponseFields<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(borrow)]
    status_details: Option<&'a RawValue>,
}

/// `status_details` of `response.done`.
#[derive(Default, Deserialize)]
struct StatusDetails<'a> {
    #[serde(borrow)]
    reason: Option<&'a RawValue>,
}

/// `error` of an `error` event.
#[derive(Default, Deserialize)]
struct ErrorFields<'a> {
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
}

/// A string field, borrowed unless it has escapes; `None` when absent or not a string.
fn text_of(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let json = raw?.get();
    serde_json::from_str::<&str>(json)
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(json).map(Cow::Owned))
        .ok()
}

/// A string field as an owned string, empty when absent or not a string.
fn string_of(raw: Option<&RawValue>) -> String {
    text_of(raw).map(Cow::into_owned).unwrap_or_default()
}

/// A millisecond field: 0 when absent or not a whole number, `u32::MAX` beyond it.
fn ms_of(raw: Option<&RawValue>) -> u32 {
    raw.and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok())
        .map_or(0, |ms| u32::try_from(ms).unwrap_or(u32::MAX))
}

/// Whether `json` is an object. A derived struct also accepts an array of its fields in
/// order, which a `Value` reading would not take for an object.
fn is_object(json: &str) -> bool {
    json.trim_start().starts_with('{')
}

/// An object field decoded into `T`; `T`'s defaults when absent or not an object.
fn object_of<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> T {
    raw.filter(|raw| is_object(raw.get()))
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default()
}

/// Decodes one server event; `Ok(None)` for events the call loop does not need.
pub fn decode_server_event(text: &str) -> ProviderResult<Option<RealtimeEvent>> {
    if !is_object(text) {
        return Err(ProviderError::Protocol(
            "bad realtime event: not a JSON object".into(),
        ));
    }
    let event: ServerEvent<'_> = serde_json::from_str(text)
        .map_err(|e| ProviderError::Protocol(format!("bad realtime event: {e}")))?;
    let Some(kind) = text_of(event.kind) else {
        return Err(ProviderError::Protocol(
            "realtime event without type".into(),
        ));
    };
    let decoded = match kind.as_ref() {
        "session.updated" => RealtimeEvent::SessionUpdated,
        "input_audio_buffer.speech_started" => RealtimeEvent::SpeechStarted {
            item_id: string_of(event.item_id),
            audio_start_ms: ms_of(event.audio_start_ms),
        },
        "input_audio_buffer.speech_stopped" => RealtimeEvent::SpeechStopped {
            item_id: string_of(event.item_id),
            audio_end_ms: ms_of(event.audio_end_ms),
        },
        "conversation.item.input_audio_transcription.completed" => RealtimeEvent::InputTranscript {
            item_id: string_of(event.item_id),
            text: string_of(event.transcript),
        },
        "response.created" => RealtimeEvent::ResponseCreated {
            response_id: string_of(object_of::<ResponseFields<'_>>(event.response).id),
        },
        "response.output_audio.delta" | "response.audio.delta" => {
            let audio = BASE64
                .decode(text_of(event.delta).unwrap_or_default().as_bytes())
                .map_err(|e| ProviderError::Protocol(format!("bad audio delta: {e}")))?;
            RealtimeEvent::AudioDelta {
                response_id: string_of(event.response_id),
                item_id: string_of(event.item_id),
                audio: Bytes::from(audio),
            }
        }
        "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
            RealtimeEvent::TranscriptDelta {
                response_id: string_of(event.response_id),
                item_id: string_of(event.item_id),
                delta: string_of(event.delta),
            }
        }
        "response.output_audio.done" | "response.audio.done" => RealtimeEvent::AudioDone {
            item_id: string_of(event.item_id),
        },
        "response.done" => {
            let response: ResponseFields<'_> = object_of(event.response);
            let details: StatusDetails<'_> = object_of(response.status_details);
            RealtimeEvent::ResponseDone {
                response_id: string_of(response.id),
                status: string_of(response.status),
                reason: string_of(details.reason),
            }
        }
        "conversation.item.truncated" => RealtimeEvent::Truncated {
            item_id: string_of(event.item_id),
            audio_end_ms: ms_of(event.audio_end_ms),
        },
        "error" => {
            let error: ErrorFields<'_> = object_of(event.error);
            RealtimeEvent::ServerError {
                code: text_of(error.code).map(Cow::into_owned),
                message: string_of(error.message),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(decoded))
}

/// Whether the `skipped`th undecodable event of a session is logged: the 1st, 10th, 100th and
/// so on. A provider that changed its event format would otherwise log every audio delta, ten
/// a second per call, thousands a second on a busy worker.
fn should_log_skip(skipped: u64) -> bool {
    skipped > 0 && 10u64.pow(skipped.ilog10()) == skipped
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
    let events = stream::unfold(Some((stream, 0u64)), |state| async move {
        let (mut stream, mut skipped) = state?;
        loop {
            match stream.next().await? {
                Ok(Message::Text(text)) => match decode_server_event(&text) {
                    Ok(Some(event)) => return Some((Ok(event), Some((stream, skipped)))),
                    Ok(None) => continue,
                    Err(error) => {
                        skipped += 1;
                        if should_log_skip(skipped) {
                            tracing::warn!(%error, skipped, "skipping undecodable realtime event");
                        }
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
                status: "cancelled".into(),
                reason: String::new()
            })
        );
        let filtered = r#"{"type":"response.done","response":{"id":"r3","status":"incomplete","status_details":{"type":"incomplete","reason":"content_filter"},"output":[]}}"#;
        assert_eq!(
            decode_server_event(filtered).unwrap(),
            Some(RealtimeEvent::ResponseDone {
                response_id: "r3".into(),
                status: "incomplete".into(),
                reason: "content_filter".into()
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

    #[test]
    fn undecodable_events_are_logged_at_powers_of_ten() {
        let logged: Vec<u64> = (0..=20_000).filter(|&n| should_log_skip(n)).collect();
        assert_eq!(logged, [1, 10, 100, 1_000, 10_000]);
        assert!(should_log_skip(10_000_000_000_000_000_000));
        assert!(!should_log_skip(u64::MAX));
    }

    /// What the `Value`-based decoder tolerated, the typed one must too: a field of another
    /// type or `null` reads as absent, escapes are undone, nested objects may be missing.
    #[test]
    fn server_events_with_nulls_escapes_and_odd_types() {
        let delta = r#"{"type":"response.output_audio.delta","response_id":null,"item_id":7,"delta":"\/38=","extra":{"nested":[1,2,{"a":null}]}}"#;
        assert_eq!(
            decode_server_event(delta).unwrap(),
            Some(RealtimeEvent::AudioDelta {
                response_id: String::new(),
                item_id: String::new(),
                audio: Bytes::from_static(&[0xff, 0x7f]),
            })
        );
        let no_audio = r#"{"type":"response.output_audio.delta","item_id":"i1"}"#;
        assert_eq!(
            decode_server_event(no_audio).unwrap(),
            Some(RealtimeEvent::AudioDelta {
                response_id: String::new(),
                item_id: "i1".into(),
                audio: Bytes::new(),
            })
        );
        let said = r#"{"type":"response.output_audio_transcript.delta","delta":" \"Thursday\" \u00e0 10\n"}"#;
        assert!(matches!(
            decode_server_event(said).unwrap(),
            Some(RealtimeEvent::TranscriptDelta { delta, .. }) if delta == " \"Thursday\" \u{e0} 10\n"
        ));
        let stopped =
            r#"{"type":"input_audio_buffer.speech_stopped","item_id":"u1","audio_end_ms":1.5}"#;
        assert_eq!(
            decode_server_event(stopped).unwrap(),
            Some(RealtimeEvent::SpeechStopped {
                item_id: "u1".into(),
                audio_end_ms: 0
            })
        );
        let truncated =
            r#"{"type":"conversation.item.truncated","item_id":"a1","audio_end_ms":99999999999}"#;
        assert_eq!(
            decode_server_event(truncated).unwrap(),
            Some(RealtimeEvent::Truncated {
                item_id: "a1".into(),
                audio_end_ms: u32::MAX
            })
        );
        for done in [
            r#"{"type":"response.done","response":null}"#,
            r#"{"type":"response.done","response":"r1"}"#,
            r#"{"type":"response.done","response":["r1","completed"]}"#,
            r#"{"type":"response.done"}"#,
        ] {
            assert_eq!(
                decode_server_event(done).unwrap(),
                Some(RealtimeEvent::ResponseDone {
                    response_id: String::new(),
                    status: String::new(),
                    reason: String::new()
                }),
                "{done}"
            );
        }
        let created = r#"{"type":"response.created","response":{"id":"r2","status":"in_progress","output":[],"usage":null,"id_extra":{"id":"x"}}}"#;
        assert_eq!(
            decode_server_event(created).unwrap(),
            Some(RealtimeEvent::ResponseCreated {
                response_id: "r2".into()
            })
        );
        let error = r#"{"type":"error","error":{"code":429,"message":null}}"#;
        assert_eq!(
            decode_server_event(error).unwrap(),
            Some(RealtimeEvent::ServerError {
                code: None,
                message: String::new()
            })
        );
        assert_eq!(
            decode_server_event(r#"{"type":"error","error":["bad_truncate","too long"]}"#).unwrap(),
            Some(RealtimeEvent::ServerError {
                code: None,
                message: String::new()
            })
        );
        assert_eq!(
            decode_server_event(r#"{"type":"error"}"#).unwrap(),
            Some(RealtimeEvent::ServerError {
                code: None,
                message: String::new()
            })
        );
        for no_type in [
            r#"{"type":null}"#,
            r#"{"type":3}"#,
            "[]",
            r#"["error"]"#,
            "7",
        ] {
            assert!(decode_server_event(no_type).is_err(), "{no_type}");
        }
        // Unknown events are skipped however large or nested, but must still be JSON.
        assert_eq!(
            decode_server_event(
                r#"{"type":"session.created","session":{"tools":[{"a":[[],{}]}]}}"#
            )
            .unwrap(),
            None
        );
        assert!(decode_server_event(r#"{"type":"session.created","session":{"#).is_err());
    }
}
