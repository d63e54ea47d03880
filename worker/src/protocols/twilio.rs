//! Twilio Media Streams (`/ws/twilio`).
//!
//! In: `connected`, `start`, `media`, `mark`, `dtmf`, `stop`. Out: `media`, `mark`, `clear`,
//! each carrying the `streamSid` from `start`. Audio is base64 µ-law at 8 kHz both ways. The
//! protocol has no error message, so per-frame errors are only logged and counted.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::payload::{decode_audio_with, encode_raw};
use super::{CallStart, InboundEvent, Incoming, Outbound, PlaybackMode, ProtocolError, WireFrame};
use crate::media::AudioFormat;

/// One inbound Twilio message; only the fields the worker uses. Borrowed where it matters:
/// `media` arrives 50 times a second per call.
#[derive(Debug, Deserialize)]
pub struct TwilioMessage<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow, default)]
    pub media: Option<MediaPayload<'a>>,
    /// Boxed: it arrives once per call, and inline it made every media message (50 a second)
    /// three times larger, moved by `memcpy` six times per frame while being decoded.
    #[serde(default)]
    pub start: Option<Box<StartPayload>>,
    #[serde(default)]
    pub mark: Option<MarkPayload>,
    #[serde(default)]
    pub dtmf: Option<DtmfPayload>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct MediaPayload<'a> {
    #[serde(
        borrow,
        default,
        deserialize_with = "borrowed_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub track: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

