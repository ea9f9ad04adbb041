//! Reconcile scenarios against a mocked API server (kube-rs's tower-test pattern): the exact calls a
//! reconcile sends, in order, with verbs, URIs, field manager and the key fields of each body.

#[path = "mock/api_double.rs"]
mod api_double;

use std::sync::Arc;
use std::time::Duration;

use api_double::{ApiDouble, Call, Fault, mock_client};
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use sessionstore_operator::cache::{ChildKind, MemoryCache};
use sessionstore_operator::context::Context;
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::metrics::{self, Metrics};
use sessionstore_operator::password::Password;
use sessionstore_operator::reconcile::{error_policy, reconcile};
use sessionstore_operator::settings::OperatorSettings;

const STORE_PATH: &str = "/apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web";
const SECRETS: &str = "/api/v1/namespaces/shop/secrets";

fn store_json(spec: Value) -> Value {
    json!({
        "apiVersion": "sessionstore.dev/v1alpha1",
        "kind": "SessionStore",
        "metadata": {"name": "web", "namespace": "shop", "uid": "5e55-1", "generation": 1, "resourceVersion": "1"},
        "spec": spec,
    })
}

fn production_spec() -> Value {
    json!({"profile": "production", "clients": {"podSelector": {"matchLabels": {"app": "web"}}}})
}

struct Harness {
    double: ApiDouble,
    cache: Arc<MemoryCache>,
    ctx: Arc<Context>,
    registry: Arc<prometheus_client::registry::Registry>,
    _server: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn new(double: ApiDouble) -> Self {
        Self::with_cache(double, MemoryCache::new())
    }

    /// A fresh Context (as after an operator restart) over the same double and cache.
    fn with_cache(double: ApiDouble, cache: Arc<MemoryCache>) -> Self {
        let (client, server) = mock_client(&double);
        let (registry, metrics): (_, Metrics) = metrics::new_registry();
        let ctx = Arc::new(Context::new(
            client,
            OperatorSettings::default(),
            cache.clone(),
            metrics,
        ));
        Harness {
            double,
            cache,
            ctx,
            registry,
            _server: server,
        }
    }

    /// The store as the watch would deliver it now (with the status the double holds).
    fn store(&self) -> Arc<SessionStore> {
        let value = self.double.get(STORE_PATH).expect("store seeded");
        Arc::new(serde_json::from_value(value).expect("a SessionStore"))
    }

    async fn reconcile(&self) -> sessionstore_operator::Result<Action> {
        tokio::time::timeout(
            Duration::from_secs(10),
            reconcile(self.store(), self.ctx.clone()),
        )
        .await
        .expect("reconcile finishes")
    }

    /// Feeds the cache what label-selected watches would hold: every stored child's metadata.
    fn sync_cache(&self) {
        self.double.fill_cache(&self.cache);
    }
}

