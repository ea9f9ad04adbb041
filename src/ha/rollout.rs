//! The rolling update of an HA store as a pure decision, so every rule is unit-tested: the
//! StatefulSet uses `OnDelete`, and the operator restarts outdated replicas one at a time (highest
//! ordinal first), then hands the primary role over deliberately, then restarts the old primary
//! once the Sentinels name an updated pod. At most one pod is ever down, and nothing is deleted
//! while the primary is unknown.
//!
//! The step that executes a [`Decision`] is `ha::rollout_step`.

/// What the planner needs of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutPod {
    pub name: String,
    /// The StatefulSet ordinal (`<store>-<ordinal>`).
    pub ordinal: u32,
    /// The pod's `controller-revision-hash` label.
    pub revision: Option<String>,
    pub ready: bool,
    /// `deletionTimestamp` is set.
    pub terminating: bool,
}

/// Everything the decision depends on, read in this reconcile.
#[derive(Clone, Debug)]
pub struct RolloutInput<'a> {
    /// `spec.replicas` of the store.
    pub desired_replicas: i32,
    /// The StatefulSet's `status.updateRevision`.
    pub update_revision: Option<&'a str>,
    /// `status.observedGeneration >= metadata.generation` (else `update_revision` may be stale).
    pub observed: bool,
    /// Every pod of the store that exists.
    pub pods: &'a [RolloutPod],
    /// The pod a Sentinel majority names as primary in this reconcile; `None` when unknown.
    pub primary: Option<&'a str>,
    /// The pods the primary lists as `state=online` replicas (link up, full sync finished);
    /// `None`: not asked. Ready only means the pod answers PING, which a restarted, still empty
    /// replica does before its sync finishes, so the step asks the primary before a restart.
    pub replicas_online: Option<&'a [String]>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every pod runs the update revision: nothing to do.
    UpToDate,
    /// Not safe or not possible to act now; the message says why.
    Wait(String),
    /// Delete this pod (a replica): the StatefulSet controller recreates it at the new revision.
    Restart(String),
    /// Only the primary is outdated and an updated replica is ready: hand the role over.
    HandOver { primary: String },
}

/// Pods of the store at the update revision and the number of desired pods, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub updated: usize,
    pub desired: usize,
}

/// How far the update is (pods with an ordinal below `desired_replicas` at the update revision).
pub fn progress(input: &RolloutInput<'_>) -> Progress {
    let desired = usize::try_from(input.desired_replicas.max(0)).unwrap_or(0);
    let updated = desired_pods(input)
        .filter(|pod| is_updated(pod, input.update_revision))
        .count();
    Progress { updated, desired }
}

fn desired_pods<'a>(input: &'a RolloutInput<'a>) -> impl Iterator<Item = &'a RolloutPod> + 'a {
    let desired = u32::try_from(input.desired_replicas.max(0)).unwrap_or(0);
    input.pods.iter().filter(move |pod| pod.ordinal < desired)
}

fn is_updated(pod: &RolloutPod, update_revision: Option<&str>) -> bool {
    update_revision.is_some() && pod.revision.as_deref() == update_revision
}

