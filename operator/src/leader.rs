//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles and a standby takes over when the leader dies.
//!
//! The protocol is client-go's: the holder renews `renewTime` every retry period; anyone may
//! take the lease once `renewTime + leaseDurationSeconds` has passed or the holder field is
//! empty. Every write is a full replace carrying the `resourceVersion` that was read, so two
//! candidates racing for the same lease cannot both win (the loser gets 409 Conflict). A leader
//! that cannot renew within the renew deadline steps down before its lease can expire, and a
//! leader that shuts down releases the lease so the standby takes over at once.
//!
//! Expiry is judged from the lease's own `renewTime`, so replicas are assumed to have roughly
//! synchronised clocks (as every Kubernetes node does).

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where the lease lives, who we are, and the timings (client-go's defaults are 15s/10s/2s).
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops reconciling; shorter than
    /// `lease_duration` so it stops before anyone else may start.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby checks the lease.
    pub retry_period: Duration,
}

/// The parts of a Lease that decide who may hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Current holder; `None` (or empty) when released.
    pub holder: Option<String>,
    /// Last renewal, in milliseconds since the Unix epoch.
    pub renew_time_ms: Option<i64>,
    /// Validity after `renew_time_ms`.
    pub duration: Duration,
}

impl LeaseRecord {
    fn from_lease(lease: &Lease, default_duration: Duration) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renew_time_ms: spec
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.as_millisecond()),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs),
        }
    }
}

/// What a candidate should do after reading the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease object yet: create it with us as holder.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a valid lease: wait.
    Follow { holder: String },
}

/// Pure decision: given the lease (if any), our identity and the time, what to do.
pub fn decide(lease: Option<&LeaseRecord>, me: &str, now_ms: i64) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let Some(holder) = lease.holder.as_deref() else {
        return Decision::TakeOver;
    };
    if holder == me {
        return Decision::Renew;
    }
    let duration_ms = i64::try_from(lease.duration.as_millis()).unwrap_or(i64::MAX);
    match lease.renew_time_ms {
        Some(renewed) if renewed.saturating_add(duration_ms) > now_ms => Decision::Follow {
            holder: holder.to_owned(),
        },
        // Expired, or a holder that never renewed (malformed): take over.
        _ => Decision::TakeOver,
    }
}

/// Pure: a leader whose last successful renewal is older than the renew deadline must stop
/// acting as leader, even if its lease has not formally expired yet.
pub fn must_step_down(last_renewed: Instant, now: Instant, renew_deadline: Duration) -> bool {
    now.saturating_duration_since(last_renewed) >= renew_deadline
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lease request timed out")]
    Timeout,
}

