//! `/admin`: runtime control for tests and the local stack (no auth): read counters, add or
//! clear faults.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::Shared;
use super::faults::FaultRule;
use super::stats::StatsSnapshot;

/// `GET /admin/stats`
pub async fn stats(State(shared): State<Arc<Shared>>) -> Json<StatsSnapshot> {
    Json(shared.stats.snapshot())
}

/// `GET /admin/faults`: the active rules.
pub async fn list_faults(State(shared): State<Arc<Shared>>) -> Json<Vec<FaultRule>> {
    Json(shared.faults.list())
}

/// `POST /admin/faults` with a [`FaultRule`] JSON body, e.g.
/// `{"endpoint":"chat","fault":{"kind":"rate_limit","retry_after_ms":50},"count":1}`.
pub async fn add_fault(
    State(shared): State<Arc<Shared>>,
    Json(rule): Json<FaultRule>,
) -> StatusCode {
    shared.faults.add(rule);
    StatusCode::NO_CONTENT
}

/// `DELETE /admin/faults`
pub async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.faults.clear();
    StatusCode::NO_CONTENT
}
