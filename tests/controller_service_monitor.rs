//! `spec.monitoring.serviceMonitor` through the real reconcile over the API double: the
//! ServiceMonitor is applied when prometheus-operator's API exists (and not rewritten when nothing
//! changed), a condition and one Event say so when the API is missing, and turning the field off
//! deletes the ServiceMonitor only when it is ours.

#[path = "mock/api_double.rs"]
mod api_double;
#[path = "mock/harness.rs"]
mod harness;
mod support;

use api_double::{ApiDouble, Call};
use harness::Harness;
use http::Method;
use serde_json::{Value, json};

const DISCOVERY: &str = "/apis/monitoring.coreos.com/v1";
const SM_PATH: &str = "/apis/monitoring.coreos.com/v1/namespaces/shop/servicemonitors/web";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

fn spec(service_monitor: bool) -> Value {
    json!({"profile": "development", "clients": {"podSelector": {"matchLabels": {"app": "web"}}},
           "monitoring": {"exporter": true, "serviceMonitor": service_monitor}})
}

fn install_prometheus_operator(double: &ApiDouble) {
    double.put(
        DISCOVERY,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
               "resources": [{"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true,
                              "kind": "ServiceMonitor", "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]}),
    );
}

fn lines(calls: &[Call], path: &str) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.path() == path)
        .map(Call::line)
        .collect()
}

fn writes(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.is_write())
        .map(Call::line)
        .collect()
}

fn event_reasons(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == Method::POST && c.path() == EVENTS)
        .filter_map(|c| c.body.as_ref()?.get("reason")?.as_str().map(str::to_owned))
        .collect()
}

