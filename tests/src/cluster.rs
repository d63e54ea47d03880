//! One real local control plane per test binary, one namespace per test.
//!
//! [`Cluster::shared`] reuses the cluster named by `CALLFLEET_TEST_KUBECONFIG` or `KUBECONFIG`
//! (how `.ci/run` shares one cluster across all test binaries); otherwise it starts a private
//! one with `tests/cluster/up` and arranges for `tests/cluster/down` to run when the test
//! process exits, whether the tests pass, fail or the process is killed. A watchdog process
//! does the teardown because Rust's test harness never runs destructors of statics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// A running control plane the tests talk to.
#[derive(Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    env: ClusterEnv,
}

/// Addresses of a cluster started by `tests/cluster/up` (read from its `env` file).
#[derive(Debug, Default, Clone)]
pub struct ClusterEnv {
    /// Network namespace the control plane runs in (`ip netns exec <netns> ...`).
    pub netns: Option<String>,
    /// Address of a dummy interface inside the namespace, usable as an Endpoints address.
    pub service_endpoint_ip: Option<String>,
    /// Host end of the veth pair: processes in the namespace reach the host here.
    pub host_ip: Option<String>,
}

static SHARED: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();

impl Cluster {
    /// The cluster for this test binary, started on first use.
    pub fn shared() -> Result<&'static Cluster> {
        SHARED
            .get_or_init(|| Cluster::reuse_or_start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("local control plane unavailable: {e}"))
    }

    fn reuse_or_start() -> Result<Cluster> {
        for var in ["CALLFLEET_TEST_KUBECONFIG", "KUBECONFIG"] {
            if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                let kubeconfig = PathBuf::from(path);
                let env = kubeconfig
                    .parent()
                    .map(|dir| ClusterEnv::read(&dir.join("env")))
                    .unwrap_or_default();
                return Ok(Cluster { kubeconfig, env });
            }
        }
        Cluster::start_private()
    }

    fn start_private() -> Result<Cluster> {
        let name = format!("t{}", std::process::id());
        let up = repo_root().join("tests/cluster/up");
        let down = repo_root().join("tests/cluster/down");
        // Arm the watchdog before starting, so a failing `up` is cleaned up too.
        Command::new("sh")
            .arg("-c")
            .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" "$3""#)
            .args(["watchdog", &std::process::id().to_string()])
            .arg(&down)
            .arg(&name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the cluster teardown watchdog")?;
        let out = Command::new(&up)
            .arg(&name)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", up.display()))?;
        if !out.status.success() {
            bail!("{} {name} failed ({})", up.display(), out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .map(PathBuf::from)
            .context("`up` did not print `export KUBECONFIG=...`")?;
        let env = kubeconfig
            .parent()
            .map(|dir| ClusterEnv::read(&dir.join("env")))
            .unwrap_or_default();
        Ok(Cluster { kubeconfig, env })
    }

    /// Path of the admin kubeconfig (for `kubectl --kubeconfig` and `helm --kubeconfig`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Addresses of the cluster's network namespace, when it was started by `up`.
    pub fn env(&self) -> &ClusterEnv {
        &self.env
    }

    /// A fresh client. Each test makes its own: clients are bound to the tokio runtime that
    /// created them, and every `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// A new namespace for one test, deleted when the returned guard drops (also on panic).
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let client = self.client().await?;
        let name = format!("{}-{:08x}", sanitize(prefix), rand::random::<u32>());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"callfleet.dev/test": "true"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace {
            name,
            client,
            kubeconfig: self.kubeconfig.clone(),
        })
    }

    /// A `kubectl` command bound to this cluster.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// A `helm` command bound to this cluster (helm is built by `tests/cluster/build`).
    pub fn helm(&self) -> Result<Command> {
        let mut cmd = Command::new(cluster_binary("helm")?);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        Ok(cmd)
    }
}

/// A test's own namespace; deleted (without waiting) on drop.
pub struct TestNamespace {
    name: String,
    client: Client,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client for the cluster (the one that created the namespace).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A namespaced typed API.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace now and waits until it is gone.
    pub async fn delete_and_wait(&self, timeout: Duration) -> Result<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        let _ = api.delete(&self.name, &DeleteParams::default()).await;
        let deadline = tokio::time::Instant::now() + timeout;
        while api.get_opt(&self.name).await?.is_some() {
            if tokio::time::Instant::now() > deadline {
                bail!("namespace {} still exists after {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Synchronous and non-blocking on the namespace controller: drop can't await, and
        // tests should not wait for cleanup they don't assert on.
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl ClusterEnv {
    fn read(path: &Path) -> ClusterEnv {
        let Ok(text) = std::fs::read_to_string(path) else {
            return ClusterEnv::default();
        };
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        ClusterEnv {
            netns: get("NETNS"),
            service_endpoint_ip: get("SERVICE_ENDPOINT_IP"),
            host_ip: get("HOST_IP"),
        }
    }
}

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of a binary built by `tests/cluster/build` (or supplied via `KUBEBUILDER_ASSETS`).
pub fn cluster_binary(name: &str) -> Result<PathBuf> {
    let out = Command::new(repo_root().join("tests/cluster/which"))
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/cluster/which")?;
    if !out.status.success() {
        bail!("cluster binary {name} not available");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Polls `check` until it returns `Some`, or fails with `what` after `timeout`.
/// Tests wait for convergence this way; the timeout is a failure bound, not a measurement.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            match last_err {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn sanitize(prefix: &str) -> String {
    let s: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    s.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_prefix_is_dns_safe() {
        assert_eq!(sanitize("Deployment_Scales"), "deployment-scales");
        assert_eq!(sanitize("--a--"), "a");
    }

    #[test]
    fn reads_cluster_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, "NETNS=callfleet-x\nSERVICE_ENDPOINT_IP=10.214.3.1\n").unwrap();
        let env = ClusterEnv::read(&path);
        assert_eq!(env.netns.as_deref(), Some("callfleet-x"));
        assert_eq!(env.service_endpoint_ip.as_deref(), Some("10.214.3.1"));
        assert_eq!(env.host_ip, None);
    }
}
