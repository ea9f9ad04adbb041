//! Everything one reconcile shares with the next, below every step of the pipeline: the API
//! client, the settings, the child caches, the metrics, the Event recorder and the memories
//! (credentials, drift, HA hooks, health, TLS, monitoring). Steps take a `&Context`; nothing
//! here knows the pipeline.

mod events;
pub mod memo;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};

use crate::build::meta::{ChildNames, MANAGER};
use crate::cache::{Cached, ChildCache, ChildKind};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::ha::hooks::HaHooks;
use crate::key::StoreKey;
use crate::metrics::{Metrics, Verb};
use crate::observe::step::HealthStep;
use crate::rotation::addresses::{ListPods, PodAddresses};
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;
use memo::{CredentialMemo, DriftMemo, OptionalApiMemo};

/// A healthy store is reconciled again after this long even without events: the Secrets are not
/// watched, so this is when a deleted Secret is noticed.
pub const RESYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Everything a reconcile needs, built once by `run` (or by a test around a mocked client).
pub struct Context {
    pub client: Client,
    pub settings: OperatorSettings,
    /// Watch caches of the children (or a stand-in).
    pub cache: Arc<dyn ChildCache>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// Remembered credentials (see `secrets`).
    pub credentials: CredentialMemo,
    /// What our own applies left on each child (see `apply`).
    pub drift: DriftMemo,
    /// Pods and Sentinel discovery for the HA steps (see `ha::hooks`); tests replace them.
    pub ha: HaHooks,
    /// Consecutive failures per store, for the backoff.
    failures: Mutex<HashMap<StoreKey, u32>>,
    /// The observe step: the operator's one Redis probe and a health tracker per store.
    pub health: HealthStep,
    /// Where a rotation finds the Redis pods (see `rotation::addresses`).
    pub pod_addresses: Arc<dyn PodAddresses>,
    /// cert-manager discovery and the Certificates our applies left (see `tls`).
    pub tls: OptionalApiMemo,
    /// prometheus-operator discovery and our ServiceMonitors (see `service_monitor`).
    pub service_monitors: OptionalApiMemo,
}

impl Context {
    pub fn new(
        client: Client,
        settings: OperatorSettings,
        cache: Arc<dyn ChildCache>,
        metrics: Metrics,
    ) -> Self {
        Self::with_instance(client, settings, cache, metrics, None)
    }

    /// `instance` names this replica in Events (the pod name).
    pub fn with_instance(
        client: Client,
        settings: OperatorSettings,
        cache: Arc<dyn ChildCache>,
        metrics: Metrics,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: instance.or_else(|| Some(MANAGER.into())),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            cache,
            metrics,
            credentials: CredentialMemo::default(),
            drift: DriftMemo::default(),
            ha: HaHooks::default(),
            failures: Mutex::new(HashMap::new()),
            health: HealthStep::default(),
            pod_addresses: Arc::new(ListPods::default()),
            tls: OptionalApiMemo::default(),
            service_monitors: OptionalApiMemo::default(),
        }
    }

    /// Replaces the default health step (interval, probe bound, gauges).
    pub fn with_health(mut self, health: HealthStep) -> Self {
        self.health = health;
        self
    }

    /// Replaces how a rotation finds the pods (tests: a fixed port on loopback).
    pub fn with_pod_addresses(mut self, pods: Arc<dyn PodAddresses>) -> Self {
        self.pod_addresses = pods;
        self
    }

    /// The view of the cluster the hooks take.
    pub fn cluster(&self) -> Cluster<'_> {
        Cluster {
            client: &self.client,
            metrics: &self.metrics,
            cache: self.cache.as_ref(),
            settings: &self.settings,
        }
    }

    /// Consecutive reconcile failures per store (the error policy's backoff).
    pub(crate) fn failures(&self) -> MutexGuard<'_, HashMap<StoreKey, u32>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One fact about the store's StatefulSet: from the watch cache when it knows it
    /// (`from_cache`), `None` when the synced cache holds no StatefulSet, else one GET read with
    /// `from_object` (`None` when it does not exist). Shared by the status, HA, rollout and scale
    /// steps.
    pub async fn read_statefulset<T>(
        &self,
        store: &ValidatedStore,
        from_cache: impl Fn(&dyn ChildCache, &str, &str) -> Option<T>,
        from_object: impl Fn(&StatefulSet) -> T,
    ) -> Result<Option<T>> {
        let name = ChildNames::statefulset(&store.name);
        if let Some(fact) = from_cache(self.cache.as_ref(), &store.namespace, &name) {
            return Ok(Some(fact));
        }
        if self
            .cache
            .lookup(ChildKind::StatefulSet, &store.namespace, &name)
            != Cached::Unknown
        {
            return Ok(None);
        }
        self.metrics.api_request(Verb::Get);
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &store.namespace);
        let sts = api.get_opt(&name).await.map_err(|e| {
            Error::kube(format!("reading StatefulSet {}/{name}", store.namespace), e)
        })?;
        Ok(sts.as_ref().map(from_object))
    }
}
