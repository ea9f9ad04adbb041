//! What the HA steps take from outside, held by the `Context` so tests can replace it: the
//! store's pods ([`PodSource`]: [`CachedPods`] reads the shared pod watch cache once it has synced
//! and only falls back to [`ApiPods`], one `list`, without a cache), the majority answer
//! ([`PrimaryDiscovery`]: [`SentinelDiscovery`] dials the Sentinels at the pods' headless DNS
//! names, or at injected addresses), the handover, and the per-store memories.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::build::meta::pod_selector_labels;
use crate::build::sentinel::{master_name, sentinel_addresses};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::ha::handover::{Handover, default_handover};
use crate::ha::memo::{DisruptionMemo, RolloutMemo, ScaleGuardMemo};
use crate::ha::observation::{AddressFn, PodRole};
use crate::ha::primary::{
    DiscoveryError, DiscoveryOptions, PrimaryAnswer, discover_primary, pod_for_host,
};
use crate::metrics::Verb;
use crate::password::Password;
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;

/// Where the step gets the store's pods.
pub trait PodSource: Send + Sync {
    fn pods<'a>(
        &'a self,
        cluster: Cluster<'a>,
        store: &'a ValidatedStore,
    ) -> BoxFuture<'a, Result<Vec<PodRole>>>;
}

/// Lists the pods from the API server with the store's pod selector (one `list` per call).
pub struct ApiPods;

impl PodSource for ApiPods {
    fn pods<'a>(
        &'a self,
        cluster: Cluster<'a>,
        store: &'a ValidatedStore,
    ) -> BoxFuture<'a, Result<Vec<PodRole>>> {
        Box::pin(async move {
            let selector = crate::pods::label_selector(&pod_selector_labels(store));
            cluster.metrics.api_request(Verb::List);
            let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &store.namespace);
            let list = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| Error::kube(format!("listing pods of {}", store.name), e))?;
            Ok(list.items.iter().filter_map(PodRole::of).collect())
        })
    }
}

/// Reads the pods from the shared pod watch cache (no API call) once it has synced; lists them from
/// the API server ([`ApiPods`]) only when there is no cache.
pub struct CachedPods;

impl PodSource for CachedPods {
    fn pods<'a>(
        &'a self,
        cluster: Cluster<'a>,
        store: &'a ValidatedStore,
    ) -> BoxFuture<'a, Result<Vec<PodRole>>> {
        match cluster.cache.pods_of_store(&store.namespace, &store.name) {
            Some(pods) => {
                let pods = pods.iter().filter_map(PodRole::of).collect();
                Box::pin(async move { Ok(pods) })
            }
            None => ApiPods.pods(cluster, store),
        }
    }
}

/// How the step learns the primary.
pub trait PrimaryDiscovery: Send + Sync {
    fn discover<'a>(
        &'a self,
        store: &'a ValidatedStore,
        settings: &'a OperatorSettings,
        operator_password: &'a Password,
        tls_ca: Option<&'a [u8]>,
    ) -> BoxFuture<'a, std::result::Result<PrimaryAnswer, DiscoveryError>>;
}

/// Asks the Sentinels with [`discover_primary`] as the `operator` user.
pub struct SentinelDiscovery {
    addresses: Arc<AddressFn>,
}

impl SentinelDiscovery {
    /// The pods' headless DNS names: what the operator dials in the cluster.
    pub fn in_cluster() -> Self {
        Self::with_addresses(Arc::new(
            |store: &ValidatedStore, settings: &OperatorSettings| {
                sentinel_addresses(store, settings)
            },
        ))
    }

    /// Other addresses (tests: Sentinels on loopback).
    pub fn with_addresses(addresses: Arc<AddressFn>) -> Self {
        SentinelDiscovery { addresses }
    }
}

impl PrimaryDiscovery for SentinelDiscovery {
    fn discover<'a>(
        &'a self,
        store: &'a ValidatedStore,
        settings: &'a OperatorSettings,
        operator_password: &'a Password,
        tls_ca: Option<&'a [u8]>,
    ) -> BoxFuture<'a, std::result::Result<PrimaryAnswer, DiscoveryError>> {
        Box::pin(async move {
            let mut options = DiscoveryOptions::new("operator", operator_password.clone());
            // TLS stores: trust only the store's own CA; the Sentinels are dialled by their
            // headless names, which the store's certificate covers.
            options.tls = tls_ca.map(|ca| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            });
            let mut answer = discover_primary(
                &(self.addresses)(store, settings),
                &master_name(store),
                &options,
            )
            .await?;
            // Sentinel announces the pods' headless names; the StatefulSet is named after the store.
            answer.pod = answer
                .pod
                .or_else(|| pod_for_host(&answer.host, &store.name));
            Ok(answer)
        })
    }
}

/// The HA steps' inputs and memories, held by the `Context`.
#[derive(Clone)]
pub struct HaHooks {
    pub pods: Arc<dyn PodSource>,
    pub discovery: Arc<dyn PrimaryDiscovery>,
    /// Deliberate primary handover (rolling update, scale-down guard).
    pub handover: Arc<dyn Handover>,
    /// What the scale-down guard last announced per store (see `ha::scale`).
    pub scale_memo: Arc<ScaleGuardMemo>,
    /// What the rolling update remembers between reconciles (handovers started and refused).
    pub rollout: Arc<RolloutMemo>,
    /// Handovers from stopping primary pods (see `ha::disruption`).
    pub disruption: Arc<DisruptionMemo>,
}

impl Default for HaHooks {
    fn default() -> Self {
        HaHooks {
            pods: Arc::new(CachedPods),
            discovery: Arc::new(SentinelDiscovery::in_cluster()),
            handover: default_handover(),
            scale_memo: Arc::default(),
            rollout: Arc::default(),
            disruption: Arc::default(),
        }
    }
}
