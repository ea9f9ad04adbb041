//! Issue 5's no-leak proof, end to end through the real reconcile (API mocked, Redis pod real):
//! known passwords (the user's `auth.existingSecret`, a pre-existing connection Secret, and every
//! password the operator generated or rotated to), a create, a steady resync, a full rotation and
//! two failing reconciles; every log line at TRACE, every Event, every status patch, every
//! non-Secret object sent, every request URI and every error's Display and Debug is searched for
//! each password, its SHA-256 hex (what `users.acl` holds) and its base64 (what a Secret holds).
//! Expected count: 0. Secrets themselves are the one place the values belong (checked as a
//! positive control, so the search is known to be able to find them).

#[path = "mock/api_double.rs"]
mod api_double;
#[path = "mock/harness.rs"]
mod harness;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_double::{Call, Fault};
use harness::{Harness, SECRETS, secret_json};
use http::Method;
use serde_json::json;
use sessionstore_operator::password::Password;
use sessionstore_operator::reconcile::error_policy;
use support::redis_server::RedisServer;
use tracing_subscriber::fmt::MakeWriter;

const KNOWN_CONNECTION: &str = "Pre-Existing-C0nn-Passw0rd-4b2d";
const KNOWN_USER: &str = "Kn0wn-User-Passw0rd-7f3a9c";
const KNOWN_THIRD: &str = "Th1rd-User-Passw0rd-e81f05";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// Every text a leak could hide in, with where it came from.
#[derive(Default)]
struct Texts {
    items: Vec<(String, String)>,
}

impl Texts {
    fn add(&mut self, origin: impl Into<String>, text: impl Into<String>) {
        self.items.push((origin.into(), text.into()));
    }

    /// Request URIs of every call, and the bodies of every non-Secret call (Events and status
    /// patches counted apart).
    fn add_calls(&mut self, calls: &[Call], counts: &mut [usize; 3]) {
        for call in calls {
            self.add("uri", call.uri.clone());
            let Some(body) = &call.body else { continue };
            if call.path().contains("/secrets") {
                continue;
            }
            let origin = if call.path().ends_with("/events") {
                counts[0] += 1;
                "event"
            } else if call.path().ends_with("/status") {
                counts[1] += 1;
                "status"
            } else {
                counts[2] += 1;
                "object"
            };
            self.add(format!("{origin} {}", call.line()), body.to_string());
        }
    }
}

fn needles(password: &str) -> Vec<String> {
    let p = Password::from_secret_value(password.into());
    let base64 = serde_json::to_value(k8s_openapi::ByteString(password.as_bytes().to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("base64");
    vec![
        password.to_string(),
        p.acl_hash().trim_start_matches('#').to_string(),
        base64,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_hash_appears_outside_the_secrets() {
    let logs = Buffer::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let mut texts = Texts::default();
    let mut counts = [0usize; 3];
    let mut errors = 0usize;
    let spec = json!({
        "profile": "development",
        "clients": {"podSelector": {"matchLabels": {"app": "web"}}},
        "auth": {"existingSecret": "user-pw", "rotationGracePeriodSeconds": 2},
    });
    let created = Harness::new(spec, 1);
    let user_secret = |pw: &str| secret_json("user-pw", "Opaque", &[("password", pw)]);
    created
        .double
        .put(&format!("{SECRETS}/user-pw"), user_secret(KNOWN_CONNECTION));
    // A connection Secret that exists before the store: adopted as it is.
    created.double.put(
        &format!("{SECRETS}/web-connection"),
        secret_json(
            "web-connection",
            "servicebinding.io/redis",
            &[("password", KNOWN_CONNECTION)],
        ),
    );

    // Create, then a steady resync.
    created.reconcile().await.expect("creates");
    created.sync_cache();
    created.reconcile().await.expect("steady");
    let server = RedisServer::start(&created.validated(), &created.stored_credentials());
    let h = created.restarted(server.port());
    h.add_pod("web-0");
    texts.add_calls(&h.double.take_calls(), &mut counts);

    // The user's password changes: a full rotation to it.
    h.double
        .put(&format!("{SECRETS}/user-pw"), user_secret(KNOWN_USER));
    h.reconcile().await.expect("rotation starts");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    h.reconcile().await.expect("rotation finishes");
    h.reconcile().await.expect("steady after the rotation");
    texts.add_calls(&h.double.take_calls(), &mut counts);
    assert_eq!(
        h.secret_data("web-connection", "password").as_deref(),
        Some(KNOWN_USER),
        "positive control: the rotated password is where it belongs"
    );

    // Failures: the API server refuses a read; then a pod is gone mid-rotation.
    let h = h.restarted(server.port());
    h.double.fault(Fault {
        method: Method::GET,
        path_contains: "/secrets/web-connection".into(),
        code: 500,
        times: 1,
    });
    let mut fail = |error: sessionstore_operator::Error, h: &Harness| {
        texts.add("error Display", error.to_string());
        texts.add("error Debug", format!("{error:?}"));
        errors += 1;
        // What the controller logs and counts for it.
        error_policy(h.store(), &error, h.ctx.clone());
    };
    let error = h.reconcile().await.expect_err("500 on read");
    fail(error, &h);
    h.double
        .put(&format!("{SECRETS}/user-pw"), user_secret(KNOWN_THIRD));
    let pods_port_closed = h.restarted(1);
    let error = pods_port_closed
        .reconcile()
        .await
        .expect_err("no pod answers the live change");
    assert!(error.to_string().contains("web-0"), "{error}");
    fail(error, &pods_port_closed);
    texts.add_calls(&pods_port_closed.double.take_calls(), &mut counts);

    // Every password the store ever had, generated ones included.
    let mut passwords = vec![
        KNOWN_CONNECTION.to_string(),
        KNOWN_USER.to_string(),
        KNOWN_THIRD.to_string(),
    ];
    for key in [
        "operator-password",
        "replication-password",
        "sentinel-password",
    ] {
        passwords.push(h.secret_data("web-internal", key).expect(key));
    }
    let acl = h.secret_data("web-internal", "users.acl").expect("acl");
    assert!(
        acl.contains(&needles(KNOWN_THIRD)[1]),
        "positive control: the SHA-256 hex is findable where it belongs"
    );

    let log_text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8 logs");
    let log_lines: Vec<&str> = log_text.lines().collect();
    assert!(
        log_text.contains("rotation step done") && log_text.contains("TRACE"),
        "positive control: the capture sees the reconcile at TRACE"
    );
    for line in &log_lines {
        texts.add("log", *line);
    }

    let mut found = Vec::new();
    for password in &passwords {
        for needle in needles(password) {
            for (origin, text) in &texts.items {
                if text.contains(&needle) {
                    found.push(format!("{origin}: {text}"));
                }
            }
        }
    }
    let bytes: usize = texts.items.iter().map(|(_, t)| t.len()).sum();
    println!(
        "no-leak: {} texts searched ({} bytes): {} log lines, {} Events, {} status patches, \
         {} other objects, {} errors x2, {} URIs; {} passwords x 3 forms; leaks found: {}",
        texts.items.len(),
        bytes,
        log_lines.len(),
        counts[0],
        counts[1],
        counts[2],
        errors,
        texts.items.iter().filter(|(o, _)| o == "uri").count(),
        passwords.len(),
        found.len()
    );
    assert!(counts[0] >= 4 && counts[1] >= 3 && log_lines.len() > 50);
    assert_eq!(found, Vec::<String>::new());
}
