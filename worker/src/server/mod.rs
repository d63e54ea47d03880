//! The HTTP side of the worker: the three WebSocket endpoints, `/health`, `/ready`, `/metrics`,
//! and graceful drain.

pub mod quiet_stream;
pub mod routes;
pub mod run;

pub use routes::router;
pub use run::{RunningWorker, build_context, start};
