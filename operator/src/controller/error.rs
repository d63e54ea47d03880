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

impl Error {
    /// The API server was overloaded, failing or unreachable: worth a retry, not a condition.
    pub fn is_transient(&self) -> bool {
        let source = match self {
            Error::Read { source, .. }
            | Error::Apply { source, .. }
            | Error::Status { source, .. } => source,
            Error::NoNamespace { .. } | Error::Render { .. } => return false,
        };
        match source {
            kube::Error::Api(status) => status.code == 429 || status.code >= 500,
            kube::Error::HyperError(_) | kube::Error::Service(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_error(code: u16) -> Error {
        Error::Apply {
            kind: "Deployment".into(),
            name: "fleet-worker".into(),
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure("x", "y").with_code(code),
            )),
        }
    }

    #[test]
    fn overload_and_server_errors_are_transient() {
        assert!(apply_error(429).is_transient());
        assert!(apply_error(503).is_transient());
        assert!(
            !apply_error(422).is_transient(),
            "an invalid object is a real problem"
        );
        assert!(
            !apply_error(403).is_transient(),
            "missing RBAC is a real problem"
        );
        let render = Error::Render {
            name: "fleet".into(),
            message: "bad".into(),
        };
        assert!(!render.is_transient());
        assert_eq!(apply_error(429).reason(), "apply");
    }
}
