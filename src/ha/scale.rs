//! Scale-down guard: a StatefulSet removes its highest ordinals first, so shrinking while the
//! primary is one of them would kill the primary (a crash failover, losing the writes it had not
//! replicated yet). The guard holds the StatefulSet at its current size, hands the primary over to
//! a pod that stays (the deliberate handover loses no acknowledged write), and lets the normal apply
//! shrink the StatefulSet once the Sentinels name a primary in range. The same guard covers an HA
//! store scaled to 1 (standalone): pod 0 must be the primary before pods 1.. go.

use std::time::Duration;

use kube::runtime::events::EventType;

use crate::build::StoreCredentials;
use crate::build::meta::ChildNames;
use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::Result;
use crate::ha::handover::{HandoverOutcome, HandoverRequest};
use crate::validate::ValidatedStore;
use crate::vocabulary::{EventAction, Reason};

/// How soon a held scale-down is looked at again (the Sentinels agree within seconds).
pub const SCALE_DOWN_RECHECK: Duration = Duration::from_millis(2500);

/// What the guard decides for one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleDecision {
    /// Apply `spec.replicas` as usual (no scale-down, or the primary stays).
    Proceed,
    /// Keep `replicas` pods and hand `primary` over to a pod not in `avoid` (the pods a shrink
    /// would remove, highest ordinals).
    Hold {
        replicas: i32,
        primary: String,
        avoid: Vec<String>,
    },
    /// Keep `replicas` pods: no Sentinel majority names a primary, so a shrink could remove it.
    HoldUntilPrimaryKnown { replicas: i32 },
}

/// The pure decision: `running` pods now, `desired` = `spec.replicas`, `primary` = the pod a
/// Sentinel majority names (`None` when unknown).
pub fn scale_down_decision(
    store_name: &str,
    running: i32,
    desired: i32,
    primary: Option<&str>,
) -> ScaleDecision {
    // Only a scale-down of a running HA store (a standalone store has no replica to hand over to).
    if running <= desired || running < 3 {
        return ScaleDecision::Proceed;
    }
    let Some(primary) = primary else {
        return ScaleDecision::HoldUntilPrimaryKnown { replicas: running };
    };
    let ordinal = crate::pods::ordinal(store_name, primary).and_then(|n| i32::try_from(n).ok());
    match ordinal {
        Some(ordinal) if ordinal < desired => ScaleDecision::Proceed,
        Some(_) => ScaleDecision::Hold {
            replicas: running,
            primary: primary.to_string(),
            avoid: (desired..running)
                .map(|i| crate::pods::pod_name(&ChildNames::statefulset(store_name), i))
                .collect(),
        },
        None => ScaleDecision::HoldUntilPrimaryKnown { replicas: running },
    }
}

/// A held scale-down: build the children from `store` (the current pod count) and requeue soon.
pub struct ScaleHold {
    pub store: ValidatedStore,
    pub requeue: Duration,
}

/// The guard's step, before the children are built. `None`: build `spec.replicas` as usual.
pub async fn guard_scale_down(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    credentials: &StoreCredentials,
    tls_ca: Option<&[u8]>,
) -> Result<Option<ScaleHold>> {
    let key = crate::key::StoreKey::of_validated(validated);
    let running = running_pods(ctx, validated).await?;
    if running <= validated.replicas || running < 3 {
        ctx.ha.scale_memo.forget(&key);
        return Ok(None);
    }
    // The store as it runs now: the Sentinels and pods that exist, HA even when the target is 1.
    let mut held = validated.clone();
    held.replicas = running;
    let answer = ctx
        .ha
        .discovery
        .discover(&held, &ctx.settings, &credentials.operator, tls_ca)
        .await;
    let primary = answer.as_ref().ok().and_then(|a| a.pod.clone());
    let decision = scale_down_decision(
        &validated.name,
        running,
        validated.replicas,
        primary.as_deref(),
    );
    // A handover whose old primary was not demoted in time is a Warning (writes may be lost).
    let mut event_type = EventType::Normal;
    let note = match &decision {
        ScaleDecision::Proceed => {
            ctx.ha.scale_memo.forget(&key);
            return Ok(None);
        }
        ScaleDecision::HoldUntilPrimaryKnown { .. } => {
            let why = match &answer {
                Err(error) => error.to_string(),
                Ok(a) => format!(
                    "the Sentinels name {}, not a pod of this store",
                    a.address()
                ),
            };
            format!(
                "Scale-down from {running} to {} held: the primary is not known ({why})",
                validated.replicas
            )
        }
        ScaleDecision::Hold { primary, avoid, .. } => {
            let outcome = ctx
                .ha
                .handover
                .hand_over(HandoverRequest {
                    store: &held,
                    settings: &ctx.settings,
                    credentials,
                    tls_ca,
                    primary,
                    avoid,
                })
                .await;
            let (what, message) = match &outcome {
                HandoverOutcome::Started {
                    message, demoted, ..
                } => {
                    if !demoted {
                        event_type = EventType::Warning;
                    }
                    ("handover started", message)
                }
                HandoverOutcome::NotNow { message } => ("handover not possible yet", message),
            };
            format!(
                "Scale-down from {running} to {} held: the primary {primary} would be removed; {what}: {message}",
                validated.replicas
            )
        }
    };
    tracing::info!("{note}");
    if ctx.ha.scale_memo.is_new(&key, &note) {
        ctx.publish(
            store,
            event_type,
            Reason::ScaleDownHandover,
            EventAction::ScaleDown,
            note,
        )
        .await;
    }
    Ok(Some(ScaleHold {
        store: held,
        requeue: SCALE_DOWN_RECHECK,
    }))
}

