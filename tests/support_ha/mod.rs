//! Real-process harness for the HA tests and the failover bench: 3 servers started through the
//! generated `startup.sh`, 3 Sentinels with the generated template, on reserved loopback ports (`ports`: held by the cluster for its whole life, so no other test can take one before
//! its server binds it).
//! Pod host names become 127.0.0.1 and ports differ per pod; everything else is the generated text.
//! Every process is SIGKILLed when the cluster is dropped. The engine (Redis, or Valkey with
//! `SESSIONSTORE_TEST_ENGINE=valkey`) is the test run's (`support::engine`): the store declares it,
//! so `startup.sh` runs that engine's binaries as in its image.
//!
//! With `HaCluster::with_container_mounts` each container gets its own credentials directory
//! holding only the internal Secret keys its projected volume in the generated StatefulSet names
//! (`redis`, `sentinel-init`, `sentinel`), which proves those mounts are enough
//! (tests/least_privilege.rs); otherwise every container reads one directory with every key.
#![allow(dead_code)]

pub mod scenario;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use sessionstore_operator::build::acl::{APP_USER, OPERATOR_USER, SENTINEL_USER};
use sessionstore_operator::build::config_map::REDIS_CONF_KEY;
use sessionstore_operator::build::keys::{SENTINEL_CONF_KEY, STARTUP_SCRIPT_KEY};
use sessionstore_operator::build::meta::paths;
use sessionstore_operator::build::sentinel::master_name;
use sessionstore_operator::build::startup::startup_env;
use sessionstore_operator::build::statefulset::{
    REDIS_CONTAINER, SENTINEL_CONTAINER, SENTINEL_INIT_CONTAINER,
};
use sessionstore_operator::build::{
    BuildInput, DesiredChildren, StoreCredentials, desired_children,
};
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::ha::DiscoveryOptions;
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::{SENTINEL_PORT, ValidatedStore, validate};

