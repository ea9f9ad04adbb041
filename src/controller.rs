//! The reconcile loop: a thin `reconcile` running the pipeline (validate -> read Secrets -> build ->
//! apply -> observe -> status) for one SessionStore, the `error_policy` that backs off per store, and the
//! [`Context`] they share, which tests build from a mocked client and an injected child cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};

use crate::apply::{DriftMemo, apply_children};
use crate::build::meta::{ChildNames, MANAGER};
use crate::cache::{Cached, ChildCache, ChildKind};
use crate::crd::{Engine, PersistenceMode, Phase, SessionStore, SessionStoreStatus};
use crate::diagnosis::{self, Diagnosis};
use crate::error::{Error, Result};
use crate::ha::step::{HaHooks, reconcile_primary};
use crate::metrics::Metrics;
use crate::observe::step::HealthStep;
use crate::rotation::step::{ListPods, PodAddresses};
use crate::secrets::{CredentialMemo, read_credentials};
use crate::settings::OperatorSettings;
use crate::status::{self, OwnedStatus, Progress, READY};
use crate::validate::{ValidatedStore, check_engine_switch, validate_with};

/// A healthy store is reconciled again after this long even without events: the Secrets are not
/// watched, so this is when a deleted Secret is noticed.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(300);
/// How often a store waiting for its `spec.auth.existingSecret` looks again.
pub const EXISTING_SECRET_RETRY: Duration = Duration::from_secs(60);
/// First and largest delay of the per-store error backoff.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Smallest delay after the API server answered 429 (too many requests).
pub const THROTTLED_MIN: Duration = Duration::from_secs(30);

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
    /// Pods and Sentinel discovery for the HA step (see `ha::step`); tests replace them.
    pub ha: HaHooks,
    /// Consecutive failures per store, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The observe step: the operator's one Redis probe and a health tracker per store.
    pub health: HealthStep,
    /// Where a rotation finds the Redis pods (see `rotation::step`).
    pub pod_addresses: Arc<dyn PodAddresses>,
    /// cert-manager discovery and applied Certificates (see `tls`).
    pub tls: crate::tls::TlsMemo,
    /// prometheus-operator discovery and our ServiceMonitors (see `service_monitor`).
    pub service_monitors: crate::service_monitor::ServiceMonitorMemo,
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
            tls: crate::tls::TlsMemo::default(),
            service_monitors: crate::service_monitor::ServiceMonitorMemo::default(),
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

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn store_key(store: &SessionStore) -> String {
    format!(
        "{}/{}",
        store.namespace().unwrap_or_default(),
        store.name_any()
    )
}

/// Reconciles one SessionStore. Errors go to [`error_policy`].
pub async fn reconcile(store: Arc<SessionStore>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer();
    let span = tracing::info_span!("reconcile", namespace = %store.namespace().unwrap_or_default(), name = %store.name_any());
    let action = tracing::Instrument::instrument(reconcile_store(&store, &ctx), span).await?;
    ctx.metrics.reconcile_ok();
    ctx.failures().remove(&store_key(&store));
    Ok(action)
}

async fn reconcile_store(store: &SessionStore, ctx: &Context) -> Result<Action> {
    if store.meta().deletion_timestamp.is_some() {
        // The children carry a controller ownerReference: the garbage collector removes them.
        ctx.health
            .forget(&store.namespace().unwrap_or_default(), &store.name_any());
        return Ok(Action::await_change());
    }
    let running = running_engine(store);
    let checked = validate_with(store, &ctx.settings.images)
        .and_then(|validated| check_engine_switch(validated.engine, running).map(|()| validated));
    let validated = match checked {
        Ok(validated) => validated,
        Err(error) => {
            tracing::warn!(field = %error.field, "invalid spec: {}", error.message);
            let written = write_status(ctx, store, &Progress::Invalid(&error)).await?;
            if written {
                publish(
                    ctx,
                    store,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validating",
                    error.to_string(),
                )
                .await;
            }
            // Retrying cannot help: wait for the user to change the spec.
            return Ok(Action::await_change());
        }
    };
    announce_engine_switch(ctx, store, &validated, running).await;
    match pipeline(ctx, store, &validated, true).await {
        // Someone created a Secret between our read and our create: read again, once.
        Err(Error::Conflict { context }) => {
            tracing::info!(%context, "conflict on create; reading again");
            ctx.credentials.forget(&validated);
            pipeline(ctx, store, &validated, false).await
        }
        other => other,
    }
}

/// The engine the store's primary runs, as the health probe last read it (`INFO server`).
fn running_engine(store: &SessionStore) -> Option<Engine> {
    Engine::from_server_name(store.status.as_ref()?.health.as_ref()?.engine.as_deref()?)
}

