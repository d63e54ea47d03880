//! CallCluster controller: resolve inputs (pipeline, Secrets, ready media pods), render the
//! children with the pure renderers, server-side apply them with one field manager, and write
//! the status computed from what the API server returned.

use std::{fmt::Debug, net::IpAddr, sync::Arc, time::Duration};

use callfleet_crds::{
    AiPipeline, CallCluster, CallClusterStatus,
    conditions::{self, DEGRADED, READY, RECONCILIATION_PAUSED},
};
use futures::future;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Pod, PodStatus, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{GetParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{
    applied::Ticket,
    context::{Context, MANAGER, namespace_of},
    error::{Error, Result},
    secrets,
    triggers::{child_key, fleet_key},
};
pub use crate::render::common::CALLCLUSTER_LABEL;
use crate::render::{
    Child, Destination, GENERATED_TOKEN_HASH, RenderInputs,
    common::names,
    render_call_cluster, render_token_secret,
    status::{
        ApiKeyState, Observed, PipelineState, WorkloadState, ai_pipeline_status,
        call_cluster_status, referenced_secrets,
    },
};

pub const KIND: &str = "CallCluster";

/// Safety net against missed events; children changes trigger reconciles on their own.
const RESYNC: Duration = Duration::from_secs(900);

/// Keeps only what dispatch needs of a media pod, so the cache stays small at 1,000 fleets.
pub fn trim_media_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.owner_references = None;
    pod.spec = None;
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            pod_ip: status.pod_ip,
            conditions: status.conditions.map(|c| {
                c.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .collect::<Vec<_>>()
            }),
            phase: status.phase,
            ..PodStatus::default()
        });
    }
}

/// Pure: the ready, non-terminating media pods of `cc`, as dispatcher destinations, sorted by
/// pod name.
pub fn dispatcher_destinations(cc: &CallCluster, pods: &[Arc<Pod>]) -> Vec<Destination> {
    let namespace = cc.namespace();
    let name = cc.name_any();
    let mut out: Vec<Destination> = pods
        .iter()
        .filter(|p| p.namespace() == namespace)
        .filter(|p| p.labels().get(CALLCLUSTER_LABEL) == Some(&name))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
            ready.then(|| Destination::for_media_pod(&cc.spec.media, p.name_any(), ip))
        })
        .collect();
    out.sort();
    out
}

/// Pure: whether a Secret named `secret` (in the CallCluster's namespace) matters to `cc`,
/// directly or as the API key of its pipeline.
pub fn references_secret(cc: &CallCluster, pipelines: &[Arc<AiPipeline>], secret: &str) -> bool {
    if referenced_secrets(cc).iter().any(|s| s == secret) {
        return true;
    }
    if cc.spec.auth.token_secret_ref.is_none() && names::call_token(&cc.name_any()) == secret {
        return true;
    }
    pipelines.iter().any(|p| {
        p.namespace() == cc.namespace()
            && p.name_any() == cc.spec.pipeline_ref.name
            && p.spec.provider.api_key_secret_ref.name == secret
    })
}

/// An Event worth telling a human about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// Pure: Events for condition transitions between two condition lists (degraded and
/// recovered, ready, paused and resumed). Unchanged conditions produce nothing, so repeated
/// reconciles stay quiet.
pub fn transition_notices(old: &[Condition], new: &[Condition]) -> Vec<Notice> {
    let changed = |type_: &str| -> Option<(&Condition, Option<&Condition>)> {
        let now = conditions::find(new, type_)?;
        let before = conditions::find(old, type_);
        let same = before.is_some_and(|b| b.status == now.status && b.reason == now.reason);
        (!same).then_some((now, before))
    };
    let was_true = |c: Option<&Condition>| c.is_some_and(|c| c.status == "True");
    let mut out = Vec::new();
    if let Some((now, before)) = changed(DEGRADED) {
        if now.status == "True" {
            out.push(Notice {
                warning: true,
                reason: now.reason.clone(),
                note: now.message.clone(),
            });
        } else if was_true(before) {
            out.push(Notice {
                warning: false,
                reason: "Recovered".into(),
                note: "no longer degraded".into(),
            });
        }
    }
    if let Some((now, _)) = changed(READY)
        && now.status == "True"
    {
        out.push(Notice {
            warning: false,
            reason: "Ready".into(),
            note: now.message.clone(),
        });
    }
    if let Some((now, before)) = changed(RECONCILIATION_PAUSED) {
        if now.status == "True" {
            out.push(Notice {
                warning: false,
                reason: "ReconciliationPaused".into(),
                note: now.message.clone(),
            });
        } else if was_true(before) {
            out.push(Notice {
                warning: false,
                reason: "ReconciliationResumed".into(),
                note: "spec.paused is false: reconciling children again".into(),
            });
        }
    }
    out
}

