//! FreeSWITCH `mod_audio_fork` / jambonz `listen` style (`/ws/freeswitch`).
//!
//! In: a first text frame of JSON metadata (the `<metadata>` argument of `uuid_audio_fork`),
//! then binary L16 frames at the metadata's `sampleRate`. Out: `playAudio` (a whole sentence,
//! base64 raw L16, played by FreeSWITCH as a file), `killAudio` (barge-in), `disconnect`; or,
//! when the metadata asks for bidirectional streaming, paced binary L16 frames.
//!
//! Metadata fields: `callId` (or `uuid` / `callSid`), `token`, `sampleRate` (8000, 16000 or
//! 24000; default 8000), `from`, and `bidirectionalAudio: {"enabled", "streaming",
//! "sampleRate"}` (jambonz's shape).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::payload::{decode_raw, encode_raw};
use super::{CallStart, InboundEvent, Incoming, Outbound, PlaybackMode, ProtocolError, WireFrame};
use crate::media::AudioFormat;
use crate::media::format::is_supported_rate;

/// The first text frame.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bidirectional_audio: Option<BidirectionalAudio>,
}

/// Whether and how to stream reply audio back as binary frames.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BidirectionalAudio {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub streaming: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
}

/// Decoder state for one audio fork.
#[derive(Debug, Default)]
pub struct FreeSwitchDecoder {
    /// Inbound audio format once the metadata arrived.
    format: Option<AudioFormat>,
    ended: bool,
}

impl FreeSwitchDecoder {
    pub fn decode(&mut self, frame: Incoming<'_>) -> Result<InboundEvent, ProtocolError> {
        if self.ended {
            return Err(ProtocolError::AfterEnd);
        }
        match (frame, self.format) {
            (Incoming::Text(text), None) => {
                let metadata: Metadata = serde_json::from_str(text)
                    .map_err(|e| ProtocolError::BadJson(e.to_string()))?;
                let start = start_from(metadata)?;
                self.format = Some(start.inbound);
                Ok(InboundEvent::Start(Box::new(start)))
            }
            (Incoming::Binary(_), None) => Err(ProtocolError::BeforeStart("audio")),
            (Incoming::Binary(bytes), Some(format)) => Ok(InboundEvent::Audio {
                samples: decode_raw(bytes, format)?,
                format,
            }),
            (Incoming::Text(text), Some(_)) => self.control(text),
        }
    }

    /// Text after the metadata: jambonz-style `dtmf`, `mark` and `stop` messages.
    fn control(&mut self, text: &str) -> Result<InboundEvent, ProtocolError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ProtocolError::BadJson(e.to_string()))?;
        let kind = value
            .get("type")
            .or_else(|| value.get("event"))
            .and_then(Value::as_str)
            .ok_or(ProtocolError::UnexpectedText)?;
        let data = value.get("data").unwrap_or(&value);
        match kind {
            "dtmf" => data
                .get("dtmf")
                .or_else(|| data.get("digit"))
                .and_then(Value::as_str)
                .map(|d| InboundEvent::Dtmf(d.into()))
                .ok_or(ProtocolError::MissingField("dtmf")),
            "mark" => data
                .get("name")
                .and_then(Value::as_str)
                .map(|n| InboundEvent::Mark(n.into()))
                .ok_or(ProtocolError::MissingField("name")),
            "stop" | "hangup" => {
                self.ended = true;
                Ok(InboundEvent::End)
            }
            other => Err(ProtocolError::UnknownType(other.into())),
        }
    }
}

