//! The deliberate handover with real processes on loopback (redis-server through the generated
//! startup.sh, redis-sentinel with the generated config): no acknowledged write is lost while a
//! writer keeps writing through "whatever the Sentinels name", `avoid` is honoured, and nothing
//! changes when no replica has caught up. Also the 3 -> 5 -> 3 scale-down story with the guard's
//! decision. Figures are printed, never asserted on time.

mod support;
mod support_ha;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sessionstore_operator::build::acl::{APP_USER, OPERATOR_USER};
use sessionstore_operator::ha::discover_primary;
use sessionstore_operator::ha::handover::{
    Handover, HandoverOutcome, HandoverRequest, HandoverTiming, SentinelHandover,
};
use sessionstore_operator::ha::scale::{ScaleDecision, scale_down_decision};
use sessionstore_operator::settings::OperatorSettings;
use support_ha::scenario::{missing_on, pod_of, start_cluster, start_cluster_sized};
use support_ha::{HaCluster, info_field, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

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

async fn hand_over(cluster: &HaCluster, primary: usize, avoid: &[usize]) -> HandoverOutcome {
    let settings = OperatorSettings::default();
    let avoid: Vec<String> = avoid.iter().map(|i| pod_name(*i)).collect();
    let primary = pod_name(primary);
    handover_for(cluster)
        .hand_over(HandoverRequest {
            store: &cluster.store,
            settings: &settings,
            credentials: &cluster.credentials,
            tls_ca: None,
            primary: &primary,
            avoid: &avoid,
        })
        .await
}

/// The pod a Sentinel majority names, if any.
async fn majority_primary(cluster: &HaCluster) -> Option<(usize, usize)> {
    let answer = discover_primary(
        &cluster.sentinel_addrs(),
        &cluster.master_name(),
        &cluster.discovery_options(),
    )
    .await
    .ok()?;
    Some((pod_of(cluster, &answer.address())?, answer.agreeing))
}

/// Waits until `primary` is the majority's answer, serves `replicas` linked replicas, and every
/// live Sentinel of the store has finished its failover (so another one may start).
async fn settle(cluster: &HaCluster, primary: usize, replicas: usize) {
    wait_for(
        LIMIT,
        &format!("pod {primary} to settle as primary"),
        || async move {
            let (named, _) = majority_primary(cluster).await?;
            let info = cluster.replication_info(primary).await?;
            let online = info.matches("state=online").count();
            let ok =
                named == primary && info_field(&info, "role")? == "master" && online == replicas;
            if !ok {
                return None;
            }
            for port in &cluster.sentinel_ports[..cluster.pods] {
                let mut conn = cluster.connect(*port, OPERATOR_USER).await.ok()?;
                let fields: Vec<String> = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(cluster.master_name())
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                let flags = fields.chunks(2).find(|c| c[0] == "flags")?.get(1)?.clone();
                if flags != "master" {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// What the writer saw.
struct WriterReport {
    acknowledged: Vec<String>,
    errors: usize,
    /// Longest time between two acknowledged writes (the write pause as a client sees it).
    longest_gap: Duration,
}

/// Writes `session:<tag>:<n>` as the app user to the pod the Sentinels name, reconnecting and
/// re-resolving on any error (and retrying the same key), until `stop`.
async fn write_through_sentinels(
    cluster: &HaCluster,
    tag: &str,
    stop: &AtomicBool,
) -> WriterReport {
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
            if let Some((pod, _)) = majority_primary(cluster).await {
                conn = cluster
                    .connect(cluster.redis_ports[pod], APP_USER)
                    .await
                    .ok();
            }
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let key = format!("session:{tag}:{n}");
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
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    report
}

/// One handover under write load; returns (new primary, request -> majority agrees, report).
async fn handover_under_load(
    cluster: &HaCluster,
    old: usize,
    avoid: &[usize],
    tag: &str,
) -> (usize, Duration, Duration, WriterReport, HandoverOutcome) {
    let stop = AtomicBool::new(false);
    let writer = write_through_sentinels(cluster, tag, &stop);
    let driver = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let requested = Instant::now();
        let outcome = hand_over(cluster, old, avoid).await;
        let call = requested.elapsed();
        let new = if matches!(outcome, HandoverOutcome::Started { .. }) {
            wait_for(
                LIMIT,
                "a Sentinel majority to name a new primary",
                || async {
                    let (pod, _) = majority_primary(cluster).await?;
                    (pod != old).then_some(pod)
                },
            )
            .await
        } else {
            old
        };
        let agreed = requested.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        (new, agreed, call, outcome)
    };
    let (report, (new, agreed, call, outcome)) = tokio::join!(writer, driver);
    (new, agreed, call, report, outcome)
}

/// The old primary replicates from the new one, with its link up.
async fn follows(cluster: &HaCluster, replica: usize, primary: usize) {
    let port = cluster.redis_ports[primary].to_string();
    wait_for(
        LIMIT,
        &format!("pod {replica} to follow pod {primary}"),
        || {
            let port = &port;
            async move {
                let info = cluster.replication_info(replica).await?;
                let ok = info_field(&info, "role")? == "slave"
                    && info_field(&info, "master_port")? == *port
                    && info_field(&info, "master_link_status")? == "up";
                ok.then_some(())
            }
        },
    )
    .await;
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_under_writes_loses_no_acknowledged_write_and_the_old_primary_follows() {
    // The handover forces its failover (`SENTINEL FAILOVER`), so nothing here waits for
    // down-after. A 1 s down-after let a Sentinel on a loaded machine mark the just-promoted
    // primary down (it stalls while it starts serving its replicas) and fail over a second time,
    // which this test would misread as a lost handover: 5 s is the default's order of magnitude.
    let cluster = start_cluster(5000).await;
    let mut primary = 0;
    let mut agreed_times = Vec::new();
    for run in 0..3 {
        settle(&cluster, primary, 2).await;
        let (new, agreed, call, report, outcome) =
            handover_under_load(&cluster, primary, &[], &format!("r{run}")).await;
        assert!(
            matches!(outcome, HandoverOutcome::Started { demoted: true, .. }),
            "{outcome:?}"
        );
        assert_ne!(new, primary, "a different pod is primary");
        follows(&cluster, primary, new).await;
        let lost = missing_on(&cluster, new, &report.acknowledged).await;
        println!(
            "handover {run}: pod {primary} -> pod {new}; call {call:?}, request -> majority agrees {agreed:?}; \
             acknowledged {}, lost {lost}, write errors {}, longest write gap {:?}; {outcome:?}",
            report.acknowledged.len(),
            report.errors,
            report.longest_gap
        );
        assert!(!report.acknowledged.is_empty());
        assert_eq!(lost, 0, "every acknowledged write is on the new primary");
        agreed_times.push(agreed);
        primary = new;
    }
    println!(
        "request -> Sentinel majority agrees: median {:?} of {:?}",
        median(agreed_times.clone()),
        agreed_times
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avoided_pods_are_never_promoted() {
    let cluster = start_cluster_sized(5, 1000).await;
    // Move the primary to pod 4 with the handover itself (every other pod avoided), then give
    // the avoided pods their priority back as a restart would.
    let outcome = hand_over(&cluster, 0, &[0, 1, 2, 3]).await;
    assert!(
        matches!(outcome, HandoverOutcome::Started { demoted: true, .. }),
        "{outcome:?}"
    );
    settle(&cluster, 4, 4).await;
    reset_priorities(&cluster, 0..4).await;

    let (new, agreed, _, report, outcome) =
        handover_under_load(&cluster, 4, &[3, 4], "avoid").await;
    assert!(
        matches!(outcome, HandoverOutcome::Started { demoted: true, .. }),
        "{outcome:?}"
    );
    let lost = missing_on(&cluster, new, &report.acknowledged).await;
    println!(
        "5 pods, avoid [3, 4]: pod 4 -> pod {new} in {agreed:?}; acknowledged {}, lost {lost}, longest write gap {:?}",
        report.acknowledged.len(),
        report.longest_gap
    );
    assert!(new <= 2, "pod {new} was to be avoided");
    assert_eq!(lost, 0);
    follows(&cluster, 4, new).await;
}

/// `CONFIG SET replica-priority 100` on `pods` (what their restart would do).
async fn reset_priorities(cluster: &HaCluster, pods: std::ops::Range<usize>) {
    for i in pods {
        let mut conn = cluster
            .connect(cluster.redis_ports[i], OPERATOR_USER)
            .await
            .expect("operator connects");
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("replica-priority")
            .arg("100")
            .query_async(&mut conn)
            .await
            .expect("CONFIG SET");
    }
}

async fn priority(cluster: &HaCluster, i: usize) -> String {
    let mut conn = cluster
        .connect(cluster.redis_ports[i], OPERATOR_USER)
        .await
        .expect("operator connects");
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("replica-priority")
        .query_async(&mut conn)
        .await
        .expect("CONFIG GET");
    pair.get(1).cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_caught_up_replica_means_not_now_and_writes_flow_again() {
    let cluster = start_cluster(60_000).await;
    // Both replicas frozen (SIGSTOP: their connections stay open, so the Sentinels, with a long
    // down-after, still list them as candidates), then one more write: nobody has it.
    for i in [1, 2] {
        let pid = cluster.redis_pid(i).expect("replica runs").to_string();
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill runs");
        assert!(stopped.success());
    }
    let mut app = cluster
        .connect(cluster.redis_ports[0], APP_USER)
        .await
        .expect("app connects");
    let () = redis::cmd("SET")
        .arg("session:last")
        .arg("v")
        .query_async(&mut app)
        .await
        .expect("SET");
    let started = Instant::now();
    let outcome = hand_over(&cluster, 0, &[]).await;
    println!("no replica: {outcome:?} after {:?}", started.elapsed());
    let HandoverOutcome::NotNow { message } = outcome else {
        panic!("expected NotNow, got {outcome:?}");
    };
    assert!(message.contains("no replica has caught up"), "{message}");
    assert!(!message.contains(cluster.credentials.operator.expose()));
    // Still primary, and writes are not paused.
    let (named, _) = majority_primary(&cluster).await.expect("majority");
    assert_eq!(named, 0);
    let () = redis::cmd("SET")
        .arg("session:after")
        .arg("v")
        .query_async(&mut app)
        .await
        .expect("a write goes through: the pause was lifted");
    let info = cluster.replication_info(0).await.expect("info");
    assert_eq!(info_field(&info, "role").as_deref(), Some("master"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pods_get_their_priority_back() {
    let cluster = start_cluster(1000).await;
    // Every replica avoided: no Sentinel has a replica it may promote; the priorities are restored
    // and writes were never paused.
    let outcome = hand_over(&cluster, 0, &[1, 2]).await;
    assert!(
        matches!(&outcome, HandoverOutcome::NotNow { message } if message.contains("no Sentinel sees a replica it may promote")),
        "{outcome:?}"
    );
    for i in [1, 2] {
        assert_eq!(priority(&cluster, i).await, "100", "pod {i}");
    }
    // A pod that is not the primary is refused before anything changes.
    let outcome = hand_over(&cluster, 1, &[]).await;
    assert!(
        matches!(&outcome, HandoverOutcome::NotNow { message } if message.contains("no longer primary")),
        "{outcome:?}"
    );
}

/// 3 pods with sessions, scaled to 5 (pods 3 and 4 join through startup.sh with the 5-replica
/// configs), pod 4 made primary, then scaled back to 3: the guard holds the scale-down and hands
/// the primary over to a pod that stays; only then pods 3 and 4 go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_three_five_three_keeps_every_session_and_a_primary_that_stays() {
    let mut cluster = start_cluster(1000).await;
    let mut app = cluster
        .connect(cluster.redis_ports[0], APP_USER)
        .await
        .expect("app connects");
    let mut sessions = Vec::new();
    for n in 0..500 {
        let key = format!("session:before:{n}");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .arg("EX")
            .arg(3600)
            .query_async(&mut app)
            .await
            .expect("SET");
        sessions.push(key);
    }
    drop(app);

    // Scale up: pods 3 and 4 start with the configs of a 5-replica store.
    cluster.rescale(5);
    for i in [3, 4] {
        cluster.start_redis(i);
        follows(&cluster, i, 0).await;
        cluster.start_sentinel(i);
    }
    settle(&cluster, 0, 4).await;
    assert_eq!(missing_on(&cluster, 4, &sessions).await, 0);

    // Pod 4 becomes primary (every other pod avoided), then the others get their priority back.
    let outcome = hand_over(&cluster, 0, &[0, 1, 2, 3]).await;
    assert!(
        matches!(outcome, HandoverOutcome::Started { demoted: true, .. }),
        "{outcome:?}"
    );
    settle(&cluster, 4, 4).await;
    reset_priorities(&cluster, 0..4).await;

    // Scale down to 3: the guard holds the StatefulSet at 5 and hands over away from 3 and 4.
    let decision = scale_down_decision("checkout", 5, 3, Some(&pod_name(4)));
    let ScaleDecision::Hold {
        replicas, avoid, ..
    } = decision.clone()
    else {
        panic!("expected the guard to hold, got {decision:?}");
    };
    assert_eq!(replicas, 5);
    assert_eq!(avoid, vec![pod_name(3), pod_name(4)]);
    let (new, agreed, _, report, outcome) =
        handover_under_load(&cluster, 4, &[3, 4], "scale").await;
    assert!(
        matches!(outcome, HandoverOutcome::Started { demoted: true, .. }),
        "{outcome:?}"
    );
    assert!(new <= 2, "the new primary {new} stays after the scale-down");
    follows(&cluster, 4, new).await;
    sessions.extend(report.acknowledged.iter().cloned());
    assert_eq!(
        scale_down_decision("checkout", 5, 3, Some(&pod_name(new))),
        ScaleDecision::Proceed,
        "the guard releases once the primary is in range"
    );

    // The StatefulSet shrinks: pods 3 and 4 go.
    for i in [3, 4] {
        cluster.kill_redis(i);
        cluster.kill_sentinel(i);
    }
    cluster.rescale(3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (named, agreeing) = majority_primary(&cluster)
        .await
        .expect("a majority of 0..=2");
    let lost = missing_on(&cluster, named, &sessions).await;
    println!(
        "3 -> 5 -> 3: pod 4 -> pod {new} in {agreed:?}; after pods 3 and 4 left, {agreeing} of 3 Sentinels name pod {named}; \
         sessions {} (written during the handover {}), lost {lost}, longest write gap {:?}",
        sessions.len(),
        report.acknowledged.len(),
        report.longest_gap
    );
    assert_eq!(named, new);
    assert!(agreeing >= 2);
    assert_eq!(lost, 0, "every session is on the primary");
}

/// TLS stores: the handover dials Redis over TLS trusting exactly the store CA. With no Sentinel
/// to ask, it stops after ROLE (proving the TLS dial and the operator's login worked); with
/// another CA it cannot reach the primary at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_primary_is_dialled_with_the_store_ca_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = support::validated(
        "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
         metadata: {name: checkout, namespace: shop}\n\
         spec:\n  clients: {podSelector: {matchLabels: {app: checkout}}}\n\
         \x20 tls: {enabled: true, secretName: checkout-tls}\n",
    );
    let credentials = support::credentials();
    let pki = support::tls::TestPki::generate();
    let server = support::redis_server::RedisServer::start_tls(&store, &credentials, &pki);
    let port = server.port();
    let handover = SentinelHandover::with_addresses(
        Arc::new(move |_, _, pod: &str| (pod == "checkout-0").then(|| format!("localhost:{port}"))),
        Arc::new(|_, _| Vec::new()),
    )
    .with_timing(HandoverTiming {
        sentinel_view: Duration::ZERO,
        ..HandoverTiming::default()
    });
    let settings = OperatorSettings::default();
    let ask = |ca: Vec<u8>| {
        let handover = &handover;
        let store = &store;
        let settings = &settings;
        let credentials = &credentials;
        async move {
            handover
                .hand_over(HandoverRequest {
                    store,
                    settings,
                    credentials,
                    tls_ca: Some(&ca),
                    primary: "checkout-0",
                    avoid: &[],
                })
                .await
        }
    };
    let trusted = ask(pki.ca_crt.clone()).await;
    assert!(
        matches!(&trusted, HandoverOutcome::NotNow { message } if message.contains("no Sentinel sees")),
        "{trusted:?}"
    );
    let other_ca = ask(pki.wrong_ca_crt.clone()).await;
    assert!(
        matches!(&other_ca, HandoverOutcome::NotNow { message } if message.contains("cannot reach the primary")),
        "{other_ca:?}"
    );
    for outcome in [&trusted, &other_ca] {
        let HandoverOutcome::NotNow { message } = outcome else {
            continue;
        };
        assert!(!message.contains(credentials.operator.expose()));
    }
}

/// Sends `signal` (`-STOP`/`-CONT`) to every Sentinel of the cluster with one `kill`, so the
/// Sentinels stop and resume together and the freeze is not lengthened by one process start per
/// Sentinel (under load those starts added up to 0.5 s, enough to cross the 2 s TILT trigger).
fn signal_sentinels(cluster: &HaCluster, signal: &str) {
    let pids: Vec<String> = (0..cluster.redis_ports.len())
        .map(|i| cluster.sentinel_pid(i).expect("Sentinel runs").to_string())
        .collect();
    let sent = std::process::Command::new("kill")
        .arg(signal)
        .args(&pids)
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill {signal} {pids:?}");
}

/// Slow Sentinels: they are frozen (SIGSTOP) as soon as one shows the failover in progress while
/// still naming the old primary (for 1.2 s: a Sentinel whose timer stalls 2 s or more enters TILT
/// mode and stops acting for 30 s, measured: the failover then outlived the failover timeout). The
/// handover keeps the old primary's writes paused (extending the pause) until the Sentinels name
/// the new primary, so no paused write runs on the old primary and none is lost.
///
/// The timing follows the handover's own rules rather than racing them: the replicas report their
/// offset once a second, so the catch-up wait (1.5 s) covers one report, and the pause (2 s) covers
/// the catch-up and the `SENTINEL FAILOVER` call (a catch-up that outlived the pause would compare
/// offsets while writes flow again). The pause is extended once it ends within 1.5 s, which the
/// frozen Sentinels (1.2 s after the failover started, itself after the pause began) always reach:
/// the extension is certain, not a race won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sentinels_keep_the_writes_paused_until_the_new_primary_is_named() {
    let cluster = start_cluster(60_000).await;
    let pause = Duration::from_millis(2000);
    let frozen_for = Duration::from_millis(1200);
    let handover = handover_for(&cluster).with_timing(HandoverTiming {
        pause,
        catch_up: Duration::from_millis(1500),
        extend_before: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(300),
        response_timeout: Duration::from_millis(300),
        ..HandoverTiming::default()
    });
    let settings = OperatorSettings::default();
    let old_address = cluster.addr(0);
    let stop = AtomicBool::new(false);
    let failover_seen = AtomicBool::new(false);
    let writer = write_through_sentinels(&cluster, "slow", &stop);
    // Watches the Sentinels: freezes them all once one is failing over and still names pod 0.
    let freezer = async {
        let mut conns = Vec::new();
        for address in cluster.sentinel_addrs() {
            let port: u16 = address
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("a port");
            conns.push(
                cluster
                    .connect(port, OPERATOR_USER)
                    .await
                    .expect("Sentinel answers"),
            );
        }
        for _ in 0..2000 {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            for conn in conns.iter_mut() {
                let fields: Vec<String> = match redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(cluster.master_name())
                    .query_async(conn)
                    .await
                {
                    Ok(fields) => fields,
                    Err(_) => continue,
                };
                let get = |key: &str| {
                    fields
                        .chunks(2)
                        .find(|c| c[0] == key)
                        .and_then(|c| c.get(1))
                        .cloned()
                        .unwrap_or_default()
                };
                let named = format!("{}:{}", get("ip"), get("port"));
                if get("flags").contains("failover_in_progress") && named == old_address {
                    signal_sentinels(&cluster, "-STOP");
                    let stopped_at = Instant::now();
                    failover_seen.store(true, Ordering::Relaxed);
                    tokio::time::sleep(frozen_for).await;
                    signal_sentinels(&cluster, "-CONT");
                    return Some((get("failover-state"), stopped_at.elapsed()));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    };
    let driver = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let requested = Instant::now();
        let outcome = handover
            .hand_over(HandoverRequest {
                store: &cluster.store,
                settings: &settings,
                credentials: &cluster.credentials,
                tls_ca: None,
                primary: &pod_name(0),
                avoid: &[],
            })
            .await;
        let call = requested.elapsed();
        // A handover that did not start fails below with its reason, not after a minute of
        // waiting for a failover nobody asked for.
        let new = if matches!(outcome, HandoverOutcome::Started { .. }) {
            wait_for(
                LIMIT,
                "a Sentinel majority to name a new primary",
                || async {
                    let (pod, _) = majority_primary(&cluster).await?;
                    (pod != 0).then_some(pod)
                },
            )
            .await
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        (outcome, call, new)
    };
    let (report, frozen, (outcome, call, new)) = tokio::join!(writer, freezer, driver);
    let HandoverOutcome::Started {
        message,
        demoted,
        promoted,
    } = &outcome
    else {
        panic!("the handover started: {outcome:?} (call {call:?})");
    };
    let lost = missing_on(&cluster, new, &report.acknowledged).await;
    println!(
        "slow Sentinels: frozen {frozen:?} (pause {pause:?}); handover call {call:?}, pod 0 -> pod {new}; acknowledged {}, lost {lost}, write errors {}, longest write gap {:?}; {outcome:?}",
        report.acknowledged.len(),
        report.errors,
        report.longest_gap
    );
    assert!(
        failover_seen.load(Ordering::Relaxed) && frozen.is_some(),
        "the Sentinels were frozen during the failover, before naming the new primary"
    );
    assert!(*demoted, "the old primary was demoted: {message}");
    assert_eq!(
        promoted.as_deref(),
        Some(pod_name(new).as_str()),
        "the promoted pod is the one a majority names"
    );
    assert!(
        message.contains("now replicates from it") && message.contains("write pause extended"),
        "the old primary was demoted within an extended pause: {message}"
    );
    assert!(!report.acknowledged.is_empty(), "the writer wrote");
    assert_eq!(lost, 0, "no acknowledged write lost");
}
