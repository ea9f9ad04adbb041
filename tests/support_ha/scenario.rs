//! The failover scenario shared by tests/failover.rs (which asserts correctness) and
//! examples/failover_bench.rs (which prints figures): bootstrap, write sessions, SIGKILL the
//! primary, wait for the Sentinel majority, count lost writes, restart the old primary empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sessionstore_operator::build::acl::{APP_USER, OPERATOR_USER};
use sessionstore_operator::ha::discover_primary;

use super::{HaCluster, PODS, info_field, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

/// Starts every Redis through the script at once (a brand-new store), waits for pod 0 to be
/// primary with both replicas linked, then starts the Sentinels and waits until each one sees
/// both replicas and the other Sentinels.
pub async fn start_cluster(down_after_ms: i64) -> HaCluster {
    start_cluster_sized(PODS, down_after_ms).await
}

/// `start_cluster` with `pods` pods.
pub async fn start_cluster_sized(pods: usize, down_after_ms: i64) -> HaCluster {
    start_prepared(HaCluster::sized(pods, down_after_ms)).await
}

/// `start_cluster`, each container reading only the internal Secret keys its projected volume
/// mounts (`HaCluster::with_container_mounts`).
pub async fn start_cluster_with_container_mounts(down_after_ms: i64) -> HaCluster {
    start_prepared(HaCluster::with_container_mounts(PODS, down_after_ms)).await
}

async fn start_prepared(mut cluster: HaCluster) -> HaCluster {
    let pods = cluster.pods;
    for i in 0..pods {
        cluster.start_redis(i);
    }
    for i in 0..pods {
        let want_master = i == 0;
        wait_for(
            LIMIT,
            &format!("pod {i} to take its bootstrap role"),
            || {
                let cluster = &cluster;
                async move {
                    let info = cluster.replication_info(i).await?;
                    let role = info_field(&info, "role")?;
                    let ok = if want_master {
                        role == "master"
                            && info_field(&info, "connected_slaves")? == (pods - 1).to_string()
                    } else {
                        role == "slave"
                            && info_field(&info, "master_port")?
                                == cluster.redis_ports[0].to_string()
                            && info_field(&info, "master_link_status")? == "up"
                    };
                    ok.then_some(())
                }
            },
        )
        .await;
    }
    for i in 0..pods {
        cluster.start_sentinel(i);
    }
    for i in 0..pods {
        wait_for(
            LIMIT,
            &format!("Sentinel {i} to see every replica and Sentinel"),
            || {
                let cluster = &cluster;
                async move {
                    let mut conn = cluster
                        .connect(cluster.sentinel_ports[i], OPERATOR_USER)
                        .await
                        .ok()?;
                    let fields: Vec<String> = redis::cmd("SENTINEL")
                        .arg("MASTER")
                        .arg(cluster.master_name())
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    let get = |k: &str| fields.chunks(2).find(|c| c[0] == k).map(|c| c[1].clone());
                    let ok = get("num-slaves")? == (pods - 1).to_string()
                        && get("num-other-sentinels")? == (pods - 1).to_string();
                    ok.then_some(())
                }
            },
        )
        .await;
    }
    cluster
}

/// Keys the writer got an acknowledgement for.
pub struct Writes {
    pub acknowledged: Vec<String>,
    /// Writes the primary applied but WAIT did not confirm on a replica (not acknowledged).
    pub unconfirmed: usize,
}

/// Writes `session:<run>:<n>` keys with a TTL as the app user until the connection fails.
/// With `wait`, a write counts as acknowledged only once `WAIT 1 100` saw a replica take it.
async fn write_until_error(
    mut conn: redis::aio::MultiplexedConnection,
    wait: bool,
    counter: Arc<AtomicUsize>,
) -> Writes {
    let mut writes = Writes {
        acknowledged: Vec::new(),
        unconfirmed: 0,
    };
    for n in 0.. {
        let key = format!("session:{n}");
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg("user=42;csrf=abc")
            .arg("EX")
            .arg(3600)
            .query_async(&mut conn)
            .await;
        if set.is_err() {
            break;
        }
        if wait {
            match redis::cmd("WAIT")
                .arg(1)
                .arg(100)
                .query_async::<i64>(&mut conn)
                .await
            {
                Ok(replicas) if replicas >= 1 => {}
                Ok(_) => {
                    writes.unconfirmed += 1;
                    continue;
                }
                Err(_) => break,
            }
        }
        writes.acknowledged.push(key);
        counter.fetch_add(1, Ordering::Relaxed);
    }
    writes
}

/// How many of `keys` are missing on pod `i` (read as the app user).
pub async fn missing_on(cluster: &HaCluster, i: usize, keys: &[String]) -> usize {
    let Ok(mut conn) = cluster.connect(cluster.redis_ports[i], APP_USER).await else {
        return keys.len();
    };
    let mut missing = 0;
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("EXISTS").arg(key);
        }
        match pipe.query_async::<Vec<i64>>(&mut conn).await {
            Ok(found) => missing += found.iter().filter(|f| **f == 0).count(),
            Err(_) => missing += chunk.len(),
        }
    }
    missing
}

