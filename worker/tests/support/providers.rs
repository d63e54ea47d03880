//! The worker's OpenAI-compatible client pointed at the stand-in, for provider-level tests.

use std::time::Duration;

use callfleet_tests::openai_standin::StandinHandle;
use callfleet_worker::providers::ProviderConfig;
use callfleet_worker::providers::openai::{OpenAi, ProviderHttp};

/// A client over `http` (its pools, limit and metrics) for the stand-in, with the test key.
pub fn client_over(
    http: ProviderHttp,
    standin: &StandinHandle,
    timeout: Duration,
    max_retries: u32,
) -> OpenAi {
    let config = ProviderConfig {
        base_url: standin.base_url(),
        api_key: "sk-test".into(),
        timeout,
        max_retries,
    };
    OpenAi::new(http, config)
}
