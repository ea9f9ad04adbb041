//! The controller's side of a rotation: one call per reconcile ([`reconcile_rotation`]) reads the
//! persisted state, plans, performs the steps that can be done now (live ACL changes on every pod,
//! publishing the connection Secret), persists each step's state in the internal Secret, and says
//! when to come back; [`desired_children`] gives the apply step children that agree with that state.
//!
//! Pod addresses come through the [`PodAddresses`] trait, asked only while a live step is due, so
//! a store that is not rotating never lists its pods. A highly available store's Sentinels get the
//! same live changes as its Redis servers (see [`crate::rotation::live`]).
//!
//! A store with no pod (or a pod without an IP yet) waits: the live change must reach every pod,
//! and a pod that is starting may have mounted a `users.acl` from before the rotation began, so
//! "no pod seen" does not prove "no pod to change". The persisted `users.acl` already holds both
//! passwords, so waiting costs nothing but time; the step is retried every [`POD_RETRY`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;
use redis::ConnectionAddr;

use crate::build::acl::OPERATOR_USER;
use crate::build::meta::{ChildNames, pod_selector_labels};
use crate::build::secret::{
    desired_connection_secret, desired_internal_secret, set_ca_certificate,
};
use crate::build::{DesiredChildren, StoreCredentials};
use crate::controller::{Context, publish};
use crate::crd::{AuthStatus, SessionStore};
use crate::error::{Error, Result};
use crate::password::Password;
use crate::pods::{is_pod_of, label_selector};
use crate::redis_client::tls_connection_addr;
use crate::rotation::state::Stage;
use crate::rotation::{
    LiveAcl, LiveTargets, PodEndpoint, RotationError, RotationInput, RotationState, Step,
    auth_status, plan,
};
use crate::secrets::{self, SecretRole, SecretState, SecretsRead};
use crate::settings::OperatorSettings;
use crate::validate::{REDIS_PORT, SENTINEL_PORT, ValidatedStore};

/// How often a rotation waiting for pods (none yet, or one without an IP) looks again.
pub const POD_RETRY: Duration = Duration::from_secs(30);
/// Per pod: connect, `ACL SETUSER` and the verifying `AUTH` must finish within this time.
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Steps done in one reconcile at most (a whole rotation is 6): a bound, not a target.
const MAX_STEPS_PER_RECONCILE: usize = 8;
/// Pod-template annotation carrying a hash of the TLS certificate: a new certificate rolls the pods.
pub const TLS_HASH_ANNOTATION: &str = "sessionstore.dev/tls-hash";

/// What the reconcile needs from the TLS Secret (read by `crate::tls`).
#[derive(Clone, Default)]
pub struct TlsInputs {
    /// The TLS Secret's `ca.crt`, copied into the connection Secret.
    pub ca_crt: Option<ByteString>,
    /// Hex SHA-256 of the certificate (`tls.crt` and `ca.crt`), for the pod template.
    pub fingerprint: String,
}

/// Where the Redis pods (and Sentinels) of a store can be reached, for the live ACL changes.
pub trait PodAddresses: Send + Sync {
    /// Every pod of the store, and for a highly available store every pod's Sentinel.
    /// `Ok(None)`: some pod has no address yet (the caller waits).
    fn endpoints<'a>(
        &'a self,
        ctx: &'a Context,
        store: &'a ValidatedStore,
        tls: Option<&'a TlsInputs>,
    ) -> BoxFuture<'a, Result<Option<LiveTargets>>>;
}

/// Lists the store's pods by their selector labels (only while a live step is due), keeps those
/// the store owns ([`is_store_pod`]: labels are not proof, anyone who can create pods in the
/// namespace can copy them) and dials each by its IP (plain) or by its stable DNS name under the headless Service (TLS: the certificate
/// names the Service names, and the store's CA is the only one trusted). The Sentinel of an HA pod
/// is dialled the same way on its own port (it listens on TLS only when the store has TLS, with the
/// same certificate).
#[derive(Clone, Debug)]
pub struct ListPods {
    /// Redis port of every pod.
    pub port: u16,
    /// Sentinel port of every pod (highly available stores).
    pub sentinel_port: u16,
}

