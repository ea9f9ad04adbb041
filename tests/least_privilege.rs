//! Least privilege inside the pod and on the wire (issue 13), proven on the rendered objects and on
//! real `redis-server` / `redis-sentinel` 7.0 processes: each reproduction of the review is repeated
//! and refused.
//!
//! - Each container mounts only the internal Secret keys it reads: the exporter, Sentinel and its
//!   init container never get the operator or replication password, nor does the probe.
//! - An HA store (3 redis-server through `startup.sh`, 3 redis-sentinel) runs on those mounts alone
//!   (`HaCluster::with_container_mounts`: each container only its projected volume's files), and none of the values
//!   the exporter or Sentinel containers hold logs in as `operator` or `replication`.
//! - The exporter user is refused `SLOWLOG GET` (which shows `SET session:<id> <value>`), the app
//!   user `SELECT`, `CLIENT TRACKING` (any `BCAST PREFIX`) and `RANDOMKEY`, and the probe user
//!   everything but `PING`.
//! - DNS egress goes to the cluster DNS pods only.

mod support;
mod support_ha;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use redis::{Connection, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value};
use sessionstore_operator::build::acl::{
    EXPORTER_USER, OPERATOR_USER, PROBE_USER, REPLICATION_USER, SENTINEL_USER,
};
use sessionstore_operator::build::meta::paths;
use sessionstore_operator::build::statefulset::{
    EXPORTER_CONTAINER, REDIS_CONTAINER, SENTINEL_CONTAINER, SENTINEL_INIT_CONTAINER,
};
use sessionstore_operator::build::{
    BuildInput, DesiredChildren, StoreCredentials, desired_children,
};
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::{ValidatedStore, validate};
use support_ha::scenario::start_cluster_with_container_mounts;
use support_ha::{HaCluster, mounted_credentials};

fn store(spec: &str) -> ValidatedStore {
    let yaml = format!(
        "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
         metadata: {{name: checkout, namespace: shop, uid: u1}}\n\
         spec:\n  clients: {{podSelector: {{matchLabels: {{app: checkout}}}}}}\n{spec}"
    );
    let mut parsed: SessionStore = serde_yaml::from_str(&yaml).expect("manifest parses");
    support::engine::declare(&mut parsed);
    validate(&parsed).expect("manifest is valid")
}

/// The containers of the rendered pod, init containers first.
fn container_names(children: &DesiredChildren) -> Vec<String> {
    let pod = children
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod template");
    pod.init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .map(|c| c.name.clone())
        .collect()
}

