//! Property test: an `extraConfig` that `validate` accepts never keeps the real server from
//! starting. Directives are drawn from the engine's own config table, values from around each
//! directive's kind and bounds (valid, off by one, wrong case, wrong type); every accepted spec is
//! rendered as the pods would get it and started: Debian's redis-server 7.0 for a Redis store,
//! Valkey 8.0.1's valkey-server (`VALKEY_BIN_DIR`, default `../shared/bin`; missing, the Valkey
//! property fails in CI and prints SKIPPED elsewhere) for a Valkey store.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sessionstore_operator::crd::{Engine, SessionStore};
use sessionstore_operator::redis_config::{ConfigTable, Kind};
use sessionstore_operator::validate::{ValidatedStore, validate};
use support::credentials;
use support::redis_server::RedisServer;

/// Values around a directive's kind: some Redis accepts, some it refuses.
fn value_for(kind: Kind) -> BoxedStrategy<String> {
    let words = prop::sample::select(vec!["yes", "no", "0", "1", "-1", "abc", "YES", "1mb", "5%"])
        .prop_map(str::to_string);
    let specific: BoxedStrategy<String> = match kind {
        Kind::Bool => prop::sample::select(vec!["yes", "no", "true", "Yes"])
            .prop_map(str::to_string)
            .boxed(),
        Kind::OneOf(values) => prop_oneof![
            3 => prop::sample::select(values.to_vec()).prop_map(str::to_string),
            1 => prop::sample::select(values.to_vec()).prop_map(|v| v.to_uppercase()),
        ]
        .boxed(),
        Kind::Integer { min, max } => {
            // Bounds, one beyond, and a value inside (kept small: huge counts are valid but slow).
            let edges = vec![
                min.to_string(),
                max.to_string(),
                min.saturating_sub(1).to_string(),
                max.saturating_add(1).to_string(),
                format!("0{}", min.max(1)),
            ];
            let low = min.max(-100);
            let high = max.min(low.saturating_add(200));
            prop_oneof![
                2 => prop::sample::select(edges),
                3 => (low..=high).prop_map(|v| v.to_string()),
            ]
            .boxed()
        }
        Kind::Bytes { min, max } => {
            let edges = vec![
                min.to_string(),
                max.to_string(),
                max.saturating_add(1).to_string(),
                "1gb".to_string(),
                "64MB".to_string(),
                "1Mi".to_string(),
            ];
            prop_oneof![
                2 => prop::sample::select(edges),
                3 => (1u64..=4096, prop::sample::select(vec!["", "kb", "k", "mb"]))
                    .prop_map(|(n, unit)| format!("{n}{unit}")),
            ]
            .boxed()
        }
        Kind::BytesOrPercent => prop::sample::select(vec!["5%", "100%", "101%", "64mb", "0"])
            .prop_map(str::to_string)
            .boxed(),
        Kind::Text => "[a-z]{1,8}( [a-z]{1,4})?".boxed(),
        Kind::Special => prop::sample::select(vec![
            "Ex",
            "KEA",
            "Exq",
            "pubsub 32mb 8mb 60",
            "normal 0 0 0 replica 256mb 64mb 60",
            "replica 1mb",
            "50 99 99.9",
            "150",
            "0 200 800",
        ])
        .prop_map(str::to_string)
        .boxed(),
    };
    prop_oneof![4 => specific, 1 => words].boxed()
}

/// Directives of the rarer kinds that `extraConfig` accepts (in both engines' tables), drawn more
/// often than the table's proportion (one `BytesOrPercent` in 192) would.
const RARE_KINDS: &[&str] = &[
    "maxmemory-clients",
    "proc-title-template",
    "ignore-warnings",
    "notify-keyspace-events",
    "client-output-buffer-limit",
    "latency-tracking-info-percentiles",
];

/// One `extraConfig` entry: a directive of the engine's table (any case) with a value for its kind.
fn entry(engine: Engine) -> impl Strategy<Value = (String, String)> {
    let table = ConfigTable::of(engine).directives;
    let rare = prop::sample::select(
        RARE_KINDS
            .iter()
            .map(|name| {
                table
                    .iter()
                    .position(|(n, _)| n == name)
                    .expect("a directive of the table")
            })
            .collect::<Vec<_>>(),
    );
    let index = prop_oneof![4 => 0..table.len(), 1 => rare];
    (index, any::<bool>()).prop_flat_map(move |(index, upper_first)| {
        let (name, kind) = table[index];
        let name = if upper_first {
            let mut chars = name.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        } else {
            name.to_string()
        };
        (Just(name), value_for(kind))
    })
}

