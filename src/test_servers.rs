//! Throw-away plain servers (no config file, no persistence) for the table tests of
//! `redis_commands` and `redis_config`: Debian's installed `redis-server`, and Valkey 8.0.1's
//! `valkey-server` from `VALKEY_BIN_DIR` (default `../shared/bin`, relative to the crate).
//!
//! A missing `redis-server` fails its test (CI installs it). A missing `valkey-server` fails its
//! test in CI (`CI` set) and prints SKIPPED elsewhere (`tests/support/valkey.rs` does the same
//! for the integration tests).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the directory of the Valkey binaries.
pub(crate) const VALKEY_BIN_DIR_ENV: &str = "VALKEY_BIN_DIR";

/// The directory of the Valkey binaries: `VALKEY_BIN_DIR`, else `../shared/bin`; a relative path
/// is taken from the crate's directory.
pub(crate) fn valkey_bin_dir() -> PathBuf {
    let dir = std::env::var_os(VALKEY_BIN_DIR_ENV).unwrap_or_else(|| "../shared/bin".into());
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
}

/// `valkey-server`, or `None` after printing SKIPPED when it is missing outside CI. In CI a
/// missing binary fails the calling test: the Valkey tables would go unchecked.
pub(crate) fn valkey_server() -> Option<PathBuf> {
    let path = valkey_bin_dir().join("valkey-server");
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{} not found: set {VALKEY_BIN_DIR_ENV} to the directory of the Valkey 8.0.1 binaries",
        path.display()
    );
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty()),
        "{why} (CI runs every Valkey test)"
    );
    println!("SKIPPED: {why}");
    None
}

/// A plain server on a free loopback port, killed and reaped on drop.
pub(crate) struct PlainServer {
    child: Child,
    _dir: tempfile::TempDir,
    pub(crate) conn: redis::Connection,
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PlainServer {
    /// Starts `binary` (`redis-server`, or a path to `valkey-server`) and connects to it.
    pub(crate) fn start(binary: &Path) -> PlainServer {
        let name = binary.display().to_string();
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{name}` ({e}): install Redis 7 (Debian: apt-get install redis-server)")
            });
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let conn = loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited with {status}");
            }
            let conn = client
                .get_connection_with_timeout(Duration::from_secs(5))
                .and_then(|mut conn| {
                    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
                    redis::cmd("PING").query::<String>(&mut conn)?;
                    Ok(conn)
                });
            match conn {
                Ok(conn) => break conn,
                Err(e) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name} did not answer in 15 s: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        };
        PlainServer {
            child,
            _dir: dir,
            conn,
        }
    }

    /// The `INFO server` fields (`redis_version`, `server_name`, `valkey_version`, ...).
    pub(crate) fn info_server(&mut self) -> BTreeMap<String, String> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.conn)
            .unwrap();
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// `redis_version` of a Redis server, `valkey_version` of a Valkey one (which reports
    /// `redis_version:7.2.4` for compatibility), with the server's name.
    pub(crate) fn name_and_version(&mut self) -> (String, String) {
        let info = self.info_server();
        match info.get("valkey_version") {
            Some(version) => ("valkey".into(), version.clone()),
            None => (
                "redis".into(),
                info.get("redis_version")
                    .unwrap_or_else(|| panic!("no redis_version in INFO: {info:?}"))
                    .clone(),
            ),
        }
    }
}
