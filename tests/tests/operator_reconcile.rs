//! The operator binary against the real control plane: samples become a Ready fleet of owned
//! children, spec edits converge, deletion garbage-collects, missing Secrets degrade the fleet
//! with a message naming them, and `paused` leaves children alone.

mod operator_support;

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use callfleet_crds::{AiPipeline, CallCluster};
use callfleet_tests::cluster::eventually;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use operator_support::*;
use serde_json::json;

/// `Kind/name` of every object labelled as belonging to CallCluster `cc`, with its controller
/// owner's UID.
async fn children(
    ns: &callfleet_tests::cluster::TestNamespace,
    cc: &str,
) -> Result<Vec<(String, Option<String>)>> {
    let lp = ListParams::default().labels(&format!("callfleet.dev/callcluster={cc}"));
    let mut out = Vec::new();
    macro_rules! collect {
        ($kind:ty) => {
            for o in ns.api::<$kind>().list(&lp).await?.items {
                let owner = o
                    .meta()
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|r| r.controller == Some(true) && r.kind == "CallCluster" && r.name == cc)
                    .map(|r| r.uid.clone());
                out.push((
                    format!(
                        "{}/{}",
                        <$kind>::kind(&()),
                        o.meta().name.clone().unwrap_or_default()
                    ),
                    owner,
                ));
            }
        };
    }
    collect!(Deployment);
    collect!(StatefulSet);
    collect!(Service);
    collect!(ConfigMap);
    collect!(Secret);
    collect!(HorizontalPodAutoscaler);
    collect!(PodDisruptionBudget);
    out.sort();
    Ok(out)
}

fn expected_children(cc: &str) -> BTreeSet<String> {
    [
        format!("ConfigMap/{cc}-pipeline"),
        format!("ConfigMap/{cc}-media-config"),
        format!("ConfigMap/{cc}-sip-config"),
        format!("Secret/{cc}-call-token"),
        format!("Service/{cc}-worker"),
        format!("Service/{cc}-media"),
        format!("Service/{cc}-sip"),
        format!("Deployment/{cc}-worker"),
        format!("Deployment/{cc}-sip"),
        format!("StatefulSet/{cc}-media"),
        format!("HorizontalPodAutoscaler/{cc}-worker"),
        format!("PodDisruptionBudget/{cc}-worker"),
        format!("PodDisruptionBudget/{cc}-media"),
    ]
    .into()
}

