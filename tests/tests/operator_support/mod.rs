//! Shared by the `operator_*` tests: runs the real `callfleet-operator` binary as a local
//! process against the test cluster, installs the CRDs, and applies sample objects with the
//! machine's `kubectl`, the way a user would.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use callfleet_crds::{AiPipeline, CallCluster};
use callfleet_tests::cluster::{Cluster, TestNamespace, eventually};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};

/// Failure bound for convergence waits (not a measurement).
pub const CONVERGE: Duration = Duration::from_secs(90);

/// The operator binary built by `cargo build` next to this test binary (or
/// `CALLFLEET_OPERATOR_BIN`).
pub fn operator_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CALLFLEET_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    // target/<profile>/deps/<test>-<hash> → target/<profile>/callfleet-operator
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("unexpected test binary location")?
        .join("callfleet-operator");
    ensure!(
        bin.exists(),
        "{} not found: run `cargo build -p callfleet-operator` first",
        bin.display()
    );
    // A stale binary would test yesterday's operator.
    let built = std::fs::metadata(&bin)?.modified()?;
    let root = callfleet_tests::cluster::repo_root();
    for dir in ["operator/src", "crds/src"] {
        if let Some(newer) = newest_file(&root.join(dir))?.filter(|(t, _)| *t > built) {
            bail!(
                "{} is older than {}: run `cargo build -p callfleet-operator` first",
                bin.display(),
                newer.1.display()
            );
        }
    }
    Ok(bin)
}

fn newest_file(dir: &std::path::Path) -> Result<Option<(std::time::SystemTime, PathBuf)>> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let candidate = if entry.file_type()?.is_dir() {
            newest_file(&path)?
        } else {
            Some((entry.metadata()?.modified()?, path))
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.0 > n.0)
        {
            newest = Some(c);
        }
    }
    Ok(newest)
}

/// Server-side applies both CRDs (as generated from the Rust types, like the chart's) and
/// waits until they are served.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let pp = PatchParams::apply("callfleet-tests").force();
    for crd in [CallCluster::crd(), AiPipeline::crd()] {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
        eventually(&format!("CRD {name} established"), CONVERGE, || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await?;
                let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                Ok(established.then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}

/// A namespace with the CRDs installed.
pub async fn namespace(prefix: &str) -> Result<(&'static Cluster, TestNamespace)> {
    let cluster = Cluster::shared()?;
    let ns = cluster.namespace(prefix).await?;
    install_crds(&ns.client()).await?;
    Ok((cluster, ns))
}

/// One operator process, watching one namespace, killed on drop.
pub struct Operator {
    child: Child,
    pub identity: String,
    pub metrics_port: u16,
    pub log: PathBuf,
}

pub struct OperatorOptions<'a> {
    pub identity: &'a str,
    pub leader_election: bool,
    pub lease_duration: &'a str,
    pub renew_deadline: &'a str,
    pub retry_period: &'a str,
    /// Credentials other than the cluster admin's (e.g. a ServiceAccount token).
    pub kubeconfig: Option<&'a std::path::Path>,
}

impl Default for OperatorOptions<'_> {
    fn default() -> Self {
        Self {
            identity: "operator-0",
            leader_election: false,
            lease_duration: "15s",
            renew_deadline: "10s",
            retry_period: "2s",
            kubeconfig: None,
        }
    }
}

