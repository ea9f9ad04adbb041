//! Deliberate handover of the primary role, for the rolling update and the scale-down guard: the
//! operator pauses writes on the primary, waits until a replica has every write, then asks a
//! Sentinel to fail over, so no acknowledged write is lost and no pod dies while it is primary.
//!
//! The reconcile sees it through the [`Handover`] trait so mocked-API tests can inject answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::build::StoreCredentials;
use crate::build::acl::OPERATOR_USER;
use crate::build::sentinel::{master_name, pod_fqdn, sentinel_addresses};
use crate::ha::primary::split_host_port;
use crate::ha::step::AddressFn;
use crate::password::Password;
use crate::settings::OperatorSettings;
use crate::validate::{REDIS_PORT, ValidatedStore};

/// What the reconcile asks for.
pub struct HandoverRequest<'a> {
    pub store: &'a ValidatedStore,
    pub settings: &'a OperatorSettings,
    pub credentials: &'a StoreCredentials,
    /// The store CA for TLS stores (Redis and Sentinel are dialled over TLS with it).
    pub tls_ca: Option<&'a [u8]>,
    /// The pod a majority of Sentinels names as primary now.
    pub primary: &'a str,
    /// Pods that must not become primary (those a scale-down is about to remove).
    pub avoid: &'a [String],
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoverOutcome {
    /// Writes were paused, a replica had caught up, and a Sentinel accepted `SENTINEL FAILOVER`.
    /// The new primary shows up in a later discovery.
    Started { message: String },
    /// Nothing was changed (no caught-up replica, a failover already in progress, a Sentinel or
    /// the primary unreachable): try again on a later reconcile. The message says why, without
    /// any secret.
    NotNow { message: String },
}

/// The handover, injectable.
pub trait Handover: Send + Sync {
    fn hand_over<'a>(&'a self, request: HandoverRequest<'a>) -> BoxFuture<'a, HandoverOutcome>;
}

/// Where the operator dials a pod's Redis (`host:port`) for a store; `None` for a name that is not
/// one of its pods.
pub type PodAddressFn =
    dyn Fn(&ValidatedStore, &OperatorSettings, &str) -> Option<String> + Send + Sync;

/// The bounds of one handover attempt.
#[derive(Clone, Debug)]
pub struct HandoverTiming {
    /// `CLIENT PAUSE <ms> WRITE` on the primary: covers the Sentinel promotion and the old
    /// primary's demotion (done by the operator right after the promotion, so it is rarely
    /// reached), and ends on its own if the operator dies meanwhile.
    pub pause: Duration,
    /// How long a replica may take to reach the primary's offset once writes are paused
    /// (replicas acknowledge their offset every second).
    pub catch_up: Duration,
    /// How long to wait, after a Sentinel accepted, for the Sentinels to name the new primary.
    pub promotion: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl Default for HandoverTiming {
    fn default() -> Self {
        HandoverTiming {
            pause: Duration::from_secs(10),
            catch_up: Duration::from_millis(2500),
            promotion: Duration::from_secs(8),
            connect_timeout: Duration::from_millis(1000),
            response_timeout: Duration::from_millis(1000),
        }
    }
}

/// The real handover: pause writes, wait for a caught-up replica, `SENTINEL FAILOVER`, demote the
/// old primary as soon as the Sentinels name the new one.
///
/// Why not Redis's own `FAILOVER`: under Sentinel, the Sentinels see the old primary come back as a
/// replica and fail over again (redis/redis#13118). Why not `SENTINEL FAILOVER` alone: the old
/// primary keeps acknowledging writes between the promotion and its reconfiguration, and those
/// writes are lost. Paused writes are not lost: they wait, then fail with READONLY once the old
/// primary is a replica, and the client retries on the new primary.
pub struct SentinelHandover {
    redis_address: Arc<PodAddressFn>,
    sentinels: Arc<AddressFn>,
    pub timing: HandoverTiming,
}

impl SentinelHandover {
    /// The pods' headless DNS names: what the operator dials in the cluster.
    pub fn in_cluster() -> Self {
        Self::with_addresses(
            Arc::new(
                |store: &ValidatedStore, settings: &OperatorSettings, pod: &str| {
                    let ordinal = pod
                        .strip_prefix(store.name.as_str())?
                        .strip_prefix('-')?
                        .parse::<i32>()
                        .ok()?;
                    Some(format!(
                        "{}:{REDIS_PORT}",
                        pod_fqdn(store, ordinal, settings)
                    ))
                },
            ),
            Arc::new(|store: &ValidatedStore, settings: &OperatorSettings| {
                sentinel_addresses(store, settings)
            }),
        )
    }

