//! Test fixtures: a CallCluster and an AiPipeline as the API server would hand them over.

use callfleet_crds::{AiPipeline, CallCluster};
use serde_json::{Value, json};

use super::{Child, RenderInputs, render_call_cluster};

pub const NAME: &str = "support";
pub const NAMESPACE: &str = "calls";
pub const UID: &str = "6f1c1c3e-0000-4000-8000-000000000001";

/// A CallCluster with `spec` merged over a minimal valid spec.
pub fn call_cluster(spec: Value) -> CallCluster {
    let mut full = json!({"pipelineRef": {"name": "support-pipeline"}});
    merge(&mut full, spec);
    serde_json::from_value(json!({
        "apiVersion": "callfleet.dev/v1alpha1",
        "kind": "CallCluster",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 3},
        "spec": full,
    }))
    .expect("fixture CallCluster deserializes")
}

/// An AiPipeline at `generation` with the given system prompt.
pub fn pipeline(generation: i64, prompt: &str) -> AiPipeline {
    serde_json::from_value(json!({
        "apiVersion": "callfleet.dev/v1alpha1",
        "kind": "AiPipeline",
        "metadata": {"name": "support-pipeline", "namespace": NAMESPACE, "generation": generation},
        "spec": {
            "provider": {"apiKeySecretRef": {"name": "openai", "key": "token"}},
            "llm": {"systemPrompt": prompt},
        },
    }))
    .expect("fixture AiPipeline deserializes")
}

/// Every child of `cc` with the default pipeline and no token bytes.
pub fn render(cc: &CallCluster) -> Vec<Child> {
    let pipeline = pipeline(7, "Be brief.");
    render_call_cluster(
        cc,
        &RenderInputs {
            pipeline: Some(&pipeline),
            ..Default::default()
        },
    )
    .expect("fixture renders")
}

/// The child of this kind and name.
pub fn find<'a>(children: &'a [Child], kind: &str, name: &str) -> &'a Child {
    children
        .iter()
        .find(|c| c.kind() == kind && c.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", kinds_and_names(children)))
}

pub fn kinds_and_names(children: &[Child]) -> Vec<(String, String)> {
    children
        .iter()
        .map(|c| (c.kind().to_owned(), c.name().to_owned()))
        .collect()
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// Tags open and close in order (a well-formedness check for rendered XML without an XML
/// parser dependency). Comments and the declaration are skipped.
pub fn xml_is_balanced(xml: &str) -> bool {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        let Some(end) = rest.find('>') else {
            return false;
        };
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(closing) = tag.strip_prefix('/') {
            if stack.pop() != Some(closing.trim()) {
                return false;
            }
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap_or_default());
        }
    }
    stack.is_empty()
}
