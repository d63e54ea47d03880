//! The seed's JSON protocol (`/ws/call-session`), kept exactly, plus additive messages.
//!
//! In: `start_call`, `audio`, `end_call`, and `mark` (playback acknowledgement). Out:
//! `audio_response`, `status`, `error`, and `clear` (barge-in) and `mark`. Additive fields: an
//! optional `token`, `format` and `sampleRate` on `start_call`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::payload::{decode_audio_with, encode_audio};
use super::{CallStart, InboundEvent, Incoming, Outbound, PlaybackMode, ProtocolError, WireFrame};
use crate::media::format::is_supported_rate;
use crate::media::{AudioEncoding, AudioFormat};

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    #[serde(rename_all = "camelCase")]
    StartCall {
        call_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample_rate: Option<u32>,
    },
    #[serde(rename_all = "camelCase")]
    Audio {
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample_rate: Option<u32>,
    },
    EndCall,
    Mark {
        name: String,
    },
}

/// Messages the worker sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    AudioResponse { audio: String, text: String },
    Status { status: String, message: String },
    Error { code: String, message: String },
    Clear,
    Mark { name: String },
}

const KNOWN_TYPES: [&str; 4] = ["start_call", "audio", "end_call", "mark"];

/// Decoder state for one seed-protocol connection.
#[derive(Debug, Default)]
pub struct SeedDecoder {
    started: bool,
    ended: bool,
    /// Fixed by `start_call` or by the first `audio` message.
    format: Option<AudioFormat>,
    scratch: Vec<u8>,
}

impl SeedDecoder {
    pub fn decode(&mut self, frame: Incoming<'_>) -> Result<InboundEvent, ProtocolError> {
        let Incoming::Text(text) = frame else {
            return Err(ProtocolError::UnexpectedBinary);
        };
        if self.ended {
            return Err(ProtocolError::AfterEnd);
        }
        let message = parse(text)?;
        match message {
            ClientMessage::StartCall {
                call_id,
                user_id,
                token,
                format,
                sample_rate,
                ..
            } => {
                if self.started {
                    return Err(ProtocolError::DuplicateStart);
                }
                if call_id.is_empty() {
                    return Err(ProtocolError::MissingField("callId"));
                }
                let declared = match (format, sample_rate) {
                    (None, None) => None,
                    (format, rate) => Some(parse_format(format.as_deref(), rate)?),
                };
                self.format = declared;
                self.started = true;
                let format = declared.unwrap_or(AudioFormat::MULAW_8K);
                Ok(InboundEvent::Start(Box::new(CallStart {
                    call_id,
                    token,
                    inbound: format,
                    outbound: format,
                    playback: PlaybackMode::Paced,
                    stream_id: None,
                    from: user_id,
                })))
            }
            ClientMessage::Audio {
                data,
                format,
                sample_rate,
            } => {
                if !self.started {
                    return Err(ProtocolError::BeforeStart("audio"));
                }
                let this = parse_format(format.as_deref(), sample_rate)?;
                match self.format {
                    Some(locked) if locked != this => {
                        return Err(ProtocolError::FormatChanged {
                            from: describe(locked),
                            to: describe(this),
                        });
                    }
                    _ => self.format = Some(this),
                }
                let samples = decode_audio_with(&data, this, &mut self.scratch)?;
                Ok(InboundEvent::Audio {
                    samples,
                    format: this,
                })
            }
            ClientMessage::EndCall => {
                self.ended = true;
                Ok(InboundEvent::End)
            }
            ClientMessage::Mark { name } => Ok(InboundEvent::Mark(name)),
        }
    }
}

/// Parses the JSON, telling an unknown `type` apart from malformed JSON.
fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
    serde_json::from_str(text).map_err(|err| {
        match serde_json::from_str::<Value>(text)
            .ok()
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str)
        {
            Some(kind) if !KNOWN_TYPES.contains(&kind) => ProtocolError::UnknownType(kind.into()),
            _ => ProtocolError::BadJson(err.to_string()),
        }
    })
}

