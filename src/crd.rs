//! The `SessionStore` API (`sessionstore.dev/v1alpha1`): the Rust types the CRD is generated from.
//!
//! Everything a schema can say lives here (enums, ranges, patterns, CEL rules whose messages name the
//! field); what it cannot say is checked again in `validate`. Optional fields stay `None` when the
//! user leaves them out, so the profile defaults are applied in one place (`validate`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Regex for the Kubernetes quantities accepted by the memory and storage fields.
const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// A Redis (or Valkey) for one application's sessions, with its credentials, network policy,
/// availability and health reporting managed by the operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sessionstore.dev",
    version = "v1alpha1",
    kind = "SessionStore",
    plural = "sessionstores",
    shortname = "sstore",
    namespaced,
    status = "SessionStoreStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why the store is (not) Ready","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint.host"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","priority":1,"jsonPath":".status.primary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "((has(self.persistence) && has(self.persistence.mode) ? self.persistence.mode : (self.profile == 'development' ? 'none' : 'snapshot')) == 'none') == ((has(oldSelf.persistence) && has(oldSelf.persistence.mode) ? oldSelf.persistence.mode : (oldSelf.profile == 'development' ? 'none' : 'snapshot')) == 'none')"
).message("spec.persistence.mode (or spec.profile, which sets its default) cannot switch between none and a persistent mode on an existing store: StatefulSet volume claims are immutable; create a new SessionStore and move the sessions"))]
#[x_kube(validation = Rule::new(
    "(has(self.persistence) && has(self.persistence.size) ? self.persistence.size : '1Gi') == (has(oldSelf.persistence) && has(oldSelf.persistence.size) ? oldSelf.persistence.size : '1Gi')"
).message("spec.persistence.size is immutable (including setting or removing it; the default is 1Gi): StatefulSet volume claims cannot change (expand the PVCs directly)"))]
#[x_kube(validation = Rule::new(
    "(has(self.persistence) && has(self.persistence.storageClassName) ? self.persistence.storageClassName : '') == (has(oldSelf.persistence) && has(oldSelf.persistence.storageClassName) ? oldSelf.persistence.storageClassName : '')"
).message("spec.persistence.storageClassName is immutable (including setting or removing it): changing it would orphan the data on the existing volumes"))]
#[x_kube(validation = Rule::new(
    "(has(oldSelf.engine) ? oldSelf.engine : 'redis') != 'valkey' || (has(self.engine) ? self.engine : 'redis') == 'valkey'"
).message("spec.engine cannot change from valkey back to redis: a Redis replica cannot load a Valkey primary's RDB (format 11; Redis 7.0 reads up to 10), so the ordered switch would lose its replicas; create a new SessionStore to go back"))]
#[x_kube(validation = Rule::new(
    "!has(self.tls) || !self.tls.enabled || has(self.tls.secretName) || has(self.tls.issuerRef)"
).message("spec.tls.secretName or spec.tls.issuerRef is required when spec.tls.enabled is true"))]
#[serde(rename_all = "camelCase")]
pub struct SessionStoreSpec {
    /// Fills the defaults: `development` (1 replica, no persistence, small memory) or `production`
    /// (3 replicas with Sentinel, snapshot persistence, PodDisruptionBudget, zone spread).
    #[serde(default)]
    pub profile: Profile,

    /// Who may connect: both selectors form ONE NetworkPolicy peer (pods matching `podSelector` in
    /// namespaces matching `namespaceSelector`; no `namespaceSelector` means this namespace only).
    pub clients: ClientsSpec,

    /// 1 = standalone; 3 or more = primary + replicas + Sentinel. 2 is rejected (no Sentinel majority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 1 || (self >= 3 && self <= 9)").message("spec.replicas must be 1 (standalone) or between 3 and 9 (primary, replicas and a Sentinel majority); 2 is rejected"))]
    pub replicas: Option<i32>,

    /// The server: `redis` (default) or `valkey`. It chooses the default image, the command and
    /// config tables `disabledCommands` and `extraConfig` are checked against, and the binaries
    /// the pods run. Changing it from `redis` to `valkey` on an HA store is an ordered rolling
    /// update that keeps every session; from `valkey` back to `redis` is refused (a Redis replica
    /// cannot load a Valkey primary's RDB).
    #[serde(default)]
    pub engine: Engine,

    /// Redis or Valkey image, matching `engine`; defaults to a pinned release of the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySpec>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsSpec>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceSpec>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionSpec>,

