//! Failover bench: runs the real-process failover scenario (3 redis-server + 3 redis-sentinel on
//! loopback, SIGKILL of the primary mid-write) several times, with and without `WAIT 1 100`, and
//! prints the median failover time and the acknowledged writes lost.
//!
//! `cargo run --example failover_bench -- [runs=5] [down_after_ms=1000]`

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/support_ha/mod.rs"]
mod support_ha;

use std::time::Duration;

use support_ha::scenario::{run_failover, start_cluster};

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    let down_after: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    println!("failover bench: {runs} run(s) per mode, down-after-milliseconds {down_after}");
    for wait in [false, true] {
        let mode = if wait { "WAIT 1 100" } else { "async" };
        let mut times = Vec::new();
        let (mut acknowledged, mut lost, mut lost_after_rejoin, mut unconfirmed) = (0, 0, 0, 0);
        for run in 1..=runs {
            let mut cluster = start_cluster(down_after).await;
            let r = run_failover(&mut cluster, wait, 2000).await;
            println!(
                "  {mode:>10} run {run}: failover {:>5} ms (pod {} -> {}, {} Sentinels agree), acknowledged {}, unconfirmed {}, lost {}, lost after empty rejoin {}, rejoined pod missing {}, empty pod ever primary: {}",
                r.failover.as_millis(),
                r.old_primary,
                r.new_primary,
                r.agreeing,
                r.acknowledged,
                r.unconfirmed,
                r.lost,
                r.lost_after_rejoin,
                r.missing_on_rejoined,
                r.rejoined_ever_master
            );
            times.push(r.failover);
            acknowledged += r.acknowledged;
            unconfirmed += r.unconfirmed;
            lost += r.lost;
            lost_after_rejoin += r.lost_after_rejoin;
        }
        println!(
            "{mode}: median failover {} ms (min {} ms, max {} ms); acknowledged writes lost {lost} of {acknowledged} ({lost_after_rejoin} after the empty rejoin); unconfirmed by WAIT {unconfirmed}",
            median(times.clone()).as_millis(),
            times.iter().min().map(|d| d.as_millis()).unwrap_or(0),
            times.iter().max().map(|d| d.as_millis()).unwrap_or(0),
        );
    }
}
