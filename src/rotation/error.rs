//! The rotation's error type, in a leaf module so `state` and `live` can use it without importing
//! their parent `rotation` back.

/// Why a rotation step could not be done. Messages name pods, users and keys, never a password or
/// a password hash (Redis echoes an `ACL SETUSER` argument in its errors, so those are summarised).
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The rotation keys of the internal Secret cannot be read back.
    #[error("internal Secret key {key:?}: {reason}")]
    CorruptState { key: &'static str, reason: String },

    /// A live ACL change did not reach every pod; each failed pod is named with the reason.
    #[error("{action} on {failed} of {total} pod(s): {details}")]
    Live {
        action: &'static str,
        failed: usize,
        total: usize,
        details: String,
    },

    /// No pod address was given: a live change on "every pod" of nothing proves nothing.
    #[error("{action}: no pod to apply it to")]
    NoPods { action: &'static str },
}

impl RotationError {
    /// A short, stable label for Prometheus metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RotationError::CorruptState { .. } => "rotation_state",
            RotationError::Live { .. } | RotationError::NoPods { .. } => "rotation_live",
        }
    }
}
