//! Step 7, status: the status from everything the steps saw, written only when it changed (see
//! `crate::status`); one Event per change of cause; and when to reconcile again.

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::act::Acted;
use super::apply::Applied;
use super::decide::Decided;
use super::observe::Seen;
use crate::context::{Context, RESYNC_INTERVAL};
use crate::crd::SessionStore;
use crate::error::Result;
use crate::status::{Progress, write_status_over};
use crate::vocabulary::{ConditionStatus, ConditionType, EventAction, Reason};

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
        if before != Some(diagnosis.reason.as_str()) {
            let note = diagnosis.message.clone();
            ctx.publish(
                store,
                EventType::Warning,
                diagnosis.reason,
                EventAction::Diagnosing,
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
        ctx.publish(
            store,
            EventType::Normal,
            Reason::Ready,
            EventAction::Provisioning,
            note,
        )
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
        .find(|c| c.type_ == ConditionType::Ready)?;
    Some((ready.status == ConditionStatus::True, ready.reason.as_str()))
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