impl Default for ListPods {
    fn default() -> Self {
        ListPods {
            port: u16::try_from(REDIS_PORT).unwrap_or(6379),
            sentinel_port: u16::try_from(SENTINEL_PORT).unwrap_or(26379),
        }
    }
}

impl PodAddresses for ListPods {
    fn endpoints<'a>(
        &'a self,
        ctx: &'a Context,
        store: &'a ValidatedStore,
        tls: Option<&'a TlsInputs>,
    ) -> BoxFuture<'a, Result<Option<LiveTargets>>> {
        Box::pin(async move {
            let selector = label_selector(&pod_selector_labels(store));
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &store.namespace);
            ctx.metrics.api_request("list");
            let pods = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| Error::kube(format!("listing Pods of {}", store.name), e))?;
            let mut targets = LiveTargets::default();
            let sentinels = store.is_highly_available();
            for pod in pods.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if !is_store_pod(&pod, store) {
                    tracing::warn!(pod = %name, "pod carries the store's labels but is not its pod; not dialled");
                    continue;
                }
                let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
                let Some(ip) = ip.filter(|ip| !ip.is_empty()) else {
                    tracing::info!(pod = %name, "pod has no IP yet; rotation waits");
                    return Ok(None);
                };
                let addr = |port: u16| match store.tls.as_ref() {
                    None => Ok(ConnectionAddr::Tcp(ip.clone(), port)),
                    Some(_) => {
                        tls_addr(ctx, store, &name, port, tls.and_then(|t| t.ca_crt.as_ref()))
                    }
                };
                if sentinels {
                    targets.sentinels.push(PodEndpoint {
                        name: format!("{name} (sentinel)"),
                        addr: addr(self.sentinel_port)?,
                    });
                }
                targets.redis.push(PodEndpoint {
                    addr: addr(self.port)?,
                    name,
                });
            }
            Ok(Some(targets))
        })
    }
}

/// Whether a listed pod is one of the store's own: named `<store>-<ordinal>` (as the probe cache
/// checks) and controlled by the store's StatefulSet. The operator sends this pod its own password
/// and the app user's new password (in `AUTH`, to verify), so a look-alike must not get them.
pub fn is_store_pod(pod: &Pod, store: &ValidatedStore) -> bool {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let statefulset = ChildNames::statefulset(&store.name);
    let controlled = pod.metadata.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.api_version == "apps/v1"
            && o.kind == "StatefulSet"
            && o.name == statefulset
    });
    is_pod_of(name, &store.name) && controlled
}

/// A TLS address trusting only the store's CA, named as the certificate names the pod.
fn tls_addr(
    ctx: &Context,
    store: &ValidatedStore,
    pod: &str,
    port: u16,
    ca: Option<&ByteString>,
) -> Result<ConnectionAddr> {
    let host = format!(
        "{pod}.{}.{}.svc.{}",
        ChildNames::headless_service(&store.name),
        store.namespace,
        ctx.settings.cluster_domain.trim_end_matches('.')
    );
    let Some(ca) = ca else {
        return Err(RotationError::Live {
            action: "connect over TLS",
            failed: 1,
            total: 1,
            details: format!("{pod}: the TLS Secret has no ca.crt to verify the pod with"),
        }
        .into());
    };
    tls_connection_addr(host, port, &ca.0).map_err(|e| {
        RotationError::Live {
            action: "connect over TLS",
            failed: 1,
            total: 1,
            details: format!("{pod}: unusable CA certificate ({:?})", e.kind()),
        }
        .into()
    })
}