fn keys(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(k, _)| k.as_str()).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn each_container_mounts_only_the_keys_it_reads() {
    let credentials = StoreCredentials::generate();
    let shapes = [
        (
            "development+exporter",
            "  profile: development\n  monitoring: {exporter: true}\n",
        ),
        (
            "production+tls+exporter",
            "  profile: production\n  tls: {enabled: true, secretName: t}\n  monitoring: {exporter: true}\n",
        ),
    ];
    for (shape, spec) in shapes {
        let store = store(spec);
        let children = desired_children(&BuildInput::new(
            &store,
            &credentials,
            &OperatorSettings::default(),
        ));
        let mut seen = BTreeMap::new();
        for container in container_names(&children) {
            let files = mounted_credentials(&children, &container);
            // The operator's password reaches no container at all; the replication password
            // only Redis's `replication.conf` (its `masterauth`), which Redis itself must read.
            for (key, value) in &files {
                assert!(
                    !contains(value, credentials.operator.expose()),
                    "{shape}: {container} gets the operator password in {key}"
                );
                let replication_allowed = container == REDIS_CONTAINER && key == "replication.conf";
                assert!(
                    replication_allowed || !contains(value, credentials.replication.expose()),
                    "{shape}: {container} gets the replication password in {key}"
                );
                let probe_allowed = container == REDIS_CONTAINER && key == "probe-password";
                assert!(
                    probe_allowed || !contains(value, credentials.probe.expose()),
                    "{shape}: {container} gets the probe password in {key}"
                );
            }
            seen.insert(
                container.clone(),
                keys(&files)
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            );
        }
        let expected: BTreeMap<String, Vec<String>> = match shape {
            "development+exporter" => [
                (
                    REDIS_CONTAINER,
                    &["users.acl", "replication.conf", "probe-password"][..],
                ),
                (EXPORTER_CONTAINER, &["exporter-password.json"][..]),
            ]
            .into_iter()
            .map(|(c, k)| (c.to_string(), k.iter().map(|s| s.to_string()).collect()))
            .collect(),
            _ => [
                (SENTINEL_INIT_CONTAINER, &["sentinel-password"][..]),
                (
                    REDIS_CONTAINER,
                    &[
                        "users.acl",
                        "replication.conf",
                        "probe-password",
                        "sentinel-password",
                    ][..],
                ),
                (SENTINEL_CONTAINER, &["sentinel-users.acl"][..]),
                (EXPORTER_CONTAINER, &["exporter-password.json"][..]),
            ]
            .into_iter()
            .map(|(c, k)| (c.to_string(), k.iter().map(|s| s.to_string()).collect()))
            .collect(),
        };
        assert_eq!(seen, expected, "{shape}");
        // The probes read the probe password and no other file of the Secret.
        let pod = children
            .statefulset
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .clone()
            .unwrap();
        let redis = pod
            .containers
            .iter()
            .find(|c| c.name == REDIS_CONTAINER)
            .unwrap();
        for probe in [
            &redis.readiness_probe,
            &redis.liveness_probe,
            &redis.startup_probe,
        ] {
            let script = probe
                .as_ref()
                .unwrap()
                .exec
                .as_ref()
                .unwrap()
                .command
                .clone()
                .unwrap()
                .join(" ");
            let read: Vec<&str> = script
                .match_indices(&format!("{}/", paths::INTERNAL_SECRET_DIR))
                .map(|(i, m)| {
                    let rest = &script[i + m.len()..];
                    &rest[..rest.find([')', ' ', '"']).unwrap_or(rest.len())]
                })
                .collect();
            assert_eq!(read, ["probe-password"], "{shape}: {script}");
            assert!(
                script.contains(&format!("--user {PROBE_USER} ")),
                "{script}"
            );
        }
    }
}

#[test]
fn dns_egress_goes_to_the_cluster_dns_pods_only() {
    for spec in ["  profile: development\n", "  profile: production\n"] {
        let store = store(spec);
        let policy = desired_children(&BuildInput::new(
            &store,
            &StoreCredentials::generate(),
            &OperatorSettings::default(),
        ))
        .network_policy;
        let egress = policy.spec.unwrap().egress.unwrap();
        let dns: Vec<_> = egress
            .iter()
            .filter(|r| {
                r.ports
                    .iter()
                    .flatten()
                    .any(|p| p.port == Some(IntOrString::Int(53)))
            })
            .collect();
        assert_eq!(dns.len(), 1, "{spec}");
        assert_eq!(
            serde_json::to_value(&dns[0].to).unwrap(),
            serde_json::json!([{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
            }]),
            "{spec}"
        );
        // No egress rule is open to every destination.
        assert!(
            egress
                .iter()
                .all(|r| r.to.as_ref().is_some_and(|t| !t.is_empty()))
        );
    }
}

/// A blocking connection to a pod of the cluster as `user` (no `CLIENT SETINFO`).
fn connect(port: u16, user: &str, password: &str) -> redis::RedisResult<Connection> {
    let info = ConnectionAddr::Tcp("127.0.0.1".into(), port)
        .into_connection_info()?
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_username(user)
                .set_password(password)
                .set_skip_set_lib_name(),
        );
    let conn = redis::Client::open(info)?.get_connection_with_timeout(Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

fn run(conn: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(conn)
}

fn assert_noperm(conn: &mut Connection, who: &str, args: &[&str]) {
    match run(conn, args) {
        Ok(v) => panic!("{who} was allowed to run {args:?}: {v:?}"),
        Err(e) => assert_eq!(
            e.code(),
            Some("NOPERM"),
            "{who} running {args:?}: expected NOPERM, got {e}"
        ),
    }
}

/// Every string a container's files hold that could be a password: each file whole, each line,
/// each word, and each string value of a JSON file (the exporter's password file).
fn candidate_passwords(files: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (_, value) in files {
        let text = String::from_utf8_lossy(value).to_string();
        out.push(text.trim().to_string());
        for line in text.lines() {
            out.push(line.trim().to_string());
            out.extend(
                line.split_whitespace()
                    .map(|w| w.trim_matches('"').to_string()),
            );
        }
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) {
            out.extend(map.values().filter_map(|v| v.as_str().map(String::from)));
        }
    }
    out.retain(|s| !s.is_empty());
    out.sort();
    out.dedup();
    out
}

