//! The pipeline config, hot-reloaded from the mounted ConfigMap file.
//!
//! The file is polled (every 2 s by default) rather than watched with inotify, because the
//! kubelet updates ConfigMap volumes by swapping a `..data` symlink, which inotify reports
//! inconsistently. Content changes build a new [`PipelineVersion`] that is swapped in atomically
//! (`arc-swap`): new calls load the current `Arc`, live calls keep the one they took. A file that
//! fails to parse is logged, counted once, and the previous version stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use callfleet_crds::PipelineConfig;

use crate::metrics::Metrics;
use crate::providers::openai::ProviderHttp;
use crate::providers::openai::trust::{TrustError, parse_ca_bundle};
use crate::providers::{ProviderConfig, Providers};

/// Why a pipeline file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline file {path} could not be read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("pipeline file is not a valid pipeline config: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("provider.caBundle: {0}")]
    Trust(#[from] TrustError),
    #[error("provider connections could not be set up: {0}")]
    Transport(String),
}

/// One usable pipeline: the config and the providers built for it.
pub struct PipelineVersion {
    pub config: PipelineConfig,
    pub providers: Providers,
    /// The connection pools its providers use (kept so the next version can reuse them).
    http: ProviderHttp,
}

impl std::fmt::Debug for PipelineVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineVersion")
            .field("name", &self.config.name)
            .field("generation", &self.config.generation)
            .finish()
    }
}

/// Parses the ConfigMap's `pipeline.json`.
pub fn parse_pipeline(bytes: &[u8]) -> Result<PipelineConfig, PipelineError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Where new calls get their pipeline, and the reload loop that keeps it current.
pub struct PipelineSource {
    current: ArcSwapOption<PipelineVersion>,
    pipeline_file: PathBuf,
    api_key_file: PathBuf,
    api_key_env: Option<String>,
    http: ProviderHttp,
    metrics: Arc<Metrics>,
    /// What was last read, to detect changes (and to count a bad file only once).
    seen: std::sync::Mutex<Option<(Vec<u8>, String)>>,
}

impl PipelineSource {
    pub fn new(
        pipeline_file: PathBuf,
        api_key_file: PathBuf,
        api_key_env: Option<String>,
        http: ProviderHttp,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            pipeline_file,
            api_key_file,
            api_key_env,
            http,
            metrics,
            seen: std::sync::Mutex::new(None),
        }
    }

    /// The version new calls use, if any pipeline has loaded yet.
    pub fn current(&self) -> Option<Arc<PipelineVersion>> {
        self.current.load_full()
    }

    /// Reads the files and swaps in a new version if they changed. Returns whether a new version
    /// was installed.
    pub fn reload(&self) -> bool {
        let bytes = match std::fs::read(&self.pipeline_file) {
            Ok(bytes) => bytes,
            Err(source) => {
                let err = PipelineError::Read {
                    path: self.pipeline_file.display().to_string(),
                    source,
                };
                self.note_failure(&err);
                return false;
            }
        };
        let api_key = read_api_key(&self.api_key_file, self.api_key_env.as_deref());
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if seen
            .as_ref()
            .is_some_and(|(b, k)| *b == bytes && *k == api_key)
        {
            return false;
        }
        *seen = Some((bytes.clone(), api_key.clone()));
        drop(seen);
        match parse_pipeline(&bytes).and_then(|config| self.build(config, api_key)) {
            Ok(version) => {
                tracing::info!(
                    pipeline = %version.config.name,
                    generation = version.config.generation,
                    "pipeline config loaded"
                );
                self.current.store(Some(Arc::new(version)));
                true
            }
            Err(err) => {
                self.metrics.reload_errors.inc();
                tracing::error!(error = %err, "pipeline config refused; keeping the previous version");
                false
            }
        }
    }

    /// The providers for `config`: the shared pools, or pools that also trust its `caBundle`
    /// (the previous version's when its bundle is the same, so a prompt edit keeps the
    /// provider connections warm).
    fn build(
        &self,
        config: PipelineConfig,
        api_key: String,
    ) -> Result<PipelineVersion, PipelineError> {
        let http = match config.spec.provider.ca_bundle.as_deref() {
            None => self.http.clone(),
            Some(pem) => match self.current.load().as_deref() {
                Some(previous)
                    if previous.config.spec.provider.ca_bundle.as_deref() == Some(pem) =>
                {
                    previous.http.clone()
                }
                _ => self
                    .http
                    .trusting(&parse_ca_bundle(pem)?)
                    .map_err(|e| PipelineError::Transport(e.to_string()))?,
            },
        };
        let provider = ProviderConfig::from_spec(&config.spec.provider, api_key);
        let providers = Providers::openai(http.clone(), provider);
        Ok(PipelineVersion {
            config,
            providers,
            http,
        })
    }

    fn note_failure(&self, err: &PipelineError) {
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Count a missing file once, not every poll.
        if seen.as_ref().is_some_and(|(b, _)| b.is_empty()) {
            return;
        }
        *seen = Some((Vec::new(), String::new()));
        self.metrics.reload_errors.inc();
        tracing::error!(error = %err, "pipeline config unavailable; keeping the previous version");
    }

    /// Polls for changes forever (spawn it).
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let source = self.clone();
            // File reads are blocking; keep them off the call tasks' threads.
            let _ = tokio::task::spawn_blocking(move || source.reload()).await;
        }
    }
}

