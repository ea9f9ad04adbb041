//! The rolling update with real processes on loopback (3 redis-server through the generated
//! startup.sh, 3 redis-sentinel with the generated config): the planner (`ha::rollout::decide`) is
//! driven with the real state (the Sentinel majority's primary, each pod's replication state), a
//! "restart" is a stop and start of the pod's Redis process, and the handover is the real
//! `SentinelHandover`, while a writer keeps writing sessions through whatever the Sentinels name.
//! Checked: the order (replicas, handover, old primary), no acknowledged write lost, exactly one
//! failover. Figures (acknowledged writes, errors, longest write gap, duration) are printed.

mod support;
mod support_ha;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use sessionstore_operator::build::acl::APP_USER;
use sessionstore_operator::build::acl::OPERATOR_USER;
use sessionstore_operator::ha::handover::{
    Handover, HandoverOutcome, HandoverRequest, ReplicationRequest, SentinelHandover,
};
use sessionstore_operator::ha::rollout::{Decision, RolloutInput, RolloutPod, decide};
use sessionstore_operator::ha::{DiscoveryOptions, discover_primary};
use sessionstore_operator::settings::OperatorSettings;
use support_ha::scenario::{missing_on, pod_of, start_cluster};
use support_ha::{HaCluster, PODS, info_field};

const OLD: &str = "rev-old";
const NEW: &str = "rev-new";
/// Bound of the whole update loop (iterations of ~200 ms plus the handover's own bounds).
const MAX_STEPS: usize = 600;

fn pod_name(i: usize) -> String {
    format!("checkout-{i}")
}

/// The handover dialling this cluster's loopback ports.
fn handover_for(cluster: &HaCluster) -> SentinelHandover {
    let ports = cluster.redis_ports.clone();
    let sentinels = cluster.sentinel_addrs();
    SentinelHandover::with_addresses(
        Arc::new(move |_, _, pod: &str| {
            let i: usize = pod.strip_prefix("checkout-")?.parse().ok()?;
            ports.get(i).map(|p| format!("127.0.0.1:{p}"))
        }),
        Arc::new(move |_, _| sentinels.clone()),
    )
}

/// The pod a Sentinel majority names, if any.
async fn majority_primary(cluster: &HaCluster) -> Option<usize> {
    let answer = discover_primary(
        &cluster.sentinel_addrs(),
        &cluster.master_name(),
        &cluster.discovery_options(),
    )
    .await
    .ok()?;
    pod_of(cluster, &answer.address())
}

/// What the writer needs of the cluster, owned: the driver restarts processes meanwhile.
struct WriterTarget {
    sentinels: Vec<String>,
    master_name: String,
    options: DiscoveryOptions,
    redis_ports: Vec<u16>,
    app_password: String,
}

impl WriterTarget {
    fn of(cluster: &HaCluster) -> Self {
        WriterTarget {
            sentinels: cluster.sentinel_addrs(),
            master_name: cluster.master_name(),
            options: cluster.discovery_options(),
            redis_ports: cluster.redis_ports.clone(),
            app_password: cluster.credentials.app.expose().to_string(),
        }
    }

    async fn primary_port(&self) -> Option<u16> {
        let answer = discover_primary(&self.sentinels, &self.master_name, &self.options)
            .await
            .ok()?;
        self.redis_ports
            .iter()
            .copied()
            .find(|port| answer.address() == format!("127.0.0.1:{port}"))
    }

    async fn connect(&self, port: u16) -> Option<MultiplexedConnection> {
        let info = ConnectionAddr::Tcp("127.0.0.1".into(), port)
            .into_connection_info()
            .ok()?
            .set_redis_settings(
                RedisConnectionInfo::default()
                    .set_username(APP_USER)
                    .set_password(self.app_password.clone())
                    .set_skip_set_lib_name(),
            );
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(15_000)));
        redis::Client::open(info)
            .ok()?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .ok()
    }
}

