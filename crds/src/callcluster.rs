//! CallCluster: one call-handling fleet (call workers, FreeSWITCH media servers, Kamailio SIP
//! edge) and the settings they share.
//!
//! Defaults and validation live in the schema, so `kubectl apply` of a bad spec fails with a
//! clear message and `kubectl get -o yaml` shows every effective value. Image defaults are
//! written into the object when it is created (schema defaulting persists them), so upgrading the
//! operator or its CRD never changes the image of an existing fleet: pods that carry calls only
//! roll when the user edits the spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Image holding `callfleet-worker` (and `callfleet-operator`), tagged with this release.
pub const DEFAULT_WORKER_IMAGE: &str =
    concat!("ghcr.io/callfleet/callfleet:", env!("CARGO_PKG_VERSION"));
/// FreeSWITCH built with `mod_audio_fork` for callfleet.
pub const DEFAULT_MEDIA_IMAGE: &str = "ghcr.io/callfleet/freeswitch:1.10.12";
/// Upstream Kamailio image.
pub const DEFAULT_SIP_IMAGE: &str = "docker.io/kamailio/kamailio:5.8.5-bookworm";

/// A fleet that answers phone calls with an AiPipeline: autoscaled call workers, FreeSWITCH
/// media servers and a Kamailio SIP edge that dispatches calls to ready media servers.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "callfleet.dev",
    version = "v1alpha1",
    kind = "CallCluster",
    plural = "callclusters",
    shortname = "cc",
    category = "callfleet",
    namespaced,
    status = "CallClusterStatus",
    doc = "A fleet that answers phone calls with an AiPipeline: autoscaled call workers, FreeSWITCH media servers and a Kamailio SIP edge.",
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 40").message("metadata.name must be a DNS label of at most 40 characters starting with a letter (child objects append suffixes such as -worker and -media)"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Workers","type":"string","description":"Ready/desired call-worker pods","jsonPath":".status.workers.ready"}"#,
    printcolumn = r#"{"name":"Media","type":"string","description":"Ready/desired FreeSWITCH pods","jsonPath":".status.media.ready"}"#,
    printcolumn = r#"{"name":"SIP","type":"string","description":"Ready/desired Kamailio pods","jsonPath":".status.sip.ready"}"#,
    printcolumn = r#"{"name":"Active calls","type":"integer","jsonPath":".status.activeCalls"}"#,
    printcolumn = r#"{"name":"Pipeline","type":"string","priority":1,"jsonPath":".spec.pipelineRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CallClusterSpec {
    /// The AiPipeline (same namespace) that answers this fleet's calls. Changing it, or the
    /// AiPipeline itself, reaches workers without restarting them: new calls use the new version.
    pub pipeline_ref: PipelineRef,
    /// Call workers: the pods that hold one WebSocket session per call and run the AI pipeline.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// FreeSWITCH media servers: terminate RTP and fork call audio to the workers.
    #[serde(default)]
    pub media: MediaSpec,
    /// Kamailio SIP edge: receives calls from carriers and dispatches them to ready media servers.
    #[serde(default)]
    pub sip: SipSpec,
    /// Redis for the session registry, conversation history and rate limits. Without it every
    /// worker keeps this state in memory: calls cannot resume on another worker and rate limits
    /// are per pod. Not used by the worker yet (it passes the URL on and logs a warning), so
    /// today the in-memory behaviour applies either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// Call recordings streamed to S3-compatible object storage.
    #[serde(default)]
    pub recordings: RecordingsSpec,
    /// PostgreSQL (Supabase works) for call logs. Without it call logs only go to the worker logs.
    /// Not written by the worker yet (it logs a warning when this is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_log: Option<CallLogSpec>,
    /// Per-call and per-client limits enforced by the workers.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Call-token signing secret.
    #[serde(default)]
    pub auth: AuthSpec,
    /// Stops reconciling: children keep their current state until this is false again.
    /// Useful for manual changes during an incident.
    #[serde(default)]
    pub paused: bool,
}