    /// Other addresses (tests: Redis and Sentinels on loopback).
    pub fn with_addresses(redis_address: Arc<PodAddressFn>, sentinels: Arc<AddressFn>) -> Self {
        SentinelHandover {
            redis_address,
            sentinels,
            timing: HandoverTiming::default(),
        }
    }

    pub fn with_timing(mut self, timing: HandoverTiming) -> Self {
        self.timing = timing;
        self
    }

    async fn run(&self, request: HandoverRequest<'_>) -> HandoverOutcome {
        let store = request.store;
        let settings = request.settings;
        let dialer = Dialer {
            password: &request.credentials.operator,
            tls: request.tls_ca.map(|ca| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            }),
            timing: &self.timing,
        };
        let address_of = |pod: &str| {
            (self.redis_address)(store, settings, pod)
                .ok_or_else(|| not_now(format!("{pod} is not a pod of this store")))
        };
        let primary_address = match address_of(request.primary) {
            Ok(address) => address,
            Err(outcome) => return outcome,
        };
        let mut avoid_addresses = Vec::new();
        for pod in request.avoid {
            match address_of(pod) {
                Ok(address) => avoid_addresses.push((pod.clone(), address)),
                Err(outcome) => return outcome,
            }
        }

        // 1. The pod the Sentinels name must still be the primary.
        let mut primary = match dialer.dial(&primary_address).await {
            Ok(conn) => conn,
            Err(error) => {
                return not_now(format!(
                    "cannot reach the primary {}: {error}",
                    request.primary
                ));
            }
        };
        match redis::cmd("ROLE")
            .query_async::<redis::Value>(&mut primary)
            .await
        {
            Ok(value) if role_is_master(&value) => {}
            Ok(_) => {
                return not_now(format!(
                    "{} is no longer primary (a failover is under way)",
                    request.primary
                ));
            }
            Err(error) => {
                return not_now(format!("ROLE on {} failed: {error}", request.primary));
            }
        }

        // 2. Pods to avoid get replica-priority 0: Sentinel never promotes those.
        let mut lowered: Vec<(String, String, String)> = Vec::new();
        for (pod, address) in &avoid_addresses {
            match set_priority_zero(&dialer, address).await {
                Ok(previous) => lowered.push((pod.clone(), address.clone(), previous)),
                Err(error) => {
                    restore_priorities(&dialer, &lowered).await;
                    return not_now(format!(
                        "cannot set replica-priority 0 on {pod}, which must not become primary: {error}"
                    ));
                }
            }
        }

        // 3. Pause writes; reads go on.
        let pause_ms = self.timing.pause.as_millis().to_string();
        if let Err(error) = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(&pause_ms)
            .arg("WRITE")
            .query_async::<()>(&mut primary)
            .await
        {
            restore_priorities(&dialer, &lowered).await;
            return not_now(format!(
                "CLIENT PAUSE on {} failed: {error}",
                request.primary
            ));
        }
        let paused = primary.clone();
        let give_up = |message: String| {
            let mut primary = paused.clone();
            let lowered = &lowered;
            let dialer = &dialer;
            async move {
                unpause(&mut primary).await;
                restore_priorities(dialer, lowered).await;
                not_now(message)
            }
        };

