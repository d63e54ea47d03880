//! The three wire protocols a call can arrive on, parsed into one internal event type.
//!
//! Decoders and encoders are pure: frames in, [`InboundEvent`]s out; [`Outbound`] in, frames
//! out. They hold only the little per-connection state a protocol needs (has the call started,
//! has it ended, the Twilio stream id), so they are unit-tested without sockets and reused by the
//! load generator and the smoke-test client.

pub mod call_session;
pub mod carrier;
pub mod error;
pub mod freeswitch;
pub mod payload;
pub mod twilio;

use bytes::Bytes;

use crate::media::AudioFormat;

pub use error::{ErrorCode, ProtocolError};

/// Largest text or binary frame accepted: five seconds of 24 kHz L16, base64-encoded, with room
/// for the JSON around it. Larger frames are refused with an error, not buffered.
pub const MAX_FRAME_BYTES: usize = 512 * 1024;

/// Which protocol a connection speaks (chosen by URL path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The seed's JSON protocol on `/ws/call-session`.
    CallSession,
    /// Twilio Media Streams on `/ws/twilio`.
    Twilio,
    /// FreeSWITCH `mod_audio_fork` / jambonz `listen` on `/ws/freeswitch`.
    FreeSwitch,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::CallSession => "call-session",
            Protocol::Twilio => "twilio",
            Protocol::FreeSwitch => "freeswitch",
        }
    }

    /// The WebSocket read buffer for this protocol's calls: room for one typical frame and
    /// little more. tungstenite zero-fills the buffer's free space before every read, twice per
    /// frame (the read that takes it and the one that finds the socket drained), and with
    /// thousands of calls those buffers are cold: at 4 KiB for every protocol that `memset` was
    /// 2.8% of the worker's CPU in conversation, at 512 bytes for Twilio 0.6%, with no more
    /// `recv` calls (BENCHMARKS.md, 2026-12-02 afternoon). Larger frames still arrive whole:
    /// the buffer grows to a frame's length once its header is read. (tungstenite's 128 KiB
    /// default cost a bare sink 28% of its CPU and 138 KB per connection.)
    pub fn read_buffer_bytes(self) -> usize {
        match self {
            // A 20 ms µ-law media message: 216 base64 characters in about 370 bytes of JSON.
            Protocol::Twilio => 512,
            // 20 ms of L16 at up to 16 kHz is 640 bytes.
            Protocol::FreeSwitch => 1024,
            // Seed clients choose their own chunk sizes and rates.
            Protocol::CallSession => 4096,
        }
    }

    /// The read buffer for calls that read `frames` 20 ms frames at once (a call resting from
    /// its socket takes what arrived meanwhile in one read, `session::inbound_rest`): room for
    /// each, up to 4 KiB.
    pub fn read_buffer_for(self, frames: usize) -> usize {
        (self.read_buffer_bytes() * frames.max(1)).min(MAX_READ_BUFFER_BYTES)
    }
}

/// The largest per-call read buffer: what every protocol read through before 2026-12-02.
const MAX_READ_BUFFER_BYTES: usize = 4096;

/// A client's WebSocket frame header for payloads of 126 to 65,535 bytes (two bytes, a
/// 16-bit length, a 4-byte mask): what a read takes besides the message.
#[cfg(test)]
pub(crate) const CLIENT_FRAME_HEADER_BYTES: usize = 8;

/// A frame received from the carrier, borrowed from the socket's buffer.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// A frame to send to the carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFrame {
    Text(String),
    Binary(Bytes),
}

/// How the reply audio goes back to the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybackMode {
    /// 20 ms frames sent in real time (seed, Twilio, FreeSWITCH bidirectional streaming).
    Paced,
    /// One message per sentence that the carrier plays as a file (FreeSWITCH `playAudio`).
    PerSentence,
}

/// What the protocol announced when the call began.
#[derive(Debug, Clone, PartialEq)]
pub struct CallStart {
    /// The call id the token must name.
    pub call_id: String,
    /// Token carried inside the protocol (Twilio custom parameter, FreeSWITCH metadata, or the
    /// seed's additive `start_call.token`), if any.
    pub token: Option<String>,
    /// Format of the caller's audio, when the protocol fixes it up front.
    pub inbound: AudioFormat,
    /// Format of the reply audio.
    pub outbound: AudioFormat,
    pub playback: PlaybackMode,
    /// Twilio `streamSid`, needed on every outbound message.
    pub stream_id: Option<String>,
    /// Caller identity for logs (phone number, user id), when given.
    pub from: Option<String>,
}

