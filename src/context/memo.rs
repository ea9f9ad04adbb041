//! What the operator remembers between reconciles of a store, held by the `Context`: the
//! credentials it last applied (so a steady store reads no Secret), what its own applies left on
//! each child (so a change by someone else is seen), and what it knows of each optional API
//! (cert-manager, prometheus-operator). Plain data, below every step.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::build::StoreCredentials;
use crate::cache::ChildKind;
use crate::key::StoreKey;
use crate::password::Password;
use crate::rotation::RotationState;
use crate::validate::ValidatedStore;

/// How long remembered credentials are trusted before the Secrets are read again.
pub const CREDENTIALS_RECHECK: Duration = Duration::from_secs(240);

/// What the read step takes from the memo instead of reading the Secrets.
#[derive(Clone)]
pub struct RememberedCredentials {
    pub credentials: StoreCredentials,
    pub rotation: RotationState,
    pub supplied_password: Option<Password>,
    /// The applied-hash annotations the Secrets carried after our apply.
    pub connection_hash: String,
    pub internal_hash: String,
}

/// Credentials remembered per store, checked against the uid and generation.
#[derive(Clone)]
struct Entry {
    uid: String,
    generation: Option<i64>,
    remembered: RememberedCredentials,
    at: Instant,
}

/// In-memory credentials of recently reconciled stores.
#[derive(Default)]
pub struct CredentialMemo {
    entries: Mutex<HashMap<StoreKey, Entry>>,
}

impl CredentialMemo {
    /// What was remembered for this store, when it is the same object at the same generation
    /// and not older than [`CREDENTIALS_RECHECK`].
    pub fn fresh(&self, store: &ValidatedStore) -> Option<RememberedCredentials> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(&StoreKey::of_validated(store)).and_then(|e| {
            (e.uid == store.owner_reference.uid
                && e.generation == store.generation
                && e.at.elapsed() < CREDENTIALS_RECHECK)
                .then(|| e.remembered.clone())
        })
    }

    /// Records what was just applied. A rotation in progress is not remembered: each of its
    /// steps must start from what the Secrets say now.
    pub fn remember(&self, store: &ValidatedStore, remembered: RememberedCredentials) {
        let key = StoreKey::of_validated(store);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(remembered.rotation, RotationState::InProgress(_)) {
            entries.remove(&key);
            return;
        }
        // Stores deleted while we were not looking (no finalizer) drop out here: every live store
        // is reconciled at least every resync interval, well within this bound.
        entries.retain(|_, e| e.at.elapsed() < CREDENTIALS_RECHECK * 3);
        entries.insert(
            key,
            Entry {
                uid: store.owner_reference.uid.clone(),
                generation: store.generation,
                remembered,
                at: Instant::now(),
            },
        );
    }

    /// Forgets a store (after a conflict, or when it is gone).
    pub fn forget(&self, store: &ValidatedStore) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&StoreKey::of_validated(store));
    }
}

/// One child, as the drift memo knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChildKey {
    kind: ChildKind,
    namespace: String,
    name: String,
}

impl ChildKey {
    pub fn new(kind: ChildKind, namespace: &str, name: &str) -> Self {
        ChildKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Drift keys of the children as our own applies left them.
/// Empty after a restart: then the hash annotation alone decides (a restart writes nothing).
#[derive(Default)]
pub struct DriftMemo {
    applied: Mutex<HashMap<ChildKey, Option<String>>>,
}

impl DriftMemo {
    /// Whether the live object is as our last apply left it (unknown counts as yes).
    pub fn untouched(&self, key: &ChildKey, live: &Option<String>) -> bool {
        match self
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            Some(ours) => ours == live,
            None => true,
        }
    }

    pub fn record(&self, key: ChildKey, drift: Option<String>) {
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, drift);
    }

    pub fn forget(&self, key: &ChildKey) {
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// A "not installed" answer is trusted this long.
pub const DISCOVERY_RECHECK: Duration = Duration::from_secs(300);

/// Per-operator memory of one optional API: whether it is installed, and each object's state.
#[derive(Default)]
pub struct OptionalApiMemo {
    api: Mutex<Option<(bool, Instant)>>,
    /// `namespace/name/uid` -> `Some(hash)` of our last apply, or `None`: known not to exist.
    objects: Mutex<HashMap<String, Option<String>>>,
}

impl OptionalApiMemo {
    /// Whether the API is installed, while the last answer is trusted.
    pub fn known_api(&self) -> Option<bool> {
        match *self.api.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((true, _)) => Some(true),
            Some((false, at)) if at.elapsed() < DISCOVERY_RECHECK => Some(false),
            _ => None,
        }
    }

    /// What this process knows of an object: `None` nothing, `Some(None)` absent, else its hash.
    pub fn get(&self, key: &str) -> Option<Option<String>> {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Remembers a discovery answer.
    pub fn note_api(&self, installed: bool) {
        *self.api.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((installed, Instant::now()));
    }

    pub fn set(&self, key: String, state: Option<String>) {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_negative_discovery_is_rechecked_and_a_positive_one_kept() {
        let memo = OptionalApiMemo::default();
        assert_eq!(memo.known_api(), None);
        *memo.api.lock().unwrap_or_else(PoisonError::into_inner) = Some((false, Instant::now()));
        assert_eq!(memo.known_api(), Some(false));
        let stale = Instant::now().checked_sub(DISCOVERY_RECHECK + Duration::from_secs(1));
        if let Some(stale) = stale {
            *memo.api.lock().unwrap_or_else(PoisonError::into_inner) = Some((false, stale));
            assert_eq!(memo.known_api(), None);
            *memo.api.lock().unwrap_or_else(PoisonError::into_inner) = Some((true, stale));
            assert_eq!(memo.known_api(), Some(true));
        }
    }
}
