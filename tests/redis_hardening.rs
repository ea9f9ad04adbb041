//! The hardening proven on a real `redis-server` (Debian's 7.0): the generated `redis.conf`, ACL
//! file and replication credentials, for both profiles and for TLS, show that anonymous clients
//! and `default` get nothing, the application user is confined to its key prefix and refused the
//! admin surface, the operator user can read health and config, the exporter user only metrics,
//! and TLS closes plaintext.
//!
//! The last section proves the same on Valkey 8.0.1 (`spec.engine: valkey`, `valkey-server` from
//! `VALKEY_BIN_DIR`, default `../shared/bin`; missing, those tests fail in CI and print SKIPPED
//! elsewhere): the same users.acl loads, every rule holds, and Valkey accepts `-<entry>` for every
//! entry of its command table.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use redis::{Connection, ErrorKind, RedisResult, Value};
use sessionstore_operator::build::StoreCredentials;
use sessionstore_operator::build::keys::EXPORTER_PASSWORD_FILE_KEY;
use sessionstore_operator::build::secret::desired_internal_secret;
use sessionstore_operator::build::statefulset::exporter_redis_addr;
use sessionstore_operator::redis_commands::{self, CommandTable};
use sessionstore_operator::validate::{ValidatedStore, validate};
use support::redis_server::{RedisServer, connect};
use support::tls::TestPki;
use support::{DEVELOPMENT, PRODUCTION, credentials, store_from_yaml, validated};

/// A production store with TLS and otherwise the profile's defaults (snapshot persistence).
const PRODUCTION_TLS: &str = r#"
apiVersion: sessionstore.dev/v1alpha1
kind: SessionStore
metadata: {name: checkout, namespace: shop}
spec:
  clients: {podSelector: {matchLabels: {app: checkout}}}
  tls: {enabled: true, secretName: checkout-tls}
"#;

fn install_crypto_provider() {
    // Several tests race to install it; only the first wins, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn run(conn: &mut Connection, args: &[&str]) -> RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(conn)
}

fn as_app(server: &RedisServer, creds: &StoreCredentials) -> Connection {
    server
        .connect("app", creds.app.expose())
        .unwrap_or_else(|e| panic!("app user cannot connect: {e}\n{}", server.log()))
}

fn as_operator(server: &RedisServer, creds: &StoreCredentials) -> Connection {
    server
        .connect("operator", creds.operator.expose())
        .unwrap_or_else(|e| panic!("operator user cannot connect: {e}\n{}", server.log()))
}

fn config_get(conn: &mut Connection, name: &str) -> String {
    let pairs: BTreeMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(conn)
        .unwrap_or_else(|e| panic!("CONFIG GET {name}: {e}"));
    pairs
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("CONFIG GET {name} returned nothing"))
}

/// DEBUG is refused to everyone before the ACL is even consulted (`enable-debug-command no`).
fn assert_debug_disabled(conn: &mut Connection, who: &str) {
    let err = run(conn, &["DEBUG", "SLEEP", "0"]).expect_err("DEBUG must be refused");
    assert!(
        err.to_string().contains("DEBUG command not allowed"),
        "{who} running DEBUG: {err}"
    );
}

/// Asserts the command is refused by the ACL (NOPERM), not by an arity or syntax error.
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

// ---------------------------------------------------------------------------------------------
// Checks shared by every profile.

fn no_credentials_get_noauth(server: &RedisServer) {
    let mut anonymous = server
        .connect_anonymous()
        .expect("TCP/TLS connect without credentials");
    for args in [
        &["PING"][..],
        &["GET", "session:x"],
        &["SET", "session:x", "1"],
        &["INFO"],
        &["HELLO", "3"],
    ] {
        match run(&mut anonymous, args) {
            Ok(v) => panic!("anonymous client ran {args:?}: {v:?}"),
            Err(e) => assert_eq!(e.code(), Some("NOAUTH"), "anonymous {args:?}: {e}"),
        }
    }
}

fn default_user_is_off(server: &RedisServer, creds: &StoreCredentials) {
    // Every password any user has, plus nothing: none opens `default`.
    for password in [creds.app.expose(), creds.operator.expose(), "", "nopass"] {
        let err = server
            .connect("default", password)
            .err()
            .unwrap_or_else(|| panic!("AUTH default succeeded"));
        assert_eq!(
            err.kind(),
            ErrorKind::AuthenticationFailed,
            "AUTH default: {err}"
        );
    }
    let mut anonymous = server.connect_anonymous().expect("connect");
    let err = run(&mut anonymous, &["AUTH", "default", "anything"]).expect_err("AUTH default");
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
    // A wrong password for a real user fails the same way.
    assert!(server.connect("app", "not-the-password").is_err());
}

