//! The TLS inputs a reconcile needs before it can build children: with `spec.tls.issuerRef` the
//! cert-manager `Certificate` is applied (or a condition says cert-manager is missing), then the TLS
//! Secret is read by name for its `ca.crt` (copied into the connection Secret) and a hash of the
//! certificate (the pod template carries it, so a renewed certificate rolls the pods).
//!
//! cert-manager's API is discovered once per operator (a positive answer is kept for good, a
//! negative one re-checked every [`DISCOVERY_RECHECK`] so installing cert-manager later needs no
//! restart), never per reconcile.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use crate::build::meta::{ChildNames, Component, MANAGER, object_meta, sha256_hex};
use crate::build::secret::CA_CERT_KEY;
use crate::cache::APPLIED_HASH_ANNOTATION;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::hash::object_hash;
use crate::rotation::step::TlsInputs;
use crate::settings::OperatorSettings;
use crate::validate::{TlsSource, ValidatedStore};

pub const CERT_MANAGER_GROUP: &str = "cert-manager.io";
pub const CERT_MANAGER_VERSION: &str = "v1";
/// How often a store waiting for its TLS Secret (or for cert-manager) looks again.
pub const TLS_RETRY: Duration = Duration::from_secs(30);
/// A "cert-manager is not installed" answer is trusted this long.
pub const DISCOVERY_RECHECK: Duration = Duration::from_secs(300);
/// Ready condition reasons while TLS is not there yet.
pub const REASON_ISSUER_UNAVAILABLE: &str = "TlsIssuerUnavailable";
pub const REASON_SECRET_MISSING: &str = "TlsSecretMissing";

/// What the TLS step found.
pub enum TlsReadiness {
    /// `spec.tls` is off.
    Disabled,
    Ready(TlsInputs),
    /// Cannot go on yet: the Ready condition's reason and a message naming the spec field.
    Waiting {
        reason: &'static str,
        message: String,
    },
}

/// Per-operator memory: cert-manager's presence, and the Certificates our applies left.
#[derive(Default)]
pub struct TlsMemo {
    cert_manager: Mutex<Option<(bool, Instant)>>,
    certificates: Mutex<HashMap<String, String>>,
}

impl TlsMemo {
    fn known_cert_manager(&self) -> Option<bool> {
        let guard = self
            .cert_manager
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *guard {
            Some((true, _)) => Some(true),
            Some((false, at)) if at.elapsed() < DISCOVERY_RECHECK => Some(false),
            _ => None,
        }
    }
}

/// The cert-manager `Certificate` API resource.
pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        CERT_MANAGER_GROUP,
        CERT_MANAGER_VERSION,
        "Certificate",
    ))
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

