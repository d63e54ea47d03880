//! Reconcile errors, each with a short bounded `reason` for metrics and Events.

/// Why a reconcile failed. Missing inputs (pipeline, Secret) are not errors: they are reported
/// in status conditions and retried on change; these are failures to talk to the API server
/// or to render.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {name} has no namespace")]
    NoNamespace { kind: &'static str, name: String },
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot update the status of {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot render the objects of {name}: {message}")]
    Render { name: String, message: String },
}

impl Error {
    /// Metric label: bounded, stable, no object names.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NoNamespace { .. } => "no_namespace",
            Error::Read { .. } => "read",
            Error::Apply { .. } => "apply",
            Error::Status { .. } => "status",
            Error::Render { .. } => "render",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
