//! Zero-downtime password rotation against real `redis-server`: clients never fail while the
//! rotation runs, the old password is refused afterwards, an interrupted rotation resumes, a pod
//! restarted at any phase agrees, and no password (or its hash) leaks anywhere but the Secrets.

mod support;
mod support_rotation;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use sessionstore_operator::build::acl::APP_USER;
use sessionstore_operator::password::Password;
use sessionstore_operator::rotation::{PodEndpoint, RotationState, Stage, Step, auth_status};
use support_rotation::{
    Cluster, ConnectionSecret, Crash, RedisServer, can_login, session_round_trip, store,
};

const CLIENTS: usize = 4;
const GRACE_SECONDS: i64 = 2;
/// Each simulated application switches to the published password at a random point within this
/// delay (kubelet refreshes mounted Secrets lazily); it is shorter than the grace period, which is
/// the contract an application must meet.
const MAX_SWITCH_DELAY_MS: u64 = 1000;

#[derive(Default)]
struct ClientStats {
    attempts: u64,
    attempts_with_old: u64,
    /// Attempts with the old password after the new one was published: the grace period at work.
    attempts_with_old_after_publish: u64,
    attempts_with_new: u64,
    failures: Vec<String>,
    switched_at: Vec<Instant>,
}

/// One application instance: per request a new connection, AUTH with the password it has mounted,
/// SET and GET of its session key. It mounts a newly published password after a random delay.
async fn client_loop(
    id: usize,
    pods: Vec<PodEndpoint>,
    secret: Arc<std::sync::RwLock<ConnectionSecret>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ClientStats>>,
) {
    let original = secret.read().expect("lock").password.clone();
    let mut mounted = original.clone();
    let mut switch_at: Option<Instant> = None;
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let published = secret.read().expect("lock").password.clone();
        if published != mounted {
            let at = *switch_at.get_or_insert_with(|| {
                Instant::now() + Duration::from_millis(rand::random_range(0..MAX_SWITCH_DELAY_MS))
            });
            if Instant::now() >= at {
                mounted = published.clone();
                switch_at = None;
                stats.lock().expect("lock").switched_at.push(Instant::now());
            }
        }
        let pod = &pods[n % pods.len()];
        let key = format!("session:client-{id}");
        let result = session_round_trip(pod, APP_USER, &mounted, &key).await;
        {
            let mut s = stats.lock().expect("lock");
            s.attempts += 1;
            if mounted == original {
                s.attempts_with_old += 1;
                if published != original {
                    s.attempts_with_old_after_publish += 1;
                }
            } else {
                s.attempts_with_new += 1;
            }
            if let Err(e) = result {
                let which = if mounted == original { "old" } else { "new" };
                s.failures.push(format!(
                    "client {id} on {} with the {which} password: {e}",
                    pod.name
                ));
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn hashes_in_acl(acl: &str, user: &str) -> Vec<String> {
    acl.lines()
        .find(|l| l.starts_with(&format!("user {user} ")))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| w.starts_with('#'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_zero_failures_through_a_whole_rotation_on_every_pod() {
    let v1 = store("v1", GRACE_SECONDS);
    let mut cluster = Cluster::create(&v1, Password::generate());
    let old = cluster.connection().password;
    let servers = [
        cluster.start_pod("checkout-0", &v1),
        cluster.start_pod("checkout-1", &v1),
    ];
    let pods: Vec<PodEndpoint> = servers.iter().map(RedisServer::endpoint).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(ClientStats::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                pods.clone(),
                cluster.connection.clone(),
                stop.clone(),
                stats.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The user changes spec.auth.rotation; the controller drives the plan one step per reconcile.
    let v2 = store("v2", GRACE_SECONDS);
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut retire_started = None;
    for _ in 0..20 {
        let before = Instant::now();
        let p = cluster
            .step(&v2, &pods, None, Password::generate)
            .await
            .expect("rotation step");
        steps.push(p.step.name());
        match p.step {
            Step::Nothing => break,
            Step::WaitUntil(t) => {
                let wait = (t - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait + Duration::from_millis(20)).await;
            }
            Step::RetireOldPasswordLive { .. } => retire_started = Some(before),
            _ => {}
        }
    }
    let rotation_time = started.elapsed();
    // Keep the clients going on the new password after the rotation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }

    assert_eq!(
        steps,
        vec![
            "Begin",
            "AddNewPasswordLive",
            "PublishToConnectionSecret",
            "WaitUntil",
            "RetireOldPasswordLive",
            "Finish",
            "Nothing"
        ]
    );
    let new = cluster.connection().password;
    assert_ne!(new, old);
    assert!(cluster.connection().previous_password.is_none());
    assert_eq!(
        cluster.state(),
        RotationState::Stable {
            rotation: Some("v2".into())
        }
    );

    let s = std::mem::take(&mut *stats.lock().expect("lock"));
    println!(
        "rotation on {} pods in {:?}: {} auth attempts by {CLIENTS} clients ({} with the old password, {} of them after \
         publish, {} with the new one), {} failures",
        pods.len(),
        rotation_time,
        s.attempts,
        s.attempts_with_old,
        s.attempts_with_old_after_publish,
        s.attempts_with_new,
        s.failures.len()
    );
    assert!(
        s.failures.is_empty(),
        "failed requests during the rotation: {:#?}",
        s.failures
    );
    // The loop really exercised both passwords, including the old one during the grace period.
    assert!(s.attempts_with_old_after_publish > 0 && s.attempts_with_new > 0);
    let retire_started = retire_started.expect("a retire step");
    assert_eq!(s.switched_at.len(), CLIENTS, "every client switched once");
    assert!(
        s.switched_at.iter().all(|t| *t < retire_started),
        "clients switched within the grace period"
    );

    for pod in &pods {
        assert!(
            !can_login(pod, APP_USER, &old).await,
            "{}: old password refused after retirement",
            pod.name
        );
        assert!(
            can_login(pod, APP_USER, &new).await,
            "{}: new password works",
            pod.name
        );
    }
    assert_eq!(
        hashes_in_acl(&cluster.users_acl(), APP_USER),
        vec![new.acl_hash()]
    );
}

/// Crashes the operator at every step (after the step's side effect, before and after its
/// persist), restarts a pod from the persisted users.acl while the operator is down, then resumes
/// from the persisted Secrets alone: the rotation always finishes in the same end state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_resumes_from_persisted_state_and_finishes() {
    let step_names = [
        "Begin",
        "AddNewPasswordLive",
        "PublishToConnectionSecret",
        "RetireOldPasswordLive",
        "Finish",
    ];
    for (k, crashing_step) in step_names.iter().enumerate() {
        for crash in [Crash::BeforePersist, Crash::AfterPersist] {
            let case = format!("crash {crash:?} at {crashing_step}");
            let v1 = store("v1", 0);
            let v2 = store("v2", 0);
            let mut cluster = Cluster::create(&v1, Password::generate());
            let old = cluster.connection().password;
            let pod0 = cluster.start_pod("checkout-0", &v1);
            let mut pod1 = cluster.start_pod("checkout-1", &v1);
            let pods = vec![pod0.endpoint(), pod1.endpoint()];

            // Run until the k-th effective step (waits do not count), which crashes.
            let mut done = 0;
            for _ in 0..10 {
                let crash_now = (done == k).then_some(crash);
                let p = cluster
                    .step(&v2, &pods, crash_now, Password::generate)
                    .await
                    .expect(&case);
                match p.step {
                    Step::WaitUntil(t) => {
                        tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default()).await;
                        continue;
                    }
                    Step::Nothing => panic!("{case}: finished before the crash"),
                    ref s => assert_eq!(s.name(), step_names[done], "{case}"),
                }
                if crash_now.is_some() {
                    break;
                }
                done += 1;
            }
            let persisted_new = match cluster.state() {
                RotationState::InProgress(r) => Some(r.new_password),
                RotationState::Stable { .. } => None,
            };

            // While the operator is down, pod 1 restarts from what is persisted.
            drop(pod1);
            pod1 = cluster.start_pod("checkout-1", &v1);
            let pods = vec![pod0.endpoint(), pod1.endpoint()];

            // The restarted operator knows only the Secrets.
            let mut restarted = Cluster {
                internal: cluster.internal.clone(),
                connection: Arc::new(std::sync::RwLock::new(cluster.connection())),
                base: cluster.base.clone(),
            };
            let steps = restarted.drive_to_stable(&v2, &pods).await;
            assert_eq!(steps.last(), Some(&"Nothing"), "{case}");

            let new = restarted.connection().password;
            assert_ne!(new, old, "{case}");
            if let Some(persisted_new) = persisted_new {
                assert_eq!(
                    new, persisted_new,
                    "{case}: the persisted new password is the one published"
                );
            }
            assert!(restarted.connection().previous_password.is_none(), "{case}");
            assert_eq!(
                restarted.state(),
                RotationState::Stable {
                    rotation: Some("v2".into())
                },
                "{case}"
            );
            assert_eq!(
                hashes_in_acl(&restarted.users_acl(), APP_USER),
                vec![new.acl_hash()],
                "{case}"
            );
            for pod in &pods {
                assert!(
                    !can_login(pod, APP_USER, &old).await,
                    "{case}: {} refuses the old password",
                    pod.name
                );
                assert!(
                    can_login(pod, APP_USER, &new).await,
                    "{case}: {} accepts the new password",
                    pod.name
                );
            }
        }
    }
}

/// After every persisted step, a pod started fresh from the persisted users.acl accepts exactly the
/// passwords it should, and the live pods accept what the phase promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_restarted_in_any_phase_accepts_exactly_the_right_passwords() {
    let v1 = store("v1", 1);
    let v2 = store("v2", 1);
    let mut cluster = Cluster::create(&v1, Password::generate());
    let old = cluster.connection().password;
    let live_pod = cluster.start_pod("checkout-0", &v1);
    let pods = vec![live_pod.endpoint()];
    let mut seen = Vec::new();
    for _ in 0..20 {
        let p = cluster
            .step(&v2, &pods, None, Password::generate)
            .await
            .expect("step");
        if let Step::WaitUntil(t) = p.step {
            tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default()).await;
            continue;
        }
        if p.step == Step::Nothing {
            break;
        }
        let state = cluster.state();
        let new = match &state {
            RotationState::InProgress(r) => r.new_password.clone(),
            RotationState::Stable { .. } => cluster.connection().password,
        };
        // (old accepted, new accepted) after a restart, and live.
        let (restarted_expect, live_expect) = match &state {
            RotationState::InProgress(r) => match r.stage {
                Stage::NewPasswordPersisted => ((true, true), (true, false)),
                Stage::NewPasswordLive | Stage::Published => ((true, true), (true, true)),
                Stage::OldPasswordRetired => ((false, true), (false, true)),
            },
            RotationState::Stable { .. } => ((false, true), (false, true)),
        };
        let restarted = cluster.start_pod("checkout-restarted", &v1);
        let r = restarted.endpoint();
        let l = &pods[0];
        let restarted_got = (
            can_login(&r, APP_USER, &old).await,
            can_login(&r, APP_USER, &new).await,
        );
        let live_got = (
            can_login(l, APP_USER, &old).await,
            can_login(l, APP_USER, &new).await,
        );
        let phase = auth_status(&state, Utc::now()).phase.unwrap_or_default();
        assert_eq!(
            restarted_got,
            restarted_expect,
            "restarted pod after {} ({phase})",
            p.step.name()
        );
        assert_eq!(
            live_got,
            live_expect,
            "live pod after {} ({phase})",
            p.step.name()
        );
        seen.push(p.step.name());
    }
    assert_eq!(
        seen,
        vec![
            "Begin",
            "AddNewPasswordLive",
            "PublishToConnectionSecret",
            "RetireOldPasswordLive",
            "Finish"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_change_that_misses_a_pod_fails_naming_that_pod_and_no_secret() {
    let v1 = store("v1", 1);
    let cluster = Cluster::create(&v1, Password::generate());
    let server = cluster.start_pod("checkout-0", &v1);
    // Reserved and never bound: nothing answers there for the whole test.
    let dead_lease = support::ports::reserve_port();
    let dead_port = dead_lease.port();
    let dead = PodEndpoint {
        name: "checkout-1".into(),
        addr: redis::ConnectionAddr::Tcp("127.0.0.1".into(), dead_port),
    };
    let new = Password::generate();
    let live = cluster.live_acl();
    let err_add = live
        .add_app_password(&[server.endpoint(), dead.clone()], &new)
        .await
        .expect_err("a pod is down")
        .to_string();
    assert!(
        err_add.contains("checkout-1") && err_add.contains("1 of 2"),
        "{err_add}"
    );
    assert!(
        !err_add.contains("checkout-0"),
        "only failed pods are named: {err_add}"
    );
    // The reachable pod got it; the whole step will be retried (idempotent) until all have it.
    assert!(can_login(&server.endpoint(), APP_USER, &new).await);

    // A wrong operator password: refused, and the message says who failed, not with what.
    let mut wrong = cluster.live_acl();
    wrong.operator_password = Password::generate();
    let err = wrong
        .remove_app_password(&[server.endpoint()], &new)
        .await
        .expect_err("wrong login")
        .to_string();
    assert!(
        err.contains("checkout-0") && err.contains("operator login failed"),
        "{err}"
    );
    assert!(
        can_login(&server.endpoint(), APP_USER, &new).await,
        "nothing removed"
    );

    for e in [&err_add, &err] {
        assert!(!e.contains(new.expose()) && !e.contains(new.acl_hash().trim_start_matches('#')));
    }
}

/// A `MakeWriter` target: every log line at TRACE ends up in one shared buffer.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Issue 5, "No leaks", as far as it goes without the controller: a known old and new password go
/// through `render`, the builders and a whole rotation against real Redis (including a failed live
/// change and a corrupt state) with every log line captured at TRACE; the logs, the status at every
/// phase, every error, the `Debug` of every plan and state, and every non-Secret object contain
/// neither password nor its SHA-256 hex.
#[test]
fn no_password_or_hash_leaks_into_logs_status_errors_or_non_secret_objects() {
    use sessionstore_operator::build::{BuildInput, StoreCredentials, desired_children};
    use sessionstore_operator::render::render;
    use sessionstore_operator::settings::OperatorSettings;

    let old = Password::from_secret_value("OldCanaryPassw0rdThatMustNeverLeak1234567890".into());
    let new = Password::from_secret_value("NewCanaryPassw0rdThatMustNeverLeak1234567890".into());
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();

    let mut haystack: Vec<(String, String)> = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let v1 = store("v1", 1);
            let v2 = store("v2", 1);
            let settings = OperatorSettings::default();

            // render (generated passwords, redacted Secrets) and the builders with the known one.
            let manifest = "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\nmetadata: {name: checkout, namespace: shop}\nspec:\n  profile: development\n  clients: {podSelector: {matchLabels: {app: checkout}}}\n";
            haystack.push(("render".into(), render(manifest, "m.yaml", false, &settings).expect("render")));
            let creds = StoreCredentials {
                app: new.clone(),
                app_previous: Some(old.clone()),
                ..StoreCredentials::generate()
            };
            let children = desired_children(&BuildInput::new(&v2, &creds, &settings));
            let json = |what: &str, v: serde_json::Result<String>| (what.to_string(), v.expect("serialize"));
            haystack.push(json("ConfigMap", serde_json::to_string(&children.config_map)));
            haystack.push(json("Service", serde_json::to_string(&children.service)));
            haystack.push(json("headless Service", serde_json::to_string(&children.headless_service)));
            haystack.push(json("StatefulSet", serde_json::to_string(&children.statefulset)));
            haystack.push(json("NetworkPolicy", serde_json::to_string(&children.network_policy)));
            haystack.push(json("PodDisruptionBudget", serde_json::to_string(&children.pod_disruption_budget)));
            haystack.push(("DesiredChildren Debug".into(), format!("{:?}", creds)));

            // A whole rotation against real Redis, starting from the known old password.
            let mut cluster = Cluster::create(&v1, old.clone());
            let server = cluster.start_pod("checkout-0", &v1);
            let pods = vec![server.endpoint()];
            let mut generated = Some(new.clone());
            for _ in 0..20 {
                let state = cluster.state();
                haystack.push(("state Debug".into(), format!("{state:?}")));
                haystack.push(("status".into(), serde_json::to_string(&auth_status(&state, Utc::now())).expect("status")));
                let p = cluster
                    .step(&v2, &pods, None, || generated.take().expect("one generation"))
                    .await
                    .expect("step");
                haystack.push(("plan Debug".into(), format!("{p:?}")));
                match p.step {
                    Step::Nothing => break,
                    Step::WaitUntil(t) => tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default()).await,
                    _ => {}
                }
            }
            assert_eq!(cluster.connection().password, new, "the known new password was rotated in");
            assert!(!can_login(&pods[0], APP_USER, &old).await);

            // Error paths: Redis's own error echoes the hash of a refused ACL SETUSER argument.
            let live = cluster.live_acl();
            let dead = PodEndpoint {
                name: "checkout-gone".into(),
                addr: redis::ConnectionAddr::Tcp("127.0.0.1".into(), 1),
            };
            let mut wrong = cluster.live_acl();
            wrong.operator_password = old.clone();
            for err in [
                live.add_app_password(&[pods[0].clone(), dead], &new).await.expect_err("dead pod"),
                wrong.add_app_password(&pods, &old).await.expect_err("wrong operator password"),
            ] {
                haystack.push(("error".into(), err.to_string()));
                haystack.push(("error Debug".into(), format!("{err:?}")));
            }
            let mut corrupt = cluster.internal.clone();
            corrupt.insert("rotation-phase".into(), k8s_openapi::ByteString(b"published".to_vec()));
            corrupt.insert("rotation-next-password".into(), k8s_openapi::ByteString(new.expose().as_bytes().to_vec()));
            let err = RotationState::from_secret_data(&corrupt).expect_err("corrupt");
            haystack.push(("corrupt-state error".into(), err.to_string()));
        });
    });
    let logs = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    // The capture works and says what happened, so finding nothing below means something.
    for expected in [
        "rotation plan",
        "checkout-0",
        "user=\"app\"",
        "TRACE",
        "AddNewPasswordLive",
        "Retiring",
    ] {
        assert!(
            logs.contains(expected),
            "captured logs lack {expected:?}:\n{logs}"
        );
    }
    haystack.push(("logs".into(), logs));

    let needles = [
        ("old password", old.expose().to_string()),
        ("new password", new.expose().to_string()),
        (
            "old sha256",
            old.acl_hash().trim_start_matches('#').to_string(),
        ),
        (
            "new sha256",
            new.acl_hash().trim_start_matches('#').to_string(),
        ),
    ];
    let mut occurrences = 0;
    for (what, text) in &haystack {
        for (needle_name, needle) in &needles {
            let n = text.matches(needle.as_str()).count();
            if n > 0 {
                eprintln!("{needle_name} found {n} time(s) in {what}");
            }
            occurrences += n;
        }
    }
    println!(
        "no-leak: {} texts searched ({} bytes), {occurrences} occurrences",
        haystack.len(),
        haystack.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
    assert_eq!(occurrences, 0);
    // The ConfigMap carries no password hash of any kind (users.acl lives in the internal Secret).
    let config_map = &haystack
        .iter()
        .find(|(w, _)| w == "ConfigMap")
        .expect("ConfigMap")
        .1;
    assert!(!has_sha256_hex(config_map), "{config_map}");
}

/// Whether `text` holds 64 consecutive lowercase hex digits (a SHA-256 in the ACL file's form).
fn has_sha256_hex(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            run + 1
        } else {
            0
        };
        if run >= 64 {
            return true;
        }
    }
    false
}

#[test]
fn the_hash_detector_finds_an_acl_hash() {
    let p = Password::from_secret_value("x".into());
    assert!(has_sha256_hex(&format!(
        "user app on {} ~session:*",
        p.acl_hash()
    )));
    assert!(!has_sha256_hex("maxmemory 104857600\nappendonly no\n"));
}