/// The seed's `format`/`sampleRate` pair; `mulaw` at 8 kHz when absent.
pub fn parse_format(format: Option<&str>, rate: Option<u32>) -> Result<AudioFormat, ProtocolError> {
    let encoding = match format.map(str::to_ascii_lowercase).as_deref() {
        None | Some("mulaw" | "ulaw" | "pcmu" | "audio/x-mulaw" | "g711_ulaw") => {
            AudioEncoding::Mulaw
        }
        Some("pcm16" | "pcm" | "l16" | "linear16" | "s16le") => AudioEncoding::L16,
        Some(other) => return Err(ProtocolError::UnsupportedFormat(other.into())),
    };
    let rate = rate.unwrap_or(8_000);
    let valid = match encoding {
        AudioEncoding::Mulaw => rate == 8_000,
        AudioEncoding::L16 => is_supported_rate(rate),
    };
    if !valid {
        return Err(ProtocolError::WrongSampleRate(rate));
    }
    Ok(AudioFormat {
        encoding,
        sample_rate: rate,
    })
}

fn describe(format: AudioFormat) -> String {
    let name = match format.encoding {
        AudioEncoding::Mulaw => "mulaw",
        AudioEncoding::L16 => "pcm16",
    };
    format!("{name}/{}", format.sample_rate)
}

