//! Step 4 of the pipeline: read each store's Redis and report its health, without flooding the
//! API server or Redis. `probe` does the network part; `info` and `conditions` are pure; this
//! module decides WHEN `status.health` is written (`HealthTracker`) and exports the same figures
//! as Prometheus gauges (`HealthMetrics`).
//!
//! One health check of a store, as the controller runs it:
//!
//! ```ignore
//! let observation = probe.probe_store(&target).await;            // never fails
//! let report = tracker.assess(&observation);                     // figures + verdict
//! metrics.record(&ns, &name, &observation, &report.verdict);
//! let conditions = health_conditions(&report.verdict, generation, &status.conditions, &now);
//! if tracker.decide(&report.health, &conditions, Instant::now()) == WriteDecision::Write {
//!     /* patch status.health + conditions (+ phase) */
//!     tracker.written(&report.health, &conditions, Instant::now());
//! }
//! ```

pub mod conditions;
pub mod info;
pub mod probe;
pub mod step;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::crd::HealthStatus;
use crate::vocabulary::ConditionType;

pub use conditions::{Problem, Verdict, assess, health_conditions, upsert_conditions};
pub use info::{PodObservation, PodProblem, RedisInfo, Role, StoreObservation};
pub use probe::{PodTarget, ProbeSettings, RedisProbe, StoreTarget, TlsTarget};

/// Default `--health-interval-seconds`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// Used memory must move by at least this share of `maxmemory` (and at least
/// `MIN_MEMORY_STEP_BYTES`) to count as a change: every probe's own connection moves it a little.
pub const MEMORY_STEP_RATIO: f64 = 0.01;
pub const MIN_MEMORY_STEP_BYTES: i64 = 256 * 1024;

/// One probe's outcome for the controller: what goes into `status.health`, and what it means.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    pub health: HealthStatus,
    pub verdict: Verdict,
}

/// Whether to write `status.health` now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteDecision {
    /// Something that matters changed and the interval has passed (or nothing was written yet).
    Write,
    /// Nothing that matters changed since the last write: send nothing.
    Unchanged,
    /// A change is waiting; the interval allows the next write after this long.
    TooSoon(Duration),
}

/// The part of a report compared to decide whether it "changed".
///
/// Compared: session keys, keys without TTL, max memory, the server (engine, its own version and
/// `redis_version`: a Valkey upgrade keeps the latter), every pod's role and link, each
/// condition's type/status/reason, and used memory by steps (see `MEMORY_STEP_RATIO`).
/// Ride along (written when something else changes, never a reason to write): connected clients,
/// hit rate, evicted and expired keys, condition messages. These move on every probe of a busy
/// store; evictions that matter surface through the `Evicting` condition. An idle store therefore
/// gets exactly one write, and a busy one at most one per interval.
#[derive(Clone, Debug, PartialEq)]
struct Compared {
    session_keys: Option<i64>,
    keys_without_ttl: Option<i64>,
    max_memory_bytes: Option<i64>,
    redis_version: Option<String>,
    engine: Option<String>,
    version: Option<String>,
    pods: Vec<crate::crd::PodHealth>,
    conditions: Vec<(String, String, String)>,
}

impl Compared {
    fn of(health: &HealthStatus, conditions: &[Condition]) -> Self {
        let mut conditions: Vec<_> = conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect();
        conditions.sort();
        Compared {
            session_keys: health.session_keys,
            keys_without_ttl: health.keys_without_ttl,
            max_memory_bytes: health.max_memory_bytes,
            redis_version: health.redis_version.clone(),
            engine: health.engine.clone(),
            version: health.version.clone(),
            pods: health.pods.clone(),
            conditions,
        }
    }
}

fn memory_moved(written: &HealthStatus, now: &HealthStatus) -> bool {
    match (written.used_memory_bytes, now.used_memory_bytes) {
        (Some(a), Some(b)) => {
            let max = now.max_memory_bytes.unwrap_or(0);
            let step = ((max as f64 * MEMORY_STEP_RATIO) as i64).max(MIN_MEMORY_STEP_BYTES);
            (a - b).abs() >= step
        }
        (a, b) => a.is_some() != b.is_some(),
    }
}

/// Per-store memory of the health step: the last written report (to skip unchanged writes), its
/// time (to write at most once per interval), and the previous probe's eviction counter.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    interval: Duration,
    last_write: Option<(Option<Instant>, HealthStatus, Compared)>,
    previous_evicted_keys: Option<u64>,
}

