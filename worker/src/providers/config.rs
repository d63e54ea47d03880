//! Where and how to reach a provider: the AiPipeline's `provider` section plus the mounted key.

use std::time::Duration;

use callfleet_crds::aipipeline::ProviderSpec;

/// Connection settings shared by every provider call of one pipeline version.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Base URL including the version prefix, without a trailing slash
    /// (e.g. `https://api.openai.com/v1`).
    pub base_url: String,
    /// Sent as `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// Budget for connecting plus the first byte, and for each later gap in a streamed body.
    /// A stream that is merely long is never cut; one that stops moving is.
    pub timeout: Duration,
    /// Extra attempts after the first on 429, 5xx and connection errors, before any output.
    pub max_retries: u32,
}

impl ProviderConfig {
    /// Builds the config from the pipeline spec and the API key read from its Secret.
    pub fn from_spec(spec: &ProviderSpec, api_key: impl Into<String>) -> Self {
        Self {
            base_url: spec.base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.into(),
            timeout: provider_timeout(spec),
            max_retries: spec.max_retries,
        }
    }
}

/// The provider timeout a pipeline asks for, a second at least.
pub fn provider_timeout(spec: &ProviderSpec) -> Duration {
    Duration::from_secs(u64::from(spec.timeout_seconds.max(1)))
}

/// Never prints the API key.
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callfleet_crds::aipipeline::SecretKeyRef;

    #[test]
    fn from_spec_trims_slash_and_hides_key() {
        let spec = ProviderSpec {
            base_url: "http://127.0.0.1:9000/v1/".into(),
            api_key_secret_ref: SecretKeyRef {
                name: "k".into(),
                key: "api-key".into(),
            },
            timeout_seconds: 7,
            max_retries: 3,
            ca_bundle: None,
        };
        let c = ProviderConfig::from_spec(&spec, "sk-secret");
        assert_eq!(c.base_url, "http://127.0.0.1:9000/v1");
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert_eq!(c.max_retries, 3);
        assert!(!format!("{c:?}").contains("sk-secret"));
    }
}