fn seeded(spec: Value) -> ApiDouble {
    let double = ApiDouble::new();
    double.put(STORE_PATH, store_json(spec));
    double
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

fn secret_data(double: &ApiDouble, name: &str, key: &str) -> Option<String> {
    let secret = double.get(&format!("{SECRETS}/{name}"))?;
    let encoded = secret
        .pointer(&format!("/data/{key}"))?
        .as_str()?
        .to_string();
    // ByteString serializes as base64; decode by round-tripping through k8s-openapi.
    let bytes: k8s_openapi::ByteString = serde_json::from_value(Value::String(encoded)).ok()?;
    String::from_utf8(bytes.0).ok()
}

#[tokio::test]
async fn first_reconcile_creates_every_child_in_order_and_patches_status() {
    let h = Harness::new(seeded(production_spec()));
    let action = h.reconcile().await.expect("reconciles");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    let calls = h.double.take_calls();
    assert_eq!(
        lines(&calls),
        [
            "GET /api/v1/namespaces/shop/secrets/web-connection",
            "PATCH /api/v1/namespaces/shop/configmaps/web-config",
            "POST /api/v1/namespaces/shop/secrets",
            "POST /api/v1/namespaces/shop/secrets",
            "PATCH /api/v1/namespaces/shop/services/web-headless",
            "PATCH /api/v1/namespaces/shop/services/web",
            "PATCH /apis/apps/v1/namespaces/shop/statefulsets/web",
            "PATCH /apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web",
            "PATCH /apis/policy/v1/namespaces/shop/poddisruptionbudgets/web",
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
            "PATCH /apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web/status",
        ]
    );
    for call in calls.iter().filter(|c| c.method == Method::PATCH) {
        assert!(
            call.uri.contains("fieldManager=sessionstore-operator"),
            "{}",
            call.uri
        );
        assert!(
            call.uri.contains("force=true"),
            "server-side apply is forced: {}",
            call.uri
        );
        let body = call.body.as_ref().expect("patch body");
        assert!(
            body["apiVersion"].is_string() && body["kind"].is_string(),
            "SSA body names its kind"
        );
    }
    let kinds: Vec<_> = calls
        .iter()
        .filter(|c| c.method == Method::PATCH && !c.uri.contains("/status"))
        .map(|c| {
            let b = c.body.as_ref().expect("body");
            format!(
                "{}/{}",
                b["kind"].as_str().unwrap_or_default(),
                b["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap/web-config",
            "Service/web-headless",
            "Service/web",
            "StatefulSet/web",
            "NetworkPolicy/web",
            "PodDisruptionBudget/web"
        ]
    );
    // Every applied child carries the applied-hash annotation and our ownerReference.
    for call in calls
        .iter()
        .filter(|c| c.method == Method::PATCH && !c.uri.contains("/status"))
    {
        let meta = &call.body.as_ref().expect("body")["metadata"];
        assert!(meta["annotations"]["sessionstore.dev/applied-hash"].is_string());
        assert_eq!(meta["ownerReferences"][0]["uid"], "5e55-1");
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"],
            "sessionstore-operator"
        );
    }

    // The Secrets are created with POST (never applied), with the field manager; the connection
    // Secret first, as it holds the only copy of the application password the internal Secret's
    // ACL file is derived from.
    let posts: Vec<_> = calls
        .iter()
        .filter(|c| c.method == Method::POST && c.path() == SECRETS)
        .collect();
    assert_eq!(
        posts[0].body.as_ref().expect("body")["metadata"]["name"],
        "web-connection"
    );
    assert_eq!(
        posts[1].body.as_ref().expect("body")["metadata"]["name"],
        "web-internal"
    );
    assert!(
        posts
            .iter()
            .all(|c| c.uri.contains("fieldManager=sessionstore-operator"))
    );
    for key in [
        "operator-password",
        "replication-password",
        "sentinel-password",
        "users.acl",
    ] {
        assert!(
            secret_data(&h.double, "web-internal", key).is_some(),
            "internal Secret has {key}"
        );
    }
    let app_password =
        secret_data(&h.double, "web-connection", "password").expect("app password stored");
    let acl = secret_data(&h.double, "web-internal", "users.acl").expect("acl");
    assert!(
        acl.contains(&Password::from_secret_value(app_password).acl_hash()),
        "ACL matches the app password"
    );

    let event = calls[9].body.as_ref().expect("event body");
    assert_eq!(
        (event["reason"].as_str(), event["type"].as_str()),
        (Some("Created"), Some("Normal"))
    );
    let status = &calls[10].body.as_ref().expect("status body")["status"];
    assert_eq!(status["phase"], "Provisioning");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["endpoint"]["host"], "web.shop.svc.cluster.local");
    assert_eq!(status["connectionSecret"], "web-connection");
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["readyReplicas"].as_i64()
        ),
        (Some(3), Some(0))
    );
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "False");

    let text = metrics::encode(&h.registry).expect("metrics");
    assert!(
        text.contains("sessionstore_reconciles_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sessionstore_api_requests_total{verb=\"patch\"} 7"),
        "{text}"
    );
}