/// The rules, in order:
/// 1. the StatefulSet controller must have seen the latest spec and published an update revision;
/// 2. no existing pod outdated -> up to date;
/// 3. every desired pod exists and no pod is terminating;
/// 4. the primary must be known in this reconcile and be one of the pods (never delete blind);
/// 5. at most one pod is down: not Ready, or (when the primary's replication view is given) not
///    listed online by the primary (Ready is not synced). When that one pod is an outdated
///    replica, it is restarted first: it is down already, so restarting it takes no second pod
///    down, and waiting for it may never end (a Redis 7.0 replica cannot load a Valkey primary's
///    full sync; a replica crash-looping at the old revision may need the very change being
///    rolled out). Any other down pod holds the update until it serves again;
/// 6. an outdated replica -> restart it, highest ordinal first;
/// 7. only the primary outdated -> hand over if an updated replica is Ready, else wait.
///
/// After a handover the Sentinels name an updated pod, so the old primary is an outdated replica
/// and rule 6 restarts it (rule 5 when it cannot sync from the new primary).
pub fn decide(input: &RolloutInput<'_>) -> Decision {
    if !input.observed {
        return Decision::Wait(
            "the StatefulSet controller has not observed the latest StatefulSet spec yet".into(),
        );
    }
    let Some(revision) = input.update_revision else {
        return Decision::Wait("the StatefulSet has no update revision yet".into());
    };
    let mut outdated: Vec<&RolloutPod> = desired_pods(input)
        .filter(|pod| !is_updated(pod, Some(revision)))
        .collect();
    if outdated.is_empty() {
        return Decision::UpToDate;
    }
    for ordinal in 0..u32::try_from(input.desired_replicas.max(0)).unwrap_or(0) {
        if !input.pods.iter().any(|pod| pod.ordinal == ordinal) {
            return Decision::Wait(format!("pod with ordinal {ordinal} does not exist yet"));
        }
    }
    if let Some(pod) = input.pods.iter().find(|pod| pod.terminating) {
        return Decision::Wait(format!("{} is terminating", pod.name));
    }
    let Some(primary) = input.primary else {
        return Decision::Wait(
            "no primary is known (no Sentinel majority); no pod is restarted blind".into(),
        );
    };
    if !desired_pods(input).any(|pod| pod.name == primary) {
        return Decision::Wait(format!(
            "the Sentinels name {primary} as primary, which is not one of the store's pods"
        ));
    }
    match down_pods(input, primary).as_slice() {
        [] => {}
        [(pod, _)] if pod.name != primary && !is_updated(pod, Some(revision)) => {
            return Decision::Restart(pod.name.clone());
        }
        [(pod, why), ..] => return Decision::Wait(format!("{} {why}", pod.name)),
    }
    outdated.sort_by_key(|pod| std::cmp::Reverse(pod.ordinal));
    if let Some(replica) = outdated.iter().find(|pod| pod.name != primary) {
        return Decision::Restart(replica.name.clone());
    }
    let successor_ready = desired_pods(input)
        .any(|pod| pod.name != primary && pod.ready && is_updated(pod, Some(revision)));
    if successor_ready {
        Decision::HandOver {
            primary: primary.to_string(),
        }
    } else {
        Decision::Wait(format!(
            "only the primary {primary} is outdated, but no updated replica is ready to take over"
        ))
    }
}

