//! The committed CRD is the generated one, and its CEL rules accept and reject what they promise,
//! evaluated locally with kube's client-side CEL validator (the same rule language as the API server).

mod fixtures;

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::render::crd_yaml;

const COMMITTED: &str = "crds/sessionstore.dev_sessionstores.yaml";

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {COMMITTED}: {e}"));
    let generated = crd_yaml().unwrap();
    assert!(
        committed == generated,
        "{COMMITTED} is out of date with src/crd.rs; regenerate it (and its copies) with:\n    bash scripts/regenerate.sh"
    );
}

fn schema() -> serde_json::Value {
    let crd = SessionStore::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// Every rule message that fails for `spec` (created, or updated from `old_spec`).
fn failures(spec: &str, old_spec: Option<&str>) -> Vec<String> {
    let old = old_spec.map(fixtures::object);
    match Validator::new().validate(&schema(), &fixtures::object(spec), old.as_ref()) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts exactly one rule fails and its message names `field`.
fn rejected(spec: &str, old_spec: Option<&str>, field: &str) {
    let failures = failures(spec, old_spec);
    assert_eq!(failures.len(), 1, "{spec}: {failures:?}");
    assert!(
        failures[0].contains(field),
        "message must name {field}: {failures:?}"
    );
}

#[test]
fn valid_manifests_are_accepted() {
    for spec in [
        "",
        "  profile: development\n",
        "  replicas: 1\n",
        "  replicas: 3\n",
        "  replicas: 9\n",
        "  memory: {limit: 1Gi, maxmemory: 700Mi}\n",
        "  memory: {limit: 1Gi, maxmemory: 1023Mi}\n",
        "  memory: {limit: 1Gi}\n",
        "  tls: {enabled: true, secretName: checkout-tls}\n",
        "  tls: {enabled: true, issuerRef: {name: ca}}\n",
        "  tls: {enabled: false}\n",
        "  persistence: {mode: appendOnly, size: 5Gi, storageClassName: fast}\n",
    ] {
        assert_eq!(failures(spec, None), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn replicas_two_is_rejected_naming_the_field() {
    for replicas in [2, 0, 10] {
        rejected(&format!("  replicas: {replicas}\n"), None, "spec.replicas");
    }
}

#[test]
fn maxmemory_at_or_above_the_limit_is_rejected() {
    // Compared as quantities, not strings: 1024Mi == 1Gi, and "900Mi" sorts after "1Gi" as text.
    for memory in [
        "{limit: 1Gi, maxmemory: 1Gi}",
        "{limit: 1Gi, maxmemory: 1024Mi}",
        "{limit: 1Gi, maxmemory: 2G}",
    ] {
        rejected(
            &format!("  memory: {memory}\n"),
            None,
            "spec.memory.maxmemory",
        );
    }
    assert_eq!(
        failures("  memory: {limit: 1Gi, maxmemory: 900Mi}\n", None),
        Vec::<String>::new()
    );
}

#[test]
fn tls_without_a_source_is_rejected() {
    rejected("  tls: {enabled: true}\n", None, "spec.tls.secretName");
    rejected(
        "  tls: {enabled: true, secretName: a, issuerRef: {name: b}}\n",
        None,
        "spec.tls",
    );
}

#[test]
fn storage_class_change_is_rejected_on_update() {
    let old = "  persistence: {storageClassName: standard}\n";
    rejected(
        "  persistence: {storageClassName: fast}\n",
        Some(old),
        "spec.persistence.storageClassName",
    );
    // Setting or removing it changes the volume claim template just the same.
    rejected(old, Some(""), "spec.persistence.storageClassName");
    rejected("", Some(old), "spec.persistence.storageClassName");
    rejected(
        old,
        Some("  persistence: {size: 1Gi}\n"),
        "spec.persistence.storageClassName",
    );
    assert_eq!(failures(old, Some(old)), Vec::<String>::new());
}

#[test]
fn persistence_size_change_is_rejected_on_update() {
    let old = "  persistence: {size: 1Gi}\n";
    rejected(
        "  persistence: {size: 2Gi}\n",
        Some(old),
        "spec.persistence.size",
    );
    // From the 1Gi default to an explicit other size, and back.
    rejected(
        "  persistence: {size: 2Gi}\n",
        Some(""),
        "spec.persistence.size",
    );
    rejected(
        "",
        Some("  persistence: {size: 2Gi}\n"),
        "spec.persistence.size",
    );
    // Writing the default out explicitly changes nothing.
    assert_eq!(failures(old, Some("")), Vec::<String>::new());
    assert_eq!(failures(old, Some(old)), Vec::<String>::new());
}

#[test]
fn switching_between_none_and_persistent_is_rejected_on_update() {
    let none = "  persistence: {mode: none}\n";
    let snapshot = "  persistence: {mode: snapshot}\n";
    rejected(snapshot, Some(none), "spec.persistence.mode");
    rejected(none, Some(snapshot), "spec.persistence.mode");
    // Through the profile default: development means none, production snapshot.
    rejected(
        "  profile: production\n",
        Some("  profile: development\n"),
        "spec.persistence.mode",
    );
    // Between two persistent modes the volumes stay: allowed.
    assert_eq!(
        failures("  persistence: {mode: appendOnly}\n", Some(snapshot)),
        Vec::<String>::new()
    );
    assert_eq!(failures(snapshot, Some("")), Vec::<String>::new());
}

#[test]
fn examples_pass_or_fail_admission_as_named() {
    for (name, valid) in [
        ("development.yaml", true),
        ("production.yaml", true),
        ("production-tls.yaml", true),
        ("invalid-replicas.yaml", false),
    ] {
        let text = std::fs::read_to_string(fixtures::example(name)).unwrap();
        let object: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let result = Validator::new().validate(&schema(), &object, None);
        match result {
            Ok(()) => assert!(valid, "{name} was accepted"),
            Err(errors) => {
                assert!(!valid, "{name}: {errors:?}");
                assert!(
                    errors
                        .iter()
                        .all(|e| e.to_string().contains("spec.replicas")),
                    "{errors:?}"
                );
            }
        }
    }
}

/// A manifest whose `clients` is the given flow mapping.
fn with_clients(clients: &str) -> serde_json::Value {
    let mut object = fixtures::object("");
    object["spec"]["clients"] = serde_yaml::from_str(clients).unwrap();
    object
}

#[test]
fn clients_open_to_the_whole_cluster_are_rejected_without_the_opt_in() {
    for clients in [
        "{podSelector: {}, namespaceSelector: {}}",
        "{podSelector: {matchLabels: {}}, namespaceSelector: {matchExpressions: []}}",
        "{podSelector: {}, namespaceSelector: {}, allowAllPodsInCluster: false}",
    ] {
        let errors = Validator::new()
            .validate(&schema(), &with_clients(clients), None)
            .expect_err(clients);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let message = errors[0].to_string();
        assert!(
            message.contains("spec.clients") && message.contains("allowAllPodsInCluster"),
            "{message}"
        );
    }
    for clients in [
        "{podSelector: {}, namespaceSelector: {}, allowAllPodsInCluster: true}",
        "{podSelector: {}}",
        "{podSelector: {matchLabels: {app: web}}, namespaceSelector: {}}",
        "{podSelector: {}, namespaceSelector: {matchLabels: {team: a}}}",
    ] {
        let result = Validator::new().validate(&schema(), &with_clients(clients), None);
        assert!(result.is_ok(), "{clients}: {result:?}");
    }
}

#[test]
fn a_memory_limit_too_small_for_redis_is_rejected() {
    // A quantity() rule: dropped on the 1.24 test cluster, enforced from 1.29 (and by validate).
    for limit in ["31Mi", "16Mi", "1M"] {
        rejected(
            &format!("  memory: {{limit: {limit}}}\n"),
            None,
            "spec.memory.limit",
        );
    }
    assert_eq!(
        failures("  memory: {limit: 32Mi}\n", None),
        Vec::<String>::new()
    );
}

#[test]
fn engine_may_switch_from_redis_to_valkey_but_not_back() {
    let valkey = "  engine: valkey\n";
    for old in ["", "  engine: redis\n"] {
        assert_eq!(failures(valkey, Some(old)), Vec::<String>::new(), "{old}");
    }
    rejected("  engine: redis\n", Some(valkey), "spec.engine");
    rejected("", Some(valkey), "spec.engine");
    assert_eq!(failures(valkey, Some(valkey)), Vec::<String>::new());
}
