//! Primary discovery over TLS against real Sentinel processes (the test engine's: `support::engine`):
//! a TLS store's Sentinels listen on TLS only, and the operator must trust exactly the store's CA.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sessionstore_operator::ha::{DiscoveryOptions, discover_primary};
use sessionstore_operator::password::Password;
use support::ports::{PortLease, reserve_port};
use support::tls::TestPki;

const MASTER: &str = "checkout";
const OPERATOR_PASSWORD: &str = "operator-password-for-the-tls-sentinel-test";

/// A Sentinel process killed and reaped on drop.
struct Sentinel {
    child: Child,
    port: u16,
    /// Keeps `port` reserved while the Sentinel lives (dropped after the kill in `drop`).
    _lease: PortLease,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a TLS-only Sentinel monitoring a primary at 127.0.0.1:`primary_port` (which need not
/// be up: a Sentinel names its configured primary until a failover).
fn start_sentinel(dir: &Path, index: usize, primary_port: u16) -> Sentinel {
    let lease = reserve_port();
    let port = lease.port();
    let conf = format!(
        "port 0\n\
         tls-port {port}\n\
         bind 127.0.0.1\n\
         tls-cert-file {dir}/tls.crt\n\
         tls-key-file {dir}/tls.key\n\
         tls-ca-cert-file {dir}/ca.crt\n\
         tls-auth-clients no\n\
         tls-replication yes\n\
         dir {dir}\n\
         logfile {dir}/sentinel-{index}.log\n\
         user default off\n\
         user operator on >{OPERATOR_PASSWORD} +@all\n\
         sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n",
        dir = dir.display()
    );
    let path = dir.join(format!("sentinel-{index}.conf"));
    std::fs::write(&path, conf).expect("write sentinel.conf");
    let child = support::engine::sentinel_command(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the Sentinel could not start ({e}); install redis-sentinel, or set VALKEY_BIN_DIR"
            )
        });
    Sentinel {
        child,
        port,
        _lease: lease,
    }
}

fn options(ca: &[u8]) -> DiscoveryOptions {
    let mut options = DiscoveryOptions::new(
        "operator",
        Password::from_secret_value(OPERATOR_PASSWORD.into()),
    );
    options.tls = Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    });
    options
}

#[tokio::test]
async fn discovery_over_tls_trusts_only_the_store_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate();
    for (name, bytes) in [
        ("ca.crt", &pki.ca_crt),
        ("tls.crt", &pki.tls_crt),
        ("tls.key", &pki.tls_key),
    ] {
        std::fs::write(dir.path().join(name), bytes).expect("write pki file");
    }
    // Reserved, never bound: the Sentinels name it without reaching it.
    let primary_lease = reserve_port();
    let primary_port = primary_lease.port();
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|i| start_sentinel(dir.path(), i, primary_port))
        .collect();
    let addresses: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();

    // Bounded wait for the three Sentinels to listen and answer.
    let deadline = Instant::now() + Duration::from_secs(15);
    let answer = loop {
        let result = discover_primary(&addresses, MASTER, &options(&pki.ca_crt)).await;
        match result {
            Ok(answer) if answer.agreeing == 3 => break answer,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the three TLS Sentinels never all answered: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        (answer.host.as_str(), answer.port),
        ("127.0.0.1", primary_port)
    );
    assert_eq!((answer.agreeing, answer.asked), (3, 3));

    // A client trusting another CA must not get an answer from these Sentinels.
    let wrong = discover_primary(&addresses, MASTER, &options(&pki.wrong_ca_crt)).await;
    assert!(wrong.is_err(), "a wrong CA was accepted: {wrong:?}");

    // Nor may a plaintext client: the Sentinels listen on TLS only.
    let plain = DiscoveryOptions::new(
        "operator",
        Password::from_secret_value(OPERATOR_PASSWORD.into()),
    );
    assert!(discover_primary(&addresses, MASTER, &plain).await.is_err());
}
