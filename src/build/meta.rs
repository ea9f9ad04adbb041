//! Names, labels and object metadata shared by every child: deterministic names, the
//! `app.kubernetes.io/*` labels the operator's watches select on, and the controller ownerReference.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::validate::ValidatedStore;

/// Field manager for every server-side apply and the `managed-by` label value.
pub const MANAGER: &str = "sessionstore-operator";
/// Label values of `app.kubernetes.io/name` on every child.
pub const APP_NAME: &str = "sessionstore";
/// Pod-template annotation whose change rolls the pods when configuration changes.
pub const CONFIG_HASH_ANNOTATION: &str = "sessionstore.dev/config-hash";
/// Pod-template annotation carrying a hash of the TLS certificate: a new certificate rolls the pods.
pub const TLS_HASH_ANNOTATION: &str = "sessionstore.dev/tls-hash";
/// Label on pods telling the primary from replicas (set by the operator in HA mode).
pub const ROLE_LABEL: &str = "sessionstore.dev/role";

/// Which part of the store a child belongs to (`app.kubernetes.io/component`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Redis,
    Config,
    Credentials,
    Network,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Redis => "redis",
            Component::Config => "config",
            Component::Credentials => "credentials",
            Component::Network => "network",
        }
    }
}

/// Deterministic child names (DESIGN.md "Names of children").
pub struct ChildNames;

impl ChildNames {
    pub fn statefulset(store: &str) -> String {
        store.to_string()
    }
    pub fn service(store: &str) -> String {
        store.to_string()
    }
    pub fn headless_service(store: &str) -> String {
        format!("{store}-headless")
    }
    pub fn config_map(store: &str) -> String {
        format!("{store}-config")
    }
    pub fn network_policy(store: &str) -> String {
        store.to_string()
    }
    pub fn pod_disruption_budget(store: &str) -> String {
        store.to_string()
    }
    pub fn connection_secret(store: &str) -> String {
        format!("{store}-connection")
    }
    pub fn internal_secret(store: &str) -> String {
        format!("{store}-internal")
    }
}

/// Labels every child carries; the operator's watches select on `managed-by` + `name`.
pub fn labels(store: &ValidatedStore, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), store.name.clone()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// Labels selecting this store's Redis pods (stable: never change them, StatefulSet selectors are immutable).
pub fn pod_selector_labels(store: &ValidatedStore) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), store.name.clone()),
    ])
}

/// Label selector string for listing everything the operator manages.
pub fn managed_by_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGER}")
}

/// Metadata of a child: name, namespace, labels and the controller ownerReference.
pub fn object_meta(store: &ValidatedStore, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(store.namespace.clone()),
        labels: Some(labels(store, component)),
        owner_references: Some(vec![store.owner_reference.clone()]),
        ..ObjectMeta::default()
    }
}

/// Hex SHA-256 of some bytes, for config-hash annotations.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// Where the pods see their files; `redis.conf` refers to these, the StatefulSet mounts them,
/// and the real-Redis tests map them to a temporary directory.
pub mod paths {
    /// The `<name>-config` ConfigMap (`redis.conf`), read-only.
    pub const CONFIG_DIR: &str = "/etc/redis/conf";
    /// The `<name>-internal` Secret (`users.acl`, replication credentials), read-only.
    pub const INTERNAL_SECRET_DIR: &str = "/etc/redis/internal";
    /// The TLS Secret (`tls.crt`, `tls.key`, `ca.crt`), read-only.
    pub const TLS_DIR: &str = "/etc/redis/tls";
    /// Redis data (PVC or emptyDir).
    pub const DATA_DIR: &str = "/data";
    /// Writable copy of the Sentinel config (emptyDir; Sentinel rewrites its file).
    pub const SENTINEL_DIR: &str = "/sentinel";
}
