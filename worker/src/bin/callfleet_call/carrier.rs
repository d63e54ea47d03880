//! The carrier's side of each protocol: what a phone network (or Twilio, or FreeSWITCH's audio
//! fork) sends the worker, and what it makes of the worker's frames. The worker's `protocols`
//! module is the other side; its message types are reused where they are public.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use callfleet_worker::media::{AudioEncoding, AudioFormat};
use callfleet_worker::protocols::call_session::{ClientMessage, ServerMessage};
use callfleet_worker::protocols::freeswitch::{BidirectionalAudio, Metadata};
use callfleet_worker::protocols::payload::{decode_audio, decode_raw, encode_audio, encode_raw};
use callfleet_worker::protocols::twilio::{MediaFormat, StartPayload};
use callfleet_worker::protocols::{Incoming, ProtocolError, WireFrame};

/// The three protocols a call can be placed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CallProtocol {
    /// The seed JSON protocol (`/ws/call-session`).
    Seed,
    /// Twilio Media Streams (`/ws/twilio`).
    Twilio,
    /// FreeSWITCH `mod_audio_fork` (`/ws/freeswitch`).
    Freeswitch,
}

impl CallProtocol {
    pub fn path(self) -> &'static str {
        match self {
            CallProtocol::Seed => "/ws/call-session",
            CallProtocol::Twilio => "/ws/twilio",
            CallProtocol::Freeswitch => "/ws/freeswitch",
        }
    }

    /// Whether the worker's replies carry the spoken text.
    pub fn carries_text(self) -> bool {
        !matches!(self, CallProtocol::Twilio)
    }
}

/// How the call is set up.
#[derive(Debug, Clone)]
pub struct CarrierSetup {
    pub protocol: CallProtocol,
    pub call_id: String,
    /// Token to announce inside the protocol (none when it goes in the URL or a header).
    pub token: Option<String>,
    /// Caller audio format (Twilio is always µ-law at 8 kHz).
    pub format: AudioFormat,
    /// FreeSWITCH: ask for reply audio as streamed binary frames instead of `playAudio`.
    pub streaming: bool,
}

/// What a worker frame means to the carrier.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// Reply audio, decoded; `text` is the sentence it starts, where the protocol says.
    Audio {
        samples: Vec<i16>,
        rate: u32,
        text: Option<String>,
    },
    /// Acknowledge this mark once the audio before it has played.
    Mark(String),
    /// Stop playback and drop queued audio (barge-in).
    Clear,
    Status {
        status: String,
        message: String,
    },
    Error {
        code: String,
        message: String,
    },
    /// The worker asks the carrier to hang up (FreeSWITCH `disconnect`).
    Hangup,
    /// Nothing the carrier acts on.
    Ignored,
}

/// A worker frame the carrier cannot understand.
#[derive(Debug, thiserror::Error)]
#[error("unexpected frame from the worker: {0}")]
pub struct CarrierError(pub String);

impl From<ProtocolError> for CarrierError {
    fn from(err: ProtocolError) -> Self {
        CarrierError(err.to_string())
    }
}

/// The carrier's state for one call.
#[derive(Debug)]
pub struct Carrier {
    setup: CarrierSetup,
    /// Twilio message counters.
    sequence: u64,
    chunk: u64,
}

impl Carrier {
    pub fn new(mut setup: CarrierSetup) -> Self {
        if setup.protocol == CallProtocol::Twilio {
            setup.format = AudioFormat::MULAW_8K;
        }
        Self {
            setup,
            sequence: 0,
            chunk: 0,
        }
    }

    /// Format of the caller audio sent.
    pub fn send_format(&self) -> AudioFormat {
        self.setup.format
    }