fn app_is_confined_to_key_prefix(
    server: &RedisServer,
    store: &ValidatedStore,
    creds: &StoreCredentials,
) {
    let prefix = &store.key_prefix;
    let key = format!("{prefix}user-42");
    let mut app = as_app(server, creds);
    assert_eq!(
        run(&mut app, &["SET", &key, "alice"]).expect("SET under prefix"),
        Value::Okay
    );
    let got: String = redis::cmd("GET")
        .arg(&key)
        .query(&mut app)
        .expect("GET under prefix");
    assert_eq!(got, "alice");
    let set: i64 = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(600)
        .query(&mut app)
        .expect("EXPIRE");
    assert_eq!(set, 1);
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut app).expect("TTL");
    assert!((1..=600).contains(&ttl), "ttl {ttl}");
    // Session libraries list their own sessions with SCAN MATCH <prefix>*.
    let (_cursor, keys): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}*"))
        .arg("COUNT")
        .arg(1000)
        .query(&mut app)
        .expect("SCAN");
    assert_eq!(keys, vec![key.clone()]);
    let deleted: i64 = redis::cmd("DEL")
        .arg(&key)
        .query(&mut app)
        .expect("DEL under prefix");
    assert_eq!(deleted, 1);

    let outside = "other:user-42";
    for args in [
        &["SET", outside, "x"][..],
        &["GET", outside],
        &["DEL", outside],
        &["EXPIRE", outside, "10"],
        &["SET", "user-42", "x"],
        // Near misses: the prefix without its last character, and a case change.
        &["SET", &prefix[..prefix.len() - 1], "x"],
        &["SET", &format!("{}user", prefix.to_uppercase()), "x"],
        // A multi-key command with one key outside the prefix is refused as a whole.
        &["MSET", &key, "x", outside, "y"],
    ] {
        assert_noperm(&mut app, "app", args);
    }
}

fn app_is_refused_the_admin_surface(
    server: &RedisServer,
    store: &ValidatedStore,
    creds: &StoreCredentials,
) {
    let key = format!("{}k", store.key_prefix);
    let mut app = as_app(server, creds);
    for args in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["KEYS", "*"],
        &["CONFIG", "GET", "maxmemory"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["CONFIG", "REWRITE"],
        &["SHUTDOWN", "NOSAVE"],
        &["MONITOR"],
        &["EVAL", "return 1", "0"],
        &["EVAL_RO", "return 1", "0"],
        &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
        &["SCRIPT", "LOAD", "return 1"],
        &["SCRIPT", "FLUSH"],
        &["FUNCTION", "LIST"],
        &["FUNCTION", "FLUSH"],
        &["FCALL", "f", "0"],
        &["ACL", "WHOAMI"],
        &["ACL", "LIST"],
        &["ACL", "SETUSER", "app", "+@all", "~*"],
        &["INFO"],
        &["CLIENT", "LIST"],
        &["CLIENT", "KILL", "ID", "1"],
        &["REPLICAOF", "NO", "ONE"],
        &["SLAVEOF", "NO", "ONE"],
        &["FAILOVER"],
        &["SAVE"],
        &["BGSAVE"],
        &["BGREWRITEAOF"],
        &["SWAPDB", "0", "1"],
        &["MODULE", "LIST"],
        &["SORT", &key],
        &["MIGRATE", "127.0.0.1", "1", &key, "0", "1"],
        &["PSYNC", "?", "-1"],
        // Sessions live in database 0; key names outside the prefix stay out of reach.
        &["SELECT", "3"],
        &["MOVE", &key, "3"],
        &["RANDOMKEY"],
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "other:"],
        &["CLIENT", "TRACKING", "on"],
    ] {
        assert_noperm(&mut app, "app", args);
    }
    assert_debug_disabled(&mut app, "app");
    // The server is still up: nothing above reached it.
    let pong: String = redis::cmd("PING").query(&mut app).expect("app PING");
    assert_eq!(pong, "PONG");
}

/// The operator reads health and config, and nothing else: no keys, no FLUSHALL. Its CONFIG SET
/// (for the handover's replica-priority) cannot reach the protected file configs.
fn operator_reads_health_and_config(
    server: &RedisServer,
    store: &ValidatedStore,
    creds: &StoreCredentials,
) {
    let mut op = as_operator(server, creds);
    let pong: String = redis::cmd("PING").query(&mut op).expect("operator PING");
    assert_eq!(pong, "PONG");
    let info: String = redis::cmd("INFO").query(&mut op).expect("operator INFO");
    assert!(info.contains("redis_version:"), "INFO lacks redis_version");
    let role: Value = redis::cmd("ROLE").query(&mut op).expect("operator ROLE");
    assert!(matches!(role, Value::Array(_)), "{role:?}");
    assert_eq!(
        config_get(&mut op, "maxmemory"),
        store.memory.maxmemory_bytes.to_string()
    );
    assert_eq!(
        config_get(&mut op, "maxmemory-policy"),
        store.memory.eviction_policy.as_redis()
    );
    assert_eq!(
        config_get(&mut op, "timeout"),
        store.connection.timeout_seconds.to_string()
    );
    assert_eq!(
        config_get(&mut op, "tcp-keepalive"),
        store.connection.tcp_keepalive_seconds.to_string()
    );
    assert_eq!(
        config_get(&mut op, "maxclients"),
        store.connection.max_clients.to_string()
    );
    assert_eq!(config_get(&mut op, "protected-mode"), "yes");
    assert_eq!(config_get(&mut op, "lazyfree-lazy-expire"), "yes");
    assert_eq!(config_get(&mut op, "enable-debug-command"), "no");
    assert_eq!(config_get(&mut op, "enable-module-command"), "no");
    assert_eq!(config_get(&mut op, "enable-protected-configs"), "no");
    assert_eq!(config_get(&mut op, "masteruser"), "replication");
    let key = format!("{}k", store.key_prefix);
    for args in [
        &["GET", &key][..],
        &["SET", &key, "x"],
        &["KEYS", "*"],
        &["FLUSHALL"],
        &["SHUTDOWN", "NOSAVE"],
        &["EVAL", "return 1", "0"],
        &["ACL", "LIST"],
        &["MONITOR"],
    ] {
        assert_noperm(&mut op, "operator", args);
    }
    assert_debug_disabled(&mut op, "operator");
    // The handover lowers replica-priority; the file-writing configs stay protected.
    for (name, value) in [("dir", "/tmp"), ("dbfilename", "x.so")] {
        let refused = run(&mut op, &["CONFIG", "SET", name, value]);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("protected")),
            "CONFIG SET {name} as operator: {refused:?}"
        );
    }
    assert_eq!(
        run(&mut op, &["CONFIG", "SET", "replica-priority", "0"]).expect("replica-priority"),
        Value::Okay
    );
    assert_eq!(config_get(&mut op, "replica-priority"), "0");
    run(&mut op, &["CONFIG", "SET", "replica-priority", "100"]).expect("restore priority");
    for args in [
        &["CLIENT", "PAUSE", "10", "WRITE"][..],
        &["CLIENT", "UNPAUSE"],
    ] {
        assert_eq!(
            run(&mut op, args).expect("operator CLIENT PAUSE"),
            Value::Okay
        );
    }
    // The application password can be rotated live: add a password, then retire it again.
    let added = run(&mut op, &["ACL", "SETUSER", "app", ">rotated-for-test"])
        .expect("operator ACL SETUSER");
    assert_eq!(added, Value::Okay);
    drop(
        server
            .connect("app", "rotated-for-test")
            .expect("new app password works"),
    );
    drop(as_app(server, creds));
    run(&mut op, &["ACL", "SETUSER", "app", "<rotated-for-test"]).expect("retire password");
    assert!(server.connect("app", "rotated-for-test").is_err());
}

