//! Status from observations: what the reconciler saw (children, pipeline, Secrets) in, the
//! CallCluster or AiPipeline status out. Inputs are plain structs so every rule is unit-tested
//! without a cluster; messages name the missing thing so `kubectl describe` says what to fix.

use callfleet_crds::callcluster::{EndpointsStatus, SipServiceType, TierStatus};
use callfleet_crds::conditions::{
    DEGRADED, PROGRESSING, READY, RECONCILIATION_PAUSED, condition, keep_transition_times,
};
use callfleet_crds::{AiPipeline, AiPipelineStatus, CallCluster, CallClusterStatus};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::common::names;
use super::sip::Destination;
use super::worker::WORKER_PORT;

/// Replica counts of one observed Deployment or StatefulSet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadState {
    /// `spec.replicas` (for workers: what the autoscaler chose).
    pub desired: i32,
    /// Pods passing readiness.
    pub ready: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// The workload controller has seen the latest spec (`status.observedGeneration`).
    pub observed_current: bool,
}

impl WorkloadState {
    pub fn from_deployment(d: &Deployment) -> Self {
        let status = d.status.as_ref();
        Self {
            desired: d.spec.replicas.unwrap_or(1),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            observed_current: status.and_then(|s| s.observed_generation) >= d.metadata.generation,
        }
    }

    pub fn from_stateful_set(s: &StatefulSet) -> Self {
        let status = s.status.as_ref();
        Self {
            desired: s.spec.replicas.unwrap_or(1),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            observed_current: status.and_then(|s| s.observed_generation) >= s.metadata.generation,
        }
    }

    /// Every desired pod is ready and runs the current template.
    pub fn settled(&self) -> bool {
        self.observed_current && self.ready >= self.desired && self.updated >= self.desired
    }
}

/// What the reconciler found about the referenced AiPipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineState {
    Missing,
    /// Exists but its `Ready` condition is not True; `message` says why.
    NotReady {
        generation: i64,
        message: String,
    },
    Ready {
        generation: i64,
    },
}

/// Everything a CallCluster's status is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed<'a> {
    pub pipeline: PipelineState,
    /// Names of Secrets the spec references that do not exist (see [`referenced_secrets`]).
    pub missing_secrets: Vec<String>,
    /// `None` when the child does not exist (yet).
    pub workers: Option<WorkloadState>,
    pub media: Option<WorkloadState>,
    pub sip: Option<WorkloadState>,
    /// Calls in progress, when the reconciler could read it.
    pub active_calls: Option<i64>,
    pub dispatcher_destinations: &'a [Destination],
    /// Load-balancer ingress IP or hostname of the SIP Service, when it has one.
    pub sip_ingress: Option<String>,
    /// The last apply failed with this message.
    pub apply_error: Option<String>,
}

