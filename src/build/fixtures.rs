//! Test builders shared by the builders' unit tests: a `ValidatedStore` from a SessionStore manifest,
//! run through the real `validate`, so tests exercise the same defaults production does.

use crate::crd::SessionStore;
use crate::validate::{ValidatedStore, validate};

/// Parses a SessionStore manifest (YAML) and validates it; panics with the reason if either fails.
pub fn store_from_yaml(yaml: &str) -> ValidatedStore {
    let store: SessionStore =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("fixture YAML: {e}"));
    validate(&store).unwrap_or_else(|e| panic!("fixture does not validate: {e}"))
}

/// A store named `checkout` in `shop` with the given `spec` lines (YAML, indented by 2).
pub fn store(spec: &str) -> ValidatedStore {
    store_from_yaml(&manifest(spec))
}

/// The manifest text behind [`store`].
pub fn manifest(spec: &str) -> String {
    format!(
        "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\nmetadata:\n  name: checkout\n  namespace: shop\n  uid: 11111111-2222-3333-4444-555555555555\nspec:\n  clients:\n    podSelector: {{matchLabels: {{app: checkout}}}}\n{spec}"
    )
}

/// Development profile, standalone, no persistence.
pub fn development() -> ValidatedStore {
    store("  profile: development\n")
}

/// Production profile: 3 replicas, snapshot persistence.
pub fn production() -> ValidatedStore {
    store("  profile: production\n")
}

/// Every shape of pod template the builders produce: profiles, TLS, exporter, HA, user scheduling.
pub fn all_shapes() -> Vec<(&'static str, ValidatedStore)> {
    let tls = "  tls: {enabled: true, secretName: checkout-tls}\n";
    let exporter = "  monitoring: {exporter: true, serviceMonitor: true}\n";
    vec![
        ("development", development()),
        ("production", production()),
        (
            "development+tls",
            store(&format!("  profile: development\n{tls}")),
        ),
        (
            "development+exporter",
            store(&format!("  profile: development\n{exporter}")),
        ),
        (
            "production+tls+exporter",
            store(&format!("  profile: production\n{tls}{exporter}")),
        ),
        (
            "production+5 replicas+appendOnly",
            store(
                "  replicas: 5\n  persistence: {mode: appendOnly, size: 5Gi, storageClassName: fast}\n",
            ),
        ),
        (
            "production+issuer",
            store("  tls: {enabled: true, issuerRef: {name: ca}}\n"),
        ),
    ]
}

/// The controller ownerReference every child of the `checkout` fixture carries, as JSON.
pub fn owner_references() -> serde_json::Value {
    serde_json::json!([{
        "apiVersion": "sessionstore.dev/v1alpha1",
        "kind": "SessionStore",
        "name": "checkout",
        "uid": "11111111-2222-3333-4444-555555555555",
        "controller": true
    }])
}

/// The full label set of a `checkout` child with this component, as JSON.
pub fn labels(component: &str) -> serde_json::Value {
    serde_json::json!({
        "app.kubernetes.io/name": "sessionstore",
        "app.kubernetes.io/instance": "checkout",
        "app.kubernetes.io/managed-by": "sessionstore-operator",
        "app.kubernetes.io/component": component
    })
}

/// The labels selecting the `checkout` pods, as JSON.
pub fn pod_selector() -> serde_json::Value {
    serde_json::json!({"app.kubernetes.io/name": "sessionstore", "app.kubernetes.io/instance": "checkout"})
}
