//! One reconcile of a SessionStore as a pipeline, one file per step, each taking what the step
//! before produced: read (spec, TLS, Secrets) -> decide (scale guard, rotation) -> build -> apply
//! -> act (primary, rolling update) -> observe (Redis health, diagnosis) -> status.

mod act;
mod apply;
mod build;
mod decide;
mod error_policy;
mod observe;
mod read;
mod status;

use std::ops::ControlFlow::{Break, Continue};
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;

pub use error_policy::error_policy;

use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::{Error, Result};
use crate::validate::ValidatedStore;

/// Reconciles one SessionStore (timed, logged in its span). Errors go to [`error_policy`].
pub async fn reconcile(store: Arc<SessionStore>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer();
    let span = tracing::info_span!("reconcile", namespace = %store.namespace().unwrap_or_default(), name = %store.name_any());
    let action = tracing::Instrument::instrument(valid_store(&store, &ctx), span).await?;
    error_policy::succeeded(&ctx, &store);
    Ok(action)
}

async fn valid_store(store: &SessionStore, ctx: &Context) -> Result<Action> {
    let Continue(validated) = read::spec(ctx, store).await? else {
        return Ok(Action::await_change()); // deleted, or invalid: wait for a change
    };
    // Boxed: the pipeline's state is large (every step's output), keep it off the caller's stack.
    match Box::pin(pipeline(
        ctx,
        store,
        &validated,
        read::Secrets::CreateIfMissing,
    ))
    .await
    {
        // Someone created a Secret between our read and our create: read again, once.
        Err(Error::Conflict { context }) => {
            tracing::info!(%context, "conflict on create; reading again");
            ctx.credentials.forget(&validated);
            Box::pin(pipeline(ctx, store, &validated, read::Secrets::ReadAll)).await
        }
        other => other,
    }
}

async fn pipeline(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    secrets: read::Secrets,
) -> Result<Action> {
    let inputs = match read::inputs(ctx, store, validated, secrets).await? {
        Continue(inputs) => inputs,
        Break(waiting) => return Ok(waiting), // for the TLS Secret or spec.auth.existingSecret
    };
    let decided = decide::decide(ctx, store, validated, inputs).await?;
    let children = build::children(ctx, &decided);
    let applied = apply::apply(ctx, store, &decided, children).await?;
    let acted = act::act(ctx, store, &decided, &applied).await?;
    let seen = observe::observe(ctx, store, &decided, &applied).await;
    status::report(ctx, store, &decided, &applied, &acted, seen).await
}