impl HealthTracker {
    pub fn new(interval: Duration) -> Self {
        HealthTracker {
            interval,
            last_write: None,
            previous_evicted_keys: None,
        }
    }

    /// After an operator restart: treats the status already on the object as written (at no
    /// particular time), so an unchanged store is not rewritten and a changed one is at once.
    pub fn seed_from_status(&mut self, health: &HealthStatus, conditions: &[Condition]) {
        let health_conditions: Vec<Condition> = conditions
            .iter()
            .filter(|c| c.type_ == ConditionType::Healthy || c.type_ == ConditionType::Degraded)
            .cloned()
            .collect();
        self.last_write = Some((
            None,
            health.clone(),
            Compared::of(health, &health_conditions),
        ));
    }

    /// Judges a probe against the previous one (for `Evicting`) and remembers it for next time.
    pub fn assess(&mut self, observation: &StoreObservation) -> HealthReport {
        let verdict = conditions::assess(observation, self.previous_evicted_keys);
        let current = observation
            .primary()
            .and_then(|(_, info)| info.evicted_keys);
        // Keep the last known counter while no primary answers, so evictions are not lost.
        if current.is_some() {
            self.previous_evicted_keys = current;
        }
        HealthReport {
            health: observation.health_status(),
            verdict,
        }
    }

    /// Whether `health` and the health `conditions` should be written at `now`. Pure: call
    /// `written` once the status patch succeeded.
    pub fn decide(
        &self,
        health: &HealthStatus,
        conditions: &[Condition],
        now: Instant,
    ) -> WriteDecision {
        let Some((at, written, compared)) = &self.last_write else {
            return WriteDecision::Write;
        };
        let changed =
            *compared != Compared::of(health, conditions) || memory_moved(written, health);
        if !changed {
            return WriteDecision::Unchanged;
        }
        match at {
            Some(at) if now.saturating_duration_since(*at) < self.interval => {
                WriteDecision::TooSoon(self.interval - now.saturating_duration_since(*at))
            }
            _ => WriteDecision::Write,
        }
    }

    /// Records a successful write.
    pub fn written(&mut self, health: &HealthStatus, conditions: &[Condition], now: Instant) {
        self.last_write = Some((Some(now), health.clone(), Compared::of(health, conditions)));
    }
}

/// The `namespace` and `name` labels of every health series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct StoreLabels {
    pub namespace: String,
    pub name: String,
}

type CounterFamily = Family<StoreLabels, Counter>;
type GaugeFamily = Family<StoreLabels, Gauge>;

/// The health figures as Prometheus series (names in RUN_CONTRACT.md). Counters mirror Redis's
/// own counters by adding the increase seen between probes, so they stay monotonic across Redis
/// restarts (a smaller Redis counter is added whole, as Prometheus does for resets).
#[derive(Debug, Default)]
pub struct HealthMetrics {
    used_memory_bytes: GaugeFamily,
    max_memory_bytes: GaugeFamily,
    /// Includes the probe's own connection while it reads INFO.
    connected_clients: GaugeFamily,
    session_keys: GaugeFamily,
    keys_without_ttl: GaugeFamily,
    hit_ratio: Family<StoreLabels, Gauge<f64, AtomicU64>>,
    evicted_keys: CounterFamily,
    expired_keys: CounterFamily,
    rejected_connections: CounterFamily,
    replica_link_up: GaugeFamily,
    store_degraded: GaugeFamily,
    /// Last raw Redis counters per store: evicted, expired, rejected.
    last_counters: Mutex<HashMap<StoreLabels, [Option<u64>; 3]>>,
}

