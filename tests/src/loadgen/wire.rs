//! The carrier side of the wire, for the protocols the load generator speaks: Twilio Media
//! Streams (what most calls look like) and the seed JSON protocol.
//!
//! Outbound media frames are encoded once per position of the speech/silence cycle and shared by
//! every call (`Utf8Bytes` clones are reference counts), so a frame costs the generator one
//! masked WebSocket write and nothing else. Inbound frames are parsed into [`Reply`] with
//! borrowed strings: the generator checks frame sizes, not audio content.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use callfleet_worker::media::AudioFormat;
use callfleet_worker::protocols::payload::encode_audio;

use super::pattern::Pattern;
use crate::openai_standin::audio::tone;

/// Which protocol the simulated carrier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Wire {
    /// Twilio Media Streams on `/ws/twilio`.
    Twilio,
    /// The seed JSON protocol on `/ws/call-session`.
    Seed,
}

impl Wire {
    /// The worker's path for this protocol.
    pub fn path(self) -> &'static str {
        match self {
            Wire::Twilio => "/ws/twilio",
            Wire::Seed => "/ws/call-session",
        }
    }
}

/// Samples per 20 ms frame at 8 kHz, the rate of both protocols here.
const FRAME_SAMPLES: usize = AudioFormat::MULAW_8K.samples_per_frame();

/// `streamSid` in the shared media frames. The worker reads it only from `start`, so one fixed
/// value of Twilio's shape lets every call share the same pre-encoded frames.
const SHARED_STREAM_SID: &str = "MZ00000000000000000000000000loadgen";

/// The tone standing in for speech.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Voice {
    pub tone_hz: u32,
    /// Peak amplitude as a fraction of full scale.
    pub amplitude: f64,
}

/// Every outbound media frame of one cycle, encoded once.
#[derive(Debug, Clone)]
pub struct FrameBook {
    frames: Arc<[Utf8Bytes]>,
}

impl FrameBook {
    /// Encodes one cycle of `pattern` for `wire`: one continuous tone over the speech frames
    /// (but its pause), digital silence after.
    pub fn new(wire: Wire, pattern: &Pattern, voice: Voice) -> Self {
        let speech = tone(
            voice.tone_hz,
            8_000,
            FRAME_SAMPLES * pattern.speech_frames() as usize,
            voice.amplitude,
        );
        let silence = [0i16; FRAME_SAMPLES];
        let frames = (0..pattern.cycle_frames() as usize)
            .map(|index| {
                let samples = speech
                    .get(index * FRAME_SAMPLES..(index + 1) * FRAME_SAMPLES)
                    .filter(|_| pattern.speaks_at(index as u32))
                    .unwrap_or(&silence);
                media_frame(
                    wire,
                    index as u64,
                    &encode_audio(samples, AudioFormat::MULAW_8K),
                )
            })
            .collect();
        Self { frames }
    }

    /// The frame for position `index` of the cycle (lead-in silence uses the cycle's silence).
    pub fn frame(&self, index: u32) -> Utf8Bytes {
        let last = self.frames.len().saturating_sub(1);
        self.frames[(index as usize).min(last)].clone()
    }

    /// A silent frame.
    pub fn silence(&self) -> Utf8Bytes {
        self.frame(u32::MAX)
    }
}

/// One media frame as the carrier sends it. Twilio's sequence fields follow the cycle position,
/// so the frames have the size and shape of real ones.
fn media_frame(wire: Wire, index: u64, payload: &str) -> Utf8Bytes {
    let text = match wire {
        Wire::Twilio => format!(
            r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{SHARED_STREAM_SID}"}}"#,
            index + 3,
            index + 1,
            index * 20,
        ),
        Wire::Seed => {
            format!(r#"{{"type":"audio","data":"{payload}","format":"mulaw","sampleRate":8000}}"#)
        }
    };
    Utf8Bytes::from(text)
}

/// The stream id a call announces in its `start` message.
pub fn stream_sid(call_id: &str) -> String {
    format!("MZ{call_id}")
}

/// The frames that open a call, token included in the protocol (Twilio custom parameter, seed
/// `start_call.token`).
pub fn opening(wire: Wire, call_id: &str, token: &str) -> Vec<String> {
    match wire {
        Wire::Twilio => vec![
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string(),
            json!({
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC00000000000000000000000000loadgen",
                    "streamSid": stream_sid(call_id),
                    "callSid": call_id,
                    "tracks": ["inbound"],
                    "customParameters": {"token": token},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
                },
                "streamSid": stream_sid(call_id),
            })
            .to_string(),
        ],
        Wire::Seed => vec![
            json!({
                "type": "start_call",
                "callId": call_id,
                "userId": "loadgen",
                "token": token,
                "format": "mulaw",
                "sampleRate": 8000,
            })
            .to_string(),
        ],
    }
}