impl Operator {
    /// Starts the operator for `ns`; its Lease (if any) lives in `ns` too, so tests never
    /// contend with each other.
    pub fn start(cluster: &Cluster, ns: &TestNamespace, opts: OperatorOptions<'_>) -> Result<Self> {
        let metrics_port = free_port()?;
        // Kept after the test (named in failure messages), under the build's own tmp dir.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{}-{}.log", ns.name(), opts.identity));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(operator_bin()?)
            .arg("run")
            .args(["--namespace", ns.name()])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args([
                "--leader-election",
                if opts.leader_election { "on" } else { "off" },
            ])
            .args(["--lease-namespace", ns.name()])
            .args(["--identity", opts.identity])
            .args(["--lease-duration", opts.lease_duration])
            .args(["--renew-deadline", opts.renew_deadline])
            .args(["--retry-period", opts.retry_period])
            .args(["--log-format", "json"])
            .env(
                "KUBECONFIG",
                opts.kubeconfig.unwrap_or(cluster.kubeconfig()),
            )
            .env("RUST_LOG", "info,callfleet_operator=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting callfleet-operator")?;
        Ok(Self {
            child,
            identity: opts.identity.to_owned(),
            metrics_port,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the process to exit.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed");
        eventually("operator exit after SIGTERM", CONVERGE, || {
            let exited = self.child.try_wait();
            async move { Ok(exited?) }
        })
        .await
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// GET `path` on the probes/metrics server: `(status code, body)`.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status line")?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// Waits until the probes server answers `/healthz`.
    pub async fn wait_serving(&self) -> Result<()> {
        eventually("operator /healthz", CONVERGE, || async {
            Ok(self
                .http_get("/healthz")
                .ok()
                .filter(|(c, _)| *c == 200)
                .map(drop))
        })
        .await
        .with_context(|| format!("operator log: {}", self.log.display()))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `kubectl apply -n <ns> -f -` with `yaml` on stdin; returns stdout, fails with stderr.
pub fn kubectl_apply(cluster: &Cluster, ns: &TestNamespace, yaml: &str) -> Result<String> {
    let mut child = cluster
        .kubectl()
        .args(["apply", "-n", ns.name(), "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(yaml.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl <args> -n <ns>`; returns stdout.
pub fn kubectl(cluster: &Cluster, ns: &TestNamespace, args: &[&str]) -> Result<String> {
    let out = cluster
        .kubectl()
        .args(args)
        .args(["-n", ns.name()])
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A realistic fleet: the API-key Secret, an AiPipeline and a CallCluster (small replica
/// counts so kwok schedules them fast).
pub fn sample(name: &str, pipeline: &str, secret: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: {secret}}}
stringData: {{api-key: sk-test-not-a-real-key}}
---
{}
---
apiVersion: callfleet.dev/v1alpha1
kind: CallCluster
metadata: {{name: {name}}}
spec:
  pipelineRef: {{name: {pipeline}}}
  workers: {{minReplicas: 2, maxReplicas: 4}}
  media: {{replicas: 2, rtpPortRange: {{start: 20000, end: 20999}}, maxSessionsPerPod: 400}}
  sip: {{replicas: 1, service: {{type: ClusterIP}}}}
"#,
        pipeline_yaml(pipeline, secret, "gpt-4o-mini")
    )
}

pub fn pipeline_yaml(name: &str, secret: &str, model: &str) -> String {
    format!(
        r#"apiVersion: callfleet.dev/v1alpha1
kind: AiPipeline
metadata: {{name: {name}}}
spec:
  provider: {{baseUrl: "http://openai-standin.invalid/v1", apiKeySecretRef: {{name: {secret}}}}}
  mode: cascade
  llm: {{model: {model}, systemPrompt: "You answer the phone for a bakery."}}
  greeting: "Hello, how can I help?"
"#
    )
}

pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Waits until the CallCluster's condition `type_` has `status`, returning the CallCluster.
pub async fn wait_condition(
    api: &Api<CallCluster>,
    name: &str,
    type_: &str,
    status: &str,
    op: &Operator,
) -> Result<CallCluster> {
    eventually(
        &format!("CallCluster {name} {type_}={status}"),
        CONVERGE,
        || async {
            let cc = api.get(name).await?;
            let matches = cc.status.as_ref().is_some_and(|s| {
                condition(&s.conditions, type_).is_some_and(|c| c.status == status)
                    && s.observed_generation == cc.metadata.generation
            });
            Ok(matches.then_some(cc))
        },
    )
    .await
    .with_context(|| format!("operator log: {}", op.log.display()))
}

/// Waits until `kubectl get events` about objects of `kind` shows a line with every needle
/// (Events are published after the status write a test may have seen first).
pub async fn wait_event(
    cluster: &Cluster,
    ns: &TestNamespace,
    kind: &str,
    needles: &[&str],
) -> Result<String> {
    let selector = format!("involvedObject.kind={kind}");
    let mut last = String::new();
    eventually(&format!("an Event with {needles:?}"), CONVERGE, || {
        let out = kubectl(
            cluster,
            ns,
            &["get", "events", "--field-selector", &selector],
        );
        if let Ok(text) = &out {
            last.clone_from(text);
        }
        async move {
            let text = out?;
            Ok(text
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_owned))
        }
    })
    .await
    .with_context(|| format!("events:\n{last}"))
}
