//! The observe step in the real reconcile path: a mocked API server (the same double as
//! `controller_mock`), a pod injected into the child cache with IP 127.0.0.1, and a real
//! `redis-server` started from the generated config and ACL with the store's own credentials.
//! Proves when `status.health` is written (once, then only on change, at most once per interval),
//! that a stopped server is reported calmly, and prints the write count and probe cost figures.

#[path = "mock/api_double.rs"]
mod api_double;
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_double::{ApiDouble, Call, mock_client};
use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use prometheus_client::registry::Registry;
use redis::Commands;
use serde_json::{Value, json};
use sessionstore_operator::build::StoreCredentials;
use sessionstore_operator::build::acl::{APP_USER, OPERATOR_USER};
use sessionstore_operator::cache::MemoryCache;
use sessionstore_operator::context::Context;
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::metrics::{self, Metrics};
use sessionstore_operator::observe::step::{self, HealthSettings, HealthStep};
use sessionstore_operator::observe::{PodTarget, ProbeSettings};
use sessionstore_operator::reconcile::reconcile;
use sessionstore_operator::secrets::credentials_from_secrets;
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::validate;
use support::redis_server::RedisServer;

const STORE_PATH: &str = "/apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web";
const STATUS_PATCH: &str =
    "PATCH /apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web/status";
const SECRETS: &str = "/api/v1/namespaces/shop/secrets";
const INTERVAL: Duration = Duration::from_secs(30);

fn seeded() -> ApiDouble {
    let double = ApiDouble::new();
    let mut spec = json!({"profile": "development", "clients": {"podSelector": {"matchLabels": {"app": "web"}}}});
    support::engine::declare_json(&mut spec);
    double.put(
        STORE_PATH,
        json!({
            "apiVersion": "sessionstore.dev/v1alpha1",
            "kind": "SessionStore",
            "metadata": {"name": "web", "namespace": "shop", "uid": "5e55-1", "generation": 1, "resourceVersion": "1"},
            "spec": spec,
        }),
    );
    double
}

struct Harness {
    double: ApiDouble,
    cache: Arc<MemoryCache>,
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    _server: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A Context like `run` builds (one registry with the health gauges), probing `port`.
    fn new(double: ApiDouble, cache: Arc<MemoryCache>, port: u16) -> Self {
        let (client, server) = mock_client(&double);
        let (registry, metrics, health_metrics): (_, Metrics, _) = step::new_registry();
        let health = HealthStep::new(
            HealthSettings {
                interval: INTERVAL,
                probe: ProbeSettings {
                    connect_timeout: Duration::from_secs(1),
                    command_timeout: Duration::from_secs(1),
                    max_connections: 4,
                },
                port,
            },
            Some(health_metrics),
        );
        let ctx = Arc::new(
            Context::new(client, OperatorSettings::default(), cache.clone(), metrics)
                .with_health(health),
        );
        Harness {
            double,
            cache,
            ctx,
            registry,
            _server: server,
        }
    }

