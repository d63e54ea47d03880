pub mod controller;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod render_cmd;
pub mod telemetry;
