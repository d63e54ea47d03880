//! `callfleet-call` flags, and the pure decisions made from them: the URL to dial, the call id
//! and where the token goes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use tokio_tungstenite::tungstenite::http::Uri;

use callfleet_worker::admission::{TokenSecret, mint_token};
use callfleet_worker::media::AudioFormat;
use callfleet_worker::media::format::is_supported_rate;

use super::carrier::CallProtocol;
use super::error::CallError;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "callfleet-call",
    version,
    about = "Place one call to a callfleet worker from a WAV file: a deployment smoke test",
    after_help = "Example:\n  callfleet-call --url ws://127.0.0.1:8080 --protocol twilio --wav hello.wav \\\n      --token-secret \"$CALLFLEET_TOKEN_SECRET\" --out reply.wav"
)]
pub struct Args {
    /// Worker address (ws:// or wss://); the protocol's path is added when the URL has none.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// Protocol to call over.
    #[arg(long, value_enum, default_value_t = CallProtocol::Twilio)]
    pub protocol: CallProtocol,
    /// The caller's audio: any PCM or float WAV (converted to the protocol's format).
    #[arg(long)]
    pub wav: PathBuf,
    /// A call token (`<call-id>.<expiry>.<signature>`); its call id is used. Wins over the
    /// secret flags.
    #[arg(long)]
    pub token: Option<String>,
    /// HMAC secret to mint a token with (the worker's CALLFLEET_TOKEN_SECRET).
    #[arg(long, env = "CALLFLEET_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// File with the HMAC secret (the CallCluster's `<name>-call-token` Secret, key
    /// `token-secret`); wins over --token-secret.
    #[arg(long)]
    pub token_secret_file: Option<PathBuf>,
    /// Call id (default: from --token, else `smoke-<unix ms>`).
    #[arg(long)]
    pub call_id: Option<String>,
    /// Lifetime of a minted token, in seconds.
    #[arg(long, default_value_t = 600)]
    pub ttl_seconds: u64,
    /// Where the token goes: inside the protocol's start message, `?token=` or a Bearer header.
    #[arg(long, value_enum, default_value_t = TokenVia::Protocol)]
    pub token_via: TokenVia,
    /// Caller audio rate for seed and FreeSWITCH (8000, 16000 or 24000; Twilio is 8000).
    #[arg(long, default_value_t = 8_000)]
    pub rate: u32,
    /// Seed protocol encoding: µ-law (8 kHz only) or 16-bit PCM.
    #[arg(long, value_enum, default_value_t = SeedEncoding::Mulaw)]
    pub encoding: SeedEncoding,
    /// FreeSWITCH: ask for streamed binary reply audio instead of `playAudio` per sentence.
    #[arg(long)]
    pub streaming: bool,
    /// Reply audio output (mono 16-bit WAV at the reply's rate).
    #[arg(long, default_value = "reply.wav")]
    pub out: PathBuf,
    /// Transcript of the reply (`-` for stdout). Twilio frames carry no text.
    #[arg(long, default_value = "-")]
    pub transcript: String,
    /// After the WAV ends, hang up once the reply has finished playing and this many seconds
    /// passed without new reply audio.
    #[arg(long, default_value_t = 2.0)]
    pub quiet_seconds: f64,
    /// After the WAV ends, hang up after this many seconds regardless.
    #[arg(long, default_value_t = 20.0)]
    pub max_wait_seconds: f64,
    /// Caller frames at or above this level (dBFS) count as speech for the latency measurement.
    #[arg(long, default_value_t = -40.0, allow_hyphen_values = true)]
    pub speech_dbfs: f32,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// PEM CA certificate(s) to trust for a `wss://` URL in addition to the public roots: a
    /// deployment whose ingress has a certificate from a private CA.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenVia {
    Protocol,
    Query,
    Header,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeedEncoding {
    Mulaw,
    Pcm16,
}

impl Args {
    /// The WebSocket URL to dial, without the token.
    pub fn endpoint(&self) -> Result<String, CallError> {
        let bad = |why: &str| CallError::BadUrl(format!("{}: {why}", self.url));
        let uri: Uri = self.url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("ws" | "wss") => {}
            Some(other) => return Err(bad(&format!("scheme {other} is not ws or wss"))),
            None => return Err(bad("missing ws:// or wss://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("missing host"));
        }
        if uri.query().is_some() {
            return Err(bad("no query string expected (use --token-via query)"));
        }
        let base = self.url.trim_end_matches('/');
        Ok(match uri.path() {
            "" | "/" => format!("{base}{}", self.protocol.path()),
            _ => base.to_owned(),
        })
    }

    /// The caller audio format the protocol will carry.
    pub fn send_format(&self) -> Result<AudioFormat, CallError> {
        if !is_supported_rate(self.rate) {
            return Err(CallError::Usage(format!(
                "--rate {} is not one of 8000, 16000, 24000",
                self.rate
            )));
        }
        Ok(match (self.protocol, self.encoding) {
            (CallProtocol::Twilio, _) => AudioFormat::MULAW_8K,
            (CallProtocol::Seed, SeedEncoding::Mulaw) if self.rate != 8_000 => {
                return Err(CallError::Usage(
                    "µ-law is 8 kHz only: use --encoding pcm16 for other rates".into(),
                ));
            }
            (CallProtocol::Seed, SeedEncoding::Mulaw) => AudioFormat::MULAW_8K,
            (CallProtocol::Seed, SeedEncoding::Pcm16) | (CallProtocol::Freeswitch, _) => {
                AudioFormat::l16(self.rate)
            }
        })
    }

    /// The call id and its token: the given token (its call id must match `--call-id`), or
    /// one minted from the secret.
    pub fn credentials(&self, now: SystemTime) -> Result<(String, String), CallError> {
        if let Some(token) = &self.token {
            let token_call = token
                .split('.')
                .next()
                .filter(|id| !id.is_empty() && token.matches('.').count() == 2)
                .ok_or_else(|| {
                    CallError::Usage("--token is not <call-id>.<expiry>.<signature>".into())
                })?;
            if let Some(call_id) = &self.call_id
                && call_id != token_call
            {
                return Err(CallError::Usage(format!(
                    "--call-id {call_id} differs from the token's call id {token_call}"
                )));
            }
            return Ok((token_call.to_owned(), token.clone()));
        }
        let secret = match (&self.token_secret_file, &self.token_secret) {
            (Some(file), _) => std::fs::read(file)
                .map_err(|e| CallError::Usage(format!("cannot read {}: {e}", file.display())))?,
            (None, Some(secret)) => secret.as_bytes().to_vec(),
            (None, None) => {
                return Err(CallError::Usage(
                    "a token is needed: pass --token, or --token-secret / --token-secret-file (or CALLFLEET_TOKEN_SECRET) to mint one".into(),
                ));
            }
        };
        let secret =
            TokenSecret::from_bytes(secret).map_err(|e| CallError::Usage(e.to_string()))?;
        let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let call_id = match &self.call_id {
            Some(id) if id.is_empty() || id.contains('.') => {
                return Err(CallError::Usage(
                    "--call-id must be non-empty and without '.'".into(),
                ));
            }
            Some(id) => id.clone(),
            None => format!("smoke-{}", unix.as_millis()),
        };
        let token = mint_token(&secret, &call_id, unix.as_secs() + self.ttl_seconds);
        Ok((call_id, token))
    }

    pub fn quiet(&self) -> Duration {
        Duration::try_from_secs_f64(self.quiet_seconds).unwrap_or_default()
    }

    pub fn max_wait(&self) -> Duration {
        Duration::try_from_secs_f64(self.max_wait_seconds).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use callfleet_worker::admission::verify_token;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(["callfleet-call", "--wav", "in.wav"].iter().chain(extra)).unwrap()
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            args(&[]).endpoint().unwrap(),
            "ws://127.0.0.1:8080/ws/twilio"
        );
        let seed = args(&["--url", "wss://calls.example.com/", "--protocol", "seed"]);
        assert_eq!(
            seed.endpoint().unwrap(),
            "wss://calls.example.com/ws/call-session"
        );
        let custom = args(&["--url", "ws://h:1/proxy/fs", "--protocol", "freeswitch"]);
        assert_eq!(custom.endpoint().unwrap(), "ws://h:1/proxy/fs");
        for bad in [
            "http://h:1",
            "h:1",
            "not a url",
            "ws://h:1/?token=x",
            "ws:///x",
        ] {
            assert!(
                matches!(args(&["--url", bad]).endpoint(), Err(CallError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            args(&["--rate", "16000"]).send_format().unwrap(),
            AudioFormat::MULAW_8K
        );
        let seed = |e: &[&str]| args(&[&["--protocol", "seed"], e].concat()).send_format();
        assert_eq!(seed(&[]).unwrap(), AudioFormat::MULAW_8K);
        assert!(matches!(
            seed(&["--rate", "16000"]),
            Err(CallError::Usage(_))
        ));
        assert_eq!(
            seed(&["--rate", "16000", "--encoding", "pcm16"]).unwrap(),
            AudioFormat::l16(16_000)
        );
        let fs = args(&["--protocol", "freeswitch", "--rate", "24000"]);
        assert_eq!(fs.send_format().unwrap(), AudioFormat::l16(24_000));
        assert!(matches!(
            args(&["--rate", "44100"]).send_format(),
            Err(CallError::Usage(_))
        ));
    }

    #[test]
    fn credentials_minted_or_given() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let (call_id, token) = args(&["--token-secret", "s", "--call-id", "CA9"])
            .credentials(now)
            .unwrap();
        assert_eq!(call_id, "CA9");
        let secret = TokenSecret::from_bytes(b"s".to_vec()).unwrap();
        assert_eq!(verify_token(&secret, &token, "CA9", 1_000), Ok(()));
        assert_eq!(
            verify_token(&secret, &token, "CA9", 1_600),
            Err(callfleet_worker::admission::TokenError::Expired)
        );
        let (generated, _) = args(&["--token-secret", "s"]).credentials(now).unwrap();
        assert_eq!(generated, "smoke-1000000");

        let given = args(&["--token", "CA1.99.sig"]);
        assert_eq!(
            given.credentials(now).unwrap(),
            ("CA1".into(), "CA1.99.sig".into())
        );
        assert!(matches!(
            args(&["--token", "CA1.99.sig", "--call-id", "CA2"]).credentials(now),
            Err(CallError::Usage(_))
        ));
        assert!(matches!(
            args(&["--token", "garbage"]).credentials(now),
            Err(CallError::Usage(_))
        ));
        assert!(matches!(
            args(&["--token-secret", "s", "--call-id", "a.b"]).credentials(now),
            Err(CallError::Usage(_))
        ));
        assert!(matches!(
            args(&["--token-secret", ""]).credentials(now),
            Err(CallError::Usage(_))
        ));
    }
}
