//! The controller's side of a rotation: one call per reconcile ([`reconcile_rotation`]) reads the
//! persisted state, plans, performs the steps that can be done now (live ACL changes on every pod,
//! publishing the connection Secret), persists each step's state in the internal Secret, and says
//! when to come back; [`build_input`] gives `build::desired_children` the inputs that make the
//! children agree with that state.
//!
//! Pod addresses come through the [`crate::rotation::addresses::PodAddresses`] trait, asked only while a live step is due, so
//! a store that is not rotating never lists its pods. A highly available store's Sentinels get the
//! same live changes as its Redis servers (see [`crate::rotation::live`]).
//!
//! A store with no pod (or a pod without an IP yet) waits: the live change must reach every pod,
//! and a pod that is starting may have mounted a `users.acl` from before the rotation began, so
//! "no pod seen" does not prove "no pod to change". The persisted `users.acl` already holds both
//! passwords, so waiting costs nothing but time; the step is retried every [`POD_RETRY`].

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::EventType;

use crate::build::TlsInputs;
use crate::build::acl::OPERATOR_USER;
use crate::build::meta::ChildNames;
use crate::build::secret::{desired_connection_secret_with_ca, desired_internal_secret_with};
use crate::build::{BuildInput, StoreCredentials};
use crate::context::Context;
use crate::crd::{AuthStatus, SessionStore};
use crate::error::Result;
use crate::password::Password;
use crate::rotation::state::Stage;
use crate::rotation::{
    LiveAcl, LiveTargets, RotationInput, RotationState, Step, auth_status, plan,
};
use crate::secrets::{self, SecretRole, SecretState, SecretsRead};
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;
use crate::vocabulary::{EventAction, Reason};

/// How often a rotation waiting for pods (none yet, or one without an IP) looks again.
pub const POD_RETRY: Duration = Duration::from_secs(30);
/// Per pod: connect, `ACL SETUSER` and the verifying `AUTH` must finish within this time.
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Steps done in one reconcile at most (a whole rotation is 6): a bound, not a target.
const MAX_STEPS_PER_RECONCILE: usize = 8;

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
    desired_internal_secret_with(
        store,
        &read.rotation.acl_credentials(&read.credentials),
        &read.rotation.to_secret_data(),
    )
}

/// What the children are built from in the read state: `users.acl` and the rotation keys of the
/// internal Secret from the rotation state, the connection Secret of the current stage (plus
/// `ca.crt`), and the certificate's hash for the pod template. `build::desired_children` turns it
/// into the children the apply step writes.
pub fn build_input<'a>(
    store: &'a ValidatedStore,
    read: &SecretsRead,
    settings: &'a OperatorSettings,
    tls: Option<&'a TlsInputs>,
) -> BuildInput<'a> {
    BuildInput {
        store,
        settings,
        acl_credentials: read.rotation.acl_credentials(&read.credentials),
        connection_credentials: connection_credentials(&read.rotation, &read.credentials),
        internal_secret_extra: read.rotation.to_secret_data(),
        tls,
    }
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
                    pods = ctx
                        .pod_addresses
                        .endpoints(ctx.cluster(), validated, tls)
                        .await?;
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
    let desired = desired_connection_secret_with_ca(
        validated,
        &credentials,
        &ctx.settings,
        tls.and_then(|t| t.ca_crt.as_ref()),
    );
    let hash = secrets::publish_connection_password(ctx, desired, &credentials).await?;
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
            Reason::RotationStarted,
            format!("Password rotation started{rotation}: a new app password is being added"),
        ),
        (Step::PublishToConnectionSecret { .. }, RotationState::InProgress(r)) => (
            Reason::RotationPublished,
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
            Reason::RotationFinished,
            format!("Password rotation finished{rotation}: the previous app password is refused"),
        ),
        _ => return,
    };
    ctx.publish(
        store,
        EventType::Normal,
        reason,
        EventAction::Rotating,
        note,
    )
    .await;
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
