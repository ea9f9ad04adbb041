//! Rotation and TLS through the real reconcile, with the API mocked (the in-process double) and the
//! Redis pod real (`redis-server` on loopback, started from the Secrets the reconcile created):
//! the exact writes of each rotation step in order, applications that never fail to log in, the
//! connection password never overwritten outside a rotation, and the TLS inputs. An HA store's
//! rotation also reaches a real `redis-sentinel` started from the persisted `sentinel-users.acl`.

#[path = "mock/api_double.rs"]
mod api_double;
#[path = "mock/harness.rs"]
mod harness;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_double::{ApiDouble, Call};
use harness::{Harness, SECRETS, secret_data, secret_json};
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use sessionstore_operator::build::acl::APP_USER;
use sessionstore_operator::build::sentinel::sentinel_users_acl_key;
use sessionstore_operator::password::Password;
use sessionstore_operator::rotation::PodEndpoint;
use sessionstore_operator::rotation::addresses::ListPods;
use sessionstore_operator::rotation::live::connect;
use support::redis_server::RedisServer;

/// Grace period of the rotation scenario; the slow client switches well within it.
const GRACE_SECONDS: u64 = 2;
const SLOW_SWITCH: Duration = Duration::from_millis(1000);

const STATUS: &str = "/apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web/status";

fn spec(auth: Value) -> Value {
    json!({"profile": "development", "clients": {"podSelector": {"matchLabels": {"app": "web"}}}, "auth": auth})
}

fn writes(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.is_write())
        .map(|c| match c.body.as_ref().and_then(|b| b.get("reason")) {
            Some(reason) => format!("{} {}", c.line(), reason.as_str().unwrap_or_default()),
            None => c.line(),
        })
        .collect()
}

fn auth_phase(double: &ApiDouble) -> Option<String> {
    double
        .get(harness::STORE_PATH)?
        .pointer("/status/auth/phase")?
        .as_str()
        .map(str::to_owned)
}

async fn can_login(port: u16, password: &str) -> bool {
    let pod = PodEndpoint {
        name: "web-0".into(),
        addr: redis::ConnectionAddr::Tcp("127.0.0.1".into(), port),
    };
    connect(
        &pod,
        APP_USER,
        &Password::from_secret_value(password.into()),
        Duration::from_secs(2),
    )
    .await
    .is_ok()
}

#[derive(Default)]
struct Logins {
    attempts: u64,
    failures: Vec<String>,
}

