//! The health probe against real `redis-server` processes on loopback: exact session counts,
//! memory pressure and evictions, unreachable and refusing servers, a replica's link, TLS
//! verification, and the global connection bound.
//!
//! The ACL file is the operator's generated one (`build::acl::users_acl`), so the probe runs with
//! exactly the operator user's permissions. `redis.conf` is a minimal one written here: the shared
//! harness that runs the generated `redis.conf` (`tests/support/redis_server.rs`, branch
//! `redisconf`) needs the config generator, which has not landed yet.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;
use sessionstore_operator::build::StoreCredentials;
use sessionstore_operator::build::acl::{APP_USER, REPLICATION_USER, users_acl};
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::observe::conditions::{self, reason};
use sessionstore_operator::observe::{
    HealthTracker, PodProblem, PodTarget, ProbeSettings, RedisProbe, Role, StoreObservation,
    StoreTarget, TlsTarget,
};
use sessionstore_operator::password::Password;
use sessionstore_operator::validate::{ValidatedStore, validate};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const START_TIMEOUT: Duration = Duration::from_secs(15);

fn dev_store() -> ValidatedStore {
    let yaml = r#"
apiVersion: sessionstore.dev/v1alpha1
kind: SessionStore
metadata: {name: checkout, namespace: shop}
spec:
  profile: development
  clients: {podSelector: {matchLabels: {app: checkout}}}
"#;
    let store: SessionStore = serde_yaml::from_str(yaml).expect("test manifest parses");
    validate(&store).expect("test manifest is valid")
}

/// One `redis-server` on a free loopback port; killed and reaped on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

struct Options<'a> {
    maxmemory: &'a str,
    policy: &'a str,
    replica_of: Option<u16>,
    /// (cert, key, ca) PEM files: the server listens with TLS only.
    tls: Option<(&'a [u8], &'a [u8], &'a [u8])>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            maxmemory: "64mb",
            policy: "volatile-lru",
            replica_of: None,
            tls: None,
        }
    }
}

impl Server {
    fn start(credentials: &StoreCredentials, options: Options<'_>) -> Server {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let d = dir.path().to_path_buf();
            std::fs::write(d.join("users.acl"), users_acl(&dev_store(), credentials))
                .expect("write ACL file");
            let port = free_port();
            let mut conf = format!(
                "bind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly no\ndir {dir}\naclfile {dir}/users.acl\n\
                 maxmemory {}\nmaxmemory-policy {}\nrepl-diskless-sync-delay 0\nlogfile \"\"\n",
                options.maxmemory,
                options.policy,
                dir = d.display(),
            );
            match options.tls {
                None => conf.push_str(&format!("port {port}\n")),
                Some((cert, key, ca)) => {
                    std::fs::write(d.join("tls.crt"), cert).expect("write cert");
                    std::fs::write(d.join("tls.key"), key).expect("write key");
                    std::fs::write(d.join("ca.crt"), ca).expect("write ca");
                    conf.push_str(&format!(
                        "port 0\ntls-port {port}\ntls-cert-file {dir}/tls.crt\ntls-key-file {dir}/tls.key\n\
                         tls-ca-cert-file {dir}/ca.crt\ntls-auth-clients no\n",
                        dir = d.display()
                    ));
                }
            }
            if let Some(primary) = options.replica_of {
                conf.push_str(&format!(
                    "replicaof 127.0.0.1 {primary}\nmasteruser {REPLICATION_USER}\nmasterauth {}\n",
                    credentials.replication.expose()
                ));
            }
            std::fs::write(d.join("redis.conf"), conf).expect("write redis.conf");
            let log = std::fs::File::create(d.join("redis.log")).expect("log file");
            let child = Command::new("redis-server")
                .arg(d.join("redis.conf"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): install Redis 7 (apt-get install redis-server)"));
            let mut server = Server {
                child: Some(child),
                port,
                dir,
            };
            if server.wait_listening() {
                return server;
            }
            let log = server.log();
            assert!(
                log.contains("Address already in use"),
                "redis-server did not start:\n{log}"
            );
        }
        panic!("no free port for redis-server");
    }

