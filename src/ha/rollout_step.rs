//! The rolling-update step of an HA store's reconcile (right after the HA step): reads the
//! StatefulSet's update revision and the pods (from the watch caches: no API call for a store that
//! is up to date), asks the pure planner (`ha::rollout`) what to do, and does it: a pod DELETE with
//! a uid precondition, or a deliberate handover through `ctx.ha.handover`. It reports an `Updating`
//! condition and asks for a quick requeue while the update runs (pods do not wake the reconcile).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::events::EventType;

use crate::build::StoreCredentials;
use crate::cache::StatefulSetRevision;
use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::{Error, Result};
use crate::ha::handover::{HandoverOutcome, HandoverRequest, ReplicationRequest};
use crate::ha::memo::HANDOVER_SETTLE;
use crate::ha::observation::{PodRole, PrimaryObservation};
use crate::ha::rollout::{Decision, RolloutInput, RolloutPod, decide, progress};
use crate::metrics::Verb;
use crate::validate::ValidatedStore;
use crate::vocabulary::{EventAction, Reason};

/// How soon to look again while pods are being updated.
pub const ROLLOUT_REQUEUE: Duration = Duration::from_secs(3);
/// Consecutive refused handovers after which a Warning Event is published (then every as many).
pub const HANDOVER_REFUSALS_WARNING: u32 = 3;

/// The `Updating` condition the status step writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdatingCondition {
    pub updating: bool,
    pub reason: Reason,
    pub message: String,
}

/// What the step saw and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutObservation {
    /// `None`: keep the previous condition (nothing reliable to say in this reconcile).
    pub condition: Option<UpdatingCondition>,
    pub decision: Option<Decision>,
    pub requeue: Option<Duration>,
}

/// The StatefulSet's update revision is not known yet (just written, or its controller has not
/// caught up): keep the condition; the StatefulSet watch wakes the reconcile when its status moves.
fn revision_pending() -> RolloutObservation {
    RolloutObservation {
        condition: None,
        decision: None,
        requeue: None,
    }
}

/// Runs the rolling update for one store; `None` for a standalone store. `statefulset_written`:
/// the apply just wrote the StatefulSet, so its update revision is not known yet.
pub async fn reconcile_rollout(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    credentials: &StoreCredentials,
    tls_ca: Option<&[u8]>,
    ha: Option<&PrimaryObservation>,
    statefulset_written: bool,
) -> Result<Option<RolloutObservation>> {
    if !validated.is_highly_available() {
        return Ok(None);
    }
    let target = RolloutTarget {
        ctx,
        store,
        validated,
        credentials,
        tls_ca,
        key: crate::key::StoreKey::of_validated(validated),
    };
    let Some(update_revision) = update_revision(ctx, validated, statefulset_written).await? else {
        return Ok(Some(revision_pending()));
    };
    let pods: Vec<PodRole> = match ha.and_then(|h| h.pods.clone()) {
        Some(pods) => pods,
        None => ctx.ha.pods.pods(ctx.cluster(), validated).await?,
    };
    let rollout_pods = rollout_pods(validated, &pods);
    let input = RolloutInput {
        desired_replicas: validated.replicas,
        update_revision: Some(&update_revision),
        observed: true,
        pods: &rollout_pods,
        primary: ha.filter(|h| h.known).and_then(|h| h.primary.as_deref()),
        replicas_online: None,
    };
    let done = progress(&input);
    let decision = decide_with_replication(&target, &input).await;
    let decision = settle_after_handover(&target, decision);
    let summary = format!(
        "{}/{} pods at revision {update_revision}",
        done.updated, done.desired
    );
    let observation = act(
        &target,
        decision,
        &pods,
        &update_revision,
        done.desired,
        &summary,
    )
    .await?;
    Ok(Some(observation))
}

/// The store one rolling-update step works on, and where it remembers its handovers.
struct RolloutTarget<'a> {
    ctx: &'a Context,
    store: &'a SessionStore,
    validated: &'a ValidatedStore,
    credentials: &'a StoreCredentials,
    tls_ca: Option<&'a [u8]>,
    /// The key of the rolling update's memory (`ha::memo::RolloutMemo`).
    key: crate::key::StoreKey,
}

