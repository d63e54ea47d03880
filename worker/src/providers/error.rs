//! The one error type every provider returns, so the call loop can decide what to tell the caller
//! (`RATE_LIMIT`, `TIMEOUT`, `INTERNAL_ERROR`) and whether a retry could help, whatever the vendor.

use std::time::Duration;

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// HTTP 429: the account's rate or quota limit. `retry_after` is the server's hint, if any.
    #[error("provider rate limited the request: {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// HTTP 5xx: the provider failed.
    #[error("provider server error {status}: {message}")]
    Server { status: u16, message: String },
    /// No connection, no first byte, or no further byte within the configured timeout.
    #[error("provider timed out ({0})")]
    Timeout(&'static str),
    /// The connection failed or broke (refused, reset, dropped mid-stream, TLS).
    #[error("provider connection failed: {0}")]
    Transport(String),
    /// The provider answered something we cannot understand (bad JSON, unexpected event).
    #[error("provider protocol error: {0}")]
    Protocol(String),
    /// The provider took the request and reported that it failed to produce the answer (a
    /// realtime `response.done` with status `failed`): its own error, worth another try.
    #[error("provider failed to answer: {0}")]
    Failed(String),
    /// HTTP 401/403: the API key is missing, wrong or not allowed to use the model.
    #[error("provider rejected the API key ({status}): {message}")]
    Auth { status: u16, message: String },
    /// Any other HTTP 4xx: the request itself is wrong (unknown model, bad parameter).
    #[error("provider rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
}

impl ProviderError {
    /// Whether sending the same request again may succeed (rate limits, server errors, timeouts
    /// and broken connections); auth and request errors will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Failed(_)
                | Self::Timeout(_)
                | Self::Transport(_)
        )
    }

    /// The seed protocol's error code for this failure (`error.code` sent to the caller).
    pub fn caller_code(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "RATE_LIMIT",
            Self::Timeout(_) => "TIMEOUT",
            _ => "INTERNAL_ERROR",
        }
    }

    /// Classifies an HTTP error status and its body (OpenAI's `{"error":{"message":..}}` shape
    /// when present, else the raw text). The provider's `x-request-id`, when it sent one, is
    /// kept in the message: it is what the provider's support asks for.
    pub fn from_status(
        status: u16,
        retry_after: Option<Duration>,
        body: &str,
        request_id: Option<&str>,
    ) -> Self {
        let mut message = error_message(body);
        if let Some(id) = request_id.filter(|id| !id.is_empty()) {
            message = format!("{message} (request {id})");
        }
        match status {
            429 => Self::RateLimited {
                retry_after,
                message,
            },
            401 | 403 => Self::Auth { status, message },
            500..=599 => Self::Server { status, message },
            _ => Self::Rejected { status, message },
        }
    }
}

/// The `error.message` of an OpenAI error body, else the body itself (shortened).
fn error_message(body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str());
    match message {
        Some(m) => m.to_owned(),
        None => body.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let body = r#"{"error":{"message":"slow down","type":"requests"}}"#;
        let e = ProviderError::from_status(429, Some(Duration::from_secs(2)), body, None);
        assert_eq!(
            e,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
                message: "slow down".into()
            }
        );
        assert!(e.is_retryable());
        assert_eq!(e.caller_code(), "RATE_LIMIT");
        assert!(ProviderError::from_status(503, None, "oops", None).is_retryable());
        assert!(!ProviderError::from_status(401, None, "", None).is_retryable());
        assert!(matches!(
            ProviderError::from_status(404, None, "no such model", None),
            ProviderError::Rejected { status: 404, .. }
        ));
        assert_eq!(
            ProviderError::from_status(500, None, body, Some("req_7f3a")).to_string(),
            "provider server error 500: slow down (request req_7f3a)",
            "the provider's request id is kept for its support"
        );
        assert_eq!(
            ProviderError::Timeout("first byte").caller_code(),
            "TIMEOUT"
        );
        assert_eq!(
            ProviderError::Transport("reset".into()).caller_code(),
            "INTERNAL_ERROR"
        );
    }
}
