//! `sessionstore-operator run`: connects to the cluster, checks the CRD, serves the HTTP endpoints,
//! takes the leader Lease, then runs one controller per watched scope with narrow watches
//! (label-selected, metadata-only children; no Secrets) until SIGTERM/SIGINT or a lost lease.
//! The health step's pod cache is one more narrow watch: Redis pods only, stripped to name, IP
//! and Ready, and never a reconcile trigger (the StatefulSet's status already is).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::build::meta::{Component, managed_by_selector};
use crate::cache::{Cached, ChildCache, ChildKind, WatchCache, store_of_pod, strip_pod};
use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::{Error, Result};
use crate::fault;
use crate::http::{self, HttpState};
use crate::leader::Leader;
use crate::metrics;
use crate::observe::PodTarget;
use crate::observe::step::{self, HealthSettings, HealthStep};
use crate::reconcile::{error_policy, reconcile};
use crate::settings::OperatorSettings;

/// Everything `run` is configured with (flags and env, see the run contract).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    pub http_addr: SocketAddr,
    pub leader_election: bool,
    pub lease_name: String,
    pub pod_name: String,
    pub max_concurrent_reconciles: u16,
    pub settings: OperatorSettings,
    /// `--health-interval-seconds`, `--max-concurrent-probes`.
    pub health: HealthSettings,
}

/// The API client: kubeconfig or in-cluster, wrapped in the crash-injection layer only when the
/// end-to-end suite sets [`fault::ABORT_AFTER_WRITES_ENV`].
async fn api_client() -> Result<Client> {
    let no_cluster = |e: &dyn std::fmt::Display| {
        Error::Startup(format!(
            "no Kubernetes cluster configured (kubeconfig or in-cluster service account): {e}"
        ))
    };
    let config = kube::Config::infer().await.map_err(|e| no_cluster(&e))?;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| no_cluster(&e))?;
    Ok(match fault::abort_after_writes_from_env()? {
        None => builder.build(),
        Some(limit) => {
            tracing::warn!(
                env = fault::ABORT_AFTER_WRITES_ENV,
                limit,
                "crash injection on: the process aborts after this many API writes"
            );
            builder
                .with_layer(&fault::AbortAfterWrites::new(limit))
                .build()
        }
    })
}

/// Runs the operator until a shutdown signal. Errors are start-up problems or a lost lease.
pub async fn run(options: RunOptions) -> Result<()> {
    let client = api_client().await?;
    check_crd(&client, &options.namespaces).await?;

    let (registry, metrics, health_metrics) = step::new_registry();
    let state = HttpState::new(registry, metrics.clone());
    let listener = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(|e| Error::Startup(format!("listening on {}: {e}", options.http_addr)))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signal_listener(stop_tx.clone()));
    let server = tokio::spawn(http::serve(
        listener,
        state.clone(),
        stopped(stop_rx.clone()),
    ));

    let mut leader = None;
    if options.leader_election {
        let mut lease = Leader::start(
            client.clone(),
            &options.settings.operator_namespace,
            &options.lease_name,
            &options.pod_name,
        )
        .await?;
        // A standby replica is healthy and ready to take over.
        state.set_ready(true);
        tracing::info!(lease = %options.lease_name, identity = %options.pod_name, "waiting for the leader lease");
        let mut stop = stop_rx.clone();
        tokio::select! {
            acquired = lease.acquired() => acquired?,
            _ = stop.wait_for(|s| *s) => {
                lease.release().await;
                let _ = server.await;
                return Ok(());
            }
        }
        tracing::info!("acquired the leader lease; reconciling");
        leader = Some(lease);
    }

    let result = {
        let health = HealthStep::new(options.health.clone(), Some(health_metrics));
        let controllers = run_controllers(
            client,
            &options,
            metrics,
            health,
            state.clone(),
            stop_rx.clone(),
        );
        tokio::pin!(controllers);
        match leader.as_mut() {
            Some(lease) => {
                tokio::select! {
                    done = &mut controllers => done,
                    _ = lease.lost() => {
                        // Stop reconciling at once: the other replica may already be writing.
                        let _ = stop_tx.send(true);
                        let _ = tokio::time::timeout(Duration::from_secs(10), &mut controllers).await;
                        Err(Error::Leader("lost the leader lease; exiting so the pod restarts as a standby".into()))
                    }
                }
            }
            None => controllers.await,
        }
    };
    let _ = stop_tx.send(true);
    if let Some(lease) = leader {
        lease.release().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    tracing::info!("stopped");
    result
}

/// A clear error when the API server is unreachable or the CRD is not installed.
async fn check_crd(client: &Client, namespaces: &[String]) -> Result<()> {
    let api: Api<SessionStore> = match namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::Startup(
            "the SessionStore CRD (sessionstores.sessionstore.dev) is not installed; install it with \
             `sessionstore-operator crd | kubectl apply -f -`"
                .into(),
        )),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(Error::Startup(format!(
            "not allowed to list SessionStores (check the operator's RBAC): {}",
            status.message
        ))),
        Err(e) => Err(Error::Startup(format!("cannot reach the Kubernetes API server: {e}"))),
    }
}

