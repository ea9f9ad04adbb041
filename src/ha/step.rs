//! The HA step of the reconcile (after apply, before status): asks the Sentinels which pod is the
//! primary (strict majority only), moves the `sessionstore.dev/role` labels so the primary-only
//! ClusterIP Service follows it, and reports what it saw for the status step.
//!
//! Its two inputs are traits so the controller's other work (a shared pod cache, rotation) can plug
//! in without touching this logic, and tests can inject fixed answers:
//! - [`PodSource`]: the store's pods. [`CachedPods`] (the default) reads the shared pod watch cache
//!   once it has synced and only falls back to [`ApiPods`] (one `list`) without a cache.
//! - [`PrimaryDiscovery`]: the majority answer. [`SentinelDiscovery`] dials the Sentinels at the
//!   pods' headless DNS names (the operator runs in the cluster), or at injected addresses.
//!
//! Labels are written with a JSON merge patch of `metadata.labels`, not server-side apply: the role
//! is a fact observed at one moment, re-checked on every reconcile, not desired state we must own
//! continuously. Nothing else writes that key: the StatefulSet controller sets template labels only
//! when it creates a pod and never removes extra labels from a running pod, and a recreated pod comes
//! back without the label and is labelled on the next reconcile. A merge patch touches only that key,
//! cannot conflict, needs no `force`, and leaves no managedFields entry to keep consistent. We only
//! send it when the label is wrong, so a steady store costs no write.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;

use crate::build::StoreCredentials;
use crate::build::meta::ROLE_LABEL;
use crate::context::Context;
use crate::crd::{Phase, SessionStore};
use crate::error::{Error, Result};
use crate::ha::disruption::{StoppingPrimary, decide as decide_stopping};
use crate::ha::handover::{HandoverOutcome, HandoverRequest};
use crate::ha::observation::{Failover, PodRole, PrimaryObservation};
use crate::ha::primary::{RoleChange, role_label_changes};
use crate::metrics::Verb;
use crate::validate::ValidatedStore;
use crate::vocabulary::{ConditionType, EventAction, Reason};

/// Field manager of the role-label patches, distinct from the children's applies.
pub const ROLE_FIELD_MANAGER: &str = "sessionstore-operator-role";
/// How soon a healthy HA store is checked again: a failover must move the Service within seconds,
/// and nothing else wakes the reconcile when Sentinels promote a replica.
pub const PRIMARY_RECHECK: Duration = Duration::from_secs(10);
/// How soon to ask again while no primary is known (Sentinels starting, or no majority, as in the
/// middle of a failover).
pub const PRIMARY_RETRY: Duration = Duration::from_secs(2);
/// How soon to ask again while the pod the Sentinels name is not Ready or is terminating: a
/// failover is probably under way, and the Service must follow it as soon as the Sentinels agree.
/// A pod change wakes the reconcile at once (the pod watch), so this polling starts within about a
/// second of a primary crashing and lasts only until the new primary is named.
pub const PRIMARY_FOLLOW: Duration = Duration::from_secs(1);
/// How long after the primary's Redis container restarted (a crash) the Sentinels are asked every
/// [`PRIMARY_FOLLOW`]: the restarted pod joins a peer and asks for a failover (startup.sh), and
/// nothing in the pod object changes when the Sentinels promote, so without this the Service
/// would follow only on the next [`PRIMARY_RECHECK`]. Covers `downAfterMilliseconds` (at most
/// 60 s) should the Sentinels refuse the early failover request.
pub const RESTART_FOLLOW: Duration = Duration::from_secs(60);