fn ready_and_running(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn samples_become_a_ready_fleet_of_owned_children() -> Result<()> {
    let (cluster, ns) = namespace("op-ready").await?;
    let op = Operator::start(cluster, &ns, OperatorOptions::default())?;
    op.wait_serving().await?;
    kubectl_apply(cluster, &ns, &sample("fleet", "assistant", "openai"))?;

    let ccs = ns.api::<CallCluster>();
    wait_condition(&ccs, "fleet", "Ready", "True", &op).await?;
    let cc = wait_settled(&ccs, "fleet", &op).await?;
    let uid = cc.metadata.uid.clone().context("no uid")?;

    // Every child exists, controlled by the CallCluster.
    let found = children(&ns, "fleet").await?;
    let names: BTreeSet<String> = found.iter().map(|(n, _)| n.clone()).collect();
    ensure!(names == expected_children("fleet"), "children: {names:?}");
    for (name, owner) in &found {
        ensure!(
            owner.as_deref() == Some(uid.as_str()),
            "{name} is not controlled by the CallCluster"
        );
    }

    // Pods of every tier run (on kwok nodes).
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("callfleet.dev/callcluster=fleet"))
        .await?;
    for component in ["worker", "media", "sip"] {
        let running = pods
            .items
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/component"))
                    .map(String::as_str)
                    == Some(component)
            })
            .filter(|p| ready_and_running(p))
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| n.starts_with("kwok-node-"))
            })
            .count();
        ensure!(running >= 1, "no Running {component} pod");
    }

    // Status: the generated token Secret and the pipeline version in use.
    let status = cc.status.context("no status")?;
    ensure!(status.token_secret_name.as_deref() == Some("fleet-call-token"));
    ensure!(status.pipeline_generation == Some(1));

    // AiPipeline: Ready, used by the fleet.
    let pipeline = eventually("AiPipeline usedBy fleet", CONVERGE, || async {
        let p = ns.api::<AiPipeline>().get("assistant").await?;
        let used = p
            .status
            .as_ref()
            .is_some_and(|s| s.used_by == ["fleet"] && is_true(&s.conditions, "Ready"));
        Ok(used.then_some(p))
    })
    .await?;
    ensure!(pipeline.status.is_some());

    // Printer columns through the machine's kubectl.
    let table = kubectl(cluster, &ns, &["get", "callclusters"])?;
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "READY",
        "WORKERS",
        "MEDIA",
        "SIP",
        "ACTIVE CALLS",
        "AGE",
    ] {
        ensure!(header.contains(column), "no {column} column in:\n{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("fleet "))
        .context("no fleet row")?;
    ensure!(
        row.contains("True") && row.contains("2/2") && row.contains("1/1"),
        "row: {row}"
    );
    let short = kubectl(cluster, &ns, &["get", "cc", "fleet"])?;
    ensure!(short.contains("fleet"), "short name cc: {short}");

    // Events tell a human what happened.
    wait_event(cluster, &ns, "CallCluster", &["Normal", "Created"]).await?;

    // Probes and metrics.
    ensure!(op.http_get("/healthz")?.0 == 200);
    ensure!(op.http_get("/readyz")?.0 == 200);
    let (code, metrics) = op.http_get("/metrics")?;
    ensure!(code == 200);
    for family in [
        "callfleet_operator_reconciles_total{kind=\"CallCluster\"}",
        "callfleet_operator_reconcile_duration_seconds_bucket",
        "callfleet_operator_leader 1",
    ] {
        ensure!(
            metrics.contains(family),
            "{family} missing from /metrics:\n{metrics}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn spec_and_pipeline_edits_converge_without_rolling_workers_for_pipeline_changes()
-> Result<()> {
    let (cluster, ns) = namespace("op-edit").await?;
    let op = Operator::start(cluster, &ns, OperatorOptions::default())?;
    kubectl_apply(cluster, &ns, &sample("fleet", "assistant", "openai"))?;
    let ccs = ns.api::<CallCluster>();
    wait_condition(&ccs, "fleet", "Ready", "True", &op).await?;
    let deployments = ns.api::<Deployment>();
    let template_before = deployments.get("fleet-worker").await?.spec.template;

    // An AiPipeline edit reaches the pipeline ConfigMap; the worker pod template stays as is.
    kubectl_apply(
        cluster,
        &ns,
        &pipeline_yaml("assistant", "openai", "gpt-4.1-mini"),
    )?;
    let configs = ns.api::<ConfigMap>();
    eventually(
        "pipeline ConfigMap with the new model",
        CONVERGE,
        || async {
            let cm = configs.get("fleet-pipeline").await?;
            let json = cm
                .data
                .and_then(|d| d.get("pipeline.json").cloned())
                .unwrap_or_default();
            Ok(json.contains("gpt-4.1-mini").then_some(()))
        },
    )
    .await?;
    let template_after = deployments.get("fleet-worker").await?.spec.template;
    ensure!(
        template_before == template_after,
        "a pipeline change must not roll workers"
    );

    // Spec edits: media replicas, worker image, another pipeline.
    kubectl_apply(
        cluster,
        &ns,
        &pipeline_yaml("concierge", "openai", "gpt-4o"),
    )?;
    let patch = json!({"spec": {
        "media": {"replicas": 3},
        "workers": {"image": "registry.example/callfleet:edited"},
        "pipelineRef": {"name": "concierge"},
    }});
    ccs.patch("fleet", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let statefulsets = ns.api::<StatefulSet>();
    eventually("children converge on the edited spec", CONVERGE, || async {
        let media = statefulsets.get("fleet-media").await?.spec.replicas;
        let image = deployments
            .get("fleet-worker")
            .await?
            .spec
            .template
            .spec
            .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
        let pipeline = configs
            .get("fleet-pipeline")
            .await?
            .data
            .and_then(|d| d.get("pipeline.json").cloned())
            .unwrap_or_default();
        let done = media == Some(3)
            && image.as_deref() == Some("registry.example/callfleet:edited")
            && pipeline.contains("\"concierge\"");
        Ok(done.then_some(()))
    })
    .await
    .with_context(|| format!("operator log: {}", op.log.display()))?;
    let cc = wait_condition(&ccs, "fleet", "Ready", "True", &op).await?;
    let status = cc.status.context("no status")?;
    ensure!(status.media.ready == "3/3", "media {:?}", status.media);
    let concierge = eventually("usedBy moves to the new pipeline", CONVERGE, || async {
        let old = ns.api::<AiPipeline>().get("assistant").await?;
        let new = ns.api::<AiPipeline>().get("concierge").await?;
        let moved = old.status.is_some_and(|s| s.used_by.is_empty())
            && new.status.as_ref().is_some_and(|s| s.used_by == ["fleet"]);
        Ok(moved.then_some(new))
    })
    .await?;
    ensure!(concierge.status.is_some());
    Ok(())
}

#[tokio::test]
async fn deleting_a_callcluster_garbage_collects_every_child() -> Result<()> {
    let (cluster, ns) = namespace("op-gc").await?;
    let op = Operator::start(cluster, &ns, OperatorOptions::default())?;
    kubectl_apply(cluster, &ns, &sample("fleet", "assistant", "openai"))?;
    let ccs = ns.api::<CallCluster>();
    wait_condition(&ccs, "fleet", "Ready", "True", &op).await?;
    ensure!(children(&ns, "fleet").await?.len() == expected_children("fleet").len());

    ccs.delete("fleet", &DeleteParams::background()).await?;
    eventually("children garbage-collected", CONVERGE, || async {
        let left = children(&ns, "fleet").await?;
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels("callfleet.dev/callcluster=fleet"))
            .await?;
        Ok((left.is_empty() && pods.items.is_empty()).then_some(()))
    })
    .await?;
    // The user's own objects stay.
    ensure!(ns.api::<Secret>().get_opt("openai").await?.is_some());
    ensure!(ns.api::<AiPipeline>().get_opt("assistant").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn missing_secrets_degrade_the_fleet_with_messages_naming_them() -> Result<()> {
    let (cluster, ns) = namespace("op-secret").await?;
    let op = Operator::start(cluster, &ns, OperatorOptions::default())?;
    // The pipeline's API-key Secret and the Redis URL Secret do not exist.
    let yaml = format!(
        "{}---\napiVersion: callfleet.dev/v1alpha1\nkind: CallCluster\nmetadata: {{name: fleet}}\nspec:\n  pipelineRef: {{name: assistant}}\n  redis: {{urlSecretRef: {{name: redis-url}}}}\n  media: {{replicas: 1}}\n  sip: {{replicas: 1, service: {{type: ClusterIP}}}}\n",
        pipeline_yaml("assistant", "provider-key", "gpt-4o-mini")
    );
    kubectl_apply(cluster, &ns, &yaml)?;
    let ccs = ns.api::<CallCluster>();
    let cc = wait_condition(&ccs, "fleet", "Degraded", "True", &op).await?;
    let degraded = condition(
        &cc.status.as_ref().context("no status")?.conditions,
        "Degraded",
    )
    .context("no Degraded")?
    .clone();
    ensure!(
        degraded.message.contains("provider-key"),
        "Degraded message: {}",
        degraded.message
    );
    ensure!(
        degraded.message.contains("redis-url"),
        "Degraded message: {}",
        degraded.message
    );
    ensure!(!is_true(
        &cc.status.context("no status")?.conditions,
        "Ready"
    ));
    let pipeline = eventually("AiPipeline not Ready", CONVERGE, || async {
        let p = ns.api::<AiPipeline>().get("assistant").await?;
        let not_ready = p
            .status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.status == "False");
        Ok(not_ready.then_some(p))
    })
    .await?;
    let ready = condition(&pipeline.status.context("no status")?.conditions, "Ready")
        .context("no Ready")?
        .clone();
    ensure!(
        ready.message.contains("provider-key"),
        "AiPipeline Ready message: {}",
        ready.message
    );
    wait_event(cluster, &ns, "CallCluster", &["Warning", "provider-key"]).await?;

    // Creating the Secrets heals the fleet without touching the CallCluster.
    kubectl_apply(
        cluster,
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: provider-key}\nstringData: {api-key: sk-test}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: redis-url}\nstringData: {url: 'redis://redis:6379'}\n",
    )?;
    wait_condition(&ccs, "fleet", "Ready", "True", &op).await?;
    let cc = wait_condition(&ccs, "fleet", "Degraded", "False", &op).await?;
    ensure!(cc.status.is_some());
    Ok(())
}

#[tokio::test]
async fn paused_callcluster_is_left_alone_until_resumed() -> Result<()> {
    let (cluster, ns) = namespace("op-pause").await?;
    let op = Operator::start(cluster, &ns, OperatorOptions::default())?;
    kubectl_apply(cluster, &ns, &sample("fleet", "assistant", "openai"))?;
    let ccs = ns.api::<CallCluster>();
    wait_condition(&ccs, "fleet", "Ready", "True", &op).await?;

    let patch = json!({"spec": {"paused": true, "media": {"replicas": 3}}});
    ccs.patch("fleet", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_condition(&ccs, "fleet", "ReconciliationPaused", "True", &op).await?;
    let statefulsets = ns.api::<StatefulSet>();
    let replicas = statefulsets.get("fleet-media").await?.spec.replicas;
    ensure!(
        replicas == Some(2),
        "a paused fleet's children must not change (media replicas {replicas:?})"
    );

    ccs.patch(
        "fleet",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": false}})),
    )
    .await?;
    wait_condition(&ccs, "fleet", "ReconciliationPaused", "False", &op).await?;
    eventually("media scaled to 3 after resume", CONVERGE, || async {
        let replicas = statefulsets.get("fleet-media").await?.spec.replicas;
        Ok((replicas == Some(3)).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleted_or_edited_children_are_restored() -> Result<()> {
    let (cluster, ns) = namespace("op-drift").await?;
    let op = Operator::start(cluster, &ns, OperatorOptions::default())?;
    kubectl_apply(cluster, &ns, &sample("fleet", "assistant", "openai"))?;
    let ccs = ns.api::<CallCluster>();
    wait_condition(&ccs, "fleet", "Ready", "True", &op).await?;

    let hpas = ns.api::<HorizontalPodAutoscaler>();
    let old_uid = hpas.get("fleet-worker").await?.metadata.uid;
    hpas.delete("fleet-worker", &DeleteParams::default())
        .await?;
    let statefulsets = ns.api::<StatefulSet>();
    let drift = json!({"spec": {"replicas": 5}});
    statefulsets
        .patch(
            "fleet-media",
            &PatchParams::default(),
            &Patch::Merge(&drift),
        )
        .await?;
    eventually(
        "deleted HPA recreated and drift undone",
        CONVERGE,
        || async {
            let hpa = hpas.get_opt("fleet-worker").await?;
            let recreated = hpa.is_some_and(|h| h.metadata.uid != old_uid);
            let replicas = statefulsets.get("fleet-media").await?.spec.replicas;
            Ok((recreated && replicas == Some(2)).then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log: {}", op.log.display()))?;
    Ok(())
}

/// Waits for the sample fleet to settle: Ready with every tier at its spec (the worker
/// Deployment starts at one replica until the autoscaler applies minReplicas) and both media
/// pods in the dispatcher list.
async fn wait_settled(ccs: &Api<CallCluster>, name: &str, op: &Operator) -> Result<CallCluster> {
    eventually("the fleet settled at its spec", CONVERGE, || async {
        let cc = ccs.get(name).await?;
        let settled = cc.status.as_ref().is_some_and(|s| {
            is_true(&s.conditions, "Ready")
                && s.workers.ready == "2/2"
                && s.media.ready == "2/2"
                && s.sip.ready == "1/1"
                && s.dispatcher_destinations.len() == 2
        });
        Ok(settled.then_some(cc))
    })
    .await
    .with_context(|| format!("operator log: {}", op.log.display()))
}

/// Sum of the operator's `callfleet_operator_applies_total` over child kinds, and the kinds.
fn applies(op: &Operator) -> Result<(u64, Vec<String>)> {
    let (_, body) = op.http_get("/metrics")?;
    let mut total = 0;
    let mut kinds = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("callfleet_operator_applies_total{") {
            let (labels, value) = rest.split_once("} ").context("malformed series")?;
            let value: u64 = value.trim().parse()?;
            if value > 0 {
                total += value;
                kinds.push(labels.to_owned());
            }
        }
    }
    Ok((total, kinds))
}

/// A restarted operator (an upgrade, a new leader) applies nothing that is as it would render
/// it: only what someone else changed while no operator was running.
#[tokio::test]
async fn a_restarted_operator_reapplies_only_what_changed_meanwhile() -> Result<()> {
    let (cluster, ns) = namespace("op-restart").await?;
    let mut first = Operator::start(cluster, &ns, OperatorOptions::default())?;
    kubectl_apply(cluster, &ns, &sample("fleet", "assistant", "openai"))?;
    let ccs = ns.api::<CallCluster>();
    wait_condition(&ccs, "fleet", "Ready", "True", &first).await?;
    // Only a settled first operator has rendered what the pods now are (a FreeSWITCH pod that
    // turned Ready after the CallCluster did changes the dispatcher list).
    wait_settled(&ccs, "fleet", &first).await?;
    let (applied, _) = applies(&first)?;
    ensure!(
        applied >= 13,
        "the first operator applied {applied} children"
    );
    first.kill()?;

    // While no operator runs, someone edits one child.
    let pdbs = ns.api::<PodDisruptionBudget>();
    pdbs.patch(
        "fleet-worker",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"edited-by": "someone"}}})),
    )
    .await?;

    let second = Operator::start(
        cluster,
        &ns,
        OperatorOptions {
            identity: "operator-1",
            ..OperatorOptions::default()
        },
    )?;
    second.wait_serving().await?;
    eventually("the new operator reconciled the CallCluster", CONVERGE, || async {
        let (_, body) = second.http_get("/metrics")?;
        Ok(body
            .lines()
            .any(|l| {
                l.strip_prefix(r#"callfleet_operator_reconcile_duration_seconds_count{kind="CallCluster"} "#)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .is_some_and(|n| n >= 1)
            })
            .then_some(()))
    })
    .await
    .with_context(|| format!("operator log: {}", second.log.display()))?;
    let (applied, kinds) = applies(&second)?;
    ensure!(
        applied == 1 && kinds == [r#"kind="PodDisruptionBudget""#],
        "the restarted operator should re-apply only the edited PodDisruptionBudget, applied {applied}: {kinds:?} (log: {})",
        second.log.display()
    );
    wait_condition(&ccs, "fleet", "Ready", "True", &second).await?;
    Ok(())
}