/// The workloads and SIP Service as the API server last returned them.
#[derive(Default)]
struct Children {
    workers: Option<Deployment>,
    media: Option<StatefulSet>,
    sip: Option<Deployment>,
    sip_service: Option<Service>,
}

impl Children {
    fn sip_ingress(&self) -> Option<String> {
        let ingress = self
            .sip_service
            .as_ref()?
            .status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .as_ref()?
            .first()?
            .clone();
        ingress.ip.or(ingress.hostname)
    }
}

#[tracing::instrument(skip_all, fields(kind = KIND, name = %cc.name_any(), namespace = cc.namespace().unwrap_or_default()))]
pub async fn reconcile(cc: Arc<CallCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let namespace = namespace_of(KIND, cc.as_ref())?;
    let name = cc.name_any();
    let client = &ctx.client;
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let now = Time(Timestamp::now());

    let pipeline: Option<AiPipeline> = get(client, &namespace, &cc.spec.pipeline_ref.name).await?;
    let pipeline_state = match &pipeline {
        None => PipelineState::Missing,
        Some(p) => {
            let key_ref = &p.spec.provider.api_key_secret_ref;
            let generation = p.metadata.generation.unwrap_or_default();
            match secrets::key_state(&secret_api, &key_ref.name, &key_ref.key).await? {
                ApiKeyState::Present => PipelineState::Ready { generation },
                problem => PipelineState::NotReady {
                    generation,
                    message: ai_pipeline_status(p, problem, Vec::new(), &now)
                        .conditions
                        .first()
                        .map(|c| c.message.clone())
                        .unwrap_or_default(),
                },
            }
        }
    };
    let mut missing_secrets = Vec::new();
    for secret in referenced_secrets(&cc) {
        if !secrets::exists(&secret_api, &secret).await? {
            missing_secrets.push(secret);
        }
    }
    caches_listed(&ctx).await;
    let destinations = dispatcher_destinations(&cc, &ctx.media_pods.state());

    let mut children = Children::default();
    let mut apply_error = None;
    let mut applied = 0usize;
    if !cc.spec.paused {
        let render_error = |e: crate::render::RenderError| Error::Render {
            name: name.clone(),
            message: e.to_string(),
        };
        let inputs = RenderInputs {
            pipeline: pipeline.as_ref(),
            new_token_secret: None,
            dispatcher_destinations: &destinations,
        };
        let mut rendered = render_call_cluster(&cc, &inputs).map_err(render_error)?;
        let fleet = fleet_key(&namespace, &name);
        let mut keyed = Vec::with_capacity(rendered.len() + 1);
        for child in &mut rendered {
            let hash = child.stamp_rendered_hash().map_err(render_error)?;
            keyed.push((child_key(child.kind(), &namespace, child.name()), hash));
        }
        // A generated token is tracked like any child but never rendered into the hash (it is
        // random): planned when never seen or deleted since, then created only if absent.
        let generated_token = cc.spec.auth.token_secret_ref.is_none();
        if generated_token {
            keyed.push((
                child_key("Secret", &namespace, &names::call_token(&name)),
                GENERATED_TOKEN_HASH,
            ));
        }
        let mut plan = ctx.applied.plan(&fleet, &keyed);
        let token_ticket = if generated_token {
            plan.pop().flatten()
        } else {
            None
        };
        let mut to_apply: Vec<(Child, Ticket)> = rendered
            .into_iter()
            .zip(plan)
            .filter_map(|(child, ticket)| Some((child, ticket?)))
            .collect();
        if let Some(ticket) = token_ticket {
            if secrets::exists_now(&secret_api, &names::call_token(&name)).await? {
                ctx.applied.applied(&fleet, &ticket);
            } else {
                let bytes: [u8; 32] = rand::random();
                let mut secret = render_token_secret(&cc, &bytes).map_err(render_error)?;
                secret.annotate_rendered_hash(GENERATED_TOKEN_HASH);
                to_apply.push((secret, ticket));
            }
        }
        if to_apply.is_empty() {
            tracing::debug!("children unchanged since the last apply; reading status only");
        } else {
            let (count, error) =
                apply_children(&ctx, &namespace, &fleet, to_apply, &mut children).await;
            applied = count;
            apply_error = error;
        }
    }
    // Overload and lost connections are retried with backoff, not reported as Degraded.
    if let Some(error) = apply_error.take_if(|e| e.is_transient()) {
        return Err(error);
    }
    read_missing_children(&ctx, &namespace, &name, &mut children).await?;

    let observed = Observed {
        pipeline: pipeline_state,
        missing_secrets,
        workers: children
            .workers
            .as_ref()
            .map(WorkloadState::from_deployment),
        media: children
            .media
            .as_ref()
            .map(WorkloadState::from_stateful_set),
        sip: children.sip.as_ref().map(WorkloadState::from_deployment),
        active_calls: None,
        dispatcher_destinations: &destinations,
        sip_ingress: children.sip_ingress(),
        apply_error: apply_error.as_ref().map(ToString::to_string),
    };
    let status = call_cluster_status(&cc, &observed, &now);
    let previous = cc.status.clone().unwrap_or_default();
    if cc.status.as_ref() != Some(&status) {
        patch_status(&ctx, &namespace, &name, &status).await?;
    }
    publish_events(&ctx, &cc, &previous, &status, applied).await;
    if let Some(error) = apply_error {
        return Err(error);
    }
    ctx.reset_backoff(KIND, cc.as_ref());
    Ok(Action::requeue(RESYNC))
}

