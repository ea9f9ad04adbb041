//! The HA rolling update inside real reconciles against the mocked API server, with the pod watch
//! cache, the Sentinel answer and the handover injected, and the test playing the StatefulSet
//! controller (a deleted pod comes back at the new revision, first unready, then Ready): replicas
//! are deleted one at a time, then the primary role is handed over, then the old primary is
//! deleted; never two pods down; an up-to-date store costs no API call; an unknown primary stops
//! everything.

#[path = "mock/api_double.rs"]
mod api_double;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_double::{ApiDouble, Call, mock_client};
use futures::future::BoxFuture;
use http::Method;
use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use sessionstore_operator::cache::{MemoryCache, StatefulSetRevision};
use sessionstore_operator::context::Context;
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::ha::handover::{
    Handover, HandoverOutcome, HandoverRequest, ReplicationRequest,
};
use sessionstore_operator::ha::hooks::{HaHooks, PrimaryDiscovery};
use sessionstore_operator::ha::{DiscoveryError, PrimaryAnswer};
use sessionstore_operator::metrics::{self, Metrics};
use sessionstore_operator::password::Password;
use sessionstore_operator::reconcile::reconcile;
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::ValidatedStore;

const NS: &str = "shop";
const NAME: &str = "checkout";
const PODS: &str = "/api/v1/namespaces/shop/pods";
const OLD: &str = "checkout-5f4d";
const NEW: &str = "checkout-7c9b";

/// A discovery whose answer the test sets (`None`: no majority).
#[derive(Default)]
struct FixedDiscovery {
    primary: Mutex<Option<String>>,
}

impl FixedDiscovery {
    fn set(&self, pod: Option<&str>) {
        *self.primary.lock().expect("lock") = pod.map(String::from);
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
        let answer = match self.primary.lock().expect("lock").clone() {
            Some(pod) => Ok(PrimaryAnswer {
                host: format!("{pod}.checkout-headless.shop.svc.cluster.local"),
                port: 6379,
                pod: Some(pod),
                agreeing: 3,
                asked: 3,
            }),
            None => Err(DiscoveryError::NoMajority {
                asked: 3,
                answered: 1,
                best: "checkout-1.checkout-headless:6379".into(),
                best_votes: 1,
                needed: 2,
            }),
        };
        Box::pin(async move { answer })
    }
}

/// Records every handover asked for; refuses the first `refuse` of them. The primary's
/// replication view lists every pod of the store online except those in `syncing`.
#[derive(Default)]
struct FakeHandover {
    asked: Mutex<Vec<String>>,
    refuse: Mutex<usize>,
    started: Mutex<usize>,
    syncing: Mutex<Vec<String>>,
    replication_asked: Mutex<usize>,
}

impl Handover for FakeHandover {
    fn hand_over<'a>(&'a self, request: HandoverRequest<'a>) -> BoxFuture<'a, HandoverOutcome> {
        self.asked
            .lock()
            .expect("lock")
            .push(request.primary.to_string());
        let mut refuse = self.refuse.lock().expect("lock");
        let outcome = if *refuse > 0 {
            *refuse -= 1;
            HandoverOutcome::NotNow {
                message: "no replica has caught up yet".into(),
            }
        } else {
            *self.started.lock().expect("lock") += 1;
            HandoverOutcome::Started {
                message: "SENTINEL FAILOVER accepted".into(),
                demoted: true,
                promoted: None,
            }
        };
        Box::pin(async move { outcome })
    }

    fn replication<'a>(
        &'a self,
        request: ReplicationRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        *self.replication_asked.lock().expect("lock") += 1;
        let syncing = self.syncing.lock().expect("lock").clone();
        let online = (0..request.store.replicas)
            .map(|ordinal| format!("{NAME}-{ordinal}"))
            .filter(|pod| pod != request.primary && !syncing.contains(pod))
            .collect();
        Box::pin(async move { Ok(online) })
    }
}