/// Two applications logging in every few ms with what the connection Secret says: one takes
/// `password` as soon as it changes, the other keeps the password it mounted for
/// [`SLOW_SWITCH`] after a new one appears (a lazy mount refresh; the contract is to switch within
/// the grace period, after which the old password is retired).
fn start_clients(
    double: ApiDouble,
    port: u16,
    stop: Arc<AtomicBool>,
    logins: Arc<Mutex<Logins>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..2)
        .map(|id| {
            let (double, stop, logins) = (double.clone(), stop.clone(), logins.clone());
            tokio::spawn(async move {
                let published = || {
                    secret_data(&double, "web-connection", "password")
                        .expect("a password is always published")
                };
                let mut mounted = published();
                let mut switch_at: Option<Instant> = None;
                while !stop.load(Ordering::SeqCst) {
                    let current = published();
                    if current != mounted {
                        let delay = if id == 1 { SLOW_SWITCH } else { Duration::ZERO };
                        let at = *switch_at.get_or_insert_with(|| Instant::now() + delay);
                        if Instant::now() >= at {
                            mounted = current;
                            switch_at = None;
                        }
                    }
                    let password = mounted.clone();
                    let ok = can_login(port, &password).await;
                    {
                        let mut l = logins.lock().expect("lock");
                        l.attempts += 1;
                        if !ok {
                            l.failures.push(format!("client {id} refused"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_runs_every_step_in_order_and_no_login_fails() {
    let created = Harness::new(
        spec(json!({"rotation": "v1", "rotationGracePeriodSeconds": GRACE_SECONDS})),
        1,
    );
    created.reconcile().await.expect("creates the store");
    let old = created
        .secret_data("web-connection", "password")
        .expect("password");
    // The pod runs from exactly what the reconcile persisted.
    let server = RedisServer::start(&created.validated(), &created.stored_credentials());
    let h = created.restarted(server.port());
    h.add_pod("web-0");
    h.sync_cache();
    h.double.take_calls();
    h.reconcile().await.expect("steady");
    let steady = h.double.take_calls();
    assert!(writes(&steady).is_empty(), "{:?}", writes(&steady));
    assert!(
        !steady.iter().any(|c| c.path().ends_with("/pods")),
        "pods are listed only while a live step is due"
    );
    assert_eq!(auth_phase(&h.double).as_deref(), Some("Stable"));

    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(Mutex::new(Logins::default()));
    let clients = start_clients(
        h.double.clone(),
        server.port(),
        stop.clone(),
        logins.clone(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    h.edit_spec(|s| s["auth"]["rotation"] = json!("v2"));
    let action = h.reconcile().await.expect("rotation starts");
    let calls = h.double.take_calls();
    assert_eq!(
        writes(&calls),
        [
            format!("PATCH {SECRETS}/web-internal"),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events RotationStarted".into(),
            format!("PATCH {SECRETS}/web-internal"),
            format!("PATCH {SECRETS}/web-connection"),
            format!("PATCH {SECRETS}/web-internal"),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events RotationPublished".into(),
            format!("PATCH {STATUS}"),
        ]
    );
    let list = calls
        .iter()
        .position(|c| c.method == Method::GET && c.path().ends_with("/pods"))
        .expect("pods listed for the live step");
    assert!(
        calls[list].uri.contains("labelSelector="),
        "{}",
        calls[list].uri
    );
    let new = h
        .secret_data("web-connection", "password")
        .expect("published");
    assert_ne!(new, old);
    assert_eq!(
        h.secret_data("web-connection", "previous-password")
            .as_deref(),
        Some(old.as_str())
    );
    assert!(can_login(server.port(), &old).await && can_login(server.port(), &new).await);
    assert_eq!(auth_phase(&h.double).as_deref(), Some("Rotating"));
    let Action { .. } = action;
    assert!(
        format!("{action:?}").contains("requeue_after: Some(")
            && action != Action::requeue(Duration::from_secs(300)),
        "comes back at the end of the grace period: {action:?}"
    );

    // The grace period (2 s, rounded up) ends; the next reconcile retires and finishes.
    tokio::time::sleep(Duration::from_millis(GRACE_SECONDS * 1000 + 1200)).await;
    h.reconcile().await.expect("rotation finishes");
    let calls = h.double.take_calls();
    assert_eq!(
        writes(&calls),
        [
            format!("PATCH {SECRETS}/web-internal"),
            format!("PATCH {SECRETS}/web-connection"),
            format!("PATCH {SECRETS}/web-internal"),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events RotationFinished".into(),
            format!("PATCH {STATUS}"),
        ]
    );
    assert_eq!(auth_phase(&h.double).as_deref(), Some("Stable"));
    assert_eq!(
        h.secret_data("web-connection", "password"),
        Some(new.clone())
    );
    assert_eq!(h.secret_data("web-connection", "previous-password"), None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client loop");
    }
    assert!(
        !can_login(server.port(), &old).await,
        "old password retired"
    );
    assert!(can_login(server.port(), &new).await);

    // Steady after Finish: nothing is written, and the pods are not listed.
    h.reconcile().await.expect("steady again");
    let calls = h.double.take_calls();
    assert!(writes(&calls).is_empty(), "{:?}", writes(&calls));
    assert!(!calls.iter().any(|c| c.path().ends_with("/pods")));

    let logins = logins.lock().expect("lock");
    println!(
        "controller rotation: {} logins, {} failures",
        logins.attempts,
        logins.failures.len()
    );
    assert!(logins.attempts > 50, "the clients ran: {}", logins.attempts);
    assert_eq!(logins.failures, Vec::<String>::new());
}

#[tokio::test]
async fn a_changed_existing_secret_waits_for_pods_and_never_overwrites_the_password() {
    let created = Harness::new(spec(json!({"existingSecret": "my-pw"})), 1);
    created.double.put(
        &format!("{SECRETS}/my-pw"),
        secret_json("my-pw", "Opaque", &[("password", "first-pw")]),
    );
    created.reconcile().await.expect("creates");
    assert_eq!(
        created.secret_data("web-connection", "password").as_deref(),
        Some("first-pw")
    );
    // The user changes their Secret; no pod exists yet.
    created.double.put(
        &format!("{SECRETS}/my-pw"),
        secret_json("my-pw", "Opaque", &[("password", "second-pw")]),
    );
    let h = created.restarted(1);
    h.sync_cache();
    h.double.take_calls();
    for round in 0..2 {
        let action = h.reconcile().await.expect("waits calmly, no error");
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(30)),
            "round {round}"
        );
        let calls = h.double.take_calls();
        assert!(
            !calls
                .iter()
                .any(|c| c.is_write() && c.path().ends_with("/web-connection")),
            "round {round}: {:?}",
            writes(&calls)
        );
        let expected: Vec<String> = if round == 0 {
            vec![
                format!("PATCH {SECRETS}/web-internal"),
                "POST /apis/events.k8s.io/v1/namespaces/shop/events RotationStarted".into(),
                format!("PATCH {STATUS}"),
            ]
        } else {
            Vec::new()
        };
        assert_eq!(writes(&calls), expected, "round {round}");
    }
    assert_eq!(
        h.secret_data("web-connection", "password").as_deref(),
        Some("first-pw")
    );
    let acl = h.secret_data("web-internal", "users.acl").expect("acl");
    for pw in ["first-pw", "second-pw"] {
        assert!(
            acl.contains(&Password::from_secret_value(pw.into()).acl_hash()),
            "users.acl holds both passwords so a pod started now accepts either"
        );
    }
    assert_eq!(auth_phase(&h.double).as_deref(), Some("Rotating"));
}

fn tls_spec(tls: Value) -> Value {
    json!({"profile": "development", "clients": {"podSelector": {"matchLabels": {"app": "web"}}}, "tls": tls})
}

fn ready_condition(double: &ApiDouble) -> (String, String) {
    let store = double.get(harness::STORE_PATH).expect("store");
    let conditions = store
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready condition");
    (
        ready["reason"].as_str().unwrap_or_default().into(),
        ready["message"].as_str().unwrap_or_default().into(),
    )
}

fn tls_hash(double: &ApiDouble) -> Option<String> {
    double
        .get("/apis/apps/v1/namespaces/shop/statefulsets/web")?
        .pointer("/spec/template/metadata/annotations/sessionstore.dev~1tls-hash")?
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn tls_secret_missing_waits_then_ca_is_copied_and_a_new_certificate_rolls_the_pods() {
    let h = Harness::new(
        tls_spec(json!({"enabled": true, "secretName": "web-certs"})),
        1,
    );
    let action = h.reconcile().await.expect("waits");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let calls = h.double.take_calls();
    assert_eq!(
        writes(&calls),
        [
            format!("PATCH {STATUS}"),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events TlsSecretMissing".into(),
        ]
    );
    let (reason, message) = ready_condition(&h.double);
    assert_eq!(reason, "TlsSecretMissing");
    assert!(
        message.contains("spec.tls.secretName") && message.contains("web-certs"),
        "{message}"
    );

    let certs = |crt: &str| {
        secret_json(
            "web-certs",
            "kubernetes.io/tls",
            &[("tls.crt", crt), ("tls.key", "KEY"), ("ca.crt", "CA-PEM")],
        )
    };
    h.double
        .put(&format!("{SECRETS}/web-certs"), certs("CERT-1"));
    h.reconcile().await.expect("applies");
    assert_eq!(
        h.secret_data("web-connection", "ca.crt").as_deref(),
        Some("CA-PEM")
    );
    assert!(
        h.secret_data("web-connection", "uri")
            .is_some_and(|u| u.starts_with("rediss://"))
    );
    let first = tls_hash(&h.double).expect("certificate hash in the pod template");
    h.sync_cache();
    h.double.take_calls();

    // cert-manager (or the user) renews the certificate: the pods roll, nothing else is written.
    h.double
        .put(&format!("{SECRETS}/web-certs"), certs("CERT-2"));
    h.reconcile().await.expect("applies");
    let calls = h.double.take_calls();
    assert_eq!(
        writes(&calls),
        ["PATCH /apis/apps/v1/namespaces/shop/statefulsets/web"]
    );
    let second = tls_hash(&h.double).expect("hash");
    assert_ne!(first, second);
}

const CERT_MANAGER_DISCOVERY: &str = "/apis/cert-manager.io/v1";

#[tokio::test]
async fn issuer_ref_without_cert_manager_gives_a_condition_and_with_it_a_certificate() {
    let h = Harness::new(
        tls_spec(
            json!({"enabled": true, "issuerRef": {"name": "ca-issuer", "kind": "ClusterIssuer"}}),
        ),
        1,
    );
    for _ in 0..2 {
        h.reconcile().await.expect("waits");
    }
    let calls = h.double.take_calls();
    let discoveries = calls
        .iter()
        .filter(|c| c.path() == CERT_MANAGER_DISCOVERY)
        .count();
    assert_eq!(discoveries, 1, "discovered once, not per reconcile");
    let (reason, message) = ready_condition(&h.double);
    assert_eq!(reason, "TlsIssuerUnavailable");
    assert!(
        message.contains("spec.tls.issuerRef") && message.contains("ca-issuer"),
        "{message}"
    );
    assert!(writes(&calls).contains(
        &"POST /apis/events.k8s.io/v1/namespaces/shop/events TlsIssuerUnavailable".to_string()
    ));
    assert!(
        !calls
            .iter()
            .any(|c| c.is_write() && c.path().contains("/secrets")),
        "nothing is created before TLS can work"
    );

    // cert-manager installed; the operator restarts.
    h.double.put(
        CERT_MANAGER_DISCOVERY,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "cert-manager.io/v1",
               "resources": [{"name": "certificates", "singularName": "certificate", "namespaced": true,
                              "kind": "Certificate", "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]}),
    );
    let h = h.restarted(1);
    for _ in 0..2 {
        h.reconcile().await.expect("waits for the issued Secret");
    }
    let calls = h.double.take_calls();
    let cert_path = "/apis/cert-manager.io/v1/namespaces/shop/certificates/web-tls";
    let applies: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == Method::PATCH && c.path() == cert_path)
        .collect();
    assert_eq!(applies.len(), 1, "applied once: {:?}", writes(&calls));
    assert!(
        applies[0]
            .uri
            .contains("fieldManager=sessionstore-operator")
            && applies[0].uri.contains("force=true")
    );
    let body = applies[0].body.as_ref().expect("body");
    assert_eq!(body["spec"]["secretName"], "web-tls");
    assert_eq!(body["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "5e55-1");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.path() == CERT_MANAGER_DISCOVERY)
            .count(),
        1
    );
    let (reason, message) = ready_condition(&h.double);
    assert_eq!(reason, "TlsSecretMissing");
    assert!(
        message.contains("spec.tls.issuerRef") && message.contains("web-tls"),
        "{message}"
    );
}

/// A Sentinel killed and reaped on drop.
struct SentinelProc(std::process::Child);

impl Drop for SentinelProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn sentinel_login(port: u16, password: &str) -> bool {
    let sentinel = PodEndpoint {
        name: "web-0 (sentinel)".into(),
        addr: redis::ConnectionAddr::Tcp("127.0.0.1".into(), port),
    };
    connect(
        &sentinel,
        APP_USER,
        &Password::from_secret_value(password.into()),
        Duration::from_secs(2),
    )
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_rotation_adds_and_retires_the_password_on_the_sentinels_too() {
    let mut store_spec = spec(json!({"rotation": "v1", "rotationGracePeriodSeconds": 1}));
    store_spec["replicas"] = json!(3);
    store_spec["persistence"] = json!({"mode": "none"});
    let created = Harness::new(store_spec, 1);
    created.reconcile().await.expect("creates the store");
    let old = created
        .secret_data("web-connection", "password")
        .expect("password");
    let server = RedisServer::start(&created.validated(), &created.stored_credentials());
    // The Sentinel reads the ACL file the reconcile persisted, as the pod mounts it.
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = created
        .secret_data(
            "web-internal",
            sentinel_users_acl_key(created.validated().engine),
        )
        .expect("an HA store's internal Secret has its Sentinels' ACL file");
    std::fs::write(dir.path().join("sentinel-users.acl"), acl).expect("acl file");
    let sentinel_lease = support::ports::reserve_port();
    let sentinel_port = sentinel_lease.port();
    let conf = format!(
        "port {sentinel_port}\nbind 127.0.0.1\ndir {d}\nlogfile {d}/sentinel.log\n\
         aclfile {d}/sentinel-users.acl\nsentinel monitor web 127.0.0.1 {} 2\n",
        server.port(),
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("sentinel.conf"), conf).expect("sentinel.conf");
    let _sentinel = SentinelProc(
        support::engine::sentinel_command(&dir.path().join("sentinel.conf"))
            .spawn()
            .expect("the Sentinel starts (install redis-sentinel, or set VALKEY_BIN_DIR)"),
    );
    let mut up = false;
    for _ in 0..100 {
        if sentinel_login(sentinel_port, &old).await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the Sentinel never accepted the current password");

    let h = created.restarted_with(ListPods {
        port: server.port(),
        sentinel_port,
    });
    h.add_pod("web-0");
    h.sync_cache();
    h.reconcile().await.expect("steady");
    h.edit_spec(|s| s["auth"]["rotation"] = json!("v2"));
    h.reconcile().await.expect("rotation starts and publishes");
    let new = h
        .secret_data("web-connection", "password")
        .expect("published");
    assert_ne!(new, old);
    assert!(
        sentinel_login(sentinel_port, &new).await,
        "new password on Sentinel"
    );
    assert!(
        sentinel_login(sentinel_port, &old).await,
        "old password kept on Sentinel"
    );
    assert!(can_login(server.port(), &new).await);

    tokio::time::sleep(Duration::from_millis(2200)).await;
    h.reconcile().await.expect("rotation finishes");
    assert_eq!(auth_phase(&h.double).as_deref(), Some("Stable"));
    assert!(
        !sentinel_login(sentinel_port, &old).await,
        "old password retired on Sentinel"
    );
    assert!(sentinel_login(sentinel_port, &new).await);
    assert!(!can_login(server.port(), &old).await);
}
