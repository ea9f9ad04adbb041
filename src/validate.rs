//! Step 1 of the pipeline: a `SessionStore` spec becomes a `ValidatedStore` with every profile
//! default applied, or a `ValidationError` naming the field. No client, no I/O.
//!
//! The CRD schema rejects most bad input at admission; this repeats those checks (the schema can be
//! bypassed, e.g. by `render`) and adds what a schema cannot express: hardening-relevant
//! `extraConfig` keys, injection in free text, cross-field limits against profile defaults.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{EvictionPolicy, PersistenceMode, Profile, SessionStore};
use crate::quantity::parse_bytes;
use crate::settings::{DEFAULT_EXPORTER_IMAGE, DEFAULT_REDIS_IMAGE};

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

/// `extraConfig` directives that would undo the hardening or fight the operator. Prefixes end in `-`.
const FORBIDDEN_EXTRA_CONFIG: &[&str] = &[
    // listening and transport
    "bind",
    "bind-source-addr",
    "port",
    "tls-",
    "unixsocket",
    "unixsocketperm",
    "protected-mode",
    // authentication and command surface
    "aclfile",
    "acl-pubsub-default",
    "requirepass",
    "masterauth",
    "masteruser",
    "user",
    "rename-command",
    "enable-protected-configs",
    "enable-debug-command",
    "enable-module-command",
    "loadmodule",
    "include",
    // files and process
    "dir",
    "dbfilename",
    "appendfilename",
    "appenddirname",
    "logfile",
    "pidfile",
    "daemonize",
    "supervised",
    "syslog-",
    // replication and topology (managed by the operator and Sentinel)
    "replicaof",
    "slaveof",
    "replica-read-only",
    "slave-read-only",
    "replica-announce-",
    "slave-announce-",
    "cluster-",
    "sentinel",
    // settings that have their own spec field
    "maxmemory",
    "maxmemory-policy",
    "maxclients",
    "timeout",
    "tcp-keepalive",
    "save",
    "appendonly",
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

/// Validates a SessionStore and applies its profile's defaults.
pub fn validate(store: &SessionStore) -> Result<ValidatedStore, ValidationError> {
    let name = store.name_any();
    let namespace = store
        .namespace()
        .ok_or_else(|| invalid("metadata.namespace", "a SessionStore is namespaced; set metadata.namespace"))?;
    check_dns_label("metadata.name", &name, 47)?;
    let owner_reference = store.controller_owner_ref(&()).unwrap_or_else(|| OwnerReference {
        // Only a store read from a file (render) has no uid; a cluster object always has one.
        api_version: SessionStore::api_version(&()).into_owned(),
        kind: SessionStore::kind(&()).into_owned(),
        name: name.clone(),
        uid: String::new(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });

    let spec = &store.spec;
    let profile = spec.profile;
    let production = profile == Profile::Production;

    let replicas = spec.replicas.unwrap_or(if production { 3 } else { 1 });
    if replicas == 2 || !(1..=9).contains(&replicas) {
        return Err(invalid(
            "spec.replicas",
            format!("must be 1 (standalone) or between 3 and 9 (primary, replicas and a Sentinel majority), got {replicas}"),
        ));
    }

    let image = spec.image.clone().unwrap_or_else(|| DEFAULT_REDIS_IMAGE.into());
    check_image("spec.image", &image)?;

    let memory = validate_memory(spec.memory.as_ref(), production, spec.persistence.as_ref())?;

    let key_prefix = spec
        .sessions
        .as_ref()
        .and_then(|s| s.key_prefix.clone())
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
    check_key_prefix(&key_prefix)?;

    let persistence = validate_persistence(spec.persistence.as_ref(), production)?;
    let auth = validate_auth(spec.auth.as_ref())?;
    let tls = validate_tls(spec.tls.as_ref())?;

    let connection_spec = spec.connection.clone().unwrap_or_default();
    let connection = Connection {
        timeout_seconds: in_range("spec.connection.timeoutSeconds", connection_spec.timeout_seconds.unwrap_or(300), 0, 86_400)?,
        tcp_keepalive_seconds: in_range("spec.connection.tcpKeepaliveSeconds", connection_spec.tcp_keepalive_seconds.unwrap_or(300), 0, 7_200)?,
        max_clients: in_range("spec.connection.maxClients", connection_spec.max_clients.unwrap_or(10_000), 1, 100_000)?,
    };

    let extra_config = validate_extra_config(&spec.extra_config)?;
    let disabled_commands = validate_disabled_commands(&spec.disabled_commands)?;
    let scheduling = validate_scheduling(store)?;

    let monitoring_spec = spec.monitoring.clone().unwrap_or_default();
    if monitoring_spec.service_monitor && !monitoring_spec.exporter {
        return Err(invalid(
            "spec.monitoring.serviceMonitor",
            "needs spec.monitoring.exporter: true (the ServiceMonitor scrapes the exporter)",
        ));
    }
    let exporter_image = monitoring_spec
        .exporter_image
        .clone()
        .unwrap_or_else(|| DEFAULT_EXPORTER_IMAGE.into());
    check_image("spec.monitoring.exporterImage", &exporter_image)?;
    let monitoring = Monitoring {
        exporter: monitoring_spec.exporter,
        service_monitor: monitoring_spec.service_monitor,
        exporter_image,
    };

    let sentinel_spec = spec.sentinel.clone().unwrap_or_default();
    let sentinel = Sentinel {
        down_after_milliseconds: in_range(
            "spec.sentinel.downAfterMilliseconds",
            sentinel_spec.down_after_milliseconds.unwrap_or(5_000),
            1_000,
            60_000,
        )?,
        failover_timeout_milliseconds: in_range(
            "spec.sentinel.failoverTimeoutMilliseconds",
            sentinel_spec.failover_timeout_milliseconds.unwrap_or(30_000),
            5_000,
            600_000,
        )?,
    };

    Ok(ValidatedStore {
        name,
        namespace,
        generation: store.meta().generation,
        owner_reference,
        profile,
        clients: Clients {
            pod_selector: spec.clients.pod_selector.clone(),
            namespace_selector: spec.clients.namespace_selector.clone(),
        },
        replicas,
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

fn validate_memory(
    memory: Option<&crate::crd::MemorySpec>,
    production: bool,
    persistence: Option<&crate::crd::PersistenceSpec>,
) -> Result<Memory, ValidationError> {
    let memory = memory.cloned().unwrap_or_default();
    let limit = memory
        .limit
        .clone()
        .unwrap_or_else(|| if production { "1Gi".into() } else { "256Mi".into() });
    let limit_bytes = parse_bytes(&limit).ok_or_else(|| {
        invalid("spec.memory.limit", format!("{limit:?} is not a byte quantity such as 1Gi or 512Mi"))
    })?;
    if limit_bytes < MIN_MEMORY_LIMIT_BYTES {
        return Err(invalid("spec.memory.limit", "must be at least 32Mi"));
    }
    let maxmemory_bytes = match &memory.maxmemory {
        Some(value) => {
            let bytes = parse_bytes(value).ok_or_else(|| {
                invalid("spec.memory.maxmemory", format!("{value:?} is not a byte quantity such as 700Mi"))
            })?;
            if bytes >= limit_bytes {
                return Err(invalid(
                    "spec.memory.maxmemory",
                    format!("must be less than spec.memory.limit ({limit}) to leave headroom for fork copy-on-write and buffers"),
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
        return Err(invalid("spec.persistence.size", format!("{size:?} is not a byte quantity such as 1Gi")));
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
            auth.rotation_grace_period_seconds.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS),
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
            return Err(invalid("spec.tls", "set either secretName or issuerRef, not both"));
        }
        (Some(secret), None) => {
            check_dns_subdomain("spec.tls.secretName", secret)?;
            TlsSource::Secret(secret.clone())
        }
        (None, Some(issuer)) => {
            check_dns_subdomain("spec.tls.issuerRef.name", &issuer.name)?;
            let kind = issuer.kind.clone().unwrap_or_else(|| "Issuer".into());
            if kind != "Issuer" && kind != "ClusterIssuer" {
                return Err(invalid("spec.tls.issuerRef.kind", "must be Issuer or ClusterIssuer"));
            }
            let group = issuer.group.clone().unwrap_or_else(|| "cert-manager.io".into());
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

fn validate_extra_config(
    extra: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ValidationError> {
    let mut out = BTreeMap::new();
    for (key, value) in extra {
        let field = format!("spec.extraConfig.{key}");
        let valid_key = key.len() <= 64
            && key.starts_with(|c: char| c.is_ascii_alphabetic())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_key {
            return Err(invalid(field, "directive names are letters, digits and '-' only"));
        }
        let lower = key.to_ascii_lowercase();
        let forbidden = FORBIDDEN_EXTRA_CONFIG.iter().any(|f| {
            if f.ends_with('-') {
                lower.starts_with(f)
            } else {
                lower == *f
            }
        });
        if forbidden {
            return Err(invalid(
                field,
                "this directive is managed by the operator or would weaken the hardening; use the matching spec field if there is one",
            ));
        }
        check_config_value(&field, value)?;
        if out.insert(lower, value.clone()).is_some() {
            return Err(invalid(field, "the same directive is given twice (names are case-insensitive)"));
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
        return Err(invalid(field, "value must not start or end with spaces or contain double spaces"));
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

fn validate_disabled_commands(commands: &[String]) -> Result<Vec<String>, ValidationError> {
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
                && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !word(name) || sub.is_some_and(|s| !word(s)) || (command.starts_with('@') && sub.is_some()) {
            return Err(invalid(
                field,
                format!("{command:?} is not a command name (e.g. `sort`, `client|kill`) or `@category`"),
            ));
        }
        let lower = command.to_ascii_lowercase();
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
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
        return Err(invalid(field, format!("at most {max} characters, no control characters or line breaks")));
    }
    Ok(())
}

fn check_image(field: &str, image: &str) -> Result<(), ValidationError> {
    let ok = !image.is_empty()
        && image.len() <= 512
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "./:@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("{image:?} is not an image reference")))
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ValidationError> {
    if value < min || value > max {
        Err(invalid(field, format!("must be between {min} and {max}, got {value}")))
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
            format!("must be a DNS label of at most {max} characters (children add suffixes such as -headless)"),
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
        Err(invalid(field, format!("{value:?} is not a valid Kubernetes object name")))
    }
}