fn store(engine: Engine, extra: &BTreeMap<String, String>) -> SessionStore {
    let value = serde_json::json!({
        "apiVersion": "sessionstore.dev/v1alpha1",
        "kind": "SessionStore",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "engine": engine.as_str(),
            "profile": "development",
            "clients": {"podSelector": {"matchLabels": {"app": "checkout"}}},
            "extraConfig": extra,
        }
    });
    serde_json::from_value(value).expect("a valid SessionStore object")
}

fn accepted(engine: Engine, extra: &BTreeMap<String, String>) -> Option<ValidatedStore> {
    validate(&store(engine, extra)).ok()
}

/// Each accepted case starts a real server (about 50 ms); 2 cores are shared.
const CASES: u32 = 128;

/// Starts the engine's server on every accepted `extraConfig` (panics with the server's log and
/// the redis.conf if it does not start).
fn server_starts_on_accepted(engine: Engine, extra: Vec<(String, String)>) {
    let extra: BTreeMap<String, String> = extra.into_iter().collect();
    if let Some(validated) = accepted(engine, &extra) {
        assert_eq!(validated.engine, engine);
        let server = RedisServer::start(&validated, &credentials());
        drop(server);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn accepted_extra_config_never_keeps_redis_from_starting(
        extra in prop::collection::vec(entry(Engine::Redis), 1..3)
    ) {
        server_starts_on_accepted(Engine::Redis, extra);
    }
}

/// The same property for Valkey stores, with Valkey's table and `valkey-server` (a runner of its
/// own, so a missing binary is reported once; failures persist beside the Redis ones).
#[test]
fn accepted_extra_config_never_keeps_valkey_from_starting() {
    if !support::valkey::available("accepted_extra_config_never_keeps_valkey_from_starting") {
        return;
    }
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        source_file: Some(file!()),
        ..Config::default()
    });
    let result = runner.run(
        &prop::collection::vec(entry(Engine::Valkey), 1..3),
        |extra| {
            server_starts_on_accepted(Engine::Valkey, extra);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}

/// Guards against a vacuous property: with a fixed seed, both accepted and rejected maps are
/// generated, and every kind of directive is accepted at least once, for each engine.
#[test]
fn generated_configs_are_both_accepted_and_rejected() {
    for engine in [Engine::Redis, Engine::Valkey] {
        both_accepted_and_rejected(engine);
    }
}

fn both_accepted_and_rejected(engine: Engine) {
    use proptest::strategy::ValueTree;
    let table = ConfigTable::of(engine).directives;
    let mut runner = TestRunner::deterministic();
    let strategy = entry(engine);
    let (mut accepted_count, total) = (0, 400);
    let mut kinds_accepted = std::collections::BTreeSet::new();
    for _ in 0..total {
        let (name, value) = strategy.new_tree(&mut runner).expect("generate").current();
        let extra = BTreeMap::from([(name.clone(), value)]);
        if accepted(engine, &extra).is_some() {
            accepted_count += 1;
            let lower = name.to_ascii_lowercase();
            let kind = table
                .iter()
                .find(|(n, _)| *n == lower)
                .map(|(_, k)| *k)
                .expect("drawn from the table");
            kinds_accepted.insert(
                format!("{kind:?}")
                    .split([' ', '('])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    println!("{engine}: accepted {accepted_count} of {total}; kinds accepted: {kinds_accepted:?}");
    assert!(
        accepted_count >= total / 5,
        "{engine}: only {accepted_count} of {total} accepted"
    );
    assert!(
        accepted_count <= total * 4 / 5,
        "{engine}: {accepted_count} of {total} accepted"
    );
    // Bool, OneOf, Integer, Bytes, BytesOrPercent, Text, Special.
    assert_eq!(
        kinds_accepted.len(),
        7,
        "{engine}: not every kind of directive was accepted: {kinds_accepted:?}"
    );
}
