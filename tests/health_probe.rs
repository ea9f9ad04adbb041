//! The health probe against real `redis-server` processes on loopback, each running the
//! operator's GENERATED `redis.conf`, ACL file and replication credentials (the shared harness in
//! `tests/support/redis_server.rs`): exact session counts, memory pressure and evictions,
//! unreachable and refusing servers, a replica's link, TLS verification, and the global
//! connection bound.

mod support;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use sessionstore_operator::build::StoreCredentials;
use sessionstore_operator::build::acl::{APP_USER, REPLICATION_USER};
use sessionstore_operator::observe::conditions;
use sessionstore_operator::observe::{
    HealthTracker, PodProblem, PodTarget, ProbeSettings, RedisProbe, Role, StoreObservation,
    StoreTarget, TlsTarget,
};
use sessionstore_operator::password::Password;
use sessionstore_operator::vocabulary::Reason;
use support::redis_server::RedisServer;
use support::tls::TestPki;
use support::{DEVELOPMENT, validated};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// 2 MiB of maxmemory under allkeys-lru: small enough to fill in a test.
const TINY: &str = r#"
apiVersion: sessionstore.dev/v1alpha1
kind: SessionStore
metadata: {name: checkout, namespace: shop}
spec:
  profile: development
  clients: {podSelector: {matchLabels: {app: checkout}}}
  memory: {limit: 64Mi, maxmemory: 2Mi, evictionPolicy: allkeys-lru}
"#;

const WITH_TLS: &str = r#"
apiVersion: sessionstore.dev/v1alpha1
kind: SessionStore
metadata: {name: checkout, namespace: shop}
spec:
  profile: development
  clients: {podSelector: {matchLabels: {app: checkout}}}
  tls: {enabled: true, secretName: checkout-tls}
"#;

fn start(yaml: &str, credentials: &StoreCredentials) -> RedisServer {
    RedisServer::start(&validated(yaml), credentials)
}

/// A client logged in as the application user (the only user that may write sessions).
fn app(server: &RedisServer, credentials: &StoreCredentials) -> redis::Connection {
    server
        .connect(APP_USER, credentials.app.expose())
        .unwrap_or_else(|e| panic!("app user cannot connect: {e}\n{}", server.log()))
}

fn target(name: &str, port: u16, pods: &[&str], password: &Password) -> StoreTarget {
    StoreTarget {
        namespace: "shop".into(),
        name: name.into(),
        port,
        pods: pods
            .iter()
            .map(|p| PodTarget {
                name: (*p).into(),
                ip: Some(LOCALHOST),
                ready: true,
            })
            .collect(),
        operator_password: password.clone(),
        tls: None,
    }
}

fn fast_probe() -> RedisProbe {
    RedisProbe::new(ProbeSettings {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        max_connections: 8,
    })
}

fn reasons(observation: &StoreObservation, previous_evicted: Option<u64>) -> Vec<Reason> {
    conditions::assess(observation, previous_evicted)
        .problems
        .iter()
        .map(|p| p.reason)
        .collect()
}

