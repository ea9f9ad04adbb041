//! Disruption of the primary pod (issue 14) while an application writes sessions through the
//! Service name. Planned: the pod deleted, and the pod evicted through the Eviction API as
//! `kubectl drain` does (the PodDisruptionBudget decides); the operator hands the primary role over
//! before Redis stops: no acknowledged write is lost, a `HandingOverPrimary` Event says the old
//! primary was demoted, and `PrimaryChanged` follows. Unplanned: the primary's `redis-server`
//! killed (a crash; local kit only); the Sentinels fail over, no acknowledged write is lost. The
//! longest write gap is printed, never asserted.

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, ListParams};
use serde_json::json;

use super::writer;
use super::{ENV, Fallible, HA_ENV, HaCase, READY_SECONDS, eventually};

/// How the primary pod is asked to stop.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Delete,
    Evict,
    /// SIGKILL of the primary's `redis-server` (the container restarts at once).
    Crash,
}

#[tokio::test]
async fn ha_primary_pod_deleted_hands_over_without_losing_a_write() -> Fallible {
    let Some(case) = HaCase::start("delete-primary").await? else {
        return Ok(());
    };
    let result = disruption(&case, Stop::Delete).await;
    case.finish(result).await
}

#[tokio::test]
async fn ha_primary_pod_evicted_hands_over_without_losing_a_write() -> Fallible {
    let Some(case) = HaCase::start("evict-primary").await? else {
        return Ok(());
    };
    let result = disruption(&case, Stop::Evict).await;
    case.finish(result).await
}