    /// Extra `redis.conf` directives (name -> value). Directives that would undo the hardening
    /// (listening, TLS, ACL, persistence paths, replication, command enabling) are rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub extra_config: BTreeMap<String, String>,

    /// Commands (or `@categories`) denied to the application user on top of the default deny-list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub disabled_commands: Vec<String>,

    /// CPU requests and limits of the Redis container. Memory is set by `spec.memory.limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Replaces the default zone and node spread (replicas > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,

    /// Sentinel timing for stores with 3 or more replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelSpec>,
}

/// The server a store runs. Both speak the same protocol, replication and Sentinel; they differ
/// in licence, version, and command and config tables.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum Engine {
    /// Redis (the default image is Redis 7.2, BSD-3-Clause).
    #[default]
    Redis,
    /// Valkey (the Linux Foundation's BSD-3-Clause fork of Redis 7.2; the default image is 8.0).
    Valkey,
}

impl Engine {
    /// The name as the spec and status write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Valkey => "valkey",
        }
    }

    /// The engine a server names itself as (`status.health.engine`, from `INFO server`).
    pub fn from_server_name(name: &str) -> Option<Engine> {
        [Engine::Redis, Engine::Valkey]
            .into_iter()
            .find(|engine| engine.as_str() == name)
    }

    /// The server binary in the engine's image.
    pub fn server_binary(self) -> &'static str {
        match self {
            Engine::Redis => "redis-server",
            Engine::Valkey => "valkey-server",
        }
    }

    /// The Sentinel binary in the engine's image.
    pub fn sentinel_binary(self) -> &'static str {
        match self {
            Engine::Redis => "redis-sentinel",
            Engine::Valkey => "valkey-sentinel",
        }
    }

    /// The command-line client in the engine's image (probes and the start-up script).
    pub fn cli_binary(self) -> &'static str {
        match self {
            Engine::Redis => "redis-cli",
            Engine::Valkey => "valkey-cli",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The environment a store is for; it only changes defaults.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "camelCase")]
pub enum Profile {
    Development,
    #[default]
    Production,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.allowAllPodsInCluster) && self.allowAllPodsInCluster) || !has(self.namespaceSelector) || (has(self.podSelector.matchLabels) && size(self.podSelector.matchLabels) > 0) || (has(self.podSelector.matchExpressions) && size(self.podSelector.matchExpressions) > 0) || (has(self.namespaceSelector.matchLabels) && size(self.namespaceSelector.matchLabels) > 0) || (has(self.namespaceSelector.matchExpressions) && size(self.namespaceSelector.matchExpressions) > 0)"
).message("spec.clients: an empty podSelector with an empty namespaceSelector admits every pod of the cluster; narrow one of them, or set spec.clients.allowAllPodsInCluster: true if that is what you mean"))]
pub struct ClientsSpec {
    /// Pods allowed to connect (required; `{}` would mean every pod of the selected namespaces).
    pub pod_selector: LabelSelector,
    /// Namespaces those pods may be in; omitted means the SessionStore's own namespace only.
    /// `{}` means every namespace: with an empty `podSelector` too, that is every pod of the
    /// cluster, which is refused unless `allowAllPodsInCluster` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Set to true to let every pod of the cluster connect (empty `podSelector` and
    /// `namespaceSelector`); without it that combination is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_all_pods_in_cluster: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.maxmemory) || !has(self.limit) || quantity(self.maxmemory).isLessThan(quantity(self.limit))"
).message("spec.memory.maxmemory must be less than spec.memory.limit (leave headroom for fork copy-on-write and buffers)"))]
pub struct MemorySpec {
    /// Container memory request and limit (equal), e.g. `1Gi`; at least `32Mi` (Redis itself
    /// needs about 10Mi before the first session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    #[x_kube(validation = Rule::new("quantity(self).compareTo(quantity('32Mi')) >= 0").message("spec.memory.limit is too small to run Redis: it must be at least 32Mi"))]
    pub limit: Option<String>,
    /// Redis `maxmemory`; the default leaves headroom below the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub maxmemory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_policy: Option<EvictionPolicy>,
}