/// The planner as the rollout step drives it: when the decision is a restart, the primary's
/// replication view (the real `SentinelHandover::replication`) is asked and the decision taken
/// again with it; an unreadable view waits.
async fn decide_like_the_step(
    cluster: &HaCluster,
    handover: &SentinelHandover,
    pods: &[RolloutPod],
    primary: Option<&str>,
) -> Decision {
    let input = RolloutInput {
        desired_replicas: PODS as i32,
        update_revision: Some(NEW),
        observed: true,
        pods,
        primary,
        replicas_online: None,
    };
    let decision = decide(&input);
    let (Decision::Restart(_), Some(primary)) = (&decision, primary) else {
        return decision;
    };
    let settings = OperatorSettings::default();
    let view = handover
        .replication(ReplicationRequest {
            store: &cluster.store,
            settings: &settings,
            credentials: &cluster.credentials,
            tls_ca: None,
            primary,
        })
        .await;
    match view {
        Ok(online) => decide(&RolloutInput {
            replicas_online: Some(&online),
            ..input
        }),
        Err(why) => Decision::Wait(format!("replication view unreadable: {why}")),
    }
}

/// "Ready" as the pod's readiness probe says: the pod answers PING (an empty replica still
/// waiting for its full sync does).
async fn pod_answers_ping(cluster: &HaCluster, i: usize) -> bool {
    let Ok(mut conn) = cluster.connect(cluster.redis_ports[i], OPERATOR_USER).await else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_ok_and(|pong| pong == "PONG")
}

/// "Ready" as the pod's readiness probe would say: a primary, or a replica linked and synced.
async fn pod_ready(cluster: &HaCluster, i: usize) -> bool {
    let Some(info) = cluster.replication_info(i).await else {
        return false;
    };
    match info_field(&info, "role").as_deref() {
        Some("master") => true,
        Some("slave") => {
            info_field(&info, "master_link_status").as_deref() == Some("up")
                && info_field(&info, "master_sync_in_progress").as_deref() == Some("0")
        }
        _ => false,
    }
}

struct WriterReport {
    acknowledged: Vec<String>,
    errors: usize,
    longest_gap: Duration,
}