/// The persistence directives Redis runs with, per mode.
fn persistence_is(server: &RedisServer, creds: &StoreCredentials, save: &str, appendonly: &str) {
    let mut op = as_operator(server, creds);
    assert_eq!(config_get(&mut op, "save"), save);
    assert_eq!(config_get(&mut op, "appendonly"), appendonly);
    assert_eq!(config_get(&mut op, "dbfilename"), "dump.rdb");
}

fn wait_for(what: &str, server: &RedisServer, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A replica started with the same generated files authenticates to the primary as the
/// `replication` user (the included `replication.conf`), syncs, serves the app's reads and
/// refuses its writes.
fn replica_syncs_with_the_replication_user(
    primary: &RedisServer,
    store: &ValidatedStore,
    creds: &StoreCredentials,
) {
    let replica = RedisServer::start_replica_of(primary, store, creds);
    let mut op = as_operator(&replica, creds);
    wait_for("master_link_status:up", &replica, || {
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut op)
            .is_ok_and(|i| i.contains("master_link_status:up"))
    });
    let key = format!("{}replicated", store.key_prefix);
    let mut app = as_app(primary, creds);
    run(&mut app, &["SET", &key, "v"]).expect("SET on primary");
    let mut replica_app = as_app(&replica, creds);
    wait_for("the write to reach the replica", &replica, || {
        redis::cmd("GET")
            .arg(&key)
            .query::<Option<String>>(&mut replica_app)
            .is_ok_and(|v| v.as_deref() == Some("v"))
    });
    let err = run(&mut replica_app, &["SET", &key, "w"]).expect_err("write on a replica");
    assert_eq!(err.code(), Some("READONLY"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Development profile: standalone, no persistence.

#[test]
fn development_no_credentials_get_noauth() {
    let (store, creds) = (validated(DEVELOPMENT), credentials());
    no_credentials_get_noauth(&RedisServer::start(&store, &creds));
}

#[test]
fn development_default_user_is_off() {
    let (store, creds) = (validated(DEVELOPMENT), credentials());
    default_user_is_off(&RedisServer::start(&store, &creds), &creds);
}

#[test]
fn development_app_user_is_confined_to_key_prefix() {
    let (store, creds) = (validated(DEVELOPMENT), credentials());
    app_is_confined_to_key_prefix(&RedisServer::start(&store, &creds), &store, &creds);
}

#[test]
fn development_app_user_is_refused_the_admin_surface() {
    let (store, creds) = (validated(DEVELOPMENT), credentials());
    app_is_refused_the_admin_surface(&RedisServer::start(&store, &creds), &store, &creds);
}

#[test]
fn development_operator_reads_health_and_config_without_persistence() {
    let (store, creds) = (validated(DEVELOPMENT), credentials());
    assert_eq!(store.memory.maxmemory_bytes, 256 * 1024 * 1024 / 100 * 80);
    let server = RedisServer::start(&store, &creds);
    operator_reads_health_and_config(&server, &store, &creds);
    assert_eq!(
        config_get(&mut as_operator(&server, &creds), "maxmemory-policy"),
        "volatile-lru"
    );
    persistence_is(&server, &creds, "", "no");
}

/// Control for the production deny-list: without `disabledCommands` these are allowed, so the
/// production test's NOPERM comes from the deny-list and not from the base rules.
#[test]
fn development_app_user_may_run_what_production_disables() {
    let (store, creds) = (validated(DEVELOPMENT), credentials());
    let server = RedisServer::start(&store, &creds);
    let mut app = as_app(&server, &creds);
    run(&mut app, &["SET", "session:k", "v"]).expect("SET");
    for args in [
        &["OBJECT", "ENCODING", "session:k"][..],
        &["TOUCH", "session:k"],
        &["PUBSUB", "CHANNELS"],
        &["CLIENT", "SETNAME", "web"],
    ] {
        run(&mut app, args)
            .unwrap_or_else(|e| panic!("{args:?} refused without disabledCommands: {e}"));
    }
}

/// `validate` never accepts a `disabledCommands` entry Redis refuses, nor refuses one it accepts
/// (the latter with `redis_commands`' own test that the table is exactly the server's
/// `COMMAND LIST` and `ACL CAT`). A store disabling every command and category of the 7.0 table
/// validates, and Redis starts with the generated ACL file (one unknown name would abort it);
/// then each entry alone is accepted by `ACL SETUSER` (sent by the operator user, which has
/// `+acl|setuser`), the 7.2 additions are refused by a 7.0 server, and well-formed unknown names
/// are refused by both `validate` and Redis.
#[test]
fn every_known_command_and_category_is_accepted_by_redis() {
    let entries: Vec<String> = redis_commands::REDIS_7_0_COMMANDS
        .iter()
        .map(|c| c.to_string())
        .chain(
            redis_commands::ACL_CATEGORIES
                .iter()
                .map(|c| format!("@{c}")),
        )
        .collect();
    let creds = credentials();
    // The schema (and `validate`) cap the list at 128, so the table goes in chunks: each chunk
    // validates and a real Redis starts with the generated ACL file.
    let chunks: Vec<&[String]> = entries.chunks(128).collect();
    assert!(chunks.len() >= 3, "the table has {} entries", entries.len());
    let mut store = None;
    for chunk in &chunks {
        let list = serde_json::to_string(chunk).expect("a list of strings is JSON");
        let chunk_store = validated(&format!("{DEVELOPMENT}  disabledCommands: {list}\n"));
        assert_eq!(chunk_store.disabled_commands, chunk.to_vec());
        // Redis aborts start-up on one unknown name in the ACL file; started means accepted.
        let chunk_server = RedisServer::start(&chunk_store, &creds);
        run(&mut as_operator(&chunk_server, &creds), &["PING"]).expect("operator PING");
        store = Some(chunk_store);
    }
    let store = store.expect("at least one chunk");
    let server = RedisServer::start(&store, &creds);
    // The last chunk holds the last categories (`@string` among them): GET is refused.
    assert_noperm(&mut as_app(&server, &creds), "app", &["GET", "session:k"]);
    let too_many = serde_json::to_string(&entries).expect("a list of strings is JSON");
    let error = validate(&store_from_yaml(&format!(
        "{DEVELOPMENT}  disabledCommands: {too_many}\n"
    )))
    .expect_err("more than 128 entries");
    assert_eq!(error.field, "spec.disabledCommands", "{error}");

    let mut operator = as_operator(&server, &creds);
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut operator)
        .expect("INFO server");
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or_else(|| panic!("no redis_version in INFO:\n{info}"))
        .trim()
        .to_string();
    let setuser = |conn: &mut Connection, entry: &str| -> RedisResult<Value> {
        run(conn, &["ACL", "SETUSER", "probe", &format!("-{entry}")])
    };
    for entry in &entries {
        setuser(&mut operator, entry)
            .unwrap_or_else(|e| panic!("Redis {version} refuses `-{entry}`: {e}"));
    }
    for entry in redis_commands::ADDED_IN_7_2 {
        assert!(
            validate(&store_from_yaml(&format!(
                "{DEVELOPMENT}  disabledCommands: [\"{entry}\"]\n"
            )))
            .is_ok()
        );
        let reply = setuser(&mut operator, entry);
        if version.starts_with("7.0.") {
            let err = reply.expect_err(entry);
            assert!(
                err.to_string().contains("Unknown command or category"),
                "Redis {version} on `-{entry}`: {err}"
            );
        } else {
            reply.unwrap_or_else(|e| panic!("Redis {version} refuses `-{entry}`: {e}"));
        }
    }
    for unknown in [
        "nosuchcommand",
        "get|x",
        "client|frobnicate",
        "@nosuchcategory",
        "@get",
    ] {
        let manifest = format!("{DEVELOPMENT}  disabledCommands: [sort, \"{unknown}\"]\n");
        let error = validate(&store_from_yaml(&manifest)).expect_err(unknown);
        assert_eq!(error.field, "spec.disabledCommands[1]", "{error}");
        let err = setuser(&mut operator, unknown).expect_err(unknown);
        assert!(
            err.to_string().contains("Unknown command or category"),
            "Redis {version} on `-{unknown}`: {err}"
        );
    }
}

/// `protected-mode yes` with `bind` on every address does not lock out authenticated clients
/// from other addresses: Redis treats only 127.0.0.1 and ::1 as local, so a client whose source
/// is 127.0.0.2 stands in for an application pod. (It would be refused if `default` were an
/// enabled password-less user.)
#[test]
fn protected_mode_admits_authenticated_clients_from_other_addresses() {
    let (store, creds) = (validated(DEVELOPMENT), credentials());
    let server = RedisServer::start(&store, &creds);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        let stream = socket
            .connect(server.addr().parse().expect("addr"))
            .await
            .expect("connect");
        stream.into_std().expect("std stream")
    });
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut call = |args: &[&str]| -> String {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        writer.write_all(out.as_bytes()).expect("write");
        let mut line = String::new();
        reader.read_line(&mut line).expect("read reply");
        if let Some(len) = line
            .strip_prefix('$')
            .and_then(|l| l.trim().parse::<usize>().ok())
        {
            let mut body = vec![0; len + 2];
            std::io::Read::read_exact(&mut reader, &mut body).expect("bulk body");
            return String::from_utf8_lossy(&body).into_owned();
        }
        line
    };
    assert!(
        call(&["PING"]).starts_with("-NOAUTH"),
        "unauthenticated PING must be refused"
    );
    assert_eq!(call(&["AUTH", "app", creds.app.expose()]), "+OK\r\n");
    let info = call(&["CLIENT", "INFO"]);
    assert!(
        info.contains("addr=127.0.0.2:"),
        "the server must see a non-loopback client: {info}"
    );
    assert_eq!(call(&["PING"]), "+PONG\r\n");
}

