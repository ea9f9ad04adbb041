//! Planned disruption of the primary: when Kubernetes stops the pod the Sentinels name as primary
//! (a pod deletion, an eviction during a node drain), the operator hands the primary role over
//! before Redis stops, with the same [`SentinelHandover`](crate::ha::handover::SentinelHandover)
//! the rolling update uses, so a drain costs the applications about a second instead of the
//! Sentinels' `downAfterMilliseconds` plus a failover.
//!
//! The pod asks the operator: its deletion timestamp wakes the reconcile (the pod watch), and the
//! Redis container's preStop hook (`startup.sh prestop`) holds SIGTERM back, bounded, while this
//! Redis is a primary with connected replicas, until it has been demoted. A replica, or a primary
//! the operator cannot hand over, stops at once or when the hook gives up, and the Sentinels fail
//! over as they do for a crash.
//!
//! This path does not need the rolling update's "every other pod serving, none terminating": only a
//! Sentinel majority naming the stopping pod (the HA step's discovery) and at least one other pod
//! that is Ready and not stopping. The handover itself checks the rest (a reachable primary, every
//! promotable replica caught up, a Sentinel that sees a candidate).

use std::time::Duration;

use crate::ha::observation::PodRole;

/// How long the preStop hook of a primary with connected replicas waits to be demoted (well inside
/// the pod's 60 s termination grace period; the handover takes about a second).
pub const PRESTOP_WAIT: Duration = Duration::from_secs(15);

/// What to do about the primary pod this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoppingPrimary {
    /// No primary named by a majority, or it is not stopping.
    Nothing,
    /// A handover from this pod started a moment ago: wait for the Sentinels.
    Started,
    /// The primary is stopping, but no other pod could take over: it stops as primary and the
    /// Sentinels fail over as for a crash. The message says why.
    Cannot(String),
    /// Hand the primary role over now; `avoid` are the stopping pods (the primary first), which
    /// must not be promoted.
    HandOver { primary: String, avoid: Vec<String> },
}

/// The decision, pure so it is unit-tested. `primary`: the pod a strict majority of the Sentinels
/// names (`None` without a majority: nothing is done, since no Sentinel could be trusted to run
/// the failover). `started_recently`: a handover from this pod (same uid) started within
/// [`STOPPING_HANDOVER_SETTLE`].
pub fn decide(primary: Option<&str>, pods: &[PodRole], started_recently: bool) -> StoppingPrimary {
    let Some(primary) = primary else {
        return StoppingPrimary::Nothing;
    };
    let Some(pod) = pods.iter().find(|p| p.name == primary) else {
        return StoppingPrimary::Nothing;
    };
    if !pod.terminating {
        return StoppingPrimary::Nothing;
    }
    if started_recently {
        return StoppingPrimary::Started;
    }
    if !pods
        .iter()
        .any(|p| p.name != primary && p.ready && !p.terminating)
    {
        return StoppingPrimary::Cannot(format!(
            "no other pod is Ready and running to take over from {primary}"
        ));
    }
    let mut avoid = vec![primary.to_string()];
    avoid.extend(
        pods.iter()
            .filter(|p| p.name != primary && p.terminating)
            .map(|p| p.name.clone()),
    );
    StoppingPrimary::HandOver {
        primary: primary.to_string(),
        avoid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::memo::DisruptionMemo;
    use crate::key::StoreKey;

    fn pod(name: &str, ready: bool, terminating: bool) -> PodRole {
        PodRole {
            name: name.into(),
            ready,
            terminating,
            uid: Some(format!("uid-{name}")),
            ..PodRole::default()
        }
    }

    #[test]
    fn a_stopping_primary_is_handed_over_away_from_every_stopping_pod() {
        let pods = [
            pod("s-0", true, true),
            pod("s-1", true, false),
            pod("s-2", false, true),
        ];
        assert_eq!(
            decide(Some("s-0"), &pods, false),
            StoppingPrimary::HandOver {
                primary: "s-0".into(),
                avoid: vec!["s-0".into(), "s-2".into()],
            }
        );
        // A Ready primary that is not stopping needs nothing, even with other pods stopping.
        let pods = [
            pod("s-0", true, false),
            pod("s-1", true, true),
            pod("s-2", true, false),
        ];
        assert_eq!(decide(Some("s-0"), &pods, false), StoppingPrimary::Nothing);
    }

    #[test]
    fn a_stopping_replica_needs_no_handover() {
        let pods = [
            pod("s-0", true, false),
            pod("s-1", true, true),
            pod("s-2", true, false),
        ];
        assert_eq!(decide(Some("s-0"), &pods, false), StoppingPrimary::Nothing);
    }

    #[test]
    fn without_a_sentinel_majority_nothing_is_done() {
        let pods = [
            pod("s-0", true, true),
            pod("s-1", true, false),
            pod("s-2", true, false),
        ];
        assert_eq!(decide(None, &pods, false), StoppingPrimary::Nothing);
        // A primary that is no pod of the store (yet): nothing either.
        assert_eq!(decide(Some("s-9"), &pods, false), StoppingPrimary::Nothing);
    }

    #[test]
    fn without_another_serving_pod_the_primary_stops_as_today() {
        let pods = [
            pod("s-0", true, true),
            pod("s-1", false, false),
            pod("s-2", true, true),
        ];
        assert!(matches!(
            decide(Some("s-0"), &pods, false),
            StoppingPrimary::Cannot(why) if why.contains("s-0")
        ));
    }

    #[test]
    fn one_handover_per_stopping_pod() {
        let pods = [
            pod("s-0", true, true),
            pod("s-1", true, false),
            pod("s-2", true, false),
        ];
        assert_eq!(decide(Some("s-0"), &pods, true), StoppingPrimary::Started);
        let memo = DisruptionMemo::default();
        assert!(!memo.started_recently(&StoreKey::new("ns", "s"), "s-0", Some("a")));
        memo.note_started(&StoreKey::new("ns", "s"), "s-0", Some("a"), Some("s-1"));
        assert!(memo.started_recently(&StoreKey::new("ns", "s"), "s-0", Some("a")));
        assert_eq!(
            memo.demoted_to(&StoreKey::new("ns", "s"), "s-0", Some("a")),
            Some("s-1".into())
        );
        assert_eq!(
            memo.demoted_to(&StoreKey::new("ns", "s"), "s-0", Some("b")),
            None
        );
        assert_eq!(
            memo.demoted_to(&StoreKey::new("ns", "s"), "s-1", Some("a")),
            None
        );
        assert!(memo.handed_over_from(&StoreKey::new("ns", "s"), "s-0"));
        assert!(!memo.handed_over_from(&StoreKey::new("ns", "s"), "s-1"));
        // The same name recreated (another uid) is another pod.
        assert!(!memo.started_recently(&StoreKey::new("ns", "s"), "s-0", Some("b")));
        assert!(!memo.started_recently(&StoreKey::new("ns", "other"), "s-0", Some("a")));
        assert!(memo.first_refusal(&StoreKey::new("ns", "s"), Some("a")));
        assert!(!memo.first_refusal(&StoreKey::new("ns", "s"), Some("a")));
        assert!(memo.first_refusal(&StoreKey::new("ns", "s"), Some("b")));
    }
}

#[cfg(test)]
mod script_tests {
    use super::*;

    #[test]
    fn the_prestop_hook_waits_as_long_as_the_operator_assumes() {
        let default = format!("SS_PRESTOP_WAIT_MS:-{}", PRESTOP_WAIT.as_millis());
        assert!(
            crate::build::startup::STARTUP_SCRIPT.contains(&default),
            "startup.sh must default to {default}"
        );
    }
}
