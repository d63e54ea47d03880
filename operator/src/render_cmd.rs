//! `callfleet-operator render -f <file>`: what the operator would create, offline, as YAML
//! documents (like `helm template`), so a change can be reviewed before it is applied.
//!
//! The file may hold CallClusters, AiPipelines and Secrets in any order; other kinds are listed
//! as ignored. Objects without a namespace are taken to be in `default`, as `kubectl apply`
//! would. Secrets in the file count as existing (their contents are never printed).

use std::fmt::Write as _;

use callfleet_crds::{AiPipeline, CallCluster};
use kube::ResourceExt;
use serde::Deserialize;

use crate::render::{Child, RenderError, RenderInputs, common::names, render_call_cluster};

/// Stands in for `metadata.uid` (needed by owner references) of objects not yet in a cluster.
const OFFLINE_UID: &str = "00000000-0000-0000-0000-000000000000";
const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum RenderCmdError {
    #[error("document {doc}: not valid YAML: {source}")]
    Yaml {
        doc: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {doc}: has no apiVersion or kind")]
    NotAnObject { doc: usize },
    #[error("document {doc}: invalid {kind}: {source}")]
    Invalid {
        doc: usize,
        kind: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("the file holds no CallCluster")]
    NoCallCluster,
    #[error("CallCluster {namespace}/{name}: {source}")]
    Render {
        namespace: String,
        name: String,
        #[source]
        source: RenderError,
    },
}

/// The objects of one file, namespaces filled in.
#[derive(Debug, Default)]
pub struct Manifests {
    pub call_clusters: Vec<CallCluster>,
    pub pipelines: Vec<AiPipeline>,
    /// `(namespace, name)` of each Secret.
    pub secrets: Vec<(String, String)>,
    /// `Kind name` of documents of other kinds.
    pub ignored: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: HeaderMeta,
}

#[derive(Deserialize, Default)]
struct HeaderMeta {
    name: Option<String>,
    namespace: Option<String>,
}

/// Pure: parses a multi-document YAML stream. Empty documents are skipped; documents are
/// numbered from 1 in errors.
pub fn parse_manifests(text: &str) -> Result<Manifests, RenderCmdError> {
    let mut out = Manifests::default();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|source| RenderCmdError::Yaml { doc, source })?;
        if value.is_null() {
            continue;
        }
        let header: Header = serde_yaml::from_value(value.clone())
            .map_err(|_| RenderCmdError::NotAnObject { doc })?;
        let (Some(api_version), Some(kind)) = (header.api_version, header.kind) else {
            return Err(RenderCmdError::NotAnObject { doc });
        };
        let namespace = header
            .metadata
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let group = api_version.split('/').next().unwrap_or_default();
        match (group, kind.as_str()) {
            ("callfleet.dev", "CallCluster") => {
                let mut cc: CallCluster =
                    serde_yaml::from_value(value).map_err(|source| RenderCmdError::Invalid {
                        doc,
                        kind: "CallCluster",
                        source,
                    })?;
                cc.metadata.namespace = Some(namespace);
                cc.metadata.uid.get_or_insert_with(|| OFFLINE_UID.into());
                cc.metadata.generation.get_or_insert(1);
                out.call_clusters.push(cc);
            }
            ("callfleet.dev", "AiPipeline") => {
                let mut p: AiPipeline =
                    serde_yaml::from_value(value).map_err(|source| RenderCmdError::Invalid {
                        doc,
                        kind: "AiPipeline",
                        source,
                    })?;
                p.metadata.namespace = Some(namespace);
                p.metadata.generation.get_or_insert(1);
                out.pipelines.push(p);
            }
            ("v1", "Secret") => {
                out.secrets
                    .push((namespace, header.metadata.name.unwrap_or_default()));
            }
            _ => out.ignored.push(format!(
                "{kind} {}",
                header.metadata.name.unwrap_or_default()
            )),
        }
    }
    Ok(out)
}

/// Renders every CallCluster in `text` to YAML documents.
pub fn render_manifests(text: &str) -> Result<String, RenderCmdError> {
    let manifests = parse_manifests(text)?;
    if manifests.call_clusters.is_empty() {
        return Err(RenderCmdError::NoCallCluster);
    }
    let mut out = String::new();
    for ignored in &manifests.ignored {
        let _ = writeln!(out, "# ignored (not rendered by the operator): {ignored}");
    }
    for cc in &manifests.call_clusters {
        render_one(&manifests, cc, &mut out)?;
    }
    Ok(out)
}

