//! What every child shares: names derived from the CallCluster name, the common labels, and
//! the owner reference that lets the garbage collector delete children with their CallCluster.

use std::collections::BTreeMap;

use callfleet_crds::{CallCluster, CallClusterSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

use super::RenderError;

/// Longest CallCluster name: StatefulSet revision labels are `<name>-media-<10-char hash>` and
/// must fit in 63 characters. The CRD schema enforces the same bound.
pub const MAX_NAME_LEN: usize = 40;

/// Label naming the CallCluster a child belongs to; also in every selector.
pub const CALLCLUSTER_LABEL: &str = "callfleet.dev/callcluster";

/// The tier a child belongs to (`app.kubernetes.io/component`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Worker,
    Media,
    Sip,
    Pipeline,
    Auth,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Worker => "worker",
            Component::Media => "media",
            Component::Sip => "sip",
            Component::Pipeline => "pipeline",
            Component::Auth => "auth",
        }
    }
}

/// Child names, all derived from the CallCluster name so they are predictable for users and
/// unique per namespace.
pub mod names {
    pub fn worker(cc: &str) -> String {
        format!("{cc}-worker")
    }
    pub fn media(cc: &str) -> String {
        format!("{cc}-media")
    }
    pub fn media_config(cc: &str) -> String {
        format!("{cc}-media-config")
    }
    pub fn sip(cc: &str) -> String {
        format!("{cc}-sip")
    }
    pub fn sip_config(cc: &str) -> String {
        format!("{cc}-sip-config")
    }
    pub fn pipeline(cc: &str) -> String {
        format!("{cc}-pipeline")
    }
    pub fn call_token(cc: &str) -> String {
        format!("{cc}-call-token")
    }
}

/// A validated view of the CallCluster every renderer starts from.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub spec: &'a CallClusterSpec,
    owner: OwnerReference,
}

impl<'a> Context<'a> {
    pub fn new(cc: &'a CallCluster) -> Result<Self, RenderError> {
        let name = cc
            .metadata
            .name
            .as_deref()
            .ok_or(RenderError::MissingMetadata("name"))?;
        validate_name(name)?;
        let namespace = cc
            .metadata
            .namespace
            .as_deref()
            .ok_or(RenderError::MissingMetadata("namespace"))?;
        let uid = cc
            .metadata
            .uid
            .clone()
            .ok_or(RenderError::MissingMetadata("uid"))?;
        let owner = OwnerReference {
            api_version: CallCluster::api_version(&()).into_owned(),
            kind: CallCluster::kind(&()).into_owned(),
            name: name.to_owned(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        Ok(Self {
            name,
            namespace,
            spec: &cc.spec,
            owner,
        })
    }

    /// Labels that select a tier's pods. Never change them: selectors are immutable.
    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "callfleet".into()),
            ("app.kubernetes.io/instance".into(), self.name.to_owned()),
            (
                "app.kubernetes.io/component".into(),
                component.as_str().into(),
            ),
        ])
    }

    /// Labels on every child and pod. No version label: it would change pod templates on every
    /// operator upgrade and roll pods that carry calls.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert("app.kubernetes.io/part-of".into(), "callfleet".into());
        labels.insert(
            "app.kubernetes.io/managed-by".into(),
            "callfleet-operator".into(),
        );
        labels.insert(CALLCLUSTER_LABEL.into(), self.name.to_owned());
        labels
    }

    pub fn label_selector(&self, component: Component) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector_labels(component)),
            ..Default::default()
        }
    }

    /// Metadata of a child: name, namespace, labels, owner reference.
    pub fn meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    /// Pod-template metadata: labels plus extra annotations; no owner reference.
    pub fn pod_meta(
        &self,
        component: Component,
        annotations: BTreeMap<String, String>,
    ) -> ObjectMeta {
        ObjectMeta {
            labels: Some(self.labels(component)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }
    }
}

/// Child Service names must be DNS-1035 labels; the suffixes need room.
fn validate_name(name: &str) -> Result<(), RenderError> {
    let invalid = |reason| RenderError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 40 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("must start with a lowercase letter"));
    }
    if name.ends_with('-') {
        return Err(invalid("must not end with '-'"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(
            "only lowercase letters, digits and '-' are allowed",
        ));
    }
    Ok(())
}

/// `(key, value)` pairs into an owned map.
pub fn string_map<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