/// Says once per spec generation that the engine changes and what that costs: an ordered rolling
/// update for an HA store, a restart of the only pod for a standalone one.
async fn announce_engine_switch(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    running: Option<Engine>,
) {
    let Some(from) = running.filter(|running| *running != validated.engine) else {
        return;
    };
    let observed = store.status.as_ref().and_then(|s| s.observed_generation);
    if observed == store.meta().generation {
        return;
    }
    let to = validated.engine;
    let note = if validated.is_highly_available() {
        format!(
            "Switching {from} -> {to}: an ordered rolling update (replicas first, one handover, \
             the old primary last) that keeps every session"
        )
    } else {
        let kept = match validated.persistence.mode {
            PersistenceMode::None => "sessions are lost (persistence none)",
            _ => "sessions are kept (the new server loads the data on the volume)",
        };
        format!("Switching {from} -> {to} restarts the only pod of this standalone store: {kept}")
    };
    tracing::info!(%from, %to, "engine switch");
    publish(
        ctx,
        store,
        EventType::Normal,
        "SwitchingEngine",
        "Updating",
        note,
    )
    .await;
}

/// Read Secrets -> build -> apply -> status, for a valid store.
async fn pipeline(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    optimistic: bool,
) -> Result<Action> {
    let tls = match crate::tls::prepare(ctx, validated).await? {
        crate::tls::TlsReadiness::Disabled => None,
        crate::tls::TlsReadiness::Ready(inputs) => Some(inputs),
        crate::tls::TlsReadiness::Waiting { reason, message } => {
            tracing::warn!(reason, "{message}");
            let progress = Progress::WaitingForTls {
                reason,
                message: &message,
            };
            if write_status(ctx, store, &progress).await? {
                publish(
                    ctx,
                    store,
                    EventType::Warning,
                    reason,
                    "ReadingSecret",
                    message,
                )
                .await;
            }
            return Ok(Action::requeue(crate::tls::TLS_RETRY));
        }
    };
    let mut secrets_read = match read_credentials(ctx, validated, optimistic).await {
        Ok(read) => read,
        Err(Error::ExistingSecret { message }) => {
            tracing::warn!("{message}");
            let written = write_status(ctx, store, &Progress::WaitingForSecret(&message)).await?;
            if written {
                publish(
                    ctx,
                    store,
                    EventType::Warning,
                    "ExistingSecretMissing",
                    "ReadingSecret",
                    format!("spec.auth.existingSecret: {message}"),
                )
                .await;
            }
            return Ok(Action::requeue(EXISTING_SECRET_RETRY));
        }
        Err(e) => return Err(e),
    };
    // The store CA (TLS stores): the only CA trusted when the operator dials Redis and Sentinel.
    let tls_ca = tls
        .as_ref()
        .and_then(|t| t.ca_crt.as_ref())
        .map(|ca| ca.0.as_slice());
    // Scale-down guard (HA): while the primary is a pod the shrink would remove, the children are
    // built for the pods that run now and the primary is handed over first (see `ha::scale`).
    let scale_hold = crate::ha::scale::guard_scale_down(
        ctx,
        store,
        validated,
        &secrets_read.credentials,
        tls_ca,
    )
    .await?;
    let validated = scale_hold.as_ref().map_or(validated, |hold| &hold.store);
    // Password rotation: its own step, before the apply, which then agrees with its state.
    let rotation = crate::rotation::step::reconcile_rotation(
        ctx,
        store,
        validated,
        &mut secrets_read,
        tls.as_ref(),
    )
    .await?;
    let children = crate::build::desired_children(&crate::rotation::step::build_input(
        validated,
        &secrets_read,
        &ctx.settings,
        tls.as_ref(),
    ));
    let outcome = apply_children(ctx, validated, children, &secrets_read).await?;
    if outcome.writes > 0 {
        tracing::info!(writes = outcome.writes, "applied children");
    }
    if outcome.created {
        publish(
            ctx,
            store,
            EventType::Normal,
            "Created",
            "Provisioning",
            format!(
                "Created the Redis children and the connection Secret {}",
                ChildNames::connection_secret(&validated.name)
            ),
        )
        .await;
    }

    // Optional prometheus-operator object, after the children: a missing API is a condition, not
    // a failure.
    let service_monitor_unavailable =
        crate::service_monitor::reconcile_service_monitor(ctx, store, validated).await?;

    let statefulset_written = outcome.statefulset_status.is_some();
    let ready_replicas = match outcome.statefulset_status {
        Some(status) => status.ready_replicas.unwrap_or(0),
        None => statefulset_ready_replicas(ctx, validated).await?,
    };
    // HA stores only: learn the primary from the Sentinels and move the role labels to it.
    let ha = reconcile_primary(
        ctx,
        store,
        validated,
        &secrets_read.credentials,
        ready_replicas,
        tls_ca,
    )
    .await?;
    // HA stores only: the rolling update (replicas first, a handover, then the old primary).
    let rollout = crate::ha::rollout_step::reconcile_rollout(
        ctx,
        store,
        validated,
        &secrets_read.credentials,
        tls_ca,
        ha.as_ref(),
        statefulset_written,
    )
    .await?;

    // The Ready condition, not the phase: the health step may make a ready store Degraded, which
    // must not announce "Ready" again on every reconcile.
    let was_ready = store
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .is_some_and(|c| c.status == "True");

    // Observe: at most one Redis probe per store per health interval (see `observe::step`).
    let observed = ctx
        .health
        .observe(ctx, store, validated, &secrets_read.credentials, tls_ca)
        .await;
    // Only while fewer pods are ready than desired: why, from the caches (and the StatefulSet's
    // Events when pods are missing).
    let diagnosis = if ready_replicas < validated.replicas {
        diagnose_store(ctx, validated).await
    } else {
        None
    };
    let with_health = observed.status_view(store.status.as_ref());
    let written = write_status_over(
        ctx,
        store,
        with_health.as_ref().or(store.status.as_ref()),
        &Progress::Applied {
            store: validated,
            ready_replicas,
            auth: Some(&rotation.auth),
            service_monitor_unavailable: service_monitor_unavailable.as_deref(),
            ha: ha.as_ref(),
            rollout: rollout.as_ref(),
            diagnosis: diagnosis.as_ref(),
        },
    )
    .await?;
    // One Warning Event per change of cause (the status carries it meanwhile).
    if written && let Some(diagnosis) = &diagnosis {
        let before = store
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
            .map(|c| c.reason.as_str());
        if before != Some(diagnosis.reason) {
            publish(
                ctx,
                store,
                EventType::Warning,
                diagnosis.reason,
                "Diagnosing",
                diagnosis.message.clone(),
            )
            .await;
        }
    }
    if written && let Some(update) = &observed.update {
        ctx.health.written(update);
    }
    let primary_known = ha.as_ref().is_none_or(|h| h.known);
    if !was_ready && ready_replicas >= validated.replicas && primary_known {
        publish(
            ctx,
            store,
            EventType::Normal,
            "Ready",
            "Provisioning",
            format!("All {} Redis replicas are ready", validated.replicas),
        )
        .await;
    }
    let mut requeue = observed.requeue_after(RESYNC_INTERVAL);
    for due in [
        rotation.requeue_after,
        ha.and_then(|h| h.requeue),
        scale_hold.map(|hold| hold.requeue),
        rollout.and_then(|r| r.requeue),
    ]
    .into_iter()
    .flatten()
    {
        requeue = requeue.min(due);
    }
    Ok(Action::requeue(requeue))
}

