//! The names the builders share (Secret and ConfigMap keys, the metrics port): one leaf module, so
//! the builder of one child never imports the builder of another just for a name.

// Internal Secret keys (mounted at `paths::INTERNAL_SECRET_DIR`).
pub const USERS_ACL_KEY: &str = "users.acl";
pub const REPLICATION_CONF_KEY: &str = "replication.conf";
pub const OPERATOR_PASSWORD_KEY: &str = "operator-password";
pub const REPLICATION_PASSWORD_KEY: &str = "replication-password";
pub const SENTINEL_PASSWORD_KEY: &str = "sentinel-password";
/// The kubelet probes' password (the `probe` user: PING only).
pub const PROBE_PASSWORD_KEY: &str = "probe-password";

/// ConfigMap key of the Sentinel template.
pub const SENTINEL_CONF_KEY: &str = "sentinel.conf";
/// Internal Secret key of Sentinel's own ACL file (hashed passwords only), and the file name every
/// Sentinel reads it under (`aclfile` in the template).
pub const SENTINEL_USERS_ACL_KEY: &str = "sentinel-users.acl";
/// Internal Secret key of the ACL file of Valkey's Sentinels: the same users with, beside Redis's
/// command names, the names Valkey added (`SENTINEL GET-PRIMARY-ADDR-BY-NAME`, `PRIMARY`,
/// `PRIMARIES`), so a client written for Valkey is not refused. A key of its own, which a Valkey
/// pod mounts under [`SENTINEL_USERS_ACL_KEY`]'s file name: Redis's Sentinel refuses to start on
/// an ACL file naming a subcommand it does not know (checked on redis-sentinel 7.0), and while a
/// store switches from Redis to Valkey its Redis pods still read `SENTINEL_USERS_ACL_KEY`.
pub const VALKEY_SENTINEL_USERS_ACL_KEY: &str = "sentinel-users-valkey.acl";

/// ConfigMap key of the start script.
pub const STARTUP_SCRIPT_KEY: &str = "startup.sh";

/// Port of the redis_exporter's `/metrics`.
pub const METRICS_PORT: i32 = 9121;
/// Key of the internal Secret holding redis_exporter's password file: a JSON object mapping the
/// exporter's Redis address (`statefulset::exporter_redis_addr`) to the `exporter` user's
/// password, which is the format `--redis.password-file` reads.
pub const EXPORTER_PASSWORD_FILE_KEY: &str = "exporter-password.json";
