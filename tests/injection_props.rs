//! Property test: arbitrary strings in every free-text field that could reach `redis.conf` or the
//! ACL file (keyPrefix, extraConfig keys and values, disabledCommands) or that must not reach them
//! (rotation, image, Secret and storage class names). `validate` either rejects the spec, naming
//! one of those fields, or the rendered `redis.conf` and `users.acl` hold exactly the directives
//! and users they should: no injected line, directive, user or rule. Nothing panics.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use sessionstore_operator::build::acl::{APP_BASE_DENY, users_acl};
use sessionstore_operator::build::config_map::redis_conf;
use sessionstore_operator::build::{BuildInput, StoreCredentials, desired_children};
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::password::Password;
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::validate;

/// The free-text inputs of one case.
#[derive(Debug, Clone)]
struct Inputs {
    key_prefix: String,
    extra_config: Vec<(String, String)>,
    disabled_commands: Vec<String>,
    rotation: String,
    image: String,
    existing_secret: String,
    tls_secret: String,
    storage_class: String,
}

/// Fields the inputs above land in: a rejection must name one of them.
const FREE_TEXT_FIELDS: &[&str] = &[
    "spec.sessions.keyPrefix",
    "spec.extraConfig.",
    "spec.disabledCommands[",
    "spec.auth.rotation",
    "spec.image",
    "spec.auth.existingSecret",
    "spec.tls.secretName",
    "spec.persistence.storageClassName",
];

/// Strings aimed at `redis.conf` and ACL syntax, plus plain valid words and arbitrary Unicode.
fn text() -> impl Strategy<Value = String> {
    let payloads = prop::sample::select(vec![
        "",
        "\nuser evil on nopass ~* +@all",
        "\r\nrequirepass x",
        " ~* +@all",
        " allkeys allcommands",
        " nopass",
        " on >pw",
        "\" \"",
        "'",
        "*",
        "?",
        "[a]",
        "\\",
        "\\n",
        "#",
        "\0",
        "\u{2028}",
        " ",
        "|",
        "@",
        "%R~*",
        "\ninclude /etc/passwd",
        "\nbind 0.0.0.0",
        "\nprotected-mode no",
    ]);
    prop_oneof![
        3 => "[a-zA-Z][a-zA-Z0-9:_./@=+{}-]{0,12}",
        3 => "[a-zA-Z0-9:_./@=+{}*?\\[\\]\\\\ \"'#\n\r\t|%~-]{0,16}",
        2 => ("[a-zA-Z][a-zA-Z0-9:_-]{0,8}", payloads, "[a-zA-Z0-9:_-]{0,4}")
            .prop_map(|(a, p, b)| format!("{a}{p}{b}")),
        1 => any::<String>(),
    ]
}

/// Directive names: valid-looking ones (some forbidden, mixed case) and arbitrary text.
fn directive() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "hz", "notify-keyspace-events", "latency-tracking", "maxmemory-samples", "Active-Defrag-Cycle-Min",
            "loglevel", "lazyfree-lazy-user-del", "repl-backlog-size", "slowlog-log-slower-than",
        ])
        .prop_map(str::to_string),
        3 => prop::sample::select(vec![
            "hz", "notify-keyspace-events", "latency-tracking", "activedefrag", "BIND", "Port",
            "aclfile", "include", "requirepass", "masterauth", "user", "rename-command", "dir",
            "replicaof", "protected-mode", "enable-debug-command", "tls-port", "save", "maxmemory",
            "loadmodule", "appendonly", "sentinel", "slaveof", "logfile", "loglevel",
            "lazyfree-lazy-expire", "acl-pubsub-default", "tls-auth-clients",
        ])
        .prop_map(str::to_string),
        2 => "[a-zA-Z][a-zA-Z0-9-]{0,20}",
        2 => text(),
    ]
}

/// Config values: values Redis accepts for some of the directives above, well-formed words
/// (single spaces, the allowed punctuation), or hostile text.
fn config_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["yes", "no", "10", "5", "Ex", "notice", "warning", "1mb", "-1"])
            .prop_map(str::to_string),
        3 => "[a-zA-Z0-9._:/+,@=%-]{1,10}( [a-zA-Z0-9]{1,4}){0,2}",
        2 => text(),
    ]
}