/// Why the store's pods are not ready: pods from the watch cache (none: no diagnosis, no call),
/// the StatefulSet's Events listed only when some pod was never created.
async fn diagnose_store(ctx: &Context, store: &ValidatedStore) -> Option<Diagnosis> {
    let pods = ctx.cache.pods_of_store(&store.namespace, &store.name)?;
    let statefulset = ChildNames::statefulset(&store.name);
    let created = ctx
        .cache
        .statefulset_status(&store.namespace, &statefulset)
        .map(|s| s.replicas);
    let events = if diagnosis::pods_missing(store, &pods, created) {
        statefulset_events(ctx, &store.namespace, &statefulset).await
    } else {
        Vec::new()
    };
    diagnosis::diagnose(&diagnosis::Inputs {
        store,
        pods: &pods,
        created,
        events: &events,
        now: k8s_openapi::jiff::Timestamp::now(),
    })
}

/// The StatefulSet's Events, oldest first; none when they cannot be read (a diagnosis is a
/// help, never a reason to fail the reconcile).
async fn statefulset_events(
    ctx: &Context,
    namespace: &str,
    statefulset: &str,
) -> Vec<diagnosis::StatefulSetEvent> {
    ctx.metrics.api_request("list");
    let api: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), namespace);
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind=StatefulSet,involvedObject.name={statefulset}"
    ));
    let mut events = match api.list(&params).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "could not list the StatefulSet's Events for the diagnosis");
            return Vec::new();
        }
    };
    let when = |e: &CoreEvent| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    events.sort_by_key(when);
    events
        .into_iter()
        .map(|e| diagnosis::StatefulSetEvent {
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        })
        .collect()
}

