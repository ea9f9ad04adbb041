//! What the operator knows about its children without asking the API server: the applied-hash
//! annotation, the drift key (generation or resourceVersion) and the StatefulSet status, read from
//! label-selected, metadata-only watch caches. This is what makes an unchanged store's resync free.
//!
//! The reconcile sees the caches through [`ChildCache`], so tests and the benchmark inject a
//! [`MemoryCache`] while `run` uses reflector stores ([`WatchCache`]).
//!
//! Pods are cached too, for the health step (their IPs and Ready condition) and the HA step and
//! rolling update (role label, `controller-revision-hash`, uid, deletionTimestamp): a narrow,
//! label-selected watch whose objects are stripped to exactly those fields.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::build::meta::ROLE_LABEL;
use crate::observe::PodTarget;
use crate::pods::{is_pod_of, is_ready, pod_names};
use crate::vocabulary::ConditionStatus;

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
    /// The pods `<store>-0 .. <store>-<replicas-1>` that exist, for the health probe; `None` when
    /// no synced pod cache exists (the health step then waits rather than listing pods).
    fn store_pods(&self, _namespace: &str, _store: &str, _replicas: i32) -> Option<Vec<PodTarget>> {
        None
    }
    /// Every cached pod of the store (any ordinal), stripped by [`strip_pod`]; `None` when no
    /// synced pod cache exists (the HA step then lists them from the API server).
    fn pods_of_store(&self, _namespace: &str, _store: &str) -> Option<Vec<Pod>> {
        None
    }
    /// What the rolling update reads of the StatefulSet; `None` when the cache does not know it.
    fn statefulset_revision(&self, _namespace: &str, _name: &str) -> Option<StatefulSetRevision> {
        None
    }
}

/// Label the StatefulSet controller puts on each pod: the revision of the template it was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The StatefulSet's revision state, for the rolling update (`ha::rollout`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatefulSetRevision {
    /// `status.updateRevision`: the revision every pod should run.
    pub update_revision: Option<String>,
    /// `status.observedGeneration >= metadata.generation`: the StatefulSet controller has seen the
    /// latest spec, so `update_revision` is current.
    pub observed: bool,
}

impl StatefulSetRevision {
    pub fn of(sts: &StatefulSet) -> Self {
        let status = sts.status.as_ref();
        let observed = match (
            status.and_then(|s| s.observed_generation),
            sts.metadata.generation,
        ) {
            (Some(observed), Some(generation)) => observed >= generation,
            _ => false,
        };
        StatefulSetRevision {
            update_revision: status.and_then(|s| s.update_revision.clone()),
            observed,
        }
    }
}

/// Label the pods carry (from the StatefulSet's pod template) naming their store.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// What the health probe needs from a pod: its name, `status.podIP` and Ready condition.
pub fn pod_target(pod: &Pod) -> PodTarget {
    let status = pod.status.as_ref();
    PodTarget {
        name: pod.name_any(),
        ip: status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        ready: is_ready(pod),
    }
}

/// Strips a watched pod to what [`pod_target`], the store lookup, the HA step, the rolling
/// update and the diagnosis (`diagnosis`) read: name, namespace, uid, deletionTimestamp, the
/// instance, role and revision labels, `podIP`, the Ready and PodScheduled conditions and each
/// container's name, image, readiness, restart count and states (the termination message is
/// Redis's last lines), so a cluster's worth of Redis pods costs little memory.
pub fn strip_pod(pod: &mut Pod) {
    pod.spec = None;
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == INSTANCE_LABEL || k == ROLE_LABEL || k == REVISION_LABEL);
    }
    if let Some(status) = pod.status.as_mut() {
        let conditions = status.conditions.take().map(|c| {
            c.into_iter()
                .filter(|c| {
                    c.type_ == "Ready"
                        || (c.type_ == "PodScheduled" && c.status == ConditionStatus::False)
                })
                .map(|mut c| {
                    c.last_probe_time = None;
                    c
                })
                .collect()
        });
        let strip = |statuses: Option<Vec<ContainerStatus>>| {
            statuses.map(|list| {
                list.into_iter()
                    .map(|c| ContainerStatus {
                        name: c.name,
                        image: c.image,
                        ready: c.ready,
                        restart_count: c.restart_count,
                        state: c.state,
                        last_state: c.last_state,
                        ..ContainerStatus::default()
                    })
                    .collect()
            })
        };
        *status = k8s_openapi::api::core::v1::PodStatus {
            pod_ip: status.pod_ip.take(),
            conditions,
            container_statuses: strip(status.container_statuses.take()),
            init_container_statuses: strip(status.init_container_statuses.take()),
            ..Default::default()
        };
    }
}

/// The store a Redis pod belongs to (its instance label, in its namespace): a pod change wakes
/// that store's reconcile.
pub fn store_of_pod(
    pod: Pod,
) -> Option<kube::runtime::reflector::ObjectRef<crate::crd::SessionStore>> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let store = pod.metadata.labels.as_ref()?.get(INSTANCE_LABEL)?;
    Some(kube::runtime::reflector::ObjectRef::new(store).within(namespace))
}