#[tokio::test]
async fn a_second_reconcile_of_the_same_store_sends_nothing() {
    let h = Harness::new(seeded(production_spec()));
    h.reconcile().await.expect("first reconcile");
    h.double.take_calls();
    h.sync_cache();

    h.reconcile().await.expect("second reconcile");
    let calls = h.double.take_calls();
    assert!(
        calls.is_empty(),
        "radio silence expected, got {:?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn an_operator_restart_reads_the_secrets_and_writes_nothing() {
    let first = Harness::new(seeded(production_spec()));
    first.reconcile().await.expect("first reconcile");
    first.sync_cache();
    let password = secret_data(&first.double, "web-connection", "password");
    first.double.take_calls();

    // New Context: no remembered credentials or drift keys, caches re-listed.
    let restarted = Harness::with_cache(first.double.clone(), first.cache.clone());
    restarted
        .reconcile()
        .await
        .expect("reconcile after restart");
    let calls = restarted.double.take_calls();
    assert_eq!(
        lines(&calls),
        [
            "GET /api/v1/namespaces/shop/secrets/web-connection",
            "GET /api/v1/namespaces/shop/secrets/web-internal",
        ]
    );
    assert_eq!(
        secret_data(&restarted.double, "web-connection", "password"),
        password
    );
}

#[tokio::test]
async fn an_existing_secret_is_never_overwritten() {
    let double = seeded(production_spec());
    let b64 = |s: &str| {
        serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())).expect("encodes")
    };
    double.put(
        &format!("{SECRETS}/web-connection"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-connection", "namespace": "shop"},
               "data": {"password": b64("keep-this-app-password")}}),
    );
    double.put(
        &format!("{SECRETS}/web-internal"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-internal", "namespace": "shop"},
               "data": {"operator-password": b64("keep-op"), "replication-password": b64("keep-repl"), "sentinel-password": b64("keep-sent")}}),
    );
    let h = Harness::new(double);
    h.reconcile().await.expect("reconciles");
    let calls = h.double.take_calls();

    assert!(
        !calls
            .iter()
            .any(|c| c.method == Method::POST && c.path() == SECRETS),
        "no Secret created: {:?}",
        lines(&calls)
    );
    let secret_patches: Vec<_> = calls
        .iter()
        .filter(|c| c.method == Method::PATCH && c.path().starts_with(SECRETS))
        .collect();
    assert!(
        !secret_patches.is_empty(),
        "labels, ownerReferences and users.acl are adopted"
    );
    // The one stored password these Secrets lack (they predate the probe user) is added on its
    // own, by a patch naming only that key; every other patch adopts labels, owners and derived keys.
    let (additions, adoptions): (Vec<&&Call>, Vec<&&Call>) =
        secret_patches.iter().partition(|call| {
            let data = &call.body.as_ref().expect("body")["data"];
            data.as_object()
                .is_some_and(|d| d.contains_key("probe-password"))
        });
    assert_eq!(additions.len(), 1, "{:?}", lines(&calls));
    let added = &additions[0].body.as_ref().expect("body")["data"];
    assert_eq!(
        added
            .as_object()
            .map(|d| d.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["probe-password".to_string()])
    );
    assert!(additions[0].path().ends_with("/web-internal"));
    assert!(!adoptions.is_empty());
    for call in &secret_patches {
        let data = &call.body.as_ref().expect("body")["data"];
        for key in [
            "password",
            "operator-password",
            "replication-password",
            "sentinel-password",
        ] {
            assert!(
                data.get(key).is_none(),
                "{key} must never be patched: {}",
                call.uri
            );
        }
    }
    for call in &adoptions {
        assert_eq!(
            call.body.as_ref().expect("body")["metadata"]["ownerReferences"][0]["uid"],
            "5e55-1"
        );
    }
    assert_eq!(
        secret_data(&h.double, "web-connection", "password").as_deref(),
        Some("keep-this-app-password")
    );
    assert_eq!(
        secret_data(&h.double, "web-internal", "operator-password").as_deref(),
        Some("keep-op")
    );
    // The derived ACL file is recomputed from the stored passwords, the added one included.
    let acl = secret_data(&h.double, "web-internal", "users.acl").expect("acl patched in");
    assert!(acl.contains(&Password::from_secret_value("keep-this-app-password".into()).acl_hash()));
    assert!(acl.contains(&Password::from_secret_value("keep-op".into()).acl_hash()));
    let probe = secret_data(&h.double, "web-internal", "probe-password").expect("probe added");
    assert!(acl.contains(&Password::from_secret_value(probe).acl_hash()));
}