/// Directives with a value Redis accepts, so that whole fuzzed `extraConfig` maps pass too.
fn valid_pair() -> impl Strategy<Value = (String, String)> {
    prop::sample::select(vec![
        ("hz", "10"),
        ("loglevel", "warning"),
        ("notify-keyspace-events", "Ex"),
        ("Lazyfree-Lazy-User-Del", "yes"),
        ("maxmemory-samples", "5"),
        ("slowlog-log-slower-than", "-1"),
        ("repl-backlog-size", "1mb"),
        ("active-defrag-cycle-min", "5"),
        ("latency-tracking", "no"),
    ])
    .prop_map(|(k, v)| (k.to_string(), v.to_string()))
}

fn command() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["sort", "OBJECT", "client|kill", "@pubsub", "@all", "+@all", "~*", "allkeys"])
            .prop_map(str::to_string),
        2 => "@?[a-zA-Z][a-zA-Z0-9_-]{0,10}(\\|[a-zA-Z][a-zA-Z0-9_-]{0,6})?",
        2 => text(),
    ]
}

/// One or two fields get hostile text, the others a clean value, so that many cases pass
/// validation and reach the renderers (with every field hostile at once, nearly all would be
/// rejected by whichever field is invalid first).
fn inputs() -> impl Strategy<Value = Inputs> {
    let hostile = (
        text(),
        prop::collection::vec(
            prop_oneof![2 => valid_pair(), 3 => (directive(), config_value())],
            1..4,
        ),
        prop::collection::vec(prop_oneof![Just("sort".to_string()), command()], 1..5),
        text(),
        text(),
        text(),
        text(),
        text(),
    );
    (
        hostile, // Fields that reach the rendered files are drawn more often.
        prop::sample::subsequence(vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5, 6, 7], 1..=2),
    )
        .prop_map(
            |(
                (
                    key_prefix,
                    extra_config,
                    disabled_commands,
                    rotation,
                    image,
                    existing_secret,
                    tls_secret,
                    storage_class,
                ),
                fuzzed,
            )| {
                let pick = |index: usize, hostile: String, clean: &str| {
                    if fuzzed.contains(&index) {
                        hostile
                    } else {
                        clean.to_string()
                    }
                };
                Inputs {
                    key_prefix: pick(0, key_prefix, "session:"),
                    extra_config: if fuzzed.contains(&1) {
                        extra_config
                    } else {
                        vec![("hz".into(), "10".into())]
                    },
                    disabled_commands: if fuzzed.contains(&2) {
                        disabled_commands
                    } else {
                        vec!["object".into(), "client|list".into()]
                    },
                    rotation: pick(3, rotation, "2024-06"),
                    image: pick(4, image, "redis:7.2.5"),
                    existing_secret: pick(5, existing_secret, "my-secret"),
                    tls_secret: pick(6, tls_secret, "my-tls"),
                    storage_class: pick(7, storage_class, "fast"),
                }
            },
        )
}

/// `extraConfig` as the manifest carries it (a map: a repeated key keeps its last value).
fn extra_map(inputs: &Inputs) -> BTreeMap<&str, &str> {
    inputs
        .extra_config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Directives of the generated file that `extraConfig` may re-tune: logging and background-free
/// performance knobs, none of them about access, files or topology.
const TUNABLE: &[&str] = &[
    "loglevel",
    "always-show-logo",
    "lazyfree-lazy-eviction",
    "lazyfree-lazy-expire",
    "lazyfree-lazy-server-del",
    "lazyfree-lazy-user-del",
    "lazyfree-lazy-user-flush",
    "replica-lazy-flush",
    "repl-diskless-sync",
    "appendfsync",
    "aof-use-rdb-preamble",
];

fn store(inputs: &Inputs) -> SessionStore {
    let extra = extra_map(inputs);
    let value = serde_json::json!({
        "apiVersion": "sessionstore.dev/v1alpha1",
        "kind": "SessionStore",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "clients": {"podSelector": {}},
            "image": inputs.image,
            "sessions": {"keyPrefix": inputs.key_prefix},
            "persistence": {"mode": "snapshot", "storageClassName": inputs.storage_class},
            "auth": {"existingSecret": inputs.existing_secret, "rotation": inputs.rotation},
            "tls": {"enabled": true, "secretName": inputs.tls_secret},
            "extraConfig": extra,
            "disabledCommands": inputs.disabled_commands,
        }
    });
    serde_json::from_value(value).expect("every string is a valid JSON string")
}

/// The same store with none of the free text: what the rendered files are compared against.
fn reference() -> SessionStore {
    store(&Inputs {
        key_prefix: "session:".into(),
        extra_config: Vec::new(),
        disabled_commands: Vec::new(),
        rotation: "r".into(),
        image: "redis:7.2.5".into(),
        existing_secret: "my-secret".into(),
        tls_secret: "my-tls".into(),
        storage_class: "fast".into(),
    })
}