/// The key file's content (trimmed: keys never contain whitespace), else the env value, else
/// empty (local OpenAI-compatible servers need none).
fn read_api_key(file: &Path, env_value: Option<&str>) -> String {
    match std::fs::read_to_string(file) {
        Ok(key) => key.trim().to_owned(),
        Err(_) => env_value.unwrap_or_default().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"name":"p","generation":3,"spec":{"provider":{"baseUrl":"http://127.0.0.1:1/v1","apiKeySecretRef":{"name":"k"}},"greeting":"Hello."}}"#;

    fn source(dir: &Path) -> (PipelineSource, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let source = PipelineSource::new(
            dir.join("pipeline.json"),
            dir.join("api-key"),
            Some("env-key".into()),
            ProviderHttp::new(None).unwrap(),
            metrics.clone(),
        );
        (source, metrics)
    }

    #[test]
    fn parses_the_operator_contract() {
        let config = parse_pipeline(GOOD.as_bytes()).unwrap();
        assert_eq!(config.name, "p");
        assert_eq!(config.generation, 3);
        assert_eq!(config.spec.greeting.as_deref(), Some("Hello."));
        assert_eq!(config.spec.turn_detection.silence_ms, 600);
        assert!(parse_pipeline(b"{}").is_err());
    }

    #[test]
    fn reload_swaps_versions_and_keeps_the_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (source, metrics) = source(dir.path());
        assert!(!source.reload());
        assert!(source.current().is_none());
        assert_eq!(metrics.reload_errors.get(), 1);
        assert!(!source.reload(), "missing file counted once");
        assert_eq!(metrics.reload_errors.get(), 1);

        std::fs::write(dir.path().join("pipeline.json"), GOOD).unwrap();
        assert!(source.reload());
        let first = source.current().unwrap();
        assert_eq!(first.config.generation, 3);
        assert!(!source.reload(), "unchanged file is not reloaded");

        std::fs::write(dir.path().join("pipeline.json"), "{broken").unwrap();
        assert!(!source.reload());
        assert_eq!(metrics.reload_errors.get(), 2);
        assert!(!source.reload(), "bad file counted once");
        assert_eq!(metrics.reload_errors.get(), 2);
        assert_eq!(source.current().unwrap().config.generation, 3);

        std::fs::write(
            dir.path().join("pipeline.json"),
            GOOD.replace("\"generation\":3", "\"generation\":4"),
        )
        .unwrap();
        assert!(source.reload());
        assert_eq!(source.current().unwrap().config.generation, 4);
        // The call that took the first version still has it.
        assert_eq!(first.config.generation, 3);
    }

    #[test]
    fn a_ca_bundle_gets_its_own_pools_kept_while_the_bundle_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _) = source(dir.path());
        let with_bundle = |generation: u32, ca: &str| {
            let mut config: serde_json::Value = serde_json::from_str(GOOD).unwrap();
            config["generation"] = generation.into();
            config["spec"]["provider"]["caBundle"] = ca.into();
            std::fs::write(dir.path().join("pipeline.json"), config.to_string()).unwrap();
            assert!(source.reload(), "generation {generation} loads");
            source.current().unwrap()
        };
        let first_ca = callfleet_tests::tls::TestPki::generate().unwrap().ca_pem;
        let v1 = with_bundle(1, &first_ca);
        assert!(
            !v1.http.same_pools(&source.http),
            "a bundle gets its own pools"
        );
        let v2 = with_bundle(2, &first_ca);
        assert!(v2.http.same_pools(&v1.http), "same bundle, same pools");
        let second_ca = callfleet_tests::tls::TestPki::generate().unwrap().ca_pem;
        let v3 = with_bundle(3, &second_ca);
        assert!(!v3.http.same_pools(&v2.http), "another bundle, new pools");
        std::fs::write(dir.path().join("pipeline.json"), GOOD).unwrap();
        assert!(source.reload());
        assert!(source.current().unwrap().http.same_pools(&source.http));
    }

    #[test]
    fn api_key_file_wins_over_env() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_api_key(&dir.path().join("none"), Some("env")), "env");
        std::fs::write(dir.path().join("k"), "sk-file\n").unwrap();
        assert_eq!(read_api_key(&dir.path().join("k"), Some("env")), "sk-file");
    }
}