/// Child kinds the controller owns and watches (ConfigMap, Secret, Service, Deployment,
/// StatefulSet, HorizontalPodAutoscaler, PodDisruptionBudget).
pub const OWNED_KINDS: usize = 7;
/// How long a new term's first reconciles wait for their caches' initial lists.
const CHILD_LIST_LIMIT: Duration = Duration::from_secs(30);

/// A new term renders only once its caches have listed: the child watches (whose annotations
/// say what an earlier term applied) and the media pods (the dispatcher list; rendered from a
/// cache still listing, Kamailio would be handed an empty or partial list and then the full one
/// again). Bounded: a watch that cannot list delays reconciling, never stops it.
async fn caches_listed(ctx: &Context) {
    let pods = async {
        let _ = ctx.media_pods.wait_until_ready().await;
    };
    let children = ctx.applied.wait_listed(OWNED_KINDS, CHILD_LIST_LIMIT);
    let _ = tokio::time::timeout(CHILD_LIST_LIMIT, future::join(children, pods)).await;
}

/// Configuration and Secrets first (workloads mount them), then everything else; each phase
/// in parallel, so a reconcile costs two round trips of latency, not thirteen. Each success is
/// recorded in the applied cache; returns how many were applied and the first error (which
/// stops before the next phase).
async fn apply_children(
    ctx: &Context,
    namespace: &str,
    fleet: &str,
    to_apply: Vec<(Child, Ticket)>,
    children: &mut Children,
) -> (usize, Option<Error>) {
    let (config, rest): (Vec<_>, Vec<_>) = to_apply
        .iter()
        .partition(|(c, _)| matches!(c, Child::ConfigMap(_) | Child::Secret(_)));
    let mut applied = 0;
    let mut first_error = None;
    for phase in [config, rest] {
        let results = future::join_all(phase.into_iter().map(|(child, ticket)| async move {
            apply_child(ctx, namespace, child)
                .await
                .map(|done| (done, child.kind(), ticket))
        }))
        .await;
        for result in results {
            match result {
                Ok((done, kind, ticket)) => {
                    applied += 1;
                    ctx.metrics.applied(kind);
                    ctx.applied.applied(fleet, ticket);
                    children.record(done);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            break;
        }
    }
    (applied, first_error)
}

/// An applied child as the API server returned it, when status needs it.
enum Applied {
    Workers(Deployment),
    Media(StatefulSet),
    Sip(Deployment),
    SipService(Service),
    Other,
}

impl Children {
    fn record(&mut self, applied: Applied) {
        match applied {
            Applied::Workers(d) => self.workers = Some(d),
            Applied::Media(s) => self.media = Some(s),
            Applied::Sip(d) => self.sip = Some(d),
            Applied::SipService(s) => self.sip_service = Some(s),
            Applied::Other => {}
        }
    }
}

fn component(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/component"))
        .map(String::as_str)
}

/// Server-side applies one child.
async fn apply_child(ctx: &Context, namespace: &str, child: &Child) -> Result<Applied> {
    Ok(match child {
        Child::ConfigMap(o) => apply(ctx, namespace, o).await.map(|_| Applied::Other)?,
        Child::Secret(o) => apply(ctx, namespace, o).await.map(|_| Applied::Other)?,
        Child::Service(o) => {
            let svc = apply(ctx, namespace, o).await?;
            match component(&o.metadata) {
                Some("sip") => Applied::SipService(svc),
                _ => Applied::Other,
            }
        }
        Child::Deployment(o) => {
            let d = apply(ctx, namespace, o).await?;
            match component(&o.metadata) {
                Some("worker") => Applied::Workers(d),
                Some("sip") => Applied::Sip(d),
                _ => Applied::Other,
            }
        }
        Child::StatefulSet(o) => Applied::Media(apply(ctx, namespace, o).await?),
        Child::HorizontalPodAutoscaler(o) => {
            apply(ctx, namespace, o).await.map(|_| Applied::Other)?
        }
        Child::PodDisruptionBudget(o) => apply(ctx, namespace, o).await.map(|_| Applied::Other)?,
    })
}

/// Server-side apply with the operator's field manager. `force` takes over fields another
/// manager (a user's `kubectl edit`) changed: the CallCluster spec is the source of truth.
async fn apply<K>(ctx: &Context, namespace: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let result = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: K::kind(&()).into_owned(),
            name: name.clone(),
            source,
        })?;
    // So the watch event of our own write is not mistaken for someone else's edit.
    ctx.applied.wrote(
        child_key(&K::kind(&()), namespace, &name),
        result.meta().resource_version.clone(),
    );
    Ok(result)
}