#[tokio::test]
async fn session_counts_and_hit_rate_are_exact() {
    let credentials = StoreCredentials::generate();
    let server = start(DEVELOPMENT, &credentials);
    let mut app = app(&server, &credentials);
    for i in 0..25 {
        redis::cmd("SET")
            .arg(format!("session:ttl:{i}"))
            .arg("u")
            .arg("EX")
            .arg(600)
            .exec(&mut app)
            .expect("SET EX");
    }
    for i in 0..7 {
        redis::cmd("SET")
            .arg(format!("session:forever:{i}"))
            .arg("u")
            .exec(&mut app)
            .expect("SET");
    }
    for key in [
        "session:ttl:1",
        "session:ttl:2",
        "session:forever:3",
        "session:missing",
    ] {
        let _: Option<String> = redis::cmd("GET").arg(key).query(&mut app).expect("GET");
    }

    let probe = fast_probe();
    let observation = probe
        .probe_store(&target(
            "checkout",
            server.port(),
            &["checkout-0"],
            &credentials.operator,
        ))
        .await;
    let health = observation.health_status();
    assert_eq!(health.session_keys, Some(32));
    assert_eq!(health.keys_without_ttl, Some(7));
    assert_eq!(health.hit_rate.as_deref(), Some("0.7500"), "3 hits, 1 miss");
    // The generated config's maxmemory, as the profile computed it.
    let configured = validated(DEVELOPMENT).memory.maxmemory_bytes;
    assert_eq!(health.max_memory_bytes, i64::try_from(configured).ok());
    assert_eq!(health.evicted_keys, Some(0));
    assert!(
        health
            .redis_version
            .as_deref()
            .is_some_and(|v| v.starts_with('7')),
        "{health:?}"
    );
    // The engine and its own version (Valkey's `redis_version` is a compatibility string).
    assert_eq!(health.engine.as_deref(), Some(support::engine::name()));
    assert_eq!(
        health.version.as_deref(),
        Some(server.own_version(&credentials).as_str())
    );
    // The app connection and the probe's own.
    assert_eq!(health.connected_clients, Some(2));
    assert_eq!(health.pods.len(), 1);
    assert_eq!(
        (health.pods[0].role.as_str(), health.pods[0].replica_link_up),
        ("primary", None)
    );

    let verdict = conditions::assess(&observation, Some(0));
    assert!(verdict.serving);
    assert_eq!(verdict.problems.len(), 1, "{:?}", verdict.problems);
    assert_eq!(
        verdict.problems[0].message,
        "7 keys have no TTL; under volatile-lru they are never evicted and writes will fail once memory is full"
    );
    assert_eq!(
        probe.open_connections(),
        0,
        "the probe closes its connection"
    );
}

#[tokio::test]
async fn filling_maxmemory_shows_pressure_and_evictions() {
    let credentials = StoreCredentials::generate();
    let server = start(TINY, &credentials);
    let probe = fast_probe();
    let store = target(
        "checkout",
        server.port(),
        &["checkout-0"],
        &credentials.operator,
    );
    let mut tracker = HealthTracker::new(Duration::from_secs(30));
    let before = tracker.assess(&probe.probe_store(&store).await);
    assert!(
        before.verdict.problems.is_empty(),
        "{:?}",
        before.verdict.problems
    );

    // 4000 x 1 KiB values into 2 MiB: Redis must evict (allkeys-lru) to take them.
    let mut app = app(&server, &credentials);
    let value = "x".repeat(1024);
    for i in 0..4000 {
        redis::cmd("SET")
            .arg(format!("session:{i}"))
            .arg(&value)
            .arg("EX")
            .arg(600)
            .exec(&mut app)
            .expect("SET under allkeys-lru");
    }

    let observation = probe.probe_store(&store).await;
    let report = tracker.assess(&observation);
    let evicted = report.health.evicted_keys.expect("evicted_keys");
    assert!(evicted > 0, "{:?}", report.health);
    let used = report.health.used_memory_bytes.expect("used memory");
    assert!(
        used * 10 > 2 * 1024 * 1024 * 9,
        "used {used} should be above 90 % of 2 MiB"
    );
    let found: Vec<_> = report.verdict.problems.iter().map(|p| p.reason).collect();
    assert_eq!(found, vec![Reason::MemoryPressure, Reason::Evicting]);
    assert!(
        report.verdict.problems[1]
            .message
            .starts_with(&format!("{evicted} keys evicted since the last check")),
        "{}",
        report.verdict.problems[1].message
    );
    assert!(report.verdict.serving);

    // No new writes: evictions stop being reported, memory pressure stays.
    let again = tracker.assess(&probe.probe_store(&store).await);
    let found: Vec<_> = again.verdict.problems.iter().map(|p| p.reason).collect();
    assert_eq!(found, vec![Reason::MemoryPressure]);
}

