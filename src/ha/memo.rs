//! What the HA steps remember per store between reconciles, held by the `Context` (through
//! `HaHooks`): the scale-down guard's last note, the rolling update's handovers and refusals, and
//! the handovers from stopping primary pods. Plain data, below the steps.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::key::StoreKey;

/// After a handover started, how long the same primary may still be named before another
/// handover is asked for (the Sentinels need a few seconds to promote and announce).
pub const HANDOVER_SETTLE: Duration = Duration::from_secs(30);
/// After a handover from a stopping pod started, no second one is asked for that pod for this
/// long (the Sentinels need a moment to agree on the new primary; the pod's preStop hook gives up
/// after `ha::disruption::PRESTOP_WAIT` anyway).
pub const STOPPING_HANDOVER_SETTLE: Duration = Duration::from_secs(30);

/// The last Event note per store, so an unchanged held scale-down is not announced on every
/// reconcile.
#[derive(Default)]
pub struct ScaleGuardMemo {
    last_note: Mutex<HashMap<StoreKey, String>>,
}

impl ScaleGuardMemo {
    /// Whether `note` differs from the last one for `key` (and remembers it).
    pub fn is_new(&self, key: &StoreKey, note: &str) -> bool {
        let mut last = self
            .last_note
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.get(key).map(String::as_str) == Some(note) {
            return false;
        }
        last.insert(key.clone(), note.to_string());
        true
    }

    pub fn forget(&self, key: &StoreKey) {
        self.last_note
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// Per-store memory of handovers, held in `HaHooks`.
#[derive(Default)]
pub struct RolloutMemo {
    stores: Mutex<HashMap<StoreKey, HandoverMemory>>,
}

#[derive(Default)]
pub struct HandoverMemory {
    /// The primary a handover was started from, and when.
    pub started: Option<(String, Instant)>,
    /// Consecutive `NotNow` answers.
    pub refusals: u32,
}

impl RolloutMemo {
    pub fn with<T>(&self, key: &StoreKey, f: impl FnOnce(&mut HandoverMemory) -> T) -> T {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        f(stores.entry(key.clone()).or_default())
    }

    /// Whether the rolling update handed the primary role over from `primary` within
    /// [`HANDOVER_SETTLE`] (the `PrimaryChanged` Event then says the change was planned).
    pub fn handed_over_from(&self, key: &StoreKey, primary: &str) -> bool {
        self.with(key, |memory| {
            memory
                .started
                .as_ref()
                .is_some_and(|(from, at)| from == primary && at.elapsed() < HANDOVER_SETTLE)
        })
    }

    pub fn forget(&self, key: &StoreKey) {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// Per-store memory of handovers from stopping pods, held in `HaHooks`: which pod (by uid) was
/// handed over when, and whether its refusal was already announced.
#[derive(Default)]
pub struct DisruptionMemo {
    stores: Mutex<HashMap<StoreKey, StoreMemory>>,
}

#[derive(Default)]
pub struct StoreMemory {
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
    pub fn with<T>(&self, key: &StoreKey, f: impl FnOnce(&mut StoreMemory) -> T) -> T {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        f(stores.entry(key.clone()).or_default())
    }

    /// Whether a handover from this pod (same name and uid) started within the settle time.
    pub fn started_recently(&self, key: &StoreKey, pod: &str, uid: Option<&str>) -> bool {
        self.with(key, |memory| {
            memory.started.as_ref().is_some_and(|s| s.is(pod, uid))
        })
    }

    /// The pod the primary role went to when this pod (same name and uid) was demoted by a
    /// handover within the settle time. Sentinels that have not heard of the promotion yet still
    /// name the old pod; the role labels must not follow them back to it.
    pub fn demoted_to(&self, key: &StoreKey, pod: &str, uid: Option<&str>) -> Option<String> {
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
    pub fn handed_over_from(&self, key: &StoreKey, pod: &str) -> bool {
        self.with(key, |memory| {
            memory
                .started
                .as_ref()
                .is_some_and(|s| s.pod == pod && s.at.elapsed() < STOPPING_HANDOVER_SETTLE)
        })
    }

    /// A handover from `pod` started; `promoted` is the pod that took the role over when the old
    /// primary was demoted.
    pub fn note_started(
        &self,
        key: &StoreKey,
        pod: &str,
        uid: Option<&str>,
        promoted: Option<&str>,
    ) {
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
    pub fn first_refusal(&self, key: &StoreKey, uid: Option<&str>) -> bool {
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
