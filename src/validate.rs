//! Step 1 of the pipeline: a `SessionStore` spec becomes a `ValidatedStore` with every profile
//! default applied, or a `ValidationError` naming the field. No client, no I/O.
//!
//! The CRD schema rejects most bad input at admission; this repeats those checks (the schema can be
//! bypassed, e.g. by `render`) and adds what a schema cannot express: hardening-relevant
//! `extraConfig` keys, injection in free text, cross-field limits against profile defaults.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{Engine, EvictionPolicy, PersistenceMode, Profile, SessionStore};
use crate::quantity::parse_bytes;
use crate::redis_commands::CommandTable;
use crate::redis_config::{self, ConfigTable};
use crate::settings::DefaultImages;

/// Default application key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "session:";
/// Port Redis listens on (plaintext or TLS; never both).
pub const REDIS_PORT: i32 = 6379;
/// Port Sentinel listens on.
pub const SENTINEL_PORT: i32 = 26379;
/// Smallest container memory limit that leaves Redis room to run.
const MIN_MEMORY_LIMIT_BYTES: u64 = 32 << 20;
/// Default grace period during which a rotated-out password still works.
pub const DEFAULT_ROTATION_GRACE_SECONDS: i64 = 600;

/// Why a group of `extraConfig` directives is refused, as the user reads it.
const WEAKENS_HARDENING: &str = "this directive is managed by the operator: it would weaken the hardening (listening, TLS, ACL users, files or the command surface)";
const STEERS_REPLICATION: &str = "this directive is managed by the operator: the operator and Sentinel steer replication and failover with it (replica priority, announced addresses, the replica's primary), and a value set here would silently break failover";
const ONE_DATABASE: &str = "sessions live in database 0, the only one the application user and the operator's health figures use; more databases only cost memory (a large value makes Redis allocate them all at start-up)";
const SHUTDOWN_SAVES: &str = "the operator relies on Redis's default shutdown, which saves the data before the pod stops (with persistence) and waits for replicas to catch up";
const NEEDS_PRIVILEGES: &str = "needs privileges the hardened container does not have";
const NEEDS_BUNDLED_JEMALLOC: &str = "Redis builds without Redis's own jemalloc (Debian's redis-server, for one) refuse to start with active defragmentation enabled";
const NOT_IN_VALKEY: &str = "Valkey 8.0 does not know this directive and would not start, and a Redis store may move to spec.engine: valkey";
const HIDES_USER_DATA: &str = "this directive is managed by the operator: Valkey's default (yes) keeps session keys, values and command arguments out of its log (the arguments and keys a crash report or a failed assertion prints), which anyone who reads the pod's logs sees; no would write them there";
const DUAL_CHANNEL_SYNC: &str = "Valkey 8.0's dual-channel full sync sends SYNC on its second connection, which the operator's least-privilege replication user (PSYNC, REPLCONF and PING only) is refused: replicas would never finish a full sync (checked on Valkey 8.0.1)";
const LOG_NOTHING: &str = "the server would log nothing, not even why it stops: the operator quotes a failing pod's last log lines in the Ready condition";

/// `extraConfig` directives that would undo the hardening, fight the operator or break a
/// documented guarantee, with the reason, for both engines (Valkey 8.0 knows every directive of
/// Redis 7.0 but `aof-disable-auto-gc`, under the same name). Prefixes end in `-`.
const FORBIDDEN_EXTRA_CONFIG: &[(&str, &str)] = &[
    // listening and transport
    ("bind", WEAKENS_HARDENING),
    ("bind-source-addr", WEAKENS_HARDENING),
    ("port", WEAKENS_HARDENING),
    ("tls-", WEAKENS_HARDENING),
    ("unixsocket", WEAKENS_HARDENING),
    ("unixsocketperm", WEAKENS_HARDENING),
    ("unixsocketgroup", WEAKENS_HARDENING),
    ("protected-mode", WEAKENS_HARDENING),
    // authentication and command surface
    ("aclfile", WEAKENS_HARDENING),
    ("acl-pubsub-default", WEAKENS_HARDENING),
    ("requirepass", WEAKENS_HARDENING),
    ("masterauth", WEAKENS_HARDENING),
    ("masteruser", WEAKENS_HARDENING),
    // Valkey's aliases of masterauth / masteruser
    ("primaryauth", WEAKENS_HARDENING),
    ("primaryuser", WEAKENS_HARDENING),
    ("user", WEAKENS_HARDENING),
    ("rename-command", WEAKENS_HARDENING),
    ("enable-protected-configs", WEAKENS_HARDENING),
    ("enable-debug-command", WEAKENS_HARDENING),
    ("enable-module-command", WEAKENS_HARDENING),
    ("loadmodule", WEAKENS_HARDENING),
    ("include", WEAKENS_HARDENING),
    // files and process
    ("dir", WEAKENS_HARDENING),
    ("dbfilename", WEAKENS_HARDENING),
    ("appendfilename", WEAKENS_HARDENING),
    ("appenddirname", WEAKENS_HARDENING),
    ("logfile", WEAKENS_HARDENING),
    ("pidfile", WEAKENS_HARDENING),
    ("daemonize", WEAKENS_HARDENING),
    ("supervised", WEAKENS_HARDENING),
    ("syslog-", WEAKENS_HARDENING),
    // replication and failover (managed by the operator and Sentinel)
    ("replicaof", STEERS_REPLICATION),
    ("slaveof", STEERS_REPLICATION),
    ("replica-priority", STEERS_REPLICATION),
    ("slave-priority", STEERS_REPLICATION),
    ("replica-read-only", STEERS_REPLICATION),
    ("slave-read-only", STEERS_REPLICATION),
    ("replica-announce-", STEERS_REPLICATION),
    ("slave-announce-", STEERS_REPLICATION),
    ("replica-announced", STEERS_REPLICATION),
    ("min-replicas-", STEERS_REPLICATION),
    ("min-slaves-", STEERS_REPLICATION),
    ("cluster-", STEERS_REPLICATION),
    ("sentinel", STEERS_REPLICATION),
    // guarantees
    ("databases", ONE_DATABASE),
    ("shutdown-on-sigterm", SHUTDOWN_SAVES),
    ("shutdown-on-sigint", SHUTDOWN_SAVES),
    ("socket-mark-id", NEEDS_PRIVILEGES),
    ("aof-disable-auto-gc", NOT_IN_VALKEY),
];

/// As [`FORBIDDEN_EXTRA_CONFIG`], for Redis stores only: Valkey 8.0.1, built with its own
/// jemalloc, starts with `activedefrag yes` (checked).
const FORBIDDEN_FOR_REDIS: &[(&str, &str)] = &[("activedefrag", NEEDS_BUNDLED_JEMALLOC)];

/// As [`FORBIDDEN_EXTRA_CONFIG`], for Valkey stores only: directives Valkey 8.0 added (Redis 7.0
/// does not know them, and says so) that would undo a guarantee. Valkey's other additions are
/// refused by the common list (`primaryauth`, `primaryuser`, `unixsocketgroup`, `cluster-*`) or
/// harmless (`availability-zone`, `extended-redis-compatibility`, `set-max-listpack-*`, the
/// `*-cpulist` spellings, I/O thread and connection-rate tuning); `locale-collate` is refused
/// as a directive whose value only Valkey can check.
const FORBIDDEN_FOR_VALKEY: &[(&str, &str)] = &[
    ("hide-user-data-from-log", HIDES_USER_DATA),
    ("dual-channel-replication-enabled", DUAL_CHANNEL_SYNC),
];

/// `extraConfig` values refused although the engine's table takes them: (directive, value, why).
const FORBIDDEN_VALUES: &[(&str, &str, &str)] = &[
    // Valkey 8.0's level below `warning`.
    ("loglevel", "nothing", LOG_NOTHING),
];

/// `extraConfig` directives that have their own spec field.
const SPEC_FIELD_FOR: &[(&str, &str)] = &[
    ("maxmemory", "spec.memory.maxmemory"),
    ("maxmemory-policy", "spec.memory.evictionPolicy"),
    ("maxclients", "spec.connection.maxClients"),
    ("timeout", "spec.connection.timeoutSeconds"),
    ("tcp-keepalive", "spec.connection.tcpKeepaliveSeconds"),
    ("save", "spec.persistence.mode"),
    ("appendonly", "spec.persistence.mode"),
];

/// Where a spec field is wrong and why, for conditions, Events and `render`'s exit message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// JSON path of the field, e.g. `spec.extraConfig.bind`.
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        message: message.into(),
    }
}

