//! What the operator knows about its children without asking the API server: the applied-hash
//! annotation, the drift key (generation or resourceVersion) and the StatefulSet status, read from
//! label-selected, metadata-only watch caches. This is what makes an unchanged store's resync free.
//!
//! The reconcile sees the caches through [`ChildCache`], so tests and the benchmark inject a
//! [`MemoryCache`] while `run` uses reflector stores ([`WatchCache`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

/// Annotation on every applied child: the hash of the desired object last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "sessionstore.dev/applied-hash";

/// The kinds of children the operator watches (Secrets are never watched).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildKind {
    ConfigMap,
    Service,
    StatefulSet,
    NetworkPolicy,
    PodDisruptionBudget,
}

impl ChildKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::ConfigMap => "ConfigMap",
            ChildKind::Service => "Service",
            ChildKind::StatefulSet => "StatefulSet",
            ChildKind::NetworkPolicy => "NetworkPolicy",
            ChildKind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }
}

/// What the cache says about one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// No synced cache for this kind: the reconcile must ask the API server.
    Unknown,
    /// The cache is synced and holds no such object.
    Absent,
    /// The object exists.
    Present(LiveChild),
}

/// The parts of a live child the apply step compares.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LiveChild {
    /// Value of [`APPLIED_HASH_ANNOTATION`], if any.
    pub applied_hash: Option<String>,
    /// Changes when someone else edits the object: `metadata.generation` where the kind has one
    /// (so status updates do not count), else `metadata.resourceVersion`.
    pub drift_key: Option<String>,
}

impl LiveChild {
    /// Reads the compared parts from any object's metadata.
    pub fn from_meta(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        LiveChild {
            applied_hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPLIED_HASH_ANNOTATION).cloned()),
            drift_key: drift_key(meta),
        }
    }
}

/// `generation` when set (spec edits only), else `resourceVersion`.
pub fn drift_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    match meta.generation {
        Some(generation) if generation > 0 => Some(format!("g{generation}")),
        _ => meta.resource_version.as_ref().map(|rv| format!("rv{rv}")),
    }
}

/// Read access to the operator's knowledge of its children.
pub trait ChildCache: Send + Sync {
    fn lookup(&self, kind: ChildKind, namespace: &str, name: &str) -> Cached;
    /// The StatefulSet's status, or `None` when the cache does not know it.
    fn statefulset_status(&self, namespace: &str, name: &str) -> Option<StatefulSetStatus>;
}

/// No cache at all: every lookup asks the API server.
pub struct NoCache;

impl ChildCache for NoCache {
    fn lookup(&self, _: ChildKind, _: &str, _: &str) -> Cached {
        Cached::Unknown
    }
    fn statefulset_status(&self, _: &str, _: &str) -> Option<StatefulSetStatus> {
        None
    }
}

type Key = (ChildKind, String, String);

/// A synced cache held in memory: for tests and the benchmark, which feed it what the watches of a
/// real cluster would deliver.
#[derive(Default)]
pub struct MemoryCache {
    objects: Mutex<HashMap<Key, LiveChild>>,
    statefulset_status: Mutex<HashMap<(String, String), StatefulSetStatus>>,
}

impl MemoryCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records a child as the watch would after the API server stored it.
    pub fn insert(&self, kind: ChildKind, namespace: &str, name: &str, live: LiveChild) {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((kind, namespace.into(), name.into()), live);
    }

    /// Records a child from the object the API server returned.
    pub fn insert_object<K: Resource>(&self, kind: ChildKind, object: &K) {
        let meta = object.meta();
        self.insert(
            kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            LiveChild::from_meta(meta),
        );
    }

    /// Forgets a child, as a watch does on deletion.
    pub fn remove(&self, kind: ChildKind, namespace: &str, name: &str) {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(kind, namespace.into(), name.into()));
    }

    pub fn set_statefulset_status(&self, namespace: &str, name: &str, status: StatefulSetStatus) {
        self.statefulset_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.into(), name.into()), status);
    }

    pub fn len(&self) -> usize {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ChildCache for MemoryCache {
    fn lookup(&self, kind: ChildKind, namespace: &str, name: &str) -> Cached {
        match self
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(kind, namespace.to_string(), name.to_string()))
        {
            Some(live) => Cached::Present(live.clone()),
            None => Cached::Absent,
        }
    }

    fn statefulset_status(&self, namespace: &str, name: &str) -> Option<StatefulSetStatus> {
        self.statefulset_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// Reflector stores fed by the controller's label-selected watches (see `controller::run`).
/// Lookups are only trusted once every store has synced; `run` waits for that before reconciling.
#[derive(Clone)]
pub struct WatchCache {
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub services: Store<PartialObjectMeta<Service>>,
    /// Full objects with the spec stripped: the status feeds `readyReplicas`.
    pub statefulsets: Store<StatefulSet>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub pod_disruption_budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
}

fn lookup_in<K>(store: &Store<K>, namespace: &str, name: &str) -> Cached
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    match store.get(&ObjectRef::new(name).within(namespace)) {
        Some(object) => Cached::Present(LiveChild::from_meta(object.meta())),
        None => Cached::Absent,
    }
}

impl ChildCache for WatchCache {
    fn lookup(&self, kind: ChildKind, namespace: &str, name: &str) -> Cached {
        match kind {
            ChildKind::ConfigMap => lookup_in(&self.config_maps, namespace, name),
            ChildKind::Service => lookup_in(&self.services, namespace, name),
            ChildKind::StatefulSet => lookup_in(&self.statefulsets, namespace, name),
            ChildKind::NetworkPolicy => lookup_in(&self.network_policies, namespace, name),
            ChildKind::PodDisruptionBudget => {
                lookup_in(&self.pod_disruption_budgets, namespace, name)
            }
        }
    }

    fn statefulset_status(&self, namespace: &str, name: &str) -> Option<StatefulSetStatus> {
        self.statefulsets
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|sts| sts.status.clone())
    }
}

/// Names a child in logs and error contexts.
pub fn describe<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{} {}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn drift_key_prefers_generation_over_resource_version() {
        let meta = ObjectMeta {
            generation: Some(3),
            resource_version: Some("77".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(drift_key(&meta).as_deref(), Some("g3"));
        let meta = ObjectMeta {
            resource_version: Some("77".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(drift_key(&meta).as_deref(), Some("rv77"));
    }

    #[test]
    fn memory_cache_reports_absent_then_present_then_absent() {
        let cache = MemoryCache::default();
        assert_eq!(cache.lookup(ChildKind::Service, "ns", "a"), Cached::Absent);
        cache.insert(
            ChildKind::Service,
            "ns",
            "a",
            LiveChild {
                applied_hash: Some("h".into()),
                drift_key: None,
            },
        );
        assert!(matches!(
            cache.lookup(ChildKind::Service, "ns", "a"),
            Cached::Present(LiveChild { applied_hash: Some(h), .. }) if h == "h"
        ));
        assert_eq!(
            cache.lookup(ChildKind::ConfigMap, "ns", "a"),
            Cached::Absent
        );
        cache.remove(ChildKind::Service, "ns", "a");
        assert_eq!(cache.lookup(ChildKind::Service, "ns", "a"), Cached::Absent);
    }
}