/// Children not applied this round (paused, pipeline missing, apply stopped early) are read
/// as they are, so status still reports them.
async fn read_missing_children(
    ctx: &Context,
    namespace: &str,
    name: &str,
    c: &mut Children,
) -> Result<()> {
    let client = &ctx.client;
    if c.workers.is_none() {
        c.workers = get(client, namespace, &names::worker(name)).await?;
    }
    if c.media.is_none() {
        c.media = get(client, namespace, &names::media(name)).await?;
    }
    if c.sip.is_none() {
        c.sip = get(client, namespace, &names::sip(name)).await?;
    }
    if c.sip_service.is_none() {
        c.sip_service = get(client, namespace, &names::sip(name)).await?;
    }
    Ok(())
}

/// Reads a child from the API server's watch cache (`resourceVersion=0`): status reads need
/// not cost an etcd round trip, and the cache is at least as new as the event that triggered us.
async fn get<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    match Api::<K>::namespaced(client.clone(), namespace)
        .get_with(name, &GetParams::any())
        .await
    {
        Ok(obj) => Ok(Some(obj)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(source) => Err(Error::Read {
            what: format!("{} {name}", K::kind(&())),
            source,
        }),
    }
}

async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &CallClusterStatus,
) -> Result<()> {
    let api: Api<CallCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": CallCluster::api_version(&()),
        "kind": CallCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
    .map_err(|source| Error::Status {
        name: name.to_owned(),
        source,
    })
}