async fn disruption(case: &HaCase, stop: Stop) -> Fallible {
    let store = "drain";
    case.apply_store(store, 3, json!({})).await?;
    let old = case.wait_ready(store, 3, READY_SECONDS).await?;
    let events_before = case.primary_changed_events(store).await?;
    let old_uid = case
        .pod_states(store)
        .await?
        .get(&old)
        .map(|p| p.uid.clone())
        .ok_or("the primary pod is not listed")?;

    let client = case.service_client(store).await?;
    let prefix = "session:drain:";
    let writing = writer::ServiceWriter::start(client.clone(), prefix, Duration::from_secs(600));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stopped_at = Instant::now();
    match stop {
        Stop::Delete => {
            case.pods().delete(&old, &DeleteParams::default()).await?;
        }
        Stop::Evict => {
            // As `kubectl drain`: the eviction is refused (429) while the PodDisruptionBudget
            // allows no disruption (its status lags the pods by a moment); retry, bounded.
            eventually("the Eviction API to admit the eviction", 120, || async {
                match case.pods().evict(&old, &EvictParams::default()).await {
                    Ok(_) => Some(()),
                    Err(kube::Error::Api(e)) if e.code == 429 => {
                        println!("eviction refused by the PodDisruptionBudget: {}", e.message);
                        None
                    }
                    Err(e) => {
                        println!("eviction failed: {e}");
                        None
                    }
                }
            })
            .await?;
        }
        Stop::Crash => {
            let ip = case
                .pods()
                .get(&old)
                .await?
                .status
                .and_then(|s| s.pod_ip)
                .ok_or("the primary pod has no IP")?;
            let pid = kill_redis_server(&ip)?;
            println!("killed redis-server (pid {pid}) of {old} at {ip}");
        }
    }
    let new = eventually("a new primary in status.primary", 180, || async {
        case.status_primary(store).await.filter(|p| *p != old)
    })
    .await?;
    let to_status = stopped_at.elapsed();
    eventually(
        "the new primary labelled, behind the Service, with a PrimaryChanged Event",
        180,
        || async {
            let pods = case.pod_states(store).await.ok()?;
            let labelled = pods.get(&new)?.role.as_deref() == Some("primary");
            let endpoints = case.service_endpoints(store).await.ok()?;
            let events = case.primary_changed_events(store).await.ok()?;
            (labelled && endpoints == [new.clone()] && events > events_before).then_some(())
        },
    )
    .await?;
    let to_service = stopped_at.elapsed();
    if !matches!(stop, Stop::Crash) {
        // The old pod has gone (replaced by a new one with the same name, or not yet recreated).
        eventually("the stopped pod to be gone", 180, || async {
            let pods = case.pod_states(store).await.ok()?;
            pods.get(&old)
                .is_none_or(|p| p.uid != old_uid)
                .then_some(())
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = writing.stop()?;
    println!(
        "disruption ({stop:?}): writes acknowledged {}, write errors {}, longest write gap {:.2}s",
        report.acknowledged.len(),
        report.errors,
        report.longest_gap.as_secs_f64(),
    );
    // Read back through the Service name; a lookup may fail while the kit's DNS reloads.
    let lost = eventually("the acknowledged writes to be read back", 60, || async {
        let client = client.clone();
        let acknowledged = report.acknowledged.clone();
        let read = tokio::task::spawn_blocking(move || {
            writer::lost_writes(&client, prefix, &acknowledged)
        })
        .await
        .ok()?;
        match read {
            Ok(lost) => Some(lost),
            Err(e) => {
                println!("read-back failed, retrying: {e}");
                None
            }
        }
    })
    .await?;
    let handover = handover_event(case, store).await?;
    let pre_stop = pre_stop_line(&old_uid);
    let changes = case.primary_changed_events(store).await? - events_before;
    println!(
        "disruption ({stop:?}): primary {old} -> {new}; status.primary after {:.1}s, Service after \
         {:.1}s; writes acknowledged {}, lost {lost}, write errors {}, longest write gap {:.2}s; \
         PrimaryChanged Events: {changes}; handover Event: {handover:?}; preStop: {pre_stop}",
        to_status.as_secs_f64(),
        to_service.as_secs_f64(),
        report.acknowledged.len(),
        report.errors,
        report.longest_gap.as_secs_f64(),
    );
    if report.acknowledged.is_empty() {
        return Err("the writer never got a write acknowledged".into());
    }
    if lost != 0 {
        return Err(format!("{lost} acknowledged writes lost ({stop:?} of the primary)").into());
    }
    if changes < 1 {
        return Err("no PrimaryChanged Event after the primary went".into());
    }
    if matches!(stop, Stop::Crash) {
        // A crash is no planned disruption: the Sentinels fail over.
        return Ok(());
    }
    // The operator handed over and demoted the old primary before it stopped (a Normal Event;
    // a Warning would say the old primary was not demoted).
    match handover {
        Some((kind, note))
            if kind == "Normal" && note.contains(&format!("{old} now replicates")) => {}
        other => {
            return Err(format!(
                "no planned handover from {old} with its demotion was reported: {other:?}"
            )
            .into());
        }
    }
    Ok(())
}

/// The `HandingOverPrimary` Event of a stopping primary (type, note), if any.
async fn handover_event(case: &HaCase, store: &str) -> Fallible<Option<(String, String)>> {
    let events: Api<Event> = Api::namespaced(case.client.clone(), &case.ns);
    let list = events.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("HandingOverPrimary"))
        .filter(|e| e.action.as_deref() == Some("PodStopping"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(store))
        .map(|e| {
            (
                e.type_.clone().unwrap_or_default(),
                e.note.clone().unwrap_or_default(),
            )
        })
        .next())
}

/// What the Redis container's preStop hook printed (the kit keeps it next to the container logs;
/// informative only: a real kubelet does not keep a hook's output).
fn pre_stop_line(uid: &str) -> String {
    let Ok(kubeconfig) = std::env::var(ENV) else {
        return "unknown".into();
    };
    let file = std::path::Path::new(&kubeconfig)
        .with_file_name("kubelet")
        .join("pods")
        .join(uid)
        .join("redis.prestop.log");
    std::fs::read_to_string(&file)
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|e| format!("{} unreadable: {e}", file.display()))
}

#[tokio::test]
async fn ha_primary_redis_killed_loses_no_acknowledged_write() -> Fallible {
    let Some(case) = HaCase::start("crash-primary").await? else {
        return Ok(());
    };
    if case.operator.is_none() {
        println!("SKIPPED: the crash case kills a pod's process on this host ({HA_ENV}=local)");
        return case.finish(Ok(())).await;
    }
    let result = disruption(&case, Stop::Crash).await;
    case.finish(result).await
}

/// SIGKILL of the `redis-server` in the pod with `pod_ip`: the kit runs each pod in a network
/// namespace `lk<n>` whose address is `10.244.<n / 250>.<n % 250 + 2>`; the namespace's address is
/// checked before anything is killed.
fn kill_redis_server(pod_ip: &str) -> Fallible<String> {
    use std::process::Command;
    let octets: Vec<u32> = pod_ip
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [_, _, third, fourth] = octets[..] else {
        return Err(format!("not an IPv4 pod address: {pod_ip}").into());
    };
    let netns = format!("lk{}", third * 250 + fourth - 2);
    let addresses = Command::new("ip")
        .args(["-n", &netns, "-o", "-4", "addr", "show"])
        .output()?;
    if !String::from_utf8_lossy(&addresses.stdout).contains(&format!("inet {pod_ip}/")) {
        return Err(format!("network namespace {netns} does not hold {pod_ip}").into());
    }
    let pids = Command::new("ip")
        .args(["netns", "pids", &netns])
        .output()?;
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if comm.trim() == "redis-server" && !cmdline.contains("sentinel") {
            let killed = Command::new("kill").args(["-KILL", pid]).status()?;
            if !killed.success() {
                return Err(format!("kill -KILL {pid} failed").into());
            }
            return Ok(pid.to_string());
        }
    }
    Err(format!("no redis-server in network namespace {netns}").into())
}
