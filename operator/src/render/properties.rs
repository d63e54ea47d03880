//! Property tests for rendering: any CallCluster whose fields have the schema's types (bounds,
//! patterns and cross-field rules ignored, as for an object stored before a schema change or
//! rendered offline with `render -f`) renders or is refused with a [`RenderError`], never a
//! panic; what renders is deterministic, serializable, owned by the CallCluster and named as
//! Kubernetes requires.
//!
//! Specs are generated from the CRD's own OpenAPI schema, so a field added to the types is
//! covered without touching this file.

use std::net::{IpAddr, Ipv4Addr};

use callfleet_crds::pipeline_config::PIPELINE_CONFIG_KEY;
use callfleet_crds::{AiPipeline, CallCluster, PipelineConfig};
use kube::CustomResourceExt;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::common::Context;
use super::fixtures::{self, NAMESPACE, UID, pipeline};
use super::{Destination, RenderInputs, render_call_cluster};

/// A custom resource's `spec` schema.
fn spec_schema<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).expect("CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// A value of `schema`'s type: objects get a random subset of their properties (required ones
/// always), maps a few entries, strings sometimes valid-looking and sometimes not, numbers
/// anywhere from negative to huge.
fn value_for(schema: &Value, rng: &mut StdRng, depth: usize) -> Value {
    if let Some(options) = schema["enum"].as_array()
        && !options.is_empty()
    {
        return options[rng.random_range(0..options.len())].clone();
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return match rng.random_range(0..4) {
            0 => json!(rng.random_range(-5i64..5_000)),
            1 => json!(["100m", "2", "512Mi", "1Gi", "0.5"][rng.random_range(0..5)]),
            2 => json!(format!("{}%", rng.random_range(0..200))),
            _ => json!(junk(rng)),
        };
    }
    match schema["type"].as_str() {
        Some("object") => object_for(schema, rng, depth),
        Some("array") => {
            let n = if depth > 6 { 0 } else { rng.random_range(0..3) };
            Value::Array(
                (0..n)
                    .map(|_| value_for(&schema["items"], rng, depth + 1))
                    .collect(),
            )
        }
        Some("string") => json!(string(rng)),
        Some("integer") => json!(integer(rng)),
        Some("number") => json!(integer(rng) as f64 / 10.0),
        Some("boolean") => json!(rng.random_bool(0.5)),
        // Untyped (free-form) fields: a small object.
        _ => json!({"k": string(rng)}),
    }
}

fn object_for(schema: &Value, rng: &mut StdRng, depth: usize) -> Value {
    let mut out = Map::new();
    if let Some(properties) = schema["properties"].as_object() {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, property) in properties {
            if required.contains(&name.as_str()) || (depth < 6 && rng.random_bool(0.5)) {
                out.insert(name.clone(), value_for(property, rng, depth + 1));
            }
        }
    } else if schema["additionalProperties"].is_object() {
        for _ in 0..rng.random_range(0..3) {
            let value = value_for(&schema["additionalProperties"], rng, depth + 1);
            out.insert(
                ["cpu", "memory", "app", string(rng).as_str()][rng.random_range(0..4)].to_owned(),
                value,
            );
        }
    }
    Value::Object(out)
}

fn integer(rng: &mut StdRng) -> i64 {
    match rng.random_range(0..5) {
        0 => rng.random_range(-3..3),
        1 => rng.random_range(0..70_000),
        2 => i64::from(i32::MAX) + rng.random_range(-1..2),
        3 => rng.random_range(1..20),
        _ => rng.random_range(-100_000..100_000),
    }
}

fn string(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => "support".into(),
        1 => format!("name-{}", rng.random_range(0..1000)),
        2 => String::new(),
        _ => junk(rng),
    }
}

/// Characters Kubernetes names and config files do not expect.
fn junk(rng: &mut StdRng) -> String {
    const PIECES: [&str; 10] = ["a", "Z", "-", ".", " ", "\"", "<", "\n", "é", "${x}"];
    (0..rng.random_range(0..80))
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect()
}

/// A CallCluster named `name` with a generated spec, if it deserializes (a value the types
/// cannot hold is refused by the API server before any operator sees it).
fn call_cluster(name: &str, seed: u64) -> Option<CallCluster> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut spec = value_for(&spec_schema::<CallCluster>(), &mut rng, 0);
    spec["pipelineRef"] = json!({"name": "support-pipeline"});
    serde_json::from_value(json!({
        "apiVersion": "callfleet.dev/v1alpha1",
        "kind": "CallCluster",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": spec,
    }))
    .ok()
}

/// A DNS-1035 label: what a Service name must be (and the strictest rule a child name meets).
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_typed_spec_renders_or_is_refused_never_panics(
        seed in any::<u64>(),
        name in prop_oneof![4 => "[a-z][a-z0-9-]{0,30}[a-z0-9]", 1 => "[a-z0-9-]{0,70}"],
        pods in 0usize..4,
    ) {
        let Some(cc) = call_cluster(&name, seed) else {
            return Ok(());
        };
        let pipeline = pipeline(1, "Be brief.");
        let destinations: Vec<Destination> = (0..pods)
            .map(|i| {
                let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1));
                Destination::for_media_pod(&cc.spec.media, format!("{name}-media-{i}"), ip)
            })
            .collect();
        let token = [7u8; 32];
        let inputs = RenderInputs {
            pipeline: Some(&pipeline),
            new_token_secret: Some(&token),
            dispatcher_destinations: &destinations,
        };
        let Ok(children) = render_call_cluster(&cc, &inputs) else {
            return Ok(());
        };
        prop_assert_eq!(
            &render_call_cluster(&cc, &inputs).expect("renders again"),
            &children,
            "rendering is a pure function"
        );
        for child in &children {
            let object = child.to_apply_object().expect("every child serializes");
            prop_assert!(is_dns_label(&object.name), "child name {:?}", object.name);
            let owner = &object.value["metadata"]["ownerReferences"][0];
            prop_assert_eq!(owner["uid"].as_str(), Some(UID));
            prop_assert_eq!(owner["controller"].as_bool(), Some(true));
            prop_assert_eq!(object.value["metadata"]["namespace"].as_str(), Some(NAMESPACE));
        }
    }
}

/// An AiPipeline with a generated spec, if it deserializes.
fn ai_pipeline(seed: u64) -> Option<AiPipeline> {
    let mut rng = StdRng::seed_from_u64(seed);
    let spec = value_for(&spec_schema::<AiPipeline>(), &mut rng, 0);
    serde_json::from_value(json!({
        "apiVersion": "callfleet.dev/v1alpha1",
        "kind": "AiPipeline",
        "metadata": {"name": "support-pipeline", "namespace": NAMESPACE, "generation": 4},
        "spec": spec,
    }))
    .ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The pipeline ConfigMap is the operator-to-worker contract: whatever AiPipeline the
    /// types hold, the worker reads back exactly the spec the operator wrote.
    #[test]
    fn any_typed_pipeline_reaches_workers_unchanged(seed in any::<u64>()) {
        let Some(pipeline) = ai_pipeline(seed) else {
            return Ok(());
        };
        let cc = fixtures::call_cluster(json!({}));
        let ctx = Context::new(&cc).expect("fixture context");
        let config_map = super::pipeline::config_map(&ctx, &pipeline).expect("renders");
        let data = config_map.data.expect("data");
        let read: PipelineConfig =
            serde_json::from_str(&data[PIPELINE_CONFIG_KEY]).expect("workers parse it");
        prop_assert_eq!(read.spec, pipeline.spec);
        prop_assert_eq!(read.generation, 4);
    }
}
