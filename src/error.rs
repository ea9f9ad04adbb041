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

    /// `spec.auth.existingSecret` names a Secret (or key) that is not there; the user must create it.
    #[error("spec.auth.existingSecret: {message}")]
    ExistingSecret { message: String },

    /// A Secret holds a value the operator cannot use (e.g. a password that is not UTF-8).
    /// The message names the Secret and key, never the value.
    #[error("secret {secret}: {message}")]
    SecretData { secret: String, message: String },

    /// Another writer created a child between our read and our create; the reconcile re-reads.
    #[error("{context}: created concurrently by another writer")]
    Conflict { context: String },

    /// `run` could not start: no cluster reachable, CRD missing, port in use, ...
    #[error("{0}")]
    Startup(String),

    /// Leader election failed or the lease was lost.
    #[error("leader election: {0}")]
    Leader(String),

    /// A password rotation step failed (a pod refused a live ACL change, unreadable state).
    #[error("password rotation: {0}")]
    Rotation(#[from] crate::rotation::RotationError),
}

impl Error {
    /// A short, stable label for Prometheus metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Kube { .. } => "kube_api",
            Error::Serialize { .. } => "serialize",
            Error::Input { .. } => "input",
            Error::ExistingSecret { .. } => "existing_secret",
            Error::SecretData { .. } => "secret_data",
            Error::Conflict { .. } => "conflict",
            Error::Startup(_) => "startup",
            Error::Leader(_) => "leader",
            Error::Rotation(e) => e.metric_label(),
        }
    }

    /// The HTTP status of a failed API call, when there is one.
    pub fn api_status(&self) -> Option<u16> {
        match self {
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }

    /// Whether the API server asked us to slow down (429): error_policy backs off longer.
    pub fn is_throttled(&self) -> bool {
        self.api_status() == Some(429)
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
