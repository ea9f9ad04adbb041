//! Parses the text of Redis `INFO` into the figures the operator reports, and folds the per-pod
//! figures of one store into its `status.health`. Pure: no I/O, so it is tested on real INFO text.

use std::collections::BTreeMap;

use crate::crd::{EvictionPolicy, HealthStatus, PodHealth};

/// What one Redis server said about itself in `INFO server memory clients stats replication
/// keyspace persistence`. Every field is optional because Valkey and older Redis versions omit
/// some, and a missing figure must show as missing rather than as zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RedisInfo {
    /// `redis_version`: Redis's version, or on Valkey the Redis version it is compatible with
    /// (Valkey 8.0.1 says 7.2.4), so never the way to tell versions apart.
    pub redis_version: Option<String>,
    /// The server as it names itself: `server_name` (`valkey`); `redis` when it names none but
    /// reports a `redis_version` (Redis has no `server_name`).
    pub engine: Option<String>,
    /// The server's own version: `<server_name>_version` (`valkey_version`) when it names itself,
    /// else `redis_version`.
    pub version: Option<String>,
    pub role: Option<Role>,
    /// `loading:1`: the server is reading its RDB/AOF and refuses most commands.
    pub loading: bool,
    pub used_memory: Option<u64>,
    /// 0 means "no limit" in Redis.
    pub maxmemory: Option<u64>,
    /// The policy the server actually runs with (may differ from the spec while a config rolls).
    pub maxmemory_policy: Option<String>,
    pub connected_clients: Option<u64>,
    pub rejected_connections: Option<u64>,
    pub keyspace_hits: Option<u64>,
    pub keyspace_misses: Option<u64>,
    pub evicted_keys: Option<u64>,
    pub expired_keys: Option<u64>,
    /// Replicas only: `master_link_status:up|down`.
    pub master_link_up: Option<bool>,
    /// Sum of `keys=` over every `dbN` line (0 when the keyspace section is empty).
    pub keys: u64,
    /// Sum of `expires=` (keys with a TTL) over every `dbN` line.
    pub keys_with_ttl: u64,
}

/// A server's replication role as INFO reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl RedisInfo {
    /// Parses INFO output. Unknown fields and sections are ignored; malformed numbers leave the
    /// figure missing (`None`) instead of failing the whole probe.
    pub fn parse(text: &str) -> RedisInfo {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        let mut info = RedisInfo::default();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if is_db_line(key) {
                let (keys, expires) = parse_keyspace_value(value);
                info.keys += keys;
                info.keys_with_ttl += expires;
            } else {
                fields.insert(key, value);
            }
        }
        let number = |key: &str| fields.get(key).and_then(|v| v.trim().parse::<u64>().ok());
        let text = |key: &str| {
            fields
                .get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        info.redis_version = text("redis_version");
        match text("server_name") {
            Some(name) => {
                info.version = text(&format!("{name}_version")).or(info.redis_version.clone());
                info.engine = Some(name);
            }
            None => {
                info.engine = info.redis_version.as_ref().map(|_| "redis".to_string());
                info.version = info.redis_version.clone();
            }
        }
        info.role = match fields.get("role").map(|v| v.trim()) {
            Some("master") => Some(Role::Primary),
            Some("slave") | Some("replica") => Some(Role::Replica),
            _ => None,
        };
        info.loading = number("loading") == Some(1) || number("async_loading") == Some(1);
        info.used_memory = number("used_memory");
        info.maxmemory = number("maxmemory");
        info.maxmemory_policy = fields.get("maxmemory_policy").map(|v| v.trim().to_string());
        info.connected_clients = number("connected_clients");
        info.rejected_connections = number("rejected_connections");
        info.keyspace_hits = number("keyspace_hits");
        info.keyspace_misses = number("keyspace_misses");
        info.evicted_keys = number("evicted_keys");
        info.expired_keys = number("expired_keys");
        info.master_link_up = match fields.get("master_link_status").map(|v| v.trim()) {
            Some("up") => Some(true),
            Some("down") => Some(false),
            _ => None,
        };
        info
    }

    /// Keys with no TTL: under a `volatile-*` policy these are never evicted.
    pub fn keys_without_ttl(&self) -> u64 {
        self.keys.saturating_sub(self.keys_with_ttl)
    }

    /// The running eviction policy, when it is one of the eight Redis knows.
    pub fn eviction_policy(&self) -> Option<EvictionPolicy> {
        let policy = self.maxmemory_policy.as_deref()?;
        [
            EvictionPolicy::Noeviction,
            EvictionPolicy::AllkeysLru,
            EvictionPolicy::AllkeysLfu,
            EvictionPolicy::AllkeysRandom,
            EvictionPolicy::VolatileLru,
            EvictionPolicy::VolatileLfu,
            EvictionPolicy::VolatileRandom,
            EvictionPolicy::VolatileTtl,
        ]
        .into_iter()
        .find(|p| p.as_redis() == policy)
    }

    /// `keyspace_hits / (hits + misses)`, or `None` before the first lookup (0/0 is not a rate).
    pub fn hit_ratio(&self) -> Option<f64> {
        let hits = self.keyspace_hits?;
        let total = hits + self.keyspace_misses?;
        (total > 0).then(|| hits as f64 / total as f64)
    }
}