/// The Certificate cert-manager turns into the store's TLS Secret (pure).
pub fn desired_certificate(
    store: &ValidatedStore,
    settings: &OperatorSettings,
    issuer_name: &str,
    issuer_kind: &str,
    issuer_group: &str,
) -> serde_json::Value {
    let secret_name = store
        .tls
        .as_ref()
        .map(|t| t.secret_name(&store.name))
        .unwrap_or_default();
    let metadata = object_meta(store, secret_name.clone(), Component::Credentials);
    json!({
        "apiVersion": format!("{CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION}"),
        "kind": "Certificate",
        "metadata": metadata,
        "spec": {
            "secretName": secret_name,
            "issuerRef": {"name": issuer_name, "kind": issuer_kind, "group": issuer_group},
            "dnsNames": certificate_dns_names(store, settings),
            // Replicas dial their primary over TLS (tls-replication): the pods are clients too.
            "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        },
    })
}

/// Applies the Certificate (issuer mode) and reads the TLS Secret.
pub async fn prepare(ctx: &Context, store: &ValidatedStore) -> Result<TlsReadiness> {
    let Some(tls) = &store.tls else {
        return Ok(TlsReadiness::Disabled);
    };
    let secret_name = tls.secret_name(&store.name);
    let field = match &tls.source {
        TlsSource::Secret(_) => "spec.tls.secretName",
        TlsSource::Issuer { name, kind, group } => {
            if !cert_manager_installed(ctx).await? {
                return Ok(TlsReadiness::Waiting {
                    reason: REASON_ISSUER_UNAVAILABLE,
                    message: format!(
                        "spec.tls.issuerRef ({kind} {name}, group {group}): the cert-manager API \
                         ({CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION} Certificate) is not installed; \
                         install cert-manager or use spec.tls.secretName"
                    ),
                });
            }
            apply_certificate(ctx, store, name, kind, group).await?;
            "spec.tls.issuerRef"
        }
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &store.namespace);
    ctx.metrics.api_request("get");
    let secret = api
        .get_opt(&secret_name)
        .await
        .map_err(|e| Error::kube(format!("reading TLS Secret {secret_name}"), e))?;
    let Some(secret) = secret else {
        let message = match &tls.source {
            TlsSource::Secret(_) => format!(
                "{field}: Secret {}/{secret_name} does not exist; create it (type kubernetes.io/tls, \
                 with ca.crt)",
                store.namespace
            ),
            TlsSource::Issuer { .. } => format!(
                "{field}: waiting for cert-manager to issue Secret {}/{secret_name}",
                store.namespace
            ),
        };
        return Ok(TlsReadiness::Waiting {
            reason: REASON_SECRET_MISSING,
            message,
        });
    };
    let data = secret.data.unwrap_or_default();
    let mut fingerprint_input = Vec::new();
    // Public material only: a new key always comes with a new certificate.
    for key in ["tls.crt", CA_CERT_KEY] {
        fingerprint_input.extend_from_slice(key.as_bytes());
        fingerprint_input.push(0);
        if let Some(value) = data.get(key) {
            fingerprint_input.extend_from_slice(&value.0);
        }
        fingerprint_input.push(0);
    }
    Ok(TlsReadiness::Ready(TlsInputs {
        ca_crt: data.get(CA_CERT_KEY).cloned(),
        fingerprint: sha256_hex(&fingerprint_input),
    }))
}

async fn cert_manager_installed(ctx: &Context) -> Result<bool> {
    if let Some(known) = ctx.tls.known_cert_manager() {
        return Ok(known);
    }
    ctx.metrics.api_request("get");
    let installed = match ctx
        .client
        .list_api_group_resources(&format!("{CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION}"))
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == "certificates"),
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(e) => {
            return Err(Error::kube(
                format!("discovering {CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION}"),
                e,
            ));
        }
    };
    tracing::info!(installed, "cert-manager API discovery");
    *ctx.tls
        .cert_manager
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some((installed, Instant::now()));
    Ok(installed)
}

/// Server-side applies the Certificate unless our last apply (remembered, or its annotation after
/// a restart) already carries the same hash.
async fn apply_certificate(
    ctx: &Context,
    store: &ValidatedStore,
    name: &str,
    kind: &str,
    group: &str,
) -> Result<()> {
    let mut desired = desired_certificate(store, &ctx.settings, name, kind, group);
    let hash = object_hash(&desired)?;
    let cert_name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = format!(
        "{}/{cert_name}/{}",
        store.namespace, store.owner_reference.uid
    );
    let remembered = ctx
        .tls
        .certificates
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .cloned();
    if remembered.as_deref() == Some(hash.as_str()) {
        return Ok(());
    }
    let resource = certificate_resource();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &store.namespace, &resource);
    if remembered.is_none() {
        ctx.metrics.api_request("get");
        let live = api
            .get_metadata_opt(&cert_name)
            .await
            .map_err(|e| Error::kube(format!("reading Certificate {cert_name}"), e))?;
        let live_hash = live
            .and_then(|m| m.metadata.annotations)
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION).cloned());
        if live_hash.as_deref() == Some(hash.as_str()) {
            remember_certificate(ctx, key, hash);
            return Ok(());
        }
    }
    if let Some(meta) = desired.get_mut("metadata") {
        meta["annotations"] = json!(BTreeMap::from([(APPLIED_HASH_ANNOTATION, hash.clone())]));
    }
    ctx.metrics.api_request("patch");
    api.patch(
        &cert_name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("applying Certificate {}/{cert_name}", store.namespace),
            e,
        )
    })?;
    tracing::info!(certificate = %cert_name, "applied cert-manager Certificate");
    remember_certificate(ctx, key, hash);
    Ok(())
}

fn remember_certificate(ctx: &Context, key: String, hash: String) {
    ctx.tls
        .certificates
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, hash);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SessionStore;
    use crate::validate::validate;

    #[test]
    fn the_certificate_names_both_services_and_every_pod() {
        let store: SessionStore = serde_yaml::from_str(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
             metadata: {name: web, namespace: shop, uid: u1}\n\
             spec:\n  clients: {podSelector: {}}\n  tls: {enabled: true, issuerRef: {name: ca}}\n",
        )
        .expect("yaml");
        let store = validate(&store).expect("valid");
        let cert = desired_certificate(
            &store,
            &OperatorSettings::default(),
            "ca",
            "Issuer",
            "cert-manager.io",
        );
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
    }
}
