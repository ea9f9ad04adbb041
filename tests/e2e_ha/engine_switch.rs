//! Switching an HA store from Redis to Valkey (issue 16) while an application writes sessions
//! through the Service name: `spec.engine: valkey` is an ordered rolling update (replicas first,
//! one handover, the old primary last), no acknowledged write is lost and every session written
//! before is still there. Switching back is refused in status (`InvalidSpec` naming
//! `spec.engine`) and no pod restarts. On the kit, `redis` images run Debian's Redis 7.0 and
//! `valkey` images Valkey 8.0.1, so the switch really crosses engines (and RDB formats 10 -> 11).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use super::writer;
use super::{Fallible, HaCase, READY_SECONDS, SESSIONS, eventually};

#[tokio::test]
async fn ha_engine_switch_redis_to_valkey_keeps_every_write() -> Fallible {
    let Some(case) = HaCase::start("engine").await? else {
        return Ok(());
    };
    let result = switch(&case).await;
    case.finish(result).await
}

/// The images of the Redis containers of the store's pods, by pod.
async fn server_images(case: &HaCase, store: &str) -> Fallible<Vec<(String, String)>> {
    let pods: Api<Pod> = Api::namespaced(case.client.clone(), &case.ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={store}")))
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|p| {
            let name = p.metadata.name.clone()?;
            let image = p
                .spec
                .as_ref()?
                .containers
                .iter()
                .find(|c| c.name == "redis")?
                .image
                .clone()?;
            Some((name, image))
        })
        .collect())
}

async fn switch(case: &HaCase) -> Fallible {
    let store = "switch";
    case.apply_store_spec(store, 3, json!({})).await?;
    let old_primary = case.wait_ready(store, 3, READY_SECONDS).await?;
    case.write_sessions(store, 2).await?;
    let before = case.pod_states(store).await?;
    let events_before = case.primary_changed_events(store).await?;

    let client = case.service_client(store).await?;
    let prefix = "session:switch:";
    let writing = writer::ServiceWriter::start(client.clone(), prefix, Duration::from_secs(900));
    tokio::time::sleep(Duration::from_secs(3)).await;

    case.apply_store_spec(store, 3, json!({"engine": "valkey"}))
        .await?;
    let seen = case.watch_roll(store, &before).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = writing.stop()?;
    let seen = seen?;
    let lost = tokio::task::spawn_blocking({
        let acknowledged = report.acknowledged.clone();
        move || writer::lost_writes(&client, prefix, &acknowledged)
    })
    .await??;
    let new_primary = case
        .status_primary(store)
        .await
        .ok_or("no primary after the switch")?;
    let changes = case.primary_changed_events(store).await? - events_before;
    let images = server_images(case, store).await?;
    let survived = case.count_sessions(store, "e2e-reader").await?;
    let mut order: Vec<(&usize, &String)> = seen.replaced_at.iter().map(|(n, p)| (p, n)).collect();
    order.sort();
    println!(
        "engine switch redis -> valkey: {:.1}s; restart order (poll, pod): {order:?}; most pods \
         down at once: {}; primary {old_primary} -> {new_primary}; PrimaryChanged Events: \
         {changes}; writes acknowledged {}, lost {lost}, write errors {}, longest write gap \
         {:.2}s; sessions written before: {survived} of {SESSIONS}; images {images:?}",
        seen.took.as_secs_f64(),
        seen.most_down,
        report.acknowledged.len(),
        report.errors,
        report.longest_gap.as_secs_f64(),
    );
    if images.len() != 3 || !images.iter().all(|(_, i)| i.contains("valkey")) {
        return Err(format!("not every pod runs the Valkey image: {images:?}").into());
    }
    let primary_poll = seen.replaced_at.get(&old_primary).copied().unwrap_or(0);
    if !seen
        .replaced_at
        .iter()
        .all(|(name, at)| *name == old_primary || *at < primary_poll)
    {
        return Err(
            format!("the old primary {old_primary} was not switched last: {order:?}").into(),
        );
    }
    if seen.most_down > 1 {
        return Err(format!("{} pods were down at once", seen.most_down).into());
    }
    if report.acknowledged.is_empty() {
        return Err("the writer never got a write acknowledged".into());
    }
    if lost != 0 {
        return Err(format!("{lost} acknowledged writes lost in the switch").into());
    }
    if survived != SESSIONS {
        return Err(format!("{} sessions lost in the switch", SESSIONS - survived).into());
    }
    if changes != 1 {
        return Err(format!("expected one handover in the switch, saw {changes}").into());
    }
    // The probe reads the engine from the primary's INFO server (`server_name`, not the
    // compatibility `redis_version`).
    let health = eventually("status.health to report Valkey", 120, || async {
        let health = case.stores().get(store).await.ok()?.status?.health?;
        (health.engine.as_deref() == Some("valkey")).then_some(health)
    })
    .await?;
    println!(
        "engine switch: status.health says {:?} {:?}",
        health.engine, health.version
    );
    if !health
        .version
        .as_deref()
        .is_some_and(|v| v.starts_with('8'))
    {
        return Err(format!(
            "status.health.version is not Valkey's: {:?}",
            health.version
        )
        .into());
    }

    let switched = case.pod_states(store).await?;
    // Back to Redis: a Redis replica cannot load a Valkey primary's RDB, so it is refused and
    // nothing restarts. (The CRD's CEL rule refuses it at admission on 1.25+; the kit is 1.24.)
    case.apply_store_spec(store, 3, json!({"engine": "redis"}))
        .await?;
    let message = eventually("the switch back to be refused in status", 120, || async {
        let object = case.stores().get(store).await.ok()?;
        let status = object.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (status.observed_generation == object.metadata.generation
            && ready.reason == "InvalidSpec"
            && ready.message.contains("spec.engine"))
        .then(|| ready.message.clone())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = case.pod_states(store).await?;
    let unchanged = after.len() == switched.len()
        && after
            .iter()
            .all(|(name, pod)| switched.get(name).is_some_and(|s| s.uid == pod.uid) && pod.serving);
    let images_after = server_images(case, store).await?;
    println!("engine switch back refused: {message}; images {images_after:?}");
    if images_after != images || !unchanged {
        return Err(format!(
            "the refused switch back changed the pods: {images:?} -> {images_after:?}"
        )
        .into());
    }
    Ok(())
}