fn is_db_line(key: &str) -> bool {
    key.strip_prefix("db")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `keys=7,expires=5,avg_ttl=299235[,subexpiry=0]` -> (7, 5).
fn parse_keyspace_value(value: &str) -> (u64, u64) {
    let mut keys = 0;
    let mut expires = 0;
    for part in value.trim().split(',') {
        match part.split_once('=') {
            Some(("keys", n)) => keys = n.parse().unwrap_or(0),
            Some(("expires", n)) => expires = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    (keys, expires)
}

/// Formats a ratio as the status string: 4 decimal places, so equal rates compare equal.
pub fn format_ratio(ratio: f64) -> String {
    format!("{:.4}", ratio.clamp(0.0, 1.0))
}

/// Why a pod could not be read. Each says calmly what happened, never with a secret in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodProblem {
    /// The pod has no IP yet (scheduling, pulling the image, starting): not an error.
    NotRunning,
    /// TCP connection refused: nothing listens on the Redis port (starting, crashed, wrong port).
    ConnectionRefused,
    /// No TCP answer within the connect timeout (network policy, overloaded node, pod gone).
    ConnectTimeout,
    /// Another network error while connecting (its kind, no addresses of secrets).
    ConnectFailed(String),
    /// The TLS handshake failed (certificate not signed by the store's CA, or not for this store).
    TlsFailed(String),
    /// Redis refused the operator's ACL user (wrong password, user missing or disabled).
    AuthRefused,
    /// Redis refused a command to the operator's user (ACL without `+info`/`+ping`).
    CommandRefused(String),
    /// Connected, but Redis did not answer within the command timeout.
    CommandTimeout,
    /// Any other Redis error (its kind and code only).
    Other(String),
}

impl PodProblem {
    /// A short phrase for a condition message: "connection refused", "timed out connecting", ...
    pub fn describe(&self) -> String {
        match self {
            PodProblem::NotRunning => "not running yet (no pod IP)".into(),
            PodProblem::ConnectionRefused => "connection refused on the Redis port".into(),
            PodProblem::ConnectTimeout => "no answer to the connection within the timeout".into(),
            PodProblem::ConnectFailed(kind) => format!("connection failed ({kind})"),
            PodProblem::TlsFailed(why) => format!("TLS handshake failed ({why})"),
            PodProblem::AuthRefused => {
                "Redis refused the operator's ACL user (wrong password, or user missing or disabled)".into()
            }
            PodProblem::CommandRefused(why) => format!("Redis refused a health command to the operator's user ({why})"),
            PodProblem::CommandTimeout => "connected, but Redis did not answer within the timeout".into(),
            PodProblem::Other(why) => format!("Redis error ({why})"),
        }
    }
}

/// One pod's result: its INFO, or why it could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct PodObservation {
    pub name: String,
    /// Whether Kubernetes reported the pod Ready.
    pub ready: bool,
    pub result: Result<RedisInfo, PodProblem>,
}

/// Every pod of one store, as probed at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreObservation {
    pub pods: Vec<PodObservation>,
}

