//! Prometheus metrics and the probe/metrics HTTP server (`/healthz`, `/readyz`, `/metrics`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
    reason: &'static str,
}

/// The operator's metrics. Cheap to share: every family is reference-counted inside.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    applies: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("callfleet_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let applies = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 1 ms .. ~16 s: a reconcile is a handful of API round trips.
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations by kind", reconciles.clone());
        registry.register(
            "applies",
            "Children server-side applied, by kind (unchanged children are not applied)",
            applies.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by kind and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            applies,
            errors,
            duration,
            leader,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` and times it until the returned guard is dropped.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer {
            histogram: self.duration.get_or_create(&KindLabels { kind }).clone(),
            start: Instant::now(),
        }
    }

    /// Counts a child of `kind` applied.
    pub fn applied(&self, kind: &'static str) {
        self.applies.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a failed reconcile; `reason` is a short, bounded error class (never a message).
    pub fn reconcile_failed(&self, kind: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { kind, reason })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Observes the reconcile duration when dropped, so early returns and errors are timed too.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Whether this replica should receive traffic: a standby is ready (it is healthy and waiting);
/// the leader is ready once its controllers' caches are synced.
#[derive(Default)]
pub struct Readiness {
    leading: AtomicBool,
    synced: AtomicBool,
}

impl Readiness {
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
        if !leading {
            self.synced.store(false, Ordering::Release);
        }
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        !self.leading.load(Ordering::Acquire) || self.synced.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ServerState { metrics, readiness })
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics_text(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Serves probes and metrics until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_is_ready_leader_waits_for_sync() {
        let r = Readiness::default();
        assert!(r.is_ready());
        r.set_leading(true);
        assert!(!r.is_ready());
        r.set_synced();
        assert!(r.is_ready());
        r.set_leading(false);
        assert!(r.is_ready());
        r.set_leading(true);
        assert!(!r.is_ready(), "a new term must sync its caches again");
    }

    #[test]
    fn exposition_names_the_families() {
        let m = Metrics::default();
        drop(m.reconcile("CallCluster"));
        m.reconcile_failed("CallCluster", "apply");
        m.set_leader(true);
        let text = m.encode();
        assert!(text.contains("callfleet_operator_reconciles_total{kind=\"CallCluster\"} 1"));
        assert!(text.contains(
            "callfleet_operator_reconcile_errors_total{kind=\"CallCluster\",reason=\"apply\"} 1"
        ));
        assert!(text.contains(
            "callfleet_operator_reconcile_duration_seconds_count{kind=\"CallCluster\"} 1"
        ));
        assert!(text.contains("callfleet_operator_leader 1"));
    }
}