async fn signal_listener(stop: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    let _ = stop.send(true);
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(true);
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A `Sync` shutdown future for `Controller::graceful_shutdown_on` (bridged through a oneshot).
fn stopped_sync(
    stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    tokio::spawn(async move {
        stopped(stop).await;
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

/// Watch caches of every scope, looked up by namespace.
struct ScopedCaches {
    /// Key `None`: the all-namespaces scope.
    scopes: HashMap<Option<String>, WatchCache>,
    synced: Arc<std::sync::atomic::AtomicBool>,
}

impl ScopedCaches {
    fn scope(&self, namespace: &str) -> Option<&WatchCache> {
        if !self.synced.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.scopes
            .get(&Some(namespace.to_string()))
            .or_else(|| self.scopes.get(&None))
    }
}

impl ChildCache for ScopedCaches {
    fn lookup(&self, kind: ChildKind, namespace: &str, name: &str) -> Cached {
        match self.scope(namespace) {
            Some(cache) => cache.lookup(kind, namespace, name),
            // Until every watch has listed once, ask the API server rather than guess.
            None => Cached::Unknown,
        }
    }

    fn statefulset_status(&self, namespace: &str, name: &str) -> Option<StatefulSetStatus> {
        self.scope(namespace)?.statefulset_status(namespace, name)
    }

    fn store_pods(&self, namespace: &str, store: &str, replicas: i32) -> Option<Vec<PodTarget>> {
        self.scope(namespace)?
            .store_pods(namespace, store, replicas)
    }

    fn pods_of_store(&self, namespace: &str, store: &str) -> Option<Vec<Pod>> {
        self.scope(namespace)?.pods_of_store(namespace, store)
    }

    fn statefulset_revision(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<crate::cache::StatefulSetRevision> {
        self.scope(namespace)?.statefulset_revision(namespace, name)
    }
}

fn api_for<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn child_config() -> watcher::Config {
    watcher::Config::default()
        .labels(&managed_by_selector())
        .any_semantic()
}

/// A label-selected metadata-only watch reflected into a store, stripped of managedFields.
fn metadata_reflector<K>(
    api: Api<PartialObjectMeta<K>>,
) -> (
    Store<PartialObjectMeta<K>>,
    impl Stream<Item = std::result::Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, child_config())
        .default_backoff()
        .modify(|m: &mut PartialObjectMeta<K>| m.metadata.managed_fields = None)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// Runs one controller per scope (all namespaces, or each `--namespace`) until `stop`.
async fn run_controllers(
    client: Client,
    options: &RunOptions,
    metrics: metrics::Metrics,
    health: HealthStep,
    state: Arc<HttpState>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut caches = HashMap::new();
    let mut controllers = Vec::new();
    let mut readiness = Vec::new();
    let mut store_readers = Vec::new();
    for scope in &scopes {
        let (cache, controller) = scope_controller(&client, scope, options, &stop);
        readiness.push(cache.clone());
        caches.insert(scope.clone(), cache);
        state.add_store_reader(controller.store());
        store_readers.push(controller.store());
        controllers.push(controller);
    }

    let cache: Arc<dyn ChildCache> = Arc::new(ScopedCaches {
        scopes: caches,
        synced: synced.clone(),
    });
    let ctx = Arc::new(
        Context::with_instance(
            client,
            options.settings.clone(),
            cache,
            metrics,
            Some(options.pod_name.clone()),
        )
        .with_health(health),
    );
    tokio::spawn(prune_health(
        ctx.clone(),
        store_readers,
        synced.clone(),
        stop.clone(),
    ));
    tokio::spawn(mark_ready_once_synced(readiness, synced, state.clone()));

    let runs = controllers.into_iter().map(|controller| {
        controller
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => tracing::trace!(store = %object, "reconciled"),
                    Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                    // A store deleted while a reconcile of it was queued: nothing to do, and no
                    // warning for the SRE reading the logs (seen after every deletion on a real
                    // API server).
                    Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                        tracing::debug!(store = %object, "queued store is gone")
                    }
                    Err(error) => tracing::warn!(%error, "controller"),
                }
            })
    });
    futures::future::join_all(runs).await;
    Ok(())
}

/// The child watches of one scope (their caches) and the controller of its stores, which they
/// wake.
fn scope_controller(
    client: &Client,
    scope: &Option<String>,
    options: &RunOptions,
    stop: &watch::Receiver<bool>,
) -> (WatchCache, Controller<SessionStore>) {
    let (config_maps, cm_stream) =
        metadata_reflector(api_for::<PartialObjectMeta<ConfigMap>>(client, scope));
    let (services, svc_stream) =
        metadata_reflector(api_for::<PartialObjectMeta<Service>>(client, scope));
    let (network_policies, np_stream) =
        metadata_reflector(api_for::<PartialObjectMeta<NetworkPolicy>>(client, scope));
    let (pod_disruption_budgets, pdb_stream) = metadata_reflector(api_for::<
        PartialObjectMeta<PodDisruptionBudget>,
    >(client, scope));
    let (statefulsets, sts_stream) = statefulset_reflector(api_for::<StatefulSet>(client, scope));
    let (pods, pod_stream) = pod_reflector(api_for::<Pod>(client, scope));
    let cache = WatchCache {
        config_maps,
        services,
        statefulsets,
        network_policies,
        pod_disruption_budgets,
        pods,
    };
    let controller = Controller::new(
        api_for::<SessionStore>(client, scope),
        watcher::Config::default().any_semantic(),
    )
    .owns_stream(cm_stream)
    .owns_stream(svc_stream)
    .owns_stream(np_stream)
    .owns_stream(pdb_stream)
    .owns_stream(sts_stream)
    // A pod change (a crashed or deleted primary goes unready within a second) reconciles its
    // store at once, so the HA step starts following the failover without waiting for the
    // periodic primary check (see `ha::step::PRIMARY_FOLLOW`).
    .watches_stream(pod_stream, store_of_pod)
    .with_config(
        ControllerConfig::default()
            .concurrency(options.max_concurrent_reconciles)
            .debounce(Duration::from_millis(500)),
    )
    .graceful_shutdown_on(stopped_sync(stop.clone()));
    (cache, controller)
}

/// StatefulSets are watched whole for their status, with the spec dropped to save memory.
fn statefulset_reflector(
    api: Api<StatefulSet>,
) -> (
    Store<StatefulSet>,
    impl Stream<Item = std::result::Result<StatefulSet, watcher::Error>> + Send + 'static,
) {
    let (statefulsets, sts_writer) = reflector::store();
    let sts_stream = watcher(api, child_config())
        .default_backoff()
        .modify(|s: &mut StatefulSet| {
            s.spec = None;
            s.metadata.managed_fields = None;
        })
        .reflect(sts_writer)
        .touched_objects();
    (statefulsets, sts_stream)
}

/// Redis pods for the health probe: only ours (managed-by + component=redis, the pod template's
/// labels), stripped by `strip_pod` (name, uid, deletionTimestamp, instance, role and revision
/// labels, podIP and Ready).
fn pod_reflector(
    api: Api<Pod>,
) -> (
    Store<Pod>,
    impl Stream<Item = std::result::Result<Pod, watcher::Error>> + Send + 'static,
) {
    let (pods, pod_writer) = reflector::store();
    let pod_selector = format!(
        "{},app.kubernetes.io/component={}",
        managed_by_selector(),
        Component::Redis.as_str()
    );
    let pod_stream = watcher(
        api,
        watcher::Config::default()
            .labels(&pod_selector)
            .any_semantic(),
    )
    .default_backoff()
    .modify(strip_pod)
    .reflect(pod_writer)
    .touched_objects();
    (pods, pod_stream)
}

/// Readiness: every child watch has listed once.
async fn mark_ready_once_synced(
    readiness: Vec<WatchCache>,
    synced: Arc<std::sync::atomic::AtomicBool>,
    ready_state: Arc<HttpState>,
) {
    for cache in readiness {
        let waits = [
            cache.config_maps.wait_until_ready().await,
            cache.services.wait_until_ready().await,
            cache.statefulsets.wait_until_ready().await,
            cache.network_policies.wait_until_ready().await,
            cache.pod_disruption_budgets.wait_until_ready().await,
            cache.pods.wait_until_ready().await,
        ];
        if waits.iter().any(|w| w.is_err()) {
            return;
        }
    }
    synced.store(true, std::sync::atomic::Ordering::Release);
    ready_state.set_ready(true);
    tracing::info!("watch caches synced");
}

/// Drops the health tracker and gauges of deleted stores once per health interval: a store
/// deleted without a finalizer is never reconciled again, so the reconcile cannot do it.
async fn prune_health(
    ctx: Arc<Context>,
    readers: Vec<Store<SessionStore>>,
    synced: Arc<std::sync::atomic::AtomicBool>,
    stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(ctx.health.settings().interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stopping => return,
        }
        if !synced.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        let live: std::collections::HashSet<(String, String)> = readers
            .iter()
            .flat_map(|reader| reader.state())
            .map(|s| {
                (
                    kube::ResourceExt::namespace(s.as_ref()).unwrap_or_default(),
                    kube::ResourceExt::name_any(s.as_ref()),
                )
            })
            .collect();
        ctx.health
            .retain(|namespace, name| live.contains(&(namespace.to_string(), name.to_string())));
    }
}