#[tokio::test]
async fn a_deleted_child_is_applied_again_and_nothing_else() {
    let h = Harness::new(seeded(production_spec()));
    h.reconcile().await.expect("first reconcile");
    h.sync_cache();
    h.double.take_calls();

    h.double.remove("/api/v1/namespaces/shop/services/web");
    h.cache.remove(ChildKind::Service, "shop", "web");
    h.reconcile().await.expect("second reconcile");
    let calls = h.double.take_calls();
    assert_eq!(
        lines(&calls),
        ["PATCH /api/v1/namespaces/shop/services/web"]
    );
}

#[tokio::test]
async fn a_hand_edited_child_is_applied_again() {
    let h = Harness::new(seeded(production_spec()));
    h.reconcile().await.expect("first reconcile");
    h.double.take_calls();
    // Someone edits the StatefulSet's spec: same annotation, new generation.
    let path = "/apis/apps/v1/namespaces/shop/statefulsets/web";
    let mut sts = h.double.get(path).expect("sts stored");
    sts["metadata"]["generation"] = json!(7);
    h.double.put(path, sts);
    h.sync_cache();

    h.reconcile().await.expect("second reconcile");
    assert_eq!(lines(&h.double.take_calls()), [format!("PATCH {path}")]);
}

#[tokio::test]
async fn an_invalid_spec_patches_a_condition_posts_a_warning_and_waits() {
    let spec = json!({"profile": "production", "replicas": 2, "clients": {"podSelector": {"matchLabels": {"app": "web"}}}});
    let h = Harness::new(seeded(spec));
    let action = h
        .reconcile()
        .await
        .expect("an invalid spec is not a reconcile error");
    assert_eq!(action, Action::await_change());
    let calls = h.double.take_calls();
    assert_eq!(
        lines(&calls),
        [
            "PATCH /apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web/status",
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
        ]
    );
    let status = &calls[0].body.as_ref().expect("status")["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.replicas")
    );
    let event = calls[1].body.as_ref().expect("event");
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("InvalidSpec"))
    );
    assert!(
        event["note"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.replicas")
    );

    // Reconciled again unchanged (e.g. after a restart): the condition is already there, silence.
    h.reconcile().await.expect("again");
    assert!(h.double.take_calls().is_empty());
}