    fn stream_sid(&self) -> String {
        format!("MZ{}", self.setup.call_id)
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// The frames that announce the call.
    pub fn opening(&mut self) -> Vec<WireFrame> {
        let setup = &self.setup;
        match setup.protocol {
            CallProtocol::Seed => {
                let start = ClientMessage::StartCall {
                    call_id: setup.call_id.clone(),
                    user_id: Some("callfleet-call".into()),
                    metadata: None,
                    token: setup.token.clone(),
                    format: Some(seed_format_name(setup.format).into()),
                    sample_rate: Some(setup.format.sample_rate),
                };
                vec![text(serde_json::to_string(&start).unwrap_or_default())]
            }
            CallProtocol::Twilio => {
                let mut custom_parameters = HashMap::new();
                if let Some(token) = &setup.token {
                    custom_parameters.insert("token".to_owned(), token.clone());
                }
                let start = StartPayload {
                    stream_sid: self.stream_sid(),
                    call_sid: setup.call_id.clone(),
                    account_sid: Some("ACcallfleetcall".into()),
                    custom_parameters,
                    media_format: Some(MediaFormat {
                        encoding: "audio/x-mulaw".into(),
                        sample_rate: 8_000,
                        channels: Some(1),
                    }),
                };
                let connected =
                    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
                let stream_sid = self.stream_sid();
                let start = json!({
                    "event": "start",
                    "sequenceNumber": self.next_sequence().to_string(),
                    "start": start,
                    "streamSid": stream_sid,
                });
                vec![text(connected.to_string()), text(start.to_string())]
            }
            CallProtocol::Freeswitch => {
                let metadata = Metadata {
                    call_id: Some(setup.call_id.clone()),
                    token: setup.token.clone(),
                    sample_rate: Some(setup.format.sample_rate),
                    from: Some("callfleet-call".into()),
                    bidirectional_audio: setup.streaming.then_some(BidirectionalAudio {
                        enabled: true,
                        streaming: true,
                        sample_rate: Some(setup.format.sample_rate),
                    }),
                    ..Metadata::default()
                };
                vec![text(serde_json::to_string(&metadata).unwrap_or_default())]
            }
        }
    }

    /// One frame of caller audio.
    pub fn media(&mut self, samples: &[i16]) -> WireFrame {
        let format = self.setup.format;
        match self.setup.protocol {
            CallProtocol::Seed => {
                let audio = ClientMessage::Audio {
                    data: encode_audio(samples, format),
                    format: Some(seed_format_name(format).into()),
                    sample_rate: Some(format.sample_rate),
                };
                text(serde_json::to_string(&audio).unwrap_or_default())
            }
            CallProtocol::Twilio => {
                let timestamp = self.chunk * 20;
                self.chunk += 1;
                let message = json!({
                    "event": "media",
                    "sequenceNumber": self.next_sequence().to_string(),
                    "media": {
                        "track": "inbound",
                        "chunk": self.chunk.to_string(),
                        "timestamp": timestamp.to_string(),
                        "payload": encode_audio(samples, format),
                    },
                    "streamSid": self.stream_sid(),
                });
                text(message.to_string())
            }
            CallProtocol::Freeswitch => WireFrame::Binary(Bytes::from(encode_raw(samples, format))),
        }
    }

    /// The acknowledgement of a played mark, where the protocol has marks.
    pub fn mark_ack(&mut self, name: &str) -> Option<WireFrame> {
        match self.setup.protocol {
            CallProtocol::Seed => {
                let mark = ClientMessage::Mark { name: name.into() };
                Some(text(serde_json::to_string(&mark).unwrap_or_default()))
            }
            CallProtocol::Twilio => Some(text(
                json!({
                    "event": "mark",
                    "sequenceNumber": self.next_sequence().to_string(),
                    "streamSid": self.stream_sid(),
                    "mark": {"name": name},
                })
                .to_string(),
            )),
            CallProtocol::Freeswitch => None,
        }
    }

    /// The frame that ends the call; FreeSWITCH just closes the socket on hangup.
    pub fn hangup(&mut self) -> Option<WireFrame> {
        match self.setup.protocol {
            CallProtocol::Seed => Some(text(
                serde_json::to_string(&ClientMessage::EndCall).unwrap_or_default(),
            )),
            CallProtocol::Twilio => Some(text(
                json!({
                    "event": "stop",
                    "sequenceNumber": self.next_sequence().to_string(),
                    "streamSid": self.stream_sid(),
                    "stop": {"accountSid": "ACcallfleetcall", "callSid": self.setup.call_id},
                })
                .to_string(),
            )),
            CallProtocol::Freeswitch => None,
        }
    }

    /// What a frame from the worker means.
    pub fn parse(&self, frame: Incoming<'_>) -> Result<WorkerEvent, CarrierError> {
        match (self.setup.protocol, frame) {
            (CallProtocol::Seed, Incoming::Text(t)) => self.parse_seed(t),
            (CallProtocol::Twilio, Incoming::Text(t)) => parse_twilio(t),
            (CallProtocol::Freeswitch, Incoming::Text(t)) => parse_freeswitch(t),
            (CallProtocol::Freeswitch, Incoming::Binary(bytes)) => Ok(WorkerEvent::Audio {
                samples: decode_raw(bytes, self.setup.format)?,
                rate: self.setup.format.sample_rate,
                text: None,
            }),
            (_, Incoming::Binary(_)) => Err(CarrierError("binary frame on a JSON protocol".into())),
        }
    }

    fn parse_seed(&self, text: &str) -> Result<WorkerEvent, CarrierError> {
        let message: ServerMessage =
            serde_json::from_str(text).map_err(|e| CarrierError(format!("{e}: {text}")))?;
        Ok(match message {
            ServerMessage::AudioResponse { audio, text } => WorkerEvent::Audio {
                samples: decode_audio(&audio, self.setup.format)?,
                rate: self.setup.format.sample_rate,
                text: Some(text).filter(|t| !t.trim().is_empty()),
            },
            ServerMessage::Status { status, message } => WorkerEvent::Status { status, message },
            ServerMessage::Error { code, message } => WorkerEvent::Error { code, message },
            ServerMessage::Clear => WorkerEvent::Clear,
            ServerMessage::Mark { name } => WorkerEvent::Mark(name),
        })
    }
}

fn text(body: String) -> WireFrame {
    WireFrame::Text(body)
}

/// The seed protocol's name for a format.
fn seed_format_name(format: AudioFormat) -> &'static str {
    match format.encoding {
        AudioEncoding::Mulaw => "mulaw",
        AudioEncoding::L16 => "pcm16",
    }
}

