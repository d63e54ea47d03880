//! Proves the local control plane is a real Kubernetes: scheduling onto kwok nodes, garbage
//! collection, API-server validation, the machine's kubectl, helm, and the HPA controller.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use callfleet_tests::cluster::{Cluster, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(90);

fn deployment(name: &str, replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app", "image": "registry.invalid/app:1",
                    "resources": {"requests": {"cpu": "100m"}}
                }]}
            }
        }
    }))?)
}

async fn running_pods(api: &kube::Api<Pod>, app: &str) -> Result<Vec<Pod>> {
    let pods = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| {
            let status = p.status.as_ref();
            let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            running && ready
        })
        .collect())
}

#[tokio::test]
async fn deployment_gets_running_pods_on_kwok_nodes() -> Result<()> {
    let ns = Cluster::shared()?.namespace("deploy").await?;
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment("web", 2)?)
        .await?;
    let pods = ns.api::<Pod>();
    let running = eventually("2 Running pods", CONVERGE, || async {
        let pods = running_pods(&pods, "web").await?;
        Ok((pods.len() == 2).then_some(pods))
    })
    .await?;
    for pod in running {
        let node = pod
            .spec
            .and_then(|s| s.node_name)
            .context("pod has no node")?;
        ensure!(node.starts_with("kwok-node-"), "pod scheduled on {node}");
    }
    Ok(())
}

#[tokio::test]
async fn garbage_collector_removes_dependents_of_a_deleted_owner() -> Result<()> {
    let ns = Cluster::shared()?.namespace("gc").await?;
    let deployments = ns.api::<Deployment>();
    let created = deployments
        .create(&PostParams::default(), &deployment("owner", 1)?)
        .await?;
    let uid = created.metadata.uid.clone().context("no uid")?;
    let configs = ns.api::<ConfigMap>();
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "dependent", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "owner", "uid": uid
        }]},
        "data": {"k": "v"}
    }))?;
    configs.create(&PostParams::default(), &dependent).await?;
    let pods = ns.api::<Pod>();
    eventually("the owner's pod", CONVERGE, || async {
        Ok((running_pods(&pods, "owner").await?.len() == 1).then_some(()))
    })
    .await?;

    deployments
        .delete("owner", &DeleteParams::background())
        .await?;
    eventually("dependents deleted", CONVERGE, || async {
        let cm_gone = configs.get_opt("dependent").await?.is_none();
        let pods_gone = pods
            .list(&ListParams::default().labels("app=owner"))
            .await?
            .items
            .is_empty();
        Ok((cm_gone && pods_gone).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn api_server_rejects_an_invalid_object() -> Result<()> {
    let ns = Cluster::shared()?.namespace("invalid").await?;
    let mut bad = deployment("bad", 1)?;
    // Selector that does not match the template labels: rejected by apps/v1 validation.
    bad.spec.selector.match_labels = Some([("app".to_string(), "other".to_string())].into());
    let err = ns
        .api::<Deployment>()
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("an invalid Deployment must be rejected");
    let kube::Error::Api(status) = err else {
        anyhow::bail!("expected an API error, got {err}");
    };
    ensure!(
        status.code == 422,
        "expected 422 Unprocessable, got {}",
        status.code
    );
    ensure!(
        status.message.contains("selector") && status.message.contains("does not match"),
        "unexpected message: {}",
        status.message
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_and_helm_work_with_the_generated_kubeconfig() -> Result<()> {
    let cluster = Cluster::shared()?;
    let out = cluster
        .kubectl()
        .args(["get", "nodes", "-o", "name"])
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = String::from_utf8_lossy(&out.stdout);
    ensure!(
        nodes
            .lines()
            .filter(|l| l.starts_with("node/kwok-node-"))
            .count()
            == 3,
        "{nodes}"
    );

    let out = cluster.helm()?.args(["version", "--short"]).output()?;
    ensure!(
        out.status.success(),
        "helm version failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(String::from_utf8_lossy(&out.stdout).starts_with("v3."));

    // helm talks to the API server too: listing releases needs a working kubeconfig.
    let out = cluster.helm()?.args(["list", "-A"]).output()?;
    ensure!(
        out.status.success(),
        "helm list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn hpa_controller_writes_status_conditions() -> Result<()> {
    let ns = Cluster::shared()?.namespace("hpa").await?;
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment("scaled", 1)?)
        .await?;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "scaled"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}
            }}]
        }
    }))?;
    let api = ns.api::<HorizontalPodAutoscaler>();
    api.create(&PostParams::default(), &hpa).await?;
    let conditions = eventually("HPA status conditions", CONVERGE, || async {
        let hpa = api.get("scaled").await?;
        let conditions = hpa.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok((!conditions.is_empty()).then_some(conditions))
    })
    .await?;
    // No metrics server runs here, so the controller reports it cannot compute a scale;
    // what matters is that the real controller evaluated the object.
    ensure!(
        conditions.iter().any(|c| c.type_ == "AbleToScale"),
        "conditions: {conditions:?}"
    );
    Ok(())
}
