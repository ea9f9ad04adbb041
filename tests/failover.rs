//! Sentinel failover with real processes on loopback: 3 redis-server started through the generated
//! safe-start script and 3 redis-sentinel with the generated config. Asserts correctness only
//! (majority agreement, no acknowledged session lost with WAIT, an empty pod never becomes primary
//! over replicas holding data); the figures are printed and measured by examples/failover_bench.rs.

mod support;
mod support_ha;

use sessionstore_operator::ha::{DiscoveryError, discover_primary};
use support_ha::scenario::{missing_on, pod_of, run_failover, start_cluster};
use support_ha::{PODS, info_field, reserve_port, wait_for};

use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brand_new_store_bootstraps_pod_zero_and_every_sentinel_monitors_it() {
    let cluster = start_cluster(1000).await;
    // start_cluster waited for pod 0 to be primary with both replicas linked; the Sentinels'
    // init step found it through the peers (no Sentinel was up yet) and wrote it into the config.
    for i in 0..PODS {
        let conf = cluster.sentinel_conf_text(i);
        let monitor = format!(
            "sentinel monitor checkout 127.0.0.1 {} 2",
            cluster.redis_ports[0]
        );
        assert!(
            conf.contains(&monitor),
            "sentinel {i} config lacks {monitor:?}"
        );
        assert!(conf.contains("sentinel auth-user checkout sentinel"));
    }
    let answer = discover_primary(
        &cluster.sentinel_addrs(),
        "checkout",
        &cluster.discovery_options(),
    )
    .await
    .expect("majority answer");
    assert_eq!(pod_of(&cluster, &answer.address()), Some(0));
    assert_eq!((answer.agreeing, answer.asked), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_refuses_an_answer_without_a_majority() {
    let cluster = start_cluster(1000).await;
    let sentinels = cluster.sentinel_addrs();
    // One live Sentinel out of three configured addresses is not a majority. The two others are
    // reserved ports nothing listens on (held until the end, so no other test can bind them).
    let closed = [reserve_port(), reserve_port()];
    let lonely = vec![
        sentinels[0].clone(),
        format!("127.0.0.1:{}", closed[0].port()),
        format!("127.0.0.1:{}", closed[1].port()),
    ];
    let result = discover_primary(&lonely, "checkout", &cluster.discovery_options()).await;
    assert!(
        matches!(
            result,
            Err(DiscoveryError::NoMajority {
                asked: 3,
                answered: 1,
                best_votes: 1,
                needed: 2,
                ..
            })
        ),
        "{result:?}"
    );
    // The wrong password gets no vote either.
    let mut wrong = cluster.discovery_options();
    wrong.password = sessionstore_operator::password::Password::from_secret_value("wrong".into());
    let result = discover_primary(&sentinels, "checkout", &wrong).await;
    assert!(
        matches!(result, Err(DiscoveryError::NoMajority { answered: 0, .. })),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_wait_loses_no_acknowledged_session_and_the_empty_old_primary_rejoins_as_replica()
 {
    let mut cluster = start_cluster(1000).await;
    let run = run_failover(&mut cluster, true, 300).await;
    println!(
        "WAIT 1 100: failover {:?}, acknowledged {}, lost {}, lost after rejoin {}",
        run.failover, run.acknowledged, run.lost, run.lost_after_rejoin
    );
    assert_ne!(run.new_primary, run.old_primary);
    assert!(
        run.agreeing >= 2,
        "a majority of 3 Sentinels named the new primary"
    );
    assert!(run.acknowledged >= 300);
    assert_eq!(run.lost, 0, "writes confirmed by WAIT survive the failover");
    assert_eq!(
        run.lost_after_rejoin, 0,
        "the empty old primary must not wipe the new primary"
    );
    assert_eq!(
        run.missing_on_rejoined, 0,
        "the rejoined replica has every session"
    );
    assert!(
        !run.rejoined_ever_master,
        "an empty pod must never serve as primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_without_wait_converges_and_rejoin_loses_nothing_more() {
    let mut cluster = start_cluster(1000).await;
    let run = run_failover(&mut cluster, false, 300).await;
    println!(
        "async: failover {:?}, acknowledged {}, lost {}, lost after rejoin {}",
        run.failover, run.acknowledged, run.lost, run.lost_after_rejoin
    );
    assert_ne!(run.new_primary, run.old_primary);
    // Async replication may lose the last writes at the crash, but the empty old primary's
    // return must not lose any more.
    assert_eq!(run.lost_after_rejoin, run.lost);
    assert_eq!(run.missing_on_rejoined, run.lost);
    assert!(!run.rejoined_ever_master);
}

/// The classic data-loss bug: the primary restarts with an empty disk faster than Sentinel's
/// down-after, so the Sentinels still name it primary. Starting as primary would make both
/// replicas resync to its empty dataset. The script must join a replica holding data instead and
/// ask the Sentinels to fail over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_primary_restarted_before_sentinel_notices_never_wipes_the_replicas() {
    // A long down-after makes sure the Sentinels still name the old primary when it restarts.
    let mut cluster = start_cluster(5000).await;
    let mut conn = cluster
        .connect(cluster.redis_ports[0], "app")
        .await
        .expect("app connects");
    let mut keys = Vec::new();
    for n in 0..200 {
        let key = format!("session:{n}");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .arg("EX")
            .arg(3600)
            .query_async(&mut conn)
            .await
            .expect("SET");
        keys.push(key);
    }
    let acked: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(2000)
        .query_async(&mut conn)
        .await
        .expect("WAIT");
    assert_eq!(acked, 2, "both replicas hold the sessions before the crash");
    drop(conn);

    cluster.kill_redis(0);
    cluster.wipe_data(0);
    cluster.start_redis(0);

    let ever_master = std::sync::atomic::AtomicBool::new(false);
    let new_primary = wait_for(
        LIMIT,
        "a replica to be promoted and pod 0 to follow it",
        || {
            let cluster = &cluster;
            let ever_master = &ever_master;
            async move {
                let info = cluster.replication_info(0).await?;
                if info_field(&info, "role")? == "master" {
                    ever_master.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let answer = discover_primary(
                    &cluster.sentinel_addrs(),
                    "checkout",
                    &cluster.discovery_options(),
                )
                .await
                .ok()?;
                let primary = pod_of(cluster, &answer.address())?;
                let ok = primary != 0
                    && info_field(&info, "role")? == "slave"
                    && info_field(&info, "master_port")?
                        == cluster.redis_ports[primary].to_string()
                    && info_field(&info, "master_link_status")? == "up";
                ok.then_some(primary)
            }
        },
    )
    .await;
    assert!(
        !ever_master.load(std::sync::atomic::Ordering::Relaxed),
        "the empty pod answered as primary"
    );
    assert_eq!(
        missing_on(&cluster, new_primary, &keys).await,
        0,
        "sessions lost on the new primary"
    );
    assert_eq!(
        missing_on(&cluster, 0, &keys).await,
        0,
        "the restarted pod resynced every session"
    );
    let log = std::fs::read_to_string(cluster.log("redis-0")).unwrap_or_default();
    assert!(
        log.contains("still name this pod primary"),
        "the script took the named-but-empty path:\n{log}"
    );
}