        // 4. A replica we may promote must hold every write.
        let avoid_only: Vec<String> = avoid_addresses.iter().map(|(_, a)| a.clone()).collect();
        let started = Instant::now();
        let caught_up = loop {
            let info = redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(&mut primary)
                .await;
            if let Ok(info) = &info
                && let Some(replica) = caught_up_replica(info, &avoid_only)
            {
                break Some(replica);
            }
            if started.elapsed() >= self.timing.catch_up {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let Some(caught_up) = caught_up else {
            return give_up(format!(
                "no replica has caught up with {} within {:?} (pods to avoid: {})",
                request.primary,
                self.timing.catch_up,
                describe_pods(request.avoid)
            ))
            .await;
        };

        // 5. One Sentinel starts the failover; the first OK wins.
        let master = master_name(store);
        let mut refusals = Vec::new();
        let mut accepted_by = None;
        for sentinel in (self.sentinels)(store, settings) {
            let answer = async {
                let mut conn = dialer.dial(&sentinel).await?;
                redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg(&master)
                    .query_async::<()>(&mut conn)
                    .await
            }
            .await;
            match answer {
                Ok(()) => {
                    accepted_by = Some(sentinel);
                    break;
                }
                Err(error) => refusals.push(format!("{sentinel}: {error}")),
            }
        }
        let Some(accepted_by) = accepted_by else {
            return give_up(format!(
                "no Sentinel started the failover: {}",
                if refusals.is_empty() {
                    "no Sentinel address".to_string()
                } else {
                    refusals.join("; ")
                }
            ))
            .await;
        };

        // 6. Demote the old primary as soon as the Sentinels name the new one, so its paused
        // writes fail (READONLY) and their clients go to the new primary, rather than run on it
        // when the pause ends. Sentinel would do the same, but only seconds later.
        let demoted = self
            .demote_when_promoted(
                &dialer,
                &accepted_by,
                &master,
                &primary_address,
                &mut primary,
            )
            .await;
        let replica_note = format!("{caught_up} had caught up");
        HandoverOutcome::Started {
            message: match demoted {
                Some(new_primary) => format!(
                    "Sentinel failover of {} started ({replica_note}); the Sentinels name {new_primary} and {} now replicates from it",
                    request.primary, request.primary
                ),
                None => format!(
                    "Sentinel failover of {} started ({replica_note}); writes stay paused on it until Sentinel reconfigures it",
                    request.primary
                ),
            },
        }
    }

    /// Waits (bounded) until the accepting Sentinel names another primary, then `REPLICAOF` it on
    /// the old primary and ends the pause there. Returns the new primary's address.
    async fn demote_when_promoted(
        &self,
        dialer: &Dialer<'_>,
        sentinel: &str,
        master: &str,
        old_address: &str,
        old_primary: &mut MultiplexedConnection,
    ) -> Option<String> {
        let started = Instant::now();
        let mut conn = dialer.dial(sentinel).await.ok();
        let (host, port) = loop {
            if let Some(conn) = conn.as_mut()
                && let Ok(Some((host, port))) = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(master)
                    .query_async::<Option<(String, String)>>(conn)
                    .await
                && !format!("{host}:{port}").eq_ignore_ascii_case(old_address)
            {
                break (host, port);
            }
            if started.elapsed() >= self.timing.promotion {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if conn.is_none() {
                conn = dialer.dial(sentinel).await.ok();
            }
        };
        let demoted = redis::cmd("REPLICAOF")
            .arg(&host)
            .arg(&port)
            .query_async::<()>(old_primary)
            .await;
        if let Err(error) = demoted {
            tracing::warn!(%error, "could not demote the old primary; Sentinel will");
            return None;
        }
        unpause(old_primary).await;
        Some(format!("{host}:{port}"))
    }
}

impl Handover for SentinelHandover {
    fn hand_over<'a>(&'a self, request: HandoverRequest<'a>) -> BoxFuture<'a, HandoverOutcome> {
        Box::pin(self.run(request))
    }
}

/// The default handover of a running operator.
pub fn default_handover() -> Arc<dyn Handover> {
    Arc::new(SentinelHandover::in_cluster())
}

fn not_now(message: String) -> HandoverOutcome {
    HandoverOutcome::NotNow { message }
}

fn describe_pods(pods: &[String]) -> String {
    if pods.is_empty() {
        "none".into()
    } else {
        pods.join(", ")
    }
}

/// Dials Redis and Sentinel as the `operator` user, over TLS with the store CA when set.
struct Dialer<'a> {
    password: &'a Password,
    tls: Option<redis::TlsCertificates>,
    timing: &'a HandoverTiming,
}

impl Dialer<'_> {
    async fn dial(&self, address: &str) -> redis::RedisResult<MultiplexedConnection> {
        let (host, port) = split_host_port(address).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a host:port address",
            ))
        })?;
        let settings = RedisConnectionInfo::default()
            .set_username(OPERATOR_USER)
            .set_password(self.password.expose())
            // Sentinel 7.0 has no CLIENT SETINFO, and the operator user may not run it.
            .set_skip_set_lib_name();
        let client = match &self.tls {
            None => redis::Client::open(
                ConnectionAddr::Tcp(host, port)
                    .into_connection_info()?
                    .set_redis_settings(settings),
            )?,
            Some(certs) => redis::Client::build_with_tls(
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
                .into_connection_info()?
                .set_redis_settings(settings),
                certs.clone(),
            )?,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timing.connect_timeout))
            .set_response_timeout(Some(self.timing.response_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

fn role_is_master(value: &redis::Value) -> bool {
    match value {
        redis::Value::Array(items) => matches!(
            items.first(),
            Some(redis::Value::BulkString(role)) if role.as_slice() == b"master"
        ),
        _ => false,
    }
}

/// `CONFIG SET replica-priority 0`; returns the value it replaced.
async fn set_priority_zero(dialer: &Dialer<'_>, address: &str) -> redis::RedisResult<String> {
    let mut conn = dialer.dial(address).await?;
    let previous: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("replica-priority")
        .query_async(&mut conn)
        .await?;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-priority")
        .arg("0")
        .query_async::<()>(&mut conn)
        .await?;
    Ok(previous.get(1).cloned().unwrap_or_else(|| "100".into()))
}

/// After a handover that did not start, pods to avoid get their replica-priority back (best
/// effort: a failure is logged; a pod restart restores it anyway).
async fn restore_priorities(dialer: &Dialer<'_>, lowered: &[(String, String, String)]) {
    for (pod, address, previous) in lowered {
        let restored = async {
            let mut conn = dialer.dial(address).await?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("replica-priority")
                .arg(previous)
                .query_async::<()>(&mut conn)
                .await
        }
        .await;
        if let Err(error) = restored {
            tracing::warn!(%pod, %error, "could not restore replica-priority");
        }
    }
}

async fn unpause(conn: &mut MultiplexedConnection) {
    if let Err(error) = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async::<()>(conn)
        .await
    {
        tracing::warn!(%error, "CLIENT UNPAUSE failed; the pause ends on its own");
    }
}

/// The first replica (`host:port`, as announced) in an `INFO replication` text whose offset equals
/// `master_repl_offset`, skipping `avoid` addresses. Pure, so the parsing is unit-tested.
pub fn caught_up_replica(info: &str, avoid: &[String]) -> Option<String> {
    let master_offset: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))?
        .trim()
        .parse()
        .ok()?;
    info.lines()
        .filter(|line| {
            line.strip_prefix("slave")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .filter_map(|line| {
            let (_, fields) = line.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.trim().strip_prefix(key)?.strip_prefix('='))
            };
            let address = format!("{}:{}", field("ip")?, field("port")?);
            let caught_up = field("state")? == "online"
                && field("offset")?.parse::<i64>().ok()? == master_offset;
            (caught_up && !avoid.iter().any(|a| a.eq_ignore_ascii_case(&address)))
                .then_some(address)
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=10.0.0.3,port=6379,state=online,offset=500,lag=0\r\n\
        slave1:ip=s-2.h,port=6379,state=online,offset=420,lag=1\r\n\
        master_failover_state:no-failover\r\nmaster_repl_offset:500\r\n";

    #[test]
    fn the_caught_up_replica_is_found_and_avoided_pods_are_skipped() {
        assert_eq!(caught_up_replica(INFO, &[]), Some("10.0.0.3:6379".into()));
        assert_eq!(caught_up_replica(INFO, &["10.0.0.3:6379".into()]), None);
        let behind = INFO.replace("offset=500", "offset=499");
        assert_eq!(caught_up_replica(&behind, &[]), None);
        let both = INFO.replace("offset=420", "offset=500");
        assert_eq!(
            caught_up_replica(&both, &["10.0.0.3:6379".into()]),
            Some("s-2.h:6379".into())
        );
    }

    #[test]
    fn a_replica_still_syncing_is_not_caught_up() {
        let syncing = INFO.replace("state=online,offset=500", "state=wait_bgsave,offset=500");
        assert_eq!(caught_up_replica(&syncing, &[]), None);
        assert_eq!(caught_up_replica("role:master\r\n", &[]), None);
    }

    #[test]
    fn only_master_role_counts() {
        use redis::Value;
        let master = Value::Array(vec![
            Value::BulkString(b"master".to_vec()),
            Value::Int(3),
            Value::Array(vec![]),
        ]);
        assert!(role_is_master(&master));
        let replica = Value::Array(vec![Value::BulkString(b"slave".to_vec())]);
        assert!(!role_is_master(&replica));
        assert!(!role_is_master(&Value::Nil));
    }
}