// ---------------------------------------------------------------------------------------------
// Production profile: keyPrefix, deny-list, memory, appendOnly, extraConfig, replication.

#[test]
fn production_no_credentials_get_noauth() {
    let (store, creds) = (validated(PRODUCTION), credentials());
    no_credentials_get_noauth(&RedisServer::start(&store, &creds));
}

#[test]
fn production_default_user_is_off() {
    let (store, creds) = (validated(PRODUCTION), credentials());
    default_user_is_off(&RedisServer::start(&store, &creds), &creds);
}

#[test]
fn production_app_user_is_confined_to_key_prefix() {
    let (store, creds) = (validated(PRODUCTION), credentials());
    assert_eq!(store.key_prefix, "sess:");
    app_is_confined_to_key_prefix(&RedisServer::start(&store, &creds), &store, &creds);
}

#[test]
fn production_app_user_is_refused_the_admin_surface_and_disabled_commands() {
    let (store, creds) = (validated(PRODUCTION), credentials());
    let server = RedisServer::start(&store, &creds);
    app_is_refused_the_admin_surface(&server, &store, &creds);
    assert_eq!(
        store.disabled_commands,
        ["object", "touch", "@pubsub", "client|setname"]
    );
    let mut app = as_app(&server, &creds);
    run(&mut app, &["SET", "sess:k", "v"]).expect("SET");
    for args in [
        &["OBJECT", "ENCODING", "sess:k"][..],
        &["TOUCH", "sess:k"],
        &["PUBSUB", "CHANNELS"],
        &["PUBLISH", "c", "m"],
        &["CLIENT", "SETNAME", "web"],
    ] {
        assert_noperm(&mut app, "app", args);
    }
}

