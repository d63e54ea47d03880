//! The two controllers and their watches. [`run`] lives for one term of leadership: every
//! watch and cache is created here and dropped when the term ends, so a standby holds nothing.

pub mod aipipeline;
pub mod applied;
pub mod backoff;
pub mod callcluster;
pub mod context;
pub mod error;
pub mod secrets;
pub mod triggers;

use std::{sync::Arc, time::Duration};

use callfleet_crds::{AiPipeline, CallCluster};
use futures::{FutureExt, StreamExt, TryStreamExt, future};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Pod, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self as runtime_controller},
        events::{Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Readiness};
use applied::AppliedCache;
use context::{Context, MANAGER};

/// Label on every child the operator renders; narrows the `.owns()` watches.
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=callfleet-operator";
/// FreeSWITCH pods, whose readiness and IPs feed the dispatcher list.
const MEDIA_POD_SELECTOR: &str =
    "app.kubernetes.io/managed-by=callfleet-operator,app.kubernetes.io/component=media";

/// How long in-flight reconciles may run after shutdown or loss of leadership. Short: a
/// replica that lost its lease must stop writing soon.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of the controllers, from the command line.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Reported as the Events' reporting instance.
    pub identity: String,
    /// CallClusters reconciled at once. Each applies up to ten children in parallel, so this
    /// bounds the operator's in-flight requests (API priority and fairness sheds the excess
    /// with 429s).
    pub concurrency: u16,
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers until `term` is cancelled (shutdown or lost leadership), letting
/// in-flight reconciles finish.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    term: CancellationToken,
) {
    let ns = config.namespace.as_deref();

    let applied = Arc::new(AppliedCache::default());

    // CallClusters: the generation predicate drops our own status writes.
    let (cc_store, cc_writer) = reflector::store();
    let forget_deleted = applied.clone();
    let cc_trigger = watcher(
        scoped::<CallCluster>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .inspect_ok(move |event| {
        if let watcher::Event::Delete(cc) = event {
            let namespace = cc.namespace().unwrap_or_default();
            forget_deleted.forget(&triggers::fleet_key(&namespace, &cc.name_any()));
        }
    })
    .reflect(cc_writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());

    let (pipeline_store, pipeline_writer) = reflector::store();
    let pipeline_trigger = watcher(
        scoped::<AiPipeline>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(pipeline_writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());

    // Only what dispatch needs is kept of each media pod.
    let (pod_store, pod_writer) = reflector::store();
    let media_pods = watcher(
        scoped::<Pod>(&client, ns),
        watcher::Config::default().labels(MEDIA_POD_SELECTOR),
    )
    .default_backoff()
    .modify(callcluster::trim_media_pod)
    .reflect(pod_writer);
    let media_pods = triggers::changes(media_pods, triggers::media_pod_state);

    let ctx = Arc::new(Context {
        applied: applied.clone(),
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(config.identity.clone()),
            },
        ),
        metrics,
        backoff: Default::default(),
        call_clusters: cc_store.clone(),
        pipelines: pipeline_store.clone(),
        media_pods: pod_store.clone(),
    });

    // Cancellable: if a watch never lists (CRD not installed), shutdown must not wait on it.
    let stores_ready = {
        let (cc, p, pods) = (cc_store.clone(), pipeline_store.clone(), pod_store.clone());
        let term = term.clone();
        async move {
            let synced = future::try_join3(
                cc.wait_until_ready(),
                p.wait_until_ready(),
                pods.wait_until_ready(),
            );
            tokio::select! {
                () = term.cancelled() => {}
                r = synced => if r.is_ok() {
                    tracing::info!("caches synced; reconciling");
                    readiness.set_synced();
                },
            }
        }
    };

    let cc_for_pipelines = cc_store.clone();
    let pipelines_for_cc = pipeline_store.clone();
    let cc_for_secrets = cc_store.clone();
    let cc_for_pods = cc_store.clone();
    let call_clusters = Controller::for_stream(cc_trigger, cc_store.clone())
        // Every child kind: spec changes and deletions by others mark the fleet for re-apply;
        // status churn is filtered down to what the reconcile reads.
        .owns_stream(owned::<PartialObjectMeta<ConfigMap>>(
            &client,
            ns,
            &applied,
            triggers::any_change,
            triggers::nothing,
        ))
        .owns_stream(owned::<PartialObjectMeta<Secret>>(
            &client,
            ns,
            &applied,
            triggers::any_change,
            triggers::nothing,
        ))
        .owns_stream(owned::<PartialObjectMeta<Service>>(
            &client,
            ns,
            &applied,
            triggers::any_change,
            triggers::nothing,
        ))
        .owns_stream(owned::<Deployment>(
            &client,
            ns,
            &applied,
            triggers::spec_generation,
            triggers::deployment_state,
        ))
        .owns_stream(owned::<StatefulSet>(
            &client,
            ns,
            &applied,
            triggers::spec_generation,
            triggers::stateful_set_state,
        ))
        .owns_stream(owned::<HorizontalPodAutoscaler>(
            &client,
            ns,
            &applied,
            triggers::spec_generation,
            triggers::nothing,
        ))
        .owns_stream(owned::<PodDisruptionBudget>(
            &client,
            ns,
            &applied,
            triggers::spec_generation,
            triggers::nothing,
        ))
        // Any AiPipeline change (spec or Ready) re-renders the pipeline ConfigMap and status of
        // the CallClusters that use it.
        .watches_stream(
            triggers::changes(
                watcher(
                    scoped::<AiPipeline>(&client, ns),
                    watcher::Config::default(),
                )
                .default_backoff(),
                triggers::pipeline_state,
            ),
            move |p| {
                let ns = p.namespace();
                let name = p.name_any();
                refs(
                    cc_for_pipelines
                        .state()
                        .into_iter()
                        .filter(|cc| cc.namespace() == ns && cc.spec.pipeline_ref.name == name),
                )
            },
        )
        .watches_stream(secret_meta(&client, ns), move |secret| {
            let ns = secret.namespace();
            let name = secret.name_any();
            let pipelines = pipelines_for_cc.state();
            refs(cc_for_secrets.state().into_iter().filter(|cc| {
                cc.namespace() == ns && callcluster::references_secret(cc, &pipelines, &name)
            }))
        })
        .watches_stream(media_pods, move |pod| {
            let ns = pod.namespace();
            let owner = pod.labels().get(callcluster::CALLCLUSTER_LABEL).cloned();
            refs(cc_for_pods.state().into_iter().filter(|cc| {
                cc.namespace() == ns && owner.as_deref() == Some(cc.name_any().as_str())
            }))
        })
        .with_config(runtime_controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(term.clone().cancelled_owned())
        .run(
            callcluster::reconcile,
            callcluster::error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move { log_result(callcluster::KIND, result) });

    let pipelines_for_secrets = pipeline_store.clone();
    let pipelines_for_cc_events = pipeline_store.clone();
    let pipelines = Controller::for_stream(pipeline_trigger, pipeline_store.clone())
        .watches_stream(secret_meta(&client, ns), move |secret| {
            let ns = secret.namespace().unwrap_or_default();
            refs(
                aipipeline::pipelines_using_secret(
                    &pipelines_for_secrets.state(),
                    &ns,
                    &secret.name_any(),
                )
                .into_iter(),
            )
        })
        // `usedBy`: a CallCluster event may add or drop a user of any pipeline in its
        // namespace (its pipelineRef may have moved), so recheck them all; cheap, as only
        // status is written and only on change.
        .watches_stream(
            triggers::changes(
                watcher(
                    scoped::<CallCluster>(&client, ns),
                    watcher::Config::default(),
                )
                .default_backoff(),
                triggers::pipeline_ref,
            ),
            move |cc| {
                let ns = cc.namespace();
                refs(
                    pipelines_for_cc_events
                        .state()
                        .into_iter()
                        .filter(|p| p.namespace() == ns),
                )
            },
        )
        // Coalesces bursts (1,000 CallClusters created at once) into few status writes, and
        // lets the CallCluster cache catch up with the event that triggered us.
        .with_config(runtime_controller::Config::default().debounce(Duration::from_millis(500)))
        .graceful_shutdown_on(term.clone().cancelled_owned())
        .run(aipipeline::reconcile, aipipeline::error_policy, ctx)
        .for_each(|result| async move { log_result(aipipeline::KIND, result) });

    tracing::info!(namespace = ns.unwrap_or("<all>"), "starting controllers");
    let all = async {
        tokio::join!(call_clusters, pipelines, stores_ready);
    };
    tokio::pin!(all);
    tokio::select! {
        () = &mut all => {}
        () = term.cancelled() => {
            // kube-runtime holds a controller until its cache is synced, even through a
            // graceful shutdown: one that never synced (CRD missing) has nothing in flight and
            // is dropped at once; otherwise in-flight reconciles get a bounded grace period.
            let synced = [
                cc_store.wait_until_ready().now_or_never(),
                pipeline_store.wait_until_ready().now_or_never(),
                pod_store.wait_until_ready().now_or_never(),
            ]
            .iter()
            .all(|r| matches!(r, Some(Ok(()))));
            if synced && tokio::time::timeout(SHUTDOWN_GRACE, &mut all).await.is_err() {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running after the grace period; abandoning them");
            }
        }
    }
    tracing::info!("controllers stopped");
}

fn refs<K: Resource<DynamicType = ()>>(objects: impl Iterator<Item = Arc<K>>) -> Vec<ObjectRef<K>> {
    objects.map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

/// Objects per page of a watch's initial list. A new term lists every child kind at once; at
/// 1,000 CallClusters kube's default of 500 full Deployments per page made the restarted
/// operator's peak RSS twice its steady state.
const LIST_PAGE: u32 = 100;

/// Operator-labelled children of one kind, reduced to spec/status changes and deletions.
fn owned<K>(
    client: &Client,
    namespace: Option<&str>,
    applied: &Arc<AppliedCache>,
    spec: fn(&K) -> u64,
    status: fn(&K) -> u64,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let events = watcher(
        scoped::<K>(client, namespace),
        watcher::Config::default()
            .labels(MANAGED_SELECTOR)
            .page_size(LIST_PAGE),
    )
    .default_backoff();
    triggers::child_changes(events, spec, status, applied.clone())
}

/// Every Secret's metadata: referenced Secrets (API keys, URLs) belong to users and carry no
/// label of ours. Names are all the mapping needs.
fn secret_meta(
    client: &Client,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
{
    watcher(
        scoped::<PartialObjectMeta<Secret>>(client, namespace),
        watcher::Config::default().page_size(LIST_PAGE),
    )
    .default_backoff()
    .touched_objects()
}

fn log_result<K, E>(
    kind: &'static str,
    result: Result<
        (ObjectRef<K>, runtime_controller::Action),
        runtime_controller::Error<E, watcher::Error>,
    >,
) where
    K: Resource,
    E: std::error::Error,
{
    match result {
        Ok((obj, _)) => tracing::debug!(kind, object = %obj, "reconciled"),
        // Reconcile errors are already logged and counted by the error policy.
        Err(runtime_controller::Error::ReconcilerFailed(_, _)) => {}
        Err(runtime_controller::Error::ObjectNotFound(obj)) => {
            tracing::debug!(kind, object = %obj, "object gone before reconcile")
        }
        Err(runtime_controller::Error::QueueError(watcher::Error::InitialListFailed(
            kube::Error::Api(status),
        ))) if status.code == 404 => tracing::error!(
            kind,
            "the {kind} controller cannot list its resources: the callfleet.dev CRDs are not installed (helm install the chart, or kubectl apply its templates/crds); retrying"
        ),
        Err(error) => tracing::warn!(kind, %error, "controller stream error"),
    }
}