/// What the rotation step tells the rest of the reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationOutcome {
    /// `status.auth`.
    pub auth: AuthStatus,
    /// Come back after this long (grace period, waiting for pods), instead of the resync.
    pub requeue_after: Option<Duration>,
}

/// The credentials the connection Secret carries in `state`: the current password (and, once the
/// new one is published until the rotation finishes, the previous one under `previous-password`).
pub fn connection_credentials(state: &RotationState, base: &StoreCredentials) -> StoreCredentials {
    let (app, app_previous) = match state {
        RotationState::InProgress(r)
            if matches!(r.stage, Stage::Published | Stage::OldPasswordRetired) =>
        {
            (r.new_password.clone(), Some(r.old_password.clone()))
        }
        _ => (base.app.clone(), None),
    };
    StoreCredentials {
        app,
        app_previous,
        ..base.clone()
    }
}

/// The internal Secret for the read state: `users.acl` from [`RotationState::acl_credentials`]
/// plus the rotation keys.
pub fn desired_internal(store: &ValidatedStore, read: &SecretsRead) -> Secret {
    let mut secret =
        desired_internal_secret(store, &read.rotation.acl_credentials(&read.credentials));
    read.rotation
        .merge_into_secret_data(secret.data.get_or_insert_with(BTreeMap::new));
    secret
}

fn desired_connection(
    store: &ValidatedStore,
    credentials: &StoreCredentials,
    settings: &OperatorSettings,
    tls: Option<&TlsInputs>,
) -> Secret {
    let mut secret = desired_connection_secret(store, credentials, settings);
    set_ca_certificate(&mut secret, tls.and_then(|t| t.ca_crt.as_ref()));
    secret
}

/// Every child, agreeing with the rotation state and the TLS Secret: the builders' output with
/// the internal Secret's `users.acl` and rotation keys, the connection Secret of the current stage
/// (plus `ca.crt`), and the certificate's hash in the pod template.
pub fn desired_children(
    store: &ValidatedStore,
    read: &SecretsRead,
    settings: &OperatorSettings,
    tls: Option<&TlsInputs>,
) -> DesiredChildren {
    let acl = read.rotation.acl_credentials(&read.credentials);
    let mut children = crate::build::desired_children(store, &acl, settings);
    children.internal_secret = desired_internal(store, read);
    children.connection_secret = desired_connection(
        store,
        &connection_credentials(&read.rotation, &read.credentials),
        settings,
        tls,
    );
    if let Some(tls) = tls {
        let template = children
            .statefulset
            .spec
            .as_mut()
            .map(|spec| &mut spec.template);
        if let Some(template) = template {
            template
                .metadata
                .get_or_insert_with(ObjectMeta::default)
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(TLS_HASH_ANNOTATION.into(), tls.fingerprint.clone());
        }
    }
    children
}

