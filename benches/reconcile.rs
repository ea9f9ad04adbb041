//! Reconciles 1,000 SessionStores against an in-process API double and prints what it cost:
//! API calls per new store, per unchanged store (resync) and after a restart, by verb, plus the
//! process CPU time per store. Run with `cargo bench --bench reconcile` (prints, asserts nothing).

#[path = "../tests/mock/api_double.rs"]
mod api_double;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use api_double::{ApiDouble, Call};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use sessionstore_operator::cache::{ChildKind, LiveChild, MemoryCache};
use sessionstore_operator::context::Context;
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::metrics;
use sessionstore_operator::reconcile::reconcile;
use sessionstore_operator::settings::OperatorSettings;

const STORES: usize = 1000;
const NAMESPACES: usize = 10;
const CONCURRENCY: usize = 8;

fn store_path(i: usize) -> String {
    format!(
        "/apis/sessionstore.dev/v1alpha1/namespaces/ns-{}/sessionstores/store-{i}",
        i % NAMESPACES
    )
}

fn seed(double: &ApiDouble) {
    for i in 0..STORES {
        let profile = if i % 2 == 0 {
            "production"
        } else {
            "development"
        };
        double.put(
            &store_path(i),
            json!({
                "apiVersion": "sessionstore.dev/v1alpha1", "kind": "SessionStore",
                "metadata": {"name": format!("store-{i}"), "namespace": format!("ns-{}", i % NAMESPACES),
                             "uid": format!("uid-store-{i}"), "generation": 1, "resourceVersion": "1"},
                "spec": {"profile": profile, "clients": {"podSelector": {"matchLabels": {"app": format!("app-{i}")}}}},
            }),
        );
    }
}

fn sync_cache(double: &ApiDouble, cache: &MemoryCache) {
    for (fragment, kind) in [
        ("/configmaps/", ChildKind::ConfigMap),
        ("/services/", ChildKind::Service),
        ("/statefulsets/", ChildKind::StatefulSet),
        ("/networkpolicies/", ChildKind::NetworkPolicy),
        ("/poddisruptionbudgets/", ChildKind::PodDisruptionBudget),
    ] {
        for (_, object) in double.objects(fragment) {
            if let Ok(meta) = serde_json::from_value::<ObjectMeta>(object["metadata"].clone()) {
                cache.insert(
                    kind,
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                    LiveChild::from_meta(&meta),
                );
            }
        }
    }
}

fn context(double: &ApiDouble, cache: Arc<MemoryCache>) -> Arc<Context> {
    let server = double.clone();
    let service = tower::service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, std::convert::Infallible>(server.respond(request).await) }
    });
    let client = kube::Client::new(service, "default");
    let (_registry, metrics) = metrics::new_registry();
    Arc::new(Context::new(
        client,
        OperatorSettings::default(),
        cache,
        metrics,
    ))
}

/// User + system CPU time of this process, in seconds (from /proc/self/stat, clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the name: state is index 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn reconcile_all(double: &ApiDouble, ctx: &Arc<Context>) -> (usize, f64, f64) {
    let stores: Vec<SessionStore> = (0..STORES)
        .filter_map(|i| double.get(&store_path(i)))
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let failures = futures::stream::iter(stores)
        .map(|store| reconcile(Arc::new(store), ctx.clone()))
        .buffer_unordered(CONCURRENCY)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    (failures, cpu_seconds() - cpu, wall.elapsed().as_secs_f64())
}

fn report(phase: &str, calls: &[Call], failures: usize, cpu: f64, wall: f64) {
    let mut by_verb: BTreeMap<String, usize> = BTreeMap::new();
    let mut events = 0;
    for call in calls {
        if call.path().ends_with("/events") {
            events += 1;
        } else {
            *by_verb.entry(call.method.to_string()).or_default() += 1;
        }
    }
    let total: usize = by_verb.values().sum();
    let writes: usize = by_verb
        .iter()
        .filter(|(v, _)| v.as_str() != "GET")
        .map(|(_, n)| n)
        .sum();
    let per = |n: usize| n as f64 / STORES as f64;
    println!("== {phase} ({STORES} stores, concurrency {CONCURRENCY}, {failures} failed)");
    println!(
        "   API calls per store: {:.2} (writes {:.2}), by verb: {}; plus Events {:.2}",
        per(total),
        per(writes),
        by_verb
            .iter()
            .map(|(v, n)| format!("{v} {:.2}", per(*n)))
            .collect::<Vec<_>>()
            .join(", "),
        per(events)
    );
    println!(
        "   CPU per store: {:.3} ms (process user+sys, API double included); wall {:.2} s; RSS {} KiB (peak {} KiB)",
        cpu * 1000.0 / STORES as f64,
        wall,
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:")
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        let double = ApiDouble::new();
        seed(&double);
        println!("reconcile benchmark: {STORES} stores (half production: 3 replicas + PDB; half development)");
        let cache = MemoryCache::new();
        let ctx = context(&double, cache.clone());

        let (failures, cpu, wall) = reconcile_all(&double, &ctx).await;
        report("new stores (first reconcile)", &double.take_calls(), failures, cpu, wall);

        // What the watches would now hold.
        sync_cache(&double, &cache);
        let (failures, cpu, wall) = reconcile_all(&double, &ctx).await;
        report("unchanged stores (resync)", &double.take_calls(), failures, cpu, wall);

        let restarted = context(&double, cache.clone());
        let (failures, cpu, wall) = reconcile_all(&double, &restarted).await;
        report("unchanged stores after an operator restart", &double.take_calls(), failures, cpu, wall);

        let (failures, cpu, wall) = reconcile_all(&double, &restarted).await;
        report("unchanged stores, resync after the restart", &double.take_calls(), failures, cpu, wall);
    });
}
