//! The pod start script of highly available stores (`startup.sh`, shipped in the ConfigMap) and
//! the environment the StatefulSet gives it.
//!
//! It decides a starting pod's role before Redis runs, so that an empty pod never becomes the
//! primary while a replica holds sessions (the data-loss bug of naive Redis operators), and it
//! writes the Sentinel's writable config. The script reads every address from the environment, so
//! the tests run the very same text against loopback processes.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};

use crate::build::meta::{ChildNames, paths};
use crate::build::sentinel::{self, master_name};
use crate::crd::Engine;
use crate::settings::OperatorSettings;
use crate::validate::{REDIS_PORT, SENTINEL_PORT, ValidatedStore};

/// ConfigMap key of the script (defined with the other shared names).
use crate::build::keys::{SENTINEL_CONF_KEY, STARTUP_SCRIPT_KEY};
/// The script text (POSIX sh; needs `redis-cli`, `sed`, `grep`, `tr`; uses `timeout` if present).
pub const STARTUP_SCRIPT: &str = include_str!("startup.sh");
/// Writable directory (emptyDir) for the generated `ha.conf` include.
pub const RUN_DIR: &str = "/run/redis";
/// Env var the downward API fills with the pod name.
pub const POD_NAME_ENV: &str = "POD_NAME";

/// Command of the Redis container.
pub fn redis_command() -> Vec<String> {
    vec![
        "sh".into(),
        format!("{}/{STARTUP_SCRIPT_KEY}", paths::CONFIG_DIR),
        "redis".into(),
    ]
}

/// Command of the Sentinel init container (writes `sentinel.conf` into the Sentinel emptyDir).
pub fn sentinel_init_command() -> Vec<String> {
    vec![
        "sh".into(),
        format!("{}/{STARTUP_SCRIPT_KEY}", paths::CONFIG_DIR),
        "sentinel-init".into(),
    ]
}

/// The Redis container's preStop hook: a primary with connected replicas waits, bounded by
/// `ha::disruption::PRESTOP_WAIT`, until the operator has handed the role over.
pub fn pre_stop_command() -> Vec<String> {
    vec![
        "sh".into(),
        format!("{}/{STARTUP_SCRIPT_KEY}", paths::CONFIG_DIR),
        "prestop".into(),
    ]
}

/// Command of the Sentinel sidecar (the engine's Sentinel binary).
pub fn sentinel_command(store: &ValidatedStore) -> Vec<String> {
    vec![
        store.engine.sentinel_binary().into(),
        format!("{}/{}", paths::SENTINEL_DIR, SENTINEL_CONF_KEY),
    ]
}

