//! The HMAC secret for call tokens: the mounted Secret file, or an env var for local runs.
//!
//! The file's bytes are used exactly as stored (the operator writes 32 random bytes, which may
//! include a trailing `\n` byte by chance), so every minter that reads the same Secret agrees.

use std::path::Path;

/// Why no secret could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("token secret file {path} could not be read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the token secret is empty")]
    Empty,
    #[error("no token secret: mount one at {0} or set CALLFLEET_TOKEN_SECRET (no token, no call)")]
    Absent(String),
}

/// The HMAC key. Never printed.
#[derive(Clone)]
pub struct TokenSecret(Vec<u8>);

impl TokenSecret {
    /// Wraps raw key bytes; an empty key is refused because it would sign anything.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(bytes))
    }

    /// Loads the file when it exists, else the env value.
    pub fn load(file: &Path, env_value: Option<&str>) -> Result<Self, SecretError> {
        match std::fs::read(file) {
            Ok(bytes) => Self::from_bytes(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => match env_value {
                Some(value) => Self::from_bytes(value.as_bytes().to_vec()),
                None => Err(SecretError::Absent(file.display().to_string())),
            },
            Err(source) => Err(SecretError::Read {
                path: file.display().to_string(),
                source,
            }),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_wins_over_env_and_is_used_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token-secret");
        std::fs::write(&path, b"abc\n").unwrap();
        let secret = TokenSecret::load(&path, Some("env")).unwrap();
        assert_eq!(secret.as_bytes(), b"abc\n");
        assert!(!format!("{secret:?}").contains("abc"));
    }

    #[test]
    fn env_when_file_absent_and_errors_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        assert_eq!(
            TokenSecret::load(&path, Some("env")).unwrap().as_bytes(),
            b"env"
        );
        assert!(matches!(
            TokenSecret::load(&path, None),
            Err(SecretError::Absent(_))
        ));
        assert!(matches!(
            TokenSecret::load(&path, Some("")),
            Err(SecretError::Empty)
        ));
    }
}
