//! The Redis StatefulSet: restricted Pod Security, config-hash roll, PVCs, zone spread.
//!
//! Each container is built by its own function (`redis_container`, `exporter_container`) so the
//! Sentinel sidecar and its init container (HA) slot in without touching the others.
//!
//! Least privilege inside the pod: each container mounts, at the same path
//! ([`paths::INTERNAL_SECRET_DIR`]), its own projected volume holding only the internal Secret keys
//! it reads ([`internal_secret_keys`]). The exporter sees only its password file, Sentinel only its
//! ACL file; no container gets the operator or the replication password (Redis reads the latter
//! only inside `replication.conf`, its `masterauth`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    ExecAction, KeyToPath, Lifecycle, LifecycleHandler, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretProjection,
    SecretVolumeSource, SecurityContext, TCPSocketAction, TopologySpreadConstraint, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::acl::{EXPORTER_USER, PROBE_USER, acl_rules};
use crate::build::keys::{EXPORTER_PASSWORD_FILE_KEY, METRICS_PORT};
use crate::build::keys::{
    PROBE_PASSWORD_KEY, REPLICATION_CONF_KEY, SENTINEL_PASSWORD_KEY, SENTINEL_USERS_ACL_KEY,
    USERS_ACL_KEY, VALKEY_SENTINEL_USERS_ACL_KEY,
};
use crate::build::meta::{
    CONFIG_HASH_ANNOTATION, ChildNames, Component, labels, object_meta, paths, pod_selector_labels,
    sha256_hex,
};
use crate::build::sentinel::sentinel_users_acl_key;
use crate::build::startup;
use crate::password::Password;
use crate::settings::OperatorSettings;
use crate::validate::{REDIS_PORT, SENTINEL_PORT, ValidatedStore};

/// UID and GID of the `redis` user in the official Redis and Valkey images: the data directory and
/// the mounted Secrets (through `fsGroup`) belong to it.
pub const REDIS_UID: i64 = 999;
/// Name of the Redis container (also the `kubectl` default container).
pub const REDIS_CONTAINER: &str = "redis";
/// Name of the redis_exporter sidecar.
pub const EXPORTER_CONTAINER: &str = "exporter";
/// Name of the data volume (and of its volume claim template: PVCs are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";

const CONFIG_VOLUME: &str = "config";
const TLS_VOLUME: &str = "tls";
const TMP_VOLUME: &str = "tmp";
const SENTINEL_VOLUME: &str = "sentinel";
/// Name of the Sentinel sidecar (replicas >= 3).
pub const SENTINEL_CONTAINER: &str = "sentinel";
/// Name of the init container that writes Sentinel's config (`startup.sh sentinel-init`).
pub const SENTINEL_INIT_CONTAINER: &str = "sentinel-init";
/// Writable, memory-backed directory of the start script's role include (`startup::RUN_DIR`).
const RUN_VOLUME: &str = "run";
/// Size cap of the memory-backed emptyDirs: they hold a few small text files (the role include,
/// Sentinel's config), and memory-backed volumes count against the pod's memory.
const SMALL_MEMORY_DIR: &str = "1Mi";
/// Secret files are read by group 999 (`fsGroup`): the kubelet makes them `root:999`, so the mode
/// must grant the group read; nobody else may read them.
const SECRET_FILE_MODE: i32 = 0o440;
/// The ConfigMap holds no secret.
const CONFIG_FILE_MODE: i32 = 0o444;
/// Enough for a shutdown RDB save of a session-sized dataset; SIGKILL after that loses unsaved writes.
const TERMINATION_GRACE_SECONDS: i64 = 60;

/// Hash of everything that needs a pod restart to take effect (config and ACL rules, no passwords).
pub fn config_hash(store: &ValidatedStore, config_map: &ConfigMap) -> String {
    let mut input = serde_json::to_vec(&config_map.data).unwrap_or_default();
    for (user, rules) in acl_rules(store) {
        input.extend_from_slice(user.as_bytes());
        input.extend_from_slice(rules.as_bytes());
    }
    sha256_hex(&input)
}

/// The address redis_exporter scrapes: Redis over loopback in the same pod.
pub fn exporter_redis_addr(store: &ValidatedStore) -> String {
    let scheme = if store.tls.is_some() {
        "rediss"
    } else {
        "redis"
    };
    format!("{scheme}://localhost:{REDIS_PORT}")
}

/// The content of [`EXPORTER_PASSWORD_FILE_KEY`] in the internal Secret: redis_exporter's
/// `--redis.password-file` is a JSON object from Redis address to password.
pub fn exporter_password_file(store: &ValidatedStore, password: &Password) -> String {
    serde_json::json!({ exporter_redis_addr(store): password.expose() }).to_string()
}