/// The StatefulSet's update revision once its controller has caught up with the spec; `None`
/// while it is not known (just written, not observed yet, or not reported).
async fn update_revision(
    ctx: &Context,
    validated: &ValidatedStore,
    statefulset_written: bool,
) -> Result<Option<String>> {
    if statefulset_written {
        return Ok(None);
    }
    let Some(revision) = statefulset_revision(ctx, validated).await? else {
        return Ok(None);
    };
    if !revision.observed {
        // The StatefulSet controller has not caught up with the spec: say nothing new yet.
        return Ok(None);
    }
    Ok(revision.update_revision)
}

/// The store's pods as the planner sees them (pods of other names are left out).
fn rollout_pods(validated: &ValidatedStore, pods: &[PodRole]) -> Vec<RolloutPod> {
    pods.iter()
        .filter_map(|pod| {
            Some(RolloutPod {
                ordinal: crate::pods::ordinal(&validated.name, &pod.name)?,
                name: pod.name.clone(),
                revision: pod.revision.clone(),
                ready: pod.ready,
                terminating: pod.terminating,
            })
        })
        .collect()
}

/// The planner's decision. Ready is not synced: before a restart, the primary must list every
/// other pod as an online replica (asked only here, so an up-to-date store costs no Redis call).
async fn decide_with_replication(target: &RolloutTarget<'_>, input: &RolloutInput<'_>) -> Decision {
    let decision = decide(input);
    let (Decision::Restart(_), Some(primary)) = (&decision, input.primary) else {
        return decision;
    };
    let request = ReplicationRequest {
        store: target.validated,
        settings: &target.ctx.settings,
        credentials: target.credentials,
        tls_ca: target.tls_ca,
        primary,
    };
    match target.ctx.ha.handover.replication(request).await {
        Ok(online) => decide(&RolloutInput {
            replicas_online: Some(&online),
            ..input.clone()
        }),
        Err(why) => Decision::Wait(format!(
            "cannot read the replication state of the primary {primary}: {why}"
        )),
    }
}

/// A handover just started from this primary: give the Sentinels time to promote.
fn settle_after_handover(target: &RolloutTarget<'_>, decision: Decision) -> Decision {
    let Decision::HandOver { primary } = &decision else {
        return decision;
    };
    let recent = target.ctx.ha.rollout.with(&target.key, |memory| {
        memory
            .started
            .as_ref()
            .is_some_and(|(from, at)| from == primary && at.elapsed() < HANDOVER_SETTLE)
    });
    if recent {
        // No elapsed time in the message: the status stays equal between these reconciles.
        return Decision::Wait(format!(
            "a handover from {primary} started; waiting for the Sentinels to name the new primary"
        ));
    }
    decision
}

/// Does what the planner decided and says so in the `Updating` condition.
async fn act(
    target: &RolloutTarget<'_>,
    decision: Decision,
    pods: &[PodRole],
    update_revision: &str,
    desired: usize,
    summary: &str,
) -> Result<RolloutObservation> {
    let ctx = target.ctx;
    let updating = |reason: Reason, message: String| {
        Some(UpdatingCondition {
            updating: true,
            reason,
            message,
        })
    };
    let observation = match &decision {
        Decision::UpToDate => {
            ctx.ha.rollout.forget(&target.key);
            RolloutObservation {
                condition: Some(UpdatingCondition {
                    updating: false,
                    reason: Reason::UpToDate,
                    message: format!("all {desired} pods at revision {update_revision}"),
                }),
                decision: Some(decision),
                requeue: None,
            }
        }
        Decision::Wait(why) => RolloutObservation {
            condition: updating(Reason::Waiting, format!("{summary}; waiting: {why}")),
            decision: Some(decision.clone()),
            requeue: Some(ROLLOUT_REQUEUE),
        },
        Decision::Restart(pod) => {
            let uid = pods
                .iter()
                .find(|p| &p.name == pod)
                .and_then(|p| p.uid.clone());
            restart_pod(ctx, target.validated, pod, uid).await?;
            tracing::info!(%pod, revision = %update_revision, "rolling update: restarting pod");
            publish_restart(ctx, target.store, target.validated, pod, summary).await;
            RolloutObservation {
                condition: updating(
                    Reason::RestartingPod,
                    format!("{summary}; restarting {pod}"),
                ),
                decision: Some(decision.clone()),
                requeue: Some(ROLLOUT_REQUEUE),
            }
        }
        Decision::HandOver { primary } => {
            let message = hand_over(target, primary, summary).await;
            RolloutObservation {
                condition: updating(Reason::HandingOverPrimary, message),
                decision: Some(decision.clone()),
                requeue: Some(ROLLOUT_REQUEUE),
            }
        }
    };
    Ok(observation)
}

