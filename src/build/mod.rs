//! Step 2 of the pipeline: a `ValidatedStore` (plus its passwords) becomes the desired children.
//! Pure functions, one file per child kind; no client, no clock, no randomness.
//!
//! [`desired_children`] is the one entry point: `render` and the controller both call it, so a
//! render shows every object the controller applies. The builders below it form a DAG: names they
//! share live in the leaves `keys` and `meta`, the passwords in `credentials`.

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
#[cfg(test)]
pub(crate) mod pod_security;
pub mod secret;
pub mod sentinel;
pub mod service;
pub mod service_monitor;
pub mod startup;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use self::certificate::Certificate;
pub use self::credentials::StoreCredentials;
pub use self::service_monitor::ServiceMonitor;
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;

/// What the reconcile read from the store's TLS Secret (see `crate::tls`).
#[derive(Clone, Default)]
pub struct TlsInputs {
    /// The TLS Secret's `ca.crt`, copied into the connection Secret.
    pub ca_crt: Option<ByteString>,
    /// Hex SHA-256 of the certificate (`tls.crt` and `ca.crt`), for the pod template.
    pub fingerprint: String,
}

impl TlsInputs {
    /// The store CA (PEM), when the TLS Secret has one.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_crt.as_ref().map(|ca| ca.0.as_slice())
    }
}

/// Everything the children of one store are built from: the one input of [`desired_children`].
#[derive(Clone)]
pub struct BuildInput<'a> {
    pub store: &'a ValidatedStore,
    pub settings: &'a OperatorSettings,
    /// The passwords `users.acl` holds (during a rotation, the new and the old app password).
    pub acl_credentials: StoreCredentials,
    /// The passwords the connection Secret carries (during a rotation, those of its stage).
    pub connection_credentials: StoreCredentials,
    /// Keys added to the internal Secret (a rotation's persisted state); no builder writes them.
    pub internal_secret_extra: BTreeMap<String, ByteString>,
    /// The TLS Secret's `ca.crt` and certificate hash, once read (the controller only).
    pub tls: Option<&'a TlsInputs>,
}

impl<'a> BuildInput<'a> {
    /// A store with no rotation state and no TLS Secret read yet (a new store, or `render`).
    pub fn new(
        store: &'a ValidatedStore,
        credentials: &StoreCredentials,
        settings: &'a OperatorSettings,
    ) -> Self {
        BuildInput {
            store,
            settings,
            acl_credentials: credentials.clone(),
            connection_credentials: credentials.clone(),
            internal_secret_extra: BTreeMap::new(),
            tls: None,
        }
    }
}

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
    /// Only with `spec.tls.issuerRef` (cert-manager's API).
    pub certificate: Option<Certificate>,
    /// Only with `spec.monitoring.serviceMonitor` (prometheus-operator's API).
    pub service_monitor: Option<ServiceMonitor>,
}

/// Builds every child of a store: the internal Secret with `input`'s extra keys, the connection
/// Secret for `input.connection_credentials` (plus `ca.crt`), and the certificate's hash in the
/// pod template, so a renewed certificate rolls the pods.
pub fn desired_children(input: &BuildInput<'_>) -> DesiredChildren {
    let BuildInput {
        store,
        settings,
        acl_credentials,
        connection_credentials,
        internal_secret_extra,
        tls,
    } = input;
    let config_map = config_map::desired_config_map(store, settings);
    let internal_secret =
        secret::desired_internal_secret_with(store, acl_credentials, internal_secret_extra);
    let connection_secret = secret::desired_connection_secret_with_ca(
        store,
        connection_credentials,
        settings,
        tls.and_then(|t| t.ca_crt.as_ref()),
    );
    let config_hash = statefulset::config_hash(store, &config_map);
    let mut statefulset = statefulset::desired_statefulset(store, settings, &config_hash);
    if let Some(tls) = tls {
        set_tls_hash(&mut statefulset, &tls.fingerprint);
    }
    DesiredChildren {
        statefulset,
        headless_service: service::desired_headless_service(store),
        service: service::desired_service(store),
        network_policy: network_policy::desired_network_policy(store, settings),
        pod_disruption_budget: pdb::desired_pod_disruption_budget(store),
        certificate: certificate::desired_certificate(store, settings),
        service_monitor: service_monitor::desired_service_monitor_if_enabled(store),
        config_map,
        internal_secret,
        connection_secret,
    }
}

/// The certificate's hash in the pod template: a new certificate rolls the pods.
fn set_tls_hash(statefulset: &mut StatefulSet, fingerprint: &str) {
    let template = statefulset.spec.as_mut().map(|spec| &mut spec.template);
    if let Some(template) = template {
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(meta::TLS_HASH_ANNOTATION.into(), fingerprint.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::meta::CONFIG_HASH_ANNOTATION;

    fn config_hash_of(spec: &str) -> Option<String> {
        let store = fixtures::store(spec);
        let settings = OperatorSettings::default();
        let children = desired_children(&BuildInput::new(
            &store,
            &StoreCredentials::generate(),
            &settings,
        ));
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

    #[test]
    fn the_build_input_overlays_rotation_keys_the_ca_and_the_certificate_hash() {
        let store = fixtures::store("  tls: {enabled: true, secretName: checkout-tls}\n");
        let settings = OperatorSettings::default();
        let credentials = StoreCredentials::generate();
        let plain = desired_children(&BuildInput::new(&store, &credentials, &settings));
        let tls = TlsInputs {
            ca_crt: Some(ByteString(b"CA".to_vec())),
            fingerprint: "f1".into(),
        };
        let mut input = BuildInput::new(&store, &credentials, &settings);
        input.tls = Some(&tls);
        input
            .internal_secret_extra
            .insert("rotation-phase".into(), ByteString(b"stable".to_vec()));
        let overlaid = desired_children(&input);
        let data = |s: &Secret| s.data.clone().unwrap_or_default();
        assert_eq!(
            data(&overlaid.connection_secret).get(secret::CA_CERT_KEY),
            Some(&ByteString(b"CA".to_vec()))
        );
        assert_eq!(
            data(&plain.connection_secret).get(secret::CA_CERT_KEY),
            None
        );
        assert_eq!(
            data(&overlaid.internal_secret).get("rotation-phase"),
            Some(&ByteString(b"stable".to_vec()))
        );
        let annotations = |s: &StatefulSet| {
            s.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            annotations(&overlaid.statefulset).get(meta::TLS_HASH_ANNOTATION),
            Some(&"f1".to_string())
        );
        assert_eq!(
            annotations(&plain.statefulset).get(meta::TLS_HASH_ANNOTATION),
            None
        );
        // Everything else is the builders' output as is.
        assert_eq!(overlaid.config_map, plain.config_map);
        assert_eq!(overlaid.network_policy, plain.network_policy);
    }

    #[test]
    fn the_optional_children_are_there_when_the_spec_asks_for_them() {
        let settings = OperatorSettings::default();
        let credentials = StoreCredentials::generate();
        let children = |spec: &str| {
            let store = fixtures::store(spec);
            desired_children(&BuildInput::new(&store, &credentials, &settings))
        };
        let plain = children("");
        assert_eq!((plain.certificate, plain.service_monitor), (None, None));
        let both = children(
            "  tls: {enabled: true, issuerRef: {name: ca}}\n  monitoring: {exporter: true, serviceMonitor: true}\n",
        );
        assert!(both.certificate.is_some());
        assert!(both.service_monitor.is_some());
    }
}