impl HealthMetrics {
    /// Creates the series and registers them. Pass a registry WITHOUT a prefix: the names below
    /// are complete (`sessionstore_...`; counters get `_total` from prometheus-client).
    pub fn register(registry: &mut Registry) -> Self {
        let m = HealthMetrics::default();
        registry.register(
            "sessionstore_used_memory_bytes",
            "Redis used_memory of the store's primary",
            m.used_memory_bytes.clone(),
        );
        registry.register(
            "sessionstore_max_memory_bytes",
            "Redis maxmemory of the store's primary (0: no limit)",
            m.max_memory_bytes.clone(),
        );
        registry.register(
            "sessionstore_connected_clients",
            "Clients connected to the store's primary",
            m.connected_clients.clone(),
        );
        registry.register(
            "sessionstore_session_keys",
            "Keys in the store's primary (INFO keyspace)",
            m.session_keys.clone(),
        );
        registry.register(
            "sessionstore_keys_without_ttl",
            "Keys without a TTL in the store's primary",
            m.keys_without_ttl.clone(),
        );
        registry.register(
            "sessionstore_hit_ratio",
            "keyspace_hits / (hits + misses) of the store's primary",
            m.hit_ratio.clone(),
        );
        registry.register(
            "sessionstore_evicted_keys",
            "Keys evicted by the store's primary",
            m.evicted_keys.clone(),
        );
        registry.register(
            "sessionstore_expired_keys",
            "Keys expired by the store's primary",
            m.expired_keys.clone(),
        );
        registry.register(
            "sessionstore_rejected_connections",
            "Connections the store's primary rejected (maxclients)",
            m.rejected_connections.clone(),
        );
        registry.register(
            "sessionstore_replica_link_up",
            "1 when every replica's link to the primary is up",
            m.replica_link_up.clone(),
        );
        registry.register(
            "sessionstore_store_degraded",
            "1 when the store is not healthy",
            m.store_degraded.clone(),
        );
        m
    }

    /// Sets every series of one store from a probe. Figures that were not observed (no primary
    /// answered) are removed rather than left at stale values.
    pub fn record(
        &self,
        namespace: &str,
        name: &str,
        observation: &StoreObservation,
        verdict: &Verdict,
    ) {
        let labels = StoreLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        let primary = observation.primary().map(|(_, info)| info);
        let set = |family: &GaugeFamily, value: Option<u64>| match value {
            Some(v) => {
                family
                    .get_or_create(&labels)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            }
            None => {
                family.remove(&labels);
            }
        };
        set(&self.used_memory_bytes, primary.and_then(|i| i.used_memory));
        set(&self.max_memory_bytes, primary.and_then(|i| i.maxmemory));
        set(
            &self.connected_clients,
            primary.and_then(|i| i.connected_clients),
        );
        set(&self.session_keys, primary.map(|i| i.keys));
        set(
            &self.keys_without_ttl,
            primary.map(|i| i.keys_without_ttl()),
        );
        match primary.and_then(|i| i.hit_ratio()) {
            Some(ratio) => {
                self.hit_ratio.get_or_create(&labels).set(ratio);
            }
            None => {
                self.hit_ratio.remove(&labels);
            }
        }
        let replicas: Vec<Option<bool>> = observation
            .pods
            .iter()
            .filter_map(|p| match &p.result {
                Ok(info) if info.role == Some(Role::Replica) => Some(info.master_link_up),
                _ => None,
            })
            .collect();
        set(
            &self.replica_link_up,
            (!replicas.is_empty()).then(|| u64::from(replicas.iter().all(|up| *up == Some(true)))),
        );
        self.store_degraded
            .get_or_create(&labels)
            .set(i64::from(!verdict.problems.is_empty()));

        if let Some(info) = primary {
            let current = [
                info.evicted_keys,
                info.expired_keys,
                info.rejected_connections,
            ];
            let mut last = self
                .last_counters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let previous = last.entry(labels.clone()).or_insert([None; 3]);
            let families = [
                &self.evicted_keys,
                &self.expired_keys,
                &self.rejected_connections,
            ];
            for ((family, now), before) in
                families.into_iter().zip(current).zip(previous.iter_mut())
            {
                if let Some(now) = now {
                    let increase = match *before {
                        Some(b) if now >= b => now - b,
                        _ => now,
                    };
                    family.get_or_create(&labels).inc_by(increase);
                    *before = Some(now);
                }
            }
        }
    }

