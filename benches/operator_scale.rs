//! Benchmark (not a test): N CallClusters created at once against the real local control
//! plane, with the real operator binary running as a local process.
//!
//! Reports, per CallCluster, apply → all child objects exist (percentiles), the time until
//! every CallCluster has all children and until every one is Ready, and the operator's peak RSS.
//!
//! ```sh
//! cargo build --release -p callfleet-operator
//! cargo bench -p callfleet-tests --bench operator_scale -- 100 1000
//! cargo bench -p callfleet-tests --bench operator_scale -- seq:20   # 20 applies, one at a time
//! cargo bench -p callfleet-tests --bench operator_scale -- cold:1000 # then restart the operator
//! ```
//! `N` creates N CallClusters at once (a burst); `seq:N` creates N one after another, each
//! after the previous one has all its children (the latency of a single `kubectl apply`).
//! Uses the cluster named by `KUBECONFIG`, or starts a private one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use callfleet_crds::{AiPipeline, CallCluster};
use callfleet_tests::cluster::{Cluster, TestNamespace};
use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

const CHILD_KINDS: &[(&str, &str, &str)] = &[
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("", "v1", "Service"),
    ("", "v1", "ConfigMap"),
    ("", "v1", "Secret"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler"),
    ("policy", "v1", "PodDisruptionBudget"),
];
const LABEL: &str = "callfleet.dev/callcluster";
const BOUND: Duration = Duration::from_secs(600);

/// One watch observation, stamped when the watcher saw it (the bookkeeping may run later).
enum Seen {
    Child {
        cluster: String,
        key: String,
        at: Instant,
    },
    Ready {
        cluster: String,
        at: Instant,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut runs: Vec<(usize, Mode)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (mode, n) = match a.split_once(':') {
                Some(("seq", n)) => (Mode::Sequential, n),
                Some(("cold", n)) => (Mode::ColdRestart, n),
                _ => (Mode::Burst, a.as_str()),
            };
            n.parse().ok().map(|n| (n, mode))
        })
        .collect();
    if runs.is_empty() {
        runs.push((100, Mode::Burst));
    }
    let cluster = Cluster::shared()?;
    let client = cluster.client().await?;
    install_crds(&client).await?;
    let expected = expected_children()?;
    println!("children per CallCluster (from `callfleet-operator render`): {expected}");
    for (n, mode) in runs {
        run(cluster, n, expected, mode).await?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// N CallClusters created at once.
    Burst,
    /// N created one after another, each once the previous has all its children.
    Sequential,
    /// A burst, then the operator is killed and a fresh one started: how long until it has
    /// reconciled every CallCluster again (a restart, an upgrade, a new leader).
    ColdRestart,
}

async fn run(cluster: &Cluster, n: usize, expected: usize, mode: Mode) -> Result<()> {
    let sequential = mode == Mode::Sequential;
    let ns = cluster.namespace(&format!("bench-{n}")).await?;
    let client = ns.client();
    create_pipeline(&ns).await?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    for &(group, version, kind) in CHILD_KINDS {
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            ns.name(),
            &ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, version, kind)),
        );
        let tx = tx.clone();
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(LABEL);
            let mut stream = watcher(api, cfg).applied_objects().boxed();
            while let Ok(Some(obj)) = stream.try_next().await {
                let cluster = obj
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL))
                    .cloned();
                if let (Some(cluster), Some(name)) = (cluster, obj.metadata.name) {
                    let key = format!("{kind}/{name}");
                    if tx
                        .send(Seen::Child {
                            cluster,
                            key,
                            at: Instant::now(),
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
    }
    {
        let api = Api::<CallCluster>::namespaced(client.clone(), ns.name());
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Ok(Some(cc)) = stream.try_next().await {
                let ready = cc.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                if let (true, Some(name)) = (ready, cc.metadata.name)
                    && tx
                        .send(Seen::Ready {
                            cluster: name,
                            at: Instant::now(),
                        })
                        .is_err()
                {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut operator = start_operator(cluster, ns.name())?;
    // Let the operator start and sync its caches, so the measurement starts from a warm
    // operator with an empty namespace ("cold" = no CallCluster reconciled yet).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let api = Api::<CallCluster>::namespaced(client.clone(), ns.name());
    let mut progress = Progress::new(expected);
    let start = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("cc-{i:05}")).collect();
    if sequential {
        for name in &names {
            let at = Instant::now();
            api.create(&PostParams::default(), &call_cluster(name)?)
                .await?;
            progress.created_at.insert(name.clone(), at);
            while !progress.complete.contains_key(name) {
                let Ok(Some(seen)) = tokio::time::timeout(BOUND, rx.recv()).await else {
                    bail!("{name}: children did not appear within {BOUND:?}");
                };
                progress.record(seen);
            }
        }
    }
    let results: Vec<(String, Instant)> = futures::stream::iter(names.iter().cloned())
        .filter(|name| futures::future::ready(!progress.created_at.contains_key(name)))
        .map(|name| {
            let api = api.clone();
            async move {
                let cc = call_cluster(&name)?;
                let at = Instant::now();
                api.create(&PostParams::default(), &cc).await?;
                anyhow::Ok((name, at))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    progress.created_at.extend(results);
    let created_all = start.elapsed();

    let mut all_children_at = None;
    let deadline = tokio::time::Instant::now() + BOUND;
    while progress.ready.len() < n || progress.complete.len() < n {
        let seen = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(seen)) => seen,
            Ok(None) => bail!("watchers ended"),
            Err(_) => {
                eprintln!(
                    "bound of {BOUND:?} reached: {}/{n} complete, {}/{n} ready",
                    progress.complete.len(),
                    progress.ready.len()
                );
                break;
            }
        };
        progress.record(seen);
        if progress.complete.len() == n && all_children_at.is_none() {
            all_children_at = Some(start.elapsed());
        }
    }
    let all_ready_at = (progress.ready.len() == n).then(|| start.elapsed());
    let rss = peak_rss_kib(&operator).unwrap_or(0);
    let cpu = cpu_seconds(&operator).unwrap_or(0.0);
    let _ = operator.kill();
    let _ = operator.wait();
    let restart = if mode == Mode::ColdRestart && all_ready_at.is_some() {
        Some(cold_restart(cluster, ns.name(), n).await?)
    } else {
        None
    };

    let mut per: Vec<Duration> = progress.complete.values().copied().collect();
    per.sort();
    let mode = if sequential {
        "one at a time"
    } else {
        "at once"
    };
    println!("\n== N = {n} CallClusters created {mode}");
    println!("created all in {:.2?}", created_all);
    println!(
        "apply → all children exist: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(&per, 50.0),
        pct(&per, 90.0),
        pct(&per, 99.0),
        per.last()
    );
    println!("all {n} have every child: {all_children_at:?} after the first create");
    println!("all {n} Ready: {all_ready_at:?} after the first create");
    println!("operator peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    println!(
        "operator CPU: {cpu:.1} s in all ({:.1} ms per CallCluster, including its start-up)",
        cpu * 1000.0 / n as f64
    );
    if let Some(r) = restart {
        println!(
            "cold restart: a fresh operator reconciled all {n} in {:.2?} ({} reconciles, {} server-side applies and {} status patches reached the API server), peak RSS {:.1} MiB, CPU {:.1} s",
            r.reconciled_all,
            r.reconciles,
            r.applies,
            r.status_applies,
            r.rss_kib as f64 / 1024.0,
            r.cpu
        );
    }
    ns.delete_and_wait(Duration::from_secs(300)).await.ok();
    Ok(())
}

struct Restart {
    reconciled_all: Duration,
    reconciles: u64,
    applies: u64,
    status_applies: u64,
    rss_kib: u64,
    cpu: f64,
}

/// Starts a fresh operator over `n` existing, Ready CallClusters and waits until it has
/// finished a reconcile of each (its `reconcile_duration_seconds` count reaches `n`).
async fn cold_restart(cluster: &Cluster, namespace: &str, n: usize) -> Result<Restart> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (applies_before, status_before) = apiserver_applies(cluster)?;
    let start = Instant::now();
    let mut operator = start_operator_on(cluster, namespace, &format!("127.0.0.1:{port}"))?;
    let deadline = start + BOUND;
    let reconciled_all = loop {
        let done = operator_metric(
            port,
            r#"callfleet_operator_reconcile_duration_seconds_count{kind="CallCluster"}"#,
        )
        .await
        .unwrap_or(0.0);
        if done >= n as f64 {
            break start.elapsed();
        }
        if Instant::now() > deadline {
            bail!("the restarted operator reconciled {done} of {n} within {BOUND:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reconciles = operator_metric(
        port,
        r#"callfleet_operator_reconciles_total{kind="CallCluster"}"#,
    )
    .await
    .unwrap_or(0.0) as u64;
    let (applies_after, status_after) = apiserver_applies(cluster)?;
    let rss_kib = peak_rss_kib(&operator).unwrap_or(0);
    let cpu = cpu_seconds(&operator).unwrap_or(0.0);
    let _ = operator.kill();
    let _ = operator.wait();
    Ok(Restart {
        reconciled_all,
        reconciles,
        applies: applies_after.saturating_sub(applies_before),
        status_applies: status_after.saturating_sub(status_before),
        rss_kib,
        cpu,
    })
}

/// One sample of the operator's own `/metrics` (plain HTTP/1.0 on loopback).
async fn operator_metric(port: u16, series: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Server-side applies the API server has served so far: (to objects, to `status`).
fn apiserver_applies(cluster: &Cluster) -> Result<(u64, u64)> {
    let out = Command::new("kubectl")
        .args(["get", "--raw", "/metrics"])
        .env("KUBECONFIG", cluster.kubeconfig())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut objects, mut status) = (0.0, 0.0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains(r#"verb="APPLY""#))
    {
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if line.contains(r#"subresource="status""#) {
            status += count;
        } else {
            objects += count;
        }
    }
    Ok((objects as u64, status as u64))
}

/// Per-CallCluster bookkeeping: when it was created, which children have been seen, and
/// when it had all of them and when it became Ready (both relative to its creation).
struct Progress {
    expected: usize,
    created_at: HashMap<String, Instant>,
    children: HashMap<String, HashSet<String>>,
    complete: BTreeMap<String, Duration>,
    ready: BTreeMap<String, Duration>,
}

impl Progress {
    fn new(expected: usize) -> Self {
        Self {
            expected,
            created_at: HashMap::new(),
            children: HashMap::new(),
            complete: BTreeMap::new(),
            ready: BTreeMap::new(),
        }
    }

    /// Folds one watch observation in.
    fn record(&mut self, seen: Seen) {
        let (cluster, at, done) = match seen {
            Seen::Child { cluster, key, at } => {
                let set = self.children.entry(cluster.clone()).or_default();
                set.insert(key);
                let done = set.len() >= self.expected;
                (cluster, at, done.then_some(&mut self.complete))
            }
            Seen::Ready { cluster, at } => (cluster, at, Some(&mut self.ready)),
        };
        if let (Some(map), Some(t0)) = (done, self.created_at.get(&cluster)) {
            map.entry(cluster)
                .or_insert_with(|| at.saturating_duration_since(*t0));
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(idx).copied()
}

/// The benchmark's CallCluster. `BENCH_SIP_SERVICE_TYPE` (default: the CRD's default,
/// LoadBalancer) picks the SIP Service type: a LoadBalancer or NodePort Service costs the API
/// server two node-port allocations, which it serializes through one etcd object.
fn call_cluster(name: &str) -> Result<CallCluster> {
    let mut sip = json!({"replicas": 1});
    if let Ok(type_) = std::env::var("BENCH_SIP_SERVICE_TYPE") {
        sip["service"] = json!({"type": type_});
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "callfleet.dev/v1alpha1",
        "kind": "CallCluster",
        "metadata": {"name": name},
        "spec": {
            "pipelineRef": {"name": "bench"},
            "workers": {"minReplicas": 1, "maxReplicas": 4},
            "media": {"replicas": 1},
            "sip": sip
        }
    }))?)
}

fn pipeline_manifest() -> serde_json::Value {
    json!({
        "apiVersion": "callfleet.dev/v1alpha1",
        "kind": "AiPipeline",
        "metadata": {"name": "bench"},
        "spec": {"provider": {"apiKeySecretRef": {"name": "bench-openai"}}}
    })
}

async fn create_pipeline(ns: &TestNamespace) -> Result<()> {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "bench-openai"},
        "stringData": {"api-key": "sk-bench"}
    }))?;
    ns.api::<k8s_openapi::api::core::v1::Secret>()
        .create(&PostParams::default(), &secret)
        .await?;
    let pipeline: AiPipeline = serde_json::from_value(pipeline_manifest())?;
    ns.api::<AiPipeline>()
        .create(&PostParams::default(), &pipeline)
        .await?;
    Ok(())
}

async fn install_crds(client: &Client) -> Result<()> {
    let api = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(client.clone());
    let pp = PatchParams::apply("callfleet-bench").force();
    for crd in [CallCluster::crd(), AiPipeline::crd()] {
        let name = crd.metadata.name.clone().context("CRD without name")?;
        api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
    }
    // Established before anyone creates objects of the kinds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

fn release_dir() -> Result<PathBuf> {
    // target/release/deps/operator_scale-<hash> → target/release
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(|p| p.parent())
        .context("unexpected bench location")?
        .to_path_buf())
}

fn operator_bin() -> Result<PathBuf> {
    let bin = match std::env::var_os("CALLFLEET_OPERATOR_BIN") {
        Some(p) => PathBuf::from(p),
        None => release_dir()?.join("callfleet-operator"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p callfleet-operator` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// Children per CallCluster as the operator itself renders them (offline).
fn expected_children() -> Result<usize> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cc.yaml");
    // With its AiPipeline: without one the operator renders no worker tier.
    let doc = format!(
        "{}---\n{}",
        serde_yaml::to_string(&pipeline_manifest())?,
        serde_yaml::to_string(&call_cluster("probe")?)?
    );
    std::fs::write(&file, doc)?;
    let out = Command::new(operator_bin()?)
        .args(["render", "-f"])
        .arg(&file)
        .output()?;
    if !out.status.success() {
        bail!("render failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("kind: "))
        .filter(|l| {
            !matches!(
                l.trim_start_matches("kind: ").trim(),
                "CallCluster" | "AiPipeline"
            )
        })
        .count())
}

fn start_operator(cluster: &Cluster, namespace: &str) -> Result<Child> {
    start_operator_on(cluster, namespace, "127.0.0.1:0")
}

fn start_operator_on(cluster: &Cluster, namespace: &str, metrics_addr: &str) -> Result<Child> {
    Ok(Command::new(operator_bin()?)
        .args([
            "run",
            "--leader-election",
            "off",
            "--metrics-addr",
            metrics_addr,
        ])
        .args(["--namespace", namespace])
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// CPU time (user + system) the operator process has used, in seconds.
fn cpu_seconds(child: &Child) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

/// Peak resident set size (VmHWM) of the operator process, in KiB.
fn peak_rss_kib(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