/// How often, after a handover from a stopping primary, the Sentinels are asked again (every
/// [`FOLLOW_INTERVAL`]) until a majority names the new primary, so the Service follows it in the
/// same reconcile.
const FOLLOW_ATTEMPTS: u32 = 30;
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// Runs the HA step for one store; `None` for a standalone store. Discovery problems become a
/// condition (labels untouched); only API errors are errors. When the primary pod is stopping
/// (deleted or evicted), the primary role is handed over first and the labels follow the new
/// primary (see `ha::disruption`).
pub async fn reconcile_primary(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    credentials: &StoreCredentials,
    ready_replicas: i32,
    tls_ca: Option<&[u8]>,
) -> Result<Option<PrimaryObservation>> {
    let target = HaTarget {
        ctx,
        store,
        validated,
        credentials,
        ready_replicas,
        tls_ca,
        key: crate::key::StoreKey::of_validated(validated),
    };
    let Some(first) = observe_primary(&target).await? else {
        return Ok(None);
    };
    let Some(pods) = first.pods.as_ref() else {
        return Ok(Some(first));
    };
    let key = &target.key;
    let primary = if first.known {
        first.primary.as_deref()
    } else {
        None
    };
    let uid = primary
        .and_then(|name| pods.iter().find(|p| p.name == name))
        .and_then(|p| p.uid.clone());
    let started = primary.is_some_and(|name| {
        ctx.ha
            .disruption
            .started_recently(key, name, uid.as_deref())
    });
    match decide_stopping(primary, pods, started) {
        StoppingPrimary::Nothing | StoppingPrimary::Started => Ok(Some(first)),
        StoppingPrimary::Cannot(why) => {
            tracing::info!("the primary pod is stopping and cannot be handed over: {why}");
            if ctx.ha.disruption.first_refusal(key, uid.as_deref()) {
                ctx.publish(
                    store,
                    EventType::Warning,
                    Reason::HandoverRefused,
                    EventAction::PodStopping,
                    format!("{why}; it stops as primary and the Sentinels fail over"),
                )
                .await;
            }
            Ok(Some(first))
        }
        StoppingPrimary::HandOver { primary, avoid } => {
            let stopping = StoppingHandover {
                primary: &primary,
                avoid: &avoid,
                uid: uid.as_deref(),
                pods,
            };
            Ok(Some(
                hand_over_stopping(&target, &stopping)
                    .await?
                    .unwrap_or(first),
            ))
        }
    }
}

/// The store one HA step works on.
struct HaTarget<'a> {
    ctx: &'a Context,
    store: &'a SessionStore,
    validated: &'a ValidatedStore,
    credentials: &'a StoreCredentials,
    ready_replicas: i32,
    tls_ca: Option<&'a [u8]>,
    /// `namespace/name`, the key of the handover memories.
    key: crate::key::StoreKey,
}

/// A stopping primary pod to hand the role over from.
struct StoppingHandover<'a> {
    primary: &'a String,
    avoid: &'a [String],
    uid: Option<&'a str>,
    pods: &'a [PodRole],
}

/// Hands the primary role over from a stopping primary pod. `Some`: the Sentinels already name
/// the new primary (a fresh observation); `None`: keep the first observation.
async fn hand_over_stopping(
    target: &HaTarget<'_>,
    stopping: &StoppingHandover<'_>,
) -> Result<Option<PrimaryObservation>> {
    let (ctx, store, key) = (target.ctx, target.store, &target.key);
    let (primary, uid, pods) = (stopping.primary, stopping.uid, stopping.pods);
    let request = HandoverRequest {
        store: target.validated,
        settings: &ctx.settings,
        credentials: target.credentials,
        tls_ca: target.tls_ca,
        primary,
        avoid: stopping.avoid,
    };
    match ctx.ha.handover.hand_over(request).await {
        HandoverOutcome::Started {
            message,
            demoted,
            promoted,
        } => {
            let promoted =
                promoted.filter(|to| demoted && pods.iter().any(|p| p.name == *to && p.ready));
            ctx.ha
                .disruption
                .note_started(key, primary, uid, promoted.as_deref());
            // The old primary is a replica of the promoted pod now, and its clients were
            // disconnected: move the Service at once rather than when a majority of the
            // Sentinels has heard of the promotion (the stopping pod's own Sentinel is
            // gone, so that waits for the last one; 0.2 to 1.3 s measured).
            if let Some(to) = promoted.as_deref() {
                let moved = move_role_labels(ctx, target.validated, pods, to).await?;
                tracing::info!(from = %primary, %to, labels = moved, "role labels moved to the promoted pod");
            }
            tracing::info!(%primary, demoted, "planned handover from a stopping primary pod: {message}");
            let event_type = if demoted {
                EventType::Normal
            } else {
                EventType::Warning
            };
            ctx.publish(store,
                event_type,
                Reason::HandingOverPrimary,
                EventAction::PodStopping,
                format!(
                    "the primary pod {primary} is stopping (deleted or evicted): planned handover before Redis stops ({message})"
                ),
            )
            .await;
            follow_new_primary(target, primary).await
        }
        HandoverOutcome::NotNow { message } => {
            tracing::info!(%primary, "the primary pod is stopping; handover not possible: {message}");
            if ctx.ha.disruption.first_refusal(key, uid) {
                ctx.publish(store,
                    EventType::Warning,
                    Reason::HandoverRefused,
                    EventAction::PodStopping,
                    format!(
                        "the primary pod {primary} is stopping, but the primary role could not be handed over: {message}; the operator retries while it stops, else it stops as primary and the Sentinels fail over"
                    ),
                )
                .await;
            }
            Ok(None)
        }
    }
}

