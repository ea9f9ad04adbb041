//! The passwords a store's children are built from: a leaf type every builder takes, so no builder
//! imports `build` (the entry point that imports every builder) back.

use crate::password::Password;

/// Every password a store needs. Read from the existing Secrets, or generated once when missing.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreCredentials {
    /// The application user's current password.
    pub app: Password,
    /// During a rotation: the previous application password, still accepted until retired.
    pub app_previous: Option<Password>,
    /// The operator's own user (health, rotation, primary detection).
    pub operator: Password,
    /// The replication user (replicas to primary).
    pub replication: Password,
    /// The Sentinel user (Sentinels to Redis, and Sentinel's own AUTH).
    pub sentinel: Password,
    /// The kubelet's probe user (`PING` only): the one password the probes read.
    pub probe: Password,
}

impl StoreCredentials {
    /// Fresh passwords for a new store (and for `render`).
    pub fn generate() -> Self {
        StoreCredentials {
            app: Password::generate(),
            app_previous: None,
            operator: Password::generate(),
            replication: Password::generate(),
            sentinel: Password::generate(),
            probe: Password::generate(),
        }
    }
}