/// Runs the election until `shutdown`, publishing `true` on `leading` while we hold the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Campaigns, renews and steps down as needed; on `shutdown` releases the lease if held.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: CancellationToken) {
        let cfg = &self.config;
        let mut last_renewed: Option<Instant> = None;
        let mut ticker = tokio::time::interval(cfg.retry_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let attempt = tokio::time::timeout(cfg.retry_period, self.try_acquire_or_renew());
            let result = tokio::select! {
                () = shutdown.cancelled() => break,
                r = attempt => r.unwrap_or(Err(LeaderError::Timeout)),
            };
            match result {
                Ok(true) => {
                    last_renewed = Some(Instant::now());
                    if !*leading.borrow() {
                        tracing::info!(identity = %cfg.identity, lease = %cfg.name, "acquired leader lease");
                        leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    if *leading.borrow() {
                        tracing::warn!(identity = %cfg.identity, "lease taken by another replica; stepping down");
                        leading.send_replace(false);
                    }
                    last_renewed = None;
                }
                Err(error) => {
                    tracing::warn!(%error, "leader election: cannot read or write the lease");
                    if let Some(at) = last_renewed
                        && must_step_down(at, Instant::now(), cfg.renew_deadline)
                    {
                        tracing::error!(identity = %cfg.identity, "could not renew the lease before the deadline; stepping down");
                        leading.send_replace(false);
                        last_renewed = None;
                    }
                }
            }
        }
        if last_renewed.is_some() {
            // Stop reconciling before giving the lease away.
            leading.send_replace(false);
            match tokio::time::timeout(cfg.retry_period, self.release()).await {
                Ok(Ok(())) => tracing::info!(identity = %cfg.identity, "released leader lease"),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not release the lease; it will expire")
                }
                Err(_) => tracing::warn!("releasing the lease timed out; it will expire"),
            }
        }
    }

    fn api_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    /// One round: read the lease, act on [`decide`]. `Ok(true)` when we hold it afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let cfg = &self.config;
        let current = self
            .api
            .get_opt(&cfg.name)
            .await
            .map_err(|e| self.api_error(e))?;
        let record = current
            .as_ref()
            .map(|l| LeaseRecord::from_lease(l, cfg.lease_duration));
        let now = Timestamp::now();
        let decision = decide(record.as_ref(), &cfg.identity, now.as_millisecond());
        let written = match (decision, current) {
            (Decision::Follow { holder }, _) => {
                tracing::debug!(%holder, "lease held by another replica");
                return Ok(false);
            }
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(cfg.name.clone()),
                        namespace: Some(cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.held_spec(now, None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(duration_secs(cfg.lease_duration));
                self.api
                    .replace(&cfg.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::TakeOver, Some(mut lease)) => {
                let previous = lease.spec.take();
                lease.spec = Some(self.held_spec(now, previous));
                self.api
                    .replace(&cfg.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                tracing::trace!(rv = ?lease.resource_version(), "lease written");
                Ok(true)
            }
            // Someone else wrote the lease between our read and write: they won this round.
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// The spec of a lease we just acquired.
    fn held_spec(&self, now: Timestamp, previous: Option<LeaseSpec>) -> LeaseSpec {
        let transitions = previous
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(duration_secs(self.config.lease_duration)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if previous.is_some() {
                transitions.saturating_add(1)
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// Clears the holder so a standby can take over without waiting for expiry.
    async fn release(&self) -> Result<(), LeaderError> {
        let cfg = &self.config;
        let Some(mut lease) = self
            .api
            .get_opt(&cfg.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Changed since we read it: no longer ours to release.
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
            Err(e) => Err(self.api_error(e)),
        }
    }
}

fn duration_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn held_by(holder: Option<&str>, renewed_ms_ago: Option<i64>) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_owned),
            renew_time_ms: renewed_ms_ago.map(|ago| NOW - ago),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(decide(None, "a", NOW), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_when_expired() {
        assert_eq!(
            decide(Some(&held_by(Some("a"), Some(1_000))), "a", NOW),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by(Some("a"), Some(60_000))), "a", NOW),
            Decision::Renew
        );
    }

    #[test]
    fn valid_foreign_lease_is_followed() {
        assert_eq!(
            decide(Some(&held_by(Some("b"), Some(14_999))), "a", NOW),
            Decision::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn expired_foreign_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held_by(Some("b"), Some(15_000))), "a", NOW),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&held_by(Some("b"), Some(90_000))), "a", NOW),
            Decision::TakeOver
        );
    }

    #[test]
    fn released_or_never_renewed_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held_by(None, Some(0))), "a", NOW),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&held_by(Some("b"), None)), "a", NOW),
            Decision::TakeOver
        );
    }

    #[test]
    fn empty_holder_counts_as_released() {
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                renew_time: Some(MicroTime(Timestamp::now())),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let record = LeaseRecord::from_lease(&lease, Duration::from_secs(15));
        assert_eq!(record.holder, None);
        assert_eq!(decide(Some(&record), "a", NOW), Decision::TakeOver);
    }

    #[test]
    fn lease_duration_comes_from_the_lease() {
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("b".into()),
                lease_duration_seconds: Some(40),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let record = LeaseRecord::from_lease(&lease, Duration::from_secs(15));
        assert_eq!(record.duration, Duration::from_secs(40));
        let negative = Lease {
            spec: Some(LeaseSpec {
                lease_duration_seconds: Some(-5),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert_eq!(
            LeaseRecord::from_lease(&negative, Duration::from_secs(15)).duration,
            Duration::from_secs(15)
        );
    }

    #[test]
    fn step_down_after_renew_deadline() {
        let start = Instant::now();
        let deadline = Duration::from_secs(10);
        assert!(!must_step_down(
            start,
            start + Duration::from_secs(9),
            deadline
        ));
        assert!(must_step_down(
            start,
            start + Duration::from_secs(10),
            deadline
        ));
        // A clock that appears to go backwards never forces a step-down.
        assert!(!must_step_down(
            start + Duration::from_secs(5),
            start,
            deadline
        ));
    }
}