/// Drives the rotation as far as it can go now. Each step is performed, then its state persisted
/// in the internal Secret (a crash in between repeats the idempotent step); `read` is updated so
/// the apply that follows sees the Secrets as they now are and writes nothing more to them.
pub async fn reconcile_rotation(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    read: &mut SecretsRead,
    tls: Option<&TlsInputs>,
) -> Result<RotationOutcome> {
    let mut requeue_after = None;
    let mut pods: Option<LiveTargets> = None;
    for _ in 0..MAX_STEPS_PER_RECONCILE {
        let now = Utc::now();
        let connection_password = read.credentials.app.clone();
        let next = plan(
            &RotationInput {
                desired_rotation: validated.auth.rotation.as_deref(),
                grace_period_seconds: validated.auth.rotation_grace_period_seconds,
                supplied_password: read.supplied_password.as_ref(),
                state: &read.rotation,
                connection_password: &connection_password,
                now,
            },
            Password::generate,
        );
        match &next.step {
            Step::Nothing => break,
            Step::WaitUntil(at) => {
                let wait = (*at - now).to_std().unwrap_or_default();
                // Whole seconds, rounded up, so the retry never lands just before the deadline.
                requeue_after = Some(Duration::from_secs(wait.as_secs() + 1));
                break;
            }
            Step::Begin => {}
            Step::AddNewPasswordLive { password } | Step::RetireOldPasswordLive { password } => {
                if pods.is_none() {
                    pods = ctx.pod_addresses.endpoints(ctx, validated, tls).await?;
                }
                let targets = match pods.as_ref() {
                    Some(targets) if !targets.redis.is_empty() => targets,
                    _ => {
                        tracing::info!(
                            step = next.step.name(),
                            "no pod with an address yet; rotation waits"
                        );
                        requeue_after = Some(POD_RETRY);
                        break;
                    }
                };
                let live = LiveAcl {
                    operator_user: OPERATOR_USER.into(),
                    operator_password: read.credentials.operator.clone(),
                    timeout: LIVE_TIMEOUT,
                };
                if matches!(next.step, Step::AddNewPasswordLive { .. }) {
                    live.add_app_password_everywhere(targets, password).await?;
                } else {
                    live.remove_app_password_everywhere(targets, password)
                        .await?;
                }
            }
            Step::PublishToConnectionSecret {
                password,
                previous_password,
            } => {
                let credentials = StoreCredentials {
                    app: password.clone(),
                    app_previous: Some(previous_password.clone()),
                    ..read.credentials.clone()
                };
                publish_password(ctx, validated, read, credentials, tls).await?;
            }
            Step::Finish { password } => {
                let credentials = StoreCredentials {
                    app: password.clone(),
                    app_previous: None,
                    ..read.credentials.clone()
                };
                publish_password(ctx, validated, read, credentials, tls).await?;
            }
        }
        let Some(then) = next.then else { break };
        persist(ctx, validated, read, then).await?;
        tracing::info!(
            step = next.step.name(),
            rotation = read.rotation.rotation().unwrap_or(""),
            "rotation step done"
        );
        announce(ctx, store, &next.step, &read.rotation).await;
    }
    Ok(RotationOutcome {
        auth: auth_status(&read.rotation, Utc::now()),
        requeue_after,
    })
}

/// Writes the connection Secret's new password and remembers what now is in it.
async fn publish_password(
    ctx: &Context,
    validated: &ValidatedStore,
    read: &mut SecretsRead,
    credentials: StoreCredentials,
    tls: Option<&TlsInputs>,
) -> Result<()> {
    let desired = desired_connection(validated, &credentials, &ctx.settings, tls);
    let hash = secrets::publish_connection_password(
        ctx,
        desired,
        &credentials,
        validated.auth.existing_secret.is_some(),
    )
    .await?;
    read.credentials.app = credentials.app;
    read.connection = SecretState::Remembered(hash);
    Ok(())
}

/// Persists `then` (rotation keys and its `users.acl`) in the internal Secret.
async fn persist(
    ctx: &Context,
    validated: &ValidatedStore,
    read: &mut SecretsRead,
    then: RotationState,
) -> Result<()> {
    read.rotation = then;
    let desired = desired_internal(validated, read);
    let applied = secrets::apply_secret(
        ctx,
        SecretRole::Internal,
        desired,
        &read.internal,
        &read.credentials,
        validated.auth.existing_secret.is_some(),
    )
    .await?;
    read.internal = SecretState::Remembered(applied.hash().to_string());
    Ok(())
}