#[tokio::test]
async fn a_stopped_server_is_unreachable_and_does_not_affect_another_store() {
    let credentials_a = StoreCredentials::generate();
    let credentials_b = StoreCredentials::generate();
    let a = start(DEVELOPMENT, &credentials_a);
    let b = start(DEVELOPMENT, &credentials_b);
    let a_port = a.port();
    // Killed and reaped; its port stays reserved, so no other test's server answers there.
    let _a_port_lease = a.stop();
    // A third "store" that accepts TCP but never answers: the command timeout must end it.
    let silent = TcpListener::bind("127.0.0.1:0").expect("silent listener");
    let silent_port = silent.local_addr().expect("addr").port();

    let probe = RedisProbe::new(ProbeSettings {
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_millis(500),
        max_connections: 4,
    });
    let store_a = target("a", a_port, &["a-0"], &credentials_a.operator);
    let store_b = target("b", b.port(), &["b-0"], &credentials_b.operator);
    let store_c = target("c", silent_port, &["c-0"], &credentials_b.operator);
    let started = Instant::now();
    let (obs_a, obs_b, obs_c) = tokio::join!(
        probe.probe_store(&store_a),
        probe.probe_store(&store_b),
        probe.probe_store(&store_c)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeouts"
    );

    assert_eq!(obs_a.pods[0].result, Err(PodProblem::ConnectionRefused));
    assert_eq!(reasons(&obs_a, None), vec![Reason::Unreachable]);
    assert_eq!(
        conditions::assess(&obs_a, None).problems[0].message,
        "no pod answered: a-0: connection refused on the Redis port"
    );
    assert_eq!(obs_c.pods[0].result, Err(PodProblem::CommandTimeout));
    assert!(obs_b.pods[0].result.is_ok(), "{:?}", obs_b.pods[0].result);
    assert!(conditions::assess(&obs_b, None).serving);
    assert_eq!(probe.open_connections(), 0);
    drop(silent);
}

#[tokio::test]
async fn a_wrong_operator_password_is_a_calm_auth_refusal() {
    let credentials = StoreCredentials::generate();
    let server = start(DEVELOPMENT, &credentials);
    let wrong = Password::from_secret_value("wrong-password-value-0123456789".into());
    let observation = fast_probe()
        .probe_store(&target("checkout", server.port(), &["checkout-0"], &wrong))
        .await;
    assert_eq!(observation.pods[0].result, Err(PodProblem::AuthRefused));
    let verdict = conditions::assess(&observation, None);
    assert_eq!(verdict.problems[0].reason, Reason::AuthRefused);
    let message = &verdict.problems[0].message;
    assert_eq!(
        message,
        "the operator cannot log in to Redis: checkout-0: Redis refused the operator's ACL user (wrong password, or user missing or disabled)"
    );
    assert!(!message.contains(wrong.expose()) && !message.contains(credentials.operator.expose()));
    assert!(!format!("{observation:?}").contains(wrong.expose()));
}

