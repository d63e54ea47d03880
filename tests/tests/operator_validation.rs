//! Invalid CallCluster and AiPipeline specs are rejected by the API server at apply time, with
//! messages that say what is wrong (schema types, ranges, enums and CEL rules from the CRD).

mod operator_support;

use anyhow::{Result, ensure};
use operator_support::*;

const PIPELINE: &str = "pipelineRef: {name: assistant}";

fn call_cluster(spec: &str) -> String {
    format!(
        "apiVersion: callfleet.dev/v1alpha1\nkind: CallCluster\nmetadata: {{name: bad}}\nspec:\n{spec}\n"
    )
}

#[tokio::test]
async fn invalid_specs_are_rejected_with_clear_messages() -> Result<()> {
    let (cluster, ns) = namespace("op-invalid").await?;
    let cases = [
        (
            "workers.minReplicas > workers.maxReplicas",
            format!("  {PIPELINE}\n  workers: {{minReplicas: 5, maxReplicas: 2}}"),
            "minReplicas must be less than or equal to workers.maxReplicas",
        ),
        (
            "RTP range start after end",
            format!("  {PIPELINE}\n  media: {{rtpPortRange: {{start: 30000, end: 20000}}}}"),
            "rtpPortRange.start must be less than rtpPortRange.end",
        ),
        (
            "odd RTP start port",
            format!("  {PIPELINE}\n  media: {{rtpPortRange: {{start: 20001, end: 30000}}}}"),
            "rtpPortRange.start must be even",
        ),
        (
            "port out of range",
            format!("  {PIPELINE}\n  media: {{rtpPortRange: {{start: 80, end: 30000}}}}"),
            "spec.media.rtpPortRange.start",
        ),
        (
            "unknown dispatch algorithm",
            format!("  {PIPELINE}\n  sip: {{dispatchAlgorithm: leastBusy}}"),
            "spec.sip.dispatchAlgorithm: Unsupported value: \"leastBusy\"",
        ),
        (
            "negative load-shedding threshold",
            format!("  {PIPELINE}\n  workers: {{overloadLagMs: -1}}"),
            "spec.workers.overloadLagMs",
        ),
        (
            "event batching longer than a frame",
            format!("  {PIPELINE}\n  workers: {{eventBatchMicros: 30000}}"),
            "spec.workers.eventBatchMicros: Invalid value: 30000: spec.workers.eventBatchMicros in body should be less than or equal to 20000",
        ),
        (
            "missing pipelineRef",
            "  workers: {minReplicas: 1}".to_owned(),
            "spec.pipelineRef: Required value",
        ),
    ];
    let mut failures = Vec::new();
    for (what, spec, expected) in &cases {
        match kubectl_apply(cluster, &ns, &call_cluster(spec)) {
            Ok(out) => failures.push(format!("{what}: accepted ({})", out.trim())),
            Err(e) if e.to_string().contains(expected) => {}
            Err(e) => failures.push(format!("{what}: expected {expected:?} in: {e}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));

    // The same CallCluster with valid values is accepted.
    kubectl_apply(
        cluster,
        &ns,
        &call_cluster(&format!(
            "  {PIPELINE}\n  workers: {{minReplicas: 2, maxReplicas: 5, eventBatchMicros: 1000}}"
        )),
    )?;
    Ok(())
}

#[tokio::test]
async fn an_ai_pipeline_ca_bundle_must_hold_pem_certificates() -> Result<()> {
    let (cluster, ns) = namespace("op-invalid-ca").await?;
    let pipeline = |ca_bundle: &str| {
        let indented = ca_bundle.trim_end().replace('\n', "\n      ");
        format!(
            "apiVersion: callfleet.dev/v1alpha1\nkind: AiPipeline\nmetadata: {{name: private}}\nspec:\n  provider:\n    baseUrl: https://llm.internal.example/v1\n    apiKeySecretRef: {{name: llm-key}}\n    caBundle: |\n      {indented}\n"
        )
    };
    match kubectl_apply(cluster, &ns, &pipeline("not a certificate")) {
        Ok(out) => anyhow::bail!(
            "a caBundle without certificates was accepted: {}",
            out.trim()
        ),
        Err(e) => ensure!(
            e.to_string()
                .contains("provider.caBundle must hold PEM certificates"),
            "unexpected error: {e}"
        ),
    }
    let ca = callfleet_tests::tls::TestPki::generate()?.ca_pem;
    kubectl_apply(cluster, &ns, &pipeline(&ca))?;
    Ok(())
}

#[tokio::test]
async fn an_ai_pipeline_realtime_input_chunk_is_bounded() -> Result<()> {
    let (cluster, ns) = namespace("op-invalid-chunk").await?;
    let pipeline = |chunk_ms: i64| {
        format!(
            "apiVersion: callfleet.dev/v1alpha1\nkind: AiPipeline\nmetadata: {{name: rt}}\nspec:\n  provider:\n    apiKeySecretRef: {{name: llm-key}}\n  mode: realtime\n  realtime: {{inputChunkMs: {chunk_ms}}}\n"
        )
    };
    for bad in [5, 5_000] {
        match kubectl_apply(cluster, &ns, &pipeline(bad)) {
            Ok(out) => anyhow::bail!("inputChunkMs {bad} was accepted: {}", out.trim()),
            Err(e) => ensure!(
                e.to_string().contains("spec.realtime.inputChunkMs"),
                "unexpected error for {bad}: {e}"
            ),
        }
    }
    kubectl_apply(cluster, &ns, &pipeline(100))?;
    Ok(())
}

#[tokio::test]
async fn an_ai_pipeline_early_reply_must_come_before_the_end_of_the_turn() -> Result<()> {
    let (cluster, ns) = namespace("op-invalid-early").await?;
    let pipeline = |turn_detection: &str| {
        format!(
            "apiVersion: callfleet.dev/v1alpha1\nkind: AiPipeline\nmetadata: {{name: eager}}\nspec:\n  provider:\n    apiKeySecretRef: {{name: llm-key}}\n  turnDetection: {turn_detection}\n"
        )
    };
    for bad in [
        "{silenceMs: 600, earlyReplyMs: 600}",
        // Against the default silenceMs (600), applied before the rule is checked.
        "{earlyReplyMs: 800}",
    ] {
        match kubectl_apply(cluster, &ns, &pipeline(bad)) {
            Ok(out) => anyhow::bail!("{bad} was accepted: {}", out.trim()),
            Err(e) => ensure!(
                e.to_string().contains(
                    "turnDetection.earlyReplyMs must be shorter than turnDetection.silenceMs"
                ),
                "unexpected error for {bad}: {e}"
            ),
        }
    }
    for good in [
        "{silenceMs: 1000, earlyReplyMs: 250}",
        "{earlyReplyMs: 200}",
        "{earlyReplyMs: null}",
        "{silenceMs: 300}",
    ] {
        kubectl_apply(cluster, &ns, &pipeline(good))
            .map_err(|e| anyhow::anyhow!("{good} was refused: {e}"))?;
    }
    Ok(())
}