/// A SessionStore with every default resolved: what `build` turns into children.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedStore {
    pub name: String,
    pub namespace: String,
    pub generation: Option<i64>,
    /// Controller ownerReference every child carries.
    pub owner_reference: OwnerReference,
    pub profile: Profile,
    pub clients: Clients,
    pub replicas: i32,
    /// The server the pods run (`spec.engine`).
    pub engine: Engine,
    pub image: String,
    pub memory: Memory,
    pub key_prefix: String,
    pub persistence: Persistence,
    pub auth: Auth,
    pub tls: Option<Tls>,
    pub connection: Connection,
    /// Lower-cased `extraConfig`, sorted by key.
    pub extra_config: BTreeMap<String, String>,
    /// Lower-cased, de-duplicated `disabledCommands`, in the user's order.
    pub disabled_commands: Vec<String>,
    pub scheduling: Scheduling,
    pub monitoring: Monitoring,
    pub sentinel: Sentinel,
}

impl ValidatedStore {
    /// Whether this store runs primary + replicas + Sentinel.
    pub fn is_highly_available(&self) -> bool {
        self.replicas >= 3
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Clients {
    pub pod_selector: LabelSelector,
    /// `None`: the store's own namespace only.
    pub namespace_selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    /// Container memory request and limit, as the user (or profile) wrote it.
    pub limit: String,
    pub limit_bytes: u64,
    pub maxmemory_bytes: u64,
    pub eviction_policy: EvictionPolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Persistence {
    pub mode: PersistenceMode,
    pub size: String,
    pub storage_class_name: Option<String>,
}

impl Persistence {
    /// Whether pods get a PersistentVolumeClaim (otherwise an emptyDir).
    pub fn uses_volume(&self) -> bool {
        self.mode != PersistenceMode::None
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Auth {
    pub existing_secret: Option<String>,
    pub rotation: Option<String>,
    pub rotation_grace_period_seconds: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TlsSource {
    Secret(String),
    Issuer {
        name: String,
        kind: String,
        group: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tls {
    pub source: TlsSource,
}

impl Tls {
    /// The Secret the pods mount: the user's, or the one cert-manager writes for our Certificate.
    pub fn secret_name(&self, store_name: &str) -> String {
        match &self.source {
            TlsSource::Secret(name) => name.clone(),
            TlsSource::Issuer { .. } => format!("{store_name}-tls"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub timeout_seconds: i32,
    pub tcp_keepalive_seconds: i32,
    pub max_clients: i32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scheduling {
    pub resources: Option<ResourceRequirements>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    pub affinity: Option<Affinity>,
    /// `None`: the builders add the default zone and node spread when replicas > 1.
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    pub priority_class_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Monitoring {
    pub exporter: bool,
    pub service_monitor: bool,
    pub exporter_image: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sentinel {
    pub down_after_milliseconds: i64,
    pub failover_timeout_milliseconds: i64,
}

/// Validates a SessionStore and applies its profile's defaults, with the built-in default images.
pub fn validate(store: &SessionStore) -> Result<ValidatedStore, ValidationError> {
    validate_with(store, &DefaultImages::default())
}

/// As [`validate`], with the operator's default images (`--redis-image`, `--exporter-image`) for a
/// spec that names none.
pub fn validate_with(
    store: &SessionStore,
    images: &DefaultImages,
) -> Result<ValidatedStore, ValidationError> {
    let name = store.name_any();
    let namespace = store.namespace().ok_or_else(|| {
        invalid(
            "metadata.namespace",
            "a SessionStore is namespaced; set metadata.namespace",
        )
    })?;
    check_dns_label("metadata.name", &name, 47)?;
    let owner_reference = owner_reference(store, &name);

    let spec = &store.spec;
    let profile = spec.profile;
    let production = profile == Profile::Production;

    let replicas = validate_replicas(spec.replicas, production)?;

    let engine = spec.engine;
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| images.server(engine).to_string());
    check_image("spec.image", &image)?;
    check_image_engine("spec.image", &image, engine)?;

    let memory = validate_memory(spec.memory.as_ref(), production, spec.persistence.as_ref())?;

    let key_prefix = validate_key_prefix(spec.sessions.as_ref())?;

    let persistence = validate_persistence(spec.persistence.as_ref(), production)?;
    let auth = validate_auth(spec.auth.as_ref())?;
    let tls = validate_tls(spec.tls.as_ref())?;

    let connection = validate_connection(spec.connection.as_ref())?;

    let extra_config = validate_extra_config(engine, &spec.extra_config)?;
    check_backlog_fits(&extra_config, &memory)?;
    check_volume_fits(&persistence, &memory)?;
    let clients = validate_clients(&spec.clients)?;
    let disabled_commands = validate_disabled_commands(engine, &spec.disabled_commands)?;
    let scheduling = validate_scheduling(store)?;

    let monitoring = validate_monitoring(spec.monitoring.as_ref(), images)?;
    let sentinel = validate_sentinel(spec.sentinel.as_ref())?;

    Ok(ValidatedStore {
        name,
        namespace,
        generation: store.meta().generation,
        owner_reference,
        profile,
        clients,
        replicas,
        engine,
        image,
        memory,
        key_prefix,
        persistence,
        auth,
        tls,
        connection,
        extra_config,
        disabled_commands,
        scheduling,
        monitoring,
        sentinel,
    })
}

/// The store's controller ownerReference for its children.
fn owner_reference(store: &SessionStore, name: &str) -> OwnerReference {
    store
        .controller_owner_ref(&())
        .unwrap_or_else(|| OwnerReference {
            // Only a store read from a file (render) has no uid; a cluster object always has one.
            api_version: SessionStore::api_version(&()).into_owned(),
            kind: SessionStore::kind(&()).into_owned(),
            name: name.to_string(),
            uid: String::new(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
}

fn validate_replicas(replicas: Option<i32>, production: bool) -> Result<i32, ValidationError> {
    let replicas = replicas.unwrap_or(if production { 3 } else { 1 });
    if replicas == 2 || !(1..=9).contains(&replicas) {
        return Err(invalid(
            "spec.replicas",
            format!(
                "must be 1 (standalone) or between 3 and 9 (primary, replicas and a Sentinel majority), got {replicas}"
            ),
        ));
    }
    Ok(replicas)
}

fn validate_key_prefix(
    sessions: Option<&crate::crd::SessionsSpec>,
) -> Result<String, ValidationError> {
    let key_prefix = sessions
        .and_then(|s| s.key_prefix.clone())
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
    check_key_prefix(&key_prefix)?;
    Ok(key_prefix)
}

fn validate_connection(
    connection: Option<&crate::crd::ConnectionSpec>,
) -> Result<Connection, ValidationError> {
    let connection_spec = connection.cloned().unwrap_or_default();
    Ok(Connection {
        timeout_seconds: in_range(
            "spec.connection.timeoutSeconds",
            connection_spec.timeout_seconds.unwrap_or(300),
            0,
            86_400,
        )?,
        tcp_keepalive_seconds: in_range(
            "spec.connection.tcpKeepaliveSeconds",
            connection_spec.tcp_keepalive_seconds.unwrap_or(300),
            0,
            7_200,
        )?,
        max_clients: in_range(
            "spec.connection.maxClients",
            connection_spec.max_clients.unwrap_or(10_000),
            1,
            100_000,
        )?,
    })
}

fn validate_monitoring(
    monitoring: Option<&crate::crd::MonitoringSpec>,
    images: &DefaultImages,
) -> Result<Monitoring, ValidationError> {
    let monitoring_spec = monitoring.cloned().unwrap_or_default();
    if monitoring_spec.service_monitor && !monitoring_spec.exporter {
        return Err(invalid(
            "spec.monitoring.serviceMonitor",
            "needs spec.monitoring.exporter: true (the ServiceMonitor scrapes the exporter)",
        ));
    }
    let exporter_image = monitoring_spec
        .exporter_image
        .clone()
        .unwrap_or_else(|| images.exporter.clone());
    check_image("spec.monitoring.exporterImage", &exporter_image)?;
    Ok(Monitoring {
        exporter: monitoring_spec.exporter,
        service_monitor: monitoring_spec.service_monitor,
        exporter_image,
    })
}

fn validate_sentinel(
    sentinel: Option<&crate::crd::SentinelSpec>,
) -> Result<Sentinel, ValidationError> {
    let sentinel_spec = sentinel.cloned().unwrap_or_default();
    Ok(Sentinel {
        down_after_milliseconds: in_range(
            "spec.sentinel.downAfterMilliseconds",
            sentinel_spec.down_after_milliseconds.unwrap_or(5_000),
            1_000,
            60_000,
        )?,
        failover_timeout_milliseconds: in_range(
            "spec.sentinel.failoverTimeoutMilliseconds",
            sentinel_spec
                .failover_timeout_milliseconds
                .unwrap_or(30_000),
            5_000,
            600_000,
        )?,
    })
}

fn validate_memory(
    memory: Option<&crate::crd::MemorySpec>,
    production: bool,
    persistence: Option<&crate::crd::PersistenceSpec>,
) -> Result<Memory, ValidationError> {
    let memory = memory.cloned().unwrap_or_default();
    let limit = memory.limit.clone().unwrap_or_else(|| {
        if production {
            "1Gi".into()
        } else {
            "256Mi".into()
        }
    });
    let limit_bytes = parse_bytes(&limit).ok_or_else(|| {
        invalid(
            "spec.memory.limit",
            format!("{limit:?} is not a byte quantity such as 1Gi or 512Mi"),
        )
    })?;
    if limit_bytes < MIN_MEMORY_LIMIT_BYTES {
        return Err(invalid(
            "spec.memory.limit",
            format!(
                "{limit} is too small to run Redis: it must be at least 32Mi (Redis itself needs about 10Mi before the first session, and a snapshot forks it)"
            ),
        ));
    }
    let maxmemory_bytes = match &memory.maxmemory {
        Some(value) => {
            let bytes = parse_bytes(value).ok_or_else(|| {
                invalid(
                    "spec.memory.maxmemory",
                    format!("{value:?} is not a byte quantity such as 700Mi"),
                )
            })?;
            if bytes >= limit_bytes {
                return Err(invalid(
                    "spec.memory.maxmemory",
                    format!(
                        "must be less than spec.memory.limit ({limit}) to leave headroom for fork copy-on-write and buffers"
                    ),
                ));
            }
            if bytes < 1 << 20 {
                return Err(invalid("spec.memory.maxmemory", "must be at least 1Mi"));
            }
            bytes
        }
        None => {
            // A fork for RDB/AOF rewrite can copy every page the parent writes meanwhile, so
            // persistent stores keep more headroom than in-memory ones.
            let persistent = persistence
                .and_then(|p| p.mode)
                .map(|m| m != PersistenceMode::None)
                .unwrap_or(production);
            let percent = if persistent { 70 } else { 80 };
            limit_bytes / 100 * percent
        }
    };
    Ok(Memory {
        limit,
        limit_bytes,
        maxmemory_bytes,
        eviction_policy: memory.eviction_policy.unwrap_or_default(),
    })
}

/// How many times `maxmemory` a volume must hold, per persistence mode: a snapshot is written to
/// a temporary file beside the last one, and an RDB is smaller than the data in memory, so one
/// `maxmemory` of room; an append-only file's rewrite writes a new base file beside the old base
/// and the growing increment file, so twice that.
pub const SNAPSHOT_VOLUME_FACTOR: u64 = 1;
pub const APPEND_ONLY_VOLUME_FACTOR: u64 = 2;

/// Bytes as the user writes them: whole Gi or Mi (rounded up).
fn human_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}Gi", bytes >> 30)
    } else {
        format!("{}Mi", bytes.div_ceil(1 << 20))
    }
}

/// A volume smaller than the data cannot hold a snapshot: the BGSAVE fails, and with
/// `stop-writes-on-bgsave-error` Redis then refuses every session write.
fn check_volume_fits(persistence: &Persistence, memory: &Memory) -> Result<(), ValidationError> {
    let (factor, why) = match persistence.mode {
        PersistenceMode::None => return Ok(()),
        PersistenceMode::Snapshot => (
            SNAPSHOT_VOLUME_FACTOR,
            "a snapshot volume must hold spec.memory.maxmemory",
        ),
        PersistenceMode::AppendOnly => (
            APPEND_ONLY_VOLUME_FACTOR,
            "an appendOnly volume must hold twice spec.memory.maxmemory (a rewrite writes the new file beside the old one)",
        ),
    };
    let size = parse_bytes(&persistence.size).unwrap_or(0);
    let needed = memory.maxmemory_bytes.saturating_mul(factor);
    if size < needed {
        return Err(invalid(
            "spec.persistence.size",
            format!(
                "{} cannot hold the data: {why}, so at least {} here (maxmemory is {}; without spec.memory.maxmemory it is 70% of spec.memory.limit); otherwise the first save that no longer fits fails and Redis refuses every write (stop-writes-on-bgsave-error). Set a larger size or a smaller maxmemory",
                persistence.size,
                human_bytes(needed),
                human_bytes(memory.maxmemory_bytes),
            ),
        ));
    }
    Ok(())
}

/// Redis keeps the replication backlog outside `maxmemory`: it must fit in the headroom
/// between `maxmemory` and the container limit, or the kernel kills Redis instead.
fn check_backlog_fits(
    extra: &BTreeMap<String, String>,
    memory: &Memory,
) -> Result<(), ValidationError> {
    let Some(value) = extra.get("repl-backlog-size") else {
        return Ok(());
    };
    let bytes = redis_config::parse_redis_bytes(value).unwrap_or(u64::MAX);
    let headroom = memory.limit_bytes.saturating_sub(memory.maxmemory_bytes);
    if bytes >= headroom / 2 {
        return Err(invalid(
            "spec.extraConfig.repl-backlog-size",
            format!(
                "{value} does not fit: Redis keeps the backlog outside maxmemory, in the headroom between spec.memory.maxmemory and spec.memory.limit ({}), and it must stay under half of it (buffers and the fork need the rest)",
                human_bytes(headroom)
            ),
        ));
    }
    Ok(())
}

fn is_empty_selector(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

/// The README promises that only the application's pods get in: both selectors empty would
/// open the store to every pod of the cluster, so that takes an explicit opt-in.
fn validate_clients(clients: &crate::crd::ClientsSpec) -> Result<Clients, ValidationError> {
    let every_namespace = clients
        .namespace_selector
        .as_ref()
        .is_some_and(is_empty_selector);
    if every_namespace
        && is_empty_selector(&clients.pod_selector)
        && !clients.allow_all_pods_in_cluster
    {
        return Err(invalid(
            "spec.clients",
            "an empty podSelector with an empty namespaceSelector admits every pod of the cluster; narrow one of them, or set spec.clients.allowAllPodsInCluster: true if that is what you mean",
        ));
    }
    Ok(Clients {
        pod_selector: clients.pod_selector.clone(),
        namespace_selector: clients.namespace_selector.clone(),
    })
}

fn validate_persistence(
    persistence: Option<&crate::crd::PersistenceSpec>,
    production: bool,
) -> Result<Persistence, ValidationError> {
    let persistence = persistence.cloned().unwrap_or_default();
    let mode = persistence.mode.unwrap_or(if production {
        PersistenceMode::Snapshot
    } else {
        PersistenceMode::None
    });
    let size = persistence.size.clone().unwrap_or_else(|| "1Gi".into());
    if parse_bytes(&size).is_none_or(|b| b == 0) {
        return Err(invalid(
            "spec.persistence.size",
            format!("{size:?} is not a byte quantity such as 1Gi"),
        ));
    }
    if let Some(class) = &persistence.storage_class_name {
        check_dns_subdomain("spec.persistence.storageClassName", class)?;
    }
    Ok(Persistence {
        mode,
        size,
        storage_class_name: persistence.storage_class_name,
    })
}

fn validate_auth(auth: Option<&crate::crd::AuthSpec>) -> Result<Auth, ValidationError> {
    let auth = auth.cloned().unwrap_or_default();
    if let Some(secret) = &auth.existing_secret {
        check_dns_subdomain("spec.auth.existingSecret", secret)?;
    }
    if let Some(rotation) = &auth.rotation {
        check_free_text("spec.auth.rotation", rotation, 253)?;
    }
    Ok(Auth {
        existing_secret: auth.existing_secret,
        rotation: auth.rotation,
        rotation_grace_period_seconds: in_range(
            "spec.auth.rotationGracePeriodSeconds",
            auth.rotation_grace_period_seconds
                .unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS),
            0,
            604_800,
        )?,
    })
}

fn validate_tls(tls: Option<&crate::crd::TlsSpec>) -> Result<Option<Tls>, ValidationError> {
    let Some(tls) = tls.filter(|t| t.enabled) else {
        return Ok(None);
    };
    let source = match (&tls.secret_name, &tls.issuer_ref) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.tls",
                "set either secretName or issuerRef, not both",
            ));
        }
        (Some(secret), None) => {
            check_dns_subdomain("spec.tls.secretName", secret)?;
            TlsSource::Secret(secret.clone())
        }
        (None, Some(issuer)) => {
            check_dns_subdomain("spec.tls.issuerRef.name", &issuer.name)?;
            let kind = issuer.kind.clone().unwrap_or_else(|| "Issuer".into());
            if kind != "Issuer" && kind != "ClusterIssuer" {
                return Err(invalid(
                    "spec.tls.issuerRef.kind",
                    "must be Issuer or ClusterIssuer",
                ));
            }
            let group = issuer
                .group
                .clone()
                .unwrap_or_else(|| "cert-manager.io".into());
            check_dns_subdomain("spec.tls.issuerRef.group", &group)?;
            TlsSource::Issuer {
                name: issuer.name.clone(),
                kind,
                group,
            }
        }
        (None, None) => {
            return Err(invalid(
                "spec.tls.secretName",
                "spec.tls.secretName or spec.tls.issuerRef is required when spec.tls.enabled is true",
            ));
        }
    };
    Ok(Some(Tls { source }))
}

/// Same limits as the CRD schema, for input that never went through admission (`render`).
const MAX_EXTRA_CONFIG: usize = 64;
const MAX_DISABLED_COMMANDS: usize = 128;

/// `extraConfig` checked against the engine's config table ([`ConfigTable::of`]).
fn validate_extra_config(
    engine: Engine,
    extra: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ValidationError> {
    let table = ConfigTable::of(engine);
    let server = format!("{} {}", table.engine, table.version);
    let engine_forbidden = match engine {
        Engine::Redis => FORBIDDEN_FOR_REDIS,
        Engine::Valkey => FORBIDDEN_FOR_VALKEY,
    };
    if extra.len() > MAX_EXTRA_CONFIG {
        return Err(invalid(
            "spec.extraConfig",
            format!("at most {MAX_EXTRA_CONFIG} directives, got {}", extra.len()),
        ));
    }
    let mut out = BTreeMap::new();
    for (key, value) in extra {
        let field = format!("spec.extraConfig.{key}");
        let valid_key = key.len() <= 64
            && key.starts_with(|c: char| c.is_ascii_alphabetic())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_key {
            return Err(invalid(
                field,
                "directive names are letters, digits and '-' only",
            ));
        }
        let lower = key.to_ascii_lowercase();
        let forbidden = FORBIDDEN_EXTRA_CONFIG
            .iter()
            .chain(engine_forbidden)
            .find(|(f, _)| {
                if f.ends_with('-') {
                    lower.starts_with(f)
                } else {
                    lower == *f
                }
            });
        if let Some((_, reason)) = forbidden {
            return Err(invalid(field, *reason));
        }
        if let Some((_, spec_field)) = SPEC_FIELD_FOR.iter().find(|(d, _)| *d == lower) {
            return Err(invalid(
                field,
                format!("this directive is managed by the operator: set {spec_field} instead"),
            ));
        }
        let Some(kind) = table.kind_of(&lower) else {
            let hint = table
                .closest_directive(&lower)
                .map(|d| format!("; did you mean `{d}`?"))
                .unwrap_or_default();
            return Err(invalid(
                field,
                format!(
                    "{key:?} is not a {server} directive, and {} refuses to start with an unknown directive (\"Bad directive or wrong number of arguments\"){hint}",
                    table.engine
                ),
            ));
        };
        check_config_value(&field, value)?;
        redis_config::check_value(&lower, kind, value).map_err(|reason| {
            invalid(
                &field,
                format!("{reason}; {server} would refuse this value and not start"),
            )
        })?;
        if let Some((_, _, reason)) = FORBIDDEN_VALUES
            .iter()
            .find(|(d, v, _)| *d == lower && *v == value)
        {
            return Err(invalid(field, format!("{value:?}: {reason}")));
        }
        if out.insert(lower, value.clone()).is_some() {
            return Err(invalid(
                field,
                "the same directive is given twice (names are case-insensitive)",
            ));
        }
    }
    Ok(out)
}

/// A `redis.conf` value: printable ASCII words, no quotes, escapes, comments or line breaks.
fn check_config_value(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > 256 {
        return Err(invalid(field, "value must be 1 to 256 characters"));
    }
    if value.trim() != value || value.contains("  ") {
        return Err(invalid(
            field,
            "value must not start or end with spaces or contain double spaces",
        ));
    }
    let safe = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " ._-:/+,@=%".contains(c));
    if !safe {
        return Err(invalid(
            field,
            "value may contain only letters, digits, single spaces and . _ - : / + , @ = % (no quotes, backslashes, '#' or line breaks)",
        ));
    }
    Ok(())
}

/// `disabledCommands` checked against the engine's command table ([`CommandTable::of`]).
fn validate_disabled_commands(
    engine: Engine,
    commands: &[String],
) -> Result<Vec<String>, ValidationError> {
    let table = CommandTable::of(engine);
    if commands.len() > MAX_DISABLED_COMMANDS {
        return Err(invalid(
            "spec.disabledCommands",
            format!(
                "at most {MAX_DISABLED_COMMANDS} entries, got {}",
                commands.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        let field = format!("spec.disabledCommands[{index}]");
        let body = command.strip_prefix('@').unwrap_or(command);
        let (name, sub) = match body.split_once('|') {
            Some((n, s)) => (n, Some(s)),
            None => (body, None),
        };
        let word = |w: &str| {
            !w.is_empty()
                && w.len() <= 64
                && w.starts_with(|c: char| c.is_ascii_alphabetic())
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !word(name)
            || sub.is_some_and(|s| !word(s))
            || (command.starts_with('@') && sub.is_some())
        {
            return Err(invalid(
                field,
                format!(
                    "{command:?} is not a command name (e.g. `sort`, `client|kill`) or `@category`"
                ),
            ));
        }
        let lower = command.to_ascii_lowercase();
        check_known_to_server(table, &field, command, &lower)?;
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// The server refuses the whole ACL file, and so does not start, when one rule names a command or
/// category it does not know: an entry must be in the engine's own table ([`CommandTable`]).
/// `lower` is the well-formed, lower-cased entry.
fn check_known_to_server(
    table: &CommandTable,
    field: &str,
    command: &str,
    lower: &str,
) -> Result<(), ValidationError> {
    // A name of the other kind (`@get`, `pubsub` meant as `@pubsub`) is the likelier mistake
    // than a typo, so it is suggested first.
    let (known, suggestion) = match lower.strip_prefix('@') {
        Some(category) => (
            table.is_category(category),
            if table.is_command(category) {
                Some(category.to_string())
            } else {
                table.closest_category(category).map(|c| format!("@{c}"))
            },
        ),
        None => (
            table.is_command(lower),
            if table.is_category(lower) {
                Some(format!("@{lower}"))
            } else {
                table.closest_command(lower).map(str::to_string)
            },
        ),
    };
    if known {
        return Ok(());
    }
    let what = if lower.starts_with('@') {
        "ACL category"
    } else {
        "command (or `command|subcommand`)"
    };
    let hint = match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None if lower.starts_with('@') => format!(
            "; the categories are {}",
            table
                .categories
                .iter()
                .map(|c| format!("@{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    };
    Err(invalid(
        field,
        format!(
            "{command:?} is not a {} {} {what}, and {} refuses to start with an unknown name in its ACL file{hint}",
            table.engine, table.version, table.engine
        ),
    ))
}

fn validate_scheduling(store: &SessionStore) -> Result<Scheduling, ValidationError> {
    let spec = &store.spec;
    if let Some(resources) = &spec.resources {
        let sets_memory = [&resources.limits, &resources.requests]
            .into_iter()
            .flatten()
            .any(|m| m.contains_key("memory"));
        if sets_memory {
            return Err(invalid(
                "spec.resources",
                "memory is set by spec.memory.limit (request = limit); set only cpu here",
            ));
        }
    }
    if let Some(class) = &spec.priority_class_name {
        check_dns_subdomain("spec.priorityClassName", class)?;
    }
    Ok(Scheduling {
        resources: spec.resources.clone(),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.clone(),
        topology_spread_constraints: spec.topology_spread_constraints.clone(),
        priority_class_name: spec.priority_class_name.clone(),
    })
}

/// The key prefix goes into an ACL key pattern (`~<prefix>*`): glob characters, spaces or
/// quotes would widen the pattern or inject ACL rules.
fn check_key_prefix(prefix: &str) -> Result<(), ValidationError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_./@=+{}-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "spec.sessions.keyPrefix",
            "1 to 64 characters of letters, digits and : _ . / @ = + { } - (no glob characters *?[]\\, spaces or quotes)",
        ))
    }
}

fn check_free_text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max || value.chars().any(|c| c.is_control()) {
        return Err(invalid(
            field,
            format!("at most {max} characters, no control characters or line breaks"),
        ));
    }
    Ok(())
}

/// The engine an image's name says it runs (`redis`, `bitnami/valkey`, `mirror/valkey/valkey`):
/// the last path segment of the repository, without tag or digest. `None` for a name that says
/// neither (a private build), which is then taken to be the declared engine.
pub fn engine_of_image(image: &str) -> Option<Engine> {
    let repository = image.split('@').next().unwrap_or(image);
    let last = repository.rsplit('/').next().unwrap_or(repository);
    let name = last.split(':').next().unwrap_or(last).to_ascii_lowercase();
    if name.contains("valkey") {
        Some(Engine::Valkey)
    } else if name.contains("redis") {
        Some(Engine::Redis)
    } else {
        None
    }
}

/// Refuses an image whose name says another engine than the one declared: the pods would run
/// binaries the operator does not call (`valkey-server` in a Redis image) and the spec's tables
/// would be checked against the wrong server.
pub fn check_image_engine(field: &str, image: &str, engine: Engine) -> Result<(), ValidationError> {
    match engine_of_image(image) {
        Some(named) if named != engine => Err(invalid(
            field,
            format!(
                "{image:?} is a {named} image but spec.engine is {engine}; set spec.engine: {named}, \
                 or name a {engine} image"
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses `spec.engine: redis` while the store's primary runs Valkey (`running`, as the health
/// probe read it from the primary's `INFO server`). A Redis replica cannot load a Valkey primary's
/// RDB (format 11; Redis 7.0 reads up to 10, checked), so the ordered switch back would leave
/// every restarted replica unable to sync. The reverse, Redis to Valkey, is an ordinary ordered
/// rolling update: Valkey 8 loads Redis's RDB. The CRD refuses the same change at admission on
/// API servers with CEL transition rules; this covers the others, and stores edited mid-switch.
pub fn check_engine_switch(engine: Engine, running: Option<Engine>) -> Result<(), ValidationError> {
    match running {
        Some(Engine::Valkey) if engine == Engine::Redis => Err(invalid(
            "spec.engine",
            "cannot switch from valkey back to redis: the primary runs Valkey, whose RDB (format \
             11) a Redis replica cannot load (Redis 7.0 reads up to 10), so the restarted pods \
             could not sync; set spec.engine: valkey again (nothing was changed), or create a new \
             SessionStore with engine redis and move the sessions",
        )),
        _ => Ok(()),
    }
}

/// An image reference as Kubernetes takes it (also the check of `--redis-image`/`--exporter-image`).
pub fn check_image(field: &str, image: &str) -> Result<(), ValidationError> {
    let ok = !image.is_empty()
        && image.len() <= 512
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "./:@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{image:?} is not an image reference"),
        ))
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ValidationError> {
    if value < min || value > max {
        Err(invalid(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    } else {
        Ok(value)
    }
}

fn check_dns_label(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "must be a DNS label of at most {max} characters (children add suffixes such as -headless)"
            ),
        ))
    }
}

fn check_dns_subdomain(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && !part.starts_with('-')
                && !part.ends_with('-')
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not a valid Kubernetes object name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::build::fixtures::manifest;
    use crate::settings::{DEFAULT_EXPORTER_IMAGE, DEFAULT_REDIS_IMAGE};

    #[test]
    fn the_operator_default_images_fill_a_spec_without_images_and_a_pinned_image_wins() {
        let images = DefaultImages {
            redis: "mirror.example/redis:7.2.5".into(),
            valkey: "mirror.example/valkey/valkey:8.0.1".into(),
            exporter: "mirror.example/redis_exporter:v1.63.0".into(),
        };
        let parse = |spec: &str| -> SessionStore { serde_yaml::from_str(&manifest(spec)).unwrap() };
        let validated = validate_with(&parse("  monitoring: {exporter: true}\n"), &images).unwrap();
        assert_eq!(validated.image, images.redis);
        assert_eq!(validated.monitoring.exporter_image, images.exporter);
        let pinned = validate_with(&parse("  image: redis:7.0.15\n"), &images).unwrap();
        assert_eq!(pinned.image, "redis:7.0.15");
        let valkey = validate_with(&parse("  engine: valkey\n"), &images).unwrap();
        assert_eq!(valkey.image, images.valkey);
        assert_eq!(valkey.engine, Engine::Valkey);
    }

    #[test]
    fn switching_back_to_redis_is_refused_while_the_primary_runs_valkey() {
        let err = check_engine_switch(Engine::Redis, Some(Engine::Valkey)).unwrap_err();
        assert_eq!(err.field, "spec.engine");
        assert!(
            err.message.contains("set spec.engine: valkey again"),
            "{}",
            err.message
        );
        // Forward, unchanged, or not yet observed: nothing to refuse.
        check_engine_switch(Engine::Valkey, Some(Engine::Redis)).unwrap();
        check_engine_switch(Engine::Valkey, Some(Engine::Valkey)).unwrap();
        check_engine_switch(Engine::Redis, Some(Engine::Redis)).unwrap();
        check_engine_switch(Engine::Redis, None).unwrap();
    }

    #[test]
    fn an_image_that_names_the_other_engine_is_refused_naming_both_fields() {
        let err = check("  image: valkey/valkey:8.0.1\n").unwrap_err();
        assert_eq!(err.field, "spec.image");
        assert!(
            err.message
                .contains("is a valkey image but spec.engine is redis"),
            "{}",
            err.message
        );
        let err = check("  engine: valkey\n  image: docker.io/library/redis:7.2.5\n").unwrap_err();
        assert!(
            err.message
                .contains("is a redis image but spec.engine is valkey"),
            "{}",
            err.message
        );
        // Names that say neither are the declared engine; names that say it are accepted.
        check("  engine: valkey\n  image: registry.example/sessions/cache:1\n").unwrap();
        check("  engine: valkey\n  image: bitnami/valkey:8.0.1@sha256:0123\n").unwrap();
        check("  image: registry.example:5000/redis:7.2.5\n").unwrap();
        assert_eq!(
            engine_of_image("registry.example:5000/valkey"),
            Some(Engine::Valkey)
        );
        assert_eq!(engine_of_image("registry.example:5000/app"), None);
    }

    fn check(spec: &str) -> Result<ValidatedStore, ValidationError> {
        let store: SessionStore = serde_yaml::from_str(&manifest(spec)).unwrap();
        validate(&store)
    }

    /// Asserts the spec is rejected, naming exactly `field`.
    fn rejects(spec: &str, field: &str) -> ValidationError {
        let error = check(spec).expect_err(spec);
        assert_eq!(error.field, field, "{spec}: {error}");
        assert!(
            error.to_string().starts_with(&format!("{field}: ")),
            "{error}"
        );
        error
    }

    #[test]
    fn development_profile_defaults() {
        let store = check("  profile: development\n").unwrap();
        assert_eq!(store.name, "checkout");
        assert_eq!(store.namespace, "shop");
        assert_eq!(
            store.owner_reference.uid,
            "11111111-2222-3333-4444-555555555555"
        );
        assert_eq!(store.owner_reference.controller, Some(true));
        assert_eq!(store.replicas, 1);
        assert!(!store.is_highly_available());
        assert_eq!(store.image, DEFAULT_REDIS_IMAGE);
        assert_eq!(store.memory.limit, "256Mi");
        // In-memory store: 80 % of the limit.
        assert_eq!(store.memory.maxmemory_bytes, (256u64 << 20) / 100 * 80);
        assert_eq!(store.memory.eviction_policy, EvictionPolicy::VolatileLru);
        assert_eq!(store.persistence.mode, PersistenceMode::None);
        assert!(!store.persistence.uses_volume());
        assert_eq!(store.key_prefix, "session:");
        assert_eq!(store.tls, None);
        assert_eq!(
            store.connection,
            Connection {
                timeout_seconds: 300,
                tcp_keepalive_seconds: 300,
                max_clients: 10_000
            }
        );
        assert_eq!(store.auth.rotation_grace_period_seconds, 600);
        assert!(!store.monitoring.exporter);
        assert_eq!(store.monitoring.exporter_image, DEFAULT_EXPORTER_IMAGE);
        assert_eq!(store.scheduling, Scheduling::default());
    }

    #[test]
    fn production_profile_defaults() {
        // No `profile:` at all: production is the default.
        let store = check("").unwrap();
        assert_eq!(store.profile, Profile::Production);
        assert_eq!(store.replicas, 3);
        assert!(store.is_highly_available());
        assert_eq!(store.memory.limit, "1Gi");
        // Persistent store: 70 % of the limit, fork copy-on-write headroom.
        assert_eq!(store.memory.maxmemory_bytes, (1u64 << 30) / 100 * 70);
        assert_eq!(store.persistence.mode, PersistenceMode::Snapshot);
        assert_eq!(store.persistence.size, "1Gi");
        assert_eq!(store.persistence.storage_class_name, None);
        assert_eq!(
            store.sentinel,
            Sentinel {
                down_after_milliseconds: 5_000,
                failover_timeout_milliseconds: 30_000
            }
        );
    }

    #[test]
    fn explicit_values_win_over_profile_defaults() {
        let store = check(
            "  profile: development\n  replicas: 3\n  memory: {limit: 2Gi, maxmemory: 1500Mi, evictionPolicy: allkeys-lfu}\n  persistence: {mode: appendOnly, size: 5Gi, storageClassName: fast-ssd}\n  sessions: {keyPrefix: 'shop:sess:'}\n  extraConfig: {Hz: '20', lazyfree-lazy-expire: 'yes'}\n  disabledCommands: [SORT, sort, '@pubsub', 'client|kill']\n",
        )
        .unwrap();
        assert_eq!(store.replicas, 3);
        assert_eq!(store.memory.maxmemory_bytes, 1500 << 20);
        assert_eq!(store.memory.eviction_policy, EvictionPolicy::AllkeysLfu);
        assert_eq!(store.persistence.mode, PersistenceMode::AppendOnly);
        assert_eq!(
            store.persistence.storage_class_name.as_deref(),
            Some("fast-ssd")
        );
        assert_eq!(store.key_prefix, "shop:sess:");
        assert_eq!(
            store.extra_config,
            BTreeMap::from([
                ("hz".to_string(), "20".to_string()),
                ("lazyfree-lazy-expire".to_string(), "yes".to_string())
            ])
        );
        assert_eq!(
            store.disabled_commands,
            vec!["sort", "@pubsub", "client|kill"]
        );
    }

    #[test]
    fn replicas_two_and_out_of_range_are_rejected() {
        for replicas in [2, 0, -1, 10] {
            rejects(&format!("  replicas: {replicas}\n"), "spec.replicas");
        }
        for replicas in [1, 3, 4, 9] {
            assert_eq!(
                check(&format!("  replicas: {replicas}\n"))
                    .unwrap()
                    .replicas,
                replicas
            );
        }
    }

    #[test]
    fn maxmemory_must_stay_below_the_limit() {
        rejects(
            "  memory: {limit: 1Gi, maxmemory: 1Gi}\n",
            "spec.memory.maxmemory",
        );
        rejects(
            "  memory: {limit: 1Gi, maxmemory: 2Gi}\n",
            "spec.memory.maxmemory",
        );
        rejects(
            "  memory: {limit: 1Gi, maxmemory: 1073741824}\n",
            "spec.memory.maxmemory",
        );
        rejects(
            "  memory: {limit: 1Gi, maxmemory: 100k}\n",
            "spec.memory.maxmemory",
        );
        rejects(
            "  memory: {limit: 1Gi, maxmemory: lots}\n",
            "spec.memory.maxmemory",
        );
        rejects("  memory: {limit: 16Mi}\n", "spec.memory.limit");
        rejects("  memory: {limit: 1GB}\n", "spec.memory.limit");
        assert_eq!(
            check("  memory: {limit: 1Gi, maxmemory: 1023Mi}\n")
                .unwrap()
                .memory
                .maxmemory_bytes,
            1023 << 20
        );
    }

    #[test]
    fn hardening_directives_in_extra_config_are_rejected() {
        for key in [
            "bind",
            "port",
            "tls-port",
            "tls-cert-file",
            "TLS-Replication",
            "aclfile",
            "include",
            "requirepass",
            "masterauth",
            "masteruser",
            "primaryauth",
            "primaryuser",
            "user",
            "rename-command",
            "dir",
            "dbfilename",
            "replicaof",
            "slaveof",
            "protected-mode",
            "enable-debug-command",
            "enable-module-command",
            "enable-protected-configs",
            "loadmodule",
            "unixsocket",
            "maxmemory",
            "save",
            "appendonly",
            "syslog-enabled",
            "cluster-enabled",
            "sentinel",
            "daemonize",
            "logfile",
            "replica-announce-ip",
        ] {
            for engine in ["redis", "valkey"] {
                rejects(
                    &format!("  engine: {engine}\n  extraConfig: {{{key}: 'x'}}\n"),
                    &format!("spec.extraConfig.{key}"),
                );
            }
        }
    }

    #[test]
    fn extra_config_keys_redis_does_not_know_are_rejected() {
        // The seed document's own sample: not a directive, Redis would not start.
        let error = rejects(
            "  extraConfig: {lazy-expire: 'yes'}\n",
            "spec.extraConfig.lazy-expire",
        );
        assert!(
            error.message.contains("is not a Redis 7.0 directive"),
            "{error}"
        );
        let error = rejects(
            "  extraConfig: {lazyfree-lazy-expir: 'yes'}\n",
            "spec.extraConfig.lazyfree-lazy-expir",
        );
        assert!(
            error
                .message
                .contains("did you mean `lazyfree-lazy-expire`?"),
            "{error}"
        );
        // Only newer servers know it.
        rejects(
            "  extraConfig: {locale-collate: C}\n",
            "spec.extraConfig.locale-collate",
        );
    }

    #[test]
    fn extra_config_values_redis_would_refuse_are_rejected() {
        for (key, value) in [
            ("hz", "ten"),
            ("hz", "-1"),
            ("io-threads", "129"),
            ("lazyfree-lazy-user-del", "true"),
            ("appendfsync", "sometimes"),
            ("repl-backlog-size", "1Mi"),
            ("notify-keyspace-events", "Exq"),
            ("oom-score-adj-values", "0 200 800"),
            ("proc-title-template", "a b"),
        ] {
            let error = rejects(
                &format!("  extraConfig: {{{key}: '{value}'}}\n"),
                &format!("spec.extraConfig.{key}"),
            );
            assert!(
                error.message.contains("Redis 7.0 would refuse this value"),
                "{error}"
            );
        }
        let store = check(
            "  extraConfig: {hz: '100', io-threads: '4', lazyfree-lazy-user-del: 'yes', notify-keyspace-events: Ex, maxmemory-clients: 5%, repl-backlog-size: 16mb}\n",
        )
        .unwrap();
        assert_eq!(store.extra_config.len(), 6);
    }

    #[test]
    fn extra_config_that_breaks_a_guarantee_is_rejected() {
        for (key, says) in [
            ("replica-priority", "failover"),
            ("slave-priority", "failover"),
            ("replicaof", "failover"),
            ("replica-announce-port", "failover"),
            ("slave-announce-ip", "failover"),
            ("replica-announced", "failover"),
            ("min-replicas-to-write", "failover"),
            ("min-slaves-max-lag", "failover"),
            ("databases", "database 0"),
            ("shutdown-on-sigterm", "saves the data"),
            ("maxmemory-policy", "spec.memory.evictionPolicy"),
            ("timeout", "spec.connection.timeoutSeconds"),
        ] {
            let error = rejects(
                &format!("  extraConfig: {{{key}: '1'}}\n"),
                &format!("spec.extraConfig.{key}"),
            );
            assert!(error.message.contains(says), "{error}");
        }
    }

    #[test]
    fn extra_config_is_checked_against_the_engines_table() {
        // Valkey 8.0 only, known and harmless: refused for Redis, naming Redis 7.0.
        for (key, value) in [
            ("extended-redis-compatibility", "yes"),
            ("availability-zone", "zone-a"),
            ("set-max-listpack-entries", "256"),
            ("max-new-connections-per-cycle", "100"),
            ("activedefrag", "yes"),
        ] {
            let spec = format!("  extraConfig: {{{key}: '{value}'}}\n");
            let store = check(&format!("  engine: valkey\n{spec}")).unwrap();
            assert_eq!(store.extra_config[key], value);
            let error = rejects(&spec, &format!("spec.extraConfig.{key}"));
            if key != "activedefrag" {
                assert!(
                    error.message.contains("is not a Redis 7.0 directive"),
                    "{error}"
                );
            }
        }
        // Unknown to Valkey 8.0: named in the message, with Valkey's nearest directive.
        let error = rejects(
            "  engine: valkey\n  extraConfig: {hide-user-data-from-logs: 'yes'}\n",
            "spec.extraConfig.hide-user-data-from-logs",
        );
        assert!(
            error.message.contains(
                "is not a Valkey 8.0 directive, and Valkey refuses to start with an unknown directive"
            ),
            "{error}"
        );
        assert!(
            error
                .message
                .contains("did you mean `hide-user-data-from-log`?"),
            "{error}"
        );
        // Valkey's own ranges and words.
        let error = rejects(
            "  engine: valkey\n  extraConfig: {maxmemory-samples: '65'}\n",
            "spec.extraConfig.maxmemory-samples",
        );
        assert!(
            error
                .message
                .contains("between 1 and 64, got 65; Valkey 8.0 would refuse this value"),
            "{error}"
        );
        check("  extraConfig: {maxmemory-samples: '65'}\n").unwrap();
        let error = rejects(
            "  extraConfig: {loglevel: nothing}\n",
            "spec.extraConfig.loglevel",
        );
        assert!(
            error.message.contains("Redis 7.0 would refuse this value"),
            "{error}"
        );
        check("  engine: valkey\n  extraConfig: {loglevel: warning}\n").unwrap();
        // Valkey checks a locale only when it applies it: not a value the operator can check.
        let error = rejects(
            "  engine: valkey\n  extraConfig: {locale-collate: C}\n",
            "spec.extraConfig.locale-collate",
        );
        assert!(error.message.contains("its own syntax"), "{error}");
    }

    #[test]
    fn valkey_directives_that_break_a_guarantee_are_rejected() {
        for (key, value, says) in [
            ("hide-user-data-from-log", "no", "out of its log"),
            ("dual-channel-replication-enabled", "yes", "SYNC"),
            ("loglevel", "nothing", "not even why it stops"),
            ("primaryauth", "x", "weaken the hardening"),
            ("primaryuser", "x", "weaken the hardening"),
            ("unixsocketgroup", "x", "weaken the hardening"),
            ("cluster-slot-stats-enabled", "yes", "failover"),
            ("cluster-announce-client-ipv4", "x", "failover"),
            ("aof-disable-auto-gc", "yes", "Valkey 8.0 does not know"),
        ] {
            let error = rejects(
                &format!("  engine: valkey\n  extraConfig: {{{key}: '{value}'}}\n"),
                &format!("spec.extraConfig.{key}"),
            );
            assert!(error.message.contains(says), "{error}");
        }
        // Still refused for Redis stores: a Redis store may move to Valkey, and Debian's Redis
        // has no defragmentation.
        for (key, says) in [
            ("aof-disable-auto-gc", "Valkey 8.0 does not know"),
            ("activedefrag", "jemalloc"),
        ] {
            let error = rejects(
                &format!("  extraConfig: {{{key}: 'yes'}}\n"),
                &format!("spec.extraConfig.{key}"),
            );
            assert!(error.message.contains(says), "{error}");
        }
    }

    #[test]
    fn repl_backlog_must_fit_beside_maxmemory() {
        // 1Gi limit, 700Mi maxmemory: 324Mi of headroom, the backlog may take under half.
        let memory = "  memory: {limit: 1Gi, maxmemory: 700Mi}\n";
        assert!(
            check(&format!(
                "{memory}  extraConfig: {{repl-backlog-size: 128mb}}\n"
            ))
            .is_ok()
        );
        let error = rejects(
            &format!("{memory}  extraConfig: {{repl-backlog-size: 200mb}}\n"),
            "spec.extraConfig.repl-backlog-size",
        );
        assert!(error.message.contains("outside maxmemory"), "{error}");
    }

    #[test]
    fn a_volume_that_cannot_hold_the_data_is_rejected() {
        let error = rejects(
            "  memory: {limit: 2Gi, maxmemory: 1Gi}\n  persistence: {mode: snapshot, size: 100Mi}\n",
            "spec.persistence.size",
        );
        assert!(
            error.message.contains("100Mi cannot hold the data")
                && error.message.contains("at least 1Gi"),
            "{error}"
        );
        // appendOnly needs room for a rewrite: twice maxmemory.
        rejects(
            "  memory: {limit: 2Gi, maxmemory: 1Gi}\n  persistence: {mode: appendOnly, size: 1Gi}\n",
            "spec.persistence.size",
        );
        assert!(
            check("  memory: {limit: 2Gi, maxmemory: 1Gi}\n  persistence: {mode: appendOnly, size: 2Gi}\n")
                .is_ok()
        );
        // The default maxmemory (70% of the limit) counts too.
        rejects(
            "  memory: {limit: 4Gi}\n  persistence: {size: 2Gi}\n",
            "spec.persistence.size",
        );
        // No volume, nothing to hold.
        assert!(check("  memory: {limit: 4Gi}\n  persistence: {mode: none, size: 1Mi}\n").is_ok());
    }

    #[test]
    fn clients_open_to_the_whole_cluster_need_the_opt_in() {
        let error = check_clients("{podSelector: {}, namespaceSelector: {}}").unwrap_err();
        assert_eq!(error.field, "spec.clients");
        assert!(error.message.contains("allowAllPodsInCluster"), "{error}");
        assert!(
            check_clients(
                "{podSelector: {matchLabels: {}}, namespaceSelector: {matchExpressions: []}}"
            )
            .is_err()
        );
        for ok in [
            "{podSelector: {}, namespaceSelector: {}, allowAllPodsInCluster: true}",
            "{podSelector: {}}",
            "{podSelector: {matchLabels: {app: web}}, namespaceSelector: {}}",
            "{podSelector: {}, namespaceSelector: {matchLabels: {team: a}}}",
        ] {
            assert!(check_clients(ok).is_ok(), "{ok}");
        }
    }

    /// Validates the default spec with `clients` replaced.
    fn check_clients(clients: &str) -> Result<ValidatedStore, ValidationError> {
        let mut store: SessionStore = serde_yaml::from_str(&manifest("")).unwrap();
        store.spec.clients = serde_yaml::from_str(clients).unwrap();
        validate(&store)
    }

    #[test]
    fn numeric_fields_stay_within_redis_own_ranges() {
        // The spec's ranges (schema and validate) are inside what Redis accepts for the
        // directive each field becomes, so Redis never refuses a value the schema let in.
        for (directive, spec_min, spec_max) in [
            ("timeout", 0, 86_400),
            ("tcp-keepalive", 0, 7_200),
            ("maxclients", 1, 100_000),
        ] {
            for table in [&redis_config::REDIS, &redis_config::VALKEY] {
                let Some(redis_config::Kind::Integer { min, max }) = table.kind_of(directive)
                else {
                    panic!(
                        "{directive} is not an integer directive of {}",
                        table.engine
                    );
                };
                assert!(min <= spec_min && spec_max <= max, "{directive}");
            }
        }
        rejects(
            "  connection: {timeoutSeconds: -1}\n",
            "spec.connection.timeoutSeconds",
        );
        let error = rejects("  memory: {limit: 31Mi}\n", "spec.memory.limit");
        assert!(error.message.contains("too small to run Redis"), "{error}");
    }

    #[test]
    fn injection_in_extra_config_values_is_rejected() {
        for value in [
            "yes\\nuser evil on nopass ~* +@all",
            "yes\\rrequirepass x",
            "\\\"quoted\\\"",
            "it's",
            "a # comment",
            "back\\\\slash",
            " leading",
            "two  spaces",
            "",
        ] {
            rejects(
                &format!("  extraConfig: {{hz: \"{value}\"}}\n"),
                "spec.extraConfig.hz",
            );
        }
        rejects("  extraConfig: {'hz x': '10'}\n", "spec.extraConfig.hz x");
        rejects(
            "  extraConfig: {hz: '10', HZ: '20'}\n",
            "spec.extraConfig.hz",
        );
    }

    #[test]
    fn key_prefix_with_glob_or_space_is_rejected() {
        for prefix in [
            "sess*",
            "sess?",
            "[ab]",
            "a\\\\b",
            "a b",
            "",
            "x\\ny",
            "\\\"q\\\"",
        ] {
            rejects(
                &format!("  sessions: {{keyPrefix: \"{prefix}\"}}\n"),
                "spec.sessions.keyPrefix",
            );
        }
        assert_eq!(
            check("  sessions: {keyPrefix: 'app:{tenant}/s-1@x=+.'}\n")
                .unwrap()
                .key_prefix,
            "app:{tenant}/s-1@x=+."
        );
    }

    #[test]
    fn memory_in_resources_is_rejected() {
        rejects("  resources: {limits: {memory: 1Gi}}\n", "spec.resources");
        rejects(
            "  resources: {requests: {memory: 1Gi, cpu: 100m}}\n",
            "spec.resources",
        );
        assert!(check("  resources: {requests: {cpu: 100m}}\n").is_ok());
    }

    #[test]
    fn service_monitor_needs_the_exporter() {
        rejects(
            "  monitoring: {serviceMonitor: true}\n",
            "spec.monitoring.serviceMonitor",
        );
        assert!(check("  monitoring: {serviceMonitor: true, exporter: true}\n").is_ok());
    }

    #[test]
    fn tls_needs_exactly_one_source() {
        rejects("  tls: {enabled: true}\n", "spec.tls.secretName");
        rejects(
            "  tls: {enabled: true, secretName: a, issuerRef: {name: b}}\n",
            "spec.tls",
        );
        rejects(
            "  tls: {enabled: true, secretName: Not_A_Name}\n",
            "spec.tls.secretName",
        );
        rejects(
            "  tls: {enabled: true, issuerRef: {name: ca, kind: Vault}}\n",
            "spec.tls.issuerRef.kind",
        );
        // Disabled TLS ignores the rest.
        assert_eq!(check("  tls: {enabled: false}\n").unwrap().tls, None);
        let issuer = check("  tls: {enabled: true, issuerRef: {name: ca}}\n")
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(
            issuer.source,
            TlsSource::Issuer {
                name: "ca".into(),
                kind: "Issuer".into(),
                group: "cert-manager.io".into()
            }
        );
        assert_eq!(issuer.secret_name("checkout"), "checkout-tls");
    }

    #[test]
    fn disabled_commands_must_be_command_names() {
        for bad in ["fl ushall", "+@all", "~*", "@a|b", "", "set\\nuser"] {
            rejects(
                &format!("  disabledCommands: [\"{bad}\"]\n"),
                "spec.disabledCommands[0]",
            );
        }
    }

    #[test]
    fn disabled_commands_must_be_known_to_redis() {
        // Well-formed, but Redis would refuse the ACL file and not start.
        for (list, index, bad, hint) in [
            ("[sort, nosuchcommand]", 1, "\"nosuchcommand\"", None),
            (
                "[FLUSHAL]",
                0,
                "\"FLUSHAL\"",
                Some("did you mean `flushall`?"),
            ),
            (
                "[\"cleint|kill\"]",
                0,
                "\"cleint|kill\"",
                Some("did you mean `client|kill`?"),
            ),
            ("[\"client|frobnicate\"]", 0, "\"client|frobnicate\"", None),
            // A first argument instead of a subcommand: Redis refuses `-select|db`.
            (
                "[get, \"select|db\"]",
                1,
                "\"select|db\"",
                Some("did you mean `select`?"),
            ),
            (
                "[\"@dangerus\"]",
                0,
                "\"@dangerus\"",
                Some("did you mean `@dangerous`?"),
            ),
            ("[\"@get\"]", 0, "\"@get\"", Some("did you mean `get`?")),
            (
                "[dangerous]",
                0,
                "\"dangerous\"",
                Some("did you mean `@dangerous`?"),
            ),
            (
                "[\"@nosuchcategory\"]",
                0,
                "\"@nosuchcategory\"",
                Some("the categories are @admin, @all,"),
            ),
            // Redis 8.0 has it, the supported 7.2 does not.
            ("[hgetex]", 0, "\"hgetex\"", Some("did you mean `getex`?")),
        ] {
            let error = rejects(
                &format!("  disabledCommands: {list}\n"),
                &format!("spec.disabledCommands[{index}]"),
            );
            let message = error.to_string();
            assert!(message.contains(bad), "{message}");
            assert!(message.contains("is not a Redis 7.2"), "{message}");
            if let Some(hint) = hint {
                assert!(message.contains(hint), "{message}");
            } else {
                assert!(!message.contains("did you mean"), "{message}");
            }
        }
    }

    #[test]
    fn disabled_commands_are_checked_against_the_engines_table() {
        // Valkey 8.0's own commands: accepted for Valkey, refused for Redis.
        for command in ["script|show", "CLIENT|CAPA", "cluster|slot-stats"] {
            let list = format!("  disabledCommands: [sort, \"{command}\"]\n");
            let store = check(&format!("  engine: valkey\n{list}")).unwrap();
            assert_eq!(store.disabled_commands[1], command.to_ascii_lowercase());
            let error = rejects(&list, "spec.disabledCommands[1]");
            assert!(error.message.contains("is not a Redis 7.2"), "{error}");
        }
        let error = rejects(
            "  engine: valkey\n  disabledCommands: [get, sort, foo]\n",
            "spec.disabledCommands[2]",
        );
        assert_eq!(
            error.to_string(),
            "spec.disabledCommands[2]: \"foo\" is not a Valkey 8.0 command (or `command|subcommand`), \
             and Valkey refuses to start with an unknown name in its ACL file"
        );
        let error = rejects(
            "  engine: valkey\n  disabledCommands: [\"script|shw\", \"@dangerus\"]\n",
            "spec.disabledCommands[0]",
        );
        assert!(
            error.message.contains("did you mean `script|show`?"),
            "{error}"
        );
        let error = rejects(
            "  engine: valkey\n  disabledCommands: [\"@dangerus\"]\n",
            "spec.disabledCommands[0]",
        );
        assert!(
            error
                .message
                .contains("is not a Valkey 8.0 ACL category, and Valkey refuses"),
            "{error}"
        );
        assert!(
            error.message.contains("did you mean `@dangerous`?"),
            "{error}"
        );
        // Redis 7.2's additions are Valkey's too.
        check("  engine: valkey\n  disabledCommands: [waitaof, \"client|no-touch\", \"@all\"]\n")
            .unwrap();
    }

    #[test]
    fn disabled_commands_accept_7_2_commands_categories_and_any_case() {
        let store = check(
            "  disabledCommands: [WAITAOF, \"Client|No-Touch\", \"@ALL\", \"@Keyspace\", \"config|get\"]\n",
        )
        .unwrap();
        assert_eq!(
            store.disabled_commands,
            [
                "waitaof",
                "client|no-touch",
                "@all",
                "@keyspace",
                "config|get"
            ]
        );
    }

    #[test]
    fn other_fields_name_themselves() {
        rejects("  image: 'redis 7'\n", "spec.image");
        rejects(
            "  monitoring: {exporter: true, exporterImage: 'x;y'}\n",
            "spec.monitoring.exporterImage",
        );
        rejects("  persistence: {size: 0Gi}\n", "spec.persistence.size");
        rejects(
            "  persistence: {storageClassName: Fast_SSD}\n",
            "spec.persistence.storageClassName",
        );
        rejects(
            "  auth: {existingSecret: 'no/slash'}\n",
            "spec.auth.existingSecret",
        );
        rejects("  auth: {rotation: \"a\\nb\"}\n", "spec.auth.rotation");
        rejects(
            "  auth: {rotationGracePeriodSeconds: -1}\n",
            "spec.auth.rotationGracePeriodSeconds",
        );
        rejects(
            "  connection: {maxClients: 0}\n",
            "spec.connection.maxClients",
        );
        rejects(
            "  connection: {timeoutSeconds: 90000}\n",
            "spec.connection.timeoutSeconds",
        );
        rejects(
            "  connection: {tcpKeepaliveSeconds: -5}\n",
            "spec.connection.tcpKeepaliveSeconds",
        );
        rejects(
            "  sentinel: {downAfterMilliseconds: 10}\n",
            "spec.sentinel.downAfterMilliseconds",
        );
        rejects(
            "  sentinel: {failoverTimeoutMilliseconds: 1000}\n",
            "spec.sentinel.failoverTimeoutMilliseconds",
        );
        rejects(
            "  priorityClassName: 'Bad Name'\n",
            "spec.priorityClassName",
        );
    }

    #[test]
    fn metadata_is_checked() {
        let mut store: SessionStore = serde_yaml::from_str(&manifest("")).unwrap();
        store.metadata.name = Some("a-name-that-is-far-too-long-for-headless-suffixes-x".into());
        assert_eq!(validate(&store).unwrap_err().field, "metadata.name");
        store.metadata.name = Some("Checkout".into());
        assert_eq!(validate(&store).unwrap_err().field, "metadata.name");
        store.metadata.name = Some("checkout".into());
        store.metadata.namespace = None;
        assert_eq!(validate(&store).unwrap_err().field, "metadata.namespace");
    }
}