#[tokio::test]
async fn a_500_from_the_api_server_surfaces_as_an_error_and_backs_off() {
    let double = seeded(production_spec());
    double.fault(Fault {
        method: Method::PATCH,
        path_contains: "/configmaps/".into(),
        code: 500,
        times: 2,
    });
    let h = Harness::new(double);
    let store = h.store();

    let error = h.reconcile().await.expect_err("a 500 fails the reconcile");
    assert_eq!(error.metric_label(), "kube_api");
    assert_eq!(error.api_status(), Some(500));
    assert!(
        error.to_string().contains("ConfigMap shop/web-config"),
        "{error}"
    );
    // Nothing after the failed ConfigMap: the StatefulSet never starts without its config.
    let calls = h.double.take_calls();
    assert_eq!(
        calls.last().map(Call::line).as_deref(),
        Some("PATCH /api/v1/namespaces/shop/configmaps/web-config")
    );

    let first = error_policy(store.clone(), &error, h.ctx.clone());
    let error = h.reconcile().await.expect_err("fails again");
    let second = error_policy(store.clone(), &error, h.ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
    let text = metrics::encode(&h.registry).expect("metrics");
    assert!(
        text.contains("sessionstore_reconcile_errors_total{kind=\"kube_api\"} 2"),
        "{text}"
    );

    // The fault is gone: the store converges and the backoff resets.
    h.reconcile().await.expect("recovers");
    let after = error_policy(store, &error, h.ctx.clone());
    assert_eq!(after, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_secret_created_concurrently_is_read_back_not_overwritten() {
    let double = seeded(production_spec());
    let b64 = |s: &str| {
        serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())).expect("encodes")
    };
    // Another writer created the internal Secret after our read: our POST gets 409.
    double.put(
        &format!("{SECRETS}/web-internal"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-internal", "namespace": "shop"},
               "data": {"operator-password": b64("theirs-op"), "replication-password": b64("theirs-repl"), "sentinel-password": b64("theirs-sent")}}),
    );
    let h = Harness::new(double);
    h.reconcile().await.expect("reconciles after re-reading");
    let calls = lines(&h.double.take_calls());
    let secret_posts = calls
        .iter()
        .filter(|l| *l == "POST /api/v1/namespaces/shop/secrets")
        .count();
    // One optimistic POST (409), then a read; the connection Secret is the only other create.
    assert_eq!(secret_posts, 2, "{calls:?}");
    assert!(
        calls.contains(&"GET /api/v1/namespaces/shop/secrets/web-internal".to_string()),
        "{calls:?}"
    );
    assert_eq!(
        secret_data(&h.double, "web-internal", "operator-password").as_deref(),
        Some("theirs-op")
    );
    let acl = secret_data(&h.double, "web-internal", "users.acl").expect("acl");
    assert!(acl.contains(&Password::from_secret_value("theirs-op".into()).acl_hash()));
}

#[tokio::test]
async fn a_missing_existing_secret_gives_a_condition_and_a_warning() {
    let spec = json!({"profile": "development", "clients": {"podSelector": {"matchLabels": {"app": "web"}}}, "auth": {"existingSecret": "my-password"}});
    let h = Harness::new(seeded(spec));
    let action = h.reconcile().await.expect("waiting is not an error");
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    let calls = h.double.take_calls();
    assert_eq!(
        lines(&calls),
        [
            "GET /api/v1/namespaces/shop/secrets/my-password",
            "PATCH /apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web/status",
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
        ]
    );
    let condition = &calls[1].body.as_ref().expect("status")["status"]["conditions"][0];
    assert_eq!(condition["reason"], "ExistingSecretMissing");
    assert!(
        condition["message"]
            .as_str()
            .unwrap_or_default()
            .contains("my-password")
    );
    assert!(
        calls[2].body.as_ref().expect("event")["note"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.auth.existingSecret")
    );
}

#[tokio::test]
async fn dropping_to_one_replica_deletes_the_disruption_budget() {
    let h = Harness::new(seeded(production_spec()));
    h.reconcile().await.expect("first reconcile");
    h.sync_cache();
    h.double.take_calls();

    let mut store = h.double.get(STORE_PATH).expect("store");
    store["spec"]["replicas"] = json!(1);
    store["metadata"]["generation"] = json!(2);
    h.double.put(STORE_PATH, store);
    h.reconcile().await.expect("reconcile after scale-down");
    let calls = lines(&h.double.take_calls());
    assert!(
        calls.contains(
            &"DELETE /apis/policy/v1/namespaces/shop/poddisruptionbudgets/web".to_string()
        ),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|l| l.starts_with("POST /api/v1/namespaces/shop/secrets")),
        "{calls:?}"
    );
}
