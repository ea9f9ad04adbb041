//! The HA step inside a real reconcile against the mocked API server, with the Sentinel answer
//! injected: which role-label patches are sent (demotions first, none when right), what the status
//! and Events say, and that a store without a Sentinel majority keeps its labels.

#[path = "mock/api_double.rs"]
mod api_double;
mod support;
mod support_ha;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_double::{ApiDouble, Call};
use futures::future::BoxFuture;
use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::StatefulSetStatus;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use sessionstore_operator::cache::MemoryCache;
use sessionstore_operator::context::Context;
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::ha::handover::{
    Handover, HandoverOutcome, HandoverRequest, ReplicationRequest,
};
use sessionstore_operator::ha::hooks::{ApiPods, HaHooks, PrimaryDiscovery, SentinelDiscovery};
use sessionstore_operator::ha::{DiscoveryError, PrimaryAnswer};
use sessionstore_operator::metrics::{self, Metrics};
use sessionstore_operator::password::Password;
use sessionstore_operator::reconcile::reconcile;
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::ValidatedStore;

const NS: &str = "shop";
const PODS: &str = "/api/v1/namespaces/shop/pods";
const ROLE: &str = "sessionstore.dev/role";

/// A discovery whose answer the test sets; counts how often it is asked.
#[derive(Default)]
struct FixedDiscovery {
    answer: Mutex<Option<Result<PrimaryAnswer, DiscoveryError>>>,
    asked: Mutex<usize>,
}

impl FixedDiscovery {
    fn primary(&self, pod: &str) {
        *self.answer.lock().expect("lock") = Some(Ok(PrimaryAnswer {
            host: format!("{pod}.x-headless.shop.svc.cluster.local"),
            port: 6379,
            pod: Some(pod.into()),
            agreeing: 3,
            asked: 3,
        }));
    }
    fn fail(&self, error: DiscoveryError) {
        *self.answer.lock().expect("lock") = Some(Err(error));
    }
    fn asked(&self) -> usize {
        *self.asked.lock().expect("lock")
    }
}

impl PrimaryDiscovery for FixedDiscovery {
    fn discover<'a>(
        &'a self,
        _: &'a ValidatedStore,
        _: &'a OperatorSettings,
        _: &'a Password,
        _: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<PrimaryAnswer, DiscoveryError>> {
        *self.asked.lock().expect("lock") += 1;
        let answer = self
            .answer
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or(Err(DiscoveryError::NoSentinels));
        Box::pin(async move { answer })
    }
}

fn no_majority() -> DiscoveryError {
    DiscoveryError::NoMajority {
        asked: 3,
        answered: 1,
        best: "web-1.web-headless:6379".into(),
        best_votes: 1,
        needed: 2,
    }
}

fn decode(s: &str) -> String {
    s.replace("%2F", "/")
        .replace("%3D", "=")
        .replace("%2C", ",")
}

/// Answers a pod list from the pods stored in the double that match the label selector (the double
/// itself serves objects by path only); everything else goes to the double. Every call is logged.
fn mock_client(double: &ApiDouble) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = double.clone();
    let task = tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let is_list = request.method() == Method::GET && request.uri().path() == PODS;
            let query = request.uri().query().map(decode).unwrap_or_default();
            let response = server.respond(request).await;
            if !is_list {
                send.send_response(response);
                continue;
            }
            let selector: Vec<(String, String)> = query
                .split('&')
                .find_map(|p| p.strip_prefix("labelSelector="))
                .unwrap_or_default()
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let items: Vec<Value> = server
                .objects(&format!("{PODS}/"))
                .into_iter()
                .map(|(_, pod)| pod)
                .filter(|pod| {
                    !selector.is_empty()
                        && selector.iter().all(|(k, v)| {
                            pod.pointer("/metadata/labels")
                                .and_then(|l| l.get(k))
                                .and_then(Value::as_str)
                                == Some(v.as_str())
                        })
                })
                .collect();
            let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items});
            send.send_response(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&list).unwrap_or_default()))
                    .expect("response"),
            );
        }
    });
    (kube::Client::new(service, "default"), task)
}

struct Harness {
    double: ApiDouble,
    cache: Arc<MemoryCache>,
    ctx: Arc<Context>,
    path: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn new(name: &str, discovery: Arc<dyn PrimaryDiscovery>) -> Self {
        Self::with_hooks(
            name,
            HaHooks {
                discovery,
                pods: Arc::new(ApiPods),
                ..HaHooks::default()
            },
        )
    }