struct Harness {
    double: ApiDouble,
    cache: Arc<MemoryCache>,
    ctx: Arc<Context>,
    discovery: Arc<FixedDiscovery>,
    handover: Arc<FakeHandover>,
    path: String,
    uids: Mutex<u32>,
    _server: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn new() -> Self {
        let double = ApiDouble::new();
        let path = format!("/apis/sessionstore.dev/v1alpha1/namespaces/{NS}/sessionstores/{NAME}");
        double.put(
            &path,
            json!({
                "apiVersion": "sessionstore.dev/v1alpha1",
                "kind": "SessionStore",
                "metadata": {"name": NAME, "namespace": NS, "uid": "5e55-1", "generation": 1, "resourceVersion": "1"},
                "spec": {"profile": "production", "persistence": {"mode": "none"}, "clients": {"podSelector": {"matchLabels": {"app": "web"}}}},
            }),
        );
        let (client, server) = mock_client(&double);
        let (_registry, metrics): (_, Metrics) = metrics::new_registry();
        let cache = MemoryCache::new();
        let discovery = Arc::new(FixedDiscovery::default());
        let handover = Arc::new(FakeHandover::default());
        let mut ctx = Context::new(client, OperatorSettings::default(), cache.clone(), metrics);
        // Pods come from the memory cache (the default `CachedPods`), as in a running operator.
        ctx.ha = HaHooks {
            discovery: discovery.clone(),
            handover: handover.clone(),
            ..HaHooks::default()
        };
        Harness {
            double,
            cache,
            ctx: Arc::new(ctx),
            discovery,
            handover,
            path,
            uids: Mutex::new(0),
            _server: server,
        }
    }

    fn store(&self) -> Arc<SessionStore> {
        let value = self.double.get(&self.path).expect("store seeded");
        Arc::new(serde_json::from_value(value).expect("a SessionStore"))
    }