/// An optional string borrowed from the frame when it has no escapes. serde's own
/// `Option<Cow<str>>` always allocates (`borrow` reaches only a `Cow` directly in a field), and
/// `track` arrives with every media frame.
fn borrowed_option<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(deserializer)?.map(|b| b.0))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartPayload {
    pub stream_sid: String,
    pub call_sid: String,
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub custom_parameters: HashMap<String, String>,
    #[serde(default)]
    pub media_format: Option<MediaFormat>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    #[serde(default)]
    pub channels: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MarkPayload {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DtmfPayload {
    pub digit: String,
}

/// Decoder state for one Twilio stream.
#[derive(Debug, Default)]
pub struct TwilioDecoder {
    started: bool,
    ended: bool,
    scratch: Vec<u8>,
}

impl TwilioDecoder {
    pub fn decode(&mut self, frame: Incoming<'_>) -> Result<InboundEvent, ProtocolError> {
        let Incoming::Text(text) = frame else {
            return Err(ProtocolError::UnexpectedBinary);
        };
        if self.ended {
            return Err(ProtocolError::AfterEnd);
        }
        let message: TwilioMessage<'_> =
            serde_json::from_str(text).map_err(|e| ProtocolError::BadJson(e.to_string()))?;
        match message.event.as_ref() {
            "connected" => Ok(InboundEvent::Ignored),
            "start" => {
                if self.started {
                    return Err(ProtocolError::DuplicateStart);
                }
                let start = message.start.ok_or(ProtocolError::MissingField("start"))?;
                let event = start_event(*start)?;
                self.started = true;
                Ok(event)
            }
            "media" => {
                if !self.started {
                    return Err(ProtocolError::BeforeStart("media"));
                }
                let media = message.media.ok_or(ProtocolError::MissingField("media"))?;
                if media.track.as_deref().is_some_and(|t| t == "outbound") {
                    return Ok(InboundEvent::Ignored);
                }
                let samples =
                    decode_audio_with(&media.payload, AudioFormat::MULAW_8K, &mut self.scratch)?;
                Ok(InboundEvent::Audio {
                    samples,
                    format: AudioFormat::MULAW_8K,
                })
            }
            "mark" => {
                let mark = message.mark.ok_or(ProtocolError::MissingField("mark"))?;
                Ok(InboundEvent::Mark(mark.name))
            }
            "dtmf" => {
                let dtmf = message.dtmf.ok_or(ProtocolError::MissingField("dtmf"))?;
                Ok(InboundEvent::Dtmf(dtmf.digit))
            }
            "stop" => {
                self.ended = true;
                Ok(InboundEvent::End)
            }
            other => Err(ProtocolError::UnknownType(other.into())),
        }
    }
}

fn start_event(start: StartPayload) -> Result<InboundEvent, ProtocolError> {
    if let Some(format) = &start.media_format {
        if format.encoding != "audio/x-mulaw" {
            return Err(ProtocolError::UnsupportedFormat(format.encoding.clone()));
        }
        if format.sample_rate != 8_000 {
            return Err(ProtocolError::WrongSampleRate(format.sample_rate));
        }
    }
    if start.call_sid.is_empty() {
        return Err(ProtocolError::MissingField("start.callSid"));
    }
    let mut params = start.custom_parameters;
    Ok(InboundEvent::Start(Box::new(CallStart {
        call_id: start.call_sid,
        token: params.remove("token"),
        inbound: AudioFormat::MULAW_8K,
        outbound: AudioFormat::MULAW_8K,
        playback: PlaybackMode::Paced,
        stream_id: Some(start.stream_sid),
        from: params.remove("from"),
    })))
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
enum ServerMessage<'a> {
    #[serde(rename_all = "camelCase")]
    Media {
        stream_sid: &'a str,
        media: OutMedia<'a>,
    },
    #[serde(rename_all = "camelCase")]
    Mark {
        stream_sid: &'a str,
        mark: OutMark<'a>,
    },
    #[serde(rename_all = "camelCase")]
    Clear { stream_sid: &'a str },
}

#[derive(Serialize)]
struct OutMedia<'a> {
    payload: &'a str,
}

#[derive(Serialize)]
struct OutMark<'a> {
    name: &'a str,
}

/// Marks the spot of the payload in a media message rendered once per stream; base64 never
/// contains it, serde leaves it as it is, and the payload is the message's last field, so the
/// last occurrence is the slot even if a stream id contains the same text.
const PAYLOAD_SLOT: &str = "@payload@";

/// Encoder state for one Twilio stream. A media message goes out 50 times a second per call,
/// so its JSON around the payload is rendered once (with the stream id escaped by serde) and
/// each frame is one exactly sized string: prefix, base64, suffix.
#[derive(Debug, Clone)]
pub struct TwilioEncoder {
    stream_sid: String,
    media_prefix: String,
    media_suffix: String,
}

impl TwilioEncoder {
    pub fn new(stream_sid: String) -> Self {
        let template = serde_json::to_string(&ServerMessage::Media {
            stream_sid: &stream_sid,
            media: OutMedia {
                payload: PAYLOAD_SLOT,
            },
        })
        .unwrap_or_default();
        let (prefix, suffix) = template.rsplit_once(PAYLOAD_SLOT).unwrap_or_default();
        Self {
            media_prefix: prefix.to_owned(),
            media_suffix: suffix.to_owned(),
            stream_sid,
        }
    }

    /// The Twilio frame for `out`; audio must already be µ-law 8 kHz frames.
    pub fn encode(&self, out: Outbound<'_>) -> Option<WireFrame> {
        let stream_sid = self.stream_sid.as_str();
        let message = match out {
            Outbound::Audio {
                samples, format, ..
            } => return Some(WireFrame::Text(self.media(samples, format))),
            Outbound::Mark(name) => ServerMessage::Mark {
                stream_sid,
                mark: OutMark { name },
            },
            Outbound::Clear => ServerMessage::Clear { stream_sid },
            Outbound::Status { .. } | Outbound::Error { .. } | Outbound::Hangup => return None,
        };
        serde_json::to_string(&message).ok().map(WireFrame::Text)
    }

    fn media(&self, samples: &[i16], format: AudioFormat) -> String {
        let raw = encode_raw(samples, format);
        let mut text = String::with_capacity(
            self.media_prefix.len() + raw.len().div_ceil(3) * 4 + self.media_suffix.len(),
        );
        text.push_str(&self.media_prefix);
        STANDARD.encode_string(&raw, &mut text);
        text.push_str(&self.media_suffix);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{CLIENT_FRAME_HEADER_BYTES, Decoder, Protocol};

    const START: &str = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{"token":"tok","from":"+15550001"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;

    fn text(d: &mut Decoder, s: &str) -> Result<InboundEvent, ProtocolError> {
        d.decode(Incoming::Text(s))
    }

    #[test]
    fn media_track_is_borrowed_unless_escaped() {
        let parse = |text: &'static str| serde_json::from_str::<MediaPayload<'_>>(text).unwrap();
        let plain = parse(r#"{"track":"inbound","payload":"//8="}"#);
        assert!(matches!(plain.track, Some(Cow::Borrowed("inbound"))));
        let escaped = parse(r#"{"track":"out\u0062ound","payload":"//8="}"#);
        assert_eq!(escaped.track.as_deref(), Some("outbound"));
        assert!(parse(r#"{"payload":"//8="}"#).track.is_none());
        assert!(parse(r#"{"track":null,"payload":"//8="}"#).track.is_none());
        assert!(serde_json::from_str::<MediaPayload<'_>>(r#"{"track":5,"payload":""}"#).is_err());
    }

    /// A media message as Twilio sends it an hour into a call (longer counters) still arrives
    /// in one read of the call's WebSocket buffer, with the client frame's header.
    #[test]
    fn a_media_message_fits_the_read_buffer() {
        let payload = STANDARD.encode([0xffu8; 160]);
        let message = format!(
            r#"{{"event":"media","sequenceNumber":"180000","media":{{"track":"inbound","chunk":"180000","timestamp":"3600000","payload":"{payload}"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}}"#
        );
        let mut d = Decoder::new(Protocol::Twilio);
        text(&mut d, START).unwrap();
        assert!(matches!(
            text(&mut d, &message),
            Ok(InboundEvent::Audio { .. })
        ));
        assert!(message.len() + CLIENT_FRAME_HEADER_BYTES <= Protocol::Twilio.read_buffer_bytes());
        // A 60 ms rest's three frames and one more come in one read.
        let four = 4 * (message.len() + CLIENT_FRAME_HEADER_BYTES);
        assert!(four <= Protocol::Twilio.read_buffer_for(4));
        assert_eq!(Protocol::Twilio.read_buffer_for(0), 512);
        assert_eq!(
            Protocol::CallSession.read_buffer_for(4),
            4096,
            "at most 4 KiB"
        );
    }

    #[test]
    fn media_frames_escape_the_stream_id() {
        for sid in [r#"odd "sid" \ with escapes"#, "", "MZ@payload@"] {
            let encoder = TwilioEncoder::new(sid.to_owned());
            let samples = [0i16, 1000, -1000, 32124, 7];
            let Some(WireFrame::Text(frame)) = encoder.encode(Outbound::Audio {
                samples: &samples,
                format: AudioFormat::MULAW_8K,
                text: None,
            }) else {
                panic!("no media frame")
            };
            let payload = crate::protocols::payload::encode_audio(&samples, AudioFormat::MULAW_8K);
            let expected = serde_json::to_string(&ServerMessage::Media {
                stream_sid: sid,
                media: OutMedia { payload: &payload },
            })
            .unwrap();
            assert_eq!(frame, expected);
            let parsed: serde_json::Value = serde_json::from_str(&frame).unwrap();
            assert_eq!(parsed["streamSid"], sid);
        }
    }

    #[test]
    fn twilio_stream() {
        let mut d = Decoder::new(Protocol::Twilio);
        assert_eq!(
            text(
                &mut d,
                r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#
            )
            .unwrap(),
            InboundEvent::Ignored
        );
        let InboundEvent::Start(start) = text(&mut d, START).unwrap() else {
            panic!()
        };
        assert_eq!(start.call_id, "CA1");
        assert_eq!(start.token.as_deref(), Some("tok"));
        assert_eq!(start.stream_id.as_deref(), Some("MZ1"));
        assert_eq!(start.from.as_deref(), Some("+15550001"));
        let media = r#"{"event":"media","sequenceNumber":"2","streamSid":"MZ1","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"//8="}}"#;
        assert_eq!(
            text(&mut d, media).unwrap(),
            InboundEvent::Audio {
                samples: vec![0, 0],
                format: AudioFormat::MULAW_8K
            }
        );
        let mark =
            r#"{"event":"mark","sequenceNumber":"3","streamSid":"MZ1","mark":{"name":"s1"}}"#;
        assert_eq!(text(&mut d, mark).unwrap(), InboundEvent::Mark("s1".into()));
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"4","dtmf":{"track":"inbound_track","digit":"5"}}"#;
        assert_eq!(text(&mut d, dtmf).unwrap(), InboundEvent::Dtmf("5".into()));
        let stop = r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#;
        assert_eq!(text(&mut d, stop).unwrap(), InboundEvent::End);
        assert_eq!(text(&mut d, media), Err(ProtocolError::AfterEnd));
    }

    #[test]
    fn twilio_malformed() {
        let mut d = Decoder::new(Protocol::Twilio);
        assert_eq!(
            text(&mut d, r#"{"event":"media","media":{"payload":"//8="}}"#),
            Err(ProtocolError::BeforeStart("media"))
        );
        assert!(matches!(
            text(&mut d, "[1,2"),
            Err(ProtocolError::BadJson(_))
        ));
        assert_eq!(
            text(&mut d, r#"{"event":"party"}"#),
            Err(ProtocolError::UnknownType("party".into()))
        );
        assert_eq!(
            text(&mut d, r#"{"event":"start"}"#),
            Err(ProtocolError::MissingField("start"))
        );
        let wrong_rate = START.replace("\"sampleRate\":8000", "\"sampleRate\":16000");
        assert_eq!(
            text(&mut d, &wrong_rate),
            Err(ProtocolError::WrongSampleRate(16_000))
        );
        assert_eq!(
            d.decode(Incoming::Binary(b"x")),
            Err(ProtocolError::UnexpectedBinary)
        );
        text(&mut d, START).unwrap();
        assert_eq!(
            text(&mut d, r#"{"event":"media","media":{"payload":"!!"}}"#),
            Err(ProtocolError::BadBase64)
        );
        assert_eq!(
            text(&mut d, r#"{"event":"media"}"#),
            Err(ProtocolError::MissingField("media"))
        );
        assert_eq!(text(&mut d, START), Err(ProtocolError::DuplicateStart));
    }

    #[test]
    fn twilio_outbound() {
        let encoder = TwilioEncoder::new("MZ1".into());
        let media = encoder.encode(Outbound::Audio {
            samples: &[0, 0],
            format: AudioFormat::MULAW_8K,
            text: Some("ignored"),
        });
        assert_eq!(
            media,
            Some(WireFrame::Text(
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#.into()
            ))
        );
        assert_eq!(
            encoder.encode(Outbound::Mark("s1")),
            Some(WireFrame::Text(
                r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"s1"}}"#.into()
            ))
        );
        assert_eq!(
            encoder.encode(Outbound::Clear),
            Some(WireFrame::Text(
                r#"{"event":"clear","streamSid":"MZ1"}"#.into()
            ))
        );
        assert_eq!(encoder.encode(Outbound::Hangup), None);
    }
}
