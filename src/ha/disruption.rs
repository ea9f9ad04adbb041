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
//! This path does not need the rolling update's "every pod Ready, none terminating": only a
//! Sentinel majority naming the stopping pod (the HA step's discovery) and at least one other pod
//! that is Ready and not stopping. The handover itself checks the rest (a reachable primary, every
//! promotable replica caught up, a Sentinel that sees a candidate).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ha::observation::PodRole;

/// After a handover from a stopping pod started, no second one is asked for that pod for this
/// long (the Sentinels need a moment to agree on the new primary; the pod's preStop hook gives up
/// after [`PRESTOP_WAIT`] anyway).
pub const STOPPING_HANDOVER_SETTLE: Duration = Duration::from_secs(30);
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

/// Per-store memory of handovers from stopping pods, held in `HaHooks`: which pod (by uid) was
/// handed over when, and whether its refusal was already announced.
#[derive(Default)]
pub struct DisruptionMemo {
    stores: Mutex<HashMap<String, StoreMemory>>,
}

#[derive(Default)]
struct StoreMemory {
    /// The last handover started from a stopping pod.
    started: Option<StartedHandover>,
    /// The uid of the last stopping primary whose refusal was published as an Event.
    announced: Option<Option<String>>,
}

struct StartedHandover {
    pod: String,
    uid: Option<String>,
    at: Instant,
    /// The pod the Sentinels named when the old primary was demoted (the labels moved to it).
    promoted: Option<String>,
}

impl StartedHandover {
    fn is(&self, pod: &str, uid: Option<&str>) -> bool {
        self.pod == pod
            && self.uid.as_deref() == uid
            && self.at.elapsed() < STOPPING_HANDOVER_SETTLE
    }
}

impl DisruptionMemo {
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut StoreMemory) -> T) -> T {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        f(stores.entry(key.to_string()).or_default())
    }

    /// Whether a handover from this pod (same name and uid) started within the settle time.
    pub fn started_recently(&self, key: &str, pod: &str, uid: Option<&str>) -> bool {
        self.with(key, |memory| {
            memory.started.as_ref().is_some_and(|s| s.is(pod, uid))
        })
    }

    /// The pod the primary role went to when this pod (same name and uid) was demoted by a
    /// handover within the settle time. Sentinels that have not heard of the promotion yet still
    /// name the old pod; the role labels must not follow them back to it.
    pub fn demoted_to(&self, key: &str, pod: &str, uid: Option<&str>) -> Option<String> {
        self.with(key, |memory| {
            memory
                .started
                .as_ref()
                .filter(|s| s.is(pod, uid))
                .and_then(|s| s.promoted.clone())
        })
    }

    /// Whether the last handover from a stopping pod was from `pod`, within the settle time (the
    /// `PrimaryChanged` Event then says the change was planned).
    pub fn handed_over_from(&self, key: &str, pod: &str) -> bool {
        self.with(key, |memory| {
            memory
                .started
                .as_ref()
                .is_some_and(|s| s.pod == pod && s.at.elapsed() < STOPPING_HANDOVER_SETTLE)
        })
    }

    /// A handover from `pod` started; `promoted` is the pod that took the role over when the old
    /// primary was demoted.
    pub fn note_started(&self, key: &str, pod: &str, uid: Option<&str>, promoted: Option<&str>) {
        self.with(key, |memory| {
            memory.started = Some(StartedHandover {
                pod: pod.to_string(),
                uid: uid.map(str::to_string),
                at: Instant::now(),
                promoted: promoted.map(str::to_string),
            });
        });
    }

    /// True the first time it is called for this pod uid: a refusal is announced once per pod.
    pub fn first_refusal(&self, key: &str, uid: Option<&str>) -> bool {
        self.with(key, |memory| {
            let uid = uid.map(str::to_string);
            if memory.announced.as_ref() == Some(&uid) {
                false
            } else {
                memory.announced = Some(uid);
                true
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!memo.started_recently("ns/s", "s-0", Some("a")));
        memo.note_started("ns/s", "s-0", Some("a"), Some("s-1"));
        assert!(memo.started_recently("ns/s", "s-0", Some("a")));
        assert_eq!(
            memo.demoted_to("ns/s", "s-0", Some("a")),
            Some("s-1".into())
        );
        assert_eq!(memo.demoted_to("ns/s", "s-0", Some("b")), None);
        assert_eq!(memo.demoted_to("ns/s", "s-1", Some("a")), None);
        assert!(memo.handed_over_from("ns/s", "s-0"));
        assert!(!memo.handed_over_from("ns/s", "s-1"));
        // The same name recreated (another uid) is another pod.
        assert!(!memo.started_recently("ns/s", "s-0", Some("b")));
        assert!(!memo.started_recently("ns/other", "s-0", Some("a")));
        assert!(memo.first_refusal("ns/s", Some("a")));
        assert!(!memo.first_refusal("ns/s", Some("a")));
        assert!(memo.first_refusal("ns/s", Some("b")));
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