/// Writes `session:<n>` as the app user to the pod the Sentinels name, reconnecting and
/// re-resolving on any error and retrying the same key, until `stop`.
async fn write_through_sentinels(target: WriterTarget, stop: &AtomicBool) -> WriterReport {
    let mut report = WriterReport {
        acknowledged: Vec::new(),
        errors: 0,
        longest_gap: Duration::ZERO,
    };
    let mut conn = None;
    let mut last_ack = Instant::now();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            if let Some(port) = target.primary_port().await {
                conn = target.connect(port).await;
            }
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let key = format!("session:{n}");
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg("user=42")
            .arg("EX")
            .arg(3600)
            .query_async(c)
            .await;
        match set {
            Ok(()) => {
                report.longest_gap = report.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
                report.acknowledged.push(key);
                n += 1;
            }
            Err(_) => {
                report.errors += 1;
                conn = None;
            }
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_rollout_restarts_replicas_first_hands_over_then_restarts_the_old_primary() {
    let mut cluster = start_cluster(5000).await;
    let settings = OperatorSettings::default();
    let handover = handover_for(&cluster);
    let mut revisions = [OLD; PODS];
    let mut steps: Vec<String> = Vec::new();
    let mut primaries_seen: Vec<usize> = Vec::new();
    let mut handovers = (0usize, 0usize); // (asked, started)
    let started_at = Instant::now();

    let stop = AtomicBool::new(false);
    let writer = write_through_sentinels(WriterTarget::of(&cluster), &stop);
    let driver = async {
        let mut done = false;
        for _ in 0..MAX_STEPS {
            let primary = majority_primary(&cluster).await;
            if let Some(p) = primary
                && primaries_seen.last() != Some(&p)
            {
                primaries_seen.push(p);
            }
            let mut pods = Vec::new();
            for (i, revision) in revisions.iter().enumerate() {
                pods.push(RolloutPod {
                    name: pod_name(i),
                    ordinal: i as u32,
                    revision: Some((*revision).to_string()),
                    ready: pod_ready(&cluster, i).await,
                    terminating: false,
                });
            }
            let primary_name = primary.map(pod_name);
            let decision =
                decide_like_the_step(&cluster, &handover, &pods, primary_name.as_deref()).await;
            match decision {
                Decision::UpToDate => {
                    done = true;
                    break;
                }
                Decision::Wait(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                Decision::Restart(pod) => {
                    let i: usize = pod
                        .strip_prefix("checkout-")
                        .and_then(|o| o.parse().ok())
                        .expect("a pod of the store");
                    steps.push(format!("restart {pod}"));
                    // "Delete the pod": stop the process; the StatefulSet brings it back with
                    // the new template (here: the same generated config, started again).
                    cluster.kill_redis(i);
                    cluster.start_redis(i);
                    revisions[i] = NEW;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Decision::HandOver { primary } => {
                    handovers.0 += 1;
                    steps.push(format!("handover {primary}"));
                    let outcome = handover
                        .hand_over(HandoverRequest {
                            store: &cluster.store,
                            settings: &settings,
                            credentials: &cluster.credentials,
                            tls_ca: None,
                            primary: &primary,
                            avoid: &[],
                        })
                        .await;
                    println!("handover from {primary}: {outcome:?}");
                    if matches!(outcome, HandoverOutcome::Started { .. }) {
                        handovers.1 += 1;
                        // Like the operator's settle time: wait for the Sentinels to move on.
                        for _ in 0..100 {
                            if majority_primary(&cluster)
                                .await
                                .is_some_and(|p| pod_name(p) != primary)
                            {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        // Let the writer run a little on the updated store, then stop it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        done
    };
    let (report, done) = tokio::join!(writer, driver);
    let elapsed = started_at.elapsed();

    let final_primary = majority_primary(&cluster)
        .await
        .expect("a primary at the end");
    let lost = missing_on(&cluster, final_primary, &report.acknowledged).await;
    let failovers = primaries_seen.len().saturating_sub(1);
    println!(
        "real rollout: {:.1}s, steps {steps:?}, primaries seen {primaries_seen:?} ({failovers} failover), handovers asked {} started {}, writes acknowledged {} lost {lost}, write errors {} (retried), longest gap between acknowledged writes {} ms",
        elapsed.as_secs_f64(),
        handovers.0,
        handovers.1,
        report.acknowledged.len(),
        report.errors,
        report.longest_gap.as_millis()
    );
    assert!(
        done,
        "the rolling update finished within {MAX_STEPS} steps: {steps:?}"
    );
    let first_primary = primaries_seen.first().copied().expect("a primary was seen");
    let restarts: Vec<&String> = steps.iter().filter(|s| s.starts_with("restart")).collect();
    assert_eq!(restarts.len(), PODS, "{steps:?}");
    assert_eq!(
        restarts.last().map(|s| s.as_str()),
        Some(format!("restart {}", pod_name(first_primary)).as_str()),
        "the old primary is restarted last: {steps:?}"
    );
    let handover_at = steps
        .iter()
        .position(|s| s.starts_with("handover"))
        .expect("a handover");
    assert_eq!(
        steps[..handover_at]
            .iter()
            .filter(|s| s.starts_with("restart"))
            .count(),
        PODS - 1,
        "both replicas restarted before the handover: {steps:?}"
    );
    assert_eq!(
        failovers, 1,
        "exactly one failover (the handover): {primaries_seen:?}"
    );
    assert_ne!(final_primary, first_primary);
    assert!(!report.acknowledged.is_empty(), "the writer wrote");
    assert_eq!(lost, 0, "no acknowledged write lost");
}

/// The sync gate with real processes: a replica restarted onto an empty data dir answers PING (so
/// it would be Ready) long before the primary has sent it the full sync (the primary waits
/// `repl-diskless-sync-delay` before streaming). Readiness alone would restart the next replica
/// right away, leaving only the primary with the data; the gate waits until the primary lists the
/// restarted replica online, and the replica itself then reports its link up and its sync done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sync_gate_holds_the_next_restart_until_the_restarted_replica_is_online() {
    let mut cluster = start_cluster(5000).await;
    let handover = handover_for(&cluster);
    let mut primary_conn = cluster
        .connect(cluster.redis_ports[0], OPERATOR_USER)
        .await
        .expect("the primary answers");
    // Explicit (Redis 7.0's default is 5 s): the primary waits this long before a full sync.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg("3")
        .query_async::<()>(&mut primary_conn)
        .await
        .expect("CONFIG SET on the primary");
    let primary = Some(pod_name(0));
    let mut revisions = [OLD; PODS];
    let pods_of = |revisions: &[&str; PODS], ready: &[bool; PODS]| -> Vec<RolloutPod> {
        (0..PODS)
            .map(|i| RolloutPod {
                name: pod_name(i),
                ordinal: i as u32,
                revision: Some(revisions[i].to_string()),
                ready: ready[i],
                terminating: false,
            })
            .collect()
    };

    let first = decide_like_the_step(
        &cluster,
        &handover,
        &pods_of(&revisions, &[true; PODS]),
        primary.as_deref(),
    )
    .await;
    assert_eq!(
        first,
        Decision::Restart(pod_name(2)),
        "every replica synced at the start"
    );
    cluster.kill_redis(2);
    cluster.wipe_data(2);
    cluster.start_redis(2);
    revisions[2] = NEW;
    let restarted_at = Instant::now();

    let mut first_ping: Option<Duration> = None;
    let mut held_while_ready = 0usize;
    let mut released = None;
    for _ in 0..400 {
        let mut ready = [true; PODS];
        ready[2] = pod_answers_ping(&cluster, 2).await;
        if ready[2] && first_ping.is_none() {
            first_ping = Some(restarted_at.elapsed());
        }
        let pods = pods_of(&revisions, &ready);
        let readiness_only = decide(&RolloutInput {
            desired_replicas: PODS as i32,
            update_revision: Some(NEW),
            observed: true,
            pods: &pods,
            primary: primary.as_deref(),
            replicas_online: None,
        });
        let gated = decide_like_the_step(&cluster, &handover, &pods, primary.as_deref()).await;
        match &gated {
            Decision::Restart(pod) => {
                assert_eq!(pod, &pod_name(1));
                released = Some(restarted_at.elapsed());
                break;
            }
            Decision::Wait(why) if ready[2] => {
                assert_eq!(
                    why, "checkout-2 has not finished syncing from the primary",
                    "a Ready pod waits only for the sync"
                );
                assert_eq!(
                    readiness_only,
                    Decision::Restart(pod_name(1)),
                    "readiness alone would restart the next replica now"
                );
                held_while_ready += 1;
            }
            Decision::Wait(_) => {}
            other => panic!("unexpected decision {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let released = released.expect("the gate released once the replica was online");
    // When the gate lets the next restart through, the restarted replica holds the data.
    let info = cluster
        .replication_info(2)
        .await
        .expect("the restarted replica answers");
    println!(
        "sync gate: restarted replica answered PING after {} ms, the gate held {held_while_ready} Ready checks and released after {} ms; replica then: link {:?}, sync in progress {:?}",
        first_ping.map_or(0, |d| d.as_millis()),
        released.as_millis(),
        info_field(&info, "master_link_status"),
        info_field(&info, "master_sync_in_progress"),
    );
    assert!(
        held_while_ready > 0,
        "the restarted replica was Ready (PING) before the primary listed it online, and the gate held"
    );
    assert_eq!(
        info_field(&info, "master_link_status").as_deref(),
        Some("up")
    );
    assert_eq!(
        info_field(&info, "master_sync_in_progress").as_deref(),
        Some("0")
    );
}
