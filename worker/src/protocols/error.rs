//! Errors a carrier can cause with its input, and the error codes sent back.

/// Error codes in `error` frames. The first three are the seed's; the rest are additive, so a
/// client can tell "you may not call" from "we failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    RateLimit,
    Timeout,
    InternalError,
    /// Missing, invalid or expired call token.
    Unauthorized,
    /// The worker is at its call limit.
    WorkerFull,
    /// A frame the protocol does not allow (bad JSON, unknown type, bad audio, ...).
    BadRequest,
    /// The worker is shutting down and admits no new calls.
    Draining,
    /// The worker's event loop is behind: it sheds new calls to keep its live ones real-time.
    Overloaded,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::RateLimit,
        ErrorCode::Timeout,
        ErrorCode::InternalError,
        ErrorCode::Unauthorized,
        ErrorCode::WorkerFull,
        ErrorCode::BadRequest,
        ErrorCode::Draining,
        ErrorCode::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RateLimit => "RATE_LIMIT",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::WorkerFull => "WORKER_FULL",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Draining => "DRAINING",
            ErrorCode::Overloaded => "OVERLOADED",
        }
    }

    /// Maps a provider's caller code (`RATE_LIMIT`, `TIMEOUT`, `INTERNAL_ERROR`).
    pub fn from_provider_code(code: &str) -> Self {
        match code {
            "RATE_LIMIT" => ErrorCode::RateLimit,
            "TIMEOUT" => ErrorCode::Timeout,
            _ => ErrorCode::InternalError,
        }
    }
}

/// Why a frame was refused. Every variant is reported to the caller as `BAD_REQUEST` (where the
/// protocol has error frames) and the call goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame is not valid JSON: {0}")]
    BadJson(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("audio payload is not valid base64")]
    BadBase64,
    #[error("unsupported audio format {0:?}")]
    UnsupportedFormat(String),
    #[error("unsupported sample rate {0} Hz")]
    WrongSampleRate(u32),
    #[error("audio format changed mid-call from {from} to {to}")]
    FormatChanged { from: String, to: String },
    #[error("L16 audio must have an even number of bytes, got {0}")]
    OddLength(usize),
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversize { len: usize, max: usize },
    #[error("binary frames are not part of this protocol")]
    UnexpectedBinary,
    #[error("text frame where binary audio was expected")]
    UnexpectedText,
    #[error("{0} before the call started")]
    BeforeStart(&'static str),
    #[error("the call already started")]
    DuplicateStart,
    #[error("frame after the call ended")]
    AfterEnd,
}

impl ProtocolError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}