fn start_from(metadata: Metadata) -> Result<CallStart, ProtocolError> {
    let call_id = metadata
        .call_id
        .or(metadata.uuid)
        .or(metadata.call_sid)
        .filter(|id| !id.is_empty())
        .ok_or(ProtocolError::MissingField("callId"))?;
    let rate = metadata.sample_rate.unwrap_or(8_000);
    if !is_supported_rate(rate) {
        return Err(ProtocolError::WrongSampleRate(rate));
    }
    let bidirectional = metadata.bidirectional_audio.unwrap_or_default();
    let streaming = bidirectional.enabled && bidirectional.streaming;
    let out_rate = bidirectional.sample_rate.unwrap_or(rate);
    if !is_supported_rate(out_rate) {
        return Err(ProtocolError::WrongSampleRate(out_rate));
    }
    Ok(CallStart {
        call_id,
        token: metadata.token,
        inbound: AudioFormat::l16(rate),
        outbound: AudioFormat::l16(out_rate),
        playback: if streaming {
            PlaybackMode::Paced
        } else {
            PlaybackMode::PerSentence
        },
        stream_id: None,
        from: metadata.from,
    })
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ServerMessage<'a> {
    PlayAudio { data: PlayAudio<'a> },
    KillAudio,
    Disconnect,
    Error { code: &'a str, message: &'a str },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlayAudio<'a> {
    audio_content_type: &'static str,
    sample_rate: u32,
    audio_content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_content: Option<&'a str>,
}

/// The FreeSWITCH frame for `out`.
pub fn encode(playback: PlaybackMode, out: Outbound<'_>) -> Option<WireFrame> {
    let message = match out {
        Outbound::Audio {
            samples, format, ..
        } if playback == PlaybackMode::Paced => {
            return Some(WireFrame::Binary(Bytes::from(encode_raw(samples, format))));
        }
        Outbound::Audio {
            samples,
            format,
            text,
        } => ServerMessage::PlayAudio {
            data: PlayAudio {
                audio_content_type: "raw",
                sample_rate: format.sample_rate,
                audio_content: STANDARD.encode(encode_raw(samples, format)),
                text_content: text,
            },
        },
        Outbound::Clear => ServerMessage::KillAudio,
        Outbound::Hangup => ServerMessage::Disconnect,
        Outbound::Error { code, message } => ServerMessage::Error {
            code: code.as_str(),
            message,
        },
        Outbound::Mark(_) | Outbound::Status { .. } => return None,
    };
    serde_json::to_string(&message).ok().map(WireFrame::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{CLIENT_FRAME_HEADER_BYTES, Decoder, ErrorCode, Protocol};

    fn text(d: &mut Decoder, s: &str) -> Result<InboundEvent, ProtocolError> {
        d.decode(Incoming::Text(s))
    }

    /// 20 ms of L16 at 16 kHz, FreeSWITCH's widest rate here, arrives in one read of the
    /// call's WebSocket buffer, with the client frame's header.
    #[test]
    fn a_frame_fits_the_read_buffer() {
        let frame_bytes = AudioFormat::l16(16_000).bytes_per_frame();
        assert_eq!(frame_bytes, 640);
        assert!(
            frame_bytes + CLIENT_FRAME_HEADER_BYTES <= Protocol::FreeSwitch.read_buffer_bytes()
        );
    }

    #[test]
    fn audio_fork_session() {
        let mut d = Decoder::new(Protocol::FreeSwitch);
        assert_eq!(
            d.decode(Incoming::Binary(&[0, 0])),
            Err(ProtocolError::BeforeStart("audio"))
        );
        let InboundEvent::Start(start) = text(
            &mut d,
            r#"{"uuid":"u-1","token":"t","sampleRate":16000,"from":"1000"}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(start.call_id, "u-1");
        assert_eq!(start.inbound, AudioFormat::l16(16_000));
        assert_eq!(start.playback, PlaybackMode::PerSentence);
        assert_eq!(
            d.decode(Incoming::Binary(&[1, 0, 0xFF, 0xFF])).unwrap(),
            InboundEvent::Audio {
                samples: vec![1, -1],
                format: AudioFormat::l16(16_000)
            }
        );
        assert_eq!(
            d.decode(Incoming::Binary(&[1, 0, 0xFF])),
            Err(ProtocolError::OddLength(3))
        );
        assert_eq!(
            text(&mut d, r#"{"type":"dtmf","data":{"dtmf":"7"}}"#).unwrap(),
            InboundEvent::Dtmf("7".into())
        );
        assert_eq!(
            text(&mut d, r#"{"type":"jump"}"#),
            Err(ProtocolError::UnknownType("jump".into()))
        );
        assert_eq!(text(&mut d, "\"hi\""), Err(ProtocolError::UnexpectedText));
        assert_eq!(
            text(&mut d, r#"{"type":"stop"}"#).unwrap(),
            InboundEvent::End
        );
        assert_eq!(
            d.decode(Incoming::Binary(&[0, 0])),
            Err(ProtocolError::AfterEnd)
        );
    }

    #[test]
    fn metadata_errors_and_streaming() {
        let mut d = Decoder::new(Protocol::FreeSwitch);
        assert!(matches!(
            text(&mut d, "not json"),
            Err(ProtocolError::BadJson(_))
        ));
        assert_eq!(
            text(&mut d, r#"{"token":"t"}"#),
            Err(ProtocolError::MissingField("callId"))
        );
        assert_eq!(
            text(&mut d, r#"{"callId":"c","sampleRate":44100}"#),
            Err(ProtocolError::WrongSampleRate(44_100))
        );
        let InboundEvent::Start(start) = text(
            &mut d,
            r#"{"callId":"c","sampleRate":8000,"bidirectionalAudio":{"enabled":true,"streaming":true,"sampleRate":16000}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(start.playback, PlaybackMode::Paced);
        assert_eq!(start.outbound, AudioFormat::l16(16_000));
    }

    #[test]
    fn outbound_messages() {
        let frame = encode(
            PlaybackMode::PerSentence,
            Outbound::Audio {
                samples: &[1, -1],
                format: AudioFormat::l16(8_000),
                text: Some("Hi."),
            },
        );
        assert_eq!(
            frame,
            Some(WireFrame::Text(
                r#"{"type":"playAudio","data":{"audioContentType":"raw","sampleRate":8000,"audioContent":"AQD//w==","textContent":"Hi."}}"#.into()
            ))
        );
        assert_eq!(
            encode(
                PlaybackMode::Paced,
                Outbound::Audio {
                    samples: &[1, -1],
                    format: AudioFormat::l16(8_000),
                    text: None
                }
            ),
            Some(WireFrame::Binary(Bytes::from_static(&[1, 0, 0xFF, 0xFF])))
        );
        assert_eq!(
            encode(PlaybackMode::Paced, Outbound::Clear),
            Some(WireFrame::Text(r#"{"type":"killAudio"}"#.into()))
        );
        assert_eq!(
            encode(PlaybackMode::Paced, Outbound::Hangup),
            Some(WireFrame::Text(r#"{"type":"disconnect"}"#.into()))
        );
        assert_eq!(
            encode(
                PlaybackMode::Paced,
                Outbound::Error {
                    code: ErrorCode::Unauthorized,
                    message: "no token"
                }
            ),
            Some(WireFrame::Text(
                r#"{"type":"error","code":"UNAUTHORIZED","message":"no token"}"#.into()
            ))
        );
    }
}