/// Events for the steps applications care about; never a password.
async fn announce(ctx: &Context, store: &SessionStore, step: &Step, state: &RotationState) {
    let rotation = state
        .rotation()
        .map(|r| format!(" (spec.auth.rotation {r:?})"))
        .unwrap_or_default();
    let (reason, note) = match (step, state) {
        (Step::Begin, _) => (
            "RotationStarted",
            format!("Password rotation started{rotation}: a new app password is being added"),
        ),
        (Step::PublishToConnectionSecret { .. }, RotationState::InProgress(r)) => (
            "RotationPublished",
            format!(
                "The connection Secret {} carries the new app password{rotation}; the previous one \
                 works until {}",
                ChildNames::connection_secret(&store_name(store)),
                r.previous_password_expires_at
                    .map(crate::rotation::state::rfc3339)
                    .unwrap_or_default()
            ),
        ),
        (Step::Finish { .. }, _) => (
            "RotationFinished",
            format!("Password rotation finished{rotation}: the previous app password is refused"),
        ),
        _ => return,
    };
    publish(ctx, store, EventType::Normal, reason, "Rotating", note).await;
}

fn store_name(store: &SessionStore) -> String {
    kube::ResourceExt::name_any(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::state::Rotation;

    fn pw(s: &str) -> Password {
        Password::from_secret_value(s.into())
    }

    #[test]
    fn only_the_stores_own_pods_are_dialled() {
        let store = crate::validate::validate(
            &serde_yaml::from_str::<SessionStore>(
                "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
                 metadata: {name: web, namespace: shop, uid: u}\nspec: {clients: {podSelector: {}}}\n",
            )
            .unwrap(),
        )
        .unwrap();
        let pod = |name: &str, owner: Option<(&str, &str, bool)>| -> Pod {
            let owners: Vec<_> = owner
                .into_iter()
                .map(|(kind, owner, controller)| {
                    serde_json::json!({"apiVersion": "apps/v1", "kind": kind, "name": owner,
                                       "uid": "s", "controller": controller})
                })
                .collect();
            serde_json::from_value(serde_json::json!({"metadata": {
                "name": name, "namespace": "shop", "ownerReferences": owners,
                "labels": {"app.kubernetes.io/instance": "web"}
            }}))
            .unwrap()
        };
        assert!(is_store_pod(
            &pod("web-0", Some(("StatefulSet", "web", true))),
            &store
        ));
        assert!(is_store_pod(
            &pod("web-12", Some(("StatefulSet", "web", true))),
            &store
        ));
        // Same labels, but not the store's: another name, no owner, another owner, not controller.
        for (name, owner) in [
            ("web-x", Some(("StatefulSet", "web", true))),
            ("impostor", Some(("StatefulSet", "web", true))),
            ("web-web-0", Some(("StatefulSet", "web", true))),
            ("web-0", None),
            ("web-0", Some(("StatefulSet", "other", true))),
            ("web-0", Some(("ReplicaSet", "web", true))),
            ("web-0", Some(("StatefulSet", "web", false))),
        ] {
            assert!(!is_store_pod(&pod(name, owner), &store), "{name} {owner:?}");
        }
    }

    #[test]
    fn the_connection_secret_switches_at_publish_and_keeps_the_previous_until_finish() {
        let base = StoreCredentials {
            app: pw("old"),
            ..StoreCredentials::generate()
        };
        let at = |stage| {
            RotationState::InProgress(Rotation {
                rotation: Some("v2".into()),
                stage,
                started_at: Utc::now(),
                previous_password_expires_at: None,
                new_password: pw("new"),
                old_password: pw("old"),
            })
        };
        let seen = |state: &RotationState| {
            let c = connection_credentials(state, &base);
            (
                c.app.expose().to_string(),
                c.app_previous.map(|p| p.expose().to_string()),
            )
        };
        let old = ("old".to_string(), None);
        let both = ("new".to_string(), Some("old".to_string()));
        assert_eq!(seen(&RotationState::default()), old);
        assert_eq!(seen(&at(Stage::NewPasswordPersisted)), old);
        assert_eq!(seen(&at(Stage::NewPasswordLive)), old);
        assert_eq!(seen(&at(Stage::Published)), both);
        assert_eq!(seen(&at(Stage::OldPasswordRetired)), both);
        // The other users' passwords are never touched by a rotation.
        let c = connection_credentials(&at(Stage::Published), &base);
        assert_eq!(c.operator, base.operator);
    }
}