/// A reference to an AiPipeline in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRef {
    /// Name of the AiPipeline.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Call-worker Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("workers.minReplicas must be less than or equal to workers.maxReplicas"),
    validation = Rule::new("self.targetActiveCallsPerPod <= self.maxCallsPerPod").message("workers.targetActiveCallsPerPod must be less than or equal to workers.maxCallsPerPod"),
    validation = Rule::new("self.autoscaling.metric != 'cpu' || (has(self.resources) && has(self.resources.requests) && 'cpu' in self.resources.requests)").message("workers.autoscaling.metric cpu needs workers.resources.requests.cpu (CPU utilization is relative to the request)")
)]
pub struct WorkersSpec {
    /// Image with the `callfleet-worker` binary. Defaults to this operator release's image,
    /// written into the object at creation so operator upgrades never roll workers.
    #[serde(default = "default_worker_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Fewest worker pods; the autoscaler never goes below it.
    #[serde(default = "default_worker_min_replicas")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_replicas: i32,
    /// Most worker pods; the autoscaler never goes above it.
    #[serde(default = "default_worker_max_replicas")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: i32,
    /// Autoscaling target: average concurrent calls per worker pod (for the `activeCalls` and
    /// `external` metrics).
    #[serde(default = "default_target_active_calls_per_pod")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_active_calls_per_pod: i32,
    /// Admission limit: a worker refuses new calls beyond this many concurrent calls.
    #[serde(default = "default_max_calls_per_pod")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_calls_per_pod: i32,
    /// Compute resources of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::resource_requirements")]
    pub resources: Option<ResourceRequirements>,
    /// Which metric drives the HorizontalPodAutoscaler.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// Worker log format.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Load shedding: while a worker's event loop is on average this many milliseconds behind,
    /// the worker reports not ready and refuses new calls (`OVERLOADED`) so the calls it carries
    /// stay real-time. `0` turns shedding off; unset, the worker's default (50 ms) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub overload_lag_ms: Option<i32>,
    /// Event batching: a worker thread carrying calls that runs out of work waits this many
    /// microseconds before taking new events, so under load it takes many calls' frames per
    /// wake-up, while turns (provider requests) run on threads of their own that do not wait
    /// (at 1 ms: 5–14% less CPU per call before resting calls' connections went quiet, none
    /// since; first audio about 1.2 ms later). Unset or `0`: every event is taken as it comes,
    /// turns run beside their calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 20000))]
    pub event_batch_micros: Option<i32>,
    /// Inbound rests: while nothing hangs on the caller's next frames (quiet, or talking with
    /// the last frame loud), a call reads its socket only every this many milliseconds and
    /// takes what arrived in one read (fewer wake-ups and reads per frame; first audio
    /// unchanged). A caller starting to speak, and so a barge-in, is noticed up to this much
    /// later. `0` reads every frame as it comes; unset, the worker's default (60 ms) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub inbound_rest_millis: Option<i32>,
    /// Listening rests: the same while there is nothing to barge into (no reply being prepared
    /// or played), when noticing the start of speech late delays nothing; still never past the
    /// frame that would end the turn. Never shorter than `inboundRestMillis`; `0` makes them
    /// the same; unset, the worker's default (160 ms) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 300))]
    pub listening_rest_millis: Option<i32>,
    /// Wake ticks: calls' timers (ends of rests, reply writes, housekeeping) fall on a grid of
    /// this many milliseconds shared by every call, so that calls due within one tick wake
    /// together (fewer wake-ups). Writes and bounded rests move earlier, never later; a rest's
    /// plain length to the nearest tick (a barge-in noticed up to half a tick later). `0`:
    /// every timer at its own instant; unset, the worker's default (10 ms) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 20))]
    pub wake_tick_millis: Option<i32>,
}

/// How worker pods are autoscaled.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.metric != 'external' || has(self.external)").message("workers.autoscaling.external is required when metric is external")
)]
pub struct AutoscalingSpec {
    /// `activeCalls`: the per-pod `callfleet_active_calls` metric from callfleet's opt-in
    /// custom-metrics API; `cpu`: CPU utilization; `external`: an External metric you serve
    /// yourself (prometheus-adapter, KEDA).
    #[serde(default)]
    pub metric: AutoscalingMetric,
    /// Target average CPU utilization in percent of the request, for the `cpu` metric.
    #[serde(default = "default_target_cpu_utilization_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percent: i32,
    /// The External metric, for the `external` metric. Its target is
    /// `targetActiveCallsPerPod` as an average value per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalMetricSpec>,
}

/// The metric that drives worker autoscaling.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AutoscalingMetric {
    /// Concurrent calls per pod, served by callfleet's custom-metrics API.
    #[default]
    ActiveCalls,
    /// CPU utilization relative to the container's CPU request.
    Cpu,
    /// An External metric served by another adapter.
    External,
}