/// The Service follows as soon as a majority names the new primary: asks again every
/// [`FOLLOW_INTERVAL`], at most [`FOLLOW_ATTEMPTS`] times.
async fn follow_new_primary(
    target: &HaTarget<'_>,
    old_primary: &str,
) -> Result<Option<PrimaryObservation>> {
    for _ in 0..FOLLOW_ATTEMPTS {
        let next = observe_primary(target).await?;
        if let Some(next) = next
            && next.known
            && next.primary.as_deref() != Some(old_primary)
        {
            return Ok(Some(next));
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
    Ok(None)
}

/// One discovery: the Sentinels' majority answer, the role labels moved to it, a failover noted.
async fn observe_primary(target: &HaTarget<'_>) -> Result<Option<PrimaryObservation>> {
    let (ctx, store, validated) = (target.ctx, target.store, target.validated);
    if !validated.is_highly_available() {
        return Ok(None);
    }
    let previous = store.status.as_ref().and_then(|s| s.primary.clone());
    if let Some(unknown) = cannot_ask_sentinels(target, &previous) {
        return Ok(Some(unknown));
    }
    let primary = match discover(target, &previous).await {
        Ok(primary) => primary,
        Err(unknown) => return Ok(Some(*unknown)),
    };
    let pods = ctx.ha.pods.pods(ctx.cluster(), validated).await?;
    if let Some(mut unknown) = unconfirmed(target, &previous, &primary, &pods) {
        unknown.pods = Some(pods);
        return Ok(Some(unknown));
    }
    let label_writes = move_role_labels(ctx, validated, &pods, &primary).await?;
    if label_writes > 0 {
        tracing::info!(%primary, labels = label_writes, "role labels moved");
    }
    let failover = previous.filter(|p| *p != primary).map(|from| Failover {
        from,
        to: primary.clone(),
    });
    if let Some(f) = &failover {
        tracing::info!(from = %f.from, to = %f.to, "primary changed");
        let planned = ctx.ha.disruption.handed_over_from(&target.key, &f.from)
            || ctx.ha.rollout.handed_over_from(&target.key, &f.from);
        publish_failover(ctx, store, f, planned).await;
    }
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let primary_serving = pods.iter().any(|p| {
        p.name == primary
            && p.ready
            && !p.terminating
            && !exited_within(p.redis_exited_at, now, RESTART_FOLLOW)
    });
    let requeue = if primary_serving {
        PRIMARY_RECHECK
    } else {
        PRIMARY_FOLLOW
    };
    Ok(Some(PrimaryObservation {
        message: format!("a majority of the Sentinels names {primary} as primary"),
        primary: Some(primary),
        known: true,
        reason: Reason::SentinelMajority,
        failover,
        label_writes,
        requeue: Some(requeue),
        pods: Some(pods),
    }))
}

/// Why the Sentinels cannot be asked yet, if they cannot.
fn cannot_ask_sentinels(
    target: &HaTarget<'_>,
    previous: &Option<String>,
) -> Option<PrimaryObservation> {
    if target.ready_replicas < 1 {
        // No pod is ready: no Sentinel can answer yet. The StatefulSet watch wakes us when one is.
        return Some(PrimaryObservation::unknown(
            previous.clone(),
            Reason::WaitingForPods,
            "no Redis pod is ready yet; the Sentinels cannot name a primary".into(),
            None,
        ));
    }
    if target.validated.tls.is_some() && target.tls_ca.is_none() {
        // The TLS step waits for the Secret before anything is applied, so this is a Secret
        // without `ca.crt`: the Sentinels cannot be verified, so nothing is relabelled.
        return Some(PrimaryObservation::unknown(
            previous.clone(),
            Reason::SentinelTlsCaMissing,
            "the TLS Secret has no ca.crt, so the Sentinels cannot be verified; role labels are unchanged".into(),
            Some(crate::context::RESYNC_INTERVAL),
        ));
    }
    None
}

/// The pod a majority of the Sentinels names as primary, or the observation saying why none is.
async fn discover(
    target: &HaTarget<'_>,
    previous: &Option<String>,
) -> std::result::Result<String, Box<PrimaryObservation>> {
    let ctx = target.ctx;
    let status = target.store.status.as_ref();
    let answer = match ctx
        .ha
        .discovery
        .discover(
            target.validated,
            &ctx.settings,
            &target.credentials.operator,
            target.tls_ca,
        )
        .await
    {
        Ok(answer) => answer,
        Err(error) => {
            let previous_reason = status
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == ConditionType::PrimaryKnown)
                })
                .map(|c| c.reason.clone());
            // A new store's Sentinels take a few seconds to meet: calm, not a warning.
            let never_known =
                previous.is_none() && !matches!(status.and_then(|s| s.phase), Some(Phase::Ready));
            let reason = if never_known {
                Reason::WaitingForSentinels
            } else {
                Reason::NoSentinelMajority
            };
            if previous_reason.as_deref() == Some(reason.as_str()) || never_known {
                tracing::debug!(%error, "primary not known");
            } else {
                tracing::warn!(%error, "primary not known; role labels unchanged");
            }
            return Err(Box::new(PrimaryObservation::unknown(
                previous.clone(),
                reason,
                error.to_string(),
                Some(PRIMARY_RETRY),
            )));
        }
    };
    answer.pod.clone().ok_or_else(|| {
        Box::new(PrimaryObservation::unknown(
            previous.clone(),
            Reason::PrimaryNotAPod,
            format!(
                "the Sentinels name {} as primary, which is not a pod of this store; role labels unchanged",
                answer.address()
            ),
            Some(PRIMARY_RETRY),
        ))
    })
}

