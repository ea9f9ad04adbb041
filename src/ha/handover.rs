//! Deliberate handover of the primary role, for the rolling update and the scale-down guard: the
//! operator pauses writes on the primary, waits until the replicas it may promote have every
//! write, asks a Sentinel to fail over, and demotes the old primary itself as soon as the Sentinels
//! name the new one, so no acknowledged write is lost and no pod dies while it is primary. Once
//! demoted, the old primary's client connections are closed so applications reconnect through the
//! Service. Also used when Kubernetes stops the primary pod (`ha::disruption`).
//!
//! Pods in `avoid` get `replica-priority 0` (Sentinel never promotes those) and are left so: they
//! are about to go, and their restart reads the configured priority again. They get their old
//! priority back only when the handover does not start.
//!
//! The reconcile sees it through the [`Handover`] trait so mocked-API tests can inject answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;

use crate::build::StoreCredentials;
use crate::build::acl::OPERATOR_USER;
use crate::build::sentinel::{master_name, pod_fqdn, sentinel_addresses};
use crate::ha::observation::AddressFn;
use crate::ha::primary::split_host_port;
use crate::password::Password;
use crate::redis_client::{self, client_for};
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
    /// The new primary shows up in a later discovery. `demoted`: the operator made the old primary
    /// a replica before its writes resumed (false: the Sentinels did not promote in time, so the
    /// paused writes ran on the old primary and may be lost; the caller warns).
    ///
    /// `promoted`: the pod the Sentinels named as the new primary when the old one was demoted
    /// (`None` when it was not demoted, or the address is no pod of this store), so the caller can
    /// move the Service to it before every Sentinel has caught up.
    Started {
        message: String,
        demoted: bool,
        promoted: Option<String>,
    },
    /// Nothing was changed (no caught-up replica, a failover already in progress, a Sentinel or
    /// the primary unreachable): try again on a later reconcile. The message says why, without
    /// any secret.
    NotNow { message: String },
}

/// What the rolling update asks before it restarts a replica: the primary's view of its replicas.
pub struct ReplicationRequest<'a> {
    pub store: &'a ValidatedStore,
    pub settings: &'a OperatorSettings,
    pub credentials: &'a StoreCredentials,
    /// The store CA for TLS stores.
    pub tls_ca: Option<&'a [u8]>,
    /// The pod a majority of Sentinels names as primary now.
    pub primary: &'a str,
}

/// The handover, injectable, and the primary's replication view it is built on.
pub trait Handover: Send + Sync {
    fn hand_over<'a>(&'a self, request: HandoverRequest<'a>) -> BoxFuture<'a, HandoverOutcome>;

