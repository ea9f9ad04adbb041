//! A real server running the operator's generated `redis.conf`, ACL file and replication
//! credentials, on a reserved loopback port (`super::ports`), so tests prove the hardening against
//! the server itself: the store's engine's (`redis-server`, or Valkey 8.0.1's `valkey-server` for
//! a store with `engine: valkey`, as every store of a `SESSIONSTORE_TEST_ENGINE=valkey` run is:
//! `super::engine`), with the same files.
//!
//! The files come from `desired_children`, exactly as the pods would mount them; only the mount
//! paths (`paths::*`), the port and the bind address are rewritten (to a temp dir, a reserved port and
//! 127.0.0.1). The process is killed and reaped on drop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};
use sessionstore_operator::build::meta::paths;
use sessionstore_operator::build::{BuildInput, StoreCredentials, desired_children};
use sessionstore_operator::crd::Engine;
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::ValidatedStore;

use super::engine;
use super::ports::{PortLease, reserve_port};
use super::tls::TestPki;

/// How long a server may take to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Connect, read and write timeout of every test client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS files a server mounts (the `paths::TLS_DIR` files) and the CA clients trust by default.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca_crt: Vec<u8>,
    pub tls_crt: Vec<u8>,
    pub tls_key: Vec<u8>,
}

impl From<&TestPki> for TlsFiles {
    fn from(pki: &TestPki) -> Self {
        TlsFiles {
            ca_crt: pki.ca_crt.clone(),
            tls_crt: pki.tls_crt.clone(),
            tls_key: pki.tls_key.clone(),
        }
    }
}

pub struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// Keeps `port` reserved for this server's whole life (taken out only by `stop`).
    lease: Option<PortLease>,
    tls: Option<TlsFiles>,
    /// The store's engine: which server this is.
    pub engine: Engine,
    /// The `redis.conf` Redis actually read (after the path, port and bind rewrite).
    pub redis_conf: String,
}

impl RedisServer {
    /// Starts a plaintext store (panics for a TLS store: use `start_tls`).
    pub fn start(store: &ValidatedStore, credentials: &StoreCredentials) -> RedisServer {
        assert!(
            store.tls.is_none(),
            "store has TLS enabled: use RedisServer::start_tls"
        );
        Self::launch(store, credentials, None, None)
    }

    /// Starts a TLS store with the given certificates mounted at `paths::TLS_DIR`.
    pub fn start_tls(
        store: &ValidatedStore,
        credentials: &StoreCredentials,
        tls: &TestPki,
    ) -> RedisServer {
        assert!(
            store.tls.is_some(),
            "store has TLS disabled: use RedisServer::start"
        );
        Self::launch(store, credentials, Some(TlsFiles::from(tls)), None)
    }