    fn store(&self) -> Arc<SessionStore> {
        let value = self.double.get(STORE_PATH).expect("store seeded");
        Arc::new(serde_json::from_value(value).expect("a SessionStore"))
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

    /// Reconciles and returns the status patches it sent (the only writes expected here,
    /// besides Events).
    async fn status_writes(&self) -> Vec<Value> {
        self.double.take_calls();
        self.reconcile().await;
        let calls = self.double.take_calls();
        let writes: Vec<&Call> = calls
            .iter()
            .filter(|c| c.is_write() && !c.path().ends_with("/events"))
            .collect();
        assert!(
            writes.iter().all(|c| c.line() == STATUS_PATCH),
            "only status writes expected: {:?}",
            writes.iter().map(|c| c.line()).collect::<Vec<_>>()
        );
        writes
            .iter()
            .map(|c| c.body.clone().expect("status body")["status"].clone())
            .collect()
    }

    /// What the watches of a cluster would hold once the StatefulSet's pod runs and is Ready.
    fn sync_cache_with_running_pod(&self) {
        self.double.fill_cache(&self.cache);
        self.cache.set_statefulset_status(
            "shop",
            "web",
            StatefulSetStatus {
                replicas: 1,
                ready_replicas: Some(1),
                ..StatefulSetStatus::default()
            },
        );
        self.cache.insert_pod(
            "shop",
            PodTarget {
                name: "web-0".into(),
                ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                ready: true,
            },
        );
    }

    fn metrics_text(&self) -> String {
        metrics::encode(&self.registry).expect("metrics encode")
    }
}

fn secret(double: &ApiDouble, name: &str) -> Secret {
    serde_json::from_value(
        double
            .get(&format!("{SECRETS}/{name}"))
            .expect("Secret stored"),
    )
    .expect("a Secret")
}

/// Creates the store's children through a first reconcile (no pods yet: nothing probed), then
/// starts a real redis-server from the generated files with the credentials now in the Secrets.
async fn provisioned() -> (ApiDouble, Arc<MemoryCache>, StoreCredentials, RedisServer) {
    let double = seeded();
    let cache = MemoryCache::new();
    let bootstrap = Harness::new(double.clone(), cache.clone(), 1);
    bootstrap.reconcile().await;
    let calls = bootstrap.double.take_calls();
    let status: Vec<&Call> = calls.iter().filter(|c| c.line() == STATUS_PATCH).collect();
    assert_eq!(status.len(), 1);
    assert!(
        status[0].body.as_ref().expect("body")["status"]["health"].is_null(),
        "no health without pods"
    );
    let credentials = credentials_from_secrets(
        Some(&secret(&double, "web-connection")),
        Some(&secret(&double, "web-internal")),
        None,
    )
    .expect("credentials in the Secrets");
    let validated = validate(&bootstrap.store()).expect("valid store");
    let server = RedisServer::start(&validated, &credentials);
    (double, cache, credentials, server)
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// Connections the server accepted so far (read as the operator user; counts this read too).
fn connections_received(server: &RedisServer, credentials: &StoreCredentials) -> u64 {
    let mut connection = server
        .connect(OPERATOR_USER, credentials.operator.expose())
        .expect("operator connects");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut connection)
        .expect("INFO stats");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_connections_received")
}

#[tokio::test]
async fn health_is_written_once_then_only_on_change_and_a_stopped_server_is_degraded() {
    let (double, cache, credentials, server) = provisioned().await;
    let h = Harness::new(double, cache, server.port());
    h.sync_cache_with_running_pod();

    // First probe: health and Healthy=True written in the one status patch.
    let writes = h.status_writes().await;
    assert_eq!(writes.len(), 1, "{writes:?}");
    let status = &writes[0];
    assert_eq!(status["health"]["sessionKeys"], 0);
    assert_eq!(status["health"]["keysWithoutTtl"], 0);
    assert!(status["health"]["redisVersion"].is_string(), "{status}");
    assert_eq!(
        status["health"]["engine"],
        support::engine::name(),
        "{status}"
    );
    assert_eq!(
        status["health"]["version"],
        server.own_version(&credentials),
        "{status}"
    );
    assert_eq!(status["health"]["pods"][0]["name"], "web-0");
    assert_eq!(status["health"]["pods"][0]["role"], "primary");
    assert_eq!(condition(status, "Healthy")["status"], "True");
    assert_eq!(condition(status, "Healthy")["reason"], "AllChecksPassed");
    assert_eq!(condition(status, "Degraded")["status"], "False");
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(status["phase"], "Ready");
    let text = h.metrics_text();
    assert!(
        text.contains(r#"sessionstore_session_keys{namespace="shop",name="web"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sessionstore_store_degraded{namespace="shop",name="web"} 0"#),
        "{text}"
    );

    // Within the interval: no probe, no write, and the store comes back when the probe is due.
    let before = connections_received(&server, &credentials);
    h.ctx.health.advance_clock(Duration::from_secs(10));
    assert_eq!(h.status_writes().await, Vec::<Value>::new());
    assert_eq!(
        connections_received(&server, &credentials),
        before + 1,
        "only this test's own INFO connection: the reconcile did not dial Redis"
    );
    assert_eq!(
        h.reconcile().await,
        Action::requeue(Duration::from_secs(20))
    );

    // One interval later, nothing changed: probed (one connection), nothing written.
    h.ctx.health.advance_clock(INTERVAL);
    let before = connections_received(&server, &credentials);
    assert_eq!(h.status_writes().await, Vec::<Value>::new());
    assert_eq!(connections_received(&server, &credentials), before + 2);

    // Sessions written by the application: the next probe after the interval writes them once.
    let mut app = server
        .connect(APP_USER, credentials.app.expose())
        .expect("app connects");
    for i in 0..5 {
        let _: () = app
            .set_ex(format!("session:{i}"), "user", 600)
            .expect("SET with TTL");
    }
    drop(app);
    assert_eq!(
        h.status_writes().await,
        Vec::<Value>::new(),
        "not due yet: the change waits for the interval"
    );
    h.ctx.health.advance_clock(INTERVAL);
    let writes = h.status_writes().await;
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["health"]["sessionKeys"], 5);
    assert_eq!(writes[0]["health"]["keysWithoutTtl"], 0);
    assert_eq!(writes[0]["phase"], "Ready");
    h.ctx.health.advance_clock(INTERVAL);
    assert_eq!(h.status_writes().await, Vec::<Value>::new());

    // An operator restart: the new tracker is seeded from the written status, so no rewrite.
    let restarted = Harness::new(h.double.clone(), h.cache.clone(), server.port());
    assert_eq!(restarted.status_writes().await, Vec::<Value>::new());

    // The server stops: Unreachable, Degraded phase, the reconcile itself still succeeds.
    drop(server);
    restarted.ctx.health.advance_clock(INTERVAL);
    let writes = restarted.status_writes().await;
    assert_eq!(writes.len(), 1, "{writes:?}");
    let status = &writes[0];
    let healthy = condition(status, "Healthy");
    assert_eq!(
        (healthy["status"].as_str(), healthy["reason"].as_str()),
        (Some("False"), Some("Unreachable"))
    );
    assert!(
        healthy["message"]
            .as_str()
            .is_some_and(|m| m.contains("web-0: connection refused")),
        "{healthy}"
    );
    assert_eq!(condition(status, "Degraded")["reason"], "NotServing");
    assert_eq!(status["phase"], "Degraded");
    assert_eq!(status["health"]["pods"][0]["role"], "unreachable");
    assert!(status["health"]["sessionKeys"].is_null(), "{status}");
    let text = restarted.metrics_text();
    assert!(
        text.contains(r#"sessionstore_store_degraded{namespace="shop",name="web"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("sessionstore_session_keys{"),
        "no stale figure"
    );

    // Still unreachable one interval later: nothing new to say.
    restarted.ctx.health.advance_clock(INTERVAL);
    assert_eq!(restarted.status_writes().await, Vec::<Value>::new());

    // The store is deleted: its tracker and series go.
    restarted.ctx.health.retain(|_, _| false);
    assert_eq!(restarted.ctx.health.tracked(), 0);
    let text = restarted.metrics_text();
    assert!(!text.contains(r#"name="web""#), "{text}");
}

/// The figures for the issue note: status writes of an idle store over ten intervals through the
/// real reconcile path, and the cost of one probe per reconcile (time, connections).
#[tokio::test]
async fn an_idle_store_is_written_once_over_ten_intervals() {
    let (double, cache, credentials, server) = provisioned().await;
    let h = Harness::new(double, cache, server.port());
    h.sync_cache_with_running_pod();
    let mut writes = 0;
    let mut probe_times = Vec::new();
    let connections_before = connections_received(&server, &credentials);
    h.ctx.health.probe().reset_peak();
    let mut quiet_times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        writes += h.status_writes().await.len();
        probe_times.push(started.elapsed());
        // The same reconcile within the interval (no probe), for comparison.
        let started = Instant::now();
        writes += h.status_writes().await.len();
        quiet_times.push(started.elapsed());
        h.ctx.health.advance_clock(INTERVAL);
    }
    // Each `connections_received` call opens one connection itself.
    let probe_connections = connections_received(&server, &credentials) - connections_before - 1;
    probe_times.sort();
    quiet_times.sort();
    println!(
        "idle store over 10 health intervals (20 reconciles): {writes} status write(s); \
         reconcile with probe: median {:?}, max {:?}; without probe: median {:?}; \
         {probe_connections} Redis connections for 10 probes; peak open probe connections {}",
        probe_times[probe_times.len() / 2],
        probe_times[probe_times.len() - 1],
        quiet_times[quiet_times.len() / 2],
        h.ctx.health.probe().peak_connections()
    );
    assert_eq!(writes, 1, "an idle store is written once");
    assert_eq!(
        probe_connections, 10,
        "one short-lived connection per pod per probe"
    );
    assert_eq!(h.ctx.health.probe().open_connections(), 0);
}

/// A new store is usually probed once before its pod is Ready (the StatefulSet's status change
/// brings the reconcile). When the pod turns Ready, the next reconcile probes at once rather than
/// an interval later, so the store is not left `Provisioning` for up to 30 s while it serves; more
/// reconciles with the same Ready pods stay within one probe per interval.
#[tokio::test]
async fn a_pod_turning_ready_is_probed_at_once_not_an_interval_later() {
    let (double, cache, credentials, server) = provisioned().await;
    let h = Harness::new(double, cache, server.port());
    h.double.fill_cache(&h.cache);
    h.cache.set_statefulset_status(
        "shop",
        "web",
        StatefulSetStatus {
            replicas: 1,
            ready_replicas: Some(0),
            ..StatefulSetStatus::default()
        },
    );
    let pod = |ready: bool| PodTarget {
        name: "web-0".into(),
        ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ready,
    };
    h.cache.insert_pod("shop", pod(false));
    let before = connections_received(&server, &credentials);
    let writes = h.status_writes().await;
    assert_ne!(
        writes.last().map(|s| s["phase"].clone()),
        Some(Value::from("Ready")),
        "{writes:?}"
    );
    let probed_first = connections_received(&server, &credentials) - before - 1;

    // The pod turns Ready: probed in this reconcile, Healthy and Ready written, no clock advance.
    h.cache.set_statefulset_status(
        "shop",
        "web",
        StatefulSetStatus {
            replicas: 1,
            ready_replicas: Some(1),
            ..StatefulSetStatus::default()
        },
    );
    h.cache.insert_pod("shop", pod(true));
    let before = connections_received(&server, &credentials);
    let writes = h.status_writes().await;
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["phase"], "Ready", "{:?}", writes[0]);
    assert_eq!(condition(&writes[0], "Healthy")["status"], "True");
    assert_eq!(
        connections_received(&server, &credentials),
        before + 2,
        "one probe connection, plus this test's own read"
    );

    // Same Ready pods, same interval: no probe.
    let before = connections_received(&server, &credentials);
    assert_eq!(h.status_writes().await, Vec::<Value>::new());
    assert_eq!(connections_received(&server, &credentials), before + 1);
    println!("probe connections before the pod was Ready: {probed_first}");
}
