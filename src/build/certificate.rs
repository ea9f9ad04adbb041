//! The cert-manager `Certificate` of a store with `spec.tls.issuerRef`: cert-manager turns it into
//! the store's TLS Secret. Typed here (cert-manager's API is not in k8s-openapi) and built like every
//! other child; `crate::tls` discovers the API and applies it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::build::meta::{ChildNames, Component, object_meta};
use crate::settings::OperatorSettings;
use crate::validate::{TlsSource, ValidatedStore};

pub const CERT_MANAGER_GROUP: &str = "cert-manager.io";
pub const CERT_MANAGER_VERSION: &str = "v1";
pub const CERTIFICATE_KIND: &str = "Certificate";

/// A cert-manager `cert-manager.io/v1` `Certificate`, as much of it as the operator sets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: CertificateSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub secret_name: String,
    pub issuer_ref: IssuerRef,
    pub dns_names: Vec<String>,
    pub usages: Vec<String>,
    pub private_key: CertificatePrivateKey,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    pub kind: String,
    pub group: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePrivateKey {
    pub algorithm: String,
    pub size: i32,
    pub rotation_policy: String,
}

/// The DNS names the certificate must cover: the Service and the headless Service in every
/// resolvable form, and every pod under the headless Service.
pub fn certificate_dns_names(store: &ValidatedStore, settings: &OperatorSettings) -> Vec<String> {
    let domain = settings.cluster_domain.trim_end_matches('.');
    let ns = &store.namespace;
    let mut names = Vec::new();
    for service in [
        ChildNames::service(&store.name),
        ChildNames::headless_service(&store.name),
    ] {
        names.push(service.clone());
        names.push(format!("{service}.{ns}"));
        names.push(format!("{service}.{ns}.svc"));
        names.push(format!("{service}.{ns}.svc.{domain}"));
    }
    let headless = ChildNames::headless_service(&store.name);
    names.push(format!("*.{headless}.{ns}.svc"));
    names.push(format!("*.{headless}.{ns}.svc.{domain}"));
    names
}

/// The Certificate cert-manager turns into the store's TLS Secret; `None` unless the store names
/// an issuer (`spec.tls.issuerRef`).
pub fn desired_certificate(
    store: &ValidatedStore,
    settings: &OperatorSettings,
) -> Option<Certificate> {
    let tls = store.tls.as_ref()?;
    let TlsSource::Issuer { name, kind, group } = &tls.source else {
        return None;
    };
    let secret_name = tls.secret_name(&store.name);
    Some(Certificate {
        api_version: format!("{CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION}"),
        kind: CERTIFICATE_KIND.into(),
        metadata: object_meta(store, secret_name.clone(), Component::Credentials),
        spec: CertificateSpec {
            secret_name,
            issuer_ref: IssuerRef {
                name: name.clone(),
                kind: kind.clone(),
                group: group.clone(),
            },
            dns_names: certificate_dns_names(store, settings),
            // Replicas dial their primary over TLS (tls-replication): the pods are clients too.
            usages: [
                "server auth",
                "client auth",
                "digital signature",
                "key encipherment",
            ]
            .map(String::from)
            .to_vec(),
            private_key: CertificatePrivateKey {
                algorithm: "ECDSA".into(),
                size: 256,
                rotation_policy: "Always".into(),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn the_certificate_names_both_services_and_every_pod() {
        let store = fixtures::store_from_yaml(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
             metadata: {name: web, namespace: shop, uid: u1}\n\
             spec:\n  clients: {podSelector: {}}\n  tls: {enabled: true, issuerRef: {name: ca}}\n",
        );
        let cert = desired_certificate(&store, &OperatorSettings::default()).expect("issuer");
        let cert = serde_json::to_value(&cert).expect("json");
        assert_eq!(cert["spec"]["secretName"], "web-tls");
        assert_eq!(cert["metadata"]["ownerReferences"][0]["uid"], "u1");
        let names: Vec<&str> = cert["spec"]["dnsNames"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n.as_str())
            .collect();
        for expected in [
            "web.shop.svc.cluster.local",
            "web",
            "web-headless.shop.svc",
            "*.web-headless.shop.svc.cluster.local",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert_eq!(cert["spec"]["issuerRef"]["kind"], "Issuer");
        assert_eq!(cert["spec"]["issuerRef"]["group"], "cert-manager.io");
    }

    #[test]
    fn the_certificate_serializes_as_the_json_it_replaced() {
        let store = fixtures::store_from_yaml(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
             metadata: {name: web, namespace: shop, uid: u1}\n\
             spec:\n  clients: {podSelector: {}}\n  tls: {enabled: true, issuerRef: {name: ca}}\n",
        );
        let settings = OperatorSettings::default();
        let cert = desired_certificate(&store, &settings).expect("issuer");
        // The applied hash is of this JSON: it must stay what the untyped builder produced, or a
        // restarted operator would re-apply every Certificate once.
        assert_eq!(
            serde_json::to_value(&cert).expect("json"),
            serde_json::json!({
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": object_meta(&store, "web-tls".into(), Component::Credentials),
                "spec": {
                    "secretName": "web-tls",
                    "issuerRef": {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"},
                    "dnsNames": certificate_dns_names(&store, &settings),
                    "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
                    "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                },
            })
        );
    }

    #[test]
    fn no_certificate_without_an_issuer() {
        let store = fixtures::store("  tls: {enabled: true, secretName: mine}\n");
        assert_eq!(
            desired_certificate(&store, &OperatorSettings::default()),
            None
        );
        assert_eq!(
            desired_certificate(&fixtures::development(), &OperatorSettings::default()),
            None
        );
    }
}