/// Secrets a CallCluster needs that the operator does not create itself: Redis, call log,
/// recordings credentials and a user-provided call-token Secret.
pub fn referenced_secrets(cc: &CallCluster) -> Vec<String> {
    let spec = &cc.spec;
    let mut secrets: Vec<String> = [
        spec.redis.as_ref().map(|r| r.url_secret_ref.name.clone()),
        spec.call_log
            .as_ref()
            .map(|c| c.url_secret_ref.name.clone()),
        spec.recordings
            .credentials_secret_ref
            .as_ref()
            .filter(|_| spec.recordings.enabled)
            .map(|c| c.name.clone()),
        spec.auth.token_secret_ref.as_ref().map(|t| t.name.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    secrets.sort();
    secrets.dedup();
    secrets
}

/// One reason the fleet cannot work as specified.
struct Problem {
    reason: &'static str,
    message: String,
}

/// The CallCluster status for these observations. `lastTransitionTime` is kept from the current
/// status for conditions whose status did not change.
pub fn call_cluster_status(
    cc: &CallCluster,
    observed: &Observed<'_>,
    now: &Time,
) -> CallClusterStatus {
    let spec = &cc.spec;
    let generation = cc.metadata.generation;
    let name = cc.metadata.name.as_deref().unwrap_or_default();
    let namespace = cc.metadata.namespace.as_deref().unwrap_or("default");
    let pipeline_name = &spec.pipeline_ref.name;

    let mut problems = Vec::new();
    let pipeline_generation = match &observed.pipeline {
        PipelineState::Missing => {
            problems.push(Problem {
                reason: "PipelineNotFound",
                message: format!("AiPipeline {pipeline_name:?} not found"),
            });
            None
        }
        PipelineState::NotReady {
            generation,
            message,
        } => {
            problems.push(Problem {
                reason: "PipelineNotReady",
                message: format!("AiPipeline {pipeline_name:?} is not Ready: {message}"),
            });
            Some(*generation)
        }
        PipelineState::Ready { generation } => Some(*generation),
    };
    for secret in &observed.missing_secrets {
        problems.push(Problem {
            reason: "SecretNotFound",
            message: format!("Secret {secret:?} not found"),
        });
    }
    if let Some(error) = &observed.apply_error {
        problems.push(Problem {
            reason: "ApplyFailed",
            message: format!("applying children failed: {error}"),
        });
    }

    // The spec's count is a floor on what a tier needs: a new worker Deployment starts at one
    // replica until the autoscaler applies minReplicas, and that moment is not "ready".
    let at_least = |state: Option<WorkloadState>, floor: i32| {
        state.map(|s| WorkloadState {
            desired: s.desired.max(floor),
            ..s
        })
    };
    let workers = at_least(observed.workers, spec.workers.min_replicas);
    let media = at_least(observed.media, spec.media.replicas);
    let sip = at_least(observed.sip, spec.sip.replicas);
    let tiers = [
        ("workers", workers, spec.workers.min_replicas),
        ("media", media, spec.media.replicas),
        ("sip", sip, spec.sip.replicas),
    ];
    let pending: Vec<String> = tiers
        .iter()
        .filter_map(|(tier, state, _)| match state {
            None => Some(format!("{tier} not created yet")),
            Some(s) if !s.settled() => Some(format!("{tier} {}/{} ready", s.ready, s.desired)),
            Some(_) => None,
        })
        .collect();

    let degraded = match problems.first() {
        Some(first) => condition(
            DEGRADED,
            true,
            first.reason,
            join(problems.iter().map(|p| p.message.as_str())),
            generation,
            now,
        ),
        None => condition(DEGRADED, false, "AsExpected", "", generation, now),
    };
    let progressing = if pending.is_empty() {
        condition(
            PROGRESSING,
            false,
            "AsExpected",
            "all tiers are up to date",
            generation,
            now,
        )
    } else {
        condition(
            PROGRESSING,
            true,
            "RollingOut",
            join(pending.iter().map(String::as_str)),
            generation,
            now,
        )
    };
    let ready = match (problems.first(), pending.is_empty()) {
        (Some(first), _) => condition(
            READY,
            false,
            first.reason,
            degraded.message.clone(),
            generation,
            now,
        ),
        (None, false) => condition(
            READY,
            false,
            "TiersNotReady",
            progressing.message.clone(),
            generation,
            now,
        ),
        (None, true) => condition(
            READY,
            true,
            "AllReady",
            "all tiers are ready",
            generation,
            now,
        ),
    };
    let paused = if spec.paused {
        condition(
            RECONCILIATION_PAUSED,
            true,
            "Paused",
            "spec.paused is true: children are left as they are",
            generation,
            now,
        )
    } else {
        condition(
            RECONCILIATION_PAUSED,
            false,
            "Reconciling",
            "",
            generation,
            now,
        )
    };
    let previous = cc
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = keep_transition_times(previous, vec![ready, progressing, degraded, paused]);

    let tier = |state: Option<WorkloadState>, fallback: i32| {
        let (desired, ready) = state.map_or((fallback, 0), |s| (s.desired, s.ready));
        TierStatus {
            replicas: desired,
            ready_replicas: ready,
            ready: format!("{ready}/{desired}"),
        }
    };
    let sip_port = spec.sip.service.port;
    let sip_endpoint = match (&observed.sip_ingress, spec.sip.service.type_) {
        (Some(address), _) => Some(format!("sip:{address}:{sip_port}")),
        (None, SipServiceType::LoadBalancer) => None,
        (None, _) => Some(format!(
            "sip:{}.{namespace}.svc:{sip_port}",
            names::sip(name)
        )),
    };
    let mut destinations: Vec<String> = observed
        .dispatcher_destinations
        .iter()
        .map(Destination::address)
        .collect();
    destinations.sort();
    destinations.dedup();

    CallClusterStatus {
        observed_generation: generation,
        conditions,
        workers: tier(workers, spec.workers.min_replicas),
        media: tier(media, spec.media.replicas),
        sip: tier(sip, spec.sip.replicas),
        active_calls: observed.active_calls,
        dispatcher_destinations: destinations,
        endpoints: EndpointsStatus {
            sip: sip_endpoint,
            worker_web_socket: Some(format!(
                "ws://{}.{namespace}.svc:{WORKER_PORT}",
                names::worker(name)
            )),
        },
        pipeline_generation,
        token_secret_name: Some(
            spec.auth
                .token_secret_ref
                .as_ref()
                .map_or_else(|| names::call_token(name), |r| r.name.clone()),
        ),
    }
}

/// Whether the AiPipeline's API key can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKeyState {
    Present,
    SecretMissing,
    /// The Secret exists but has no such key (or an empty value).
    KeyMissing,
}

/// The AiPipeline status: `Ready` exactly when its API-key Secret and key exist.
pub fn ai_pipeline_status(
    pipeline: &AiPipeline,
    api_key: ApiKeyState,
    mut used_by: Vec<String>,
    now: &Time,
) -> AiPipelineStatus {
    let generation = pipeline.metadata.generation;
    let secret = &pipeline.spec.provider.api_key_secret_ref;
    let ready = match api_key {
        ApiKeyState::Present => condition(
            READY,
            true,
            "SecretFound",
            format!("API key read from Secret {:?}", secret.name),
            generation,
            now,
        ),
        ApiKeyState::SecretMissing => condition(
            READY,
            false,
            "SecretNotFound",
            format!("Secret {:?} not found", secret.name),
            generation,
            now,
        ),
        ApiKeyState::KeyMissing => condition(
            READY,
            false,
            "SecretKeyNotFound",
            format!("Secret {:?} has no key {:?}", secret.name, secret.key),
            generation,
            now,
        ),
    };
    let previous = pipeline
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    used_by.sort();
    used_by.dedup();
    AiPipelineStatus {
        observed_generation: generation,
        conditions: keep_transition_times(previous, vec![ready]),
        used_by,
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    parts.collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use callfleet_crds::conditions::{find, is_true};
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::super::fixtures::{call_cluster, pipeline};
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn settled(n: i32) -> Option<WorkloadState> {
        Some(WorkloadState {
            desired: n,
            ready: n,
            updated: n,
            observed_current: true,
        })
    }

    fn healthy<'a>() -> Observed<'a> {
        Observed {
            pipeline: PipelineState::Ready { generation: 7 },
            missing_secrets: vec![],
            workers: settled(2),
            media: settled(2),
            sip: settled(2),
            active_calls: Some(12),
            dispatcher_destinations: &[],
            sip_ingress: None,
            apply_error: None,
        }
    }

    fn message(status: &CallClusterStatus, type_: &str) -> String {
        find(&status.conditions, type_).unwrap().message.clone()
    }

    #[test]
    fn all_tiers_ready() {
        let cc = call_cluster(json!({}));
        let status = call_cluster_status(&cc, &healthy(), &at(100));
        assert!(is_true(&status.conditions, READY));
        assert!(!is_true(&status.conditions, PROGRESSING));
        assert!(!is_true(&status.conditions, DEGRADED));
        assert!(!is_true(&status.conditions, RECONCILIATION_PAUSED));
        assert_eq!(status.observed_generation, Some(3));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(status.workers.ready, "2/2");
        assert_eq!(status.active_calls, Some(12));
        assert_eq!(status.pipeline_generation, Some(7));
        assert_eq!(
            status.token_secret_name.as_deref(),
            Some("support-call-token")
        );
        assert_eq!(
            status.endpoints.worker_web_socket.as_deref(),
            Some("ws://support-worker.calls.svc:8080")
        );
    }

    #[test]
    fn missing_pipeline_is_degraded_and_named() {
        let cc = call_cluster(json!({}));
        let observed = Observed {
            pipeline: PipelineState::Missing,
            workers: None,
            ..healthy()
        };
        let status = call_cluster_status(&cc, &observed, &at(100));
        let degraded = find(&status.conditions, DEGRADED).unwrap();
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "PipelineNotFound");
        assert_eq!(
            degraded.message,
            r#"AiPipeline "support-pipeline" not found"#
        );
        let ready = find(&status.conditions, READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message, degraded.message);
        assert_eq!(status.workers.ready, "0/2");
        assert_eq!(status.pipeline_generation, None);
        assert!(message(&status, PROGRESSING).contains("workers not created yet"));
    }

    #[test]
    fn pipeline_not_ready_and_missing_secrets_are_all_named() {
        let cc = call_cluster(json!({"redis": {"urlSecretRef": {"name": "redis"}}}));
        let observed = Observed {
            pipeline: PipelineState::NotReady {
                generation: 4,
                message: r#"Secret "openai" not found"#.into(),
            },
            missing_secrets: vec!["redis".into()],
            ..healthy()
        };
        let status = call_cluster_status(&cc, &observed, &at(100));
        assert_eq!(
            message(&status, DEGRADED),
            r#"AiPipeline "support-pipeline" is not Ready: Secret "openai" not found; Secret "redis" not found"#
        );
        assert_eq!(
            find(&status.conditions, DEGRADED).unwrap().reason,
            "PipelineNotReady"
        );
        assert_eq!(status.pipeline_generation, Some(4));
    }

    #[test]
    fn rollout_in_progress() {
        let cc = call_cluster(json!({}));
        let observed = Observed {
            workers: Some(WorkloadState {
                desired: 3,
                ready: 1,
                updated: 3,
                observed_current: true,
            }),
            ..healthy()
        };
        let status = call_cluster_status(&cc, &observed, &at(100));
        assert!(is_true(&status.conditions, PROGRESSING));
        assert_eq!(message(&status, PROGRESSING), "workers 1/3 ready");
        let ready = find(&status.conditions, READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "TiersNotReady");
        assert!(!is_true(&status.conditions, DEGRADED));
        assert_eq!(status.workers.ready, "1/3");
        assert_eq!(status.workers.replicas, 3);
    }

    #[test]
    fn apply_errors_degrade() {
        let cc = call_cluster(json!({}));
        let observed = Observed {
            apply_error: Some("admission webhook denied".into()),
            ..healthy()
        };
        let status = call_cluster_status(&cc, &observed, &at(100));
        assert_eq!(
            find(&status.conditions, DEGRADED).unwrap().reason,
            "ApplyFailed"
        );
        assert!(message(&status, DEGRADED).contains("admission webhook denied"));
    }

    #[test]
    fn paused_says_so() {
        let cc = call_cluster(json!({"paused": true}));
        let status = call_cluster_status(&cc, &healthy(), &at(100));
        let paused = find(&status.conditions, RECONCILIATION_PAUSED).unwrap();
        assert_eq!(paused.status, "True");
        assert_eq!(paused.reason, "Paused");
        assert!(paused.message.contains("spec.paused"));
    }

    #[test]
    fn transition_times_survive_unchanged_status() {
        let mut cc = call_cluster(json!({}));
        let first = call_cluster_status(&cc, &healthy(), &at(100));
        cc.status = Some(first);
        let second = call_cluster_status(&cc, &healthy(), &at(200));
        assert!(
            second
                .conditions
                .iter()
                .all(|c| c.last_transition_time == at(100))
        );
        cc.status = Some(second);
        let degraded = Observed {
            pipeline: PipelineState::Missing,
            ..healthy()
        };
        let third = call_cluster_status(&cc, &degraded, &at(300));
        assert_eq!(
            find(&third.conditions, READY).unwrap().last_transition_time,
            at(300)
        );
        assert_eq!(
            find(&third.conditions, RECONCILIATION_PAUSED)
                .unwrap()
                .last_transition_time,
            at(100)
        );
    }

    #[test]
    fn endpoints_and_destinations() {
        let destinations = [
            Destination {
                pod_name: "support-media-1".into(),
                ip: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 9)),
                port: 5060,
                max_load: 10,
            },
            Destination {
                pod_name: "support-media-0".into(),
                ip: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 8)),
                port: 5060,
                max_load: 10,
            },
        ];
        let cc = call_cluster(json!({}));
        let lb_pending = call_cluster_status(
            &cc,
            &Observed {
                dispatcher_destinations: &destinations,
                ..healthy()
            },
            &at(1),
        );
        assert_eq!(lb_pending.endpoints.sip, None);
        assert_eq!(
            lb_pending.dispatcher_destinations,
            ["10.1.0.8:5060", "10.1.0.9:5060"]
        );
        let lb = call_cluster_status(
            &cc,
            &Observed {
                sip_ingress: Some("203.0.113.7".into()),
                ..healthy()
            },
            &at(1),
        );
        assert_eq!(lb.endpoints.sip.as_deref(), Some("sip:203.0.113.7:5060"));
        let internal = call_cluster(json!({"sip": {"service": {"type": "ClusterIP"}}}));
        let status = call_cluster_status(&internal, &healthy(), &at(1));
        assert_eq!(
            status.endpoints.sip.as_deref(),
            Some("sip:support-sip.calls.svc:5060")
        );
    }

    #[test]
    fn workload_state_from_deployment() {
        let mut d = Deployment {
            metadata: ObjectMeta {
                generation: Some(5),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(4),
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(4),
                ready_replicas: Some(4),
                updated_replicas: Some(4),
                ..Default::default()
            }),
        };
        let stale = WorkloadState::from_deployment(&d);
        assert_eq!(stale.desired, 4);
        assert!(!stale.settled(), "status of an older generation");
        if let Some(s) = d.status.as_mut() {
            s.observed_generation = Some(5);
        }
        assert!(WorkloadState::from_deployment(&d).settled());
        d.status = None;
        let fresh = WorkloadState::from_deployment(&d);
        assert_eq!(fresh.ready, 0);
        assert!(!fresh.settled());
    }

    #[test]
    fn zero_replica_tier_counts_as_ready() {
        let cc = call_cluster(json!({"media": {"replicas": 0}}));
        let observed = Observed {
            media: settled(0),
            ..healthy()
        };
        let status = call_cluster_status(&cc, &observed, &at(1));
        assert!(is_true(&status.conditions, READY));
        assert_eq!(status.media.ready, "0/0");
    }

    #[test]
    fn referenced_secrets_are_listed_once() {
        let cc = call_cluster(json!({
            "redis": {"urlSecretRef": {"name": "backends"}},
            "callLog": {"urlSecretRef": {"name": "backends", "key": "pg"}},
            "recordings": {"enabled": false, "credentialsSecretRef": {"name": "s3"}},
            "auth": {"tokenSecretRef": {"name": "auth"}},
        }));
        assert_eq!(referenced_secrets(&cc), ["auth", "backends"]);
    }

    #[test]
    fn ai_pipeline_ready_only_with_its_key() {
        let ai = pipeline(2, "hi");
        let ready = ai_pipeline_status(
            &ai,
            ApiKeyState::Present,
            vec!["b".into(), "a".into(), "b".into()],
            &at(1),
        );
        assert!(is_true(&ready.conditions, READY));
        assert_eq!(ready.used_by, ["a", "b"]);
        assert_eq!(ready.observed_generation, Some(2));

        let missing = ai_pipeline_status(&ai, ApiKeyState::SecretMissing, vec![], &at(1));
        let cond = find(&missing.conditions, READY).unwrap();
        assert_eq!(cond.status, "False");
        assert_eq!(cond.reason, "SecretNotFound");
        assert_eq!(cond.message, r#"Secret "openai" not found"#);

        let no_key = ai_pipeline_status(&ai, ApiKeyState::KeyMissing, vec![], &at(1));
        assert_eq!(
            find(&no_key.conditions, READY).unwrap().message,
            r#"Secret "openai" has no key "token""#
        );
    }

    #[test]
    fn workers_below_min_replicas_are_not_ready() {
        // The HPA has not yet raised a fresh Deployment from 1 replica to minReplicas (2).
        let cc = call_cluster(json!({"workers": {"minReplicas": 3, "maxReplicas": 5}}));
        let observed = Observed {
            workers: settled(1),
            ..healthy()
        };
        let status = call_cluster_status(&cc, &observed, &at(100));
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(status.workers.ready, "1/3");
        assert_eq!(message(&status, PROGRESSING), "workers 1/3 ready");
    }
}
