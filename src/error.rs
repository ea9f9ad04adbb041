//! The operator's one error type: every step's failures with their context, never a secret value.

use crate::validate::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be reconciled as written; the user must change it (no retry).
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] ValidationError),

    /// A Kubernetes API call failed; `context` says which object and verb.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },

    /// A child object could not be serialized (a bug, not user input).
    #[error("serializing {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// Reading a manifest for `render` failed.
    #[error("reading {path}: {message}")]
    Input { path: String, message: String },
}

impl Error {
    /// A short, stable label for Prometheus metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Kube { .. } => "kube_api",
            Error::Serialize { .. } => "serialize",
            Error::Input { .. } => "input",
        }
    }

    /// Attaches what was being done to a Kubernetes error.
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
