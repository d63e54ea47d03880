//! The CRDs shipped in the chart match the Rust types, and the schema says what the types say.

use std::path::PathBuf;

use callfleet_crds::callcluster::{
    AutoscalingMetric, DispatchAlgorithm, SipServiceType, SipTransport,
};
use callfleet_crds::crdgen::{CHART_CRD_DIR, crd_files};
use callfleet_crds::{AiPipeline, CallCluster, CallClusterSpec};
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn chart_crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CHART_CRD_DIR)
}

#[test]
fn checked_in_crds_are_fresh() {
    let files = crd_files().expect("CRDs serialize");
    assert_eq!(files.len(), 2);
    for (name, generated) in files {
        let path = chart_crd_dir().join(&name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is stale or missing: run `cargo run -p callfleet-crds --bin crdgen` and commit the result",
            path.display()
        );
    }
}

fn schema(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"].clone()
}

fn rules(schema: &Value) -> Vec<String> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["rule"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn call_cluster_crd_has_names_columns_and_status() {
    let crd = CallCluster::crd();
    assert_eq!(crd.spec.names.short_names, Some(vec!["cc".into()]));
    let version = &crd.spec.versions[0];
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for column in ["Ready", "Workers", "Media", "SIP", "Active calls", "Age"] {
        assert!(columns.contains(&column), "missing printer column {column}");
    }
    let ai = AiPipeline::crd();
    assert_eq!(ai.spec.names.short_names, Some(vec!["aip".into()]));
    assert!(
        ai.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );
}

#[test]
fn call_cluster_schema_validates_with_cel() {
    let root = schema(&CallCluster::crd());
    let spec = &root["properties"]["spec"]["properties"];
    assert!(rules(&spec["workers"]).contains(&"self.minReplicas <= self.maxReplicas".to_owned()));
    let range = &spec["media"]["properties"]["rtpPortRange"];
    assert!(rules(range).contains(&"self.start < self.end".to_owned()));
    assert!(rules(range).contains(&"self.start % 2 == 0".to_owned()));
    assert!(rules(&root)[0].contains("self.metadata.name"));
    assert_eq!(
        spec["sip"]["properties"]["dispatchAlgorithm"]["enum"],
        json!(["roundRobin", "weight", "callLoad", "hashCallId"])
    );
    assert_eq!(
        spec["workers"]["properties"]["autoscaling"]["properties"]["metric"]["enum"],
        json!(["activeCalls", "cpu", "external"])
    );
    assert_eq!(
        spec["workers"]["properties"]["maxCallsPerPod"]["default"],
        json!(10000)
    );
    assert_eq!(
        spec["limits"]["properties"]["requestsPerMinutePerIp"]["default"],
        json!(100)
    );
    assert_eq!(
        root["properties"]["spec"]["required"],
        json!(["pipelineRef"])
    );
}

/// Every property of the schema carries a description, so `kubectl explain` documents it.
#[test]
fn every_field_is_documented() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                if prop["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if schema["items"].is_object() {
            walk(&format!("{path}[]"), &schema["items"], missing);
        }
    }
    for (kind, root) in [
        ("CallCluster", schema(&CallCluster::crd())),
        ("AiPipeline", schema(&AiPipeline::crd())),
    ] {
        let mut missing = Vec::new();
        walk(kind, &root["properties"]["spec"], &mut missing);
        walk(kind, &root["properties"]["status"], &mut missing);
        assert!(missing.is_empty(), "undocumented fields: {missing:?}");
    }
}

/// What the API server fills in from the schema equals what serde fills in for the operator's
/// offline `render -f`, so both paths render the same objects.
#[test]
fn schema_defaults_match_serde_defaults() {
    let root = schema(&CallCluster::crd());
    let props = root["properties"]["spec"]["properties"]
        .as_object()
        .unwrap();
    let minimal: CallClusterSpec =
        serde_json::from_value(json!({"pipelineRef": {"name": "p"}})).unwrap();
    let minimal = serde_json::to_value(&minimal).unwrap();
    for (name, prop) in props {
        if let Some(default) = prop.get("default") {
            let mut from_schema = default.clone();
            apply_nested_defaults(prop, &mut from_schema);
            assert_eq!(
                from_schema, minimal[name],
                "schema default of spec.{name} differs from the serde default"
            );
        }
    }
}

/// The API server applies defaults of nested properties inside a defaulted object.
fn apply_nested_defaults(schema: &Value, value: &mut Value) {
    let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object_mut()) else {
        return;
    };
    for (name, prop) in props {
        if !obj.contains_key(name)
            && let Some(default) = prop.get("default")
        {
            obj.insert(name.clone(), default.clone());
        }
        if let Some(child) = obj.get_mut(name) {
            apply_nested_defaults(prop, child);
        }
    }
}

#[test]
fn minimal_spec_gets_documented_defaults() {
    let spec: CallClusterSpec =
        serde_json::from_value(json!({"pipelineRef": {"name": "support"}})).unwrap();
    assert_eq!(spec.workers.max_calls_per_pod, 10_000);
    assert_eq!(
        spec.workers.autoscaling.metric,
        AutoscalingMetric::ActiveCalls
    );
    assert_eq!(spec.limits.max_call_duration_seconds, 300);
    assert_eq!(spec.limits.requests_per_minute_per_ip, 100);
    assert_eq!(spec.sip.dispatch_algorithm, DispatchAlgorithm::RoundRobin);
    assert_eq!(spec.sip.service.type_, SipServiceType::LoadBalancer);
    assert_eq!(
        spec.sip.service.transports,
        vec![SipTransport::Udp, SipTransport::Tcp]
    );
    assert!(spec.media.rtp_port_range.start % 2 == 0);
    assert!(!spec.paused);
    assert!(spec.auth.token_secret_ref.is_none());
}

#[test]
fn unknown_enum_values_are_rejected_by_serde_too() {
    let bad = json!({"pipelineRef": {"name": "p"}, "sip": {"dispatchAlgorithm": "random"}});
    assert!(serde_json::from_value::<CallClusterSpec>(bad).is_err());
}
