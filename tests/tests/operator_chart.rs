//! `helm install` of the chart, then the operator binary run locally with the chart's
//! ServiceAccount credentials (the chart's pods are simulated by kwok and run nothing): the
//! chart's least-privilege RBAC must be enough to turn `config/samples` into a Ready fleet.

mod operator_support;

use std::process::Command;

use anyhow::{Context, Result, ensure};
use callfleet_crds::{AiPipeline, CallCluster};
use callfleet_tests::cluster::{Cluster, eventually, repo_root};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use operator_support::*;

/// `helm uninstall` on drop, so the cluster-scoped ClusterRole and binding go too.
struct Release {
    helm: Option<Command>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(mut helm) = self.helm.take() {
            let _ = helm.output();
        }
    }
}

/// A kubeconfig for the same cluster that authenticates with `token`.
fn token_kubeconfig(
    cluster: &Cluster,
    token: &str,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf> {
    let admin = std::fs::read_to_string(cluster.kubeconfig())?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin)?;
    config["users"] =
        serde_yaml::from_str(&format!("[{{name: operator, user: {{token: {token:?}}}}}]"))?;
    if let Some(contexts) = config["contexts"].as_sequence_mut() {
        for context in contexts {
            context["context"]["user"] = "operator".into();
        }
    }
    let path = dir.join("operator-kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

#[tokio::test]
async fn chart_installs_and_its_rbac_is_enough_to_reconcile_the_samples() -> Result<()> {
    let cluster = Cluster::shared()?;
    let ns = cluster.namespace("op-chart").await?;
    let release = ns.name().to_owned();
    let fullname = format!("{release}-callfleet");

    // CRDs may already exist, applied by other tests: the chart adopts them.
    let out = cluster
        .helm()?
        .args(["install", &release])
        .arg(repo_root().join("charts/callfleet"))
        .args([
            "-n",
            ns.name(),
            "--take-ownership",
            "--wait",
            "--timeout",
            "180s",
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "helm install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut uninstall = cluster.helm()?;
    uninstall.args(["uninstall", &release, "-n", ns.name(), "--wait"]);
    let _release = Release {
        helm: Some(uninstall),
    };

    // The chart's operator Deployment: two replicas, Running on kwok nodes.
    let deployments = ns.api::<Deployment>();
    eventually("chart operator Deployment 2/2 ready", CONVERGE, || async {
        let d = deployments.get(&fullname).await?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        Ok((ready == 2).then_some(()))
    })
    .await?;
    ensure!(
        ns.api::<ServiceAccount>()
            .get_opt(&fullname)
            .await?
            .is_some()
    );

    // The local operator, authenticated as the chart's ServiceAccount.
    let token = cluster
        .kubectl()
        .args([
            "create",
            "token",
            &fullname,
            "-n",
            ns.name(),
            "--duration",
            "2h",
        ])
        .output()?;
    ensure!(
        token.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let dir = tempfile::tempdir()?;
    let kubeconfig = token_kubeconfig(cluster, &token, dir.path())?;
    let op = Operator::start(
        cluster,
        &ns,
        OperatorOptions {
            identity: "local-operator",
            leader_election: true,
            kubeconfig: Some(&kubeconfig),
            ..OperatorOptions::default()
        },
    )?;

    let samples = cluster
        .kubectl()
        .args(["apply", "-n", ns.name(), "-f"])
        .arg(repo_root().join("config/samples"))
        .output()?;
    ensure!(
        samples.status.success(),
        "applying config/samples: {}",
        String::from_utf8_lossy(&samples.stderr)
    );

    let ccs = ns.api::<CallCluster>();
    let names: Vec<String> = ccs
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    ensure!(!names.is_empty(), "config/samples holds no CallCluster");
    for name in &names {
        wait_condition(&ccs, name, "Ready", "True", &op).await?;
    }
    for pipeline in ns
        .api::<AiPipeline>()
        .list(&Default::default())
        .await?
        .items
    {
        let name = pipeline
            .metadata
            .name
            .clone()
            .context("unnamed AiPipeline")?;
        eventually(&format!("AiPipeline {name} Ready"), CONVERGE, || async {
            let p = ns.api::<AiPipeline>().get(&name).await?;
            Ok(p.status
                .as_ref()
                .is_some_and(|s| is_true(&s.conditions, "Ready"))
                .then_some(()))
        })
        .await?;
    }
    let log = std::fs::read_to_string(&op.log)?;
    ensure!(
        !log.contains("forbidden"),
        "the chart's RBAC denied the operator something (log {}):\n{}",
        op.log.display(),
        log.lines()
            .filter(|l| l.contains("forbidden"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