/// Asks for a handover from `primary` (the only outdated pod), remembers its outcome and returns
/// the condition's message. A refusal is only a Warning Event every few times in a row.
async fn hand_over(target: &RolloutTarget<'_>, primary: &String, summary: &str) -> String {
    let (ctx, store, key) = (target.ctx, target.store, &target.key);
    let request = HandoverRequest {
        store: target.validated,
        settings: &ctx.settings,
        credentials: target.credentials,
        tls_ca: target.tls_ca,
        primary,
        avoid: &[],
    };
    let outcome = ctx.ha.handover.hand_over(request).await;
    match &outcome {
        HandoverOutcome::Started {
            message, demoted, ..
        } => {
            ctx.ha.rollout.with(key, |memory| {
                memory.started = Some((primary.clone(), Instant::now()));
                memory.refusals = 0;
            });
            tracing::info!(%primary, "rolling update: handover started");
            // Not demoted: the paused writes ran on the old primary; say so loudly.
            let event_type = if *demoted {
                EventType::Normal
            } else {
                EventType::Warning
            };
            ctx.publish(store,
                event_type,
                Reason::HandingOverPrimary,
                EventAction::RollingUpdate,
                format!(
                    "{summary}; only the primary {primary} is outdated: handing the primary role over ({message})"
                ),
            )
            .await;
            format!("{summary}; handing the primary role over from {primary}")
        }
        HandoverOutcome::NotNow { message } => {
            let refusals = ctx.ha.rollout.with(key, |memory| {
                memory.refusals = memory.refusals.saturating_add(1);
                memory.refusals
            });
            tracing::info!(%primary, refusals, "rolling update: handover refused: {message}");
            if refusals.is_multiple_of(HANDOVER_REFUSALS_WARNING) {
                ctx.publish(store,
                    EventType::Warning,
                    Reason::HandoverRefused,
                    EventAction::RollingUpdate,
                    format!(
                        "the primary {primary} could not be handed over {refusals} times in a row: {message}"
                    ),
                )
                .await;
            }
            format!("{summary}; handover from {primary} not possible yet: {message}")
        }
    }
}

/// The `RestartingPod` Event, with the pod as its related object: the Event recorder folds Events
/// with the same reason and objects into one series (keeping the first note), so each pod gets its
/// own (see `Context::publish_related`).
async fn publish_restart(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    pod: &str,
    summary: &str,
) {
    let pod_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.into()),
        namespace: Some(validated.namespace.clone()),
        ..ObjectReference::default()
    };
    ctx.publish_related(
        store,
        EventType::Normal,
        Reason::RestartingPod,
        EventAction::RollingUpdate,
        format!("{summary}; restarting {pod} to update it"),
        pod_ref,
    )
    .await;
}

/// The StatefulSet's revision state from the cache, or one GET when there is no cache.
async fn statefulset_revision(
    ctx: &Context,
    store: &ValidatedStore,
) -> Result<Option<StatefulSetRevision>> {
    ctx.read_statefulset(
        store,
        |cache, namespace, name| cache.statefulset_revision(namespace, name),
        StatefulSetRevision::of,
    )
    .await
}

/// Deletes one pod so the StatefulSet controller recreates it at the update revision. The uid
/// precondition makes sure a pod already recreated (same name, new uid) is never deleted by a
/// stale view; a pod already gone or replaced is not an error.
async fn restart_pod(
    ctx: &Context,
    store: &ValidatedStore,
    pod: &str,
    uid: Option<String>,
) -> Result<()> {
    let Some(uid) = uid else {
        // Without a uid the precondition cannot be set: skip, the next reconcile reads it again.
        tracing::info!(%pod, "rolling update: pod has no uid yet; not deleting it");
        return Ok(());
    };
    ctx.metrics.api_request(Verb::Delete);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &store.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 || response.code == 409 => {
            tracing::info!(%pod, code = response.code, "rolling update: pod already gone or replaced");
            Ok(())
        }
        Err(e) => Err(Error::kube(
            format!(
                "deleting pod {}/{pod} for the rolling update",
                store.namespace
            ),
            e,
        )),
    }
}