pub fn desired_statefulset(
    store: &ValidatedStore,
    settings: &OperatorSettings,
    config_hash: &str,
) -> StatefulSet {
    let selector = pod_selector_labels(store);
    let mut containers = vec![redis_container(store, settings)];
    let mut init_containers = Vec::new();
    if store.is_highly_available() {
        init_containers.push(sentinel_init_container(store, settings));
        containers.push(sentinel_container(store));
    }
    if store.monitoring.exporter {
        containers.push(exporter_container(store));
    }
    StatefulSet {
        metadata: object_meta(
            store,
            ChildNames::statefulset(&store.name),
            Component::Redis,
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(store.replicas),
            service_name: Some(ChildNames::headless_service(&store.name)),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            // Parallel for every store (the field is immutable, so a store scaled from 1 to 3 must
            // already have it). With Sentinel, pod 0 of a brand-new store bootstraps as primary only
            // once every peer answered empty (startup.sh): under OrderedReady the peers would wait
            // for pod 0 to be ready and pod 0 for them, forever. Rolling updates still replace one
            // pod at a time; the policy only affects scaling and first creation.
            pod_management_policy: Some("Parallel".into()),
            // HA stores: OnDelete. The StatefulSet controller would restart the highest ordinal
            // first whichever pod is primary; the operator's rolling update (`ha::rollout`)
            // deletes replicas first, one at a time, then hands the primary role over and only
            // then deletes the old primary. A standalone store has one pod: nothing to order.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some(
                    if store.is_highly_available() {
                        "OnDelete"
                    } else {
                        "RollingUpdate"
                    }
                    .into(),
                ),
                rolling_update: None,
            }),
            // Sessions outlive the StatefulSet: deleting the store or scaling down keeps the volumes.
            persistent_volume_claim_retention_policy: store.persistence.uses_volume().then(|| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                }
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(store, Component::Redis)),
                    annotations: Some(BTreeMap::from([
                        (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
                        (
                            "kubectl.kubernetes.io/default-container".to_string(),
                            REDIS_CONTAINER.to_string(),
                        ),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers,
                    volumes: Some(volumes(store)),
                    security_context: Some(pod_security_context()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    node_selector: store.scheduling.node_selector.clone(),
                    tolerations: store.scheduling.tolerations.clone(),
                    affinity: store.scheduling.affinity.clone(),
                    priority_class_name: store.scheduling.priority_class_name.clone(),
                    topology_spread_constraints: topology_spread(store),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: store
                .persistence
                .uses_volume()
                .then(|| vec![data_volume_claim(store)]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// The `redis` container, memory request = limit. Standalone: `redis-server` with the mounted
/// config. With Sentinel: the safe-start script (from the ConfigMap) decides the pod's role from
/// the Sentinels and peers, writes it to a memory-backed include and execs `redis-server`.
fn redis_container(store: &ValidatedStore, settings: &OperatorSettings) -> Container {
    let mut mounts = vec![
        mount(CONFIG_VOLUME, paths::CONFIG_DIR, true),
        mount(
            &credentials_volume(REDIS_CONTAINER),
            paths::INTERNAL_SECRET_DIR,
            true,
        ),
        mount(DATA_VOLUME, paths::DATA_DIR, false),
        mount(TMP_VOLUME, "/tmp", false),
    ];
    if store.tls.is_some() {
        mounts.push(mount(TLS_VOLUME, paths::TLS_DIR, true));
    }
    // HA: a stopping primary waits (bounded) for the operator's handover before SIGTERM.
    let lifecycle = store.is_highly_available().then(|| Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(startup::pre_stop_command()),
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    });
    let (command, env) = if store.is_highly_available() {
        mounts.push(mount(RUN_VOLUME, startup::RUN_DIR, false));
        (
            startup::redis_command(),
            Some(startup::startup_env_vars(store, settings)),
        )
    } else {
        (
            vec![
                store.engine.server_binary().into(),
                format!("{}/redis.conf", paths::CONFIG_DIR),
            ],
            None,
        )
    };
    Container {
        name: REDIS_CONTAINER.into(),
        image: Some(store.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        env,
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(redis_resources(store)),
        volume_mounts: Some(mounts),
        // Slow AOF/RDB loads: liveness and readiness wait until the server listens (up to 10 min).
        startup_probe: Some(exec_probe(
            redis_cli_check(store, PingAccepts::AliveOrLoading),
            5,
            5,
            120,
        )),
        // Alive while answering, even while loading; a hung event loop fails it (a TCP probe would
        // pass on the kernel's accept backlog).
        liveness_probe: Some(exec_probe(
            redis_cli_check(store, PingAccepts::AliveOrLoading),
            10,
            5,
            6,
        )),
        // Ready only when PING answers PONG as the probe user: a loading server (`-LOADING`)
        // or a broken ACL file keeps the pod out of the Services.
        readiness_probe: Some(exec_probe(
            redis_cli_check(store, PingAccepts::PongOnly),
            5,
            3,
            2,
        )),
        security_context: Some(container_security_context()),
        // Redis's own fatal line (e.g. a refused directive) becomes the termination message.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        lifecycle,
        ..Container::default()
    }
}

/// Writes Sentinel's config into the writable, memory-backed emptyDir Sentinel rewrites: the
/// ConfigMap's template, monitoring the primary the Sentinels (or peers) currently agree on, plus
/// this pod's announce address and the Sentinel password from the internal Secret
/// (`startup.sh sentinel-init`, proven with real processes in tests/failover.rs). Runs at every
/// pod start, so a restarted pod begins from the operator's current template.
fn sentinel_init_container(store: &ValidatedStore, settings: &OperatorSettings) -> Container {
    let mut mounts = vec![
        mount(CONFIG_VOLUME, paths::CONFIG_DIR, true),
        mount(
            &credentials_volume(SENTINEL_INIT_CONTAINER),
            paths::INTERNAL_SECRET_DIR,
            true,
        ),
        mount(SENTINEL_VOLUME, paths::SENTINEL_DIR, false),
    ];
    if store.tls.is_some() {
        // The script asks the Sentinels and peers over TLS.
        mounts.push(mount(TLS_VOLUME, paths::TLS_DIR, true));
    }
    Container {
        name: SENTINEL_INIT_CONTAINER.into(),
        image: Some(store.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(startup::sentinel_init_command()),
        env: Some(startup::startup_env_vars(store, settings)),
        resources: Some(small_resources()),
        volume_mounts: Some(mounts),
        security_context: Some(container_security_context()),
        // Redis's own fatal line (e.g. a refused directive) becomes the termination message.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// The Sentinel sidecar: watches the primary and fails over (replicas >= 3).
fn sentinel_container(store: &ValidatedStore) -> Container {
    let mut mounts = vec![
        mount(SENTINEL_VOLUME, paths::SENTINEL_DIR, false),
        // `aclfile` of sentinel.conf: Sentinel's own users, hashed passwords.
        mount(
            &credentials_volume(SENTINEL_CONTAINER),
            paths::INTERNAL_SECRET_DIR,
            true,
        ),
        mount(TMP_VOLUME, "/tmp", false),
    ];
    if store.tls.is_some() {
        mounts.push(mount(TLS_VOLUME, paths::TLS_DIR, true));
    }
    // A TCP check: Sentinel's own authentication is part of its config, and a Sentinel that
    // accepts connections is one its peers can reach; the operator reads its answers itself.
    let tcp_probe = |period: i32, failures: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("sentinel".into()),
            host: None,
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Probe::default()
    };
    Container {
        name: SENTINEL_CONTAINER.into(),
        image: Some(store.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(startup::sentinel_command(store)),
        ports: Some(vec![ContainerPort {
            name: Some("sentinel".into()),
            container_port: SENTINEL_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(small_resources()),
        volume_mounts: Some(mounts),
        liveness_probe: Some(tcp_probe(10, 6)),
        readiness_probe: Some(tcp_probe(5, 2)),
        security_context: Some(container_security_context()),
        // Redis's own fatal line (e.g. a refused directive) becomes the termination message.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// Requests and limit of the small helper containers (Sentinel, its init, the exporter).
fn small_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("10m".into())),
            ("memory".to_string(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("64Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// The redis_exporter sidecar, authenticating as its own read-only `exporter` user through a
/// password file.
fn exporter_container(store: &ValidatedStore) -> Container {
    let mut args = vec![
        format!("--redis.addr={}", exporter_redis_addr(store)),
        format!("--redis.user={EXPORTER_USER}"),
        format!(
            "--redis.password-file={}/{EXPORTER_PASSWORD_FILE_KEY}",
            paths::INTERNAL_SECRET_DIR
        ),
        format!("--web.listen-address=:{METRICS_PORT}"),
    ];
    let mut mounts = vec![mount(
        &credentials_volume(EXPORTER_CONTAINER),
        paths::INTERNAL_SECRET_DIR,
        true,
    )];
    if store.tls.is_some() {
        args.extend([
            format!("--tls-ca-cert-file={}/ca.crt", paths::TLS_DIR),
            format!("--tls-client-cert-file={}/tls.crt", paths::TLS_DIR),
            format!("--tls-client-key-file={}/tls.key", paths::TLS_DIR),
            // The exporter dials `localhost`, which the store's certificate does not name; the
            // connection never leaves the pod's network namespace, so there is nobody to impersonate.
            "--skip-tls-verification".into(),
        ]);
        mounts.push(mount(TLS_VOLUME, paths::TLS_DIR, true));
    }
    Container {
        name: EXPORTER_CONTAINER.into(),
        image: Some(store.monitoring.exporter_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(small_resources()),
        volume_mounts: Some(mounts),
        security_context: Some(container_security_context()),
        ..Container::default()
    }
}

/// Memory request = limit (`spec.memory.limit`): Redis must never be the first evicted under node
/// pressure nor overcommit. CPU comes from `spec.resources`; without it a small request and no
/// CPU limit, since CFS throttling shows up as latency spikes on a single-threaded server.
fn redis_resources(store: &ValidatedStore) -> ResourceRequirements {
    let memory = Quantity(store.memory.limit.clone());
    let user = store.scheduling.resources.clone().unwrap_or_default();
    let mut requests = user.requests.unwrap_or_default();
    let mut limits = user.limits.unwrap_or_default();
    if store.scheduling.resources.is_none() {
        requests.insert("cpu".into(), Quantity("100m".into()));
    }
    requests.insert("memory".into(), memory.clone());
    limits.insert("memory".into(), memory);
    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

/// What a probe's PING may answer for the pod to pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PingAccepts {
    /// Readiness: only `PONG`.
    PongOnly,
    /// Startup and liveness: `PONG`, or `-LOADING` while the dataset loads.
    AliveOrLoading,
}

/// A `sh -c` script that PINGs Redis on loopback as the `probe` user (PING only). The password is
/// read from the mounted `probe-password` into `REDISCLI_AUTH` inside the container, so it is never
/// in the pod spec nor on a command line (`ps` would show it), and it is the only password the
/// script reads.
pub fn redis_cli_check_script(store: &ValidatedStore, accept_loading: bool) -> String {
    let mut cli = format!(
        "{} --user {PROBE_USER} -h 127.0.0.1 -p {REDIS_PORT}",
        store.engine.cli_binary()
    );
    if store.tls.is_some() {
        let dir = paths::TLS_DIR;
        cli.push_str(&format!(
            " --tls --cacert {dir}/ca.crt --cert {dir}/tls.crt --key {dir}/tls.key"
        ));
    }
    let auth = format!(
        "REDISCLI_AUTH=\"$(cat {}/{PROBE_PASSWORD_KEY})\" || exit 1; export REDISCLI_AUTH; ",
        paths::INTERNAL_SECRET_DIR
    );
    let accepted = if accept_loading {
        "PONG|LOADING*"
    } else {
        "PONG"
    };
    format!(
        "{auth}reply=\"$({cli} ping 2>&1)\"; case \"$reply\" in {accepted}) exit 0;; esac; echo \"$reply\"; exit 1"
    )
}

fn redis_cli_check(store: &ValidatedStore, accepts: PingAccepts) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        redis_cli_check_script(store, accepts == PingAccepts::AliveOrLoading),
    ]
}

fn exec_probe(command: Vec<String>, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn volumes(store: &ValidatedStore) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ChildNames::config_map(&store.name),
                default_mode: Some(CONFIG_FILE_MODE),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("16Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    for container in containers_reading_secrets(store) {
        volumes.push(credentials_volume_for(store, container));
    }
    if let Some(tls) = &store.tls {
        volumes.push(Volume {
            name: TLS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name(&store.name)),
                default_mode: Some(SECRET_FILE_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if store.is_highly_available() {
        // Sentinel rewrites its config file (learned primary, peers): it needs a writable copy.
        // Memory-backed: the file holds the Sentinel password (`sentinel auth-pass`), which must
        // not land on the node's disk. The run dir holds the start script's role include.
        for name in [SENTINEL_VOLUME, RUN_VOLUME] {
            volumes.push(Volume {
                name: name.into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity(SMALL_MEMORY_DIR.into())),
                }),
                ..Volume::default()
            });
        }
    }
    if !store.persistence.uses_volume() {
        // No persistence still writes an RDB on a replica's full sync; cap it at the memory limit
        // (a dump is smaller than the dataset in memory) so a runaway file evicts the pod, not the node.
        volumes.push(Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(store.memory.limit.clone())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

/// The internal Secret keys a container reads, and nothing else:
/// - `redis`: `users.acl` (`aclfile`), `replication.conf` (`include`, the replica's `masterauth`),
///   `probe-password` (its probes); with Sentinel also `sentinel-password` (the start script asks
///   the Sentinels and peers as the `sentinel` user);
/// - `sentinel-init`: `sentinel-password` (written into Sentinel's config);
/// - `sentinel`: `sentinel-users.acl` (its `aclfile`; its password comes with the config the init
///   container wrote), on Valkey `sentinel-users-valkey.acl` under that file name;
/// - `exporter`: `exporter-password.json` (`--redis.password-file`).
///
/// `operator-password` and `replication-password` reach no container.
pub fn internal_secret_keys(store: &ValidatedStore, container: &str) -> Vec<&'static str> {
    match container {
        REDIS_CONTAINER => {
            let mut keys = vec![USERS_ACL_KEY, REPLICATION_CONF_KEY, PROBE_PASSWORD_KEY];
            if store.is_highly_available() {
                keys.push(SENTINEL_PASSWORD_KEY);
            }
            keys
        }
        SENTINEL_INIT_CONTAINER => vec![SENTINEL_PASSWORD_KEY],
        SENTINEL_CONTAINER => vec![sentinel_users_acl_key(store.engine)],
        EXPORTER_CONTAINER => vec![EXPORTER_PASSWORD_FILE_KEY],
        _ => Vec::new(),
    }
}

/// The containers of the pod that mount internal Secret keys, in pod order.
fn containers_reading_secrets(store: &ValidatedStore) -> Vec<&'static str> {
    let mut names = Vec::new();
    if store.is_highly_available() {
        names.push(SENTINEL_INIT_CONTAINER);
    }
    names.push(REDIS_CONTAINER);
    if store.is_highly_available() {
        names.push(SENTINEL_CONTAINER);
    }
    if store.monitoring.exporter {
        names.push(EXPORTER_CONTAINER);
    }
    names
}

/// Name of a container's own credentials volume.
pub fn credentials_volume(container: &str) -> String {
    format!("{container}-credentials")
}

/// The file name an internal Secret key is mounted under.
pub fn mounted_file_name(key: &str) -> &str {
    if key == VALKEY_SENTINEL_USERS_ACL_KEY {
        SENTINEL_USERS_ACL_KEY
    } else {
        key
    }
}

/// A projected volume of the internal Secret with only [`internal_secret_keys`], each file named
/// after its key (so the config files' paths stay those of the whole Secret), except Valkey's
/// Sentinel ACL file, named as Redis's: the `sentinel.conf` template is one for both engines.
fn credentials_volume_for(store: &ValidatedStore, container: &str) -> Volume {
    Volume {
        name: credentials_volume(container),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(SECRET_FILE_MODE),
            sources: Some(vec![k8s_openapi::api::core::v1::VolumeProjection {
                secret: Some(SecretProjection {
                    name: ChildNames::internal_secret(&store.name),
                    items: Some(
                        internal_secret_keys(store, container)
                            .into_iter()
                            .map(|key| KeyToPath {
                                key: key.into(),
                                path: mounted_file_name(key).into(),
                                mode: None,
                            })
                            .collect(),
                    ),
                    optional: None,
                }),
                ..Default::default()
            }]),
        }),
        ..Volume::default()
    }
}

fn data_volume_claim(store: &ValidatedStore) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels(store, Component::Redis)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: store.persistence.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(store.persistence.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// Restricted Pod Security at pod level; every container repeats it (see `container_security_context`).
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(REDIS_UID),
        run_as_group: Some(REDIS_UID),
        fs_group: Some(REDIS_UID),
        // Only chown the volume root when it is wrong: big PVCs otherwise delay every start.
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// Restricted Pod Security on a container, complete on its own so no container relies on the pod.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(REDIS_UID),
        run_as_group: Some(REDIS_UID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The user's constraints, or by default (replicas > 1) a spread over zones and over nodes.
/// Both are `ScheduleAnyway`: a single-zone or small cluster must still run the store; the
/// scheduler still prefers spreading, and the PDB keeps voluntary disruptions to one pod.
fn topology_spread(store: &ValidatedStore) -> Option<Vec<TopologySpreadConstraint>> {
    if let Some(user) = &store.scheduling.topology_spread_constraints {
        return Some(user.clone());
    }
    (store.replicas > 1).then(|| {
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
            .into_iter()
            .map(|key| TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key.into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(pod_selector_labels(store)),
                    match_expressions: None,
                }),
                ..TopologySpreadConstraint::default()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::build::fixtures;
    use crate::build::pod_security::check_restricted;

    fn owner() -> serde_json::Value {
        fixtures::owner_references()
    }

    fn labels() -> serde_json::Value {
        fixtures::labels("redis")
    }

    fn selector() -> serde_json::Value {
        fixtures::pod_selector()
    }

    fn restricted() -> serde_json::Value {
        json!({
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 999,
            "runAsGroup": 999,
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    }

    fn probe(script: &str, period: i32, timeout: i32, failures: i32) -> serde_json::Value {
        json!({
            "exec": {"command": ["sh", "-c", script]},
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": failures,
            "successThreshold": 1
        })
    }

    /// A container's projected volume of the internal Secret with only `keys`.
    fn credentials(container: &str, keys: &[&str]) -> serde_json::Value {
        let items: Vec<_> = keys.iter().map(|k| json!({"key": k, "path": k})).collect();
        json!({"name": format!("{container}-credentials"), "projected": {
            "defaultMode": 0o440,
            "sources": [{"secret": {"name": "checkout-internal", "items": items}}]
        }})
    }

    fn small() -> serde_json::Value {
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}})
    }

    fn tcp_probe(period: i32, failures: i32) -> serde_json::Value {
        json!({
            "tcpSocket": {"port": "sentinel"},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
            "successThreshold": 1
        })
    }

    const PLAIN_READY: &str = r#"REDISCLI_AUTH="$(cat /etc/redis/internal/probe-password)" || exit 1; export REDISCLI_AUTH; reply="$(redis-cli --user probe -h 127.0.0.1 -p 6379 ping 2>&1)"; case "$reply" in PONG) exit 0;; esac; echo "$reply"; exit 1"#;
    const PLAIN_ALIVE: &str = r#"REDISCLI_AUTH="$(cat /etc/redis/internal/probe-password)" || exit 1; export REDISCLI_AUTH; reply="$(redis-cli --user probe -h 127.0.0.1 -p 6379 ping 2>&1)"; case "$reply" in PONG|LOADING*) exit 0;; esac; echo "$reply"; exit 1"#;
    const TLS_READY: &str = r#"REDISCLI_AUTH="$(cat /etc/redis/internal/probe-password)" || exit 1; export REDISCLI_AUTH; reply="$(redis-cli --user probe -h 127.0.0.1 -p 6379 --tls --cacert /etc/redis/tls/ca.crt --cert /etc/redis/tls/tls.crt --key /etc/redis/tls/tls.key ping 2>&1)"; case "$reply" in PONG) exit 0;; esac; echo "$reply"; exit 1"#;
    const TLS_ALIVE: &str = r#"REDISCLI_AUTH="$(cat /etc/redis/internal/probe-password)" || exit 1; export REDISCLI_AUTH; reply="$(redis-cli --user probe -h 127.0.0.1 -p 6379 --tls --cacert /etc/redis/tls/ca.crt --cert /etc/redis/tls/tls.crt --key /etc/redis/tls/tls.key ping 2>&1)"; case "$reply" in PONG|LOADING*) exit 0;; esac; echo "$reply"; exit 1"#;

    /// The start script's environment for the `checkout` fixture with TLS: every address is a
    /// stable headless-Service name; `SS_SELF_HOST` expands `$(POD_NAME)`, which comes first.
    fn ha_env_with_tls() -> serde_json::Value {
        let h = "checkout-headless.shop.svc.cluster.local";
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "SS_MASTER_NAME", "value": "checkout"},
            {"name": "SS_SELF_HOST", "value": format!("$(POD_NAME).{h}")},
            {"name": "SS_SELF_PORT", "value": "6379"},
            {"name": "SS_PEERS", "value": format!("checkout-0.{h}:6379 checkout-1.{h}:6379 checkout-2.{h}:6379")},
            {"name": "SS_BOOTSTRAP", "value": format!("checkout-0.{h}:6379")},
            {"name": "SS_SENTINELS", "value": format!("checkout-0.{h}:26379 checkout-1.{h}:26379 checkout-2.{h}:26379")},
            {"name": "SS_SENTINEL_PORT", "value": "26379"},
            {"name": "SS_SECRET_DIR", "value": "/etc/redis/internal"},
            {"name": "SS_RUN_DIR", "value": "/run/redis"},
            {"name": "SS_DATA_DIR", "value": "/data"},
            {"name": "SS_REDIS_CONF", "value": "/etc/redis/conf/redis.conf"},
            {"name": "SS_SENTINEL_TEMPLATE", "value": "/etc/redis/conf/sentinel.conf"},
            {"name": "SS_SENTINEL_CONF", "value": "/sentinel/sentinel.conf"},
            {"name": "SS_TLS_DIR", "value": "/etc/redis/tls"}
        ])
    }

    #[test]
    fn development_statefulset_is_one_hardened_pod_on_an_empty_dir() {
        let built = desired_statefulset(
            &fixtures::development(),
            &OperatorSettings::default(),
            "abc123",
        );
        let expected: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "checkout", "namespace": "shop", "labels": labels(), "ownerReferences": owner()},
            "spec": {
                "replicas": 1,
                "serviceName": "checkout-headless",
                "selector": {"matchLabels": selector()},
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate"},
                "revisionHistoryLimit": 5,
                "template": {
                    "metadata": {
                        "labels": labels(),
                        "annotations": {
                            "sessionstore.dev/config-hash": "abc123",
                            "kubectl.kubernetes.io/default-container": "redis"
                        }
                    },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "terminationGracePeriodSeconds": 60,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 999,
                            "runAsGroup": 999,
                            "fsGroup": 999,
                            "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}
                        },
                        "containers": [{
                            "name": "redis",
                            "image": "redis:7.2.5",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["redis-server", "/etc/redis/conf/redis.conf"],
                            "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "256Mi"},
                                "limits": {"memory": "256Mi"}
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/redis/conf", "readOnly": true},
                                {"name": "redis-credentials", "mountPath": "/etc/redis/internal", "readOnly": true},
                                {"name": "data", "mountPath": "/data"},
                                {"name": "tmp", "mountPath": "/tmp"}
                            ],
                            "startupProbe": probe(PLAIN_ALIVE, 5, 5, 120),
                            "livenessProbe": probe(PLAIN_ALIVE, 10, 5, 6),
                            "readinessProbe": probe(PLAIN_READY, 5, 3, 2),
                            "securityContext": restricted(),
                            "terminationMessagePolicy": "FallbackToLogsOnError"
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "checkout-config", "defaultMode": 0o444}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                            credentials("redis", &["users.acl", "replication.conf", "probe-password"]),
                            {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}}
                        ]
                    }
                }
            }
        }))
        .unwrap();
        assert_eq!(built, expected);
    }

    #[test]
    fn production_statefulset_with_tls_and_exporter() {
        let store = fixtures::store(
            "  tls: {enabled: true, secretName: checkout-tls}\n  monitoring: {exporter: true}\n  persistence: {size: 2Gi, storageClassName: fast}\n  resources: {requests: {cpu: 500m}, limits: {cpu: '2'}}\n  nodeSelector: {pool: redis}\n  priorityClassName: sessions\n  tolerations: [{key: dedicated, operator: Equal, value: redis, effect: NoSchedule}]\n",
        );
        let built = desired_statefulset(&store, &OperatorSettings::default(), "h");
        let spread = |key: &str| json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector()}});
        let sentinel_init = json!({
            "name": "sentinel-init",
            "image": "redis:7.2.5",
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "/etc/redis/conf/startup.sh", "sentinel-init"],
            "env": ha_env_with_tls(),
            "resources": small(),
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/redis/conf", "readOnly": true},
                {"name": "sentinel-init-credentials", "mountPath": "/etc/redis/internal", "readOnly": true},
                {"name": "sentinel", "mountPath": "/sentinel"},
                {"name": "tls", "mountPath": "/etc/redis/tls", "readOnly": true}
            ],
            "securityContext": restricted(),
            "terminationMessagePolicy": "FallbackToLogsOnError"
        });
        let redis = json!({
            "name": "redis",
            "image": "redis:7.2.5",
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "/etc/redis/conf/startup.sh", "redis"],
            "env": ha_env_with_tls(),
            "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"cpu": "2", "memory": "1Gi"}
            },
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/redis/conf", "readOnly": true},
                {"name": "redis-credentials", "mountPath": "/etc/redis/internal", "readOnly": true},
                {"name": "data", "mountPath": "/data"},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "tls", "mountPath": "/etc/redis/tls", "readOnly": true},
                {"name": "run", "mountPath": "/run/redis"}
            ],
            "startupProbe": probe(TLS_ALIVE, 5, 5, 120),
            "livenessProbe": probe(TLS_ALIVE, 10, 5, 6),
            "readinessProbe": probe(TLS_READY, 5, 3, 2),
            "lifecycle": {"preStop": {"exec": {"command": ["sh", "/etc/redis/conf/startup.sh", "prestop"]}}},
            "securityContext": restricted(),
            "terminationMessagePolicy": "FallbackToLogsOnError"
        });
        let sentinel = json!({
            "name": "sentinel",
            "image": "redis:7.2.5",
            "imagePullPolicy": "IfNotPresent",
            "command": ["redis-sentinel", "/sentinel/sentinel.conf"],
            "ports": [{"name": "sentinel", "containerPort": 26379, "protocol": "TCP"}],
            "resources": small(),
            "volumeMounts": [
                {"name": "sentinel", "mountPath": "/sentinel"},
                {"name": "sentinel-credentials", "mountPath": "/etc/redis/internal", "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "tls", "mountPath": "/etc/redis/tls", "readOnly": true}
            ],
            "livenessProbe": tcp_probe(10, 6),
            "readinessProbe": tcp_probe(5, 2),
            "securityContext": restricted(),
            "terminationMessagePolicy": "FallbackToLogsOnError"
        });
        let exporter = json!({
            "name": "exporter",
            "image": "oliver006/redis_exporter:v1.62.0",
            "imagePullPolicy": "IfNotPresent",
            "args": [
                "--redis.addr=rediss://localhost:6379",
                "--redis.user=exporter",
                "--redis.password-file=/etc/redis/internal/exporter-password.json",
                "--web.listen-address=:9121",
                "--tls-ca-cert-file=/etc/redis/tls/ca.crt",
                "--tls-client-cert-file=/etc/redis/tls/tls.crt",
                "--tls-client-key-file=/etc/redis/tls/tls.key",
                "--skip-tls-verification"
            ],
            "ports": [{"name": "metrics", "containerPort": 9121, "protocol": "TCP"}],
            "resources": small(),
            "volumeMounts": [
                {"name": "exporter-credentials", "mountPath": "/etc/redis/internal", "readOnly": true},
                {"name": "tls", "mountPath": "/etc/redis/tls", "readOnly": true}
            ],
            "securityContext": restricted()
        });
        let expected: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "checkout", "namespace": "shop", "labels": labels(), "ownerReferences": owner()},
            "spec": {
                "replicas": 3,
                "serviceName": "checkout-headless",
                "selector": {"matchLabels": selector()},
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "OnDelete"},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                "revisionHistoryLimit": 5,
                "template": {
                    "metadata": {
                        "labels": labels(),
                        "annotations": {
                            "sessionstore.dev/config-hash": "h",
                            "kubectl.kubernetes.io/default-container": "redis"
                        }
                    },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "terminationGracePeriodSeconds": 60,
                        "nodeSelector": {"pool": "redis"},
                        "priorityClassName": "sessions",
                        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "redis", "effect": "NoSchedule"}],
                        "topologySpreadConstraints": [spread("topology.kubernetes.io/zone"), spread("kubernetes.io/hostname")],
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 999,
                            "runAsGroup": 999,
                            "fsGroup": 999,
                            "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}
                        },
                        "initContainers": [sentinel_init],
                        "containers": [redis, sentinel, exporter],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "checkout-config", "defaultMode": 0o444}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                            credentials("sentinel-init", &["sentinel-password"]),
                            credentials("redis", &["users.acl", "replication.conf", "probe-password", "sentinel-password"]),
                            credentials("sentinel", &["sentinel-users.acl"]),
                            credentials("exporter", &["exporter-password.json"]),
                            {"name": "tls", "secret": {"secretName": "checkout-tls", "defaultMode": 0o440}},
                            {"name": "sentinel", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                            {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
                        ]
                    }
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data", "labels": labels()},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "fast",
                        "resources": {"requests": {"storage": "2Gi"}}
                    }
                }]
            }
        }))
        .unwrap();
        assert_eq!(built, expected);
    }

    #[test]
    fn user_topology_spread_replaces_the_default() {
        let store = fixtures::store(
            "  topologySpreadConstraints: [{maxSkew: 2, topologyKey: rack, whenUnsatisfiable: DoNotSchedule}]\n",
        );
        let spec = desired_statefulset(&store, &OperatorSettings::default(), "h")
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let constraints = spec.topology_spread_constraints.unwrap();
        assert_eq!(constraints.len(), 1);
        assert_eq!(constraints[0].topology_key, "rack");
        assert_eq!(constraints[0].max_skew, 2);
    }

    #[test]
    fn issuer_tls_mounts_the_secret_cert_manager_writes() {
        let store = fixtures::store("  tls: {enabled: true, issuerRef: {name: ca}}\n");
        let spec = desired_statefulset(&store, &OperatorSettings::default(), "h")
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let tls = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(
            tls.secret.unwrap().secret_name.as_deref(),
            Some("checkout-tls")
        );
    }

    #[test]
    fn every_rendered_pod_template_passes_the_restricted_profile() {
        for (shape, store) in fixtures::all_shapes() {
            let pod = desired_statefulset(&store, &OperatorSettings::default(), "h")
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            assert_eq!(check_restricted(&pod), Vec::<String>::new(), "{shape}");
            // Every container, init containers and sidecars included, carries the full context.
            let init = pod.init_containers.clone().unwrap_or_default();
            let names: Vec<&str> = init
                .iter()
                .chain(&pod.containers)
                .map(|c| c.name.as_str())
                .collect();
            let mut expected = vec![];
            if store.is_highly_available() {
                expected.push(SENTINEL_INIT_CONTAINER);
            }
            expected.push(REDIS_CONTAINER);
            if store.is_highly_available() {
                expected.push(SENTINEL_CONTAINER);
            }
            if store.monitoring.exporter {
                expected.push(EXPORTER_CONTAINER);
            }
            assert_eq!(names, expected, "{shape}");
            for container in init.iter().chain(&pod.containers) {
                assert_eq!(
                    container.security_context,
                    Some(container_security_context()),
                    "{shape}/{}",
                    container.name
                );
            }
        }
    }

    #[test]
    fn pod_spec_never_holds_a_password_value() {
        // Passwords reach the pod only through the mounted Secret: no Secret-backed env, no
        // literal in probes or args. The only env is the HA start script's addresses.
        let settings = OperatorSettings::default();
        for (shape, store) in fixtures::all_shapes() {
            let pod = desired_statefulset(&store, &settings, "h")
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            let init = pod.init_containers.clone().unwrap_or_default();
            for container in init.iter().chain(&pod.containers) {
                let expected_env = (store.is_highly_available()
                    && [REDIS_CONTAINER, SENTINEL_INIT_CONTAINER]
                        .contains(&container.name.as_str()))
                .then(|| startup::startup_env_vars(&store, &settings));
                assert_eq!(container.env, expected_env, "{shape}/{}", container.name);
                for var in container.env.iter().flatten() {
                    let from_secret = var
                        .value_from
                        .as_ref()
                        .is_some_and(|v| v.secret_key_ref.is_some());
                    assert!(!from_secret, "{shape}/{}: {}", container.name, var.name);
                }
                assert_eq!(container.env_from, None, "{shape}/{}", container.name);
            }
            let text = serde_json::to_string(&pod).unwrap();
            assert!(
                !text.contains("--pass")
                    && !text.contains(" -a ")
                    && !text.contains("redis.password="),
                "{shape}"
            );
        }
    }

    #[test]
    fn each_container_mounts_only_the_internal_secret_keys_it_reads() {
        for (shape, store) in fixtures::all_shapes() {
            let pod = desired_statefulset(&store, &OperatorSettings::default(), "h")
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            let volumes = pod.volumes.clone().unwrap();
            // No volume holds the whole internal Secret.
            assert!(volumes.iter().all(|v| {
                v.secret
                    .as_ref()
                    .is_none_or(|s| s.secret_name.as_deref() != Some("checkout-internal"))
            }));
            let init = pod.init_containers.clone().unwrap_or_default();
            for container in init.iter().chain(&pod.containers) {
                let mounted: Vec<&str> = container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .filter(|m| m.mount_path == paths::INTERNAL_SECRET_DIR)
                    .map(|m| m.name.as_str())
                    .collect();
                assert_eq!(mounted, [credentials_volume(&container.name)], "{shape}");
                let volume = volumes
                    .iter()
                    .find(|v| v.name == mounted[0])
                    .unwrap_or_else(|| panic!("{shape}: no volume {}", mounted[0]));
                let sources = volume.projected.as_ref().unwrap().sources.clone().unwrap();
                assert_eq!(sources.len(), 1);
                let secret = sources[0].secret.as_ref().unwrap();
                assert_eq!(secret.name, "checkout-internal");
                let keys: Vec<String> = secret
                    .items
                    .iter()
                    .flatten()
                    .map(|i| i.key.clone())
                    .collect();
                assert_eq!(
                    keys,
                    internal_secret_keys(&store, &container.name),
                    "{shape}"
                );
                for forbidden in ["operator-password", "replication-password"] {
                    assert!(
                        !keys.iter().any(|k| k == forbidden),
                        "{shape}/{}",
                        container.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_valkey_sentinel_reads_valkeys_acl_file_under_the_one_file_name() {
        let items = |spec: &str| -> Vec<(String, String)> {
            let store = fixtures::store(spec);
            let volume = credentials_volume_for(&store, SENTINEL_CONTAINER);
            volume.projected.unwrap().sources.unwrap()[0]
                .secret
                .clone()
                .unwrap()
                .items
                .unwrap()
                .into_iter()
                .map(|i| (i.key, i.path))
                .collect()
        };
        assert_eq!(
            items("  replicas: 3\n  engine: valkey\n"),
            [(
                "sentinel-users-valkey.acl".to_string(),
                "sentinel-users.acl".to_string()
            )]
        );
        assert_eq!(
            items("  replicas: 3\n"),
            [(
                "sentinel-users.acl".to_string(),
                "sentinel-users.acl".to_string()
            )]
        );
    }

    #[test]
    fn exporter_password_file_maps_the_scraped_address_to_the_password() {
        let password = Password::from_secret_value("p\"w\\x".into());
        let plain: serde_json::Value =
            serde_json::from_str(&exporter_password_file(&fixtures::development(), &password))
                .unwrap();
        assert_eq!(plain, json!({"redis://localhost:6379": "p\"w\\x"}));
        let tls_store = fixtures::store("  tls: {enabled: true, secretName: t}\n");
        let tls: serde_json::Value =
            serde_json::from_str(&exporter_password_file(&tls_store, &password)).unwrap();
        assert_eq!(tls, json!({"rediss://localhost:6379": "p\"w\\x"}));
    }

    #[test]
    fn config_hash_changes_with_config_and_acl_rules_only() {
        let store = fixtures::production();
        let cm = |conf: &str| ConfigMap {
            data: Some(BTreeMap::from([(
                "redis.conf".to_string(),
                conf.to_string(),
            )])),
            ..ConfigMap::default()
        };
        let base = config_hash(&store, &cm("maxmemory 1"));
        assert_eq!(base, config_hash(&store, &cm("maxmemory 1")));
        assert_ne!(base, config_hash(&store, &cm("maxmemory 2")));
        let more_denied = fixtures::store("  disabledCommands: [sort]\n");
        assert_ne!(base, config_hash(&more_denied, &cm("maxmemory 1")));
    }
}