/// An External metric (`external.metrics.k8s.io`) that counts calls.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricSpec {
    /// Metric name as served by the external metrics adapter.
    #[schemars(length(min = 1))]
    pub metric_name: String,
    /// Label selector narrowing the metric, e.g. `{callcluster: my-fleet}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// Worker log format.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    #[default]
    Json,
}

/// FreeSWITCH StatefulSet, headless Service and configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(self.rtpPortRange.end - self.rtpPortRange.start + 1) / 2 >= self.maxSessionsPerPod").message("media.rtpPortRange holds fewer RTP/RTCP port pairs than media.maxSessionsPerPod")
)]
pub struct MediaSpec {
    /// FreeSWITCH image.
    #[serde(default = "default_media_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Number of FreeSWITCH pods. 0 runs none (a fleet that only takes Twilio Media Streams or
    /// the JSON protocol directly).
    #[serde(default = "default_media_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// SIP port FreeSWITCH listens on; Kamailio dispatches to `<pod IP>:<sipPort>`.
    #[serde(default = "default_media_sip_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub sip_port: i32,
    /// UDP ports FreeSWITCH uses for RTP (even) and RTCP (odd).
    #[serde(default)]
    pub rtp_port_range: RtpPortRange,
    /// Run FreeSWITCH in the node's network namespace, so RTP reaches it without NAT. At most
    /// one media pod then runs per node.
    #[serde(default)]
    pub host_network: bool,
    /// Most concurrent calls per FreeSWITCH pod; also the dispatcher's `maxload`.
    #[serde(default = "default_max_sessions_per_pod")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_sessions_per_pod: i32,
    /// On scale-down or rollout, how long a FreeSWITCH pod refuses new calls and waits for its
    /// calls to end before it stops.
    #[serde(default = "default_drain_timeout_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub drain_timeout_seconds: i32,
    /// Compute resources of the FreeSWITCH container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::resource_requirements")]
    pub resources: Option<ResourceRequirements>,
}

/// An inclusive UDP port range.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.start < self.end").message("rtpPortRange.start must be less than rtpPortRange.end"),
    validation = Rule::new("self.start % 2 == 0").message("rtpPortRange.start must be even (RTP uses even ports, RTCP the next odd one)")
)]
pub struct RtpPortRange {
    /// First port (even).
    #[serde(default = "default_rtp_start")]
    #[schemars(range(min = 1024, max = 65535))]
    pub start: i32,
    /// Last port.
    #[serde(default = "default_rtp_end")]
    #[schemars(range(min = 1024, max = 65535))]
    pub end: i32,
}

/// Kamailio Deployment, Service and configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SipSpec {
    /// Kamailio image.
    #[serde(default = "default_sip_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Number of Kamailio pods.
    #[serde(default = "default_sip_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// The Service carriers send SIP to.
    #[serde(default)]
    pub service: SipServiceSpec,
    /// How Kamailio picks a media server for a new call.
    #[serde(default)]
    pub dispatch_algorithm: DispatchAlgorithm,
    /// Interval of SIP OPTIONS probes to media servers; a server that fails them (a draining
    /// FreeSWITCH answers 503) stops receiving calls.
    #[serde(default = "default_probe_interval_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub probe_interval_seconds: i32,
    /// Compute resources of the Kamailio container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::resource_requirements")]
    pub resources: Option<ResourceRequirements>,
}

/// The SIP edge Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type != 'ClusterIP' || self.externalTrafficPolicy == 'Cluster'").message("sip.service.externalTrafficPolicy Local needs type NodePort or LoadBalancer")
)]
pub struct SipServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: SipServiceType,
    /// SIP port, on the Service and in Kamailio.
    #[serde(default = "default_sip_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Transports Kamailio listens on and the Service exposes.
    #[serde(default = "default_transports")]
    #[schemars(length(min = 1))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub transports: Vec<SipTransport>,
    /// `Local` keeps the caller's source address (SIP and NAT handling need it) and only sends
    /// traffic to nodes running Kamailio.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// Annotations for the Service, e.g. cloud load-balancer settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service type for the SIP edge.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SipServiceType {
    /// Reachable inside the cluster only.
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// An external load balancer.
    #[default]
    LoadBalancer,
}

/// Service external traffic policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    /// Any node forwards to any Kamailio pod; the source address is lost.
    #[default]
    Cluster,
    /// Nodes forward only to local Kamailio pods; the source address is kept.
    Local,
}