/// The frame that ends a call (Twilio `stop`, seed `end_call`).
pub fn closing(wire: Wire, call_id: &str) -> String {
    match wire {
        Wire::Twilio => json!({
            "event": "stop",
            "sequenceNumber": "2",
            "streamSid": stream_sid(call_id),
            "stop": {"accountSid": "AC00000000000000000000000000loadgen", "callSid": call_id},
        })
        .to_string(),
        Wire::Seed => json!({"type": "end_call"}).to_string(),
    }
}

/// The acknowledgement of mark `name` once its audio has played.
pub fn mark_ack(wire: Wire, call_id: &str, name: &str) -> String {
    match wire {
        Wire::Twilio => json!({
            "event": "mark",
            "sequenceNumber": "4",
            "streamSid": stream_sid(call_id),
            "mark": {"name": name},
        })
        .to_string(),
        Wire::Seed => json!({"type": "mark", "name": name}).to_string(),
    }
}

/// What a frame from the worker means to the carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// Reply audio with this many bytes of base64 payload.
    Audio { payload_len: usize },
    /// Tell the worker when playback reaches this point.
    Mark(&'a str),
    /// Stop playback (barge-in).
    Clear,
    /// The worker reported an error (seed protocol).
    Error { code: &'a str },
    /// Status and anything else the carrier does not act on.
    Other,
    /// Not JSON of either protocol's shape.
    Malformed,
}

#[derive(Deserialize)]
struct Inbound<'a> {
    #[serde(borrow, default)]
    event: Option<&'a str>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    media: Option<Payload<'a>>,
    #[serde(borrow, default)]
    mark: Option<Name<'a>>,
    #[serde(borrow, default)]
    name: Option<&'a str>,
    #[serde(borrow, default)]
    audio: Option<&'a str>,
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    payload: &'a str,
}

#[derive(Deserialize)]
struct Name<'a> {
    #[serde(borrow)]
    name: &'a str,
}

/// Parses one text frame from the worker.
pub fn parse_reply(wire: Wire, text: &str) -> Reply<'_> {
    let Ok(message) = serde_json::from_str::<Inbound<'_>>(text) else {
        return Reply::Malformed;
    };
    match (wire, message.event, message.kind) {
        (Wire::Twilio, Some("media"), _) => match message.media {
            Some(media) => Reply::Audio {
                payload_len: media.payload.len(),
            },
            None => Reply::Malformed,
        },
        (Wire::Twilio, Some("mark"), _) => message
            .mark
            .map_or(Reply::Malformed, |mark| Reply::Mark(mark.name)),
        (Wire::Twilio, Some("clear"), _) => Reply::Clear,
        (Wire::Seed, _, Some("audio_response")) => {
            message
                .audio
                .map_or(Reply::Malformed, |audio| Reply::Audio {
                    payload_len: audio.len(),
                })
        }
        (Wire::Seed, _, Some("mark")) => message.name.map_or(Reply::Malformed, Reply::Mark),
        (Wire::Seed, _, Some("clear")) => Reply::Clear,
        (Wire::Seed, _, Some("error")) => Reply::Error {
            code: message.code.unwrap_or("UNKNOWN"),
        },
        (_, None, None) => Reply::Malformed,
        _ => Reply::Other,
    }
}