#[derive(Deserialize)]
struct TwilioOut {
    event: String,
    #[serde(default)]
    media: Option<TwilioMedia>,
    #[serde(default)]
    mark: Option<TwilioMark>,
}

#[derive(Deserialize)]
struct TwilioMedia {
    payload: String,
}

#[derive(Deserialize)]
struct TwilioMark {
    name: String,
}

fn parse_twilio(text: &str) -> Result<WorkerEvent, CarrierError> {
    let message: TwilioOut =
        serde_json::from_str(text).map_err(|e| CarrierError(format!("{e}: {text}")))?;
    match (message.event.as_str(), message.media, message.mark) {
        ("media", Some(media), _) => Ok(WorkerEvent::Audio {
            samples: decode_audio(&media.payload, AudioFormat::MULAW_8K)?,
            rate: 8_000,
            text: None,
        }),
        ("mark", _, Some(mark)) => Ok(WorkerEvent::Mark(mark.name)),
        ("clear", _, _) => Ok(WorkerEvent::Clear),
        _ => Err(CarrierError(text.into())),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FreeswitchOut {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<PlayAudio>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlayAudio {
    audio_content_type: String,
    sample_rate: u32,
    audio_content: String,
    #[serde(default)]
    text_content: Option<String>,
}

fn parse_freeswitch(text: &str) -> Result<WorkerEvent, CarrierError> {
    let message: FreeswitchOut =
        serde_json::from_str(text).map_err(|e| CarrierError(format!("{e}: {text}")))?;
    match message.kind.as_str() {
        "playAudio" => {
            let play = message
                .data
                .ok_or_else(|| CarrierError("playAudio without data".into()))?;
            if play.audio_content_type != "raw" {
                return Err(CarrierError(format!(
                    "playAudio of type {:?} (only raw L16 is understood)",
                    play.audio_content_type
                )));
            }
            let bytes = STANDARD
                .decode(play.audio_content.as_bytes())
                .map_err(|_| CarrierError("playAudio content is not base64".into()))?;
            Ok(WorkerEvent::Audio {
                samples: decode_raw(&bytes, AudioFormat::l16(play.sample_rate))?,
                rate: play.sample_rate,
                text: play.text_content.filter(|t| !t.trim().is_empty()),
            })
        }
        "killAudio" => Ok(WorkerEvent::Clear),
        "disconnect" => Ok(WorkerEvent::Hangup),
        "error" => Ok(WorkerEvent::Error {
            code: message.code.unwrap_or_default(),
            message: message.message.unwrap_or_default(),
        }),
        _ => Ok(WorkerEvent::Ignored),
    }
}

#[cfg(test)]
mod tests {
    use callfleet_worker::protocols::{
        CallStart, Decoder, Encoder, ErrorCode, InboundEvent, Outbound, PlaybackMode, Protocol,
    };

    use super::*;

    fn setup(protocol: CallProtocol, format: AudioFormat, streaming: bool) -> CarrierSetup {
        CarrierSetup {
            protocol,
            call_id: "call-7".into(),
            token: Some("tok".into()),
            format,
            streaming,
        }
    }

    fn worker_protocol(protocol: CallProtocol) -> Protocol {
        match protocol {
            CallProtocol::Seed => Protocol::CallSession,
            CallProtocol::Twilio => Protocol::Twilio,
            CallProtocol::Freeswitch => Protocol::FreeSwitch,
        }
    }

    fn incoming(frame: &WireFrame) -> Incoming<'_> {
        match frame {
            WireFrame::Text(t) => Incoming::Text(t),
            WireFrame::Binary(b) => Incoming::Binary(b),
        }
    }

    /// Round trip through the worker's own codecs: what the carrier sends, the worker decodes;
    /// what the worker encodes, the carrier understands.
    fn round_trip(protocol: CallProtocol, format: AudioFormat, streaming: bool) {
        let mut carrier = Carrier::new(setup(protocol, format, streaming));
        let mut decoder = Decoder::new(worker_protocol(protocol));
        let mut start: Option<CallStart> = None;
        for frame in carrier.opening() {
            if let InboundEvent::Start(s) = decoder.decode(incoming(&frame)).unwrap() {
                start = Some(*s);
            }
        }
        let start = start.expect("the worker saw a start");
        assert_eq!(start.call_id, "call-7");
        assert_eq!(start.token.as_deref(), Some("tok"));
        assert_eq!(start.inbound, carrier.send_format());
        let frame: Vec<i16> = (0..carrier.send_format().samples_per_frame() as i16)
            .map(|i| i * 50)
            .collect();
        let InboundEvent::Audio { samples, format } =
            decoder.decode(incoming(&carrier.media(&frame))).unwrap()
        else {
            panic!("not audio")
        };
        assert_eq!(format, carrier.send_format());
        assert_eq!(samples.len(), frame.len());
        if let Some(ack) = carrier.mark_ack("2.0") {
            assert_eq!(
                decoder.decode(incoming(&ack)).unwrap(),
                InboundEvent::Mark("2.0".into())
            );
        }
        if let Some(bye) = carrier.hangup() {
            assert_eq!(decoder.decode(incoming(&bye)).unwrap(), InboundEvent::End);
        }

        let encoder = Encoder::new(worker_protocol(protocol), &start);
        let reply: Vec<i16> = vec![1200; start.outbound.samples_per_frame()];
        let audio = encoder
            .encode(Outbound::Audio {
                samples: &reply,
                format: start.outbound,
                text: Some("Hello there."),
            })
            .unwrap();
        let WorkerEvent::Audio {
            samples,
            rate,
            text,
        } = carrier.parse(incoming(&audio)).unwrap()
        else {
            panic!("not audio")
        };
        assert_eq!(rate, start.outbound.sample_rate);
        assert_eq!(samples.len(), reply.len());
        assert!(
            samples.iter().all(|s| (1100..1300).contains(s)),
            "{protocol:?}"
        );
        let expect_text = protocol.carries_text() && start.playback == PlaybackMode::PerSentence
            || protocol == CallProtocol::Seed;
        assert_eq!(
            text.is_some(),
            expect_text,
            "{protocol:?} streaming={streaming}"
        );
        let clear = encoder.encode(Outbound::Clear).unwrap();
        assert_eq!(carrier.parse(incoming(&clear)).unwrap(), WorkerEvent::Clear);
        if let Some(mark) = encoder.encode(Outbound::Mark("3.1")) {
            assert_eq!(
                carrier.parse(incoming(&mark)).unwrap(),
                WorkerEvent::Mark("3.1".into())
            );
        }
        if let Some(error) = encoder.encode(Outbound::Error {
            code: ErrorCode::Unauthorized,
            message: "no",
        }) {
            assert_eq!(
                carrier.parse(incoming(&error)).unwrap(),
                WorkerEvent::Error {
                    code: "UNAUTHORIZED".into(),
                    message: "no".into()
                }
            );
        }
    }

    #[test]
    fn every_protocol_round_trips_through_the_worker_codecs() {
        round_trip(CallProtocol::Seed, AudioFormat::MULAW_8K, false);
        round_trip(CallProtocol::Seed, AudioFormat::l16(16_000), false);
        round_trip(CallProtocol::Twilio, AudioFormat::l16(16_000), false);
        round_trip(CallProtocol::Freeswitch, AudioFormat::l16(8_000), false);
        round_trip(CallProtocol::Freeswitch, AudioFormat::l16(16_000), true);
    }

    #[test]
    fn twilio_is_always_mulaw_and_counts_its_messages() {
        let mut carrier =
            Carrier::new(setup(CallProtocol::Twilio, AudioFormat::l16(24_000), false));
        assert_eq!(carrier.send_format(), AudioFormat::MULAW_8K);
        carrier.opening();
        let WireFrame::Text(first) = carrier.media(&[0; 160]) else {
            panic!()
        };
        let WireFrame::Text(second) = carrier.media(&[0; 160]) else {
            panic!()
        };
        let first: serde_json::Value = serde_json::from_str(&first).unwrap();
        let second: serde_json::Value = serde_json::from_str(&second).unwrap();
        assert_eq!(first["sequenceNumber"], "2");
        assert_eq!(second["sequenceNumber"], "3");
        assert_eq!(second["media"]["chunk"], "2");
        assert_eq!(second["media"]["timestamp"], "20");
        assert_eq!(second["streamSid"], "MZcall-7");
    }

    #[test]
    fn garbage_from_the_worker_is_an_error_not_a_panic() {
        for protocol in [
            CallProtocol::Seed,
            CallProtocol::Twilio,
            CallProtocol::Freeswitch,
        ] {
            let carrier = Carrier::new(setup(protocol, AudioFormat::l16(8_000), false));
            assert!(carrier.parse(Incoming::Text("{not json")).is_err());
            assert!(
                carrier
                    .parse(Incoming::Text(
                        r#"{"event":"media","media":{"payload":"!!"}}"#
                    ))
                    .is_err()
                    || protocol != CallProtocol::Twilio
            );
        }
        let fs = Carrier::new(setup(
            CallProtocol::Freeswitch,
            AudioFormat::l16(8_000),
            false,
        ));
        assert!(
            fs.parse(Incoming::Binary(&[1, 2, 3])).is_err(),
            "odd L16 length"
        );
        assert!(fs.parse(Incoming::Text(r#"{"type":"playAudio","data":{"audioContentType":"wav","sampleRate":8000,"audioContent":""}}"#)).is_err());
        assert_eq!(
            fs.parse(Incoming::Text(r#"{"type":"disconnect"}"#))
                .unwrap(),
            WorkerEvent::Hangup
        );
        let twilio = Carrier::new(setup(CallProtocol::Twilio, AudioFormat::MULAW_8K, false));
        assert!(twilio.parse(Incoming::Binary(&[0])).is_err());
    }
}