/// Why the Sentinels' answer is not acted on yet, if it is not: no such pod, or the pod the
/// operator just demoted.
fn unconfirmed(
    target: &HaTarget<'_>,
    previous: &Option<String>,
    primary: &str,
    pods: &[PodRole],
) -> Option<PrimaryObservation> {
    if !pods.iter().any(|p| p.name == primary) {
        // Labelling no pod primary would empty the Service on a guess; wait for the pod instead.
        return Some(PrimaryObservation::unknown(
            previous.clone(),
            Reason::PrimaryPodMissing,
            format!(
                "the Sentinels name {primary} as primary, but there is no such pod; role labels unchanged"
            ),
            Some(PRIMARY_RETRY),
        ));
    }
    let uid = pods
        .iter()
        .find(|p| p.name == primary)
        .and_then(|p| p.uid.as_deref());
    let to = target
        .ctx
        .ha
        .disruption
        .demoted_to(&target.key, primary, uid)?;
    // A majority still names the pod the operator just demoted (the Sentinels learn of the
    // promotion one by one): keep the labels on the promoted pod and ask again shortly.
    Some(PrimaryObservation::unknown(
        previous.clone(),
        Reason::SentinelsCatchingUp,
        format!(
            "the Sentinels still name {primary}, which was just handed over to {to}; waiting for them to agree"
        ),
        Some(PRIMARY_FOLLOW),
    ))
}