#[tokio::test]
async fn a_replica_reports_its_link_up_then_down_when_the_primary_stops() {
    let credentials = StoreCredentials::generate();
    let store = validated(DEVELOPMENT);
    let primary = RedisServer::start(&store, &credentials);
    let replica = RedisServer::start_replica_of(&primary, &store, &credentials);
    let probe = fast_probe();
    // Two "pods" on one host: each pod has its own port here, so probe them as two stores'
    // worth of targets folded into one observation.
    let (primary_port, replica_port) = (primary.port(), replica.port());
    let probe_both = || async {
        let p = probe
            .probe_store(&target(
                "checkout",
                primary_port,
                &["checkout-0"],
                &credentials.operator,
            ))
            .await;
        let r = probe
            .probe_store(&target(
                "checkout",
                replica_port,
                &["checkout-1"],
                &credentials.operator,
            ))
            .await;
        StoreObservation {
            pods: p.pods.into_iter().chain(r.pods).collect(),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let observation = loop {
        let observation = probe_both().await;
        let linked = observation
            .pods
            .iter()
            .any(|p| matches!(&p.result, Ok(i) if i.master_link_up == Some(true)));
        if linked {
            break observation;
        }
        assert!(
            Instant::now() < deadline,
            "replica never linked (authenticating as {REPLICATION_USER}):\n{}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let health = observation.health_status();
    assert_eq!(health.pods[0].role, "primary");
    assert_eq!(
        (health.pods[1].role.as_str(), health.pods[1].replica_link_up),
        ("replica", Some(true))
    );
    assert!(
        conditions::assess(&observation, Some(0))
            .problems
            .is_empty()
    );

    drop(primary); // killed and reaped
    let deadline = Instant::now() + Duration::from_secs(15);
    let observation = loop {
        let observation = probe_both().await;
        let down = observation
            .pods
            .iter()
            .any(|p| matches!(&p.result, Ok(i) if i.master_link_up == Some(false)));
        if down {
            break observation;
        }
        assert!(
            Instant::now() < deadline,
            "replica never noticed its primary stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let health = observation.health_status();
    assert_eq!(health.pods[0].role, "unreachable");
    assert_eq!(
        (health.pods[1].role.as_str(), health.pods[1].replica_link_up),
        ("replica", Some(false))
    );
    assert_eq!(health.session_keys, None, "no primary, no figures");
    let verdict = conditions::assess(&observation, None);
    assert!(!verdict.serving);
    assert_eq!(verdict.problems[0].reason, Reason::NoPrimary);
    assert!(matches!(
        observation.pods[1].result.as_ref().map(|i| i.role),
        Ok(Some(Role::Replica))
    ));
}

#[tokio::test]
async fn the_global_bound_caps_open_connections() {
    let credentials = StoreCredentials::generate();
    let server = start(DEVELOPMENT, &credentials);
    let probe = RedisProbe::new(ProbeSettings {
        max_connections: 3,
        ..ProbeSettings::default()
    });
    let pods: Vec<String> = (0..20).map(|i| format!("checkout-{i}")).collect();
    let names: Vec<&str> = pods.iter().map(String::as_str).collect();
    let store = target("checkout", server.port(), &names, &credentials.operator);
    let (one, two) = tokio::join!(probe.probe_store(&store), probe.probe_store(&store));
    for pod in one.pods.iter().chain(&two.pods) {
        assert!(pod.result.is_ok(), "{}: {:?}", pod.name, pod.result);
    }
    assert_eq!(
        probe.peak_connections(),
        3,
        "40 pods probed at once through 3 permits"
    );
    assert_eq!(probe.open_connections(), 0);
}

#[tokio::test]
async fn tls_probe_trusts_only_the_store_ca_and_the_store_names() {
    // A wildcard over the headless Service, as a cert-manager Certificate for the store would carry.
    // IP:127.0.0.1 lets the harness's own client see the server is up; the probe ignores IPs.
    let pki = TestPki::generate_for(
        "IP:127.0.0.1,DNS:*.checkout-headless.shop.svc.cluster.local,DNS:checkout.shop.svc",
    );
    let (ca, other_ca) = (pki.ca_crt.clone(), pki.wrong_ca_crt.clone());
    let credentials = StoreCredentials::generate();
    let server = RedisServer::start_tls(&validated(WITH_TLS), &credentials, &pki);
    let probe = fast_probe();
    let with_tls = |name: &str, ca: &[u8]| {
        let mut t = target(
            name,
            server.port(),
            &[&format!("{name}-0")],
            &credentials.operator,
        );
        t.tls = Some(TlsTarget {
            ca_pem: ca.to_vec(),
            cluster_domain: "cluster.local".into(),
        });
        t
    };

    let ok = probe.probe_store(&with_tls("checkout", &ca)).await;
    assert!(
        ok.pods[0].result.is_ok(),
        "{:?}\n{}",
        ok.pods[0].result,
        server.log()
    );

    let wrong_ca = probe.probe_store(&with_tls("checkout", &other_ca)).await;
    assert!(
        matches!(&wrong_ca.pods[0].result, Err(PodProblem::TlsFailed(_))),
        "{:?}",
        wrong_ca.pods[0].result
    );

    // Same CA, but the certificate does not name a store called "billing": refused.
    let wrong_store = probe.probe_store(&with_tls("billing", &ca)).await;
    match &wrong_store.pods[0].result {
        Err(PodProblem::TlsFailed(why)) => assert!(why.contains("not valid for name"), "{why}"),
        other => panic!("expected a name mismatch, got {other:?}"),
    }

    // Plain text to a TLS-only port: a calm failure, not a hang.
    let mut plain = with_tls("checkout", &ca);
    plain.tls = None;
    let plain = probe.probe_store(&plain).await;
    assert!(plain.pods[0].result.is_err());
    assert_eq!(probe.open_connections(), 0);
}
