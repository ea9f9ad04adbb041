//! Step 7, status: the status from everything the steps saw, written only when it changed; one
//! Event per change of cause; and when to reconcile again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::act::Acted;
use super::apply::Applied;
use super::decide::Decided;
use super::observe::Seen;
use crate::context::{Context, RESYNC_INTERVAL};
use crate::crd::{Phase, SessionStore, SessionStoreStatus};
use crate::error::Result;
use crate::status::{self, OwnedStatus, Progress, READY};

pub(super) async fn report(
    ctx: &Context,
    store: &SessionStore,
    decided: &Decided<'_>,
    applied: &Applied,
    acted: &Acted,
    seen: Seen,
) -> Result<Action> {
    let validated = decided.store.as_ref();
    // The Ready condition, not the phase: the health step may make a ready store Degraded, which
    // must not announce "Ready" again on every reconcile.
    let was_ready = ready_reason(store).is_some_and(|(ready, _)| ready);
    let with_health = seen.health.status_view(store.status.as_ref());
    let progress = Progress::Applied {
        store: validated,
        ready_replicas: applied.ready_replicas,
        auth: Some(&decided.rotation.auth),
        service_monitor_unavailable: applied.service_monitor_unavailable.as_deref(),
        ha: acted.ha.as_ref(),
        rollout: acted.rollout.as_ref(),
        diagnosis: seen.diagnosis.as_ref(),
    };
    let base = with_health.as_ref().or(store.status.as_ref());
    let written = write_status_over(ctx, store, base, &progress).await?;
    // One Warning Event per change of cause (the status carries it meanwhile).
    if written && let Some(diagnosis) = &seen.diagnosis {
        let before = ready_reason(store).map(|(_, reason)| reason);
        if before != Some(diagnosis.reason) {
            let note = diagnosis.message.clone();
            ctx.publish(
                store,
                EventType::Warning,
                diagnosis.reason,
                "Diagnosing",
                note,
            )
            .await;
        }
    }
    if written && let Some(update) = &seen.health.update {
        ctx.health.written(update);
    }
    let primary_known = acted.ha.as_ref().is_none_or(|h| h.known);
    if !was_ready && applied.ready_replicas >= validated.replicas && primary_known {
        let note = format!("All {} Redis replicas are ready", validated.replicas);
        ctx.publish(store, EventType::Normal, "Ready", "Provisioning", note)
            .await;
    }
    Ok(Action::requeue(requeue_after(decided, acted, &seen)))
}

/// The live Ready condition: whether it is True, and its reason.
fn ready_reason(store: &SessionStore) -> Option<(bool, &str)> {
    let ready = store
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == READY)?;
    Some((ready.status == "True", ready.reason.as_str()))
}

/// The soonest of what each step asked for, and at least every resync.
fn requeue_after(decided: &Decided<'_>, acted: &Acted, seen: &Seen) -> std::time::Duration {
    [
        decided.rotation.requeue_after,
        acted.ha.as_ref().and_then(|h| h.requeue),
        decided.scale_hold_requeue,
        acted.rollout.as_ref().and_then(|r| r.requeue),
    ]
    .into_iter()
    .flatten()
    .fold(
        seen.health.requeue_after(RESYNC_INTERVAL),
        |soonest, due| soonest.min(due),
    )
}

/// Computes the status and writes it when it changed. Returns whether it wrote.
pub(super) async fn write_status(
    ctx: &Context,
    store: &SessionStore,
    progress: &Progress<'_>,
) -> Result<bool> {
    write_status_over(ctx, store, store.status.as_ref(), progress).await
}

/// Like `write_status`, starting from `base` (the live status with the health step's update laid
/// over it) but still comparing with the live status, so only real changes are written.
async fn write_status_over(
    ctx: &Context,
    store: &SessionStore,
    base: Option<&SessionStoreStatus>,
    progress: &Progress<'_>,
) -> Result<bool> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let desired =
        status::desired_status(base, store.meta().generation, progress, &ctx.settings, &now);
    if !status::differs(store.status.as_ref(), &desired) {
        return Ok(false);
    }
    log_transition(store, &desired);
    status::patch_status(ctx, store, &desired).await?;
    Ok(true)
}

fn log_transition(store: &SessionStore, desired: &OwnedStatus) {
    let before = store.status.as_ref().and_then(|s| s.phase);
    if before != desired.phase {
        tracing::info!(
            from = before.map(Phase::as_str).unwrap_or("None"),
            to = desired.phase.map(Phase::as_str).unwrap_or("None"),
            reason = desired
                .condition(READY)
                .map(|c| c.reason.as_str())
                .unwrap_or_default(),
            "phase changed"
        );
    }
}
