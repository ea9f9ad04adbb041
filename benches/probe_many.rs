//! Measures the cost of the health probe at scale: starts 100 real `redis-server` processes on
//! loopback, probes all 100 stores at once through the global connection bound, and prints the
//! wall time, the time per store and the PEAK number of simultaneous connections (counted by the
//! probe from connect to close, and cross-checked by sampling the kernel's TCP table and the
//! servers' own `total_connections_received`). Then counts the `status.health` writes an idle
//! store gets over several health intervals (expected: 1). Prints figures; asserts no timings.
//!
//! Run: `cargo bench --bench probe_many` (env `PROBE_STORES`, `PROBE_BOUND` to change 100 / 16).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;
use sessionstore_operator::build::StoreCredentials;
use sessionstore_operator::build::acl::{APP_USER, OPERATOR_USER, users_acl};
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::observe::{
    HealthTracker, PodTarget, ProbeSettings, RedisProbe, StoreTarget, WriteDecision,
    health_conditions,
};
use sessionstore_operator::validate::validate;

const STORE_YAML: &str = r#"
apiVersion: sessionstore.dev/v1alpha1
kind: SessionStore
metadata: {name: bench, namespace: bench}
spec:
  profile: development
  clients: {podSelector: {matchLabels: {app: bench}}}
"#;