/// The desired pods that do not serve, each with why: not Ready, or a replica the primary does not
/// list online (only when its replication view was asked).
fn down_pods<'a>(
    input: &'a RolloutInput<'a>,
    primary: &str,
) -> Vec<(&'a RolloutPod, &'static str)> {
    desired_pods(input)
        .filter_map(|pod| {
            if !pod.ready {
                return Some((pod, "is not ready"));
            }
            let online = input.replicas_online?;
            let syncing = pod.name != primary && !online.iter().any(|o| o == &pod.name);
            syncing.then_some((pod, "has not finished syncing from the primary"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "rev-new";
    const OLD: &str = "rev-old";

    fn pod(ordinal: u32, revision: &str) -> RolloutPod {
        RolloutPod {
            name: format!("checkout-{ordinal}"),
            ordinal,
            revision: Some(revision.into()),
            ready: true,
            terminating: false,
        }
    }

    fn decide_with(pods: &[RolloutPod], primary: Option<&str>) -> Decision {
        decide_online_with(pods, primary, None)
    }

    /// A store of three at the NEW revision whose primary's replication view is `online`.
    fn decide_online_with(
        pods: &[RolloutPod],
        primary: Option<&str>,
        online: Option<&[String]>,
    ) -> Decision {
        decide(&RolloutInput {
            desired_replicas: 3,
            update_revision: Some(NEW),
            observed: true,
            pods,
            primary,
            replicas_online: online,
        })
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn every_pod_at_the_update_revision_is_up_to_date_even_without_a_primary() {
        let pods = [pod(0, NEW), pod(1, NEW), pod(2, NEW)];
        assert_eq!(decide_with(&pods, Some("checkout-0")), Decision::UpToDate);
        assert_eq!(decide_with(&pods, None), Decision::UpToDate);
    }

    #[test]
    fn an_unobserved_statefulset_or_missing_revision_waits() {
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        let mut input = RolloutInput {
            desired_replicas: 3,
            update_revision: Some(NEW),
            observed: false,
            pods: &pods,
            primary: Some("checkout-0"),
            replicas_online: None,
        };
        assert!(matches!(decide(&input), Decision::Wait(m) if m.contains("not observed")));
        input.observed = true;
        input.update_revision = None;
        assert!(matches!(decide(&input), Decision::Wait(m) if m.contains("no update revision")));
    }

    #[test]
    fn an_unknown_primary_never_restarts_anything() {
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        assert!(matches!(decide_with(&pods, None), Decision::Wait(m) if m.contains("no primary")));
    }

    #[test]
    fn a_primary_that_is_not_a_pod_waits() {
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        assert!(matches!(
            decide_with(&pods, Some("elsewhere-0")),
            Decision::Wait(m) if m.contains("not one of")
        ));
    }

    #[test]
    fn outdated_replicas_go_first_highest_ordinal_first() {
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        assert_eq!(
            decide_with(&pods, Some("checkout-0")),
            Decision::Restart("checkout-2".into())
        );
        // The primary is never picked while a replica is outdated, whatever its ordinal.
        assert_eq!(
            decide_with(&pods, Some("checkout-2")),
            Decision::Restart("checkout-1".into())
        );
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, NEW)];
        assert_eq!(
            decide_with(&pods, Some("checkout-0")),
            Decision::Restart("checkout-1".into())
        );
    }

    #[test]
    fn at_most_one_pod_down_a_missing_unready_or_terminating_pod_blocks() {
        let missing = [pod(0, OLD), pod(2, NEW)];
        assert!(matches!(
            decide_with(&missing, Some("checkout-0")),
            Decision::Wait(m) if m.contains("ordinal 1")
        ));
        let mut unready = [pod(0, OLD), pod(1, OLD), pod(2, NEW)];
        unready[2].ready = false;
        assert!(matches!(
            decide_with(&unready, Some("checkout-0")),
            Decision::Wait(m) if m.contains("checkout-2 is not ready")
        ));
        let mut terminating = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        terminating[2].terminating = true;
        assert!(matches!(
            decide_with(&terminating, Some("checkout-0")),
            Decision::Wait(m) if m.contains("checkout-2 is terminating")
        ));
        // A terminating pod beyond the desired replicas (a scale-down) is down too.
        let mut extra = vec![pod(0, OLD), pod(1, OLD), pod(2, OLD), pod(3, OLD)];
        extra[3].terminating = true;
        assert!(matches!(
            decide_with(&extra, Some("checkout-0")),
            Decision::Wait(m) if m.contains("checkout-3 is terminating")
        ));
    }

    #[test]
    fn pods_beyond_the_desired_replicas_are_not_updated() {
        let pods = [pod(0, NEW), pod(1, NEW), pod(2, NEW), pod(3, OLD)];
        assert_eq!(decide_with(&pods, Some("checkout-0")), Decision::UpToDate);
    }

    #[test]
    fn only_the_primary_outdated_hands_over_when_an_updated_replica_is_ready() {
        let pods = [pod(0, OLD), pod(1, NEW), pod(2, NEW)];
        assert_eq!(
            decide_with(&pods, Some("checkout-0")),
            Decision::HandOver {
                primary: "checkout-0".into()
            }
        );
    }

    #[test]
    fn a_pod_without_a_revision_label_is_outdated() {
        let mut pods = vec![pod(0, OLD), pod(1, NEW)];
        pods[1].revision = None;
        let input = RolloutInput {
            desired_replicas: 2,
            update_revision: Some(NEW),
            observed: true,
            pods: &pods,
            primary: Some("checkout-0"),
            replicas_online: None,
        };
        assert_eq!(
            decide(&input),
            Decision::Restart("checkout-1".into()),
            "a pod without a revision is outdated"
        );
    }

    #[test]
    fn only_the_primary_and_no_updated_replica_waits() {
        // Rule 5 holds any unready updated pod, so this needs a store of one: nobody to take over.
        let alone = [pod(0, OLD)];
        let input = RolloutInput {
            desired_replicas: 1,
            update_revision: Some(NEW),
            observed: true,
            pods: &alone,
            primary: Some("checkout-0"),
            replicas_online: None,
        };
        assert!(matches!(decide(&input), Decision::Wait(m) if m.contains("no updated replica")));
    }

    #[test]
    fn after_the_handover_the_old_primary_is_an_outdated_replica_and_is_restarted() {
        let pods = [pod(0, OLD), pod(1, NEW), pod(2, NEW)];
        assert_eq!(
            decide_with(&pods, Some("checkout-2")),
            Decision::Restart("checkout-0".into())
        );
    }

    #[test]
    fn progress_counts_desired_pods_at_the_update_revision() {
        let pods = [pod(0, OLD), pod(1, NEW), pod(2, NEW), pod(3, NEW)];
        let input = RolloutInput {
            desired_replicas: 3,
            update_revision: Some(NEW),
            observed: true,
            pods: &pods,
            primary: None,
            replicas_online: None,
        };
        assert_eq!(
            progress(&input),
            Progress {
                updated: 2,
                desired: 3
            }
        );
    }

    #[test]
    fn a_replica_the_primary_does_not_list_online_blocks_the_next_restart() {
        // checkout-2 was restarted: Ready (it answers PING) but still syncing from the primary.
        let pods = [pod(0, OLD), pod(1, OLD), pod(2, NEW)];
        let decide_online =
            |online: Option<&[String]>| decide_online_with(&pods, Some("checkout-0"), online);
        // Not asked: the readiness rule alone restarts checkout-1.
        assert_eq!(decide_online(None), Decision::Restart("checkout-1".into()));
        let syncing = names(&["checkout-1"]);
        assert_eq!(
            decide_online(Some(&syncing)),
            Decision::Wait("checkout-2 has not finished syncing from the primary".into())
        );
        let nobody: Vec<String> = Vec::new();
        assert!(matches!(
            decide_online(Some(&nobody)),
            Decision::Wait(m) if m.contains("has not finished syncing")
        ));
        // The primary is not its own replica; every other pod online: restart.
        let synced = names(&["checkout-1", "checkout-2"]);
        assert_eq!(
            decide_online(Some(&synced)),
            Decision::Restart("checkout-1".into())
        );
        // Pods beyond the desired replicas (leaving in a scale-down) are not required.
        let mut extra = pods.to_vec();
        extra.push(pod(3, OLD));
        let input = RolloutInput {
            desired_replicas: 3,
            update_revision: Some(NEW),
            observed: true,
            pods: &extra,
            primary: Some("checkout-0"),
            replicas_online: Some(&synced),
        };
        assert_eq!(decide(&input), Decision::Restart("checkout-1".into()));
    }

    #[test]
    fn an_old_primary_that_cannot_sync_from_the_new_one_is_restarted() {
        // After the handover of an engine switch: checkout-2 (Valkey) is primary, the demoted
        // checkout-0 (Redis 7.0) answers PING but cannot load the Valkey full sync, so the
        // primary never lists it online. Restarting it (as Valkey) is the only way forward.
        let pods = [pod(0, OLD), pod(1, NEW), pod(2, NEW)];
        assert_eq!(
            decide_online_with(&pods, Some("checkout-2"), Some(&names(&["checkout-1"]))),
            Decision::Restart("checkout-0".into())
        );
        // Unless another replica is not serving either: then nothing is restarted.
        assert_eq!(
            decide_online_with(&pods, Some("checkout-2"), Some(&[])),
            Decision::Wait("checkout-0 has not finished syncing from the primary".into())
        );
    }

    #[test]
    fn the_one_outdated_replica_already_down_is_restarted_first() {
        // checkout-1 crash-loops at the old revision: replacing it takes no second pod down,
        // and it goes before the higher ordinal.
        let mut pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)];
        pods[1].ready = false;
        assert_eq!(
            decide_with(&pods, Some("checkout-0")),
            Decision::Restart("checkout-1".into())
        );
        // Never blind: without a known primary it waits.
        assert!(matches!(decide_with(&pods, None), Decision::Wait(m) if m.contains("no primary")));
        // The primary down is not restarted by the update.
        assert_eq!(
            decide_with(&pods, Some("checkout-1")),
            Decision::Wait("checkout-1 is not ready".into())
        );
        // Two pods down: wait for them.
        pods[2].ready = false;
        assert_eq!(
            decide_with(&pods, Some("checkout-0")),
            Decision::Wait("checkout-1 is not ready".into())
        );
        // An unready pod and another replica the primary does not list online: wait.
        pods[2].ready = true;
        assert_eq!(
            decide_online_with(&pods, Some("checkout-0"), Some(&names(&["checkout-1"]))),
            Decision::Wait("checkout-1 is not ready".into())
        );
    }

    #[test]
    fn an_up_to_date_store_needs_no_replication_view() {
        let pods = [pod(0, NEW), pod(1, NEW), pod(2, NEW)];
        assert_eq!(
            decide_online_with(&pods, Some("checkout-0"), Some(&[])),
            Decision::UpToDate
        );
    }
}