fn condition(double: &ApiDouble, type_: &str) -> Option<Value> {
    double
        .get(harness::STORE_PATH)?
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Two reconciles with the watch cache fed in between, as the running operator would have it.
async fn reconcile_twice(h: &Harness) -> (Vec<Call>, Vec<Call>) {
    h.reconcile().await.expect("first reconcile");
    h.sync_cache();
    let first = h.double.take_calls();
    h.reconcile().await.expect("second reconcile");
    (first, h.double.take_calls())
}

#[tokio::test]
async fn created_when_the_api_exists_and_not_written_again_when_unchanged() {
    let h = Harness::new(spec(true), 1);
    install_prometheus_operator(&h.double);
    let (first, second) = reconcile_twice(&h).await;

    let applies: Vec<&Call> = first
        .iter()
        .filter(|c| c.method == Method::PATCH && c.path() == SM_PATH)
        .collect();
    assert_eq!(applies.len(), 1, "{:?}", writes(&first));
    assert!(
        applies[0]
            .uri
            .contains("fieldManager=sessionstore-operator")
            && applies[0].uri.contains("force=true"),
        "{}",
        applies[0].uri
    );
    let live = h.double.get(SM_PATH).expect("ServiceMonitor stored");
    assert_eq!(live["kind"], "ServiceMonitor");
    assert_eq!(live["metadata"]["ownerReferences"][0]["uid"], "5e55-1");
    assert_eq!(live["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        live["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "sessionstore-operator"
    );
    // It selects what the headless Service (the one with the metrics port) carries.
    let headless = h
        .double
        .get("/api/v1/namespaces/shop/services/web-headless")
        .expect("headless Service");
    assert_eq!(
        live["spec"]["selector"]["matchLabels"],
        headless["metadata"]["labels"]
    );
    assert!(
        headless["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "metrics")
    );
    assert_eq!(live["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(live["spec"]["endpoints"][0]["interval"], "30s");
    assert!(condition(&h.double, "ServiceMonitorUnavailable").is_none());
    assert_eq!(lines(&first, DISCOVERY), vec![format!("GET {DISCOVERY}")]);

    // Steady state: no call about the ServiceMonitor, and no discovery, at all.
    assert!(
        lines(&second, SM_PATH).is_empty(),
        "{:?}",
        lines(&second, SM_PATH)
    );
    assert!(lines(&second, DISCOVERY).is_empty());
    assert!(writes(&second).is_empty(), "{:?}", writes(&second));

    // After a restart: one discovery and one metadata read find our hash; no write.
    let h = h.restarted(1);
    h.reconcile().await.expect("reconcile after restart");
    let calls = h.double.take_calls();
    assert_eq!(lines(&calls, SM_PATH), vec![format!("GET {SM_PATH}")]);
    assert!(writes(&calls).is_empty(), "{:?}", writes(&calls));
}

#[tokio::test]
async fn missing_api_gives_a_condition_and_one_event_then_installing_it_clears_them() {
    let h = Harness::new(spec(true), 1);
    let (first, second) = reconcile_twice(&h).await;
    let unavailable = condition(&h.double, "ServiceMonitorUnavailable").expect("condition");
    assert_eq!(unavailable["status"], "True");
    let message = unavailable["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.monitoring.serviceMonitor")
            && message.contains("monitoring.coreos.com"),
        "{message}"
    );
    let reasons = event_reasons(&first);
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "ServiceMonitorUnavailable")
            .count(),
        1,
        "{reasons:?}"
    );
    // Once, not per reconcile: the second sends no Event at all (neither a new one nor a
    // repeat of the first).
    let event_writes: Vec<String> = second
        .iter()
        .filter(|c| c.is_write() && c.path().starts_with(EVENTS))
        .map(Call::line)
        .collect();
    assert!(event_writes.is_empty(), "{event_writes:?}");
    let all: Vec<Call> = first.into_iter().chain(second).collect();
    assert_eq!(lines(&all, DISCOVERY).len(), 1, "discovered once");
    assert!(lines(&all, SM_PATH).is_empty());
    // The store is not failed: the children were applied and the status says so.
    assert!(
        h.double
            .get("/apis/apps/v1/namespaces/shop/statefulsets/web")
            .is_some()
    );
    let ready = condition(&h.double, "Ready").expect("Ready");
    assert_ne!(ready["reason"], "InvalidSpec");
    assert_eq!(
        h.double.get(harness::STORE_PATH).expect("store")["status"]["connectionSecret"],
        "web-connection"
    );

    // prometheus-operator installed; the operator restarts (or the re-check comes due).
    install_prometheus_operator(&h.double);
    let h = h.restarted(1);
    h.reconcile().await.expect("reconcile");
    assert!(
        h.double.get(SM_PATH).is_some(),
        "created once the API exists"
    );
    assert!(condition(&h.double, "ServiceMonitorUnavailable").is_none());
}

#[tokio::test]
async fn turning_the_field_off_deletes_our_service_monitor_once() {
    let h = Harness::new(spec(true), 1);
    install_prometheus_operator(&h.double);
    h.reconcile().await.expect("create");
    assert!(h.double.get(SM_PATH).is_some());
    h.sync_cache();
    h.double.take_calls();

    h.edit_spec(|spec| spec["monitoring"]["serviceMonitor"] = json!(false));
    let (first, second) = reconcile_twice(&h).await;
    assert_eq!(lines(&first, SM_PATH), vec![format!("DELETE {SM_PATH}")]);
    assert!(h.double.get(SM_PATH).is_none());
    assert!(lines(&second, SM_PATH).is_empty(), "known gone: no call");
}

#[tokio::test]
async fn after_a_restart_only_our_own_service_monitor_is_deleted() {
    // Ours, left by the operator before its restart: read once, then deleted.
    let h = Harness::new(spec(true), 1);
    install_prometheus_operator(&h.double);
    h.reconcile().await.expect("create");
    h.edit_spec(|spec| spec["monitoring"]["serviceMonitor"] = json!(false));
    let h = h.restarted(1);
    h.double.take_calls();
    let (first, second) = reconcile_twice(&h).await;
    assert_eq!(
        lines(&first, SM_PATH),
        vec![format!("GET {SM_PATH}"), format!("DELETE {SM_PATH}")]
    );
    assert!(h.double.get(SM_PATH).is_none());
    assert!(lines(&second, SM_PATH).is_empty());

    // A store that never had the field costs nothing, even with prometheus-operator installed.
    let h = Harness::new(spec(false), 1);
    install_prometheus_operator(&h.double);
    h.reconcile().await.expect("reconcile");
    let calls = h.double.take_calls();
    assert!(lines(&calls, SM_PATH).is_empty() && lines(&calls, DISCOVERY).is_empty());

    // Someone else's ServiceMonitor of the same name, found after a spec change during a
    // restart: read once, left alone.
    let h = h.restarted(1);
    h.edit_spec(|spec| spec["monitoring"]["exporter"] = json!(true));
    let theirs = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "1",
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x",
                                          "uid": "someone-else", "controller": true}]},
        "spec": {"selector": {}, "endpoints": []}});
    h.double.put(SM_PATH, theirs.clone());
    let (first, second) = reconcile_twice(&h).await;
    assert_eq!(lines(&first, SM_PATH), vec![format!("GET {SM_PATH}")]);
    assert_eq!(h.double.get(SM_PATH), Some(theirs));
    assert!(lines(&second, SM_PATH).is_empty());
}