fn fixed_credentials() -> StoreCredentials {
    StoreCredentials {
        app: Password::from_secret_value("app".into()),
        app_previous: None,
        operator: Password::from_secret_value("operator".into()),
        replication: Password::from_secret_value("replication".into()),
        sentinel: Password::from_secret_value("sentinel".into()),
        probe: Password::from_secret_value("probe".into()),
    }
}

/// Characters that would widen an ACL key pattern or split a config/ACL argument.
fn is_syntax_char(c: char) -> bool {
    c.is_whitespace() || c.is_control() || "*?[]\\\"'#".contains(c)
}

fn check(inputs: &Inputs) -> Result<(), TestCaseError> {
    let spec = store(inputs);
    let validated = match validate(&spec) {
        Err(e) => {
            prop_assert!(
                FREE_TEXT_FIELDS.iter().any(|f| e.field.starts_with(f)),
                "rejected on a field no input touched: {}",
                e.field
            );
            return Ok(());
        }
        Ok(v) => v,
    };
    let reference = validate(&reference()).expect("reference store is valid");
    let credentials = fixed_credentials();

    // redis.conf: the reference file line for line, then exactly one `key value` line per
    // extraConfig entry, with the user's value verbatim and no syntax character in it.
    let conf = redis_conf(&validated);
    let base = redis_conf(&reference);
    let tail = conf.strip_prefix(&base);
    prop_assert!(
        tail.is_some(),
        "redis.conf differs before extraConfig:\n{conf}"
    );
    let tail = tail.unwrap_or_default();
    let mut tail_lines = tail.lines();
    let extra = extra_map(inputs);
    if !extra.is_empty() {
        prop_assert_eq!(tail_lines.next(), Some("# spec.extraConfig"));
    }
    let extra_lines: Vec<&str> = tail_lines.collect();
    prop_assert_eq!(extra_lines.len(), extra.len());
    let base_directives: Vec<&str> = base.lines().filter_map(|l| l.split(' ').next()).collect();
    for line in &extra_lines {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let given = extra
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key) && k.len() == key.len());
        prop_assert!(
            given.is_some(),
            "directive {key:?} is not one the user gave"
        );
        let (_, given_value) = given.expect("checked above");
        prop_assert_eq!(value, *given_value);
        prop_assert!(
            !value.chars().any(|c| is_syntax_char(c) && c != ' '),
            "value {value:?}"
        );
        prop_assert!(
            !base_directives.contains(&key) || TUNABLE.contains(&key),
            "extraConfig overrides managed directive {key}"
        );
        prop_assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    // users.acl: exactly the seven users (default, app, operator, replication, sentinel, exporter,
    // probe); only the app user's key pattern and deny-list vary.
    let acl = users_acl(&validated, &credentials);
    let base_acl = users_acl(&reference, &credentials);
    let lines: Vec<&str> = acl.lines().collect();
    let base_lines: Vec<&str> = base_acl.lines().collect();
    prop_assert_eq!(lines.len(), 7, "{}", acl);
    prop_assert!(acl.ends_with('\n') && !acl.contains('\r'));
    for index in [0, 2, 3, 4, 5, 6] {
        prop_assert_eq!(lines[index], base_lines[index]);
    }
    let prefix = &inputs.key_prefix;
    prop_assert!(
        !prefix.is_empty() && !prefix.chars().any(is_syntax_char),
        "prefix {prefix:?}"
    );
    let mut expected_app = format!(
        "user app on {} resetkeys ~{prefix}* resetchannels +@all {APP_BASE_DENY}",
        credentials.app.acl_hash()
    );
    let mut seen: Vec<String> = Vec::new();
    for command in &inputs.disabled_commands {
        let lower = command.to_ascii_lowercase();
        prop_assert!(
            !lower.chars().any(is_syntax_char) && !lower.contains('~') && !lower.starts_with('+')
        );
        if !seen.contains(&lower) {
            expected_app.push_str(&format!(" -{lower}"));
            seen.push(lower);
        }
    }
    prop_assert_eq!(lines[1], expected_app.as_str());
    let tokens: Vec<&str> = lines[1].split(' ').collect();
    prop_assert_eq!(
        tokens
            .iter()
            .filter(|t| t.starts_with('~') || t.starts_with('%'))
            .count(),
        1
    );
    for forbidden in ["nopass", "allkeys", "allcommands", "~*", "reset", "off"] {
        prop_assert!(
            !tokens.contains(&forbidden),
            "app rules contain {forbidden}"
        );
    }

    // The whole build runs on the same input without panicking, and the ConfigMap holds the
    // same redis.conf.
    let children = desired_children(&BuildInput::new(
        &validated,
        &credentials,
        &OperatorSettings::default(),
    ));
    prop_assert_eq!(
        children
            .config_map
            .data
            .as_ref()
            .and_then(|d| d.get("redis.conf")),
        Some(&conf)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn free_text_is_rejected_or_cannot_inject(inputs in inputs()) {
        check(&inputs)?;
    }
}