impl StoreObservation {
    /// The pod whose figures stand for the store: the (first by name) pod reporting `role:master`,
    /// or the only pod of a standalone store. `None` when no pod answered as primary.
    pub fn primary(&self) -> Option<(&str, &RedisInfo)> {
        let mut primaries: Vec<(&str, &RedisInfo)> = self
            .pods
            .iter()
            .filter_map(|p| match &p.result {
                Ok(info) if info.role == Some(Role::Primary) => Some((p.name.as_str(), info)),
                _ => None,
            })
            .collect();
        primaries.sort_by(|a, b| a.0.cmp(b.0));
        primaries.into_iter().next()
    }

    /// The store's `status.health`: memory, clients, keyspace and counters from the primary,
    /// the pod list from every pod. Figures are absent (not zero) when no primary answered.
    pub fn health_status(&self) -> HealthStatus {
        let primary = self.primary().map(|(_, info)| info);
        let int = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut pods: Vec<PodHealth> = self
            .pods
            .iter()
            .map(|p| match &p.result {
                Ok(info) => PodHealth {
                    name: p.name.clone(),
                    role: match info.role {
                        Some(Role::Replica) => "replica".into(),
                        _ => "primary".into(),
                    },
                    replica_link_up: if info.role == Some(Role::Replica) {
                        Some(info.master_link_up.unwrap_or(false))
                    } else {
                        None
                    },
                },
                Err(_) => PodHealth {
                    name: p.name.clone(),
                    role: "unreachable".into(),
                    replica_link_up: None,
                },
            })
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        HealthStatus {
            used_memory_bytes: int(primary.and_then(|i| i.used_memory)),
            max_memory_bytes: int(primary.and_then(|i| i.maxmemory)),
            connected_clients: int(primary.and_then(|i| i.connected_clients)),
            session_keys: int(primary.map(|i| i.keys)),
            keys_without_ttl: int(primary.map(|i| i.keys_without_ttl())),
            hit_rate: primary.and_then(|i| i.hit_ratio()).map(format_ratio),
            evicted_keys: int(primary.and_then(|i| i.evicted_keys)),
            expired_keys: int(primary.and_then(|i| i.expired_keys)),
            redis_version: primary.and_then(|i| i.redis_version.clone()),
            engine: primary.and_then(|i| i.engine.clone()),
            version: primary.and_then(|i| i.version.clone()),
            pods,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured with `redis-cli INFO server memory clients stats replication keyspace persistence`
    // from redis-server 7.0.15 (Debian): a primary with maxmemory 2mb volatile-lru, 5 keys with a
    // TTL and 2 without, 2 hits and 1 miss; its replica; the replica after the primary stopped.
    const PRIMARY: &str = include_str!("testdata/info_primary_7_0.txt");
    const REPLICA: &str = include_str!("testdata/info_replica_7_0.txt");
    const REPLICA_LINK_DOWN: &str = include_str!("testdata/info_replica_link_down_7_0.txt");
    // The same captures from valkey-server 8.0.1 (the same store, keys, hits and misses; the
    // replica with its link up). Its `INFO server` says `redis_version:7.2.4` (the Redis version
    // it is compatible with), `server_name:valkey`, `valkey_version:8.0.1`, `server_mode`.
    const VALKEY_PRIMARY: &str = include_str!("testdata/info_primary_valkey_8_0.txt");
    const VALKEY_REPLICA: &str = include_str!("testdata/info_replica_valkey_8_0.txt");

    #[test]
    fn parses_a_real_primary() {
        let info = RedisInfo::parse(PRIMARY);
        assert_eq!(info.redis_version.as_deref(), Some("7.0.15"));
        assert_eq!(info.role, Some(Role::Primary));
        assert!(!info.loading);
        assert_eq!(info.maxmemory, Some(2 * 1024 * 1024));
        assert_eq!(info.eviction_policy(), Some(EvictionPolicy::VolatileLru));
        assert_eq!(
            (info.keys, info.keys_with_ttl, info.keys_without_ttl()),
            (7, 5, 2)
        );
        assert_eq!(
            (info.keyspace_hits, info.keyspace_misses),
            (Some(2), Some(1))
        );
        assert_eq!(info.evicted_keys, Some(0));
        assert!(info.used_memory.is_some_and(|m| m > 100_000));
        assert!(info.connected_clients.is_some_and(|c| c >= 1));
        assert_eq!(info.master_link_up, None);
        assert_eq!(
            info.hit_ratio().map(format_ratio).as_deref(),
            Some("0.6667")
        );
    }

    #[test]
    fn the_server_names_its_engine_and_version() {
        let redis = RedisInfo::parse(PRIMARY);
        assert_eq!(redis.engine.as_deref(), Some("redis"));
        assert_eq!(redis.version.as_deref(), Some("7.0.15"));
        let valkey = RedisInfo::parse(VALKEY_PRIMARY);
        assert_eq!(valkey.engine.as_deref(), Some("valkey"));
        assert_eq!(
            valkey.version.as_deref(),
            Some("8.0.1"),
            "valkey_version, not the compatibility string"
        );
        assert_eq!(valkey.redis_version.as_deref(), Some("7.2.4"));
        // A server that names itself without a version of its own falls back to redis_version.
        let other = RedisInfo::parse("# Server\r\nredis_version:7.2.4\r\nserver_name:fork\r\n");
        assert_eq!(
            (other.engine.as_deref(), other.version.as_deref()),
            (Some("fork"), Some("7.2.4"))
        );
        let nothing = RedisInfo::parse("# Replication\r\nrole:master\r\n");
        assert_eq!((nothing.engine, nothing.version), (None, None));
    }

    #[test]
    fn parses_a_real_valkey_primary_and_replica_like_redis() {
        let primary = RedisInfo::parse(VALKEY_PRIMARY);
        assert_eq!(primary.role, Some(Role::Primary));
        assert!(!primary.loading);
        assert_eq!(primary.maxmemory, Some(2 * 1024 * 1024));
        assert_eq!(primary.eviction_policy(), Some(EvictionPolicy::VolatileLru));
        assert_eq!(
            (
                primary.keys,
                primary.keys_with_ttl,
                primary.keys_without_ttl()
            ),
            (7, 5, 2)
        );
        assert_eq!(
            primary.hit_ratio().map(format_ratio).as_deref(),
            Some("0.6667")
        );
        assert_eq!(primary.evicted_keys, Some(0));
        assert!(primary.used_memory.is_some_and(|m| m > 100_000));
        assert!(primary.connected_clients.is_some_and(|c| c >= 1));
        assert_eq!(primary.master_link_up, None);
        let replica = RedisInfo::parse(VALKEY_REPLICA);
        assert_eq!(replica.role, Some(Role::Replica));
        assert_eq!(replica.master_link_up, Some(true));
        assert_eq!(replica.keys, 7);
    }

    #[test]
    fn health_names_the_primarys_engine_and_own_version() {
        let pod = |name: &str, text: &str| PodObservation {
            name: name.into(),
            ready: true,
            result: Ok(RedisInfo::parse(text)),
        };
        let valkey = StoreObservation {
            pods: vec![pod("s-0", VALKEY_REPLICA), pod("s-1", VALKEY_PRIMARY)],
        }
        .health_status();
        assert_eq!(valkey.engine.as_deref(), Some("valkey"));
        assert_eq!(valkey.version.as_deref(), Some("8.0.1"));
        assert_eq!(valkey.redis_version.as_deref(), Some("7.2.4"));
        assert_eq!(valkey.session_keys, Some(7));
        // Mid-switch: the figures come from the primary, whatever the replicas run.
        let switching = StoreObservation {
            pods: vec![pod("s-0", VALKEY_REPLICA), pod("s-1", PRIMARY)],
        }
        .health_status();
        assert_eq!(
            (switching.engine.as_deref(), switching.version.as_deref()),
            (Some("redis"), Some("7.0.15"))
        );
        let serialized = serde_json::to_value(&valkey).expect("serializes");
        assert_eq!(serialized["engine"], "valkey");
        assert_eq!(serialized["version"], "8.0.1");
        assert_eq!(serialized["redisVersion"], "7.2.4");
    }

    #[test]
    fn parses_replica_link_up_and_down() {
        let up = RedisInfo::parse(REPLICA);
        assert_eq!(up.role, Some(Role::Replica));
        assert_eq!(up.master_link_up, Some(true));
        assert_eq!(up.keys, 7, "the replica holds the primary's keys");
        let down = RedisInfo::parse(REPLICA_LINK_DOWN);
        assert_eq!(down.role, Some(Role::Replica));
        assert_eq!(down.master_link_up, Some(false));
    }

    #[test]
    fn detects_loading_and_sums_every_db() {
        let text = PRIMARY.replace("loading:0", "loading:1")
            + "db3:keys=10,expires=1,avg_ttl=0,subexpiry=0\r\n";
        let info = RedisInfo::parse(&text);
        assert!(info.loading);
        assert_eq!(
            (info.keys, info.keys_with_ttl, info.keys_without_ttl()),
            (17, 6, 11)
        );
    }

    #[test]
    fn missing_figures_stay_missing() {
        let info = RedisInfo::parse(
            "# Server\r\nredis_version:7.2.4\r\nused_memory:abc\r\n# Keyspace\r\n",
        );
        assert_eq!(info.used_memory, None, "a malformed number is not zero");
        assert_eq!(info.hit_ratio(), None);
        assert_eq!(info.keys, 0);
        assert_eq!(info.role, None);
        assert_eq!(info.eviction_policy(), None);
    }

    #[test]
    fn ratio_is_rounded_to_four_places() {
        assert_eq!(format_ratio(0.95), "0.9500");
        assert_eq!(format_ratio(1.0 / 3.0), "0.3333");
        assert_eq!(format_ratio(0.99996), "1.0000");
        assert_eq!(format_ratio(0.0), "0.0000");
    }

    #[test]
    fn health_comes_from_the_primary_and_lists_every_pod() {
        let observation = StoreObservation {
            pods: vec![
                PodObservation {
                    name: "s-1".into(),
                    ready: true,
                    result: Ok(RedisInfo::parse(REPLICA_LINK_DOWN)),
                },
                PodObservation {
                    name: "s-0".into(),
                    ready: true,
                    result: Ok(RedisInfo::parse(PRIMARY)),
                },
                PodObservation {
                    name: "s-2".into(),
                    ready: false,
                    result: Err(PodProblem::ConnectionRefused),
                },
            ],
        };
        let health = observation.health_status();
        assert_eq!(
            health.max_memory_bytes,
            Some(2 * 1024 * 1024),
            "the replica reports maxmemory 0"
        );
        assert_eq!(health.session_keys, Some(7));
        assert_eq!(health.keys_without_ttl, Some(2));
        assert_eq!(health.hit_rate.as_deref(), Some("0.6667"));
        assert_eq!(health.redis_version.as_deref(), Some("7.0.15"));
        assert_eq!(health.engine.as_deref(), Some("redis"));
        assert_eq!(health.version.as_deref(), Some("7.0.15"));
        assert_eq!(
            health.pods,
            vec![
                PodHealth {
                    name: "s-0".into(),
                    role: "primary".into(),
                    replica_link_up: None
                },
                PodHealth {
                    name: "s-1".into(),
                    role: "replica".into(),
                    replica_link_up: Some(false)
                },
                PodHealth {
                    name: "s-2".into(),
                    role: "unreachable".into(),
                    replica_link_up: None
                },
            ]
        );
    }

    #[test]
    fn no_primary_means_no_figures() {
        let observation = StoreObservation {
            pods: vec![PodObservation {
                name: "s-0".into(),
                ready: false,
                result: Err(PodProblem::NotRunning),
            }],
        };
        let health = observation.health_status();
        assert_eq!(health.used_memory_bytes, None);
        assert_eq!(health.session_keys, None);
        assert_eq!((health.engine, health.version), (None, None));
        assert_eq!(health.pods.len(), 1);
        assert_eq!(health.pods[0].role, "unreachable");
    }
}
