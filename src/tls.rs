//! The TLS inputs a reconcile needs before it can build children: with `spec.tls.issuerRef` the
//! cert-manager `Certificate` (built by `build::certificate`) is applied (or a condition says
//! cert-manager is missing), then the TLS Secret is read by name for its `ca.crt` (copied into the
//! connection Secret) and a hash of the certificate (the pod template carries it, so a renewed
//! certificate rolls the pods).
//!
//! cert-manager's API is discovered once per operator and the Certificate applied only when it
//! changed, by the applier of every optional API ([`crate::apply_optional`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::apply_optional::{OptionalApi, api_installed, apply_optional};
use crate::build::TlsInputs;
use crate::build::certificate::{CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, desired_certificate};
use crate::build::meta::sha256_hex;
use crate::build::secret::CA_CERT_KEY;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::Verb;
use crate::validate::{TlsSource, ValidatedStore};
use crate::vocabulary::Reason;

/// cert-manager's `Certificate`, an optional API.
pub const CERTIFICATE_API: OptionalApi = OptionalApi {
    provider: "cert-manager",
    group: CERT_MANAGER_GROUP,
    version: CERT_MANAGER_VERSION,
    kind: crate::build::certificate::CERTIFICATE_KIND,
    plural: "certificates",
};
/// How often a store waiting for its TLS Secret (or for cert-manager) looks again.
pub const TLS_RETRY: Duration = Duration::from_secs(30);
/// What the TLS step found.
pub enum TlsReadiness {
    /// `spec.tls` is off.
    Disabled,
    Ready(TlsInputs),
    /// Cannot go on yet: the Ready condition's reason and a message naming the spec field.
    Waiting {
        reason: Reason,
        message: String,
    },
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
            if !api_installed(ctx, &CERTIFICATE_API, &ctx.tls).await? {
                return Ok(TlsReadiness::Waiting {
                    reason: Reason::TlsIssuerUnavailable,
                    message: format!(
                        "spec.tls.issuerRef ({kind} {name}, group {group}): the cert-manager API \
                         ({CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION} Certificate) is not installed; \
                         install cert-manager or use spec.tls.secretName"
                    ),
                });
            }
            if let Some(certificate) = desired_certificate(store, &ctx.settings) {
                apply_optional(
                    ctx,
                    &CERTIFICATE_API,
                    &ctx.tls,
                    &store.owner_reference.uid,
                    &certificate,
                )
                .await?;
            }
            "spec.tls.issuerRef"
        }
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &store.namespace);
    ctx.metrics.api_request(Verb::Get);
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
            reason: Reason::TlsSecretMissing,
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
