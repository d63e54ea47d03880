//! Two operator replicas share a coordination.k8s.io Lease: one reconciles, the other stands by
//! and takes over when the leader dies (lease expiry) or shuts down (lease released).

mod operator_support;

use anyhow::{Context, Result, ensure};
use callfleet_crds::CallCluster;
use callfleet_tests::cluster::{TestNamespace, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use operator_support::*;

const LEASE: &str = "callfleet-operator";

fn leader_opts(identity: &str) -> OperatorOptions<'_> {
    OperatorOptions {
        identity,
        leader_election: true,
        ..OperatorOptions::default()
    }
}

async fn wait_holder(ns: &TestNamespace, identity: &str) -> Result<Lease> {
    eventually(&format!("lease held by {identity}"), CONVERGE, || async {
        let lease = ns.api::<Lease>().get_opt(LEASE).await?;
        let held = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            == Some(identity);
        Ok(if held { lease } else { None })
    })
    .await
}

fn metric(op: &Operator, line_prefix: &str) -> Result<String> {
    let (_, body) = op.http_get("/metrics")?;
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .map(str::to_owned)
        .with_context(|| format!("{line_prefix} not in /metrics"))
}

#[tokio::test]
async fn killed_leader_hands_over_to_the_standby() -> Result<()> {
    let (cluster, ns) = namespace("op-leader-kill").await?;
    let mut leader = Operator::start(cluster, &ns, leader_opts("replica-a"))?;
    wait_holder(&ns, "replica-a").await?;
    let standby = Operator::start(cluster, &ns, leader_opts("replica-b"))?;
    standby.wait_serving().await?;
    // The standby is healthy and ready (it serves probes) but does not reconcile.
    ensure!(
        standby.http_get("/readyz")?.0 == 200,
        "a standby must be ready"
    );
    ensure!(metric(&standby, "callfleet_operator_leader ")? == "callfleet_operator_leader 0");

    kubectl_apply(cluster, &ns, &sample("fleet", "assistant", "openai"))?;
    let ccs = ns.api::<CallCluster>();
    wait_condition(&ccs, "fleet", "Ready", "True", &leader).await?;

    leader.kill()?;
    let lease = wait_holder(&ns, "replica-b")
        .await
        .with_context(|| format!("standby log: {}", standby.log.display()))?;
    let transitions = lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    ensure!(
        transitions >= 1,
        "takeover must count a transition, got {transitions}"
    );

    // The new leader reconciles: a CallCluster created after the hand-over becomes Ready.
    kubectl_apply(cluster, &ns, &sample("second", "assistant", "openai"))?;
    wait_condition(&ccs, "second", "Ready", "True", &standby).await?;
    ensure!(metric(&standby, "callfleet_operator_leader ")? == "callfleet_operator_leader 1");
    Ok(())
}

#[tokio::test]
async fn graceful_shutdown_releases_the_lease_and_exits_zero() -> Result<()> {
    let (cluster, ns) = namespace("op-leader-term").await?;
    let mut leader = Operator::start(cluster, &ns, leader_opts("replica-a"))?;
    wait_holder(&ns, "replica-a").await?;
    leader.wait_serving().await?;
    let standby = Operator::start(cluster, &ns, leader_opts("replica-b"))?;
    standby.wait_serving().await?;

    let status = leader.terminate().await?;
    ensure!(
        status.success(),
        "SIGTERM must exit 0, got {status} (log: {})",
        leader.log.display()
    );
    let log = std::fs::read_to_string(&leader.log)?;
    ensure!(log.contains("released leader lease"), "leader log:\n{log}");
    wait_holder(&ns, "replica-b").await?;

    kubectl_apply(cluster, &ns, &sample("fleet", "assistant", "openai"))?;
    wait_condition(&ns.api::<CallCluster>(), "fleet", "Ready", "True", &standby).await?;
    Ok(())
}