    /// The pods of the store the primary lists as `state=online` replicas (link up, full sync
    /// finished), by pod name. `Err` (a message without any secret) when the primary cannot be
    /// asked or is not a primary any more.
    fn replication<'a>(
        &'a self,
        request: ReplicationRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

/// Where the operator dials a pod's Redis (`host:port`) for a store; `None` for a name that is not
/// one of its pods.
pub type PodAddressFn =
    dyn Fn(&ValidatedStore, &OperatorSettings, &str) -> Option<String> + Send + Sync;

/// The bounds of one handover attempt.
#[derive(Clone, Debug)]
pub struct HandoverTiming {
    /// `CLIENT PAUSE <ms> WRITE` on the primary: covers the Sentinel promotion (under a second on
    /// loopback, measured by tests/handover.rs) and the old primary's demotion, which the operator
    /// does itself right after the promotion and which ends the pause. Bounded so a dead operator
    /// cannot freeze writes for long: while the Sentinels have not named the new primary, the
    /// operator extends it by this much at a time, up to the store's failover timeout.
    pub pause: Duration,
    /// How long a replica may take to reach the primary's offset once writes are paused
    /// (replicas acknowledge their offset every second; a lagging one is also asked directly).
    pub catch_up: Duration,
    /// While the Sentinels have not named the new primary, the pause is extended once it ends
    /// within this margin (more than a Sentinel query's response timeout, so the extension lands
    /// before the end): paused writes must never run on a primary that is being replaced.
    pub extend_before: Duration,
    /// How long to wait, before pausing, for a Sentinel to see the lowered priorities: Sentinel
    /// picks the replica from its own copy of their INFO, refreshed every 10 s.
    pub sentinel_view: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl Default for HandoverTiming {
    fn default() -> Self {
        HandoverTiming {
            pause: Duration::from_secs(10),
            catch_up: Duration::from_millis(2500),
            extend_before: Duration::from_secs(2),
            sentinel_view: Duration::from_secs(12),
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
                    let ordinal = i32::try_from(crate::pods::ordinal(&store.name, pod)?).ok()?;
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

    /// The handover, step by step (the numbers match the module's description). A step that
    /// cannot go on returns the `NotNow` outcome, after undoing what the earlier steps did.
    async fn run(&self, request: HandoverRequest<'_>) -> HandoverOutcome {
        let dialer = Dialer {
            password: &request.credentials.operator,
            tls: request.tls_ca.map(redis_client::store_ca),
            timing: &self.timing,
        };
        match self.attempt(&request, &dialer).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    async fn attempt(
        &self,
        request: &HandoverRequest<'_>,
        dialer: &Dialer<'_>,
    ) -> Result<HandoverOutcome, HandoverOutcome> {
        let addresses = self.addresses(request)?;
        let avoid_only: Vec<String> = addresses.avoid.iter().map(|(_, a)| a.clone()).collect();

        // 1. The pod the Sentinels name must still be the primary.
        let mut primary = confirm_primary(dialer, &addresses.primary, request.primary).await?;

        // 2. Pods to avoid get replica-priority 0: Sentinel never promotes those.
        let lowered = lower_priorities(dialer, &addresses.avoid).await?;

        // 2b. Only a Sentinel that already sees those priorities (and a replica it may promote)
        // is asked, else it could promote a pod to avoid from its stale copy.
        let master = master_name(request.store);
        let ready_sentinels = self
            .sentinels_seeing_priorities(dialer, request, &master, &avoid_only)
            .await;
        if ready_sentinels.is_empty() {
            restore_priorities(dialer, &lowered).await;
            return Err(not_now(format!(
                "no Sentinel sees a replica it may promote with the pods to avoid ({}) at priority 0 within {:?}",
                describe_pods(request.avoid),
                self.timing.sentinel_view
            )));
        }

        // 3. Pause writes; reads go on. The instant is taken before the command, so the pause
        // is known to last at least until `paused_at + pause`.
        let paused_at = Instant::now();
        if let Err(error) = pause_writes(&mut primary, self.timing.pause).await {
            restore_priorities(dialer, &lowered).await;
            return Err(not_now(format!(
                "CLIENT PAUSE on {} failed: {error}",
                request.primary
            )));
        }
        let paused = primary.clone();
        let give_up = |message: String| undo_and_stop(paused.clone(), dialer, &lowered, message);

        // 4. Every replica the Sentinel may promote must hold every write (it picks by its own,
        // older copy of their offsets, so one caught-up replica is not enough).
        let caught_up = match self
            .wait_for_catch_up(dialer, &mut primary, &avoid_only)
            .await
        {
            Ok(caught_up) => caught_up,
            Err(last) => {
                let why = not_caught_up(&last, request, self.timing.catch_up);
                return Err(give_up(why).await);
            }
        };

        // 5. One Sentinel starts the failover; the first OK wins.
        let accepted_by = match start_failover(dialer, ready_sentinels, &master, &avoid_only).await
        {
            Ok(sentinel) => sentinel,
            Err(refusals) => return Err(give_up(failover_refused(&refusals)).await),
        };

        // 6. Demote the old primary as soon as the Sentinels name the new one, so its paused
        // writes fail (READONLY) and their clients go to the new primary, rather than run on it
        // when the pause ends. Sentinel cannot do it in time: its reconfiguration (a MULTI/EXEC)
        // waits behind the pause like the writes, so without this step it lands only when the
        // pause ends (measured: 30 s with a 30 s pause), after the queued writes ran on the old
        // primary and were lost.
        let bound = failover_bound(request.store, &self.timing);
        let demoted = self
            .demote_when_promoted(
                dialer,
                &accepted_by,
                &master,
                &addresses.primary,
                &mut primary,
                paused_at,
                bound,
            )
            .await;
        let replica_note = format!(
            "{caught_up} had caught up; writes paused for {} ms",
            paused_at.elapsed().as_millis()
        );
        Ok(self.started(request, demoted, &replica_note))
    }

    /// Where the primary and the pods to avoid are dialled; `NotNow` for a pod of another store.
    fn addresses(
        &self,
        request: &HandoverRequest<'_>,
    ) -> Result<HandoverAddresses, HandoverOutcome> {
        let address_of = |pod: &str| {
            (self.redis_address)(request.store, request.settings, pod)
                .ok_or_else(|| not_now(format!("{pod} is not a pod of this store")))
        };
        let primary = address_of(request.primary)?;
        let avoid = request
            .avoid
            .iter()
            .map(|pod| Ok((pod.clone(), address_of(pod)?)))
            .collect::<Result<_, HandoverOutcome>>()?;
        Ok(HandoverAddresses { primary, avoid })
    }

    /// Step 2b: the Sentinels that see the pods to avoid at priority 0 and a replica they may
    /// promote, asked again every 250 ms until one does or `sentinel_view` has passed.
    async fn sentinels_seeing_priorities(
        &self,
        dialer: &Dialer<'_>,
        request: &HandoverRequest<'_>,
        master: &str,
        avoid_only: &[String],
    ) -> Vec<String> {
        let sentinels = (self.sentinels)(request.store, request.settings);
        let started = Instant::now();
        loop {
            let mut ready = Vec::new();
            for sentinel in &sentinels {
                if sentinel_sees_priorities(dialer, sentinel, master, avoid_only).await {
                    ready.push(sentinel.clone());
                }
            }
            if !ready.is_empty() || started.elapsed() >= self.timing.sentinel_view {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Step 4: waits (writes paused) until every replica the Sentinels may promote holds every
    /// write; `Ok` names them, `Err` is the last view when `catch_up` has passed.
    async fn wait_for_catch_up(
        &self,
        dialer: &Dialer<'_>,
        primary: &mut MultiplexedConnection,
        avoid_only: &[String],
    ) -> Result<String, ReplicaCatchUp> {
        let started = Instant::now();
        let mut last = ReplicaCatchUp::default();
        loop {
            let info = redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(primary)
                .await;
            if let Ok(info) = &info
                && let Some(mut catch_up) = replica_catch_up(info, avoid_only)
            {
                // The primary learns a replica's offset from its acknowledgement, once a second;
                // a lagging one is asked for its own processed offset instead.
                if !catch_up.is_ready()
                    && let Some(offset) = master_offset(info)
                {
                    let mut behind = Vec::new();
                    for address in std::mem::take(&mut catch_up.behind) {
                        if replica_holds_offset(dialer, &address, offset).await {
                            catch_up.caught_up.push(address);
                        } else {
                            behind.push(address);
                        }
                    }
                    catch_up.behind = behind;
                }
                if catch_up.is_ready() {
                    return Ok(catch_up.caught_up.join(", "));
                }
                last = catch_up;
            }
            if started.elapsed() >= self.timing.catch_up {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The outcome of a handover the Sentinels accepted, with what the demotion achieved.
    fn started(
        &self,
        request: &HandoverRequest<'_>,
        demoted: Result<(String, u32), String>,
        replica_note: &str,
    ) -> HandoverOutcome {
        let store = request.store;
        let promoted = demoted.as_ref().ok().and_then(|(address, _)| {
            crate::pods::pod_names(&store.name, store.replicas).find(|pod| {
                (self.redis_address)(store, request.settings, pod)
                    .is_some_and(|a| a.eq_ignore_ascii_case(address))
            })
        });
        HandoverOutcome::Started {
            demoted: demoted.is_ok(),
            promoted,
            message: match demoted {
                Ok((new_primary, 0)) => format!(
                    "Sentinel failover of {} started ({replica_note}); the Sentinels name {new_primary} and {} now replicates from it",
                    request.primary, request.primary
                ),
                Ok((new_primary, extensions)) => format!(
                    "Sentinel failover of {} started ({replica_note}); the Sentinels name {new_primary} and {} now replicates from it (write pause extended {extensions} times while the Sentinels promoted)",
                    request.primary, request.primary
                ),
                Err(why) => {
                    tracing::warn!(primary = %request.primary, "the old primary was not demoted: {why}");
                    format!(
                        "Sentinel failover of {} started ({replica_note}), but {why}; the old primary was not demoted and its paused writes resume on it (they may be lost when the Sentinels demote it)",
                        request.primary
                    )
                }
            },
        }
    }

    /// One `INFO replication` on the primary; the replicas it lists online, mapped back to pod
    /// names through the same addresses the handover dials (the pods announce those).
    async fn online_replicas(
        &self,
        request: ReplicationRequest<'_>,
    ) -> Result<Vec<String>, String> {
        let store = request.store;
        let settings = request.settings;
        let primary_address = (self.redis_address)(store, settings, request.primary)
            .ok_or_else(|| format!("{} is not a pod of this store", request.primary))?;
        let dialer = Dialer {
            password: &request.credentials.operator,
            tls: request.tls_ca.map(redis_client::store_ca),
            timing: &self.timing,
        };
        let mut conn = dialer
            .dial(&primary_address)
            .await
            .map_err(|error| format!("cannot reach the primary {}: {error}", request.primary))?;
        let info = redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|error| format!("INFO replication on {} failed: {error}", request.primary))?;
        let online = online_replica_addresses(&info)
            .ok_or_else(|| format!("{} is no longer primary", request.primary))?;
        Ok(crate::pods::pod_names(&store.name, store.replicas)
            .filter(|pod| {
                (self.redis_address)(store, settings, pod)
                    .is_some_and(|address| online.iter().any(|o| o.eq_ignore_ascii_case(&address)))
            })
            .collect())
    }

    /// Waits until the accepting Sentinel names another primary, keeping the old primary's writes
    /// paused meanwhile (extended as [`pause_action`] says, up to `bound` after `paused_at`), then
    /// `REPLICAOF` it on the old primary and ends the pause there. Returns the new primary's
    /// address and how many times the pause was extended, or why the old primary was not demoted.
    #[allow(clippy::too_many_arguments)]
    async fn demote_when_promoted(
        &self,
        dialer: &Dialer<'_>,
        sentinel: &str,
        master: &str,
        old_address: &str,
        old_primary: &mut MultiplexedConnection,
        paused_at: Instant,
        bound: Duration,
    ) -> Result<(String, u32), String> {
        let mut pause_ends = self.timing.pause;
        let mut extensions = 0u32;
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
            // A failover the Sentinel gave up on (no replica it could promote) ends the wait at
            // once rather than holding the writes until the bound.
            if let Some(conn) = conn.as_mut()
                && let Ok(fields) = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(master)
                    .query_async::<Vec<String>>(conn)
                    .await
                && failover_ended_without_promotion(&fields, old_address)
            {
                return Err(format!(
                    "the Sentinel ended the failover without promoting a replica (the write pause was extended {extensions} times)"
                ));
            }
            match pause_action(paused_at.elapsed(), pause_ends, bound, &self.timing) {
                PauseAction::Keep => {}
                PauseAction::Extend(by) => {
                    // Measured before the command, like the first pause: a conservative end.
                    let at = paused_at.elapsed();
                    let extended = redis::cmd("CLIENT")
                        .arg("PAUSE")
                        .arg(by.as_millis().to_string())
                        .arg("WRITE")
                        .query_async::<()>(old_primary)
                        .await;
                    match extended {
                        Ok(()) => {
                            pause_ends = at + by;
                            extensions += 1;
                            tracing::info!(
                                extensions,
                                ?pause_ends,
                                "no new primary named yet; write pause extended"
                            );
                        }
                        Err(error) => {
                            return Err(format!(
                                "no new primary was named yet and the write pause could not be extended: {error}"
                            ));
                        }
                    }
                }
                PauseAction::GiveUp => {
                    return Err(format!(
                        "no new primary was named within {bound:?} (the failover timeout; the write pause was extended {extensions} times)"
                    ));
                }
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
            return Err(format!(
                "REPLICAOF {host} {port} on the old primary failed: {error}"
            ));
        }
        unpause(old_primary).await;
        disconnect_clients(old_primary).await;
        Ok((format!("{host}:{port}"), extensions))
    }
}

impl Handover for SentinelHandover {
    fn hand_over<'a>(&'a self, request: HandoverRequest<'a>) -> BoxFuture<'a, HandoverOutcome> {
        Box::pin(self.run(request))
    }

    fn replication<'a>(
        &'a self,
        request: ReplicationRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(self.online_replicas(request))
    }
}

/// The default handover of a running operator.
pub fn default_handover() -> Arc<dyn Handover> {
    Arc::new(SentinelHandover::in_cluster())
}

/// Where one handover dials: the primary, and each pod to avoid (`(pod, host:port)`).
struct HandoverAddresses {
    primary: String,
    avoid: Vec<(String, String)>,
}

/// Step 1: a connection to the primary, once `ROLE` confirms it still is one.
async fn confirm_primary(
    dialer: &Dialer<'_>,
    address: &str,
    pod: &str,
) -> Result<MultiplexedConnection, HandoverOutcome> {
    let mut primary = dialer
        .dial(address)
        .await
        .map_err(|error| not_now(format!("cannot reach the primary {pod}: {error}")))?;
    match redis::cmd("ROLE")
        .query_async::<redis::Value>(&mut primary)
        .await
    {
        Ok(value) if role_is_master(&value) => Ok(primary),
        Ok(_) => Err(not_now(format!(
            "{pod} is no longer primary (a failover is under way)"
        ))),
        Err(error) => Err(not_now(format!("ROLE on {pod} failed: {error}"))),
    }
}

/// Step 2: `replica-priority 0` on each pod to avoid; returns `(pod, address, previous priority)`
/// of those lowered. On a failure the ones already lowered get their priority back.
async fn lower_priorities(
    dialer: &Dialer<'_>,
    avoid: &[(String, String)],
) -> Result<Vec<(String, String, String)>, HandoverOutcome> {
    let mut lowered: Vec<(String, String, String)> = Vec::new();
    for (pod, address) in avoid {
        match set_priority_zero(dialer, address).await {
            Ok(previous) => lowered.push((pod.clone(), address.clone(), previous)),
            // A pod we cannot reach is no candidate the Sentinels can reach either (they
            // skip replicas that do not answer); should one promote it anyway, the scale-down
            // guard sees a primary out of range and hands over again.
            Err(error) if error.is_connection_refusal() || error.is_timeout() => {
                tracing::info!(%pod, %error, "pod to avoid is unreachable; not lowering its priority");
            }
            Err(error) => {
                restore_priorities(dialer, &lowered).await;
                return Err(not_now(format!(
                    "cannot set replica-priority 0 on {pod}, which must not become primary: {error}"
                )));
            }
        }
    }
    Ok(lowered)
}

/// Step 3: `CLIENT PAUSE <pause> WRITE` on the primary.
async fn pause_writes(
    primary: &mut MultiplexedConnection,
    pause: Duration,
) -> redis::RedisResult<()> {
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis().to_string())
        .arg("WRITE")
        .query_async::<()>(primary)
        .await
}

/// Undoes steps 2 and 3 (writes resume, priorities restored) and says why the handover stops.
async fn undo_and_stop(
    mut primary: MultiplexedConnection,
    dialer: &Dialer<'_>,
    lowered: &[(String, String, String)],
    message: String,
) -> HandoverOutcome {
    unpause(&mut primary).await;
    restore_priorities(dialer, lowered).await;
    not_now(message)
}

/// Step 5: asks the ready Sentinels in turn for `SENTINEL FAILOVER`; the first OK wins (`Ok` names
/// it), else `Err` holds each refusal. Sentinels in pods to avoid are asked last: they are about to
/// stop, and a leader that stops right after the promotion leaves the other Sentinels naming the
/// old primary until they fail over on their own.
async fn start_failover(
    dialer: &Dialer<'_>,
    mut ready_sentinels: Vec<String>,
    master: &str,
    avoid_only: &[String],
) -> Result<String, Vec<String>> {
    ready_sentinels.sort_by_key(|sentinel| in_pods(sentinel, avoid_only));
    let mut refusals = Vec::new();
    for sentinel in ready_sentinels {
        let answer = async {
            let mut conn = dialer.dial(&sentinel).await?;
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(master)
                .query_async::<()>(&mut conn)
                .await
        }
        .await;
        match answer {
            Ok(()) => return Ok(sentinel),
            Err(error) => refusals.push(format!("{sentinel}: {error}")),
        }
    }
    Err(refusals)
}

/// Why step 4 gives up: which replicas have not caught up with the paused primary.
fn not_caught_up(last: &ReplicaCatchUp, request: &HandoverRequest<'_>, within: Duration) -> String {
    let detail = if last.caught_up.is_empty() {
        "no replica has caught up".to_string()
    } else {
        format!("replicas {} have not caught up", last.behind.join(", "))
    };
    format!(
        "{detail} with {} within {:?} (pods to avoid: {})",
        request.primary,
        within,
        describe_pods(request.avoid)
    )
}

/// Why step 5 gives up: each Sentinel's refusal.
fn failover_refused(refusals: &[String]) -> String {
    format!(
        "no Sentinel started the failover: {}",
        if refusals.is_empty() {
            "no Sentinel address".to_string()
        } else {
            refusals.join("; ")
        }
    )
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
        let client = client_for(host, port, OPERATOR_USER, self.password, self.tls.as_ref())?;
        redis_client::connect(
            &client,
            self.timing.connect_timeout,
            self.timing.response_timeout,
        )
        .await
    }
}

/// Whether `sentinel`'s view of the replicas (`SENTINEL REPLICAS`) has every pod to avoid at
/// priority 0 and at least one other healthy replica it may promote.
async fn sentinel_sees_priorities(
    dialer: &Dialer<'_>,
    sentinel: &str,
    master: &str,
    avoid: &[String],
) -> bool {
    let replicas = async {
        let mut conn = dialer.dial(sentinel).await?;
        redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(master)
            .query_async::<Vec<Vec<String>>>(&mut conn)
            .await
    }
    .await;
    match replicas {
        Ok(replicas) => promotable_view(&replicas, avoid),
        Err(error) => {
            tracing::debug!(%sentinel, %error, "Sentinel did not list the replicas");
            false
        }
    }
}

/// The pure part of [`sentinel_sees_priorities`] over `SENTINEL REPLICAS` entries (flat
/// field/value lists). Replicas the Sentinel holds down or disconnected are no candidates.
pub fn promotable_view(replicas: &[Vec<String>], avoid: &[String]) -> bool {
    let mut candidate = false;
    for fields in replicas {
        let get = |key: &str| {
            fields
                .chunks(2)
                .find(|kv| kv.first().map(String::as_str) == Some(key))
                .and_then(|kv| kv.get(1))
                .map(String::as_str)
        };
        let (Some(ip), Some(port)) = (get("ip"), get("port")) else {
            continue;
        };
        let flags = get("flags").unwrap_or_default();
        if flags.contains("s_down") || flags.contains("disconnected") {
            continue;
        }
        let address = format!("{ip}:{port}");
        let priority = get("slave-priority").unwrap_or("0");
        if avoid.iter().any(|a| a.eq_ignore_ascii_case(&address)) {
            if priority != "0" {
                return false;
            }
        } else if priority != "0" {
            candidate = true;
        }
    }
    candidate
}

/// Whether `address` (`host:port`) is on the host of one of `pods` (their Redis `host:port`).
fn in_pods(address: &str, pods: &[String]) -> bool {
    let host = |a: &str| {
        a.rsplit_once(':')
            .map_or(a, |(h, _)| h)
            .to_ascii_lowercase()
    };
    let address = host(address);
    pods.iter().any(|pod| host(pod) == address)
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

/// After the demotion: closes the old primary's client connections (`CLIENT KILL TYPE normal`
/// and `TYPE pubsub`), so applications reconnect through the Service to the new primary instead of
/// getting `READONLY` until they reconnect on their own. The operator's own connection survives
/// (`SKIPME yes` is the default); replication links are not of these types. Sentinel's links to
/// the old primary are closed too and Sentinel reconnects at once. Best effort: a failure is
/// logged, the clients then learn of the demotion from `READONLY`.
async fn disconnect_clients(conn: &mut MultiplexedConnection) {
    for kind in ["normal", "pubsub"] {
        match redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .query_async::<i64>(conn)
            .await
        {
            Ok(closed) => {
                tracing::info!(closed, kind, "closed the old primary's client connections")
            }
            Err(error) => {
                tracing::warn!(%error, kind, "could not close the old primary's client connections")
            }
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

/// The longest the operator ever holds an old primary's writes paused while waiting for a
/// promotion: past this, logins hanging is worse than the few writes the give-up may lose (a
/// healthy Sentinel promotes in about a second; a stalled one, e.g. in TILT, takes 30 s or more).
pub const MAX_WRITE_PAUSE: Duration = Duration::from_secs(30);

/// How long, from the first pause, the operator keeps the old primary's writes paused while the
/// Sentinels have not named the new primary: the store's failover timeout (after it the Sentinels
/// give the failover up), capped at [`MAX_WRITE_PAUSE`], and never less than one pause.
pub fn failover_bound(store: &ValidatedStore, timing: &HandoverTiming) -> Duration {
    let timeout = u64::try_from(store.sentinel.failover_timeout_milliseconds.max(0)).unwrap_or(0);
    Duration::from_millis(timeout)
        .min(MAX_WRITE_PAUSE)
        .max(timing.pause)
}

/// Whether a Sentinel's `SENTINEL MASTER` entry (a flat field/value list, one snapshot) shows no
/// failover in progress while it still names the old primary: the failover it accepted ended
/// without a promotion. Pure, so it is unit-tested.
pub fn failover_ended_without_promotion(fields: &[String], old_address: &str) -> bool {
    let get = |key: &str| {
        fields
            .chunks(2)
            .find(|kv| kv.first().map(String::as_str) == Some(key))
            .and_then(|kv| kv.get(1))
            .map(String::as_str)
    };
    let (Some(ip), Some(port), Some(flags)) = (get("ip"), get("port"), get("flags")) else {
        return false;
    };
    !flags.contains("failover_in_progress")
        && format!("{ip}:{port}").eq_ignore_ascii_case(old_address)
}

/// What to do about the write pause while the Sentinels have not named the new primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseAction {
    /// The pause lasts long enough (or cannot be extended past the bound): look again.
    Keep,
    /// `CLIENT PAUSE` again for this long from now (Redis only ever moves the end later).
    Extend(Duration),
    /// The bound is reached: stop waiting; the pause has ended.
    GiveUp,
}

/// The timing decision, pure so it is unit-tested. All durations count from the first pause:
/// `elapsed` now, `pause_ends` when the current pause ends, `bound` the failover bound.
pub fn pause_action(
    elapsed: Duration,
    pause_ends: Duration,
    bound: Duration,
    timing: &HandoverTiming,
) -> PauseAction {
    if elapsed >= bound {
        return PauseAction::GiveUp;
    }
    if elapsed + timing.extend_before < pause_ends {
        return PauseAction::Keep;
    }
    let until = (elapsed + timing.pause).min(bound);
    if until > pause_ends {
        PauseAction::Extend(until - elapsed)
    } else {
        PauseAction::Keep
    }
}

/// One `slaveN:ip=..,port=..,state=..,offset=..` line of a primary's `INFO replication`.
struct ReplicaLine<'a> {
    /// `host:port` as the replica announced it.
    address: String,
    state: Option<&'a str>,
    offset: Option<i64>,
}

/// The replica lines of an `INFO replication` text (lines without ip or port are skipped).
fn replica_lines(info: &str) -> impl Iterator<Item = ReplicaLine<'_>> {
    info.lines().filter_map(|line| {
        let (name, fields) = line.split_once(':')?;
        let index = name.strip_prefix("slave")?;
        if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix(key)?.strip_prefix('='))
        };
        Some(ReplicaLine {
            address: format!("{}:{}", field("ip")?, field("port")?),
            state: field("state"),
            offset: field("offset").and_then(|o| o.trim().parse().ok()),
        })
    })
}

/// The replicas (`host:port`, as announced) an `INFO replication` text of a primary lists with
/// `state=online`; `None` when the text is not a primary's. Pure, so it is unit-tested.
pub fn online_replica_addresses(info: &str) -> Option<Vec<String>> {
    let role = info.lines().find_map(|l| l.strip_prefix("role:"))?.trim();
    if role != "master" {
        return None;
    }
    Some(
        replica_lines(info)
            .filter(|replica| replica.state == Some("online"))
            .map(|replica| replica.address)
            .collect(),
    )
}

/// The replicas a Sentinel may promote (not in `avoid`), as announced (`host:port`), by whether
/// they hold every write of the primary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaCatchUp {
    /// Online, at `master_repl_offset`.
    pub caught_up: Vec<String>,
    /// Behind, or still syncing.
    pub behind: Vec<String>,
}

impl ReplicaCatchUp {
    /// At least one candidate, and none that could be promoted without every write.
    pub fn is_ready(&self) -> bool {
        !self.caught_up.is_empty() && self.behind.is_empty()
    }
}

/// `master_repl_offset` of an `INFO replication` text.
pub fn master_offset(info: &str) -> Option<i64> {
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether a replica's own `INFO replication` shows it linked to its primary and done processing
/// `offset` (`slave_repl_offset`). Pure, so it is unit-tested.
pub fn replica_info_holds(info: &str, offset: i64) -> bool {
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    field("role:") == Some("slave")
        && field("master_link_status:") == Some("up")
        && field("slave_repl_offset:").and_then(|o| o.parse::<i64>().ok()) == Some(offset)
}

/// Asks the replica at `address` (as it announced itself) whether it has processed `offset`.
async fn replica_holds_offset(dialer: &Dialer<'_>, address: &str, offset: i64) -> bool {
    let info = async {
        let mut conn = dialer.dial(address).await?;
        redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut conn)
            .await
    }
    .await;
    info.is_ok_and(|info| replica_info_holds(&info, offset))
}

/// Reads an `INFO replication` text (`None` without `master_repl_offset`). Pure, so the parsing is
/// unit-tested.
pub fn replica_catch_up(info: &str, avoid: &[String]) -> Option<ReplicaCatchUp> {
    let master_offset = master_offset(info)?;
    let mut catch_up = ReplicaCatchUp::default();
    for replica in replica_lines(info) {
        if avoid
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&replica.address))
        {
            continue;
        }
        if replica.state == Some("online") && replica.offset == Some(master_offset) {
            catch_up.caught_up.push(replica.address);
        } else {
            catch_up.behind.push(replica.address);
        }
    }
    Some(catch_up)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=10.0.0.3,port=6379,state=online,offset=500,lag=0\r\n\
        slave1:ip=s-2.h,port=6379,state=online,offset=420,lag=1\r\n\
        master_failover_state:no-failover\r\nmaster_repl_offset:500\r\n";

    fn catch_up(caught_up: &[&str], behind: &[&str]) -> Option<ReplicaCatchUp> {
        Some(ReplicaCatchUp {
            caught_up: caught_up.iter().map(|a| a.to_string()).collect(),
            behind: behind.iter().map(|a| a.to_string()).collect(),
        })
    }

    #[test]
    fn every_candidate_must_be_caught_up_and_avoided_pods_do_not_count() {
        let lagging = replica_catch_up(INFO, &[]);
        assert_eq!(lagging, catch_up(&["10.0.0.3:6379"], &["s-2.h:6379"]));
        assert!(lagging.is_some_and(|c| !c.is_ready()));
        // The lagging pod is to be avoided: the other one is enough.
        let avoided = replica_catch_up(INFO, &["S-2.h:6379".into()]);
        assert_eq!(avoided, catch_up(&["10.0.0.3:6379"], &[]));
        assert!(avoided.is_some_and(|c| c.is_ready()));
        let both = replica_catch_up(&INFO.replace("offset=420", "offset=500"), &[]);
        assert!(both.is_some_and(|c| c.is_ready()));
        // Only avoided pods caught up: nobody to promote.
        let none = replica_catch_up(INFO, &["10.0.0.3:6379".into(), "s-2.h:6379".into()]);
        assert_eq!(none, catch_up(&[], &[]));
        assert!(none.is_some_and(|c| !c.is_ready()));
    }

    #[test]
    fn a_replica_that_processed_the_offset_holds_every_write() {
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:s-0.h\r\n\
            master_link_status:up\r\nslave_repl_offset:500\r\nmaster_repl_offset:500\r\n";
        assert_eq!(master_offset(INFO), Some(500));
        assert!(replica_info_holds(replica, 500));
        assert!(!replica_info_holds(replica, 501));
        assert!(!replica_info_holds(
            &replica.replace("link_status:up", "link_status:down"),
            500
        ));
        assert!(!replica_info_holds(INFO, 500));
        assert!(!replica_info_holds("", 500));
    }

    #[test]
    fn a_replica_still_syncing_is_not_caught_up() {
        let syncing = INFO
            .replace("state=online,offset=500", "state=wait_bgsave,offset=500")
            .replace("offset=420", "offset=500");
        assert_eq!(
            replica_catch_up(&syncing, &[]),
            catch_up(&["s-2.h:6379"], &["10.0.0.3:6379"])
        );
        assert_eq!(replica_catch_up("role:master\r\n", &[]), None);
    }

    #[test]
    fn the_pause_is_extended_before_it_ends_and_never_past_the_failover_timeout() {
        let timing = HandoverTiming::default(); // pause 10 s, extend 2 s before its end
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let bound = s(30);
        // Well within the first pause: nothing to do.
        assert_eq!(pause_action(s(3), s(10), bound, &timing), PauseAction::Keep);
        assert_eq!(
            pause_action(ms(7_999), s(10), bound, &timing),
            PauseAction::Keep
        );
        // Within the margin: another full pause from now.
        assert_eq!(
            pause_action(s(8), s(10), bound, &timing),
            PauseAction::Extend(s(10))
        );
        assert_eq!(pause_action(s(9), s(18), bound, &timing), PauseAction::Keep);
        // The last extension is cut at the bound, then nothing more until the bound.
        assert_eq!(
            pause_action(s(26), s(28), bound, &timing),
            PauseAction::Extend(s(4))
        );
        assert_eq!(
            pause_action(ms(29_500), s(30), bound, &timing),
            PauseAction::Keep
        );
        assert_eq!(
            pause_action(s(30), s(30), bound, &timing),
            PauseAction::GiveUp
        );
        // A pause that already ended (a slow loop) is extended at once while within the bound.
        assert_eq!(
            pause_action(s(12), s(10), bound, &timing),
            PauseAction::Extend(s(10))
        );
        // A failover timeout shorter than one pause: the first pause is the whole wait.
        let store =
            crate::build::fixtures::store("  sentinel: {failoverTimeoutMilliseconds: 5000}\n");
        let short = failover_bound(&store, &timing);
        assert_eq!(short, s(10));
        assert_eq!(pause_action(s(9), s(10), short, &timing), PauseAction::Keep);
        assert_eq!(
            pause_action(s(10), s(10), short, &timing),
            PauseAction::GiveUp
        );
        let store =
            crate::build::fixtures::store("  sentinel: {failoverTimeoutMilliseconds: 45000}\n");
        assert_eq!(failover_bound(&store, &timing), s(30));
        let store =
            crate::build::fixtures::store("  sentinel: {failoverTimeoutMilliseconds: 20000}\n");
        assert_eq!(failover_bound(&store, &timing), s(20));
    }

    #[test]
    fn a_failover_that_ended_on_the_old_primary_is_given_up() {
        let entry = |ip: &str, flags: &str| -> Vec<String> {
            [
                ("name", "checkout"),
                ("ip", ip),
                ("port", "6379"),
                ("flags", flags),
                ("failover-state", "none"),
            ]
            .iter()
            .flat_map(|(k, v)| [k.to_string(), v.to_string()])
            .collect()
        };
        let old = "s-0.h:6379";
        assert!(!failover_ended_without_promotion(
            &entry("s-0.h", "master,failover_in_progress"),
            old
        ));
        assert!(failover_ended_without_promotion(
            &entry("S-0.h", "master"),
            old
        ));
        // Already switched to the new primary: not an abort (the address check catches it).
        assert!(!failover_ended_without_promotion(
            &entry("s-1.h", "master"),
            old
        ));
        assert!(!failover_ended_without_promotion(&[], old));
    }

    #[test]
    fn only_replicas_the_primary_lists_online_count_as_synced() {
        let syncing = INFO.replace(
            "ip=s-2.h,port=6379,state=online",
            "ip=s-2.h,port=6379,state=wait_bgsave",
        );
        assert_eq!(
            online_replica_addresses(&syncing),
            Some(vec!["10.0.0.3:6379".to_string()])
        );
        assert_eq!(
            online_replica_addresses(INFO),
            Some(vec!["10.0.0.3:6379".to_string(), "s-2.h:6379".to_string()])
        );
        for state in ["send_bulk", "wait_bgsave"] {
            let all_syncing = INFO.replace("state=online", &format!("state={state}"));
            assert_eq!(online_replica_addresses(&all_syncing), Some(vec![]));
        }
        let replica = "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\n";
        assert_eq!(online_replica_addresses(replica), None);
        assert_eq!(online_replica_addresses("garbage"), None);
    }

    fn replica(address: &str, priority: &str, flags: &str) -> Vec<String> {
        let (ip, port) = address.split_once(':').unwrap_or_default();
        [
            ("name", address),
            ("ip", ip),
            ("port", port),
            ("flags", flags),
            ("slave-priority", priority),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }

    #[test]
    fn a_sentinel_is_asked_only_once_it_sees_the_avoided_pods_at_priority_zero() {
        let avoid = vec!["s-3.h:6379".to_string(), "s-4.h:6379".to_string()];
        let stale = [
            replica("s-1.h:6379", "100", "slave"),
            replica("s-3.h:6379", "100", "slave"),
            replica("s-4.h:6379", "0", "slave"),
        ];
        assert!(!promotable_view(&stale, &avoid));
        let seen = [
            replica("s-1.h:6379", "100", "slave"),
            replica("s-3.h:6379", "0", "slave"),
            replica("s-4.h:6379", "0", "slave"),
        ];
        assert!(promotable_view(&seen, &avoid));
        // A down pod to avoid cannot be promoted; a down candidate is no candidate.
        let down = [
            replica("s-1.h:6379", "100", "slave,s_down,disconnected"),
            replica("s-3.h:6379", "100", "slave,s_down"),
        ];
        assert!(!promotable_view(&down, &avoid));
        let one_left = [
            replica("s-2.h:6379", "100", "slave"),
            replica("s-3.h:6379", "100", "slave,s_down"),
        ];
        assert!(promotable_view(&one_left, &avoid));
        assert!(!promotable_view(&[], &avoid));
    }

    #[test]
    fn in_cluster_the_pods_are_dialled_by_their_headless_names() {
        let handover = SentinelHandover::in_cluster();
        let store = crate::build::fixtures::store("  replicas: 5\n");
        let settings = OperatorSettings::default();
        let address = |pod: &str| (handover.redis_address)(&store, &settings, pod);
        assert_eq!(
            address("checkout-4").as_deref(),
            Some("checkout-4.checkout-headless.shop.svc.cluster.local:6379")
        );
        assert_eq!(address("checkout-api-1"), None);
        assert_eq!(address("checkout-"), None);
        assert_eq!((handover.sentinels)(&store, &settings).len(), 5);
    }

    #[test]
    fn sentinels_of_pods_to_avoid_are_asked_last() {
        let avoid = vec!["s-0.h:6379".to_string()];
        let mut sentinels = vec![
            "s-0.h:26379".to_string(),
            "s-1.h:26379".to_string(),
            "S-2.h:26379".to_string(),
        ];
        sentinels.sort_by_key(|s| in_pods(s, &avoid));
        assert_eq!(sentinels, ["s-1.h:26379", "S-2.h:26379", "s-0.h:26379"]);
        assert!(in_pods("S-0.H:26379", &avoid));
        assert!(!in_pods("s-0.hx:26379", &avoid));
        assert!(!in_pods("s-0.h:26379", &[]));
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