    fn with_hooks(name: &str, hooks: HaHooks) -> Self {
        let double = ApiDouble::new();
        let path = format!("/apis/sessionstore.dev/v1alpha1/namespaces/{NS}/sessionstores/{name}");
        let mut spec = json!({"profile": "production", "persistence": {"mode": "none"}, "clients": {"podSelector": {"matchLabels": {"app": "web"}}}});
        support::engine::declare_json(&mut spec);
        double.put(
            &path,
            json!({
                "apiVersion": "sessionstore.dev/v1alpha1",
                "kind": "SessionStore",
                "metadata": {"name": name, "namespace": NS, "uid": "5e55-1", "generation": 1, "resourceVersion": "1"},
                "spec": spec,
            }),
        );
        let (client, server) = mock_client(&double);
        let (_registry, metrics): (_, Metrics) = metrics::new_registry();
        let cache = MemoryCache::new();
        let mut ctx = Context::new(client, OperatorSettings::default(), cache.clone(), metrics);
        // The pods live in the double (listed by the API), not in the memory cache.
        ctx.ha = hooks;
        Harness {
            double,
            cache,
            ctx: Arc::new(ctx),
            path,
            _server: server,
        }
    }

    fn store(&self) -> Arc<SessionStore> {
        let value = self.double.get(&self.path).expect("store seeded");
        Arc::new(serde_json::from_value(value).expect("a SessionStore"))
    }

    fn status(&self) -> Value {
        self.double.get(&self.path).expect("store")["status"].clone()
    }

    fn condition(&self, type_: &str) -> Option<Value> {
        self.status()["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
    }

    async fn reconcile(&self) -> Action {
        tokio::time::timeout(
            Duration::from_secs(10),
            reconcile(self.store(), self.ctx.clone()),
        )
        .await
        .expect("reconcile finishes")
        .expect("reconcile succeeds")
    }

    /// What the watches would hold after the first reconcile, with `ready` pods ready; and the
    /// pods the StatefulSet controller would have created, with `roles`.
    fn pods_running(&self, name: &str, ready: i32, roles: &[Option<&str>]) {
        self.double.fill_cache(&self.cache);
        self.cache.set_statefulset_status(
            NS,
            name,
            StatefulSetStatus {
                replicas: 3,
                ready_replicas: Some(ready),
                ..StatefulSetStatus::default()
            },
        );
        for (i, role) in roles.iter().enumerate() {
            let mut labels = json!({"app.kubernetes.io/name": "sessionstore", "app.kubernetes.io/instance": name});
            if let Some(role) = role {
                labels[ROLE] = json!(role);
            }
            self.double.put(
                &format!("{PODS}/{name}-{i}"),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("{name}-{i}"), "namespace": NS, "labels": labels}, "status": {
                    "podIP": format!("10.0.0.{i}"),
                    // The first `ready` pods are Ready.
                    "conditions": [{"type": "Ready", "status": if (i as i32) < ready { "True" } else { "False" }}],
                }}),
            );
        }
        // A pod of another store in the namespace: never listed, never labelled.
        self.double.put(
            &format!("{PODS}/other-0"),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other-0", "namespace": NS, "labels": {"app.kubernetes.io/name": "sessionstore", "app.kubernetes.io/instance": "other"}}}),
        );
    }

    fn role(&self, pod: &str) -> Option<String> {
        self.double
            .get(&format!("{PODS}/{pod}"))?
            .pointer(&format!("/metadata/labels/{}", ROLE.replace('/', "~1")))?
            .as_str()
            .map(String::from)
    }
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