    /// Drops every series of a deleted store.
    pub fn remove(&self, namespace: &str, name: &str) {
        let labels = StoreLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        for family in [
            &self.used_memory_bytes,
            &self.max_memory_bytes,
            &self.connected_clients,
            &self.session_keys,
            &self.keys_without_ttl,
            &self.replica_link_up,
            &self.store_degraded,
        ] {
            family.remove(&labels);
        }
        self.hit_ratio.remove(&labels);
        for family in [
            &self.evicted_keys,
            &self.expired_keys,
            &self.rejected_connections,
        ] {
            family.remove(&labels);
        }
        self.last_counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PodHealth;
    use crate::vocabulary::Reason;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn primary(used: u64, keys: u64, expired: u64, clients: u64, evicted: u64) -> RedisInfo {
        RedisInfo {
            redis_version: Some("7.0.15".into()),
            role: Some(Role::Primary),
            used_memory: Some(used),
            maxmemory: Some(100 << 20),
            maxmemory_policy: Some("allkeys-lru".into()),
            connected_clients: Some(clients),
            keyspace_hits: Some(keys * 3),
            keyspace_misses: Some(1),
            evicted_keys: Some(evicted),
            expired_keys: Some(expired),
            rejected_connections: Some(0),
            keys,
            keys_with_ttl: keys,
            ..RedisInfo::default()
        }
    }

    fn observe(info: RedisInfo) -> StoreObservation {
        StoreObservation {
            pods: vec![PodObservation {
                name: "s-0".into(),
                ready: true,
                result: Ok(info),
            }],
        }
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    /// Runs one check the way the controller does; returns whether it wrote.
    fn check(
        tracker: &mut HealthTracker,
        observation: &StoreObservation,
        written: &mut Vec<Condition>,
        now: Instant,
        wall: i64,
    ) -> WriteDecision {
        let report = tracker.assess(observation);
        let conditions = health_conditions(&report.verdict, Some(1), written, &at(wall));
        let decision = tracker.decide(&report.health, &conditions, now);
        if decision == WriteDecision::Write {
            tracker.written(&report.health, &conditions, now);
            *written = conditions.to_vec();
        }
        decision
    }

    #[test]
    fn an_idle_store_is_written_once() {
        let mut tracker = HealthTracker::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let mut conditions = Vec::new();
        let mut writes = 0;
        for i in 0..10u64 {
            // Idle: only the probe's own connection moves used memory by a few KiB.
            let info = primary(5_000_000 + (i % 3) * 4096, 42, 7, 1, 0);
            if check(
                &mut tracker,
                &observe(info),
                &mut conditions,
                t0 + Duration::from_secs(30 * i),
                30 * i as i64,
            ) == WriteDecision::Write
            {
                writes += 1;
            }
        }
        assert_eq!(writes, 1);
    }

    #[test]
    fn a_change_is_written_at_most_once_per_interval() {
        let mut tracker = HealthTracker::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let mut conditions = Vec::new();
        assert_eq!(
            check(
                &mut tracker,
                &observe(primary(1 << 20, 1, 0, 1, 0)),
                &mut conditions,
                t0,
                0
            ),
            WriteDecision::Write
        );
        // A session was created 10 s later: too soon, 20 s to wait.
        assert_eq!(
            check(
                &mut tracker,
                &observe(primary(1 << 20, 2, 0, 1, 0)),
                &mut conditions,
                t0 + Duration::from_secs(10),
                10
            ),
            WriteDecision::TooSoon(Duration::from_secs(20))
        );
        assert_eq!(
            check(
                &mut tracker,
                &observe(primary(1 << 20, 2, 0, 1, 0)),
                &mut conditions,
                t0 + Duration::from_secs(30),
                30
            ),
            WriteDecision::Write
        );
        // Counters and clients alone ride along.
        assert_eq!(
            check(
                &mut tracker,
                &observe(primary(1 << 20, 2, 500, 40, 0)),
                &mut conditions,
                t0 + Duration::from_secs(90),
                90
            ),
            WriteDecision::Unchanged
        );
        // Memory moved by more than 1 % of maxmemory: written.
        assert_eq!(
            check(
                &mut tracker,
                &observe(primary(3 << 20, 2, 500, 40, 0)),
                &mut conditions,
                t0 + Duration::from_secs(120),
                120
            ),
            WriteDecision::Write
        );
    }

    #[test]
    fn evictions_flip_a_condition_and_are_written() {
        let mut tracker = HealthTracker::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let mut conditions = Vec::new();
        check(
            &mut tracker,
            &observe(primary(1 << 20, 5, 0, 1, 10)),
            &mut conditions,
            t0,
            0,
        );
        let report = tracker.assess(&observe(primary(1 << 20, 5, 0, 1, 12)));
        assert_eq!(report.verdict.problems[0].reason, Reason::Evicting);
        let conditions_now = health_conditions(&report.verdict, Some(1), &conditions, &at(60));
        assert_eq!(
            tracker.decide(
                &report.health,
                &conditions_now,
                t0 + Duration::from_secs(60)
            ),
            WriteDecision::Write
        );
        // Next probe without new evictions: the condition clears.
        let report = tracker.assess(&observe(primary(1 << 20, 5, 0, 1, 12)));
        assert!(report.verdict.problems.is_empty());
    }

    #[test]
    fn seeded_tracker_does_not_rewrite_an_unchanged_store() {
        let observation = observe(primary(1 << 20, 5, 0, 1, 0));
        let mut first = HealthTracker::new(Duration::from_secs(30));
        let report = first.assess(&observation);
        let conditions = health_conditions(&report.verdict, Some(1), &[], &at(0));
        let mut restarted = HealthTracker::new(Duration::from_secs(30));
        restarted.seed_from_status(&report.health, &conditions);
        let report = restarted.assess(&observation);
        let again = health_conditions(&report.verdict, Some(1), &conditions, &at(100));
        assert_eq!(
            restarted.decide(&report.health, &again, Instant::now()),
            WriteDecision::Unchanged
        );
        let changed = HealthStatus {
            session_keys: Some(6),
            ..report.health.clone()
        };
        assert_eq!(
            restarted.decide(&changed, &again, Instant::now()),
            WriteDecision::Write
        );
    }

    #[test]
    fn an_engine_upgrade_is_written_though_redis_version_stays() {
        let valkey = |version: &str| RedisInfo {
            redis_version: Some("7.2.4".into()),
            engine: Some("valkey".into()),
            version: Some(version.into()),
            ..primary(1 << 20, 5, 0, 1, 0)
        };
        let mut tracker = HealthTracker::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let mut conditions = Vec::new();
        check(
            &mut tracker,
            &observe(valkey("8.0.1")),
            &mut conditions,
            t0,
            0,
        );
        assert_eq!(
            check(
                &mut tracker,
                &observe(valkey("8.0.1")),
                &mut conditions,
                t0 + Duration::from_secs(60),
                60
            ),
            WriteDecision::Unchanged
        );
        assert_eq!(
            check(
                &mut tracker,
                &observe(valkey("8.0.2")),
                &mut conditions,
                t0 + Duration::from_secs(120),
                120
            ),
            WriteDecision::Write,
            "the rolled pods run another Valkey; redis_version still says 7.2.4"
        );
    }

    #[test]
    fn pod_role_changes_count() {
        let tracker = {
            let mut t = HealthTracker::new(Duration::from_secs(30));
            let health = HealthStatus {
                pods: vec![PodHealth {
                    name: "s-1".into(),
                    role: "replica".into(),
                    replica_link_up: Some(true),
                }],
                ..HealthStatus::default()
            };
            t.written(&health, &[], Instant::now() - Duration::from_secs(60));
            t
        };
        let down = HealthStatus {
            pods: vec![PodHealth {
                name: "s-1".into(),
                role: "replica".into(),
                replica_link_up: Some(false),
            }],
            ..HealthStatus::default()
        };
        assert_eq!(
            tracker.decide(&down, &[], Instant::now()),
            WriteDecision::Write
        );
    }

    #[test]
    fn metrics_have_the_contract_names_and_labels() {
        let mut registry = Registry::default();
        let metrics = HealthMetrics::register(&mut registry);
        let mut tracker = HealthTracker::new(DEFAULT_HEALTH_INTERVAL);
        let first = observe(primary(1 << 20, 5, 3, 2, 10));
        metrics.record("shop", "checkout", &first, &tracker.assess(&first).verdict);
        let second = observe(primary(1 << 20, 5, 4, 2, 12));
        metrics.record(
            "shop",
            "checkout",
            &second,
            &tracker.assess(&second).verdict,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            r#"sessionstore_used_memory_bytes{namespace="shop",name="checkout"} 1048576"#,
            r#"sessionstore_max_memory_bytes{namespace="shop",name="checkout"} 104857600"#,
            r#"sessionstore_connected_clients{namespace="shop",name="checkout"} 2"#,
            r#"sessionstore_session_keys{namespace="shop",name="checkout"} 5"#,
            r#"sessionstore_keys_without_ttl{namespace="shop",name="checkout"} 0"#,
            r#"sessionstore_hit_ratio{namespace="shop",name="checkout"} 0.9375"#,
            r#"sessionstore_evicted_keys_total{namespace="shop",name="checkout"} 12"#,
            r#"sessionstore_expired_keys_total{namespace="shop",name="checkout"} 4"#,
            r#"sessionstore_rejected_connections_total{namespace="shop",name="checkout"} 0"#,
            r#"sessionstore_store_degraded{namespace="shop",name="checkout"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(
            !text.contains("sessionstore_replica_link_up{"),
            "standalone has no replica series"
        );
        metrics.remove("shop", "checkout");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(!text.contains(r#"name="checkout""#), "{text}");
    }
}