pub const PODS: usize = 3;

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc(Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// The one allocator and the one engine selection: every crate using this module also declares
// `mod support`.
use crate::support::engine;
pub use crate::support::ports::{PortLease, reserve_port};

/// Fails (never skips) when the engine's binaries are missing: CI installs them.
pub fn require_binaries() {
    engine::require_binaries();
}

pub struct HaCluster {
    pub dir: tempfile::TempDir,
    /// The store's `spec.replicas`, which pods started from now on are configured for.
    pub pods: usize,
    pub store: ValidatedStore,
    pub credentials: StoreCredentials,
    pub redis_ports: Vec<u16>,
    pub sentinel_ports: Vec<u16>,
    redis: Vec<Option<Proc>>,
    sentinels: Vec<Option<Proc>>,
    /// The generated ConfigMap's `redis.conf` and `sentinel.conf` (mount paths not yet mapped).
    redis_conf: String,
    sentinel_template: String,
    /// Each container reads its own credentials directory (see the module documentation).
    container_mounts: bool,
    /// The reservations of `redis_ports` and `sentinel_ports`. Last field: fields drop in order,
    /// so the ports are released only after every process above is killed.
    leases: Vec<PortLease>,
}

impl HaCluster {
    /// Writes the generated secrets, script and templates; starts nothing.
    pub fn new(down_after_ms: i64) -> Self {
        Self::sized(PODS, down_after_ms)
    }

    fn store_for(pods: usize, down_after_ms: i64) -> ValidatedStore {
        let manifest = format!(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
             metadata: {{name: checkout, namespace: shop, uid: u1}}\n\
             spec:\n  clients: {{podSelector: {{matchLabels: {{app: checkout}}}}}}\n  replicas: {pods}\n\
             \x20 persistence: {{mode: none}}\n\
             \x20 sentinel: {{downAfterMilliseconds: {down_after_ms}, failoverTimeoutMilliseconds: 10000}}\n"
        );
        let mut parsed: SessionStore = serde_yaml::from_str(&manifest).expect("manifest parses");
        engine::declare(&mut parsed);
        validate(&parsed).expect("manifest is valid")
    }

    /// `new` with `pods` replicas.
    pub fn sized(pods: usize, down_after_ms: i64) -> Self {
        Self::prepare(pods, down_after_ms, false)
    }

    /// `sized`, each container reading only the keys its projected volume mounts.
    pub fn with_container_mounts(pods: usize, down_after_ms: i64) -> Self {
        Self::prepare(pods, down_after_ms, true)
    }

    fn prepare(pods: usize, down_after_ms: i64, container_mounts: bool) -> Self {
        require_binaries();
        let store = Self::store_for(pods, down_after_ms);
        let credentials = StoreCredentials::generate();
        // Every file comes from the children the operator applies: the ConfigMap's redis.conf,
        // sentinel.conf and startup.sh, and each container's keys of the internal Secret, as its
        // projected volume mounts them.
        let children = desired_children(&BuildInput::new(
            &store,
            &credentials,
            &OperatorSettings::default(),
        ));
        let mounted: Vec<(&str, Vec<MountedFile>)> =
            [REDIS_CONTAINER, SENTINEL_INIT_CONTAINER, SENTINEL_CONTAINER]
                .into_iter()
                .map(|c| (c, mounted_credentials(&children, c)))
                .collect();
        let config = children.config_map.data.unwrap_or_default();
        let config_file = |key: &str| {
            config
                .get(key)
                .cloned()
                .unwrap_or_else(|| panic!("the HA ConfigMap has no {key}"))
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let leases: Vec<PortLease> = (0..2 * pods).map(|_| reserve_port()).collect();
        let cluster = HaCluster {
            pods,
            store,
            credentials,
            redis_ports: leases[..pods].iter().map(PortLease::port).collect(),
            sentinel_ports: leases[pods..].iter().map(PortLease::port).collect(),
            leases,
            redis: (0..pods).map(|_| None).collect(),
            sentinels: (0..pods).map(|_| None).collect(),
            redis_conf: config_file(REDIS_CONF_KEY),
            sentinel_template: config_file(SENTINEL_CONF_KEY),
            dir,
            container_mounts,
        };
        let mounted = if container_mounts {
            mounted
        } else {
            // Every key under its own name, then each container's files under the names it
            // mounts them (Valkey's Sentinel reads `sentinel-users-valkey.acl` as
            // `sentinel-users.acl`).
            let mut every_key: Vec<MountedFile> = children
                .internal_secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            for (_, files) in mounted {
                for (path, value) in files {
                    every_key.retain(|(existing, _)| *existing != path);
                    every_key.push((path, value));
                }
            }
            vec![(REDIS_CONTAINER, every_key)]
        };
        for (container, files) in mounted {
            let secret = cluster.secret_dir(container);
            fs::create_dir_all(&secret).expect("secret dir");
            for (key, value) in files {
                fs::write(secret.join(key), value).expect("internal Secret file");
            }
        }
        fs::write(cluster.script(), config_file(STARTUP_SCRIPT_KEY)).expect("script");
        // The harness sets every variable the StatefulSet gives the script (with loopback values),
        // so a variable added to the product cannot go untested here.
        let local: Vec<String> = cluster.script_env(0).into_iter().map(|(k, _)| k).collect();
        for (name, _) in startup_env(&cluster.store, &OperatorSettings::default()) {
            assert!(local.contains(&name), "the harness does not set {name}");
        }
        for i in 0..pods {
            cluster.create_pod_dirs(i);
        }
        cluster
    }

    fn create_pod_dirs(&self, i: usize) {
        fs::create_dir_all(self.data_dir(i)).expect("data dir");
        fs::create_dir_all(self.run_dir(i)).expect("run dir");
        fs::create_dir_all(self.sentinel_dir(i)).expect("sentinel dir");
    }

    /// Changes `spec.replicas` (same credentials): pods started from now on get the configs the
    /// operator generates for `pods` replicas (peers, Sentinels, quorum); running ones keep theirs,
    /// like pods of a StatefulSet whose template has not rolled yet.
    pub fn rescale(&mut self, pods: usize) {
        let down_after = self.store.sentinel.down_after_milliseconds;
        self.store = Self::store_for(pods, down_after);
        let children = desired_children(&BuildInput::new(
            &self.store,
            &self.credentials,
            &OperatorSettings::default(),
        ));
        let config = children.config_map.data.unwrap_or_default();
        self.redis_conf = config.get(REDIS_CONF_KEY).cloned().expect("redis.conf");
        self.sentinel_template = config
            .get(SENTINEL_CONF_KEY)
            .cloned()
            .expect("sentinel.conf");
        while self.redis_ports.len() < pods {
            let (redis, sentinel) = (reserve_port(), reserve_port());
            self.redis_ports.push(redis.port());
            self.sentinel_ports.push(sentinel.port());
            self.leases.extend([redis, sentinel]);
            self.redis.push(None);
            self.sentinels.push(None);
        }
        self.pods = pods;
        for i in 0..pods {
            self.create_pod_dirs(i);
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    /// The credentials directory of one container (its projected volume).
    pub fn secret_dir(&self, container: &str) -> PathBuf {
        if self.container_mounts {
            self.root().join(format!("{container}-credentials"))
        } else {
            self.root().join("internal")
        }
    }
    fn script(&self) -> PathBuf {
        self.root().join("startup.sh")
    }
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root().join(format!("data-{i}"))
    }
    fn run_dir(&self, i: usize) -> PathBuf {
        self.root().join(format!("run-{i}"))
    }
    fn sentinel_dir(&self, i: usize) -> PathBuf {
        self.root().join(format!("sentinel-{i}"))
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.root().join(format!("{name}.log"))
    }
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.redis_ports[i])
    }
    pub fn master_name(&self) -> String {
        master_name(&self.store)
    }
    /// The Sentinels of the pods the store is configured for now.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinel_ports[..self.pods]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Maps the mount paths of the generated text to this cluster's directories, the credentials
    /// path to `container`'s own.
    fn localize(&self, text: &str, container: &str) -> String {
        text.replace(
            paths::INTERNAL_SECRET_DIR,
            &self.secret_dir(container).display().to_string(),
        )
        .replace(paths::CONFIG_DIR, &self.root().display().to_string())
    }

    /// The generated redis.conf plus the loopback overrides (last value wins), written afresh at
    /// every start like the read-only ConfigMap in a pod.
    fn write_redis_conf(&self, i: usize) -> PathBuf {
        // `dir` takes effect where it is read (Redis chdirs at once), so the pod's data path is
        // replaced in place rather than overridden at the end.
        let data_line = format!("\ndir {}\n", paths::DATA_DIR);
        let generated = self.redis_conf.clone();
        assert!(
            generated.contains(&data_line),
            "redis.conf no longer has {data_line:?}; map its data directory here"
        );
        let generated = generated.replace(
            &data_line,
            &format!("\ndir {}\n", self.data_dir(i).display()),
        );
        let mut conf = self.localize(&generated, REDIS_CONTAINER);
        conf.push_str(&format!(
            "\n# test overrides\nport {}\nbind 127.0.0.1\n\
             save \"\"\nappendonly no\nlogfile \"\"\nrepl-diskless-sync-delay 0\n",
            self.redis_ports[i],
        ));
        let path = self.root().join(format!("redis-{i}.conf"));
        fs::write(&path, conf).expect("redis.conf");
        path
    }

    fn script_env(&self, i: usize) -> Vec<(String, String)> {
        let peers: Vec<String> = (0..self.pods).map(|j| self.addr(j)).collect();
        let template = self.sentinel_dir(i).join("template.conf");
        let mut env = vec![
            ("SS_MASTER_NAME".into(), self.master_name()),
            ("SS_SELF_HOST".into(), "127.0.0.1".into()),
            ("SS_SELF_PORT".into(), self.redis_ports[i].to_string()),
            ("SS_PEERS".into(), peers.join(" ")),
            ("SS_BOOTSTRAP".into(), self.addr(0)),
            ("SS_SENTINELS".into(), self.sentinel_addrs().join(" ")),
            (
                "SS_SENTINEL_PORT".into(),
                self.sentinel_ports[i].to_string(),
            ),
            (
                "SS_SECRET_DIR".into(),
                self.secret_dir(REDIS_CONTAINER).display().to_string(),
            ),
            ("SS_RUN_DIR".into(), self.run_dir(i).display().to_string()),
            ("SS_DATA_DIR".into(), self.data_dir(i).display().to_string()),
            (
                "SS_REDIS_CONF".into(),
                self.root()
                    .join(format!("redis-{i}.conf"))
                    .display()
                    .to_string(),
            ),
            (
                "SS_SENTINEL_TEMPLATE".into(),
                template.display().to_string(),
            ),
            (
                "SS_SENTINEL_CONF".into(),
                self.sentinel_dir(i)
                    .join("sentinel.conf")
                    .display()
                    .to_string(),
            ),
            ("SS_WAIT_SECONDS".into(), "60".into()),
            ("SS_RETRY_SECONDS".into(), "0.2".into()),
            ("SS_CALL_TIMEOUT_SECONDS".into(), "2".into()),
        ];
        // The engine's binaries by name, as in its image (`engine::script_command` puts them on
        // PATH); Redis's are the script's defaults.
        if engine::is_valkey() {
            let e = engine::engine();
            env.push(("SS_SERVER_BIN".into(), e.server_binary().into()));
            env.push(("SS_CLI_BIN".into(), e.cli_binary().into()));
        }
        env
    }

    fn spawn(&self, log: &str, cmd: &mut Command) -> Proc {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(log))
            .expect("log file");
        let err = out.try_clone().expect("log file");
        Proc(cmd.stdout(out).stderr(err).spawn().expect("process starts"))
    }

    /// Starts pod `i`'s Redis the way the container does: `sh startup.sh redis` (which execs the
    /// engine's server).
    pub fn start_redis(&mut self, i: usize) {
        self.write_redis_conf(i);
        let mut cmd = engine::script_command();
        cmd.arg(self.script()).arg("redis").envs(self.script_env(i));
        let proc = self.spawn(&format!("redis-{i}"), &mut cmd);
        self.redis[i] = Some(proc);
    }

    /// SIGKILL, like a node or container crash.
    pub fn kill_redis(&mut self, i: usize) {
        self.redis[i] = None;
    }

    /// The pid of pod `i`'s server (startup.sh execs it), while it runs.
    pub fn redis_pid(&self, i: usize) -> Option<u32> {
        self.redis.get(i)?.as_ref().map(Proc::pid)
    }

    /// The pid of pod `i`'s Sentinel, while it runs.
    pub fn sentinel_pid(&self, i: usize) -> Option<u32> {
        self.sentinels.get(i)?.as_ref().map(Proc::pid)
    }

    /// Stops pod `i`'s Sentinel (SIGKILL).
    pub fn kill_sentinel(&mut self, i: usize) {
        self.sentinels[i] = None;
    }

    /// Empties the data dir, like a pod rescheduled onto a fresh volume.
    pub fn wipe_data(&self, i: usize) {
        let dir = self.data_dir(i);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("data dir");
    }

    /// The Sentinel init step, then the Sentinel itself with the written config.
    pub fn start_sentinel(&mut self, i: usize) {
        let mut template = self.sentinel_template.clone();
        for (from, to) in [
            (
                format!("\nport {SENTINEL_PORT}\n"),
                format!("\nport {}\n", self.sentinel_ports[i]),
            ),
            (
                format!("\ndir {}\n", paths::SENTINEL_DIR),
                format!("\ndir {}\n", self.sentinel_dir(i).display()),
            ),
        ] {
            assert!(
                template.contains(&from),
                "sentinel.conf no longer has {from:?}; map it here"
            );
            template = template.replace(&from, &to);
        }
        let template = self.localize(&template, SENTINEL_CONTAINER);
        fs::write(self.sentinel_dir(i).join("template.conf"), template).expect("template");
        let status = engine::script_command()
            .arg(self.script())
            .arg("sentinel-init")
            .envs(self.script_env(i))
            .env("SS_SECRET_DIR", self.secret_dir(SENTINEL_INIT_CONTAINER))
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log(&format!("sentinel-init-{i}")))
                    .expect("log"),
            )
            .status()
            .expect("sentinel-init runs");
        assert!(
            status.success(),
            "sentinel-init {i} failed; see {}",
            self.log(&format!("sentinel-init-{i}")).display()
        );
        let mut cmd = engine::sentinel_command(&self.sentinel_dir(i).join("sentinel.conf"));
        let proc = self.spawn(&format!("sentinel-{i}"), &mut cmd);
        self.sentinels[i] = Some(proc);
    }

    pub fn sentinel_conf_text(&self, i: usize) -> String {
        fs::read_to_string(self.sentinel_dir(i).join("sentinel.conf")).unwrap_or_default()
    }

    pub fn discovery_options(&self) -> DiscoveryOptions {
        let mut options = DiscoveryOptions::new(OPERATOR_USER, self.credentials.operator.clone());
        options.connect_timeout = Duration::from_millis(300);
        options.response_timeout = Duration::from_millis(300);
        options
    }

    pub async fn connect(
        &self,
        port: u16,
        user: &str,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let password = match user {
            APP_USER => self.credentials.app.expose(),
            OPERATOR_USER => self.credentials.operator.expose(),
            SENTINEL_USER => self.credentials.sentinel.expose(),
            _ => "",
        };
        let info = ConnectionAddr::Tcp("127.0.0.1".into(), port)
            .into_connection_info()?
            .set_redis_settings(
                RedisConnectionInfo::default()
                    .set_username(user)
                    .set_password(password)
                    .set_skip_set_lib_name(),
            );
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(1000)));
        redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// `INFO replication` of pod `i` as the operator user, or `None` if it does not answer.
    pub async fn replication_info(&self, i: usize) -> Option<String> {
        let mut conn = self
            .connect(self.redis_ports[i], OPERATOR_USER)
            .await
            .ok()?;
        redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    }
}

