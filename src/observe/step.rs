//! The observe step as the reconcile runs it: once per health interval per store, probe the pods
//! the pod cache knows, record the gauges, and hand the status step a new `status.health` and
//! `Healthy`/`Degraded` conditions ONLY when `HealthTracker` decides a write is due. Everything
//! between probes (other reconciles of the same store) sends nothing to Redis and carries the
//! written health over unchanged, so the status step's only-when-changed check stays quiet.
//!
//! Kept apart from the pipeline (`reconcile::observe`) so it calls one function and applies one result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{Resource, ResourceExt};
use prometheus_client::registry::Registry;

use crate::build::StoreCredentials;
use crate::build::secret::CA_CERT_KEY;
use crate::cluster::Cluster;
use crate::crd::{HealthStatus, SessionStore, SessionStoreStatus};
use crate::key::StoreKey;
use crate::metrics::Metrics;
use crate::observe::info::{PodObservation, PodProblem, StoreObservation};
use crate::observe::{
    DEFAULT_HEALTH_INTERVAL, HealthMetrics, HealthTracker, PodTarget, ProbeSettings, RedisProbe,
    StoreTarget, TlsTarget, WriteDecision, health_conditions, upsert_conditions,
};
use crate::validate::{REDIS_PORT, ValidatedStore};

/// Operator-wide settings of the health step (`--health-interval-seconds`,
/// `--max-concurrent-probes`).
#[derive(Clone, Debug)]
pub struct HealthSettings {
    /// At most one probe, and one `status.health` write, per store per interval.
    pub interval: Duration,
    pub probe: ProbeSettings,
    /// The port dialled on each pod IP: the Redis port; tests point it at a local server.
    pub port: u16,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval: DEFAULT_HEALTH_INTERVAL,
            probe: ProbeSettings::default(),
            port: u16::try_from(REDIS_PORT).unwrap_or(6379),
        }
    }
}

/// What the health step knows about one store between reconciles.
struct StoreHealth {
    /// A store deleted and created again under the same name starts afresh.
    uid: String,
    tracker: HealthTracker,
    /// Start of the last probe: the next one is due `interval` later.
    last_probe: Option<Instant>,
    /// Pods the cache reported Ready at the last probe. More Ready pods than that make a probe
    /// due at once: a new store's first probe usually runs before its pod is Ready, and waiting a
    /// whole interval for the next one kept it `Provisioning` for up to 30 s after its pods were
    /// serving.
    ready_at_last_probe: usize,
}

/// The health step: one [`RedisProbe`] (one global connection bound) for the operator, one
/// [`HealthTracker`] per store, and the health gauges.
pub struct HealthStep {
    settings: HealthSettings,
    probe: RedisProbe,
    metrics: Option<Arc<HealthMetrics>>,
    stores: Mutex<HashMap<StoreKey, StoreHealth>>,
    /// Added to `Instant::now()`: lets tests and the benchmark step over intervals without sleeping.
    clock_offset: Mutex<Duration>,
}

/// A health write the status step should make, and what to tell the tracker once it is made.
#[derive(Clone, Debug)]
pub struct HealthUpdate {
    key: StoreKey,
    pub health: HealthStatus,
    pub conditions: [Condition; 2],
    at: Instant,
}

/// The step's result for one reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// `Some` only when a probe ran and the tracker decided the result must be written.
    pub update: Option<HealthUpdate>,
    /// When the next probe is due (`None`: the store has no pod to probe yet).
    pub next_probe_in: Option<Duration>,
    /// Whether Redis was dialled in this reconcile.
    pub probed: bool,
}

impl Observed {
    /// The status the status step should start from: the live one, with the new health and
    /// health conditions laid over it when a write is due.
    pub fn status_view(&self, live: Option<&SessionStoreStatus>) -> Option<SessionStoreStatus> {
        let update = self.update.as_ref()?;
        let mut status = live.cloned().unwrap_or_default();
        status.health = Some(update.health.clone());
        upsert_conditions(&mut status.conditions, update.conditions.iter().cloned());
        Some(status)
    }

    /// The requeue delay: back when the next probe is due (rounded up to whole seconds, so the
    /// probe is due when the store returns), and at least every `resync`.
    pub fn requeue_after(&self, resync: Duration) -> Duration {
        self.next_probe_in.map_or(resync, |due| {
            let seconds = due.as_secs() + u64::from(due.subsec_nanos() > 0);
            Duration::from_secs(seconds).min(resync)
        })
    }
}

fn store_key(namespace: &str, name: &str) -> StoreKey {
    StoreKey::new(namespace, name)
}

/// A registry with the controller's metrics (prefixed `sessionstore_`) and the health gauges
/// (complete names) side by side, as `/metrics` serves them.
pub fn new_registry() -> (Arc<Registry>, Metrics, Arc<HealthMetrics>) {
    let mut root = Registry::default();
    let metrics = Metrics::default().register(root.sub_registry_with_prefix("sessionstore"));
    let health = Arc::new(HealthMetrics::register(&mut root));
    (Arc::new(root), metrics, health)
}