/// The eight Redis `maxmemory-policy` values.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash,
)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    Noeviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    #[default]
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl EvictionPolicy {
    /// The value Redis expects in `maxmemory-policy`.
    pub fn as_redis(self) -> &'static str {
        match self {
            EvictionPolicy::Noeviction => "noeviction",
            EvictionPolicy::AllkeysLru => "allkeys-lru",
            EvictionPolicy::AllkeysLfu => "allkeys-lfu",
            EvictionPolicy::AllkeysRandom => "allkeys-random",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::VolatileLfu => "volatile-lfu",
            EvictionPolicy::VolatileRandom => "volatile-random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
        }
    }

    /// `volatile-*` policies only evict keys with a TTL: keys without one fill memory for good.
    pub fn evicts_only_keys_with_ttl(self) -> bool {
        matches!(
            self,
            EvictionPolicy::VolatileLru
                | EvictionPolicy::VolatileLfu
                | EvictionPolicy::VolatileRandom
                | EvictionPolicy::VolatileTtl
        )
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionsSpec {
    /// The application user may only touch keys with this prefix (default `session:`).
    /// Letters, digits and `: _ . / - @ = + { }` only: no glob characters, spaces or quotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9:_./@=+{}-]+$")
    )]
    pub key_prefix: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// `none`, `snapshot` (RDB) or `appendOnly` (AOF + RDB preamble).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PersistenceMode>,
    /// Volume size per pod; immutable (StatefulSet volume claims cannot change). Must hold the
    /// data: at least `maxmemory` for `snapshot`, twice `maxmemory` for `appendOnly` (a rewrite
    /// writes the new file beside the old one); `maxmemory` defaults to 70% of `memory.limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub size: Option<String>,
    /// Storage class of the volumes; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PersistenceMode {
    None,
    Snapshot,
    AppendOnly,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Use this Secret's `password` key as the application password instead of generating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub existing_secret: Option<String>,
    /// Change this string to rotate the application password with no downtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rotation: Option<String>,
    /// How long the previous password keeps working after a rotation (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub rotation_grace_period_seconds: Option<i64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.secretName) && has(self.issuerRef))").message("spec.tls: set either secretName or issuerRef, not both"))]
pub struct TlsSpec {
    #[serde(default)]
    pub enabled: bool,
    /// A `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// A cert-manager issuer; the operator creates the Certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// `Issuer` (default) or `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Default `cert-manager.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Close idle clients after this many seconds (0 = never; default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub timeout_seconds: Option<i32>,
    /// TCP keepalive interval (0 = off; default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 7200))]
    pub tcp_keepalive_seconds: Option<i32>,
    /// Maximum simultaneous clients (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_clients: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Run a redis_exporter sidecar exposing Prometheus metrics on port 9121.
    #[serde(default)]
    pub exporter: bool,
    /// Create a prometheus-operator ServiceMonitor for the exporter.
    #[serde(default)]
    pub service_monitor: bool,
    /// Exporter image; defaults to a pinned redis_exporter release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter_image: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SentinelSpec {
    /// How long a primary must be unreachable before Sentinel calls it down (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 60000))]
    pub down_after_milliseconds: Option<i64>,
    /// Sentinel failover timeout (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5000, max = 600000))]
    pub failover_timeout_milliseconds: Option<i64>,
}

/// What the operator observed, written only when it changed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionStoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// Name of the Secret applications mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Pod currently serving as primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStatus>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Pending,
    Provisioning,
    Ready,
    Degraded,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Pending,
        Phase::Provisioning,
        Phase::Ready,
        Phase::Degraded,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
    pub tls: bool,
}

/// Session-aware figures read from Redis INFO by the operator's own ACL user.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_clients: Option<i64>,
    /// Keys in the keyspace (the application user can only write prefixed keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_keys: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_without_ttl: Option<i64>,
    /// keyspace_hits / (hits + misses), 0..1, as a decimal string to keep status comparisons exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_keys: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_keys: Option<i64>,
    /// `redis_version` as the primary reports it. Valkey reports the Redis version it is
    /// compatible with there (7.2.4), not its own: see `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_version: Option<String>,
    /// The server the primary runs, as it names itself (`server_name` in `INFO server`):
    /// `valkey`, or `redis` for a server that names none (Redis does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The primary's own version: `valkey_version` on Valkey (8.0.1), `redis_version` on Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodHealth>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodHealth {
    pub name: String,
    /// `primary`, `replica`, or `unreachable`.
    pub role: String,
    /// For replicas: whether the link to the primary is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_link_up: Option<bool>,
}

/// Progress of a password rotation (no password values, ever).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthStatus {
    /// The `spec.auth.rotation` value the current password belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
    /// `Stable`, `Rotating` (both passwords valid) or `Retiring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_password_expires_at: Option<String>,
}