/// Guards against a vacuous property: with a fixed seed, a good share of generated cases pass
/// validation and reach the renderers, and a good share is rejected.
#[test]
fn generated_cases_exercise_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = inputs();
    let (mut accepted, total) = (0, 256);
    // Accepted cases whose keyPrefix / extraConfig / disabledCommands were fuzzed.
    let mut fuzzed_accepted = [0; 3];
    for _ in 0..total {
        let inputs = strategy.new_tree(&mut runner).expect("generate").current();
        if validate(&store(&inputs)).is_ok() {
            accepted += 1;
            fuzzed_accepted[0] += usize::from(inputs.key_prefix != "session:");
            fuzzed_accepted[1] +=
                usize::from(inputs.extra_config != [("hz".to_string(), "10".to_string())]);
            fuzzed_accepted[2] +=
                usize::from(inputs.disabled_commands != ["object", "client|list"]);
        }
    }
    println!(
        "accepted {accepted} of {total}; fuzzed and accepted [keyPrefix, extraConfig, disabledCommands]: {fuzzed_accepted:?}"
    );
    assert!(
        accepted >= total / 10,
        "only {accepted} of {total} cases reach the renderers"
    );
    assert!(
        accepted <= total * 9 / 10,
        "{accepted} of {total} accepted: hostile input is too rare"
    );
    assert!(
        fuzzed_accepted.iter().all(|n| *n >= 3),
        "too few accepted fuzzed cases: {fuzzed_accepted:?}"
    );
}

/// Changes one field of a clean input into an injection attempt.
type Mutation = Box<dyn Fn(&mut Inputs)>;

/// The reference case itself passes, and a hand-written injection attempt in each field is
/// rejected (so the property is not vacuously true because everything is rejected).
#[test]
fn known_injections_are_rejected_and_clean_input_renders() {
    let clean = Inputs {
        key_prefix: "web:".into(),
        extra_config: vec![("hz".into(), "20".into())],
        disabled_commands: vec!["SORT".into(), "client|kill".into()],
        rotation: "2024-06".into(),
        image: "registry.example:5000/redis:7.2.5".into(),
        existing_secret: "app-pw".into(),
        tls_secret: "tls".into(),
        storage_class: "ssd".into(),
    };
    check(&clean).expect("clean input");
    assert!(validate(&store(&clean)).is_ok());
    let attempts: Vec<(&str, Mutation)> = vec![
        (
            "spec.sessions.keyPrefix",
            Box::new(|i| i.key_prefix = "s:* ~*".into()),
        ),
        (
            "spec.sessions.keyPrefix",
            Box::new(|i| i.key_prefix = "s:\nuser x on nopass".into()),
        ),
        (
            "spec.extraConfig.hz",
            Box::new(|i| i.extra_config = vec![("hz".into(), "10\nbind 0.0.0.0".into())]),
        ),
        (
            "spec.extraConfig.hz",
            Box::new(|i| i.extra_config = vec![("hz".into(), "\"10\"".into())]),
        ),
        (
            "spec.extraConfig.Bind",
            Box::new(|i| i.extra_config = vec![("Bind".into(), "0.0.0.0".into())]),
        ),
        (
            "spec.extraConfig.hz\nbind",
            Box::new(|i| i.extra_config = vec![("hz\nbind".into(), "1".into())]),
        ),
        (
            "spec.disabledCommands[0]",
            Box::new(|i| i.disabled_commands = vec!["sort ~*".into()]),
        ),
        (
            "spec.disabledCommands[0]",
            Box::new(|i| i.disabled_commands = vec!["+@all".into()]),
        ),
        (
            "spec.auth.rotation",
            Box::new(|i| i.rotation = "a\nb".into()),
        ),
        ("spec.image", Box::new(|i| i.image = "redis:7\n".into())),
    ];
    for (field, mutate) in attempts {
        let mut inputs = clean.clone();
        mutate(&mut inputs);
        let err = validate(&store(&inputs)).expect_err(field);
        assert_eq!(err.field, field);
    }
}