/// `pod=role` for every role-label patch, in order; checks each is the minimal merge patch.
fn label_patches(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == Method::PATCH && c.path().starts_with(&format!("{PODS}/")))
        .map(|c| {
            assert!(
                c.uri.contains("fieldManager=sessionstore-operator-role"),
                "{}",
                c.uri
            );
            assert!(!c.uri.contains("force"), "a merge patch is not forced");
            let body = c.body.as_ref().expect("body");
            let labels = body["metadata"]["labels"].as_object().expect("labels");
            assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
            assert_eq!(body["metadata"].as_object().map(|o| o.len()), Some(1));
            assert_eq!(labels.len(), 1, "only the role label: {body}");
            format!(
                "{}={}",
                c.path().rsplit('/').next().unwrap_or_default(),
                labels[ROLE].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn events(calls: &[Call]) -> Vec<Value> {
    calls
        .iter()
        .filter(|c| c.method == Method::POST && c.path().ends_with("/events"))
        .filter_map(|c| c.body.clone())
        .collect()
}

#[tokio::test]
async fn labels_follow_the_majority_demotions_first_and_a_steady_store_writes_nothing() {
    let discovery = Arc::new(FixedDiscovery::default());
    let h = Harness::new("web", discovery.clone());

    // New store, no pod ready: no Sentinel is asked, no pod is listed, the status says why.
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert!(
        !lines(&calls).iter().any(|l| l.contains("/pods")),
        "{:?}",
        lines(&calls)
    );
    assert_eq!(discovery.asked(), 0);
    let known = h.condition("PrimaryKnown").expect("PrimaryKnown");
    assert_eq!(
        (known["status"].as_str(), known["reason"].as_str()),
        (Some("False"), Some("WaitingForPods"))
    );

    // Pods ready, labels as the StatefulSet created them (none); Sentinels agree on web-0.
    h.pods_running("web", 3, &[None, None, None]);
    discovery.primary("web-0");
    let action = h.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    let calls = h.double.take_calls();
    assert_eq!(
        lines(&calls),
        [
            "GET /api/v1/namespaces/shop/pods",
            "PATCH /api/v1/namespaces/shop/pods/web-1",
            "PATCH /api/v1/namespaces/shop/pods/web-2",
            "PATCH /api/v1/namespaces/shop/pods/web-0",
            "PATCH /apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web/status",
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
        ]
    );
    assert_eq!(
        label_patches(&calls),
        ["web-1=replica", "web-2=replica", "web-0=primary"]
    );
    // The only Event is Ready: the first discovery is not a failover.
    let reasons: Vec<_> = events(&calls).iter().map(|e| e["reason"].clone()).collect();
    assert_eq!(reasons, [json!("Ready")]);
    assert_eq!(h.status()["primary"], "web-0");
    assert_eq!(h.status()["phase"], "Ready");
    let known = h.condition("PrimaryKnown").expect("PrimaryKnown");
    assert_eq!(
        (known["status"].as_str(), known["reason"].as_str()),
        (Some("True"), Some("SentinelMajority"))
    );
    assert!(h.condition("Failover").is_none());
    assert_eq!(h.role("other-0"), None, "another store's pod is untouched");

    // Steady state: one pod list, zero writes.
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert_eq!(lines(&calls), ["GET /api/v1/namespaces/shop/pods"]);
    println!(
        "API calls per steady HA reconcile: {} ({} writes)",
        calls.len(),
        calls.iter().filter(|c| c.is_write()).count()
    );

    // Failover to web-2: the old primary is demoted before the new one is promoted.
    discovery.primary("web-2");
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert_eq!(label_patches(&calls), ["web-0=replica", "web-2=primary"]);
    let failover_events: Vec<_> = events(&calls)
        .into_iter()
        .filter(|e| e["reason"] == "PrimaryChanged")
        .collect();
    assert_eq!(failover_events.len(), 1, "{:?}", lines(&calls));
    let note = failover_events[0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("from web-0 to web-2"), "{note}");
    assert_eq!(failover_events[0]["type"], "Normal");
    assert_eq!(h.status()["primary"], "web-2");
    let failover = h.condition("Failover").expect("Failover condition");
    assert_eq!(failover["status"], "True");
    assert!(
        failover["message"]
            .as_str()
            .unwrap_or_default()
            .contains("web-0 to web-2")
    );
    assert_eq!(
        [h.role("web-0"), h.role("web-1"), h.role("web-2")],
        [
            Some("replica".into()),
            Some("replica".into()),
            Some("primary".into())
        ]
    );

    // And steady again: the Failover condition stays, nothing is written.
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert_eq!(lines(&calls), ["GET /api/v1/namespaces/shop/pods"]);
}

#[tokio::test]
async fn without_a_majority_no_label_moves_and_a_condition_says_why() {
    let discovery = Arc::new(FixedDiscovery::default());
    let h = Harness::new("web", discovery.clone());
    h.reconcile().await;
    h.pods_running(
        "web",
        3,
        &[Some("primary"), Some("replica"), Some("replica")],
    );
    discovery.primary("web-0");
    h.reconcile().await;
    assert_eq!(h.status()["primary"], "web-0");
    h.double.take_calls();

    discovery.fail(no_majority());
    let action = h.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    let calls = h.double.take_calls();
    assert_eq!(
        lines(&calls),
        ["PATCH /apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web/status"],
        "no pod listed or labelled, no Event"
    );
    let known = h.condition("PrimaryKnown").expect("PrimaryKnown");
    assert_eq!(
        (known["status"].as_str(), known["reason"].as_str()),
        (Some("False"), Some("NoSentinelMajority"))
    );
    assert!(
        known["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no majority")
    );
    assert_eq!(
        h.status()["primary"],
        "web-0",
        "the last known primary stays"
    );
    assert_eq!(h.role("web-0").as_deref(), Some("primary"));

    // Still no majority: calm, nothing written again.
    h.reconcile().await;
    assert!(h.double.take_calls().is_empty());

    // The Sentinels name a pod that does not exist: labels stay too.
    discovery.primary("web-7");
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert!(label_patches(&calls).is_empty(), "{:?}", lines(&calls));
    assert_eq!(
        h.condition("PrimaryKnown").expect("condition")["reason"],
        "PrimaryPodMissing"
    );
}

#[tokio::test]
async fn a_new_store_waits_for_its_sentinels_calmly_and_is_not_ready_without_a_primary() {
    let discovery = Arc::new(FixedDiscovery::default());
    let h = Harness::new("web", discovery.clone());
    h.reconcile().await;
    h.pods_running("web", 3, &[None, None, None]);
    h.double.take_calls();
    discovery.fail(no_majority());
    let action = h.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    let calls = h.double.take_calls();
    assert!(
        events(&calls).is_empty(),
        "no Ready Event without a primary: {:?}",
        lines(&calls)
    );
    assert!(label_patches(&calls).is_empty());
    assert_eq!(h.status()["phase"], "Provisioning");
    assert_eq!(
        h.condition("Ready").expect("Ready")["reason"],
        "WaitingForPrimary"
    );
    assert_eq!(
        h.condition("PrimaryKnown").expect("PrimaryKnown")["reason"],
        "WaitingForSentinels"
    );
    assert!(h.status().get("primary").is_none());

    // The Sentinels meet: labels, primary, Ready.
    discovery.primary("web-0");
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert_eq!(
        label_patches(&calls),
        ["web-1=replica", "web-2=replica", "web-0=primary"]
    );
    assert_eq!(h.status()["phase"], "Ready");
}

#[tokio::test]
async fn sentinel_addresses_are_injectable_and_unreachable_ones_give_no_majority() {
    // Three closed loopback ports (reserved until the end, so no other test binds one): the real
    // discovery runs, nobody answers, no label moves.
    let leases: Vec<support_ha::PortLease> = (0..3).map(|_| support_ha::reserve_port()).collect();
    let closed: Vec<String> = leases
        .iter()
        .map(|lease| format!("127.0.0.1:{}", lease.port()))
        .collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_hook = seen.clone();
    let discovery = SentinelDiscovery::with_addresses(Arc::new(move |store, _| {
        seen_by_hook.lock().expect("lock").push(store.name.clone());
        closed.clone()
    }));
    let h = Harness::new("web", Arc::new(discovery));
    h.reconcile().await;
    h.pods_running("web", 3, &[Some("primary"), None, None]);
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert!(label_patches(&calls).is_empty(), "{:?}", lines(&calls));
    assert_eq!(*seen.lock().expect("lock"), ["web"]);
    let known = h.condition("PrimaryKnown").expect("PrimaryKnown");
    assert_eq!(known["status"], "False");
    assert!(
        known["message"]
            .as_str()
            .unwrap_or_default()
            .contains("0 of 3 answered"),
        "{known}"
    );
}

/// Real `discover_primary` answers from 3 Sentinels (the test engine's) on loopback. Every pod is 127.0.0.1 there,
/// so the pod is recovered from the Redis port (in the cluster the host name carries it).
struct LoopbackDiscovery {
    sentinels: Vec<String>,
    master: String,
    options: sessionstore_operator::ha::DiscoveryOptions,
    redis_addrs: Vec<String>,
}

impl PrimaryDiscovery for LoopbackDiscovery {
    fn discover<'a>(
        &'a self,
        _: &'a ValidatedStore,
        _: &'a OperatorSettings,
        _: &'a Password,
        _: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<PrimaryAnswer, DiscoveryError>> {
        Box::pin(async move {
            let mut answer = sessionstore_operator::ha::discover_primary(
                &self.sentinels,
                &self.master,
                &self.options,
            )
            .await?;
            answer.pod = self
                .redis_addrs
                .iter()
                .position(|a| *a == answer.address())
                .map(|i| format!("{}-{i}", self.master));
            Ok(answer)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sentinels_move_the_labels_after_a_killed_primary() {
    let mut cluster = support_ha::scenario::start_cluster(1000).await;
    let discovery = LoopbackDiscovery {
        sentinels: cluster.sentinel_addrs(),
        master: cluster.master_name(),
        options: cluster.discovery_options(),
        redis_addrs: (0..support_ha::PODS).map(|i| cluster.addr(i)).collect(),
    };
    let h = Harness::new("checkout", Arc::new(discovery));
    h.reconcile().await;
    h.pods_running("checkout", 3, &[None, None, None]);
    h.double.take_calls();
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert_eq!(
        label_patches(&calls),
        [
            "checkout-1=replica",
            "checkout-2=replica",
            "checkout-0=primary"
        ]
    );
    assert_eq!(h.status()["primary"], "checkout-0");

    cluster.kill_redis(0);
    let started = std::time::Instant::now();
    let new_primary = support_ha::wait_for(Duration::from_secs(60), "a new primary", || async {
        h.reconcile().await;
        h.status()["primary"]
            .as_str()
            .filter(|p| *p != "checkout-0")
            .map(String::from)
    })
    .await;
    println!(
        "killed primary -> labels moved by the reconcile: {:?}",
        started.elapsed()
    );
    let calls = h.double.take_calls();
    let patches = label_patches(&calls);
    assert_eq!(
        patches,
        [
            "checkout-0=replica".to_string(),
            format!("{new_primary}=primary")
        ]
    );
    assert_eq!(
        events(&calls)
            .iter()
            .filter(|e| e["reason"] == "PrimaryChanged")
            .count(),
        1
    );
}

/// A handover that records what it was asked (primary, avoid, pods the store runs) and starts,
/// reporting `promote` as the pod the Sentinels named when the old primary was demoted.
#[derive(Default)]
struct RecordingHandover {
    requests: Mutex<Vec<(String, Vec<String>, i32)>>,
    promote: Mutex<Option<String>>,
}

impl Handover for RecordingHandover {
    fn hand_over<'a>(&'a self, request: HandoverRequest<'a>) -> BoxFuture<'a, HandoverOutcome> {
        self.requests.lock().expect("lock").push((
            request.primary.to_string(),
            request.avoid.to_vec(),
            request.store.replicas,
        ));
        let promoted = self.promote.lock().expect("lock").clone();
        Box::pin(async move {
            HandoverOutcome::Started {
                message: "Sentinel failover started".into(),
                demoted: true,
                promoted,
            }
        })
    }

    /// Every pod of the store is a synced replica (this file tests no rolling update).
    fn replication<'a>(
        &'a self,
        request: ReplicationRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        let pods = (0..request.store.replicas)
            .map(|ordinal| format!("{}-{ordinal}", request.store.name))
            .collect();
        Box::pin(async move { Ok(pods) })
    }
}

#[tokio::test]
async fn scale_down_is_held_while_the_primary_would_be_removed_then_released() {
    let discovery = Arc::new(FixedDiscovery::default());
    let handover = Arc::new(RecordingHandover::default());
    let h = Harness::with_hooks(
        "web",
        HaHooks {
            discovery: discovery.clone(),
            handover: handover.clone(),
            pods: Arc::new(ApiPods),
            ..HaHooks::default()
        },
    );
    let sts_path = "/apis/apps/v1/namespaces/shop/statefulsets/web";
    let set_replicas = |replicas: i64, generation: i64| {
        let mut store = h.double.get(&h.path).expect("store");
        store["spec"]["replicas"] = json!(replicas);
        store["metadata"]["generation"] = json!(generation);
        h.double.put(&h.path, store);
    };
    let sts_replicas = || {
        h.double
            .get(sts_path)
            .and_then(|s| s["spec"]["replicas"].as_i64())
    };
    // A store of 5 running pods, primary web-4.
    set_replicas(5, 2);
    h.reconcile().await;
    assert_eq!(sts_replicas(), Some(5));
    h.pods_running("web", 5, &[None, None, None, None, None]);
    h.cache.set_statefulset_status(
        NS,
        "web",
        StatefulSetStatus {
            replicas: 5,
            ready_replicas: Some(5),
            ..StatefulSetStatus::default()
        },
    );
    discovery.primary("web-4");
    h.reconcile().await;
    assert!(handover.requests.lock().expect("lock").is_empty());
    h.double.take_calls();

    // Scaled to 3: held at 5, handover away from web-3 and web-4, one Event, a quick requeue.
    set_replicas(3, 3);
    let action = h.reconcile().await;
    assert_eq!(sts_replicas(), Some(5), "the StatefulSet is held at 5");
    assert_eq!(
        handover.requests.lock().expect("lock").clone(),
        vec![(
            "web-4".to_string(),
            vec!["web-3".to_string(), "web-4".to_string()],
            5
        )]
    );
    assert_eq!(action, Action::requeue(Duration::from_millis(2500)));
    let calls = h.double.take_calls();
    let held: Vec<Value> = events(&calls)
        .into_iter()
        .filter(|e| e["reason"] == "ScaleDownHandover")
        .collect();
    assert_eq!(held.len(), 1, "{:?}", lines(&calls));
    assert_eq!(held[0]["type"], "Normal");
    let note = held[0]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("from 5 to 3") && note.contains("web-4") && note.contains("started"),
        "{note}"
    );

    // Still web-4 (the Sentinels have not agreed yet): still held, asked again, no new Event.
    h.reconcile().await;
    assert_eq!(sts_replicas(), Some(5));
    assert_eq!(handover.requests.lock().expect("lock").len(), 2);
    let calls = h.double.take_calls();
    assert!(
        !events(&calls)
            .iter()
            .any(|e| e["reason"] == "ScaleDownHandover"),
        "an unchanged hold is announced once: {:?}",
        lines(&calls)
    );

    // The Sentinels name web-1: released, the StatefulSet shrinks, no further handover.
    discovery.primary("web-1");
    h.reconcile().await;
    assert_eq!(sts_replicas(), Some(3), "released once the primary stays");
    assert_eq!(handover.requests.lock().expect("lock").len(), 2);
    assert_eq!(h.status()["primary"], "web-1");
}

#[tokio::test]
async fn while_the_named_primary_is_not_ready_the_step_checks_every_second() {
    let discovery = Arc::new(FixedDiscovery::default());
    let h = Harness::new("web", discovery.clone());
    h.reconcile().await;
    // web-2 is primary and Ready: the calm 10 s recheck.
    h.pods_running(
        "web",
        3,
        &[Some("replica"), Some("replica"), Some("primary")],
    );
    discovery.primary("web-2");
    let action = h.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    // web-2 crashed (only the first two pods are Ready) while the Sentinels still name it:
    // follow the failover closely.
    h.pods_running(
        "web",
        2,
        &[Some("replica"), Some("replica"), Some("primary")],
    );
    let action = h.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    // The Sentinels promote web-0: labels move at once, and the calm recheck returns.
    discovery.primary("web-0");
    let action = h.reconcile().await;
    assert_eq!(h.role("web-0").as_deref(), Some("primary"));
    assert_eq!(h.role("web-2").as_deref(), Some("replica"));
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn a_stopping_primary_pod_is_handed_over_once_and_a_stopping_replica_is_not() {
    let discovery = Arc::new(FixedDiscovery::default());
    let handover = Arc::new(RecordingHandover::default());
    let h = Harness::with_hooks(
        "web",
        HaHooks {
            discovery: discovery.clone(),
            handover: handover.clone(),
            pods: Arc::new(ApiPods),
            ..HaHooks::default()
        },
    );
    h.reconcile().await;
    h.pods_running(
        "web",
        3,
        &[Some("primary"), Some("replica"), Some("replica")],
    );
    discovery.primary("web-0");
    h.reconcile().await;
    assert!(handover.requests.lock().expect("lock").is_empty());
    let stopping = |pod: &str| {
        let path = format!("{PODS}/{pod}");
        let mut object = h.double.get(&path).expect("pod");
        object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        object["metadata"]["uid"] = json!(format!("uid-{pod}"));
        h.double.put(&path, object);
    };

    // A replica stopping (a drain of its node): no handover.
    stopping("web-2");
    h.reconcile().await;
    assert!(handover.requests.lock().expect("lock").is_empty());
    h.double.take_calls();

    // The primary stopping: one handover, away from every stopping pod, announced as planned.
    stopping("web-0");
    h.reconcile().await;
    assert_eq!(
        handover.requests.lock().expect("lock").clone(),
        vec![(
            "web-0".to_string(),
            vec!["web-0".to_string(), "web-2".to_string()],
            3
        )]
    );
    let calls = h.double.take_calls();
    let announced: Vec<Value> = events(&calls)
        .into_iter()
        .filter(|e| e["reason"] == "HandingOverPrimary" && e["action"] == "PodStopping")
        .collect();
    assert_eq!(announced.len(), 1, "{:?}", lines(&calls));
    assert_eq!(announced[0]["type"], "Normal");

    // The Sentinels still name web-0 a moment later: not asked again for the same pod.
    h.reconcile().await;
    assert_eq!(handover.requests.lock().expect("lock").len(), 1);

    // Once they name web-1, the labels follow and PrimaryChanged says the change was planned.
    discovery.primary("web-1");
    h.reconcile().await;
    assert_eq!(h.role("web-1").as_deref(), Some("primary"));
    let calls = h.double.take_calls();
    let changed: Vec<Value> = events(&calls)
        .into_iter()
        .filter(|e| e["reason"] == "PrimaryChanged")
        .collect();
    assert_eq!(changed.len(), 1, "{:?}", lines(&calls));
    assert!(
        changed[0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("planned handover")),
        "{changed:?}"
    );
}

#[tokio::test]
async fn a_demoted_primary_s_labels_move_to_the_promoted_pod_before_the_sentinels_agree() {
    let discovery = Arc::new(FixedDiscovery::default());
    let handover = Arc::new(RecordingHandover::default());
    *handover.promote.lock().expect("lock") = Some("web-1".into());
    let h = Harness::with_hooks(
        "web",
        HaHooks {
            discovery: discovery.clone(),
            handover: handover.clone(),
            pods: Arc::new(ApiPods),
            ..HaHooks::default()
        },
    );
    h.reconcile().await;
    h.pods_running(
        "web",
        3,
        &[Some("primary"), Some("replica"), Some("replica")],
    );
    discovery.primary("web-0");
    h.reconcile().await;
    let path = format!("{PODS}/web-0");
    let mut object = h.double.get(&path).expect("pod");
    object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    object["metadata"]["uid"] = json!("uid-web-0");
    h.double.put(&path, object);
    h.double.take_calls();

    // The handover demoted web-0 under web-1: the Service moves in the same reconcile, while a
    // majority of the Sentinels still names web-0.
    h.reconcile().await;
    assert_eq!(handover.requests.lock().expect("lock").len(), 1);
    assert_eq!(h.role("web-1").as_deref(), Some("primary"));
    assert_eq!(h.role("web-0").as_deref(), Some("replica"));
    let calls = h.double.take_calls();
    let labels_at = calls
        .iter()
        .position(|c| c.method == Method::PATCH && c.path() == format!("{PODS}/web-1"));
    let event_at = calls
        .iter()
        .position(|c| c.method == Method::POST && c.path().ends_with("/events"));
    assert!(
        labels_at.is_some() && labels_at < event_at,
        "the labels move before the Event is published: {:?}",
        lines(&calls)
    );
    assert_eq!(label_patches(&calls), ["web-0=replica", "web-1=primary"]);

    // The Sentinels still name web-0 (they hear of the promotion one by one): the labels stay.
    h.reconcile().await;
    assert_eq!(h.role("web-1").as_deref(), Some("primary"));
    assert_eq!(h.role("web-0").as_deref(), Some("replica"));
    assert_eq!(handover.requests.lock().expect("lock").len(), 1);

    // Once they agree, status and the planned PrimaryChanged follow; no label moves again.
    h.double.take_calls();
    discovery.primary("web-1");
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert_eq!(label_patches(&calls), Vec::<String>::new());
    let changed: Vec<Value> = events(&calls)
        .into_iter()
        .filter(|e| e["reason"] == "PrimaryChanged")
        .collect();
    assert_eq!(changed.len(), 1, "{:?}", lines(&calls));
    assert!(
        changed[0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("planned handover")),
        "{changed:?}"
    );
}