    fn condition(&self, type_: &str) -> Option<Value> {
        self.double.get(&self.path).expect("store")["status"]["conditions"]
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

    /// The StatefulSet controller (re)creates a pod: a new uid, the given revision.
    fn create_pod(&self, ordinal: u32, revision: &str, ready: bool) {
        let uid = {
            let mut uids = self.uids.lock().expect("lock");
            *uids += 1;
            format!("pod-uid-{uids}")
        };
        let name = format!("{NAME}-{ordinal}");
        self.double.put(
            &format!("{PODS}/{name}"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "uid": uid,
                    "labels": {"app.kubernetes.io/instance": NAME, "controller-revision-hash": revision}},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        );
    }

    fn set_ready(&self, ordinal: u32) {
        let path = format!("{PODS}/{NAME}-{ordinal}");
        let mut pod = self.double.get(&path).expect("pod");
        pod["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        self.double.put(&path, pod);
    }

    /// What the watches deliver: every stored pod into the pod cache (deleted ones removed), the
    /// StatefulSet's status with `update_revision`.
    fn sync_watches(&self, update_revision: &str) {
        self.double.fill_cache(&self.cache);
        let mut ready = 0;
        for ordinal in 0..3 {
            let name = format!("{NAME}-{ordinal}");
            match self.double.get(&format!("{PODS}/{name}")) {
                Some(value) => {
                    let pod: Pod = serde_json::from_value(value).expect("a Pod");
                    if pod_ready(&pod) {
                        ready += 1;
                    }
                    self.cache.insert_pod_object(NS, pod);
                }
                None => self.cache.remove_pod(NS, &name),
            }
        }
        self.cache.set_statefulset_status(
            NS,
            NAME,
            StatefulSetStatus {
                replicas: 3,
                ready_replicas: Some(ready),
                update_revision: Some(update_revision.into()),
                ..StatefulSetStatus::default()
            },
        );
        self.cache.set_statefulset_revision(
            NS,
            NAME,
            StatefulSetRevision {
                update_revision: Some(update_revision.into()),
                observed: true,
            },
        );
    }

    /// Pods of the store that are missing or not Ready.
    fn pods_down(&self) -> usize {
        (0..3)
            .filter(|ordinal| {
                self.double
                    .get(&format!("{PODS}/{NAME}-{ordinal}"))
                    .and_then(|v| serde_json::from_value::<Pod>(v).ok())
                    .is_none_or(|pod| !pod_ready(&pod))
            })
            .count()
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn deletes(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.method == Method::DELETE && c.path().starts_with(&format!("{PODS}/")))
        .collect()
}

/// The pod paths the calls DELETE, in order.
fn deleted_paths(calls: &[Call]) -> Vec<String> {
    deletes(calls)
        .iter()
        .map(|c| c.path().to_string())
        .collect()
}

fn event_reasons(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        // A repeated Event of the same series is a PATCH of the first one.
        .filter(|c| {
            (c.method == Method::POST || c.method == Method::PATCH) && c.path().contains("/events")
        })
        .filter_map(|c| c.body.clone())
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A store running `OLD` everywhere with `checkout-0` primary, labels settled.
async fn settled_store() -> Harness {
    let h = Harness::new();
    h.reconcile().await; // creates the children
    for ordinal in 0..3 {
        h.create_pod(ordinal, OLD, true);
    }
    h.discovery.set(Some("checkout-0"));
    h.sync_watches(OLD);
    h.reconcile().await; // role labels, status
    h.sync_watches(OLD);
    h.double.take_calls();
    h
}

#[tokio::test]
async fn replicas_first_then_a_handover_then_the_old_primary_never_two_pods_down() {
    let h = settled_store().await;

    // Up to date: no API call at all (cache only), and no requeue sooner than the HA recheck.
    let action = h.reconcile().await;
    let calls = h.double.take_calls();
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    println!("API calls of an up-to-date HA reconcile: {}", calls.len());
    assert!(calls.is_empty(), "{lines:?}");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert_eq!(
        *h.handover.replication_asked.lock().expect("lock"),
        0,
        "an up-to-date store asks the primary nothing"
    );
    let updating = h.condition("Updating").expect("Updating");
    assert_eq!(updating["status"], "False");
    assert_eq!(updating["reason"], "UpToDate");

    // The template changes: a new update revision. The first handover is refused three times.
    *h.handover.refuse.lock().expect("lock") = 3;
    let mut steps: Vec<String> = Vec::new();
    let mut events = Vec::new();
    let mut handovers_seen = 0;
    let mut reconciles = 0;
    let mut recreate_next: Option<u32> = None;
    let mut ready_next: Option<u32> = None;
    let mut max_down = 0;
    for _ in 0..40 {
        h.sync_watches(NEW);
        let action = h.reconcile().await;
        reconciles += 1;
        let calls = h.double.take_calls();
        events.extend(event_reasons(&calls));
        max_down = max_down.max(h.pods_down());
        for delete in deletes(&calls) {
            let pod = delete
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let body = delete.body.clone().unwrap_or_default();
            assert!(
                body["preconditions"]["uid"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("pod-uid-")),
                "a delete carries a uid precondition: {body}"
            );
            steps.push(format!("delete {pod}"));
            let ordinal = pod.rsplit('-').next().and_then(|o| o.parse().ok());
            assert!(
                recreate_next.is_none() && ready_next.is_none(),
                "one pod at a time"
            );
            recreate_next = ordinal;
        }
        let asked = h.handover.asked.lock().expect("lock").clone();
        for primary in &asked[handovers_seen..] {
            steps.push(format!("handover {primary}"));
        }
        if asked.len() > handovers_seen && *h.handover.started.lock().expect("lock") > 0 {
            // The handover was accepted: the Sentinels promote an updated replica.
            h.discovery.set(Some("checkout-2"));
        }
        handovers_seen = asked.len();
        let updating = h.condition("Updating").expect("Updating");
        if updating["status"] == "False" {
            assert_eq!(updating["message"], format!("all 3 pods at revision {NEW}"));
            break;
        }
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(3)),
            "quick requeue while rolling"
        );
        // The StatefulSet controller: a deleted pod comes back unready, then turns Ready.
        if let Some(ordinal) = ready_next.take() {
            h.set_ready(ordinal);
        }
        if let Some(ordinal) = recreate_next.take() {
            h.create_pod(ordinal, NEW, false);
            ready_next = Some(ordinal);
        }
        max_down = max_down.max(h.pods_down());
    }
    println!(
        "rolling update: {reconciles} reconciles, steps {steps:?}, at most {max_down} pod down"
    );
    assert_eq!(
        steps,
        [
            "delete checkout-2",
            "delete checkout-1",
            "handover checkout-0",
            "handover checkout-0",
            "handover checkout-0",
            "handover checkout-0",
            "delete checkout-0",
        ]
    );
    assert!(max_down <= 1, "never two pods down: {max_down}");
    let count = |type_: &str, reason: &str| {
        events
            .iter()
            .filter(|(t, r)| t == type_ && r == reason)
            .count()
    };
    assert_eq!(count("Normal", "RestartingPod"), 3, "{events:?}");
    assert_eq!(count("Normal", "HandingOverPrimary"), 1, "{events:?}");
    assert_eq!(count("Warning", "HandoverRefused"), 1, "{events:?}");

    // Done: the next reconcile of the updated store makes no API call.
    h.sync_watches(NEW);
    h.reconcile().await;
    let calls = h.double.take_calls();
    assert!(
        calls.is_empty(),
        "{:?}",
        calls.iter().map(Call::line).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn no_pod_is_restarted_and_no_handover_asked_while_the_primary_is_unknown() {
    let h = settled_store().await;
    h.discovery.set(None);
    for _ in 0..3 {
        h.sync_watches(NEW);
        let action = h.reconcile().await;
        let calls = h.double.take_calls();
        assert!(deletes(&calls).is_empty(), "no pod deleted blind");
        // The HA step's retry while no primary is known (2 s) comes before the rollout's 3 s.
        assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    }
    assert!(h.handover.asked.lock().expect("lock").is_empty());
    let updating = h.condition("Updating").expect("Updating");
    assert_eq!(updating["status"], "True");
    assert_eq!(updating["reason"], "Waiting");
    assert!(
        updating["message"]
            .as_str()
            .is_some_and(|m| m.contains("0/3 pods at revision") && m.contains("no primary")),
        "{updating}"
    );

    // The Sentinels agree again: the update starts with a replica.
    h.discovery.set(Some("checkout-0"));
    h.sync_watches(NEW);
    h.reconcile().await;
    let calls = h.double.take_calls();
    let deleted: Vec<&str> = deletes(&calls).iter().map(|c| c.path()).collect();
    assert_eq!(deleted, [format!("{PODS}/checkout-2")]);
}

#[tokio::test]
async fn a_started_handover_is_not_asked_again_while_the_sentinels_still_name_the_old_primary() {
    let h = settled_store().await;
    // The replicas already run the new revision: only the primary is outdated.
    h.create_pod(1, NEW, true);
    h.create_pod(2, NEW, true);
    h.sync_watches(NEW);
    h.reconcile().await;
    assert_eq!(*h.handover.asked.lock().expect("lock"), ["checkout-0"]);
    // The Sentinels have not promoted anyone yet: the next reconciles wait, no second handover.
    for _ in 0..2 {
        h.sync_watches(NEW);
        h.reconcile().await;
        assert!(deletes(&h.double.take_calls()).is_empty());
    }
    assert_eq!(h.handover.asked.lock().expect("lock").len(), 1);
    let updating = h.condition("Updating").expect("Updating");
    assert_eq!(updating["reason"], "Waiting");
    assert!(
        updating["message"]
            .as_str()
            .is_some_and(|m| m.contains("2/3 pods at revision")
                && m.contains("a handover from checkout-0 started")),
        "{updating}"
    );
}

#[tokio::test]
async fn a_restarted_replica_that_is_ready_but_still_syncing_holds_the_next_restart() {
    let h = settled_store().await;
    h.sync_watches(NEW);
    h.reconcile().await;
    let deleted = deleted_paths(&h.double.take_calls());
    assert_eq!(deleted, [format!("{PODS}/checkout-2")]);
    assert_eq!(*h.handover.replication_asked.lock().expect("lock"), 1);

    // checkout-2 comes back Ready at once (it answers PING) while the primary still sends it
    // the full sync: the primary does not list it online.
    h.create_pod(2, NEW, true);
    h.handover
        .syncing
        .lock()
        .expect("lock")
        .push("checkout-2".into());
    for _ in 0..3 {
        h.sync_watches(NEW);
        let action = h.reconcile().await;
        assert!(
            deletes(&h.double.take_calls()).is_empty(),
            "no replica restarted while another is syncing"
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(3)));
        let updating = h.condition("Updating").expect("Updating");
        assert_eq!(updating["reason"], "Waiting");
        assert!(
            updating["message"]
                .as_str()
                .is_some_and(|m| m.contains("1/3 pods at revision")
                    && m.contains("checkout-2 has not finished syncing from the primary")),
            "{updating}"
        );
    }

    // The sync finished: the next replica is restarted.
    h.handover.syncing.lock().expect("lock").clear();
    h.sync_watches(NEW);
    h.reconcile().await;
    let deleted = deleted_paths(&h.double.take_calls());
    assert_eq!(deleted, [format!("{PODS}/checkout-1")]);
    println!(
        "replication views asked: {}",
        h.handover.replication_asked.lock().expect("lock")
    );
}

#[tokio::test]
async fn an_old_primary_that_cannot_sync_from_the_new_primary_is_restarted_not_waited_for() {
    // The handover of an engine switch is done: checkout-2 (Valkey) is primary and the demoted
    // checkout-0 (Redis 7.0) answers PING but can never load the new primary's full sync.
    let h = settled_store().await;
    h.create_pod(1, NEW, true);
    h.create_pod(2, NEW, true);
    h.discovery.set(Some("checkout-2"));
    h.handover
        .syncing
        .lock()
        .expect("lock")
        .push("checkout-0".into());
    h.sync_watches(NEW);
    h.reconcile().await;
    let deleted = deleted_paths(&h.double.take_calls());
    assert_eq!(deleted, [format!("{PODS}/checkout-0")]);
    assert_eq!(*h.handover.replication_asked.lock().expect("lock"), 1);
    assert!(
        h.handover.asked.lock().expect("lock").is_empty(),
        "no handover"
    );
    let updating = h.condition("Updating").expect("Updating");
    assert_eq!(updating["reason"], "RestartingPod", "{updating}");
}