/// Ready replicas from the watch cache, or from the API server when there is no cache.
async fn statefulset_ready_replicas(ctx: &Context, store: &ValidatedStore) -> Result<i32> {
    let ready = read_statefulset(
        ctx,
        store,
        |cache, namespace, name| {
            cache
                .statefulset_status(namespace, name)
                .map(|s| s.ready_replicas.unwrap_or(0))
        },
        |sts| {
            sts.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        },
    )
    .await?;
    Ok(ready.unwrap_or(0))
}

/// One fact about the store's StatefulSet: from the watch cache when it knows it (`from_cache`),
/// `None` when the synced cache holds no StatefulSet, else one GET read with `from_object`
/// (`None` when it does not exist). Shared by the status, HA, rollout and scale steps.
pub(crate) async fn read_statefulset<T>(
    ctx: &Context,
    store: &ValidatedStore,
    from_cache: impl Fn(&dyn ChildCache, &str, &str) -> Option<T>,
    from_object: impl Fn(&StatefulSet) -> T,
) -> Result<Option<T>> {
    let name = ChildNames::statefulset(&store.name);
    if let Some(fact) = from_cache(ctx.cache.as_ref(), &store.namespace, &name) {
        return Ok(Some(fact));
    }
    if ctx
        .cache
        .lookup(ChildKind::StatefulSet, &store.namespace, &name)
        != Cached::Unknown
    {
        return Ok(None);
    }
    ctx.metrics.api_request("get");
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &store.namespace);
    let sts = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading StatefulSet {}/{name}", store.namespace), e))?;
    Ok(sts.as_ref().map(from_object))
}

/// Computes the status and writes it when it changed. Returns whether it wrote.
async fn write_status(
    ctx: &Context,
    store: &SessionStore,
    progress: &Progress<'_>,
) -> Result<bool> {
    write_status_over(ctx, store, store.status.as_ref(), progress).await
}

/// Like `write_status`, starting from `base` (the live status with the health step's update laid
/// over it) but still comparing with the live status, so only real changes are written.
async fn write_status_over(
    ctx: &Context,
    store: &SessionStore,
    base: Option<&SessionStoreStatus>,
    progress: &Progress<'_>,
) -> Result<bool> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let desired =
        status::desired_status(base, store.meta().generation, progress, &ctx.settings, &now);
    if !status::differs(store.status.as_ref(), &desired) {
        return Ok(false);
    }
    log_transition(store, &desired);
    status::patch_status(ctx, store, &desired).await?;
    Ok(true)
}

fn log_transition(store: &SessionStore, desired: &OwnedStatus) {
    let before = store.status.as_ref().and_then(|s| s.phase);
    if before != desired.phase {
        tracing::info!(
            from = before.map(Phase::as_str).unwrap_or("None"),
            to = desired.phase.map(Phase::as_str).unwrap_or("None"),
            reason = desired
                .condition(READY)
                .map(|c| c.reason.as_str())
                .unwrap_or_default(),
            "phase changed"
        );
    }
}

/// Publishes an Event about the store; a failure is logged, never fatal to the reconcile.
pub(crate) async fn publish(
    ctx: &Context,
    store: &SessionStore,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    ctx.metrics.api_request("create");
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &store.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish Event");
    }
}

/// Decides when a failed store is tried again: capped exponential backoff per store, longer after
/// a 429. Also counts the failure by kind.
pub fn error_policy(store: Arc<SessionStore>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let failures = {
        let mut map = ctx.failures();
        let entry = map.entry(store_key(&store)).or_insert(0);
        *entry = entry.saturating_add(1);
        *entry
    };
    let delay = backoff_delay(failures, error.is_throttled());
    tracing::warn!(
        namespace = %store.namespace().unwrap_or_default(),
        name = %store.name_any(),
        kind = error.metric_label(),
        failures,
        retry_in_seconds = delay.as_secs(),
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

/// `BACKOFF_BASE * 2^(failures-1)`, capped at `BACKOFF_MAX`; at least `THROTTLED_MIN` after a 429.
pub fn backoff_delay(failures: u32, throttled: bool) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let delay = BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX);
    if throttled {
        delay.max(THROTTLED_MIN)
    } else {
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_delay(1, false), Duration::from_secs(5));
        assert_eq!(backoff_delay(2, false), Duration::from_secs(10));
        assert_eq!(backoff_delay(4, false), Duration::from_secs(40));
        assert_eq!(backoff_delay(7, false), Duration::from_secs(300));
        assert_eq!(backoff_delay(40, false), Duration::from_secs(300));
        assert_eq!(backoff_delay(1, true), Duration::from_secs(30));
    }
}
