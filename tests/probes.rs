//! The StatefulSet's exec probes run against a real server on loopback (the test engine's, see
//! `support::engine`: Debian's `redis-server`, or `valkey-server` with the probes then calling
//! `valkey-cli` as in a Valkey pod): readiness needs the probe user's password from the mounted
//! file (the user has the operator's real `PROBE_RULES`: PING only) and refuses a server that is
//! still `LOADING` its dataset, while liveness and startup accept it. Fails (not skips) without
//! the server.

mod fixtures;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use sessionstore_operator::build::acl::{PROBE_RULES, PROBE_USER};
use sessionstore_operator::build::keys::PROBE_PASSWORD_KEY;
use sessionstore_operator::build::meta::paths;
use sessionstore_operator::build::statefulset::redis_cli_check_script;
use sessionstore_operator::password::Password;
use sessionstore_operator::validate::REDIS_PORT;
use support::tls::TestPki;

const ADMIN_PASSWORD: &str = "test-admin-password";

/// A server child, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, port: u16, extra: &[&str]) -> Server {
    let child = support::engine::server_command()
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--aclfile")
        .arg(dir.join("users.acl"))
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(["--enable-debug-command", "local"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} must be installed (apt-get install redis-server; Valkey: VALKEY_BIN_DIR): {e}",
                support::engine::server_program().display()
            )
        });
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn admin(port: u16, args: &[&str]) -> String {
    let output = support::engine::cli_command()
        .args([
            "--user",
            "admin",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .env("REDISCLI_AUTH", ADMIN_PASSWORD)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The probe script as the pod runs it, with the Secret directory and port mapped to the test's.
fn probe(dir: &Path, port: u16, accept_loading: bool) -> Output {
    probe_store("  profile: development\n", dir, port, accept_loading)
}

fn probe_store(spec: &str, dir: &Path, port: u16, accept_loading: bool) -> Output {
    let store = support::validated(&fixtures::manifest(spec));
    let script = redis_cli_check_script(&store, accept_loading)
        .replace(paths::INTERNAL_SECRET_DIR, dir.to_str().unwrap())
        .replace(paths::TLS_DIR, dir.to_str().unwrap())
        .replace(&format!("-p {REDIS_PORT}"), &format!("-p {port}"));
    support::engine::script_command()
        .args(["-c", &script])
        .output()
        .unwrap()
}

fn setup(probe_pw: &Password) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::fs::write(
        path.join("users.acl"),
        format!(
            "user default off\nuser {PROBE_USER} on {} {PROBE_RULES}\nuser admin on {} ~* +@all\n",
            probe_pw.acl_hash(),
            Password::from_secret_value(ADMIN_PASSWORD.into()).acl_hash()
        ),
    )
    .unwrap();
    std::fs::write(path.join(PROBE_PASSWORD_KEY), probe_pw.expose()).unwrap();
    (dir, path)
}

#[test]
fn readiness_passes_only_with_the_probe_password() {
    let probe_pw = Password::generate();
    let (_dir, path) = setup(&probe_pw);
    let lease = support::ports::reserve_port();
    let port = lease.port();
    let _server = start(&path, port, &[]);

    for accept_loading in [false, true] {
        let out = probe(&path, port, accept_loading);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    std::fs::write(path.join(PROBE_PASSWORD_KEY), "wrong").unwrap();
    for accept_loading in [false, true] {
        let out = probe(&path, port, accept_loading);
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("NOAUTH") || said.contains("WRONGPASS"),
            "{said}"
        );
        assert!(!said.contains(probe_pw.expose()));
    }

    std::fs::remove_file(path.join(PROBE_PASSWORD_KEY)).unwrap();
    assert!(
        !probe(&path, port, false).status.success(),
        "a missing password file must fail"
    );
}

#[test]
fn readiness_refuses_a_loading_server_that_liveness_accepts() {
    let probe_pw = Password::generate();
    let (_dir, path) = setup(&probe_pw);
    let lease = support::ports::reserve_port();
    let port = lease.port();
    {
        let _server = start(&path, port, &[]);
        assert_eq!(
            admin(port, &["DEBUG", "POPULATE", "40000", "session:", "64"]),
            "OK"
        );
        assert_eq!(admin(port, &["SAVE"]), "OK");
    }
    // Restart on the dump with a per-key delay (a hidden Redis test setting), answering clients
    // between chunks: the server stays LOADING for seconds.
    let lease = support::ports::reserve_port();
    let port = lease.port();
    let _server = start(
        &path,
        port,
        &[
            "--key-load-delay",
            "20",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_loading = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "loading never finished (seen LOADING: {seen_loading})"
        );
        let ready = probe(&path, port, false);
        let alive = probe(&path, port, true);
        let said = String::from_utf8_lossy(&ready.stdout).to_string();
        if said.contains("LOADING") {
            seen_loading = true;
            assert!(!ready.status.success(), "readiness passed while LOADING");
            assert!(
                alive.status.success(),
                "liveness failed while LOADING: {}",
                String::from_utf8_lossy(&alive.stdout)
            );
        } else if ready.status.success() {
            break;
        } else {
            panic!("unexpected readiness failure: {said}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_loading,
        "the server finished loading before any probe ran; raise the key count"
    );
    assert!(probe(&path, port, true).status.success());
}

/// Writes a CA and a certificate for the Service names only (no `localhost`, no `127.0.0.1`), like
/// a real store's, with both server and client usage since Redis asks clients for one by default.
fn make_certificates(dir: &Path) {
    let pki = TestPki::generate_for(
        "DNS:checkout.shop.svc,DNS:*.checkout-headless.shop.svc.cluster.local",
    );
    for (name, pem) in [
        ("ca.crt", &pki.ca_crt),
        ("tls.crt", &pki.tls_crt),
        ("tls.key", &pki.tls_key),
    ] {
        std::fs::write(dir.join(name), pem).expect("write a PKI file");
    }
}

#[test]
fn tls_probe_works_against_a_tls_only_server_that_requires_client_certificates() {
    let probe_pw = Password::generate();
    let (_dir, path) = setup(&probe_pw);
    make_certificates(&path);
    let lease = support::ports::reserve_port();
    let port = lease.port();
    let file = |name: &str| path.join(name).to_str().unwrap().to_string();
    let _server = start_tls(&path, port, &file);
    let tls_spec = "  profile: development\n  tls: {enabled: true, secretName: checkout-tls}\n";
    for accept_loading in [false, true] {
        let out = probe_store(tls_spec, &path, port, accept_loading);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The plaintext probe cannot talk to the TLS port: the TLS flags are what makes it work.
    assert!(!probe(&path, port, false).status.success());
}

fn start_tls(dir: &Path, port: u16, file: &dyn Fn(&str) -> String) -> Server {
    let child = support::engine::server_command()
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args([
            "--tls-cert-file",
            &file("tls.crt"),
            "--tls-key-file",
            &file("tls.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &file("ca.crt"),
            "--tls-auth-clients",
            "yes",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--aclfile")
        .arg(dir.join("users.acl"))
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("the server must be installed: {e}"));
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}