/// The seed frame for `out`.
pub fn encode(out: Outbound<'_>) -> Option<WireFrame> {
    let message = match out {
        Outbound::Audio {
            samples,
            format,
            text,
        } => ServerMessage::AudioResponse {
            audio: encode_audio(samples, format),
            text: text.unwrap_or_default().to_owned(),
        },
        Outbound::Mark(name) => ServerMessage::Mark { name: name.into() },
        Outbound::Clear => ServerMessage::Clear,
        Outbound::Status { status, message } => ServerMessage::Status {
            status: status.into(),
            message: message.into(),
        },
        Outbound::Error { code, message } => ServerMessage::Error {
            code: code.as_str().into(),
            message: message.into(),
        },
        Outbound::Hangup => return None,
    };
    serde_json::to_string(&message).ok().map(WireFrame::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{Decoder, ErrorCode, Protocol};

    fn decoder() -> Decoder {
        Decoder::new(Protocol::CallSession)
    }

    fn text(d: &mut Decoder, s: &str) -> Result<InboundEvent, ProtocolError> {
        d.decode(Incoming::Text(s))
    }

    const START: &str =
        r#"{"type":"start_call","callId":"c1","userId":"u1","metadata":{"phoneNumber":"+1"}}"#;

    #[test]
    fn seed_session() {
        let mut d = decoder();
        let InboundEvent::Start(start) = text(&mut d, START).unwrap() else {
            panic!("not a start");
        };
        assert_eq!(start.call_id, "c1");
        assert_eq!(start.from.as_deref(), Some("u1"));
        assert_eq!(start.inbound, AudioFormat::MULAW_8K);
        // 0xFF 0xFF = two µ-law zeros.
        let audio = text(
            &mut d,
            r#"{"type":"audio","data":"//8=","format":"mulaw","sampleRate":8000}"#,
        )
        .unwrap();
        assert_eq!(
            audio,
            InboundEvent::Audio {
                samples: vec![0, 0],
                format: AudioFormat::MULAW_8K
            }
        );
        assert_eq!(
            text(&mut d, r#"{"type":"mark","name":"m1"}"#).unwrap(),
            InboundEvent::Mark("m1".into())
        );
        assert_eq!(
            text(&mut d, r#"{"type":"end_call"}"#).unwrap(),
            InboundEvent::End
        );
        assert_eq!(
            text(&mut d, r#"{"type":"audio","data":"//8="}"#),
            Err(ProtocolError::AfterEnd)
        );
    }

    #[test]
    fn malformed_input() {
        let mut d = decoder();
        assert!(matches!(
            text(&mut d, "{nope"),
            Err(ProtocolError::BadJson(_))
        ));
        assert_eq!(
            text(&mut d, r#"{"type":"dance"}"#),
            Err(ProtocolError::UnknownType("dance".into()))
        );
        assert_eq!(
            text(&mut d, r#"{"type":"audio","data":"//8="}"#),
            Err(ProtocolError::BeforeStart("audio"))
        );
        assert!(matches!(
            text(&mut d, r#"{"type":"start_call"}"#),
            Err(ProtocolError::BadJson(_))
        ));
        assert_eq!(
            d.decode(Incoming::Binary(&[1, 2])),
            Err(ProtocolError::UnexpectedBinary)
        );
        text(&mut d, START).unwrap();
        assert_eq!(text(&mut d, START), Err(ProtocolError::DuplicateStart));
        assert_eq!(
            text(&mut d, r#"{"type":"audio","data":"***"}"#),
            Err(ProtocolError::BadBase64)
        );
        assert_eq!(
            text(
                &mut d,
                r#"{"type":"audio","data":"//8=","sampleRate":16000}"#
            ),
            Err(ProtocolError::WrongSampleRate(16_000))
        );
        assert_eq!(
            text(&mut d, r#"{"type":"audio","data":"//8=","format":"opus"}"#),
            Err(ProtocolError::UnsupportedFormat("opus".into()))
        );
        // The first good audio fixes the format; a change is refused.
        text(&mut d, r#"{"type":"audio","data":"//8="}"#).unwrap();
        assert!(matches!(
            text(
                &mut d,
                r#"{"type":"audio","data":"AAA=","format":"pcm16","sampleRate":16000}"#
            ),
            Err(ProtocolError::FormatChanged { .. })
        ));
        let huge = format!(
            r#"{{"type":"audio","data":"{}"}}"#,
            "A".repeat(super::super::MAX_FRAME_BYTES)
        );
        assert!(matches!(
            text(&mut d, &huge),
            Err(ProtocolError::Oversize { .. })
        ));
    }

    #[test]
    fn pcm16_declared_at_start() {
        let mut d = decoder();
        let start = r#"{"type":"start_call","callId":"c","format":"pcm16","sampleRate":16000}"#;
        let InboundEvent::Start(s) = text(&mut d, start).unwrap() else {
            panic!()
        };
        assert_eq!(s.outbound, AudioFormat::l16(16_000));
        assert_eq!(
            text(&mut d, r#"{"type":"audio","data":"//8="}"#),
            Err(ProtocolError::FormatChanged {
                from: "pcm16/16000".into(),
                to: "mulaw/8000".into()
            })
        );
    }

    #[test]
    fn encodes_server_messages() {
        let frame = encode(Outbound::Audio {
            samples: &[0, 0],
            format: AudioFormat::MULAW_8K,
            text: Some("Hi."),
        });
        assert_eq!(
            frame,
            Some(WireFrame::Text(
                r#"{"type":"audio_response","audio":"//8=","text":"Hi."}"#.into()
            ))
        );
        assert_eq!(
            encode(Outbound::Error {
                code: ErrorCode::Timeout,
                message: "max call duration reached"
            }),
            Some(WireFrame::Text(
                r#"{"type":"error","code":"TIMEOUT","message":"max call duration reached"}"#.into()
            ))
        );
        assert_eq!(
            encode(Outbound::Clear),
            Some(WireFrame::Text(r#"{"type":"clear"}"#.into()))
        );
        assert_eq!(
            encode(Outbound::Status {
                status: "ready",
                message: "call started"
            }),
            Some(WireFrame::Text(
                r#"{"type":"status","status":"ready","message":"call started"}"#.into()
            ))
        );
    }
}