#[test]
fn production_operator_reads_health_and_config_with_append_only() {
    let (store, creds) = (validated(PRODUCTION), credentials());
    let server = RedisServer::start(&store, &creds);
    operator_reads_health_and_config(&server, &store, &creds);
    let mut op = as_operator(&server, &creds);
    assert_eq!(config_get(&mut op, "maxmemory"), (100u64 << 20).to_string());
    assert_eq!(config_get(&mut op, "maxmemory-policy"), "allkeys-lfu");
    assert_eq!(config_get(&mut op, "hz"), "20");
    assert_eq!(config_get(&mut op, "notify-keyspace-events"), "xE");
    assert_eq!(config_get(&mut op, "appendfsync"), "everysec");
    assert_eq!(config_get(&mut op, "aof-use-rdb-preamble"), "yes");
    persistence_is(&server, &creds, "", "yes");
}

/// The exporter sidecar's user, with the password redis_exporter reads from the internal
/// Secret's `exporter-password.json`, runs the commands of a default scrape that return statistics
/// and nothing that reads a key, a value, a command's arguments or a password, touches users or
/// changes the server.
fn exporter_reads_metrics_and_nothing_else(
    server: &RedisServer,
    store: &ValidatedStore,
    creds: &StoreCredentials,
) {
    let secret = desired_internal_secret(store, creds);
    let file = secret
        .data
        .as_ref()
        .and_then(|d| d.get(EXPORTER_PASSWORD_FILE_KEY))
        .expect("the internal Secret has the exporter's password file");
    let passwords: BTreeMap<String, String> =
        serde_json::from_slice(&file.0).expect("the password file is a JSON object");
    let password = passwords
        .get(&exporter_redis_addr(store))
        .expect("the file maps the scraped address");
    let mut ex = server
        .connect("exporter", password)
        .unwrap_or_else(|e| panic!("exporter user cannot connect: {e}\n{}", server.log()));
    for args in [
        &["PING"][..],
        &["CLIENT", "SETNAME", "redis_exporter"],
        &["INFO", "ALL"],
        &["LATENCY", "LATEST"],
        &["LATENCY", "HISTOGRAM"],
        &["SLOWLOG", "LEN"],
    ] {
        run(&mut ex, args).unwrap_or_else(|e| panic!("exporter refused {args:?}: {e}"));
    }
    let key = format!("{}k", store.key_prefix);
    for args in [
        &["GET", &key][..],
        &["SET", &key, "x"],
        &["SCAN", "0"],
        &["KEYS", "*"],
        &["DBSIZE"],
        &["CLIENT", "LIST"],
        &["CLIENT", "KILL", "ID", "1"],
        // CONFIG GET would hand out masterauth, the replication user's password.
        &["CONFIG", "GET", "masterauth"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["CONFIG", "REWRITE"],
        // SLOWLOG GET shows whole commands with their arguments (`SET <key> <value>`).
        &["SLOWLOG", "GET", "10"],
        &["SLOWLOG", "RESET"],
        &["LATENCY", "RESET"],
        &["FLUSHALL"],
        &["SHUTDOWN", "NOSAVE"],
        &["ACL", "LIST"],
        &["ACL", "SETUSER", "app", ">x"],
        &["REPLICAOF", "NO", "ONE"],
        &["MONITOR"],
        &["EVAL", "return 1", "0"],
    ] {
        assert_noperm(&mut ex, "exporter", args);
    }
    assert_debug_disabled(&mut ex, "exporter");
}

#[test]
fn development_exporter_reads_metrics_and_nothing_else() {
    let (store, creds) = (validated(DEVELOPMENT), credentials());
    let server = RedisServer::start(&store, &creds);
    exporter_reads_metrics_and_nothing_else(&server, &store, &creds);
}

#[test]
fn production_exporter_reads_metrics_and_nothing_else() {
    let (store, creds) = (validated(PRODUCTION), credentials());
    let server = RedisServer::start(&store, &creds);
    exporter_reads_metrics_and_nothing_else(&server, &store, &creds);
}

#[test]
fn production_replica_syncs_with_the_replication_user() {
    let (store, creds) = (validated(PRODUCTION), credentials());
    let primary = RedisServer::start(&store, &creds);
    replica_syncs_with_the_replication_user(&primary, &store, &creds);
}

// ---------------------------------------------------------------------------------------------
// TLS: production defaults (snapshot persistence) over TLS only.

fn tls_server() -> (ValidatedStore, StoreCredentials, TestPki, RedisServer) {
    install_crypto_provider();
    let (store, creds, pki) = (
        validated(PRODUCTION_TLS),
        credentials(),
        TestPki::generate(),
    );
    let server = RedisServer::start_tls(&store, &creds, &pki);
    (store, creds, pki, server)
}

#[test]
fn tls_plaintext_is_closed() {
    let (_store, creds, _pki, server) = tls_server();
    // The one listening port speaks TLS only...
    let plaintext = server.client_with(false, None, Some(("app", creds.app.expose())));
    let reply = connect(&plaintext).and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(
        reply.is_err(),
        "a plaintext client got an answer from the TLS port"
    );
    // ...and there is no plaintext listener at all.
    assert_eq!(config_get(&mut as_operator(&server, &creds), "port"), "0");
    assert_eq!(
        config_get(&mut as_operator(&server, &creds), "tls-port"),
        server.port().to_string()
    );
}

#[test]
fn tls_client_trusting_the_ca_works_and_wrong_ca_fails() {
    let (store, creds, pki, server) = tls_server();
    let key = format!("{}tls", store.key_prefix);
    let mut app = as_app(&server, &creds);
    run(&mut app, &["SET", &key, "v"]).expect("SET over TLS");
    let got: String = redis::cmd("GET")
        .arg(&key)
        .query(&mut app)
        .expect("GET over TLS");
    assert_eq!(got, "v");

    let wrong = server.client_with(
        true,
        Some(&pki.wrong_ca_crt),
        Some(("app", creds.app.expose())),
    );
    let err = connect(&wrong)
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .expect_err("a client trusting another CA must not connect");
    let message = err.to_string().to_lowercase();
    assert!(
        message.contains("certificate") || message.contains("issuer"),
        "unexpected error: {err}"
    );
}

#[test]
fn tls_keeps_every_hardening_check() {
    let (store, creds, _pki, server) = tls_server();
    no_credentials_get_noauth(&server);
    default_user_is_off(&server, &creds);
    app_is_confined_to_key_prefix(&server, &store, &creds);
    app_is_refused_the_admin_surface(&server, &store, &creds);
    operator_reads_health_and_config(&server, &store, &creds);
    persistence_is(&server, &creds, "3600 1 300 100 60 10000", "no");
    let mut op = as_operator(&server, &creds);
    assert_eq!(config_get(&mut op, "tls-auth-clients"), "no");
    assert_eq!(config_get(&mut op, "tls-replication"), "yes");
}

#[test]
fn tls_replica_syncs_over_tls_with_the_replication_user() {
    let (store, creds, _pki, primary) = tls_server();
    replica_syncs_with_the_replication_user(&primary, &store, &creds);
}

/// During a rotation the ACL file carries both application passwords: clients still holding the
/// previous one keep working while new ones use the current one.
#[test]
fn rotation_accepts_current_and_previous_app_password() {
    let store = validated(DEVELOPMENT);
    let mut creds = credentials();
    let previous = sessionstore_operator::password::Password::generate();
    creds.app_previous = Some(previous.clone());
    let server = RedisServer::start(&store, &creds);
    for password in [creds.app.expose(), previous.expose()] {
        let mut app = server
            .connect("app", password)
            .expect("app password accepted");
        run(&mut app, &["SET", "session:r", "1"]).expect("SET");
    }
    assert!(server.connect("app", creds.operator.expose()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Valkey 8.0.1: the same generated files on `valkey-server` (`spec.engine: valkey`).

/// `manifest` with `spec.engine: valkey`.
fn on_valkey(manifest: &str) -> String {
    assert!(manifest.contains("\nspec:\n"), "{manifest}");
    manifest.replacen("\nspec:\n", "\nspec:\n  engine: valkey\n", 1)
}

/// The server is Valkey 8.0.1 (not a Redis that happened to be started), with its default of
/// keeping user data out of the log.
fn assert_is_valkey(server: &RedisServer, creds: &StoreCredentials) {
    let mut op = as_operator(server, creds);
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut op)
        .expect("INFO server");
    assert!(info.contains("server_name:valkey"), "{info}");
    assert!(info.contains("valkey_version:8.0.1"), "{info}");
    assert_eq!(config_get(&mut op, "hide-user-data-from-log"), "yes");
}

/// Valkey's own `@scripting` command is refused with the rest of the category.
fn app_is_refused_valkeys_additions_to_denied_categories(
    server: &RedisServer,
    creds: &StoreCredentials,
) {
    let mut app = as_app(server, creds);
    assert_noperm(
        &mut app,
        "app",
        &["SCRIPT", "SHOW", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"],
    );
}

#[test]
fn valkey_development_keeps_every_hardening_check() {
    if !support::valkey::available("valkey_development_keeps_every_hardening_check") {
        return;
    }
    let (store, creds) = (validated(&on_valkey(DEVELOPMENT)), credentials());
    let server = RedisServer::start(&store, &creds);
    assert_is_valkey(&server, &creds);
    no_credentials_get_noauth(&server);
    default_user_is_off(&server, &creds);
    app_is_confined_to_key_prefix(&server, &store, &creds);
    app_is_refused_the_admin_surface(&server, &store, &creds);
    app_is_refused_valkeys_additions_to_denied_categories(&server, &creds);
    operator_reads_health_and_config(&server, &store, &creds);
    persistence_is(&server, &creds, "", "no");
    exporter_reads_metrics_and_nothing_else(&server, &store, &creds);
}

/// Production on Valkey, with Valkey's own `client|capa` disabled and active defragmentation on
/// (which Valkey 8.0.1, unlike Debian's Redis, starts with): the deny-list, the operator's view,
/// the exporter and replication with the replication user.
#[test]
fn valkey_production_keeps_every_hardening_check_and_replicates() {
    if !support::valkey::available("valkey_production_keeps_every_hardening_check_and_replicates") {
        return;
    }
    let manifest = on_valkey(PRODUCTION)
        .replace(
            "\"client|setname\"]",
            "\"client|setname\", \"client|capa\"]",
        )
        .replace(
            "extraConfig: {hz: \"20\",",
            "extraConfig: {activedefrag: \"yes\", hz: \"20\",",
        );
    let (store, creds) = (validated(&manifest), credentials());
    assert_eq!(
        store.disabled_commands,
        [
            "object",
            "touch",
            "@pubsub",
            "client|setname",
            "client|capa"
        ]
    );
    assert_eq!(store.extra_config["activedefrag"], "yes");
    let server = RedisServer::start(&store, &creds);
    assert_is_valkey(&server, &creds);
    no_credentials_get_noauth(&server);
    default_user_is_off(&server, &creds);
    app_is_confined_to_key_prefix(&server, &store, &creds);
    app_is_refused_the_admin_surface(&server, &store, &creds);
    app_is_refused_valkeys_additions_to_denied_categories(&server, &creds);
    let mut app = as_app(&server, &creds);
    run(&mut app, &["SET", "sess:k", "v"]).expect("SET");
    for args in [
        &["OBJECT", "ENCODING", "sess:k"][..],
        &["TOUCH", "sess:k"],
        &["PUBSUB", "CHANNELS"],
        &["PUBLISH", "c", "m"],
        &["CLIENT", "SETNAME", "web"],
        &["CLIENT", "CAPA", "redirect"],
    ] {
        assert_noperm(&mut app, "app", args);
    }
    operator_reads_health_and_config(&server, &store, &creds);
    let mut op = as_operator(&server, &creds);
    assert_eq!(config_get(&mut op, "maxmemory"), (100u64 << 20).to_string());
    assert_eq!(config_get(&mut op, "maxmemory-policy"), "allkeys-lfu");
    assert_eq!(config_get(&mut op, "hz"), "20");
    assert_eq!(config_get(&mut op, "notify-keyspace-events"), "xE");
    assert_eq!(config_get(&mut op, "activedefrag"), "yes");
    persistence_is(&server, &creds, "", "yes");
    exporter_reads_metrics_and_nothing_else(&server, &store, &creds);
    replica_syncs_with_the_replication_user(&server, &store, &creds);
}

#[test]
fn valkey_tls_keeps_every_hardening_check_and_replicates_over_tls() {
    if !support::valkey::available("valkey_tls_keeps_every_hardening_check_and_replicates_over_tls")
    {
        return;
    }
    install_crypto_provider();
    let (store, creds, pki) = (
        validated(&on_valkey(PRODUCTION_TLS)),
        credentials(),
        TestPki::generate(),
    );
    let server = RedisServer::start_tls(&store, &creds, &pki);
    assert_is_valkey(&server, &creds);
    let plaintext = server.client_with(false, None, Some(("app", creds.app.expose())));
    let reply = connect(&plaintext).and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(
        reply.is_err(),
        "a plaintext client got an answer from the TLS port"
    );
    no_credentials_get_noauth(&server);
    default_user_is_off(&server, &creds);
    app_is_confined_to_key_prefix(&server, &store, &creds);
    app_is_refused_the_admin_surface(&server, &store, &creds);
    operator_reads_health_and_config(&server, &store, &creds);
    persistence_is(&server, &creds, "3600 1 300 100 60 10000", "no");
    replica_syncs_with_the_replication_user(&server, &store, &creds);
}

/// As [`every_known_command_and_category_is_accepted_by_redis`], for Valkey's table: a Valkey
/// store disabling every command and category of Valkey 8.0 validates, `valkey-server` starts with
/// the generated ACL file, and accepts each entry alone; well-formed unknown names are refused by
/// both. Valkey's own commands are refused for a Redis store, as Redis itself refuses them.
#[test]
fn every_valkey_command_and_category_is_accepted_by_valkey() {
    if !support::valkey::available("every_valkey_command_and_category_is_accepted_by_valkey") {
        return;
    }
    let valkey = CommandTable::of(sessionstore_operator::crd::Engine::Valkey);
    let entries: Vec<String> = valkey
        .commands()
        .map(str::to_string)
        .chain(valkey.categories.iter().map(|c| format!("@{c}")))
        .collect();
    let development = on_valkey(DEVELOPMENT);
    let creds = credentials();
    let chunks: Vec<&[String]> = entries.chunks(128).collect();
    assert!(chunks.len() >= 3, "the table has {} entries", entries.len());
    let mut store = None;
    for chunk in &chunks {
        let list = serde_json::to_string(chunk).expect("a list of strings is JSON");
        let chunk_store = validated(&format!("{development}  disabledCommands: {list}\n"));
        assert_eq!(chunk_store.disabled_commands, chunk.to_vec());
        // Valkey aborts start-up on one unknown name in the ACL file; started means accepted.
        let chunk_server = RedisServer::start(&chunk_store, &creds);
        run(&mut as_operator(&chunk_server, &creds), &["PING"]).expect("operator PING");
        store = Some(chunk_store);
    }
    let store = store.expect("at least one chunk");
    let server = RedisServer::start(&store, &creds);
    assert_is_valkey(&server, &creds);
    assert_noperm(&mut as_app(&server, &creds), "app", &["GET", "session:k"]);

    let mut operator = as_operator(&server, &creds);
    let setuser = |conn: &mut Connection, entry: &str| -> RedisResult<Value> {
        run(conn, &["ACL", "SETUSER", "probe", &format!("-{entry}")])
    };
    for entry in &entries {
        setuser(&mut operator, entry)
            .unwrap_or_else(|e| panic!("Valkey 8.0.1 refuses `-{entry}`: {e}"));
    }
    for unknown in [
        "nosuchcommand",
        "get|x",
        "client|frobnicate",
        "@nosuchcategory",
        "@get",
        // Newer than Valkey 8.0.
        "hgetex",
    ] {
        let manifest = format!("{development}  disabledCommands: [sort, \"{unknown}\"]\n");
        let error = validate(&store_from_yaml(&manifest)).expect_err(unknown);
        assert_eq!(error.field, "spec.disabledCommands[1]", "{error}");
        assert!(error.message.contains("is not a Valkey 8.0"), "{error}");
        let err = setuser(&mut operator, unknown).expect_err(unknown);
        assert!(
            err.to_string().contains("Unknown command or category"),
            "Valkey 8.0.1 on `-{unknown}`: {err}"
        );
    }

    // Valkey's own commands: refused for a Redis store, and by Redis itself.
    let redis_table = CommandTable::of(sessionstore_operator::crd::Engine::Redis);
    let own: Vec<&str> = valkey
        .commands()
        .filter(|c| !redis_table.is_command(c))
        .collect();
    assert_eq!(own, ["client|capa", "cluster|slot-stats", "script|show"]);
    let redis_store = validated(DEVELOPMENT);
    let redis_server = RedisServer::start(&redis_store, &creds);
    let mut redis_operator = as_operator(&redis_server, &creds);
    for entry in own {
        let manifest = format!("{DEVELOPMENT}  disabledCommands: [\"{entry}\"]\n");
        let error = validate(&store_from_yaml(&manifest)).expect_err(entry);
        assert!(error.message.contains("is not a Redis 7.2"), "{error}");
        let err = setuser(&mut redis_operator, entry).expect_err(entry);
        assert!(
            err.to_string().contains("Unknown command or category"),
            "Redis on `-{entry}`: {err}"
        );
    }
}

/// Why `dual-channel-replication-enabled` is refused for Valkey stores: with it, a replica's full
/// sync sends SYNC on its second (RDB) connection, which the least-privilege replication user
/// (PSYNC, REPLCONF, PING) is refused, so the replica never syncs. The directive is set here past
/// `validate` to show it.
#[test]
fn valkey_dual_channel_sync_is_refused_to_the_replication_user() {
    if !support::valkey::available("valkey_dual_channel_sync_is_refused_to_the_replication_user") {
        return;
    }
    let manifest = on_valkey(DEVELOPMENT);
    let error = validate(&store_from_yaml(&format!(
        "{manifest}  extraConfig: {{dual-channel-replication-enabled: \"yes\"}}\n"
    )))
    .expect_err("refused");
    assert_eq!(
        error.field, "spec.extraConfig.dual-channel-replication-enabled",
        "{error}"
    );
    let (mut store, creds) = (validated(&manifest), credentials());
    store
        .extra_config
        .insert("dual-channel-replication-enabled".into(), "yes".into());
    let primary = RedisServer::start(&store, &creds);
    let replica = RedisServer::start_replica_of(&primary, &store, &creds);
    wait_for("the replica's refused SYNC", &replica, || {
        replica
            .log()
            .contains("User replication has no permissions to run the 'sync' command")
    });
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut as_operator(&replica, &creds))
        .expect("INFO replication");
    assert!(info.contains("master_link_status:down"), "{info}");
}
