//! The call-worker tier: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget.
//!
//! The pod template depends only on the CallCluster spec and on *which* Secret holds the
//! provider API key. Pipeline contents reach workers through the mounted ConfigMap (hot
//! reload); a new AiPipeline generation therefore never rolls workers. The Deployment leaves
//! `spec.replicas` to the HorizontalPodAutoscaler: applying it would fight the autoscaler.

use std::collections::BTreeMap;

use callfleet_crds::AiPipeline;
use callfleet_crds::callcluster::{AutoscalingMetric, LogFormat, RecordingFormat};
use callfleet_crds::pipeline_config::{
    PIPELINE_CONFIG_DIR, PIPELINE_CONFIG_KEY, PROVIDER_API_KEY_PATH,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HPAScalingPolicy, HPAScalingRules,
    HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{Component, Context, names, string_map};
use super::token::{self, TOKEN_SECRET_DIR, TOKEN_SECRET_FILE};

/// Port of the worker's WebSocket, `/health`, `/ready` and `/metrics` endpoints.
pub const WORKER_PORT: i32 = 8080;
/// Per-pod metric the `activeCalls` autoscaling mode targets, served by callfleet's
/// custom-metrics API.
pub const ACTIVE_CALLS_METRIC: &str = "callfleet_active_calls";
/// Directory the provider API key Secret is mounted at (file `api-key`).
pub const PROVIDER_DIR: &str = "/etc/callfleet/provider";
/// Seconds a worker keeps draining after SIGTERM beyond the max call duration, so a rollout
/// never cuts a call shorter than `limits.maxCallDurationSeconds`.
pub const DRAIN_MARGIN_SECONDS: i64 = 30;
/// Where workers spool call recordings until the bucket has them: an `emptyDir`, because the
/// root filesystem is read-only. It outlives container restarts (the worker uploads what is left
/// on start); the drain waits for uploads before the pod goes.
pub const RECORDINGS_SPOOL_DIR: &str = "/var/lib/callfleet/recordings";
/// Seconds the kubelet waits beyond the drain before killing the worker.
pub const TERMINATION_MARGIN_SECONDS: i64 = 30;
/// Seconds a terminating pod keeps serving before SIGTERM, so endpoint removal reaches every
/// client before the worker stops admitting calls.
const PRE_STOP_SLEEP_SECONDS: i64 = 5;

/// `CALLFLEET_DRAIN_SECONDS`: the max call duration plus a margin.
pub fn drain_seconds(ctx: &Context<'_>) -> i64 {
    i64::from(ctx.spec.limits.max_call_duration_seconds) + DRAIN_MARGIN_SECONDS
}

/// The worker Deployment. `pipeline` only decides which Secret the provider API key is mounted
/// from; the controller skips the Deployment until the AiPipeline exists (see
/// [`super::render_call_cluster`]).
pub fn deployment(ctx: &Context<'_>, pipeline: &AiPipeline) -> Deployment {
    let component = Component::Worker;
    let drain = drain_seconds(ctx);
    let workers = &ctx.spec.workers;
    let (token_secret, token_key) = token::secret_ref(ctx);
    let provider = &pipeline.spec.provider.api_key_secret_ref;

    let mut volumes = vec![
        Volume {
            name: "pipeline".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::pipeline(ctx.name),
                // The pipeline may be re-rendered after the pod starts; the worker waits for it.
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
        secret_file_volume("provider", &provider.name, &provider.key, "api-key"),
        secret_file_volume("auth", &token_secret, &token_key, token::TOKEN_SECRET_KEY),
    ];
    // Directory mounts, never `subPath`: the kubelet swaps a `..data` symlink atomically in
    // directories, while `subPath` files never update in a running pod.
    let mut mounts = vec![
        read_only_mount("pipeline", PIPELINE_CONFIG_DIR),
        read_only_mount("provider", PROVIDER_DIR),
        read_only_mount("auth", TOKEN_SECRET_DIR),
    ];
    if ctx.spec.recordings.enabled {
        volumes.push(Volume {
            name: "recordings-spool".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "recordings-spool".into(),
            mount_path: RECORDINGS_SPOOL_DIR.into(),
            ..Default::default()
        });
    }

    let container = Container {
        name: "worker".into(),
        image: Some(workers.image.clone()),
        command: Some(vec!["callfleet-worker".into()]),
        env: Some(env(ctx, drain)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: WORKER_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(http_probe("/ready", 5, 2)),
        liveness_probe: Some(http_probe("/health", 10, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: workers.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container()),
        ..Default::default()
    };

    Deployment {
        metadata: ctx.meta(names::worker(ctx.name), component),
        spec: DeploymentSpec {
            // No `replicas`: the HorizontalPodAutoscaler owns it.
            selector: ctx.label_selector(component),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // New pods come up before old ones start draining: capacity never dips.
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ctx.pod_meta(component, prometheus_annotations())),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    // The contract's `CALLFLEET_DRAIN_SECONDS + 30`; the pre-stop sleep runs
                    // inside it, leaving 25 s between the end of the drain and SIGKILL.
                    termination_grace_period_seconds: Some(drain + TERMINATION_MARGIN_SECONDS),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The worker environment from `docs/contracts.md`, plus the optional backends.
fn env(ctx: &Context<'_>, drain: i64) -> Vec<EnvVar> {
    let spec = ctx.spec;
    let mut env = vec![
        value("CALLFLEET_LISTEN", format!("0.0.0.0:{WORKER_PORT}")),
        value(
            "CALLFLEET_PIPELINE_FILE",
            format!("{PIPELINE_CONFIG_DIR}/{PIPELINE_CONFIG_KEY}"),
        ),
        value(
            "CALLFLEET_PROVIDER_API_KEY_FILE",
            PROVIDER_API_KEY_PATH.into(),
        ),
        value("CALLFLEET_TOKEN_SECRET_FILE", TOKEN_SECRET_FILE.into()),
        value(
            "CALLFLEET_MAX_CALLS",
            spec.workers.max_calls_per_pod.to_string(),
        ),
        value(
            "CALLFLEET_MAX_CALL_SECONDS",
            spec.limits.max_call_duration_seconds.to_string(),
        ),
        value(
            "CALLFLEET_IDLE_TIMEOUT_SECONDS",
            spec.limits.idle_timeout_seconds.to_string(),
        ),
        value(
            "CALLFLEET_RATE_LIMIT_PER_MINUTE",
            spec.limits.requests_per_minute_per_ip.to_string(),
        ),
        value("CALLFLEET_DRAIN_SECONDS", drain.to_string()),
        value(
            "CALLFLEET_LOG_FORMAT",
            match spec.workers.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .into(),
        ),
        value("CALLFLEET_CALLCLUSTER", ctx.name.to_owned()),
        field("CALLFLEET_POD_NAME", "metadata.name"),
        field("CALLFLEET_POD_NAMESPACE", "metadata.namespace"),
    ];
    // Only when set: a default written here would change every existing worker pod template on
    // an operator upgrade, and roll pods with live calls.
    if let Some(lag_ms) = spec.workers.overload_lag_ms {
        env.push(value("CALLFLEET_OVERLOAD_LAG_MS", lag_ms.to_string()));
    }
    if let Some(micros) = spec.workers.event_batch_micros {
        env.push(value("CALLFLEET_EVENT_BATCH_US", micros.to_string()));
    }
    if let Some(millis) = spec.workers.inbound_rest_millis {
        env.push(value("CALLFLEET_INBOUND_REST_MS", millis.to_string()));
    }
    if let Some(millis) = spec.workers.listening_rest_millis {
        env.push(value("CALLFLEET_LISTENING_REST_MS", millis.to_string()));
    }
    if let Some(millis) = spec.workers.wake_tick_millis {
        env.push(value("CALLFLEET_WAKE_TICK_MS", millis.to_string()));
    }
    if let Some(redis) = &spec.redis {
        env.push(secret_env(
            "CALLFLEET_REDIS_URL",
            &redis.url_secret_ref.name,
            &redis.url_secret_ref.key,
        ));
    }
    if let Some(call_log) = &spec.call_log {
        env.push(secret_env(
            "CALLFLEET_CALL_LOG_URL",
            &call_log.url_secret_ref.name,
            &call_log.url_secret_ref.key,
        ));
    }
    let rec = &spec.recordings;
    if rec.enabled {
        env.push(value("CALLFLEET_RECORDINGS_ENABLED", "true".into()));
        let optional = [
            ("CALLFLEET_RECORDINGS_ENDPOINT", &rec.endpoint),
            ("CALLFLEET_RECORDINGS_REGION", &rec.region),
            ("CALLFLEET_RECORDINGS_BUCKET", &rec.bucket),
        ];
        for (name, v) in optional {
            if let Some(v) = v {
                env.push(value(name, v.clone()));
            }
        }
        env.push(value("CALLFLEET_RECORDINGS_PREFIX", rec.prefix.clone()));
        env.push(value(
            "CALLFLEET_RECORDINGS_SPOOL_DIR",
            RECORDINGS_SPOOL_DIR.into(),
        ));
        env.push(value(
            "CALLFLEET_RECORDINGS_FORMAT",
            match rec.format {
                RecordingFormat::Wav => "wav",
                RecordingFormat::WavMulaw => "wavMulaw",
            }
            .into(),
        ));
        if let Some(creds) = &rec.credentials_secret_ref {
            env.push(secret_env(
                "AWS_ACCESS_KEY_ID",
                &creds.name,
                &creds.access_key_id_key,
            ));
            env.push(secret_env(
                "AWS_SECRET_ACCESS_KEY",
                &creds.name,
                &creds.secret_access_key_key,
            ));
        }
    }
    env
}

/// ClusterIP Service in front of the workers (WebSocket, metrics).
pub fn service(ctx: &Context<'_>) -> Service {
    let component = Component::Worker;
    Service {
        metadata: ctx.meta(names::worker(ctx.name), component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(ctx.selector_labels(component)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: WORKER_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// autoscaling/v2 HorizontalPodAutoscaler on the chosen metric.
pub fn autoscaler(ctx: &Context<'_>) -> HorizontalPodAutoscaler {
    let workers = &ctx.spec.workers;
    let per_pod = Quantity(workers.target_active_calls_per_pod.to_string());
    let metric = match workers.autoscaling.metric {
        AutoscalingMetric::ActiveCalls => MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: ACTIVE_CALLS_METRIC.into(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(per_pod),
                    ..Default::default()
                },
            }),
            ..Default::default()
        },
        AutoscalingMetric::Cpu => MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(workers.autoscaling.target_cpu_utilization_percent),
                    ..Default::default()
                },
            }),
            ..Default::default()
        },
        AutoscalingMetric::External => {
            let external = workers.autoscaling.external.as_ref();
            MetricSpec {
                type_: "External".into(),
                external: Some(ExternalMetricSource {
                    metric: MetricIdentifier {
                        // The schema requires `external` with this metric; the fallback keeps an
                        // object that bypassed validation renderable (the HPA then reports it).
                        name: external
                            .map(|e| e.metric_name.clone())
                            .unwrap_or_else(|| ACTIVE_CALLS_METRIC.into()),
                        selector: external.filter(|e| !e.selector.is_empty()).map(|e| {
                            LabelSelector {
                                match_labels: Some(e.selector.clone()),
                                ..Default::default()
                            }
                        }),
                    },
                    target: MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: Some(per_pod),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }
        }
    };
    HorizontalPodAutoscaler {
        metadata: ctx.meta(names::worker(ctx.name), Component::Worker),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: names::worker(ctx.name),
            },
            min_replicas: Some(workers.min_replicas),
            max_replicas: workers.max_replicas.max(workers.min_replicas),
            metrics: Some(vec![metric]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                // Scaling down drains calls for minutes; do it slowly and only after load has
                // stayed low for a while.
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(300),
                    policies: Some(vec![HPAScalingPolicy {
                        type_: "Percent".into(),
                        value: 20,
                        period_seconds: 60,
                    }]),
                    ..Default::default()
                }),
                scale_up: None,
            }),
        },
        ..Default::default()
    }
}

