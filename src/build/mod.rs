//! Step 2 of the pipeline: a `ValidatedStore` (plus its passwords) becomes the desired children.
//! Pure functions, one file per child kind; no client, no clock, no randomness.

pub mod acl;
pub mod certificate;
pub mod config_map;
pub mod credentials;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod keys;
pub mod meta;
pub mod network_policy;
pub mod pdb;
pub mod pod_security;
pub mod secret;
pub mod sentinel;
pub mod service;
pub mod service_monitor;
pub mod startup;
pub mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

pub use self::credentials::StoreCredentials;
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;

/// Every child of one store, in apply order. The apply step destructures this without `..`,
/// so a new child that is not applied fails to compile.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredChildren {
    pub config_map: ConfigMap,
    pub internal_secret: Secret,
    pub connection_secret: Secret,
    pub headless_service: Service,
    pub service: Service,
    pub statefulset: StatefulSet,
    pub network_policy: NetworkPolicy,
    /// Only when replicas > 1.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
}

/// Builds every child of a store.
pub fn desired_children(
    store: &ValidatedStore,
    credentials: &StoreCredentials,
    settings: &OperatorSettings,
) -> DesiredChildren {
    let config_map = config_map::desired_config_map(store, settings);
    let internal_secret = secret::desired_internal_secret(store, credentials);
    let connection_secret = secret::desired_connection_secret(store, credentials, settings);
    let config_hash = statefulset::config_hash(store, &config_map);
    DesiredChildren {
        statefulset: statefulset::desired_statefulset(store, settings, &config_hash),
        headless_service: service::desired_headless_service(store),
        service: service::desired_service(store),
        network_policy: network_policy::desired_network_policy(store, settings),
        pod_disruption_budget: pdb::desired_pod_disruption_budget(store),
        config_map,
        internal_secret,
        connection_secret,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::meta::CONFIG_HASH_ANNOTATION;

    fn config_hash_of(spec: &str) -> Option<String> {
        let children = desired_children(
            &fixtures::store(spec),
            &StoreCredentials::generate(),
            &OperatorSettings::default(),
        );
        children
            .statefulset
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
    }

    #[test]
    fn sentinel_settings_roll_the_pods_and_passwords_do_not() {
        // The Sentinel template and start script are in the ConfigMap, hence in the hash; fresh
        // passwords (a different StoreCredentials per call) are not.
        let base = config_hash_of("  replicas: 3\n");
        assert!(base.is_some());
        assert_eq!(base, config_hash_of("  replicas: 3\n"));
        assert_ne!(
            base,
            config_hash_of("  replicas: 3\n  sentinel: {downAfterMilliseconds: 3000}\n")
        );
    }
}