    /// Starts a replica of `primary` with the same generated files plus `replicaof`: it
    /// authenticates to the primary with the replication user from the internal Secret.
    pub fn start_replica_of(
        primary: &RedisServer,
        store: &ValidatedStore,
        credentials: &StoreCredentials,
    ) -> RedisServer {
        Self::launch(store, credentials, primary.tls.clone(), Some(primary.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server and keeps its port reserved, for tests that need that port to stay closed
    /// (a stopped pod): dropping the server would let another test take the port.
    pub fn stop(mut self) -> PortLease {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lease
            .take()
            .expect("a running server holds its port lease")
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The server's log so far (stdout and stderr), for assertion messages.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// A client for this server (TLS trusting the test CA when the server uses TLS).
    pub fn client(&self, auth: Option<(&str, &str)>) -> Client {
        let ca = self.tls.as_ref().map(|t| t.ca_crt.as_slice());
        self.client_with(self.tls.is_some(), ca, auth)
    }

    /// A client with an explicit transport: `tls` on or off and the CA it trusts.
    pub fn client_with(
        &self,
        tls: bool,
        trusted_ca: Option<&[u8]>,
        auth: Option<(&str, &str)>,
    ) -> Client {
        let mut redis = RedisConnectionInfo::default();
        if let Some((user, password)) = auth {
            redis = redis.set_username(user).set_password(password);
        }
        if tls {
            let addr = ConnectionAddr::TcpTls {
                host: "127.0.0.1".into(),
                port: self.port,
                insecure: false,
                tls_params: None,
            };
            let info = addr
                .into_connection_info()
                .expect("connection info")
                .set_redis_settings(redis);
            Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(
                        trusted_ca
                            .expect("a TLS client needs a CA to trust")
                            .to_vec(),
                    ),
                },
            )
            .expect("TLS client")
        } else {
            let info = ConnectionAddr::Tcp("127.0.0.1".into(), self.port)
                .into_connection_info()
                .expect("connection info")
                .set_redis_settings(redis);
            Client::open(info).expect("client")
        }
    }

    /// Connects and authenticates as `user` (bounded by timeouts).
    pub fn connect(&self, user: &str, password: &str) -> redis::RedisResult<redis::Connection> {
        connect(&self.client(Some((user, password))))
    }

    /// The server's own version, read as the operator user from `INFO server`
    /// (`engine::version_in_info`: Valkey's `valkey_version`, Redis's `redis_version`).
    pub fn own_version(&self, credentials: &StoreCredentials) -> String {
        use sessionstore_operator::build::acl::OPERATOR_USER;
        let mut connection = self
            .connect(OPERATOR_USER, credentials.operator.expose())
            .expect("the operator user connects");
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut connection)
            .expect("INFO server");
        engine::version_in_info(self.engine, &info)
            .unwrap_or_else(|| panic!("no {} version in INFO server:\n{info}", self.engine))
    }

    /// Connects without credentials.
    pub fn connect_anonymous(&self) -> redis::RedisResult<redis::Connection> {
        connect(&self.client(None))
    }

    fn launch(
        store: &ValidatedStore,
        credentials: &StoreCredentials,
        tls: Option<TlsFiles>,
        replica_of: Option<u16>,
    ) -> RedisServer {
        let children = desired_children(&BuildInput::new(
            store,
            credentials,
            &OperatorSettings::default(),
        ));
        let config = children
            .config_map
            .data
            .as_ref()
            .and_then(|d| d.get("redis.conf"))
            .expect("the ConfigMap has redis.conf")
            .clone();
        let internal = children.internal_secret.data.clone().unwrap_or_default();

        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let d = dir.path();
        for sub in ["conf", "internal", "tls", "data"] {
            std::fs::create_dir(d.join(sub)).expect("create dir");
        }
        for (key, value) in &internal {
            std::fs::write(d.join("internal").join(key), &value.0)
                .expect("write internal Secret file");
        }
        if let Some(t) = &tls {
            std::fs::write(d.join("tls/ca.crt"), &t.ca_crt).expect("write ca.crt");
            std::fs::write(d.join("tls/tls.crt"), &t.tls_crt).expect("write tls.crt");
            std::fs::write(d.join("tls/tls.key"), &t.tls_key).expect("write tls.key");
        }
        let lease = reserve_port();
        let port = lease.port();
        let mut conf = rewrite_for_test(&config, d, port, tls.is_some());
        if let Some(primary) = replica_of {
            conf.push_str(&format!("replicaof 127.0.0.1 {primary}\n"));
        }
        let conf_path = d.join("conf/redis.conf");
        std::fs::write(&conf_path, &conf).expect("write redis.conf");
        let log = std::fs::File::create(d.join("redis.log")).expect("create log");
        let child = engine::server_command_for(store.engine)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): install Redis 7 (Debian: apt-get install \
                     redis-server), or for Valkey set VALKEY_BIN_DIR",
                    engine::server_program_for(store.engine).display()
                )
            });
        let mut server = RedisServer {
            child,
            dir,
            port,
            lease: Some(lease),
            tls,
            engine: store.engine,
            redis_conf: conf,
        };
        if let Err(log) = server.wait_until_answering() {
            panic!(
                "{} did not start with the generated config:\n{log}\n--- redis.conf ---\n{}",
                store.engine, server.redis_conf
            );
        }
        server
    }

    /// Waits until the server replies to a command (any reply, NOAUTH included); `Err(log)` if
    /// the process exited.
    fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = self.client(None);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited with {status}:\n{}",
                    self.engine,
                    self.log()
                ));
            }
            let reply =
                connect(&client).and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match reply {
                Ok(_) => return Ok(()),
                // A server-side error (NOAUTH) is an answer; LOADING and I/O errors are not yet.
                Err(e)
                    if !e.is_io_error()
                        && !e.is_connection_refusal()
                        && e.code() != Some("LOADING") =>
                {
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    panic!(
                        "{} did not answer within {START_TIMEOUT:?}: {e}\n{}",
                        self.engine,
                        self.log()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects with bounded connect, read and write timeouts.
pub fn connect(client: &Client) -> redis::RedisResult<redis::Connection> {
    let connection = client.get_connection_with_timeout(CLIENT_TIMEOUT)?;
    connection.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    connection.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(connection)
}

fn read_log(dir: &Path) -> String {
    let mut log = String::new();
    if let Ok(mut f) = std::fs::File::open(dir.join("redis.log")) {
        let _ = f.read_to_string(&mut log);
    }
    log
}

/// Maps the pod's mount paths into `dir`, the listening port to `port` and `bind` to loopback.
/// Panics if the generated config lacks a line it expects, so a change to `redis.conf` that the
/// harness does not understand fails loudly instead of testing something else.
fn rewrite_for_test(config: &str, dir: &Path, port: u16, tls: bool) -> String {
    let mapped = |value: &str| -> String {
        for (from, to) in [
            (paths::INTERNAL_SECRET_DIR, "internal"),
            (paths::TLS_DIR, "tls"),
            (paths::CONFIG_DIR, "conf"),
            (paths::DATA_DIR, "data"),
        ] {
            if let Some(rest) = value.strip_prefix(from) {
                return format!("{}{rest}", dir.join(to).display());
            }
        }
        value.to_string()
    };
    let (mut binds, mut ports) = (0, 0);
    let mut out = String::new();
    for line in config.lines() {
        let (directive, value) = line.split_once(' ').unwrap_or((line, ""));
        let rewritten = match directive {
            "bind" => {
                binds += 1;
                "bind 127.0.0.1".to_string()
            }
            "port" if !tls => {
                ports += 1;
                format!("port {port}")
            }
            "tls-port" if tls => {
                ports += 1;
                format!("tls-port {port}")
            }
            "aclfile" | "include" | "dir" | "tls-cert-file" | "tls-key-file"
            | "tls-ca-cert-file" => {
                format!("{directive} {}", mapped(value))
            }
            _ => line.to_string(),
        };
        for path in [
            paths::INTERNAL_SECRET_DIR,
            paths::TLS_DIR,
            paths::CONFIG_DIR,
        ] {
            assert!(
                !rewritten.contains(path),
                "the harness does not map {path} in `{line}`"
            );
        }
        out.push_str(&rewritten);
        out.push('\n');
    }
    assert_eq!(
        binds, 1,
        "expected one `bind` line in redis.conf:\n{config}"
    );
    assert_eq!(
        ports, 1,
        "expected one listening port line in redis.conf:\n{config}"
    );
    out
}

/// Where the data directory of a server is (RDB/AOF files), for persistence checks.
pub fn data_dir(server: &RedisServer) -> PathBuf {
    server.dir.path().join("data")
}