impl Drop for HaCluster {
    /// On a failed test, prints the tail of every process log before the temp dir goes away, so
    /// the failure says why a server or Sentinel did not do what the test waited for.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = fs::read_dir(self.root()) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            eprintln!("--- {} (last {} lines)", log.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// `key:value` from an INFO text.
pub fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
}

/// Polls `check` every 50 ms until it returns `Some` or `limit` passes.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One file of a container's credentials volume: its name (the Secret key) and content.
pub type MountedFile = (String, Vec<u8>);

/// The internal Secret files a container of the generated StatefulSet mounts at
/// `paths::INTERNAL_SECRET_DIR`: the items of its projected volume, with the Secret's values.
pub fn mounted_credentials(children: &DesiredChildren, container: &str) -> Vec<MountedFile> {
    let pod = children
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod template");
    let spec = pod
        .init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .find(|c| c.name == container)
        .unwrap_or_else(|| panic!("no container {container}"));
    let mount = spec
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == paths::INTERNAL_SECRET_DIR)
        .unwrap_or_else(|| panic!("{container} mounts no credentials"));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("no volume {}", mount.name));
    let data = children.internal_secret.data.clone().unwrap_or_default();
    let internal = children.internal_secret.metadata.name.clone();
    let mut files = Vec::new();
    for source in volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.clone())
        .unwrap_or_else(|| panic!("{} is not a projected volume", mount.name))
    {
        let secret = source.secret.expect("a Secret projection");
        assert_eq!(Some(secret.name.clone()), internal);
        for item in secret.items.expect("only listed keys") {
            let value = data
                .get(&item.key)
                .unwrap_or_else(|| panic!("the internal Secret has no {}", item.key));
            files.push((item.path, value.0.clone()));
        }
    }
    files
}
