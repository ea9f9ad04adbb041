//! Password rotation reaches the Sentinels of a highly available store, with real processes: 3
//! redis-server and 3 redis-sentinel started from the generated configs and the generated internal
//! Secret (`sentinel-users.acl`). Sentinel reads that file only at start, so without the live
//! change a Sentinel-aware client holding the new password would be refused until a restart.

mod support;
mod support_ha;

use std::time::Duration;

use redis::{ConnectionAddr, ErrorKind};
use sessionstore_operator::build::acl::{APP_USER, OPERATOR_USER};
use sessionstore_operator::build::keys::{SENTINEL_CONF_KEY, SENTINEL_USERS_ACL_KEY};
use sessionstore_operator::build::meta::paths;
use sessionstore_operator::build::sentinel::{pod_fqdn, sentinel_users_acl_key};
use sessionstore_operator::build::{BuildInput, StoreCredentials, desired_children};
use sessionstore_operator::password::Password;
use sessionstore_operator::redis_client::tls_connection_addr;
use sessionstore_operator::rotation::live::connect;
use sessionstore_operator::rotation::{LiveAcl, LiveTargets, PodEndpoint, RotationError};
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::{REDIS_PORT, SENTINEL_PORT};
use support::tls::TestPki;
use support_ha::scenario::start_cluster;
use support_ha::{HaCluster, PODS, info_field};

const TIMEOUT: Duration = Duration::from_secs(2);

fn endpoint(name: String, port: u16) -> PodEndpoint {
    PodEndpoint {
        name,
        addr: ConnectionAddr::Tcp("127.0.0.1".into(), port),
    }
}

