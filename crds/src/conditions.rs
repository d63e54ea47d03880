//! Condition helpers shared by the CallCluster and AiPipeline status writers.
//!
//! Conditions follow the Kubernetes API conventions: one entry per type, `lastTransitionTime`
//! changes only when `status` changes, so a status write that only refreshes a message does not
//! look like a transition to `kubectl wait` or alerting.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The resource does what its spec asks.
pub const READY: &str = "Ready";
/// The operator is moving children towards the spec (rollout, scale up, first creation).
pub const PROGRESSING: &str = "Progressing";
/// Something the spec depends on is missing or failing; the message names it.
pub const DEGRADED: &str = "Degraded";
/// `spec.paused` is true: the operator leaves the children alone.
pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";

/// Builds one condition. `reason` is a CamelCase identifier, `message` a sentence for humans.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now.clone(),
    }
}

/// Returns `next` with each condition's `lastTransitionTime` taken from `previous` when the
/// condition of that type kept its status.
pub fn keep_transition_times(previous: &[Condition], mut next: Vec<Condition>) -> Vec<Condition> {
    for condition in &mut next {
        if let Some(old) = find(previous, &condition.type_)
            && old.status == condition.status
        {
            condition.last_transition_time = old.last_transition_time.clone();
        }
    }
    next
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let previous = vec![condition(READY, true, "AllReady", "ok", Some(1), &at(100))];
        let next = vec![condition(
            READY,
            true,
            "AllReady",
            "still ok",
            Some(2),
            &at(200),
        )];
        let merged = keep_transition_times(&previous, next);
        assert_eq!(merged[0].last_transition_time, at(100));
        assert_eq!(merged[0].message, "still ok");
        assert_eq!(merged[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_takes_new_transition_time() {
        let previous = vec![condition(READY, true, "AllReady", "ok", Some(1), &at(100))];
        let next = vec![
            condition(READY, false, "WorkersNotReady", "0/2", Some(1), &at(200)),
            condition(DEGRADED, false, "AsExpected", "", Some(1), &at(200)),
        ];
        let merged = keep_transition_times(&previous, next);
        assert_eq!(merged[0].last_transition_time, at(200));
        assert_eq!(merged[1].last_transition_time, at(200));
        assert!(!is_true(&merged, READY));
        assert!(find(&merged, PROGRESSING).is_none());
    }
}