    /// True once the port accepts; false if the process exited (port taken).
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain client logged in as the application user (the only user that may write sessions).
    fn app(&self, credentials: &StoreCredentials) -> redis::Connection {
        let info = redis::ConnectionAddr::Tcp("127.0.0.1".into(), self.port)
            .into_connection_info()
            .expect("connection info")
            .set_redis_settings(
                redis::RedisConnectionInfo::default()
                    .set_username(APP_USER)
                    .set_password(credentials.app.expose()),
            );
        let client = redis::Client::open(info).expect("client");
        let connection = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("app connects");
        connection
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        connection
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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

fn reasons(observation: &StoreObservation, previous_evicted: Option<u64>) -> Vec<&'static str> {
    conditions::assess(observation, previous_evicted)
        .problems
        .iter()
        .map(|p| p.reason)
        .collect()
}

#[tokio::test]
async fn session_counts_and_hit_rate_are_exact() {
    let credentials = StoreCredentials::generate();
    let server = Server::start(&credentials, Options::default());
    let mut app = server.app(&credentials);
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
            server.port,
            &["checkout-0"],
            &credentials.operator,
        ))
        .await;
    let health = observation.health_status();
    assert_eq!(health.session_keys, Some(32));
    assert_eq!(health.keys_without_ttl, Some(7));
    assert_eq!(health.hit_rate.as_deref(), Some("0.7500"), "3 hits, 1 miss");
    assert_eq!(health.max_memory_bytes, Some(64 * 1024 * 1024));
    assert_eq!(health.evicted_keys, Some(0));
    assert!(
        health
            .redis_version
            .as_deref()
            .is_some_and(|v| v.starts_with('7')),
        "{health:?}"
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
    let server = Server::start(
        &credentials,
        Options {
            maxmemory: "2mb",
            policy: "allkeys-lru",
            ..Options::default()
        },
    );
    let probe = fast_probe();
    let store = target(
        "checkout",
        server.port,
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
    let mut app = server.app(&credentials);
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
    assert_eq!(found, vec![reason::MEMORY_PRESSURE, reason::EVICTING]);
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
    assert_eq!(found, vec![reason::MEMORY_PRESSURE]);
}

#[tokio::test]
async fn a_stopped_server_is_unreachable_and_does_not_affect_another_store() {
    let credentials_a = StoreCredentials::generate();
    let credentials_b = StoreCredentials::generate();
    let mut a = Server::start(&credentials_a, Options::default());
    let b = Server::start(&credentials_b, Options::default());
    a.stop();
    // A third "store" that accepts TCP but never answers: the command timeout must end it.
    let silent = TcpListener::bind("127.0.0.1:0").expect("silent listener");
    let silent_port = silent.local_addr().expect("addr").port();

    let probe = RedisProbe::new(ProbeSettings {
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_millis(500),
        max_connections: 4,
    });
    let store_a = target("a", a.port, &["a-0"], &credentials_a.operator);
    let store_b = target("b", b.port, &["b-0"], &credentials_b.operator);
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
    assert_eq!(reasons(&obs_a, None), vec![reason::UNREACHABLE]);
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
    let server = Server::start(&credentials, Options::default());
    let wrong = Password::from_secret_value("wrong-password-value-0123456789".into());
    let observation = fast_probe()
        .probe_store(&target("checkout", server.port, &["checkout-0"], &wrong))
        .await;
    assert_eq!(observation.pods[0].result, Err(PodProblem::AuthRefused));
    let verdict = conditions::assess(&observation, None);
    assert_eq!(verdict.problems[0].reason, reason::AUTH_REFUSED);
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
    let mut primary = Server::start(&credentials, Options::default());
    let replica = Server::start(
        &credentials,
        Options {
            replica_of: Some(primary.port),
            ..Options::default()
        },
    );
    let probe = fast_probe();
    // Two "pods" on one host: each pod has its own port here, so probe them as two stores'
    // worth of targets folded into one observation.
    let (primary_port, replica_port) = (primary.port, replica.port);
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

    primary.stop();
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
    assert_eq!(verdict.problems[0].reason, reason::NO_PRIMARY);
    assert!(matches!(
        observation.pods[1].result.as_ref().map(|i| i.role),
        Ok(Some(Role::Replica))
    ));
}

#[tokio::test]
async fn the_global_bound_caps_open_connections() {
    let credentials = StoreCredentials::generate();
    let server = Server::start(&credentials, Options::default());
    let probe = RedisProbe::new(ProbeSettings {
        max_connections: 3,
        ..ProbeSettings::default()
    });
    let pods: Vec<String> = (0..20).map(|i| format!("checkout-{i}")).collect();
    let names: Vec<&str> = pods.iter().map(String::as_str).collect();
    let store = target("checkout", server.port, &names, &credentials.operator);
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

/// Makes a CA and a server certificate for `san` with the openssl CLI.
fn pki(dir: &Path, san: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=store CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            "/CN=redis",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext"),
        format!("subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    let read = |f: &str| std::fs::read(dir.join(f)).expect("read pki file");
    (read("tls.crt"), read("tls.key"), read("ca.crt"))
}

#[tokio::test]
async fn tls_probe_trusts_only_the_store_ca_and_the_store_names() {
    let dir = tempfile::tempdir().expect("pki dir");
    // A wildcard over the headless Service, as a cert-manager Certificate for the store would carry.
    let (cert, key, ca) = pki(
        dir.path(),
        "DNS:*.checkout-headless.shop.svc.cluster.local,DNS:checkout.shop.svc",
    );
    let other = tempfile::tempdir().expect("other pki dir");
    let (_, _, other_ca) = pki(other.path(), "DNS:localhost");
    let credentials = StoreCredentials::generate();
    let server = Server::start(
        &credentials,
        Options {
            tls: Some((&cert, &key, &ca)),
            ..Options::default()
        },
    );
    let probe = fast_probe();
    let with_tls = |name: &str, ca: &[u8]| {
        let mut t = target(
            name,
            server.port,
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