/// One worker at a time may be evicted voluntarily (node drains); it drains its calls.
pub fn disruption_budget(ctx: &Context<'_>) -> PodDisruptionBudget {
    one_unavailable_budget(ctx, names::worker(ctx.name), Component::Worker)
}

/// `maxUnavailable: 1` for a tier. Unhealthy pods may always be evicted, so a stuck pod never
/// blocks a node drain.
pub fn one_unavailable_budget(
    ctx: &Context<'_>,
    name: String,
    component: Component,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ctx.meta(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(ctx.label_selector(component)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Scrape annotations; constant, so they never change a pod template.
fn prometheus_annotations() -> BTreeMap<String, String> {
    string_map([
        ("prometheus.io/scrape", "true".into()),
        ("prometheus.io/port", WORKER_PORT.to_string()),
        ("prometheus.io/path", "/metrics".into()),
    ])
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The restricted Pod Security Standard for a container.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Secret volume exposing one key as `file`.
pub fn secret_file_volume(volume: &str, secret: &str, key: &str, file: &str) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(vec![KeyToPath {
                key: key.into(),
                path: file.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn read_only_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

pub fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

pub fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::Child;
    use super::super::fixtures::{call_cluster, find, render};

    fn worker_pod(spec: Value) -> Value {
        let children = render(&call_cluster(spec));
        let deployment = find(&children, "Deployment", "support-worker")
            .to_value()
            .unwrap();
        deployment["spec"]["template"].clone()
    }

    fn env_map(pod: &Value) -> serde_json::Map<String, Value> {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let value = e
                    .get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone());
                (e["name"].as_str().unwrap().to_owned(), value)
            })
            .collect()
    }

    #[test]
    fn environment_follows_the_contract() {
        let pod = worker_pod(json!({}));
        let env = env_map(&pod);
        let expected = [
            ("CALLFLEET_LISTEN", "0.0.0.0:8080"),
            (
                "CALLFLEET_PIPELINE_FILE",
                "/etc/callfleet/pipeline/pipeline.json",
            ),
            (
                "CALLFLEET_PROVIDER_API_KEY_FILE",
                "/etc/callfleet/provider/api-key",
            ),
            (
                "CALLFLEET_TOKEN_SECRET_FILE",
                "/etc/callfleet/auth/token-secret",
            ),
            ("CALLFLEET_MAX_CALLS", "10000"),
            ("CALLFLEET_MAX_CALL_SECONDS", "300"),
            ("CALLFLEET_IDLE_TIMEOUT_SECONDS", "30"),
            ("CALLFLEET_RATE_LIMIT_PER_MINUTE", "100"),
            ("CALLFLEET_DRAIN_SECONDS", "330"),
            ("CALLFLEET_LOG_FORMAT", "json"),
        ];
        for (name, value) in expected {
            assert_eq!(env[name], value, "{name}");
        }
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 360);
        assert!(
            !env.contains_key("CALLFLEET_OVERLOAD_LAG_MS"),
            "the worker's default"
        );
        assert!(!env.contains_key("CALLFLEET_EVENT_BATCH_US"));
        assert!(!env.contains_key("CALLFLEET_INBOUND_REST_MS"));
        assert!(!env.contains_key("CALLFLEET_LISTENING_REST_MS"));
        assert!(!env.contains_key("CALLFLEET_WAKE_TICK_MS"));
        assert!(!env.contains_key("CALLFLEET_REDIS_URL"));
        assert!(!env.contains_key("CALLFLEET_RECORDINGS_ENABLED"));
        assert!(
            !pod["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == "recordings-spool"),
            "no spool without recordings"
        );
    }

    #[test]
    fn limits_flow_into_env_and_grace_period() {
        let pod = worker_pod(json!({
            "limits": {"maxCallDurationSeconds": 600, "idleTimeoutSeconds": 10, "requestsPerMinutePerIp": 5},
            "workers": {"maxCallsPerPod": 2000, "logFormat": "text", "overloadLagMs": 0, "eventBatchMicros": 1000, "inboundRestMillis": 0, "listeningRestMillis": 240, "wakeTickMillis": 0},
        }));
        let env = env_map(&pod);
        assert_eq!(env["CALLFLEET_EVENT_BATCH_US"], "1000");
        assert_eq!(env["CALLFLEET_INBOUND_REST_MS"], "0");
        assert_eq!(env["CALLFLEET_LISTENING_REST_MS"], "240");
        assert_eq!(env["CALLFLEET_WAKE_TICK_MS"], "0");
        assert_eq!(env["CALLFLEET_OVERLOAD_LAG_MS"], "0");
        assert_eq!(env["CALLFLEET_MAX_CALL_SECONDS"], "600");
        assert_eq!(env["CALLFLEET_IDLE_TIMEOUT_SECONDS"], "10");
        assert_eq!(env["CALLFLEET_RATE_LIMIT_PER_MINUTE"], "5");
        assert_eq!(env["CALLFLEET_MAX_CALLS"], "2000");
        assert_eq!(env["CALLFLEET_DRAIN_SECONDS"], "630");
        assert_eq!(env["CALLFLEET_LOG_FORMAT"], "text");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 660);
    }

    #[test]
    fn config_and_secrets_are_directory_mounts() {
        let pod = worker_pod(json!({}));
        let container = &pod["spec"]["containers"][0];
        let mounts = container["volumeMounts"].as_array().unwrap();
        for mount in mounts {
            assert!(
                mount.get("subPath").is_none(),
                "subPath mounts never update: {mount}"
            );
        }
        let mount_of = |volume: &str| {
            mounts
                .iter()
                .find(|m| m["name"] == volume)
                .map(|m| m["mountPath"].clone())
                .unwrap_or(Value::Null)
        };
        assert_eq!(mount_of("pipeline"), "/etc/callfleet/pipeline");
        assert_eq!(mount_of("provider"), "/etc/callfleet/provider");
        assert_eq!(mount_of("auth"), "/etc/callfleet/auth");

        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap().clone();
        assert_eq!(
            volume("pipeline")["configMap"],
            json!({"name": "support-pipeline", "optional": true})
        );
        assert_eq!(
            volume("provider")["secret"],
            json!({"secretName": "openai", "items": [{"key": "token", "path": "api-key"}]})
        );
        assert_eq!(
            volume("auth")["secret"],
            json!({"secretName": "support-call-token", "items": [{"key": "token-secret", "path": "token-secret"}]})
        );
    }

    #[test]
    fn user_token_secret_is_mounted_under_the_contract_file_name() {
        let pod =
            worker_pod(json!({"auth": {"tokenSecretRef": {"name": "fleet-auth", "key": "hmac"}}}));
        let auth = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "auth")
            .unwrap()["secret"]
            .clone();
        assert_eq!(
            auth,
            json!({"secretName": "fleet-auth", "items": [{"key": "hmac", "path": "token-secret"}]})
        );
    }

    #[test]
    fn probes_annotations_and_no_replicas() {
        let children = render(&call_cluster(json!({})));
        let deployment = find(&children, "Deployment", "support-worker")
            .to_value()
            .unwrap();
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "the autoscaler owns spec.replicas"
        );
        assert_eq!(
            deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            0
        );
        let pod = &deployment["spec"]["template"];
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
        assert_eq!(container["ports"][0]["containerPort"], 8080);
        assert_eq!(
            container["image"],
            callfleet_crds::callcluster::DEFAULT_WORKER_IMAGE
        );
        assert_eq!(
            pod["metadata"]["annotations"],
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"})
        );
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"],
            json!({
                "app.kubernetes.io/name": "callfleet",
                "app.kubernetes.io/instance": "support",
                "app.kubernetes.io/component": "worker",
            })
        );
    }

    #[test]
    fn backends_come_from_secrets() {
        let pod = worker_pod(json!({
            "redis": {"urlSecretRef": {"name": "redis"}},
            "callLog": {"urlSecretRef": {"name": "supabase", "key": "dsn"}},
            "recordings": {
                "enabled": true,
                "endpoint": "https://s3.example.com",
                "bucket": "calls",
                "format": "wavMulaw",
                "credentialsSecretRef": {"name": "s3"},
            },
        }));
        let env = env_map(&pod);
        assert_eq!(
            env["CALLFLEET_REDIS_URL"],
            json!({"secretKeyRef": {"name": "redis", "key": "url", "optional": false}})
        );
        assert_eq!(
            env["CALLFLEET_CALL_LOG_URL"],
            json!({"secretKeyRef": {"name": "supabase", "key": "dsn", "optional": false}})
        );
        assert_eq!(env["CALLFLEET_RECORDINGS_ENABLED"], "true");
        assert_eq!(env["CALLFLEET_RECORDINGS_BUCKET"], "calls");
        assert_eq!(
            env["CALLFLEET_RECORDINGS_ENDPOINT"],
            "https://s3.example.com"
        );
        assert_eq!(env["CALLFLEET_RECORDINGS_PREFIX"], "recordings/");
        assert_eq!(env["CALLFLEET_RECORDINGS_FORMAT"], "wavMulaw");
        assert_eq!(
            env["CALLFLEET_RECORDINGS_SPOOL_DIR"],
            "/var/lib/callfleet/recordings"
        );
        // The root filesystem is read-only: the spool is a writable emptyDir.
        let spool = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "recordings-spool")
            .expect("spool volume");
        assert_eq!(spool["emptyDir"], json!({}));
        let mount = pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "recordings-spool")
            .expect("spool mount");
        assert_eq!(mount["mountPath"], "/var/lib/callfleet/recordings");
        assert!(mount.get("readOnly").is_none());
        assert_eq!(
            env["AWS_ACCESS_KEY_ID"]["secretKeyRef"],
            json!({"name": "s3", "key": "access-key-id", "optional": false})
        );
        assert_eq!(
            env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["key"],
            "secret-access-key"
        );
    }

    fn hpa(spec: Value) -> Value {
        let children = render(&call_cluster(spec));
        let Child::HorizontalPodAutoscaler(hpa) =
            find(&children, "HorizontalPodAutoscaler", "support-worker")
        else {
            unreachable!()
        };
        serde_json::to_value(hpa).unwrap()["spec"].clone()
    }

    #[test]
    fn autoscaler_on_active_calls_by_default() {
        let spec = hpa(json!({}));
        assert_eq!(
            spec["scaleTargetRef"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "support-worker"})
        );
        assert_eq!(spec["minReplicas"], 2);
        assert_eq!(spec["maxReplicas"], 10);
        assert_eq!(
            spec["metrics"],
            json!([{"type": "Pods", "pods": {
                "metric": {"name": "callfleet_active_calls"},
                "target": {"type": "AverageValue", "averageValue": "1000"},
            }}])
        );
        assert_eq!(
            spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            300
        );
    }

    #[test]
    fn autoscaler_on_cpu_and_external_metrics() {
        let cpu = hpa(json!({"workers": {
            "resources": {"requests": {"cpu": "1"}},
            "autoscaling": {"metric": "cpu", "targetCpuUtilizationPercent": 60},
        }}));
        assert_eq!(
            cpu["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}])
        );
        let external = hpa(json!({"workers": {
            "targetActiveCallsPerPod": 500,
            "autoscaling": {"metric": "external", "external": {"metricName": "calls_in_progress", "selector": {"fleet": "support"}}},
        }}));
        assert_eq!(
            external["metrics"],
            json!([{"type": "External", "external": {
                "metric": {"name": "calls_in_progress", "selector": {"matchLabels": {"fleet": "support"}}},
                "target": {"type": "AverageValue", "averageValue": "500"},
            }}])
        );
    }

    #[test]
    fn min_equal_max_pins_the_replica_count() {
        let spec = hpa(json!({"workers": {"minReplicas": 3, "maxReplicas": 3}}));
        assert_eq!(spec["minReplicas"], 3);
        assert_eq!(spec["maxReplicas"], 3);
    }

    #[test]
    fn disruption_budget_allows_one_voluntary_eviction() {
        let children = render(&call_cluster(
            json!({"workers": {"minReplicas": 1, "maxReplicas": 1}}),
        ));
        let pdb = find(&children, "PodDisruptionBudget", "support-worker")
            .to_value()
            .unwrap();
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            "worker"
        );
    }

    #[test]
    fn service_targets_the_worker_port() {
        let children = render(&call_cluster(json!({})));
        let svc = find(&children, "Service", "support-worker")
            .to_value()
            .unwrap();
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    }
}