/// The script's variables besides `POD_NAME`, as (name, value). `SS_SELF_HOST` uses Kubernetes'
/// `$(POD_NAME)` expansion, so `POD_NAME` must come first (see [`startup_env_vars`]).
pub fn startup_env(store: &ValidatedStore, settings: &OperatorSettings) -> Vec<(String, String)> {
    let headless = format!(
        "{}.{}.svc.{}",
        ChildNames::headless_service(&store.name),
        store.namespace,
        settings.cluster_domain
    );
    let peers: Vec<String> = (0..store.replicas)
        .map(|i| format!("{}:{REDIS_PORT}", sentinel::pod_fqdn(store, i, settings)))
        .collect();
    let mut env = vec![
        ("SS_MASTER_NAME", master_name(store)),
        ("SS_SELF_HOST", format!("$({POD_NAME_ENV}).{headless}")),
        ("SS_SELF_PORT", REDIS_PORT.to_string()),
        ("SS_PEERS", peers.join(" ")),
        (
            "SS_BOOTSTRAP",
            format!("{}:{REDIS_PORT}", sentinel::pod_fqdn(store, 0, settings)),
        ),
        (
            "SS_SENTINELS",
            sentinel::sentinel_addresses(store, settings).join(" "),
        ),
        ("SS_SENTINEL_PORT", SENTINEL_PORT.to_string()),
        ("SS_SECRET_DIR", paths::INTERNAL_SECRET_DIR.to_string()),
        ("SS_RUN_DIR", RUN_DIR.to_string()),
        ("SS_DATA_DIR", paths::DATA_DIR.to_string()),
        ("SS_REDIS_CONF", format!("{}/redis.conf", paths::CONFIG_DIR)),
        (
            "SS_SENTINEL_TEMPLATE",
            format!("{}/{}", paths::CONFIG_DIR, SENTINEL_CONF_KEY),
        ),
        (
            "SS_SENTINEL_CONF",
            format!("{}/{}", paths::SENTINEL_DIR, SENTINEL_CONF_KEY),
        ),
    ];
    if store.tls.is_some() {
        env.push(("SS_TLS_DIR", paths::TLS_DIR.to_string()));
    }
    // Redis's names are the script's defaults, so a Redis store's pod template stays as it was.
    if store.engine != Engine::Redis {
        env.push(("SS_SERVER_BIN", store.engine.server_binary().to_string()));
        env.push(("SS_CLI_BIN", store.engine.cli_binary().to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The container env: `POD_NAME` from the downward API, then [`startup_env`].
pub fn startup_env_vars(store: &ValidatedStore, settings: &OperatorSettings) -> Vec<EnvVar> {
    let pod_name = EnvVar {
        name: POD_NAME_ENV.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    std::iter::once(pod_name)
        .chain(
            startup_env(store, settings)
                .into_iter()
                .map(|(name, value)| EnvVar {
                    name,
                    value: Some(value),
                    ..EnvVar::default()
                }),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::sentinel::tests::store;

    fn env_value(env: &[(String, String)], key: &str) -> String {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    #[test]
    fn env_names_every_pod_and_sentinel_by_headless_dns() {
        let env = startup_env(&store("  replicas: 3\n"), &OperatorSettings::default());
        let h = "checkout-headless.shop.svc.cluster.local";
        assert_eq!(
            env_value(&env, "SS_PEERS"),
            format!("checkout-0.{h}:6379 checkout-1.{h}:6379 checkout-2.{h}:6379")
        );
        assert_eq!(
            env_value(&env, "SS_SENTINELS"),
            format!("checkout-0.{h}:26379 checkout-1.{h}:26379 checkout-2.{h}:26379")
        );
        assert_eq!(
            env_value(&env, "SS_BOOTSTRAP"),
            format!("checkout-0.{h}:6379")
        );
        assert_eq!(env_value(&env, "SS_SELF_HOST"), format!("$(POD_NAME).{h}"));
        assert_eq!(env_value(&env, "SS_MASTER_NAME"), "checkout");
        assert!(env.iter().all(|(k, _)| k != "SS_TLS_DIR"));
    }

    #[test]
    fn pod_name_comes_first_so_kubernetes_expands_it() {
        let vars = startup_env_vars(&store("  replicas: 3\n"), &OperatorSettings::default());
        assert_eq!(vars[0].name, POD_NAME_ENV);
        let field = vars[0]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone());
        assert_eq!(field.as_deref(), Some("metadata.name"));
    }

    #[test]
    fn tls_store_gives_the_script_its_certificates() {
        let env = startup_env(
            &store("  replicas: 3\n  tls: {enabled: true, secretName: checkout-tls}\n"),
            &OperatorSettings::default(),
        );
        assert_eq!(env_value(&env, "SS_TLS_DIR"), paths::TLS_DIR);
    }

    #[test]
    fn script_reads_credentials_from_files_and_never_from_argv() {
        // Passwords reach redis-cli through REDISCLI_AUTH and redis-server through a 0600 include.
        assert!(STARTUP_SCRIPT.contains("export REDISCLI_AUTH"));
        assert!(!STARTUP_SCRIPT.contains("--pass"));
        assert!(!STARTUP_SCRIPT.contains(" -a "));
        assert!(STARTUP_SCRIPT.contains("umask 077"));
    }

    #[test]
    fn replication_credentials_come_from_redis_conf_only() {
        // redis.conf includes the internal Secret's replication.conf; a second masterauth in the
        // script's include would be a second copy of the password that could drift from the first.
        assert!(!STARTUP_SCRIPT.contains("masterauth"));
        assert!(!STARTUP_SCRIPT.contains("masteruser"));
        assert!(!STARTUP_SCRIPT.contains("replication-password"));
    }

    #[test]
    fn script_is_valid_posix_sh() {
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(STARTUP_SCRIPT)
            .status()
            .expect("sh runs");
        assert!(status.success());
    }
}