/// A SIP transport.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum SipTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
}

/// Kamailio dispatcher algorithm.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DispatchAlgorithm {
    /// Each new call to the next media server in turn.
    #[default]
    RoundRobin,
    /// Randomly, in proportion to each media server's weight.
    Weight,
    /// To the media server with the fewest active calls (bounded by `maxSessionsPerPod`).
    CallLoad,
    /// By a hash of the Call-ID, so retransmissions and re-INVITEs land on the same server.
    HashCallId,
}

/// Redis connection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Secret key holding the Redis URL (`redis://`, `rediss://`), or a comma-separated list of
    /// Redis Cluster node URLs.
    pub url_secret_ref: UrlSecretRef,
}

/// Call recordings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.enabled || (has(self.bucket) && has(self.credentialsSecretRef))").message("recordings.bucket and recordings.credentialsSecretRef are required when recordings.enabled is true")
)]
pub struct RecordingsSpec {
    /// Record calls: an 8 kHz stereo WAV per call, the caller left and the assistant right,
    /// spooled on the worker and uploaded when the call ends.
    #[serde(default)]
    pub enabled: bool,
    /// S3-compatible endpoint URL; AWS S3 when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
    /// Region for request signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Bucket name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 63))]
    pub bucket: Option<String>,
    /// Object key prefix, used as is; objects are named
    /// `<prefix><YYYY>/<MM>/<DD>/<call id>-<HHMMSSmmm>.wav` (UTC start of the call).
    #[serde(default = "default_recordings_prefix")]
    pub prefix: String,
    /// Secret holding the access key id and secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<S3CredentialsRef>,
    /// Audio encoding of recordings.
    #[serde(default)]
    pub format: RecordingFormat,
}

/// Recording encoding.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RecordingFormat {
    /// WAV, 16-bit linear PCM at 8 kHz.
    #[default]
    Wav,
    /// WAV, G.711 µ-law at 8 kHz: half the size.
    WavMulaw,
}

/// S3 credentials in a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

/// Call log database.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallLogSpec {
    /// Secret key holding the PostgreSQL URL (`postgres://user:pass@host:5432/db`).
    pub url_secret_ref: UrlSecretRef,
}

/// A Secret key holding a connection URL.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_url_key")]
    pub key: String,
}

/// Limits the workers enforce.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.idleTimeoutSeconds <= self.maxCallDurationSeconds").message("limits.idleTimeoutSeconds must not exceed limits.maxCallDurationSeconds")
)]
pub struct LimitsSpec {
    /// New calls per client IP per minute; more are refused with `RATE_LIMIT`.
    #[serde(default = "default_requests_per_minute_per_ip")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute_per_ip: i32,
    /// A call is ended cleanly after this long.
    #[serde(default = "default_max_call_duration_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub max_call_duration_seconds: i32,
    /// A call with no inbound audio for this long is ended.
    #[serde(default = "default_idle_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub idle_timeout_seconds: i32,
}

/// Call-token settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret key holding the HMAC secret that signs call tokens. When absent the operator
    /// generates 32 random bytes into Secret `<name>-call-token` (key `token-secret`) once and
    /// never overwrites it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<TokenSecretRef>,
}

/// A Secret key holding the call-token HMAC secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_token_secret_key")]
    pub key: String,
}

/// Observed state of a CallCluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded` and `ReconciliationPaused`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Call-worker pods.
    #[serde(default)]
    pub workers: TierStatus,
    /// FreeSWITCH pods.
    #[serde(default)]
    pub media: TierStatus,
    /// Kamailio pods.
    #[serde(default)]
    pub sip: TierStatus,
    /// Calls in progress across all workers, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_calls: Option<i64>,
    /// Media servers Kamailio currently dispatches to (`<ip>:<port>`).
    #[serde(default)]
    pub dispatcher_destinations: Vec<String>,
    /// Where to send calls.
    #[serde(default)]
    pub endpoints: EndpointsStatus,
    /// `metadata.generation` of the AiPipeline currently rendered for the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_generation: Option<i64>,
    /// Secret holding the call-token HMAC secret in use (mint tokens with
    /// `callfleet-worker token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
}

/// Replica counts of one tier.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Desired pods.
    #[serde(default)]
    pub replicas: i32,
    /// Pods passing their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default)]
    pub ready: String,
}