/// Labels `primary` primary and every other pod replica (only the labels that differ); returns
/// how many were written.
async fn move_role_labels(
    ctx: &Context,
    store: &ValidatedStore,
    pods: &[PodRole],
    primary: &str,
) -> Result<usize> {
    let as_pods: Vec<Pod> = pods.iter().map(PodRole::as_pod).collect();
    let changes = role_label_changes(&as_pods, primary);
    for change in &changes {
        patch_role(ctx, store, change).await?;
    }
    Ok(changes.len())
}

/// Whether a container that exited at `exited` (Unix seconds) did so within `window` of `now`.
/// Pure, so it is unit-tested.
pub fn exited_within(exited: Option<i64>, now: i64, window: Duration) -> bool {
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    exited.is_some_and(|exited| now.saturating_sub(exited) < window)
}

/// One merge patch of the role label (see the module doc for why not server-side apply).
async fn patch_role(ctx: &Context, store: &ValidatedStore, change: &RoleChange) -> Result<()> {
    let body = serde_json::json!({"metadata": {"labels": {ROLE_LABEL: change.role.as_str()}}});
    ctx.metrics.api_request(Verb::Patch);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &store.namespace);
    let params = PatchParams {
        field_manager: Some(ROLE_FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(&change.pod, &params, &Patch::Merge(&body))
        .await
        .map_err(|e| {
            Error::kube(
                format!(
                    "labelling pod {}/{} {}",
                    store.namespace,
                    change.pod,
                    change.role.as_str()
                ),
                e,
            )
        })?;
    Ok(())
}

/// The `PrimaryChanged` Event; a failure is logged, never fatal. Not sent on the first discovery
/// (no failover happened: status.primary simply appears).
/// `planned`: the operator handed the role over (a stopping primary pod, the rolling update).
async fn publish_failover(ctx: &Context, store: &SessionStore, failover: &Failover, planned: bool) {
    let how = if planned {
        "planned handover by the operator"
    } else {
        "Sentinel failover"
    };
    let note = format!(
        "Primary changed from {} to {} ({how}); the Service follows it",
        failover.from, failover.to
    );
    ctx.publish(
        store,
        EventType::Normal,
        Reason::PrimaryChanged,
        EventAction::Failover,
        note,
    )
    .await;
}

#[cfg(test)]
mod restart_tests {
    use super::*;

    #[test]
    fn a_primary_whose_redis_just_exited_is_followed_closely() {
        let window = RESTART_FOLLOW;
        assert!(exited_within(Some(1_000), 1_005, window));
        assert!(!exited_within(Some(1_000), 1_060, window));
        assert!(!exited_within(None, 1_005, window));
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s-0"},
            "status": {"containerStatuses": [
                {"name": "sentinel", "restartCount": 1, "ready": true, "image": "r", "imageID": "",
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:00:00Z"}}},
                {"name": "redis", "restartCount": 1, "ready": true, "image": "r", "imageID": "",
                 "lastState": {"terminated": {"exitCode": 137, "finishedAt": "2026-01-01T00:01:40Z"}}}
            ]}
        }))
        .expect("pod");
        assert_eq!(
            PodRole::of(&pod).expect("role").redis_exited_at,
            Some(1_767_225_700)
        );
        // What the watch cache keeps is enough.
        crate::cache::strip_pod(&mut pod);
        assert_eq!(
            PodRole::of(&pod).expect("role").redis_exited_at,
            Some(1_767_225_700)
        );
        let never: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s-0"},
            "status": {"containerStatuses": [
                {"name": "redis", "restartCount": 0, "ready": true, "image": "r", "imageID": ""}
            ]}
        }))
        .expect("pod");
        assert_eq!(PodRole::of(&never).expect("role").redis_exited_at, None);
    }
}