/// What the controller's `ListPods` gives for an HA store, on this cluster's loopback ports.
fn targets(cluster: &HaCluster) -> LiveTargets {
    LiveTargets {
        redis: (0..PODS)
            .map(|i| endpoint(format!("checkout-{i}"), cluster.redis_ports[i]))
            .collect(),
        sentinels: (0..PODS)
            .map(|i| {
                endpoint(
                    format!("checkout-{i} (sentinel)"),
                    cluster.sentinel_ports[i],
                )
            })
            .collect(),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Login {
    /// AUTH succeeded and the user could do what it is for (a session key on Redis, primary
    /// discovery on Sentinel).
    Works,
    /// AUTH refused (WRONGPASS).
    Refused,
    /// Anything else (network, permission): never what a test expects.
    Other(String),
}

/// A Sentinel-aware client: AUTH as `app`, then ask for the primary.
async fn sentinel_login(cluster: &HaCluster, i: usize, password: &Password) -> Login {
    let pod = endpoint(format!("sentinel-{i}"), cluster.sentinel_ports[i]);
    let mut conn = match connect(&pod, APP_USER, password, TIMEOUT).await {
        Ok(conn) => conn,
        Err(e) if e.kind() == ErrorKind::AuthenticationFailed => return Login::Refused,
        Err(e) => return Login::Other(format!("{:?}", e.kind())),
    };
    let primary: redis::RedisResult<Vec<String>> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(cluster.master_name())
        .query_async(&mut conn)
        .await;
    let addr = match primary {
        Ok(addr) if addr.len() == 2 => addr,
        Ok(other) => return Login::Other(format!("unexpected answer {other:?}")),
        Err(e) => return Login::Other(format!("{:?}", e.kind())),
    };
    // A client written for Valkey asks with Valkey's name, which its Sentinels add.
    if support::engine::is_valkey() {
        let primary: redis::RedisResult<Vec<String>> = redis::cmd("SENTINEL")
            .arg("GET-PRIMARY-ADDR-BY-NAME")
            .arg(cluster.master_name())
            .query_async(&mut conn)
            .await;
        match primary {
            Ok(same) if same == addr => {}
            Ok(other) => return Login::Other(format!("Valkey's name answers {other:?}")),
            Err(e) => return Login::Other(format!("Valkey's name: {:?}", e.kind())),
        }
    }
    Login::Works
}

/// An application: AUTH as `app` on a Redis pod, then read a session key.
async fn redis_login(cluster: &HaCluster, i: usize, password: &Password) -> Login {
    let pod = endpoint(format!("redis-{i}"), cluster.redis_ports[i]);
    let mut conn = match connect(&pod, APP_USER, password, TIMEOUT).await {
        Ok(conn) => conn,
        Err(e) if e.kind() == ErrorKind::AuthenticationFailed => return Login::Refused,
        Err(e) => return Login::Other(format!("{:?}", e.kind())),
    };
    match redis::cmd("EXISTS")
        .arg("session:probe")
        .query_async::<i64>(&mut conn)
        .await
    {
        Ok(_) => Login::Works,
        Err(e) => Login::Other(format!("{:?}", e.kind())),
    }
}

/// Every Sentinel's `run_id` (a restarted Sentinel gets a new one), read as the operator.
async fn sentinel_run_ids(cluster: &HaCluster) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..PODS {
        let mut conn = cluster
            .connect(cluster.sentinel_ports[i], OPERATOR_USER)
            .await
            .expect("the operator logs in to the Sentinel");
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .expect("INFO server on the Sentinel");
        ids.push(info_field(&info, "run_id").expect("INFO server has run_id"));
    }
    ids
}

async fn logins(cluster: &HaCluster, password: &Password) -> (Vec<Login>, Vec<Login>) {
    let mut redis = Vec::new();
    let mut sentinels = Vec::new();
    for i in 0..PODS {
        redis.push(redis_login(cluster, i, password).await);
        sentinels.push(sentinel_login(cluster, i, password).await);
    }
    (redis, sentinels)
}

/// The same outcome on every pod.
fn all(login: Login) -> Vec<Login> {
    vec![login; PODS]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_adds_then_retires_the_app_password_on_every_sentinel_without_a_restart() {
    let cluster = start_cluster(5000).await;
    let old = cluster.credentials.app.clone();
    let new = Password::generate();
    let live = LiveAcl {
        operator_user: OPERATOR_USER.into(),
        operator_password: cluster.credentials.operator.clone(),
        timeout: TIMEOUT,
    };
    let targets = targets(&cluster);
    let run_ids = sentinel_run_ids(&cluster).await;

    // As created: the generated sentinel-users.acl knows only the current password.
    assert_eq!(
        logins(&cluster, &old).await,
        (all(Login::Works), all(Login::Works))
    );
    assert_eq!(
        logins(&cluster, &new).await,
        (all(Login::Refused), all(Login::Refused)),
        "the new password must not work anywhere before the rotation adds it"
    );

    // The rotation's "add" step: both passwords work on every Redis and every Sentinel.
    live.add_app_password_everywhere(&targets, &new)
        .await
        .expect("the new password is added on every pod and Sentinel");
    assert_eq!(
        logins(&cluster, &new).await,
        (all(Login::Works), all(Login::Works))
    );
    assert_eq!(
        logins(&cluster, &old).await,
        (all(Login::Works), all(Login::Works))
    );
    // A crash before the state was persisted repeats the step: nothing changes.
    live.add_app_password_everywhere(&targets, &new)
        .await
        .expect("adding again is a no-op");
    assert_eq!(
        logins(&cluster, &new).await,
        (all(Login::Works), all(Login::Works))
    );

    // The "retire" step after the grace period: the old password is refused everywhere.
    live.remove_app_password_everywhere(&targets, &old)
        .await
        .expect("the old password is retired on every pod and Sentinel");
    assert_eq!(
        logins(&cluster, &old).await,
        (all(Login::Refused), all(Login::Refused))
    );
    assert_eq!(
        logins(&cluster, &new).await,
        (all(Login::Works), all(Login::Works))
    );
    live.remove_app_password_everywhere(&targets, &old)
        .await
        .expect("retiring again is a no-op (already removed counts as removed)");

    // The same Sentinel processes all along: nothing was restarted to get there.
    assert_eq!(sentinel_run_ids(&cluster).await, run_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_cannot_be_changed_fails_the_step_and_names_it() {
    let cluster = start_cluster(5000).await;
    let mut targets = targets(&cluster);
    // A Sentinel that does not answer (nothing listens there): the step must fail, not skip it.
    let closed = support_ha::reserve_port();
    targets.sentinels[2] = endpoint("checkout-2 (sentinel)".into(), closed.port());
    let live = LiveAcl {
        operator_user: OPERATOR_USER.into(),
        operator_password: cluster.credentials.operator.clone(),
        timeout: TIMEOUT,
    };
    let new = Password::generate();
    let err = live
        .add_app_password_everywhere(&targets, &new)
        .await
        .expect_err("one unreachable Sentinel fails the step");
    let message = err.to_string();
    assert!(message.contains("1 of 3"), "{message}");
    assert!(message.contains("checkout-2 (sentinel)"), "{message}");
    assert!(
        !message.contains(new.expose()),
        "the password leaked: {message}"
    );
    // The reachable Sentinels did get it (the retry will find them done).
    assert_eq!(sentinel_login(&cluster, 0, &new).await, Login::Works);
}

/// A Sentinel killed and reaped on drop.
struct SentinelProc(std::process::Child);

impl Drop for SentinelProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sentinel_gets_the_live_change_over_tls_trusting_only_the_store_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    support_ha::require_binaries();
    let store = support::validated(&format!(
        "{}  replicas: 3\n  tls: {{enabled: true, secretName: checkout-tls}}\n",
        support::DEVELOPMENT.trim_start()
    ));
    let settings = OperatorSettings::default();
    let credentials = StoreCredentials::generate();
    let children = desired_children(&BuildInput::new(&store, &credentials, &settings));
    let template = children
        .config_map
        .data
        .as_ref()
        .and_then(|d| d.get(SENTINEL_CONF_KEY))
        .cloned()
        .expect("an HA TLS store has a sentinel.conf");
    let acl = children
        .internal_secret
        .data
        .as_ref()
        .and_then(|d| d.get(sentinel_users_acl_key(store.engine)))
        .cloned()
        .expect("an HA store's internal Secret has sentinel-users.acl");

    // The generated TLS template and ACL file, with the mount paths and ports mapped to loopback.
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let pki = TestPki::generate();
    for (name, bytes) in [
        ("ca.crt", &pki.ca_crt),
        ("tls.crt", &pki.tls_crt),
        ("tls.key", &pki.tls_key),
    ] {
        std::fs::write(d.join(name), bytes).expect("pki file");
    }
    std::fs::write(d.join(SENTINEL_USERS_ACL_KEY), &acl.0).expect("acl file");
    let lease = support_ha::reserve_port();
    let port = lease.port();
    let primary = support_ha::reserve_port();
    let mut conf = template;
    for (from, to) in [
        (
            format!("\ntls-port {SENTINEL_PORT}\n"),
            format!("\ntls-port {port}\nbind 127.0.0.1\n"),
        ),
        (
            format!("\ndir {}\n", paths::SENTINEL_DIR),
            format!("\ndir {}\n", d.display()),
        ),
        (
            // No Redis is needed for ACL changes; the monitored address only has to resolve.
            format!("{} {REDIS_PORT} ", pod_fqdn(&store, 0, &settings)),
            format!("127.0.0.1 {} ", primary.port()),
        ),
    ] {
        assert!(conf.contains(&from), "sentinel.conf no longer has {from:?}");
        conf = conf.replace(&from, &to);
    }
    let conf = conf
        .replace(paths::TLS_DIR, &d.display().to_string())
        .replace(paths::INTERNAL_SECRET_DIR, &d.display().to_string());
    assert!(
        conf.contains("\nport 0\n"),
        "the TLS Sentinel listens on TLS only"
    );
    let conf_path = d.join("sentinel.conf");
    std::fs::write(&conf_path, conf).expect("sentinel.conf");
    let log = std::fs::File::create(d.join("sentinel.log")).expect("log");
    let _sentinel = SentinelProc(
        support::engine::sentinel_command(&conf_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the Sentinel starts"),
    );

    let sentinel = |ca: &[u8]| PodEndpoint {
        name: "checkout-0 (sentinel)".into(),
        addr: tls_connection_addr("localhost".into(), port, ca).expect("TLS address"),
    };
    // The Sentinel half of `*_everywhere` (no Redis in this test: that half needs at least one pod).
    let trusted = [sentinel(&pki.ca_crt)];
    let login = |password: Password| {
        let pod = sentinel(&pki.ca_crt);
        async move {
            match connect(&pod, APP_USER, &password, TIMEOUT).await {
                Ok(_) => Login::Works,
                Err(e) if e.kind() == ErrorKind::AuthenticationFailed => Login::Refused,
                Err(e) => Login::Other(format!("{:?}", e.kind())),
            }
        }
    };
    // Bounded wait for the Sentinel to listen.
    let mut started = false;
    for _ in 0..100 {
        if login(credentials.app.clone()).await == Login::Works {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started,
        "the TLS Sentinel never accepted the app password: {}",
        std::fs::read_to_string(d.join("sentinel.log")).unwrap_or_default()
    );
    let new = Password::generate();
    assert_eq!(login(new.clone()).await, Login::Refused);

    let live = LiveAcl {
        operator_user: OPERATOR_USER.into(),
        operator_password: credentials.operator.clone(),
        timeout: TIMEOUT,
    };
    // Another CA is not trusted: the change must fail rather than go anywhere unverified.
    let untrusted = [sentinel(&pki.wrong_ca_crt)];
    let refused = live.add_app_password(&untrusted, &new).await;
    assert!(
        matches!(&refused, Err(RotationError::Live { failed: 1, .. })),
        "{refused:?}"
    );
    assert_eq!(login(new.clone()).await, Login::Refused);

    live.add_app_password(&trusted, &new)
        .await
        .expect("added over TLS");
    assert_eq!(login(new.clone()).await, Login::Works);
    assert_eq!(login(credentials.app.clone()).await, Login::Works);
    live.remove_app_password(&trusted, &credentials.app)
        .await
        .expect("retired over TLS");
    assert_eq!(login(credentials.app.clone()).await, Login::Refused);
    assert_eq!(login(new).await, Login::Works);
}