/// Addresses clients use.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsStatus {
    /// SIP URI carriers send calls to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<String>,
    /// In-cluster WebSocket base URL of the workers (`/ws/call-session`, `/ws/twilio`,
    /// `/ws/freeswitch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_web_socket: Option<String>,
}

fn default_worker_image() -> String {
    DEFAULT_WORKER_IMAGE.into()
}
fn default_worker_min_replicas() -> i32 {
    2
}
fn default_worker_max_replicas() -> i32 {
    10
}
fn default_target_active_calls_per_pod() -> i32 {
    1000
}
fn default_max_calls_per_pod() -> i32 {
    10_000
}
fn default_target_cpu_utilization_percent() -> i32 {
    70
}
fn default_media_image() -> String {
    DEFAULT_MEDIA_IMAGE.into()
}
fn default_media_replicas() -> i32 {
    2
}
fn default_media_sip_port() -> i32 {
    5060
}
fn default_rtp_start() -> i32 {
    16384
}
fn default_rtp_end() -> i32 {
    32767
}
fn default_max_sessions_per_pod() -> i32 {
    1000
}
fn default_drain_timeout_seconds() -> i32 {
    330
}
fn default_sip_image() -> String {
    DEFAULT_SIP_IMAGE.into()
}
fn default_sip_replicas() -> i32 {
    2
}
fn default_sip_port() -> i32 {
    5060
}
fn default_transports() -> Vec<SipTransport> {
    vec![SipTransport::Udp, SipTransport::Tcp]
}
fn default_probe_interval_seconds() -> i32 {
    5
}
fn default_recordings_prefix() -> String {
    "recordings/".into()
}
fn default_access_key_id_key() -> String {
    "access-key-id".into()
}
fn default_secret_access_key_key() -> String {
    "secret-access-key".into()
}
fn default_url_key() -> String {
    "url".into()
}
fn default_requests_per_minute_per_ip() -> i32 {
    100
}
fn default_max_call_duration_seconds() -> i32 {
    300
}
fn default_idle_timeout_seconds() -> i32 {
    30
}
fn default_token_secret_key() -> String {
    "token-secret".into()
}

impl Default for WorkersSpec {
    fn default() -> Self {
        Self {
            image: default_worker_image(),
            min_replicas: default_worker_min_replicas(),
            max_replicas: default_worker_max_replicas(),
            target_active_calls_per_pod: default_target_active_calls_per_pod(),
            max_calls_per_pod: default_max_calls_per_pod(),
            resources: None,
            autoscaling: AutoscalingSpec::default(),
            log_format: LogFormat::default(),
            overload_lag_ms: None,
            event_batch_micros: None,
            inbound_rest_millis: None,
            listening_rest_millis: None,
            wake_tick_millis: None,
        }
    }
}
impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            metric: AutoscalingMetric::default(),
            target_cpu_utilization_percent: default_target_cpu_utilization_percent(),
            external: None,
        }
    }
}
impl Default for MediaSpec {
    fn default() -> Self {
        Self {
            image: default_media_image(),
            replicas: default_media_replicas(),
            sip_port: default_media_sip_port(),
            rtp_port_range: RtpPortRange::default(),
            host_network: false,
            max_sessions_per_pod: default_max_sessions_per_pod(),
            drain_timeout_seconds: default_drain_timeout_seconds(),
            resources: None,
        }
    }
}
impl Default for RtpPortRange {
    fn default() -> Self {
        Self {
            start: default_rtp_start(),
            end: default_rtp_end(),
        }
    }
}
impl Default for SipSpec {
    fn default() -> Self {
        Self {
            image: default_sip_image(),
            replicas: default_sip_replicas(),
            service: SipServiceSpec::default(),
            dispatch_algorithm: DispatchAlgorithm::default(),
            probe_interval_seconds: default_probe_interval_seconds(),
            resources: None,
        }
    }
}
impl Default for SipServiceSpec {
    fn default() -> Self {
        Self {
            type_: SipServiceType::default(),
            port: default_sip_port(),
            transports: default_transports(),
            external_traffic_policy: TrafficPolicy::default(),
            annotations: BTreeMap::new(),
        }
    }
}
impl Default for RecordingsSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            region: None,
            bucket: None,
            prefix: default_recordings_prefix(),
            credentials_secret_ref: None,
            format: RecordingFormat::default(),
        }
    }
}
impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            requests_per_minute_per_ip: default_requests_per_minute_per_ip(),
            max_call_duration_seconds: default_max_call_duration_seconds(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
        }
    }
}