impl Default for HealthStep {
    fn default() -> Self {
        HealthStep::new(HealthSettings::default(), None)
    }
}

impl HealthStep {
    pub fn new(settings: HealthSettings, metrics: Option<Arc<HealthMetrics>>) -> Self {
        HealthStep {
            probe: RedisProbe::new(settings.probe.clone()),
            settings,
            metrics,
            stores: Mutex::new(HashMap::new()),
            clock_offset: Mutex::new(Duration::ZERO),
        }
    }

    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    /// The operator's one probe (its connection counters are the probe cost figures).
    pub fn probe(&self) -> &RedisProbe {
        &self.probe
    }

    /// Moves this step's clock forward (tests and benchmarks: "one interval later").
    pub fn advance_clock(&self, by: Duration) {
        let mut offset = self
            .clock_offset
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *offset += by;
    }

    fn now(&self) -> Instant {
        Instant::now()
            + *self
                .clock_offset
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
    }

    fn stores(&self) -> MutexGuard<'_, HashMap<StoreKey, StoreHealth>> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of stores with health state (for tests and the memory figure).
    pub fn tracked(&self) -> usize {
        self.stores().len()
    }

    /// Drops a deleted store's tracker and gauges.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.stores().remove(&store_key(namespace, name));
        if let Some(metrics) = &self.metrics {
            metrics.remove(namespace, name);
        }
    }

    /// Drops every store for which `live(namespace, name)` is false: `run` calls this with the
    /// controller's store cache, since a store deleted without a finalizer is never reconciled.
    pub fn retain(&self, live: impl Fn(&str, &str) -> bool) {
        let gone: Vec<StoreKey> = self
            .stores()
            .keys()
            .filter(|key| !live(&key.namespace, &key.name))
            .cloned()
            .collect();
        for key in gone {
            self.forget(&key.namespace, &key.name);
        }
    }

    /// Records that the status step wrote `update` (call only after the patch succeeded).
    pub fn written(&self, update: &HealthUpdate) {
        if let Some(state) = self.stores().get_mut(&update.key) {
            state
                .tracker
                .written(&update.health, &update.conditions, update.at);
        }
    }

    /// Runs the step for one valid, applied store. Never fails: Redis and TLS problems become
    /// conditions. Dials nothing when the store has no pods yet (or the pod cache has not
    /// synced) or when the next probe is not due; never calls the API server. `ca_crt` is the TLS
    /// Secret's `ca.crt` as the TLS step read it (TLS stores only).
    pub async fn observe(
        &self,
        cluster: Cluster<'_>,
        store: &SessionStore,
        validated: &ValidatedStore,
        credentials: &StoreCredentials,
        ca_crt: Option<&[u8]>,
    ) -> Observed {
        let (namespace, name) = (validated.namespace.as_str(), validated.name.as_str());
        let key = store_key(namespace, name);
        let interval = self.settings.interval;
        let Some(pods) = cluster
            .cache
            .store_pods(namespace, name, validated.replicas)
        else {
            // No synced pod cache yet: look again in one interval rather than list pods.
            return Observed {
                next_probe_in: Some(interval),
                ..Observed::default()
            };
        };
        let live = store.status.as_ref();
        let has_written_health = live.is_some_and(|s| s.health.is_some());
        if pods.is_empty() && !has_written_health {
            // A new store whose pods do not exist yet: the status step says Provisioning, the
            // StatefulSet's status changes bring us back when pods appear.
            return Observed::default();
        }

        let now = self.now();
        let uid = store.uid().unwrap_or_default();
        if let Some(wait) = self.claim_probe(&key, &uid, live, &pods, now) {
            return Observed {
                next_probe_in: Some(wait),
                ..Observed::default()
            };
        }
        let observation = self
            .probe_pods(cluster, validated, credentials, ca_crt, pods)
            .await;
        self.judge(key, store, validated, &observation, now)
    }

    /// Claims this store's probe when it is due (an interval since the last one, or more pods
    /// ready than then); `Some(wait)` when it is not due yet.
    fn claim_probe(
        &self,
        key: &StoreKey,
        uid: &str,
        live: Option<&SessionStoreStatus>,
        pods: &[PodTarget],
        now: Instant,
    ) -> Option<Duration> {
        let interval = self.settings.interval;
        let mut stores = self.stores();
        let state = stores
            .entry(key.clone())
            .or_insert_with(|| new_state(uid, interval, live));
        if state.uid != uid {
            *state = new_state(uid, interval, live);
        }
        let ready = pods.iter().filter(|p| p.ready).count();
        if let Some(last) = state.last_probe {
            let since = now.saturating_duration_since(last);
            if since < interval && ready <= state.ready_at_last_probe {
                return Some(interval - since);
            }
        }
        state.last_probe = Some(now);
        state.ready_at_last_probe = ready;
        None
    }

    /// Probes every pod (over TLS with the store CA for TLS stores); a TLS store without a CA
    /// gets every pod's reason without dialling.
    async fn probe_pods(
        &self,
        cluster: Cluster<'_>,
        validated: &ValidatedStore,
        credentials: &StoreCredentials,
        ca_crt: Option<&[u8]>,
        pods: Vec<PodTarget>,
    ) -> StoreObservation {
        let (namespace, name) = (validated.namespace.as_str(), validated.name.as_str());
        let tls = match (&validated.tls, ca_crt) {
            (None, _) => Ok(None),
            (Some(_), Some(ca)) if !ca.is_empty() => Ok(Some(ca.to_vec())),
            (Some(tls), _) => Err(PodProblem::TlsFailed(format!(
                "the TLS Secret {} has no {CA_CERT_KEY} to verify the pods with",
                tls.secret_name(name)
            ))),
        };
        let target = StoreTarget {
            namespace: namespace.into(),
            name: name.into(),
            port: self.settings.port,
            pods,
            operator_password: credentials.operator.clone(),
            tls: None,
        };
        match tls {
            Ok(None) => self.probe.probe_store(&target).await,
            Ok(Some(ca_pem)) => {
                let target = StoreTarget {
                    tls: Some(TlsTarget {
                        ca_pem,
                        cluster_domain: cluster.settings.cluster_domain.clone(),
                    }),
                    ..target
                };
                self.probe.probe_store(&target).await
            }
            // The CA cannot be read: every pod reports why, without dialling.
            Err(problem) => StoreObservation {
                pods: target
                    .pods
                    .iter()
                    .map(|pod| PodObservation {
                        name: pod.name.clone(),
                        ready: pod.ready,
                        result: Err(problem.clone()),
                    })
                    .collect(),
            },
        }
    }

    /// Judges the observation and decides whether the status step writes it.
    fn judge(
        &self,
        key: StoreKey,
        store: &SessionStore,
        validated: &ValidatedStore,
        observation: &StoreObservation,
        now: Instant,
    ) -> Observed {
        let (namespace, name) = (validated.namespace.as_str(), validated.name.as_str());
        let live = store.status.as_ref();
        let wall = Time(k8s_openapi::jiff::Timestamp::now());
        let existing = live.map(|s| s.conditions.as_slice()).unwrap_or_default();
        let mut stores = self.stores();
        let Some(state) = stores.get_mut(&key) else {
            // Forgotten while probing (the store was deleted): report nothing.
            return Observed::default();
        };
        let report = state.tracker.assess(observation);
        if let Some(metrics) = &self.metrics {
            metrics.record(namespace, name, observation, &report.verdict);
        }
        let conditions =
            health_conditions(&report.verdict, store.meta().generation, existing, &wall);
        let decision = state.tracker.decide(&report.health, &conditions, now);
        tracing::debug!(
            ?decision,
            problems = report.verdict.problems.len(),
            "health probed"
        );
        let update = (decision == WriteDecision::Write).then_some(HealthUpdate {
            key,
            health: report.health,
            conditions,
            at: now,
        });
        Observed {
            update,
            next_probe_in: Some(self.settings.interval),
            probed: true,
        }
    }
}

