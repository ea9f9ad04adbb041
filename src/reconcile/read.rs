//! Step 1, read: the spec (deleted? valid? an engine switch?), then what building needs from
//! outside the spec: the TLS Secret (cert-manager or the user's) and the store's Secrets. Each
//! can end the reconcile with a status that says what the store waits for.

use std::ops::ControlFlow::{self, Break, Continue};
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::build::TlsInputs;
use crate::context::Context;
use crate::crd::{Engine, PersistenceMode, SessionStore};
use crate::error::{Error, Result};
use crate::secrets::{SecretsRead, read_credentials};
use crate::status::{Progress, write_status};
use crate::tls::{TLS_RETRY, TlsReadiness};
use crate::validate::{ValidatedStore, check_engine_switch, validate_with};
use crate::vocabulary::{EventAction, Reason};

/// A step hands its output on, or ends the reconcile with an action (the status says why).
pub(super) type Flow<T> = std::ops::ControlFlow<Action, T>;

/// How often a store waiting for its `spec.auth.existingSecret` looks again.
const EXISTING_SECRET_RETRY: Duration = Duration::from_secs(60);

/// How the store's Secrets are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Secrets {
    /// A missing connection Secret means a new store: the internal one is not read but created
    /// (a 409 makes the pipeline run again with `ReadAll`).
    CreateIfMissing,
    ReadAll,
}

/// What the read step hands on.
pub(super) struct Inputs {
    pub tls: Option<TlsInputs>,
    pub secrets: SecretsRead,
}

/// The valid spec, or `Break` for a deleted store (the garbage collector removes the children) or
/// an invalid spec (the status and an Event name the field; retrying cannot help, so the store
/// waits for a change).
pub(super) async fn spec(
    ctx: &Context,
    store: &SessionStore,
) -> Result<ControlFlow<(), ValidatedStore>> {
    if store.meta().deletion_timestamp.is_some() {
        ctx.health
            .forget(&store.namespace().unwrap_or_default(), &store.name_any());
        return Ok(Break(()));
    }
    let running = running_engine(store);
    let checked = validate_with(store, &ctx.settings.images)
        .and_then(|validated| check_engine_switch(validated.engine, running).map(|()| validated));
    let validated = match checked {
        Ok(validated) => validated,
        Err(error) => {
            tracing::warn!(field = %error.field, "invalid spec: {}", error.message);
            if write_status(ctx, store, &Progress::Invalid(&error)).await? {
                let note = error.to_string();
                ctx.publish(
                    store,
                    EventType::Warning,
                    Reason::InvalidSpec,
                    EventAction::Validating,
                    note,
                )
                .await;
            }
            return Ok(Break(()));
        }
    };
    announce_engine_switch(ctx, store, &validated, running).await;
    Ok(Continue(validated))
}

/// The TLS inputs and the Secrets, or the end of the reconcile while either is missing.
pub(super) async fn inputs(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    secrets: Secrets,
) -> Result<Flow<Inputs>> {
    let tls = match crate::tls::prepare(ctx, validated).await? {
        TlsReadiness::Disabled => None,
        TlsReadiness::Ready(inputs) => Some(inputs),
        TlsReadiness::Waiting { reason, message } => {
            tracing::warn!(%reason, "{message}");
            let progress = Progress::WaitingForTls {
                reason,
                message: &message,
            };
            if write_status(ctx, store, &progress).await? {
                ctx.publish(
                    store,
                    EventType::Warning,
                    reason,
                    EventAction::ReadingSecret,
                    message,
                )
                .await;
            }
            return Ok(Break(Action::requeue(TLS_RETRY)));
        }
    };
    let optimistic = secrets == Secrets::CreateIfMissing;
    match read_credentials(ctx, validated, optimistic).await {
        Ok(secrets) => Ok(Continue(Inputs { tls, secrets })),
        Err(Error::ExistingSecret { message }) => {
            tracing::warn!("{message}");
            if write_status(ctx, store, &Progress::WaitingForSecret(&message)).await? {
                let note = format!("spec.auth.existingSecret: {message}");
                ctx.publish(
                    store,
                    EventType::Warning,
                    Reason::ExistingSecretMissing,
                    EventAction::ReadingSecret,
                    note,
                )
                .await;
            }
            Ok(Break(Action::requeue(EXISTING_SECRET_RETRY)))
        }
        Err(e) => Err(e),
    }
}

/// The engine the store's primary runs, as the health probe last read it (`INFO server`).
fn running_engine(store: &SessionStore) -> Option<Engine> {
    Engine::from_server_name(store.status.as_ref()?.health.as_ref()?.engine.as_deref()?)
}

/// Says once per spec generation that the engine changes and what that costs: an ordered rolling
/// update for an HA store, a restart of the only pod for a standalone one.
async fn announce_engine_switch(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    running: Option<Engine>,
) {
    let Some(from) = running.filter(|running| *running != validated.engine) else {
        return;
    };
    let observed = store.status.as_ref().and_then(|s| s.observed_generation);
    if observed == store.meta().generation {
        return;
    }
    let to = validated.engine;
    let note = if validated.is_highly_available() {
        format!(
            "Switching {from} -> {to}: an ordered rolling update (replicas first, one handover, \
             the old primary last) that keeps every session"
        )
    } else {
        let kept = match validated.persistence.mode {
            PersistenceMode::None => "sessions are lost (persistence none)",
            _ => "sessions are kept (the new server loads the data on the volume)",
        };
        format!("Switching {from} -> {to} restarts the only pod of this standalone store: {kept}")
    };
    tracing::info!(%from, %to, "engine switch");
    ctx.publish(
        store,
        EventType::Normal,
        Reason::SwitchingEngine,
        EventAction::Updating,
        note,
    )
    .await;
}
