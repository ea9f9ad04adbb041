//! The `render` command as users run it: the built binary on the shipped examples.

mod fixtures;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde::Deserialize;

const BIN: &str = env!("CARGO_BIN_EXE_sessionstore-operator");
const REDACTED: &str = "<redacted>";

fn render(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("render")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn render_example(name: &str, extra: &[&str]) -> Vec<serde_yaml::Value> {
    let path = fixtures::example(name);
    let mut args = vec!["-f", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = render(&args, None);
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    documents(&String::from_utf8(output.stdout).unwrap())
}

fn documents(stream: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(stream)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(docs: &[serde_yaml::Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for doc in docs {
        *counts
            .entry(doc["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

fn expected_kinds(with_pdb: bool) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::from([
        ("StatefulSet".to_string(), 1),
        ("Service".to_string(), 2),
        ("ConfigMap".to_string(), 1),
        ("Secret".to_string(), 2),
        ("NetworkPolicy".to_string(), 1),
    ]);
    if with_pdb {
        kinds.insert("PodDisruptionBudget".to_string(), 1);
    }
    kinds
}

/// Every value of every Secret's `data` and `stringData`.
fn secret_values(docs: &[serde_yaml::Value]) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == "Secret")
        .flat_map(|d| ["data", "stringData"].map(|field| d[field].clone()))
        .filter_map(|m| m.as_mapping().cloned())
        .flat_map(|m| m.into_iter().map(|(_, v)| v.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn production_example_renders_every_child() {
    let docs = render_example("production.yaml", &[]);
    assert_eq!(kinds(&docs), expected_kinds(true));
    for doc in &docs {
        assert_eq!(doc["metadata"]["namespace"], "shop", "{:?}", doc["kind"]);
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/instance"],
            "checkout"
        );
        assert_eq!(
            doc["metadata"]["ownerReferences"][0]["kind"],
            "SessionStore"
        );
        assert!(
            doc["apiVersion"].as_str().is_some(),
            "{:?} has no apiVersion",
            doc["kind"]
        );
    }
    let names: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("StatefulSet", "checkout"),
        ("Service", "checkout"),
        ("Service", "checkout-headless"),
        ("ConfigMap", "checkout-config"),
        ("Secret", "checkout-connection"),
        ("Secret", "checkout-internal"),
        ("NetworkPolicy", "checkout"),
        ("PodDisruptionBudget", "checkout"),
    ] {
        assert!(
            names.contains(&expected),
            "{expected:?} missing from {names:?}"
        );
    }
}

#[test]
fn development_example_has_no_budget() {
    assert_eq!(
        kinds(&render_example("development.yaml", &[])),
        expected_kinds(false)
    );
}

#[test]
fn production_tls_example_renders_every_child() {
    let docs = render_example("production-tls.yaml", &[]);
    // Its spec.tls.issuerRef and spec.monitoring.serviceMonitor add the optional APIs' objects the
    // controller applies: cert-manager's Certificate and prometheus-operator's ServiceMonitor.
    let mut expected = expected_kinds(true);
    expected.insert("Certificate".to_string(), 1);
    expected.insert("ServiceMonitor".to_string(), 1);
    assert_eq!(kinds(&docs), expected);
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "payments-tls"),
        "{volumes:?}"
    );
}

#[test]
fn an_issuer_and_a_service_monitor_render_as_the_controller_applies_them() {
    let docs = render_example("production-tls.yaml", &[]);
    let certificate = docs.iter().find(|d| d["kind"] == "Certificate").unwrap();
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    assert_eq!(certificate["metadata"]["name"], "payments-tls");
    assert_eq!(certificate["spec"]["secretName"], "payments-tls");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "internal-ca");
    assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    assert_eq!(
        certificate["metadata"]["ownerReferences"][0]["kind"],
        "SessionStore"
    );
    let monitor = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["name"], "payments");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["relabelings"][0]["regex"],
        "payments-headless"
    );
    // A store asking for neither renders neither.
    let plain = kinds(&render_example("production.yaml", &[]));
    assert!(!plain.contains_key("Certificate") && !plain.contains_key("ServiceMonitor"));
}

#[test]
fn secrets_are_redacted_unless_asked_for() {
    let redacted = secret_values(&render_example("production.yaml", &[]));
    assert!(!redacted.is_empty(), "the internal Secret always has data");
    assert!(redacted.iter().all(|v| v == REDACTED), "{redacted:?}");

    let shown = secret_values(&render_example("production.yaml", &["--show-secrets"]));
    assert_eq!(shown.len(), redacted.len());
    assert!(shown.iter().all(|v| v != REDACTED && !v.is_empty()));
}

#[test]
fn manifest_from_stdin() {
    let source = std::fs::read_to_string(fixtures::example("production.yaml")).unwrap();
    let output = render(&["-f", "-"], Some(&source));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        kinds(&documents(&String::from_utf8(output.stdout).unwrap())),
        expected_kinds(true)
    );
}

#[test]
fn invalid_manifest_names_the_field_and_exits_1() {
    let path = fixtures::example("invalid-replicas.yaml");
    let output = render(&["-f", path.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty(),
        "nothing is rendered for an invalid store"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("spec.replicas"), "{stderr}");
}

#[test]
fn invalid_stdin_names_the_field_and_exits_1() {
    let output = render(
        &["-f", "-"],
        Some(&fixtures::manifest(
            "  extraConfig: {requirepass: hunter2}\n",
        )),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("spec.extraConfig.requirepass"), "{stderr}");
}

/// Every rendered child is a valid Kubernetes 1.33 object (strict: no unknown fields), checked with
/// PyPI `kubernetes-validate`, which `.ci/run` installs: a missing tool fails the test.
#[test]
fn rendered_examples_pass_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["development.yaml", "production.yaml", "production-tls.yaml"] {
        let path = fixtures::example(name);
        let output = render(&["-f", path.to_str().unwrap()], None);
        assert!(output.status.success());
        let rendered = dir.path().join(name);
        std::fs::write(&rendered, &output.stdout).unwrap();
        files.push(rendered);
    }
    let result = Command::new("kubernetes-validate")
        .args(["--kubernetes-version", "1.33.0", "--strict"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate (pip install kubernetes-validate) must be installed: {e}")
        });
    let report = String::from_utf8_lossy(&result.stdout).to_string()
        + &String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{report}");
    // 7 + 8 + 8 children, each reported as passed.
    assert_eq!(
        report.matches(" passed for resource ").count(),
        23,
        "{report}"
    );
}