fn new_state(uid: &str, interval: Duration, live: Option<&SessionStoreStatus>) -> StoreHealth {
    let mut tracker = HealthTracker::new(interval);
    // After an operator restart the written health counts as written: an unchanged store is
    // not rewritten, a changed one is at once.
    if let Some(status) = live
        && let Some(health) = &status.health
    {
        tracker.seed_from_status(health, &status.conditions);
    }
    StoreHealth {
        uid: uid.into(),
        tracker,
        last_probe: None,
        ready_at_last_probe: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_follows_the_next_probe_and_is_capped_by_the_resync() {
        let resync = Duration::from_secs(300);
        assert_eq!(Observed::default().requeue_after(resync), resync);
        let due = Observed {
            next_probe_in: Some(Duration::from_secs(12)),
            ..Observed::default()
        };
        assert_eq!(due.requeue_after(resync), Duration::from_secs(12));
        let almost = Observed {
            next_probe_in: Some(Duration::from_millis(11_100)),
            ..Observed::default()
        };
        assert_eq!(almost.requeue_after(resync), Duration::from_secs(12));
        let late = Observed {
            next_probe_in: Some(Duration::from_secs(900)),
            ..Observed::default()
        };
        assert_eq!(late.requeue_after(resync), resync);
    }

    #[test]
    fn the_status_view_lays_health_over_the_live_status_only_when_writing() {
        let live = SessionStoreStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "AllReplicasReady".into(),
                message: "1 of 1".into(),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..SessionStoreStatus::default()
        };
        assert_eq!(Observed::default().status_view(Some(&live)), None);
        let condition = |type_: &str| Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: "AllChecksPassed".into(),
            message: "ok".into(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        let observed = Observed {
            update: Some(HealthUpdate {
                key: StoreKey::new("shop", "web"),
                health: HealthStatus {
                    session_keys: Some(3),
                    ..HealthStatus::default()
                },
                conditions: [condition("Healthy"), condition("Degraded")],
                at: Instant::now(),
            }),
            ..Observed::default()
        };
        let view = observed.status_view(Some(&live)).expect("a view");
        assert_eq!(view.health.and_then(|h| h.session_keys), Some(3));
        let types: Vec<_> = view.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Healthy", "Degraded"]);
    }
}