/// Which pod listens on `address` (`127.0.0.1:<port>`).
pub fn pod_of(cluster: &HaCluster, address: &str) -> Option<usize> {
    (0..cluster.redis_ports.len()).find(|i| cluster.addr(*i) == address)
}

pub struct FailoverRun {
    pub old_primary: usize,
    pub new_primary: usize,
    /// SIGKILL -> a Sentinel majority names the new primary through `discover_primary`, and
    /// that pod reports `role:master`.
    pub failover: Duration,
    pub agreeing: usize,
    pub acknowledged: usize,
    pub unconfirmed: usize,
    /// Acknowledged writes missing on the new primary right after the failover.
    pub lost: usize,
    /// Acknowledged writes missing on the new primary after the old one rejoined empty.
    pub lost_after_rejoin: usize,
    /// Acknowledged writes missing on the rejoined (formerly primary, restarted empty) pod.
    pub missing_on_rejoined: usize,
    /// Whether the empty old primary ever answered `role:master` while rejoining.
    pub rejoined_ever_master: bool,
}

/// Writes, kills the primary mid-stream, measures the failover, restarts the old primary empty.
pub async fn run_failover(
    cluster: &mut HaCluster,
    wait: bool,
    writes_before_kill: usize,
) -> FailoverRun {
    let options = cluster.discovery_options();
    let sentinels = cluster.sentinel_addrs();
    let before = discover_primary(&sentinels, &cluster.master_name(), &options)
        .await
        .expect("Sentinels agree on the bootstrap primary");
    let old_primary = pod_of(cluster, &before.address()).expect("primary is one of the pods");

    let counter = Arc::new(AtomicUsize::new(0));
    let port = cluster.redis_ports[old_primary];
    let conn = cluster
        .connect(port, APP_USER)
        .await
        .expect("app user connects to the primary");
    let (writes, killed_at) = {
        let writer = write_until_error(conn, wait, counter.clone());
        let killer = async {
            wait_for(LIMIT, "sessions to be written", || {
                let counter = counter.clone();
                async move { (counter.load(Ordering::Relaxed) >= writes_before_kill).then_some(()) }
            })
            .await;
            Instant::now()
        };
        tokio::pin!(writer);
        tokio::pin!(killer);
        // Kill while the writer keeps writing, so the last writes race the crash.
        let killed_at = tokio::select! {
            at = &mut killer => at,
            _ = &mut writer => panic!("writer stopped before the primary was killed"),
        };
        cluster.kill_redis(old_primary);
        (writer.await, killed_at)
    };

    let answer = wait_for(LIMIT, "a Sentinel majority to name a new primary", || {
        let cluster = &*cluster;
        let sentinels = &sentinels;
        let options = &options;
        async move {
            let answer = discover_primary(sentinels, &cluster.master_name(), options)
                .await
                .ok()?;
            let pod = pod_of(cluster, &answer.address())?;
            if pod == old_primary {
                return None;
            }
            let info = cluster.replication_info(pod).await?;
            (info_field(&info, "role")? == "master").then_some(answer)
        }
    })
    .await;
    let failover = killed_at.elapsed();
    let new_primary = pod_of(cluster, &answer.address()).expect("new primary is a pod");
    let lost = missing_on(cluster, new_primary, &writes.acknowledged).await;

    // The old primary comes back with an empty disk through the safe-start script.
    cluster.wipe_data(old_primary);
    cluster.start_redis(old_primary);
    let ever_master = std::sync::atomic::AtomicBool::new(false);
    let new_port = cluster.redis_ports[new_primary].to_string();
    wait_for(
        LIMIT,
        "the empty old primary to rejoin as a replica",
        || {
            let cluster = &*cluster;
            let new_port = &new_port;
            let ever_master = &ever_master;
            async move {
                let info = cluster.replication_info(old_primary).await?;
                let role = info_field(&info, "role")?;
                if role == "master" {
                    ever_master.store(true, Ordering::Relaxed);
                }
                let ok = role == "slave"
                    && info_field(&info, "master_port")? == *new_port
                    && info_field(&info, "master_link_status")? == "up";
                ok.then_some(())
            }
        },
    )
    .await;
    let lost_after_rejoin = missing_on(cluster, new_primary, &writes.acknowledged).await;
    let missing_on_rejoined = missing_on(cluster, old_primary, &writes.acknowledged).await;

    FailoverRun {
        old_primary,
        new_primary,
        failover,
        agreeing: answer.agreeing,
        acknowledged: writes.acknowledged.len(),
        unconfirmed: writes.unconfirmed,
        lost,
        lost_after_rejoin,
        missing_on_rejoined,
        rejoined_ever_master: ever_master.load(Ordering::Relaxed),
    }
}