type Key = (ChildKind, String, String);

/// A synced cache held in memory: for tests and the benchmark, which feed it what the watches of a
/// real cluster would deliver.
#[derive(Default)]
pub struct MemoryCache {
    objects: Mutex<HashMap<Key, LiveChild>>,
    statefulset_status: Mutex<HashMap<(String, String), StatefulSetStatus>>,
    statefulset_revision: Mutex<HashMap<(String, String), StatefulSetRevision>>,
    /// Pods by (namespace, pod name), stripped as the pod watch holds them.
    pods: Mutex<HashMap<(String, String), Pod>>,
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

    pub fn set_statefulset_revision(
        &self,
        namespace: &str,
        name: &str,
        revision: StatefulSetRevision,
    ) {
        self.statefulset_revision
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.into(), name.into()), revision);
    }

    /// Records a pod as the pod watch would (name, IP, Ready).
    pub fn insert_pod(&self, namespace: &str, pod: PodTarget) {
        let ready = k8s_openapi::api::core::v1::PodCondition {
            type_: "Ready".into(),
            status: ConditionStatus::from(pod.ready).into(),
            ..Default::default()
        };
        self.insert_pod_object(
            namespace,
            Pod {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(pod.name.clone()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                },
                status: Some(k8s_openapi::api::core::v1::PodStatus {
                    pod_ip: pod.ip.map(|ip| ip.to_string()),
                    conditions: Some(vec![ready]),
                    ..Default::default()
                }),
                ..Pod::default()
            },
        );
    }

    /// Records a whole pod, stripped by [`strip_pod`] as the watch would.
    pub fn insert_pod_object(&self, namespace: &str, mut pod: Pod) {
        strip_pod(&mut pod);
        let name = pod.name_any();
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.into(), name), pod);
    }

    /// Forgets a pod, as the watch does on deletion.
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(namespace.into(), name.into()));
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

    fn store_pods(&self, namespace: &str, store: &str, replicas: i32) -> Option<Vec<PodTarget>> {
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        Some(
            pod_names(store, replicas)
                .filter_map(|name| pods.get(&(namespace.to_string(), name)).map(pod_target))
                .collect(),
        )
    }

    fn pods_of_store(&self, namespace: &str, store: &str) -> Option<Vec<Pod>> {
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<Pod> = pods
            .iter()
            .filter(|((ns, name), _)| ns == namespace && is_pod_of(name, store))
            .map(|(_, pod)| pod.clone())
            .collect();
        found.sort_by_key(|pod| pod.name_any());
        Some(found)
    }

    fn statefulset_revision(&self, namespace: &str, name: &str) -> Option<StatefulSetRevision> {
        self.statefulset_revision
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// Reflector stores fed by the controller's label-selected watches (see `run`).
/// Lookups are only trusted once every store has synced; `run` waits for that before reconciling.
#[derive(Clone)]
pub struct WatchCache {
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub services: Store<PartialObjectMeta<Service>>,
    /// Full objects with the spec stripped: the status feeds `readyReplicas`.
    pub statefulsets: Store<StatefulSet>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub pod_disruption_budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    /// The operator's Redis pods, stripped by [`strip_pod`].
    pub pods: Store<Pod>,
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

    fn store_pods(&self, namespace: &str, store: &str, replicas: i32) -> Option<Vec<PodTarget>> {
        Some(
            pod_names(store, replicas)
                .filter_map(|name| self.pods.get(&ObjectRef::new(&name).within(namespace)))
                // A pod of that name from another store cannot exist (names are `<store>-<n>`
                // and the watch selects our pods), but the label makes it explicit.
                .filter(|pod| pod.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(store))
                .map(|pod| pod_target(&pod))
                .collect(),
        )
    }

    fn pods_of_store(&self, namespace: &str, store: &str) -> Option<Vec<Pod>> {
        // One pass over the cached Redis pods (a few hundred bytes each, see `strip_pod`).
        let mut found: Vec<Pod> = self
            .pods
            .state()
            .into_iter()
            .filter(|pod| pod.metadata.namespace.as_deref() == Some(namespace))
            .filter(|pod| pod.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(store))
            .filter(|pod| is_pod_of(&pod.name_any(), store))
            .map(|pod| (*pod).clone())
            .collect();
        found.sort_by_key(|pod| pod.name_any());
        Some(found)
    }

    fn statefulset_revision(&self, namespace: &str, name: &str) -> Option<StatefulSetRevision> {
        self.statefulsets
            .get(&ObjectRef::new(name).within(namespace))
            .map(|sts| StatefulSetRevision::of(&sts))
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

    #[test]
    fn a_pod_wakes_the_store_named_by_its_instance_label() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "checkout-1", "namespace": "shop",
                         "labels": {INSTANCE_LABEL: "checkout", "app.kubernetes.io/name": "sessionstore"}}
        }))
        .expect("pod");
        let store = store_of_pod(pod).expect("a store");
        assert_eq!(store.name, "checkout");
        assert_eq!(store.namespace.as_deref(), Some("shop"));
        let unlabelled: Pod = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "x-0", "namespace": "shop"}}),
        )
        .expect("pod");
        assert!(store_of_pod(unlabelled).is_none());
    }
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

    fn realistic_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "checkout-1", "namespace": "shop", "uid": "u-1",
                "generateName": "checkout-",
                "deletionTimestamp": "2026-12-03T08:00:00Z",
                "labels": {
                    "app.kubernetes.io/instance": "checkout",
                    "app.kubernetes.io/name": "sessionstore",
                    "app.kubernetes.io/managed-by": "sessionstore-operator",
                    "sessionstore.dev/role": "replica",
                    "controller-revision-hash": "checkout-7c9b",
                    "statefulset.kubernetes.io/pod-name": "checkout-1"
                },
                "annotations": {"sessionstore.dev/config-hash": "abc", "kubectl.kubernetes.io/default-container": "redis"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "checkout", "uid": "s-1"}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}}]
            },
            "spec": {"containers": [
                {"name": "redis", "image": "redis:7.0", "args": ["/etc/redis/conf/redis.conf"]},
                {"name": "sentinel", "image": "redis:7.0", "args": ["/sentinel/sentinel.conf", "--sentinel"]}
            ]},
            "status": {
                "phase": "Running", "podIP": "10.0.0.7", "hostIP": "192.168.1.2",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "containerStatuses": [
                    {"name": "redis", "ready": true, "restartCount": 0, "image": "redis:7.0", "imageID": "docker-pullable://redis@sha256:0123456789abcdef", "containerID": "containerd://0123456789abcdef"},
                    {"name": "sentinel", "ready": true, "restartCount": 0, "image": "redis:7.0", "imageID": "docker-pullable://redis@sha256:0123456789abcdef", "containerID": "containerd://fedcba9876543210"}
                ]
            }
        }))
        .expect("a Pod")
    }

    #[test]
    fn strip_pod_keeps_what_the_steps_read_and_little_else() {
        let mut pod = realistic_pod();
        let before = serde_json::to_vec(&pod).expect("json").len();
        strip_pod(&mut pod);
        let after = serde_json::to_vec(&pod).expect("json").len();
        println!("pod in the watch cache: {before} bytes of JSON before stripping, {after} after");
        let labels = pod.labels();
        let mut kept: Vec<&str> = labels.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [
                "app.kubernetes.io/instance",
                "controller-revision-hash",
                "sessionstore.dev/role"
            ]
        );
        assert_eq!(pod.metadata.uid.as_deref(), Some("u-1"));
        assert!(pod.metadata.deletion_timestamp.is_some());
        assert!(pod.spec.is_none());
        assert!(pod.metadata.annotations.is_none() && pod.metadata.managed_fields.is_none());
        let target = pod_target(&pod);
        assert!(target.ready);
        assert_eq!(
            target.ip.map(|ip| ip.to_string()).as_deref(),
            Some("10.0.0.7")
        );
        let status = pod.status.as_ref().expect("status");
        assert!(status.host_ip.is_none() && status.phase.is_none());
        // What the diagnosis reads stays; the image digest and container ids go.
        let redis = &status.container_statuses.as_ref().expect("kept")[0];
        assert_eq!((redis.name.as_str(), redis.ready), ("redis", true));
        assert!(redis.image_id.is_empty() && redis.container_id.is_none());
        assert!(after * 2 < before, "{after} of {before} bytes");
    }

    #[test]
    fn memory_cache_pods_of_store_are_its_ordinals_in_its_namespace() {
        let cache = MemoryCache::default();
        for (namespace, name) in [
            ("shop", "checkout-1"),
            ("shop", "checkout-0"),
            ("shop", "checkout-x-0"),
            ("shop", "checkout"),
            ("other", "checkout-2"),
        ] {
            let mut pod = realistic_pod();
            pod.metadata.name = Some(name.into());
            cache.insert_pod_object(namespace, pod);
        }
        let names: Vec<String> = cache
            .pods_of_store("shop", "checkout")
            .expect("synced")
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["checkout-0", "checkout-1"]);
    }

    #[test]
    fn statefulset_revision_is_observed_only_once_the_controller_saw_the_generation() {
        let sts = |generation: i64, observed: Option<i64>| StatefulSet {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            status: Some(StatefulSetStatus {
                observed_generation: observed,
                update_revision: Some("r2".into()),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        assert!(!StatefulSetRevision::of(&sts(3, Some(2))).observed);
        assert!(!StatefulSetRevision::of(&sts(3, None)).observed);
        let current = StatefulSetRevision::of(&sts(3, Some(3)));
        assert!(current.observed);
        assert_eq!(current.update_revision.as_deref(), Some("r2"));
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