fn file(files: &[(String, Vec<u8>)], key: &str) -> String {
    let value = &files
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no mounted {key}"))
        .1;
    String::from_utf8(value.clone()).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reviews_reproductions_are_refused_by_real_servers() {
    // Three pods started through startup.sh and three Sentinels, each container on its own mount.
    let cluster: HaCluster = start_cluster_with_container_mounts(2000).await;
    let primary = cluster.redis_ports[0];
    // The same store with the exporter on (same credentials): the exporter's and the probe's files.
    let mut with_exporter = cluster.store.clone();
    with_exporter.monitoring.exporter = true;
    let children = desired_children(&BuildInput::new(
        &with_exporter,
        &cluster.credentials,
        &OperatorSettings::default(),
    ));
    let exporter_files = mounted_credentials(&children, EXPORTER_CONTAINER);
    let redis_files = mounted_credentials(&children, REDIS_CONTAINER);

    // 1. The operator and replication passwords are out of reach of the exporter, Sentinel and
    //    Sentinel-init containers: none of their values logs in as either user, so neither
    //    `ACL SETUSER operator ~* +@all` nor `PSYNC ? -1` can be reached from there.
    let mut tried = 0;
    for container in [
        EXPORTER_CONTAINER,
        SENTINEL_CONTAINER,
        SENTINEL_INIT_CONTAINER,
    ] {
        let files = mounted_credentials(&children, container);
        for candidate in candidate_passwords(&files) {
            for user in [OPERATOR_USER, REPLICATION_USER] {
                tried += 1;
                let err = connect(primary, user, &candidate)
                    .err()
                    .unwrap_or_else(|| panic!("a value mounted in {container} logs in as {user}"));
                // WRONGPASS (redis-rs: AuthenticationFailed), not a connection problem.
                assert_eq!(
                    err.kind(),
                    redis::ErrorKind::AuthenticationFailed,
                    "{container} as {user}: {err}"
                );
            }
        }
    }
    assert!(tried >= 6, "too few candidates tried: {tried}");
    // What those containers' own users can do with their own passwords: no ACL change, no PSYNC.
    let exporter_password = serde_json::from_str::<BTreeMap<String, String>>(&file(
        &exporter_files,
        "exporter-password.json",
    ))
    .expect("exporter password file")
    .into_values()
    .next()
    .expect("one password");
    let mut exporter = connect(primary, EXPORTER_USER, &exporter_password).expect("exporter login");
    let sentinel_password = file(
        &mounted_credentials(&children, SENTINEL_INIT_CONTAINER),
        "sentinel-password",
    );
    let mut sentinel = connect(primary, SENTINEL_USER, &sentinel_password).expect("sentinel login");
    for (who, conn) in [("exporter", &mut exporter), ("sentinel", &mut sentinel)] {
        assert_noperm(conn, who, &["ACL", "SETUSER", OPERATOR_USER, "~*", "+@all"]);
        assert_noperm(conn, who, &["PSYNC", "?", "-1"]);
        assert_noperm(conn, who, &["GET", "session:1"]);
        assert_noperm(conn, who, &["CONFIG", "GET", "masterauth"]);
    }

    // 2. SLOWLOG GET would show `SET session:<id> <value>` once slowlog-log-slower-than is low.
    let mut operator = connect(
        primary,
        OPERATOR_USER,
        cluster.credentials.operator.expose(),
    )
    .expect("operator login");
    run(
        &mut operator,
        &["CONFIG", "SET", "slowlog-log-slower-than", "0"],
    )
    .expect("CONFIG SET");
    let mut app = connect(primary, "app", cluster.credentials.app.expose()).expect("app login");
    run(&mut app, &["SET", "session:42", "top-secret-session-value"]).expect("SET");
    let length: i64 = redis::cmd("SLOWLOG")
        .arg("LEN")
        .query(&mut exporter)
        .expect("SLOWLOG LEN stays");
    assert!(length > 0, "the slow log holds entries ({length})");
    assert_noperm(&mut exporter, "exporter", &["SLOWLOG", "GET", "10"]);
    assert_noperm(&mut exporter, "exporter", &["SLOWLOG", "GET"]);
    // What a default scrape still gets.
    for args in [
        &["PING"][..],
        &["INFO", "ALL"],
        &["LATENCY", "LATEST"],
        &["LATENCY", "HISTOGRAM"],
        &["CLIENT", "SETNAME", "redis_exporter"],
    ] {
        run(&mut exporter, args).unwrap_or_else(|e| panic!("exporter refused {args:?}: {e}"));
    }
    for args in [
        &["CLIENT", "LIST"][..],
        &["MONITOR"],
        &["MEMORY", "USAGE", "session:42"],
        &["OBJECT", "FREQ", "session:42"],
        &["SCAN", "0"],
        &["RANDOMKEY"],
        &["KEYS", "*"],
        &["COMMAND", "GETKEYS", "SET", "a", "b"],
        &["CONFIG", "GET", "*"],
    ] {
        assert_noperm(&mut exporter, "exporter", args);
    }

    // 3. The app user: sessions live in database 0; no tracking of any prefix; no random key.
    run(&mut app, &["SET", "other:1", "x"]).expect_err("outside the prefix");
    assert_noperm(&mut app, "app", &["SELECT", "3"]);
    assert_noperm(&mut app, "app", &["SELECT", "0"]);
    assert_noperm(
        &mut app,
        "app",
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "other:"],
    );
    assert_noperm(&mut app, "app", &["CLIENT", "TRACKING", "on", "BCAST"]);
    assert_noperm(
        &mut app,
        "app",
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "session:"],
    );
    assert_noperm(&mut app, "app", &["RANDOMKEY"]);
    assert_noperm(&mut app, "app", &["MOVE", "session:42", "3"]);
    // What stays, as the README says: its own keys, and SCAN (key names only).
    let value: String = redis::cmd("GET")
        .arg("session:42")
        .query(&mut app)
        .expect("GET");
    assert_eq!(value, "top-secret-session-value");
    let (_, names): (String, Vec<String>) = redis::cmd("SCAN")
        .arg("0")
        .arg("COUNT")
        .arg("100")
        .query(&mut app)
        .expect("SCAN");
    assert!(names.contains(&"session:42".to_string()), "{names:?}");

    // 4. The probe user (password from the redis container's mount): PING and nothing else.
    let probe_password = file(&redis_files, "probe-password");
    let mut probe = connect(primary, PROBE_USER, &probe_password).expect("probe login");
    let pong: String = redis::cmd("PING").query(&mut probe).expect("PING");
    assert_eq!(pong, "PONG");
    for args in [
        &["INFO"][..],
        &["GET", "session:42"],
        &["SCAN", "0"],
        &["CONFIG", "GET", "maxmemory"],
        &["CLIENT", "SETNAME", "x"],
        &["CLIENT", "LIST"],
        &["SLOWLOG", "GET"],
        &["ACL", "WHOAMI"],
        &["ACL", "SETUSER", PROBE_USER, "+@all"],
        &["REPLICAOF", "127.0.0.1", "53"],
        &["PSYNC", "?", "-1"],
        &["ROLE"],
        &["SUBSCRIBE", "__sentinel__:hello"],
    ] {
        assert_noperm(&mut probe, "probe", args);
    }
    // The probe user cannot log in with any other internal password either.
    for other in [
        cluster.credentials.operator.expose(),
        cluster.credentials.replication.expose(),
        cluster.credentials.sentinel.expose(),
    ] {
        assert!(connect(primary, PROBE_USER, other).is_err());
    }
}