/// Base64 length of one 20 ms µ-law frame: the size every paced reply frame must have.
pub const FRAME_PAYLOAD_LEN: usize = FRAME_SAMPLES.div_ceil(3) * 4;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use callfleet_worker::protocols::{Decoder, InboundEvent, Incoming, Protocol};

    use super::*;

    fn voice() -> Voice {
        Voice {
            tone_hz: 440,
            amplitude: 0.3,
        }
    }

    /// The worker's own decoders accept what the generator sends, speech and silence alike.
    #[test]
    fn worker_decodes_generated_frames() {
        let pattern = Pattern::new(Duration::from_millis(60), Duration::from_millis(40));
        for (wire, protocol) in [
            (Wire::Twilio, Protocol::Twilio),
            (Wire::Seed, Protocol::CallSession),
        ] {
            let book = FrameBook::new(wire, &pattern, voice());
            let mut decoder = Decoder::new(protocol);
            for frame in opening(wire, "CA1", "tok") {
                let event = decoder.decode(Incoming::Text(&frame)).unwrap();
                if let InboundEvent::Start(start) = event {
                    assert_eq!(start.call_id, "CA1");
                    assert_eq!(start.token.as_deref(), Some("tok"));
                }
            }
            let mut loud = Vec::new();
            for index in 0..pattern.cycle_frames() {
                let frame = book.frame(index);
                let InboundEvent::Audio { samples, format } =
                    decoder.decode(Incoming::Text(frame.as_str())).unwrap()
                else {
                    panic!("not audio: {}", frame.as_str());
                };
                assert_eq!(format, AudioFormat::MULAW_8K);
                assert_eq!(samples.len(), FRAME_SAMPLES);
                loud.push(samples.iter().any(|s| s.unsigned_abs() > 1000));
            }
            assert_eq!(loud, [true, true, true, false, false], "{wire:?}");
            assert_eq!(
                decoder
                    .decode(Incoming::Text(book.silence().as_str()))
                    .unwrap(),
                InboundEvent::Audio {
                    samples: vec![0; FRAME_SAMPLES],
                    format: AudioFormat::MULAW_8K
                }
            );
            assert_eq!(
                decoder
                    .decode(Incoming::Text(&mark_ack(wire, "CA1", "1.0")))
                    .unwrap(),
                InboundEvent::Mark("1.0".into())
            );
            assert_eq!(
                decoder
                    .decode(Incoming::Text(&closing(wire, "CA1")))
                    .unwrap(),
                InboundEvent::End
            );
        }
    }

    #[test]
    fn twilio_frames_look_like_twilio() {
        let pattern = Pattern::new(Duration::from_millis(20), Duration::from_millis(20));
        let book = FrameBook::new(Wire::Twilio, &pattern, voice());
        let frame: serde_json::Value = serde_json::from_str(book.frame(1).as_str()).unwrap();
        assert_eq!(frame["event"], "media");
        assert_eq!(frame["sequenceNumber"], "4");
        assert_eq!(frame["media"]["chunk"], "2");
        assert_eq!(frame["media"]["timestamp"], "20");
        assert_eq!(
            frame["media"]["payload"].as_str().unwrap().len(),
            FRAME_PAYLOAD_LEN
        );
    }

    #[test]
    fn parses_what_the_worker_sends() {
        use callfleet_worker::protocols::{Encoder, Outbound, WireFrame};
        let frame = [0i16; FRAME_SAMPLES];
        let audio = Outbound::Audio {
            samples: &frame,
            format: AudioFormat::MULAW_8K,
            text: Some("Hi."),
        };
        let twilio = Encoder::Twilio(callfleet_worker::protocols::twilio::TwilioEncoder::new(
            "MZ1".into(),
        ));
        let text = |e: &Encoder, out| match e.encode(out) {
            Some(WireFrame::Text(t)) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            parse_reply(Wire::Twilio, &text(&twilio, audio)),
            Reply::Audio {
                payload_len: FRAME_PAYLOAD_LEN
            }
        );
        assert_eq!(
            parse_reply(Wire::Twilio, &text(&twilio, Outbound::Mark("3.1"))),
            Reply::Mark("3.1")
        );
        assert_eq!(
            parse_reply(Wire::Twilio, &text(&twilio, Outbound::Clear)),
            Reply::Clear
        );
        let seed = Encoder::CallSession;
        assert_eq!(
            parse_reply(Wire::Seed, &text(&seed, audio)),
            Reply::Audio {
                payload_len: FRAME_PAYLOAD_LEN
            }
        );
        assert_eq!(
            parse_reply(Wire::Seed, &text(&seed, Outbound::Mark("1.0"))),
            Reply::Mark("1.0")
        );
        assert_eq!(
            parse_reply(Wire::Seed, &text(&seed, Outbound::Clear)),
            Reply::Clear
        );
        let error = Outbound::Error {
            code: callfleet_worker::protocols::ErrorCode::Timeout,
            message: "x",
        };
        assert_eq!(
            parse_reply(Wire::Seed, &text(&seed, error)),
            Reply::Error { code: "TIMEOUT" }
        );
        let status = Outbound::Status {
            status: "ready",
            message: "call started",
        };
        assert_eq!(parse_reply(Wire::Seed, &text(&seed, status)), Reply::Other);
        assert_eq!(parse_reply(Wire::Twilio, "nope"), Reply::Malformed);
        assert_eq!(
            parse_reply(Wire::Twilio, r#"{"event":"media"}"#),
            Reply::Malformed
        );
        assert_eq!(parse_reply(Wire::Seed, "{}"), Reply::Malformed);
    }
}