/// Pods the StatefulSet runs now (`status.replicas`), from the watch cache or the API server;
/// 0 before it exists.
async fn running_pods(ctx: &Context, store: &ValidatedStore) -> Result<i32> {
    let running = ctx
        .read_statefulset(
            store,
            |cache, namespace, name| {
                cache
                    .statefulset_status(namespace, name)
                    .map(|s| s.replicas)
            },
            |sts| sts.status.as_ref().map_or(0, |s| s.replicas),
        )
        .await?;
    Ok(running.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::memo::ScaleGuardMemo;
    use crate::key::StoreKey;

    fn pods(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_primary_that_a_shrink_would_remove_holds_the_scale_down() {
        assert_eq!(
            scale_down_decision("web", 5, 3, Some("web-4")),
            ScaleDecision::Hold {
                replicas: 5,
                primary: "web-4".into(),
                avoid: pods(&["web-3", "web-4"]),
            }
        );
        assert_eq!(
            scale_down_decision("web", 5, 3, Some("web-3")),
            ScaleDecision::Hold {
                replicas: 5,
                primary: "web-3".into(),
                avoid: pods(&["web-3", "web-4"]),
            }
        );
    }

    #[test]
    fn a_primary_that_stays_releases_the_scale_down() {
        for primary in ["web-0", "web-1", "web-2"] {
            assert_eq!(
                scale_down_decision("web", 5, 3, Some(primary)),
                ScaleDecision::Proceed
            );
        }
    }

    #[test]
    fn ha_to_standalone_keeps_pod_zero_primary() {
        assert_eq!(
            scale_down_decision("web", 3, 1, Some("web-2")),
            ScaleDecision::Hold {
                replicas: 3,
                primary: "web-2".into(),
                avoid: pods(&["web-1", "web-2"]),
            }
        );
        assert_eq!(
            scale_down_decision("web", 3, 1, Some("web-0")),
            ScaleDecision::Proceed
        );
    }

    #[test]
    fn no_scale_down_or_no_ha_never_holds() {
        assert_eq!(
            scale_down_decision("web", 3, 5, Some("web-2")),
            ScaleDecision::Proceed
        );
        assert_eq!(
            scale_down_decision("web", 3, 3, None),
            ScaleDecision::Proceed
        );
        assert_eq!(
            scale_down_decision("web", 1, 1, None),
            ScaleDecision::Proceed
        );
        assert_eq!(
            scale_down_decision("web", 0, 3, None),
            ScaleDecision::Proceed
        );
    }

    #[test]
    fn an_unknown_primary_holds_without_a_handover() {
        assert_eq!(
            scale_down_decision("web", 5, 3, None),
            ScaleDecision::HoldUntilPrimaryKnown { replicas: 5 }
        );
        // Another store's pod name (a prefix match is not enough).
        assert_eq!(
            scale_down_decision("web", 5, 3, Some("web-api-4")),
            ScaleDecision::HoldUntilPrimaryKnown { replicas: 5 }
        );
    }

    #[test]
    fn an_unchanged_note_is_announced_once() {
        let memo = ScaleGuardMemo::default();
        assert!(memo.is_new(&StoreKey::new("ns", "web"), "held: a"));
        assert!(!memo.is_new(&StoreKey::new("ns", "web"), "held: a"));
        assert!(memo.is_new(&StoreKey::new("ns", "web"), "held: b"));
        assert!(memo.is_new(&StoreKey::new("ns", "other"), "held: b"));
        memo.forget(&StoreKey::new("ns", "web"));
        assert!(memo.is_new(&StoreKey::new("ns", "web"), "held: b"));
    }
}