async fn publish_events(
    ctx: &Context,
    cc: &CallCluster,
    previous: &CallClusterStatus,
    status: &CallClusterStatus,
    applied: usize,
) {
    let generation_changed = previous.observed_generation != cc.metadata.generation;
    if applied > 0 && generation_changed {
        let (reason, verb) = if previous.observed_generation.is_none() {
            ("Created", "created")
        } else {
            ("Updated", "applied spec changes to")
        };
        let note = format!(
            "{verb} {applied} child objects (generation {})",
            cc.metadata.generation.unwrap_or_default()
        );
        ctx.event(cc, EventType::Normal, reason, "Apply", note)
            .await;
    }
    for notice in transition_notices(&previous.conditions, &status.conditions) {
        let type_ = if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(cc, type_, &notice.reason, "Reconcile", notice.note)
            .await;
    }
}

pub fn error_policy(cc: Arc<CallCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_error(KIND, cc.as_ref(), error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use callfleet_crds::CallClusterSpec;
    use k8s_openapi::api::core::v1::PodCondition;
    use std::collections::BTreeMap;

    fn cc(yaml: &str) -> CallCluster {
        let spec: CallClusterSpec = serde_yaml::from_str(yaml).unwrap();
        let mut cc = CallCluster::new("fleet", spec);
        cc.metadata.namespace = Some("calls".into());
        cc
    }

    fn pod(
        name: &str,
        cluster: &str,
        ip: Option<&str>,
        ready: bool,
        terminating: bool,
    ) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("calls".into());
        p.metadata.labels = Some(BTreeMap::from([(CALLCLUSTER_LABEL.into(), cluster.into())]));
        if terminating {
            p.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
            );
        }
        p.status = Some(PodStatus {
            pod_ip: ip.map(Into::into),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        Arc::new(p)
    }

    #[test]
    fn destinations_are_ready_running_pods_of_this_cluster() {
        let cc = cc("pipelineRef: {name: p}\nmedia: {sipPort: 5080}");
        let pods = vec![
            pod("fleet-media-1", "fleet", Some("10.0.0.2"), true, false),
            pod("fleet-media-0", "fleet", Some("10.0.0.1"), true, false),
            pod("fleet-media-2", "fleet", Some("10.0.0.3"), false, false),
            pod("fleet-media-3", "fleet", Some("10.0.0.4"), true, true),
            pod("fleet-media-4", "fleet", None, true, false),
            pod("other-media-0", "other", Some("10.0.0.9"), true, false),
        ];
        let d = dispatcher_destinations(&cc, &pods);
        let addresses: Vec<String> = d.iter().map(Destination::address).collect();
        assert_eq!(addresses, vec!["10.0.0.1:5080", "10.0.0.2:5080"]);
        assert_eq!(d[0].pod_name, "fleet-media-0");
    }

    #[test]
    fn trimmed_pod_keeps_what_dispatch_needs() {
        let mut p = (*pod("fleet-media-0", "fleet", Some("10.0.0.1"), true, false)).clone();
        p.spec = Some(Default::default());
        p.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
        trim_media_pod(&mut p);
        assert!(p.spec.is_none() && p.metadata.annotations.is_none());
        let cc = cc("pipelineRef: {name: p}");
        assert_eq!(dispatcher_destinations(&cc, &[Arc::new(p)]).len(), 1);
    }

    #[test]
    fn secrets_map_to_the_clusters_that_use_them() {
        let cc = cc("pipelineRef: {name: assistant}\nredis: {urlSecretRef: {name: redis}}");
        let pipeline: AiPipeline = serde_yaml::from_str(
            "apiVersion: callfleet.dev/v1alpha1\nkind: AiPipeline\nmetadata: {name: assistant, namespace: calls}\nspec: {provider: {apiKeySecretRef: {name: openai}}}",
        )
        .unwrap();
        let pipelines = vec![Arc::new(pipeline)];
        assert!(references_secret(&cc, &pipelines, "redis"));
        assert!(references_secret(&cc, &pipelines, "openai"));
        assert!(references_secret(&cc, &pipelines, "fleet-call-token"));
        assert!(!references_secret(&cc, &pipelines, "unrelated"));
        assert!(!references_secret(&cc, &[], "openai"));
    }

    fn cond(type_: &str, status: bool, reason: &str) -> Condition {
        conditions::condition(
            type_,
            status,
            reason,
            format!("{reason} message"),
            Some(1),
            &Time(Timestamp::UNIX_EPOCH),
        )
    }

    #[test]
    fn unchanged_observations_write_no_status() {
        let mut cc = cc("pipelineRef: {name: p}");
        cc.metadata.generation = Some(1);
        let tier = |n| WorkloadState {
            desired: n,
            ready: n,
            updated: n,
            observed_current: true,
        };
        let observed = Observed {
            pipeline: PipelineState::Ready { generation: 1 },
            missing_secrets: vec![],
            workers: Some(tier(2)),
            media: Some(tier(2)),
            sip: Some(tier(2)),
            active_calls: None,
            dispatcher_destinations: &[],
            sip_ingress: None,
            apply_error: None,
        };
        let first = call_cluster_status(&cc, &observed, &Time(Timestamp::UNIX_EPOCH));
        cc.status = Some(first.clone());
        let later = Time(Timestamp::from_second(3600).unwrap());
        // The reconcile compares whole statuses: equal means no write (and no watch event).
        assert_eq!(call_cluster_status(&cc, &observed, &later), first);
        let degraded = Observed {
            pipeline: PipelineState::Missing,
            ..observed.clone()
        };
        let changed = call_cluster_status(&cc, &degraded, &later);
        assert_ne!(changed, first);
        let notices = transition_notices(&first.conditions, &changed.conditions);
        assert_eq!(notices[0].reason, "PipelineNotFound");
        assert!(notices[0].note.contains("\"p\""), "{}", notices[0].note);
    }

    #[test]
    fn notices_only_on_transitions() {
        let healthy = vec![
            cond(READY, true, "AllReady"),
            cond(DEGRADED, false, "AsExpected"),
        ];
        let degraded = vec![
            cond(READY, false, "PipelineNotFound"),
            cond(DEGRADED, true, "PipelineNotFound"),
        ];
        assert!(transition_notices(&healthy, &healthy).is_empty());

        let n = transition_notices(&healthy, &degraded);
        assert_eq!(n.len(), 1);
        assert!(n[0].warning);
        assert_eq!(n[0].reason, "PipelineNotFound");
        assert_eq!(n[0].note, "PipelineNotFound message");

        let n = transition_notices(&degraded, &healthy);
        let reasons: Vec<&str> = n.iter().map(|n| n.reason.as_str()).collect();
        assert_eq!(reasons, vec!["Recovered", "Ready"]);

        // First status of a healthy fleet: Ready, and no "Recovered" from nothing.
        let n = transition_notices(&[], &healthy);
        assert_eq!(
            n.iter().map(|n| n.reason.as_str()).collect::<Vec<_>>(),
            vec!["Ready"]
        );

        let paused = vec![cond(RECONCILIATION_PAUSED, true, "Paused")];
        let resumed = vec![cond(RECONCILIATION_PAUSED, false, "Reconciling")];
        assert_eq!(
            transition_notices(&[], &paused)[0].reason,
            "ReconciliationPaused"
        );
        assert_eq!(
            transition_notices(&paused, &resumed)[0].reason,
            "ReconciliationResumed"
        );
        assert!(transition_notices(&[], &resumed).is_empty());
    }
}