struct Servers {
    children: Vec<Child>,
    ports: Vec<u16>,
    credentials: Vec<StoreCredentials>,
    dir: tempfile::TempDir,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are chosen so the ports are distinct.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn start_servers(n: usize) -> Servers {
    let store = validate(&serde_yaml::from_str::<SessionStore>(STORE_YAML).expect("yaml"))
        .expect("valid store");
    let ports = free_ports(n);
    // Built first, so the servers already started are stopped if a later one fails.
    let mut servers = Servers {
        children: Vec::new(),
        ports: ports.clone(),
        credentials: Vec::new(),
        dir: tempfile::tempdir().expect("temp dir"),
    };
    for (i, port) in ports.iter().enumerate() {
        let credentials = StoreCredentials::generate();
        let d = servers.dir.path().join(format!("s{i}"));
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("users.acl"), users_acl(&store, &credentials)).expect("acl");
        std::fs::write(
            d.join("redis.conf"),
            format!(
                "bind 127.0.0.1\nport {port}\nsave \"\"\nappendonly no\ndir {dir}\naclfile {dir}/users.acl\n\
                 maxmemory 32mb\nmaxmemory-policy volatile-lru\nlogfile \"\"\n",
                dir = d.display()
            ),
        )
        .expect("conf");
        let child = Command::new("redis-server")
            .arg(d.join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (install Redis 7)");
        servers.children.push(child);
        servers.credentials.push(credentials);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for port in &servers.ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    servers
}

fn connect(port: u16, user: &str, password: &str) -> redis::Connection {
    let info = redis::ConnectionAddr::Tcp("127.0.0.1".into(), port)
        .into_connection_info()
        .expect("info")
        .set_redis_settings(
            redis::RedisConnectionInfo::default()
                .set_username(user)
                .set_password(password),
        );
    redis::Client::open(info)
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect")
}

/// `total_connections_received` summed over every server, read as the operator user.
fn total_connections_received(servers: &Servers) -> u64 {
    servers
        .ports
        .iter()
        .zip(&servers.credentials)
        .map(|(port, c)| {
            let mut con = connect(*port, OPERATOR_USER, c.operator.expose());
            let info: String = redis::cmd("INFO")
                .arg("stats")
                .query(&mut con)
                .expect("INFO");
            info.lines()
                .find_map(|l| l.strip_prefix("total_connections_received:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .expect("total_connections_received")
        })
        .sum()
}

/// Established client-side sockets to the server ports, from /proc/net/tcp (a sampled lower
/// bound of the true peak; the probe's own counter is exact).
fn established_to(ports: &HashSet<u16>) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields
                .get(2)
                .and_then(|r| r.split(':').nth(1))
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            fields.get(3) == Some(&"01") && remote_port.is_some_and(|p| ports.contains(&p))
        })
        .count()
}

fn targets(servers: &Servers) -> Vec<StoreTarget> {
    servers
        .ports
        .iter()
        .zip(&servers.credentials)
        .enumerate()
        .map(|(i, (port, c))| StoreTarget {
            namespace: "bench".into(),
            name: format!("store-{i}"),
            port: *port,
            pods: vec![PodTarget {
                name: format!("store-{i}-0"),
                ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                ready: true,
            }],
            operator_password: c.operator.clone(),
            tls: None,
        })
        .collect()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let stores = env_usize("PROBE_STORES", 100);
    let bound = env_usize("PROBE_BOUND", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let started = Instant::now();
    let servers = start_servers(stores);
    println!(
        "started {stores} redis-server processes in {:.2?}",
        started.elapsed()
    );

    // A few sessions per store (some without TTL) so INFO keyspace has something to report.
    for (port, c) in servers.ports.iter().zip(&servers.credentials) {
        let mut app = connect(*port, APP_USER, c.app.expose());
        let mut pipe = redis::pipe();
        for k in 0..20 {
            pipe.cmd("SET")
                .arg(format!("session:{k}"))
                .arg("user")
                .arg("EX")
                .arg(600)
                .ignore();
        }
        pipe.cmd("SET").arg("session:forever").arg("user").ignore();
        pipe.exec(&mut app).expect("seed sessions");
    }

    let targets = targets(&servers);
    let ports: HashSet<u16> = servers.ports.iter().copied().collect();
    let probe = RedisProbe::new(ProbeSettings {
        max_connections: bound,
        ..ProbeSettings::default()
    });

    for round in 1..=3 {
        let received_before = total_connections_received(&servers);
        probe.reset_peak();
        let sampling = Arc::new(AtomicBool::new(true));
        let sampled_peak = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (sampling, sampled_peak, ports) =
                (sampling.clone(), sampled_peak.clone(), ports.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::SeqCst) {
                    sampled_peak.fetch_max(established_to(&ports), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(500));
                }
            })
        };
        let t = Instant::now();
        let observations = runtime.block_on(futures::future::join_all(
            targets.iter().map(|s| probe.probe_store(s)),
        ));
        let wall = t.elapsed();
        sampling.store(false, Ordering::SeqCst);
        let _ = sampler.join();
        let received = total_connections_received(&servers) - received_before;
        let ok = observations
            .iter()
            .filter(|o| o.pods.iter().all(|p| p.result.is_ok()))
            .count();
        let keys: i64 = observations
            .iter()
            .filter_map(|o| o.health_status().session_keys)
            .sum();
        println!(
            "round {round}: probed {stores} stores (bound {bound}) in {wall:.2?} = {:.2?} per store; {ok}/{stores} answered; \
             {keys} session keys seen; peak simultaneous connections: {} (probe counter), {} (sampled /proc/net/tcp); \
             connections accepted by the servers during the probe: {} (minus {} for the counting itself)",
            wall / stores as u32,
            probe.peak_connections(),
            sampled_peak.load(Ordering::SeqCst),
            received,
            stores,
        );
    }

    // Status writes for one idle store over several health intervals, with simulated time between
    // real probes (the tracker takes `now` as a parameter).
    let interval = Duration::from_secs(30);
    for (label, busy) in [
        ("idle", false),
        ("busy (one new session per interval)", true),
    ] {
        let mut tracker = HealthTracker::new(interval);
        let mut written_conditions = Vec::new();
        let t0 = Instant::now();
        let mut writes = 0;
        let intervals = 10;
        let mut app = connect(
            servers.ports[0],
            APP_USER,
            servers.credentials[0].app.expose(),
        );
        for i in 0..intervals {
            if busy {
                redis::cmd("SET")
                    .arg(format!("session:busy:{i}"))
                    .arg("user")
                    .arg("EX")
                    .arg(600)
                    .exec(&mut app)
                    .expect("SET");
            }
            let observation = runtime.block_on(probe.probe_store(&targets[0]));
            let report = tracker.assess(&observation);
            let wall = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + 30 * i as i64)
                    .expect("time"),
            );
            let conditions =
                health_conditions(&report.verdict, Some(1), &written_conditions, &wall);
            let now = t0 + interval * i as u32;
            if tracker.decide(&report.health, &conditions, now) == WriteDecision::Write {
                tracker.written(&report.health, &conditions, now);
                written_conditions = conditions.to_vec();
                writes += 1;
            }
        }
        println!(
            "{label} store: {writes} status.health writes over {intervals} probes, one per {interval:?} interval"
        );
    }

    let stopping = Instant::now();
    drop(servers);
    println!(
        "stopped {stores} redis-server processes in {:.2?}",
        stopping.elapsed()
    );
}