fn render_one(m: &Manifests, cc: &CallCluster, out: &mut String) -> Result<(), RenderCmdError> {
    let namespace = cc.namespace().unwrap_or_default();
    let name = cc.name_any();
    let fail = |source| RenderCmdError::Render {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    let has_secret = |secret: &str| {
        m.secrets
            .iter()
            .any(|(ns, n)| *ns == namespace && n == secret)
    };
    let pipeline = m.pipelines.iter().find(|p| {
        p.namespace().as_deref() == Some(namespace.as_str())
            && p.name_any() == cc.spec.pipeline_ref.name
    });
    // A placeholder: the real key is 32 random bytes generated at apply time and never shown.
    let token = [0u8; 32];
    let generate_token =
        cc.spec.auth.token_secret_ref.is_none() && !has_secret(&names::call_token(&name));
    let inputs = RenderInputs {
        pipeline,
        new_token_secret: generate_token.then_some(&token),
        dispatcher_destinations: &[],
    };
    let children = render_call_cluster(cc, &inputs).map_err(fail)?;

    let _ = writeln!(out, "# CallCluster {namespace}/{name}");
    if pipeline.is_none() {
        let _ = writeln!(
            out,
            "# warning: AiPipeline {:?} is not in the file: the operator would report Degraded and render no pipeline ConfigMap, worker Deployment or autoscaler",
            cc.spec.pipeline_ref.name
        );
    }
    for mut child in children {
        // As the operator applies it: with the rendered-hash annotation.
        if matches!(child, Child::Secret(_)) {
            child.annotate_rendered_hash(crate::render::GENERATED_TOKEN_HASH);
        } else {
            child.stamp_rendered_hash().map_err(fail)?;
        }
        let value = match child {
            Child::Secret(mut secret) => {
                secret.data = None;
                secret.string_data = Some(
                    [(
                        crate::render::token::TOKEN_SECRET_KEY.to_owned(),
                        "<32 random bytes, generated when applied>".to_owned(),
                    )]
                    .into(),
                );
                Child::Secret(secret).to_value()
            }
            other => other.to_value(),
        }
        .map_err(fail)?;
        out.push_str("---\n");
        // Serializing a serde_json::Value to YAML cannot fail.
        out.push_str(&serde_yaml::to_string(&value).unwrap_or_default());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: openai, namespace: calls}
stringData: {api-key: sk-test}
---
apiVersion: callfleet.dev/v1alpha1
kind: AiPipeline
metadata: {name: assistant, namespace: calls}
spec:
  provider: {apiKeySecretRef: {name: openai}}
---
# an empty document is fine
---
apiVersion: callfleet.dev/v1alpha1
kind: CallCluster
metadata: {name: fleet, namespace: calls}
spec:
  pipelineRef: {name: assistant}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
"#;

    #[test]
    fn parses_every_kind() {
        let m = parse_manifests(SAMPLE).unwrap();
        assert_eq!(m.call_clusters.len(), 1);
        assert_eq!(m.pipelines.len(), 1);
        assert_eq!(m.secrets, vec![("calls".to_owned(), "openai".to_owned())]);
        assert_eq!(m.ignored, vec!["ConfigMap unrelated"]);
        let cc = &m.call_clusters[0];
        assert_eq!(cc.metadata.uid.as_deref(), Some(OFFLINE_UID));
        assert_eq!(
            cc.spec.workers.min_replicas, 2,
            "schema defaults apply offline too"
        );
    }

    #[test]
    fn missing_namespace_is_default() {
        let m = parse_manifests(
            "apiVersion: callfleet.dev/v1alpha1\nkind: CallCluster\nmetadata: {name: fleet}\nspec: {pipelineRef: {name: p}}\n",
        )
        .unwrap();
        assert_eq!(m.call_clusters[0].namespace().as_deref(), Some("default"));
    }

    #[test]
    fn errors_name_the_document() {
        let bad_yaml = "apiVersion: v1\nkind: Secret\n---\nkey: [unclosed\n";
        let e = parse_manifests(bad_yaml).unwrap_err();
        assert!(matches!(e, RenderCmdError::Yaml { doc: 2, .. }), "{e}");

        let e = parse_manifests("just a string\n").unwrap_err();
        assert!(matches!(e, RenderCmdError::NotAnObject { doc: 1 }), "{e}");

        let missing_field = "apiVersion: callfleet.dev/v1alpha1\nkind: CallCluster\nmetadata: {name: fleet}\nspec: {}\n";
        let e = parse_manifests(missing_field).unwrap_err();
        assert!(
            e.to_string().contains("document 1: invalid CallCluster"),
            "{e}"
        );
        assert!(e.to_string().contains("pipelineRef"), "{e}");

        assert!(matches!(
            render_manifests("").unwrap_err(),
            RenderCmdError::NoCallCluster
        ));
    }

    #[test]
    fn renders_children_as_yaml_documents_without_secret_material() {
        let yaml = render_manifests(SAMPLE).unwrap();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for kind in [
            "ConfigMap",
            "Secret",
            "Service",
            "Deployment",
            "StatefulSet",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
        let token = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
        assert_eq!(token["metadata"]["name"], "fleet-call-token");
        assert!(token.get("data").is_none());
        assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "calls"));
        assert!(!yaml.contains("# warning:"));
    }

    #[test]
    fn missing_pipeline_is_a_warning_not_an_error() {
        let yaml = render_manifests(
            "apiVersion: callfleet.dev/v1alpha1\nkind: CallCluster\nmetadata: {name: fleet}\nspec: {pipelineRef: {name: gone}}\n",
        )
        .unwrap();
        assert!(yaml.contains("# warning: AiPipeline \"gone\" is not in the file"));
    }
}
