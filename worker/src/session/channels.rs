//! Messages between a call's socket reader, its call task and its socket writer.

use crate::protocols::{InboundEvent, ProtocolError, WireFrame};

/// Reader → call task.
#[derive(Debug)]
pub enum ReaderEvent {
    Event(InboundEvent),
    /// A frame that could not be used; the call goes on.
    Invalid(ProtocolError),
    /// The socket closed or failed.
    Closed,
}

/// Call task → writer.
#[derive(Debug)]
pub enum WriterCommand {
    Frame(WireFrame),
    /// Send a close frame and stop.
    Close {
        code: u16,
        reason: String,
    },
}

/// WebSocket close codes used by the worker.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_LATER: u16 = 1013;
}
