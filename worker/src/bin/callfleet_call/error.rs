//! Why a smoke-test call failed, with the exit code a script can branch on.

/// A failed call, worded for the person running the smoke test.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Usage(String),
    #[error("bad worker URL {0}")]
    BadUrl(String),
    #[error("cannot read the caller audio {path}: {reason}")]
    Audio { path: String, reason: String },
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// At its call limit, or shedding load.
    #[error("the worker has no room: {0}; retry later or call another worker")]
    WorkerFull(String),
    #[error("the worker refused the call token: {0}")]
    TokenRefused(String),
    #[error("the worker refused the call: {0}")]
    Refused(String),
    #[error("the call failed: {0}")]
    Failed(String),
    #[error("no reply audio arrived within the wait")]
    NoReply,
    #[error("cannot write {path}: {reason}")]
    Output { path: String, reason: String },
}

impl CallError {
    /// Process exit code: 2 usage and input, 3 unreachable, 4 refused, 5 call failed, 6 no
    /// reply, 7 output.
    pub fn exit_code(&self) -> u8 {
        match self {
            CallError::Usage(_) | CallError::BadUrl(_) | CallError::Audio { .. } => 2,
            CallError::Connect { .. } => 3,
            CallError::WorkerFull(_) | CallError::TokenRefused(_) | CallError::Refused(_) => 4,
            CallError::Failed(_) => 5,
            CallError::NoReply => 6,
            CallError::Output { .. } => 7,
        }
    }

    /// Classifies a refusal the worker answered with an error code (HTTP body, error frame or
    /// close reason).
    pub fn refusal(code: &str, message: &str) -> Self {
        let detail = if message.is_empty() {
            code.to_owned()
        } else {
            format!("{message} ({code})")
        };
        match code {
            "WORKER_FULL" | "OVERLOADED" => CallError::WorkerFull(detail),
            "UNAUTHORIZED" => CallError::TokenRefused(detail),
            _ => CallError::Refused(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_by_code() {
        assert!(matches!(
            CallError::refusal("WORKER_FULL", "worker is at its call limit"),
            CallError::WorkerFull(_)
        ));
        assert!(matches!(
            CallError::refusal("OVERLOADED", "worker is overloaded"),
            CallError::WorkerFull(_)
        ));
        let token = CallError::refusal("UNAUTHORIZED", "the call token expired");
        assert_eq!(
            token.to_string(),
            "the worker refused the call token: the call token expired (UNAUTHORIZED)"
        );
        assert_eq!(token.exit_code(), 4);
        assert_eq!(
            CallError::refusal("RATE_LIMIT", "").to_string(),
            "the worker refused the call: RATE_LIMIT"
        );
        assert_eq!(CallError::NoReply.exit_code(), 6);
    }
}