/// One thing the carrier told us.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundEvent {
    /// Boxed: it is rare and large, and keeping the enum small keeps the per-call queues small.
    Start(Box<CallStart>),
    /// Caller audio, decoded to linear samples at `format.sample_rate`.
    Audio {
        samples: Vec<i16>,
        format: AudioFormat,
    },
    /// The carrier finished playing everything up to the mark we sent with this name.
    Mark(String),
    /// A keypad digit.
    Dtmf(String),
    /// The caller hung up or the carrier ended the stream.
    End,
    /// A frame that carries nothing for the call (e.g. Twilio `connected`).
    Ignored,
}

/// Something the session wants the carrier to receive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outbound<'a> {
    /// Reply audio: one 20 ms frame when paced, a whole sentence otherwise. `text` is the
    /// sentence being spoken, on its first frame.
    Audio {
        samples: &'a [i16],
        format: AudioFormat,
        text: Option<&'a str>,
    },
    /// Ask the carrier to tell us when playback reaches this point.
    Mark(&'a str),
    /// Stop playback now and drop queued audio (barge-in).
    Clear,
    Status {
        status: &'a str,
        message: &'a str,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
    },
    /// Ask the carrier to hang up (FreeSWITCH `disconnect`).
    Hangup,
}

/// Per-connection decoder for the protocol chosen by the URL.
#[derive(Debug)]
pub enum Decoder {
    CallSession(call_session::SeedDecoder),
    Twilio(twilio::TwilioDecoder),
    FreeSwitch(freeswitch::FreeSwitchDecoder),
}

impl Decoder {
    pub fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::CallSession => Self::CallSession(Default::default()),
            Protocol::Twilio => Self::Twilio(Default::default()),
            Protocol::FreeSwitch => Self::FreeSwitch(Default::default()),
        }
    }

    /// Parses one frame. Errors are per frame: the connection stays usable.
    pub fn decode(&mut self, frame: Incoming<'_>) -> Result<InboundEvent, ProtocolError> {
        let len = match frame {
            Incoming::Text(t) => t.len(),
            Incoming::Binary(b) => b.len(),
        };
        if len > MAX_FRAME_BYTES {
            return Err(ProtocolError::Oversize {
                len,
                max: MAX_FRAME_BYTES,
            });
        }
        match self {
            Self::CallSession(d) => d.decode(frame),
            Self::Twilio(d) => d.decode(frame),
            Self::FreeSwitch(d) => d.decode(frame),
        }
    }
}

/// Per-call encoder, built from the [`CallStart`] (it needs e.g. the Twilio stream id).
#[derive(Debug, Clone)]
pub enum Encoder {
    CallSession,
    Twilio(twilio::TwilioEncoder),
    FreeSwitch { playback: PlaybackMode },
}

impl Encoder {
    /// The encoder for a call that started with `start` on `protocol`.
    pub fn new(protocol: Protocol, start: &CallStart) -> Self {
        match protocol {
            Protocol::CallSession => Self::CallSession,
            Protocol::Twilio => Self::Twilio(twilio::TwilioEncoder::new(
                start.stream_id.clone().unwrap_or_default(),
            )),
            Protocol::FreeSwitch => Self::FreeSwitch {
                playback: start.playback,
            },
        }
    }

    /// The encoder used before a call started (errors only).
    pub fn before_start(protocol: Protocol) -> Self {
        match protocol {
            Protocol::CallSession => Self::CallSession,
            Protocol::Twilio => Self::Twilio(twilio::TwilioEncoder::new(String::new())),
            Protocol::FreeSwitch => Self::FreeSwitch {
                playback: PlaybackMode::PerSentence,
            },
        }
    }

    /// The frame for `out`, or `None` when this protocol has no such message (e.g. Twilio has
    /// no status or error messages; they are logged and, if fatal, end the socket instead).
    pub fn encode(&self, out: Outbound<'_>) -> Option<WireFrame> {
        match self {
            Self::CallSession => call_session::encode(out),
            Self::Twilio(encoder) => encoder.encode(out),
            Self::FreeSwitch { playback } => freeswitch::encode(*playback, out),
        }
    }
}
