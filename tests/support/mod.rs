//! Helpers shared by the integration tests: SessionStore manifests, validated stores and
//! credentials, the engine the real-server suites run (`engine`), where the Valkey binaries are
//! (`valkey`), the port allocator, a real server harness and a throw-away PKI made with `openssl`.
// Each test crate compiles this module and uses a different subset of it.
#![allow(dead_code)]

pub mod engine;
pub mod ports;
pub mod redis_server;
pub mod tls;
pub mod valkey;

use sessionstore_operator::build::StoreCredentials;
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::validate::{ValidatedStore, validate};

/// A development store with only the required fields: profile defaults do the rest.
pub const DEVELOPMENT: &str = r#"
apiVersion: sessionstore.dev/v1alpha1
kind: SessionStore
metadata: {name: checkout, namespace: shop}
spec:
  profile: development
  clients: {podSelector: {matchLabels: {app: checkout}}}
"#;

/// A production store exercising the fields that reach `redis.conf` and the ACL file.
pub const PRODUCTION: &str = r#"
apiVersion: sessionstore.dev/v1alpha1
kind: SessionStore
metadata: {name: checkout, namespace: shop}
spec:
  profile: production
  clients: {podSelector: {matchLabels: {app: checkout}}}
  memory: {limit: 256Mi, maxmemory: 100Mi, evictionPolicy: allkeys-lfu}
  sessions: {keyPrefix: "sess:"}
  persistence: {mode: appendOnly}
  connection: {timeoutSeconds: 120, tcpKeepaliveSeconds: 60, maxClients: 500}
  extraConfig: {hz: "20", notify-keyspace-events: Ex}
  # None of these is in @dangerous or @scripting: refusing them proves the deny-list itself works.
  disabledCommands: [OBJECT, touch, "@pubsub", "client|setname"]
"#;

/// Parses one SessionStore manifest (panics on a bad test fixture). A manifest that names no
/// `spec.engine` declares the test engine (`engine::declare`); one that names it keeps it.
pub fn store_from_yaml(yaml: &str) -> SessionStore {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml)
        .unwrap_or_else(|e| panic!("test manifest does not parse: {e}\n{yaml}"));
    let names_engine = value.get("spec").and_then(|s| s.get("engine")).is_some();
    let mut store: SessionStore = serde_yaml::from_value(value)
        .unwrap_or_else(|e| panic!("test manifest is not a SessionStore: {e}\n{yaml}"));
    if !names_engine {
        engine::declare(&mut store);
    }
    store
}

/// Parses and validates a manifest that the test expects to be valid.
pub fn validated(yaml: &str) -> ValidatedStore {
    validate(&store_from_yaml(yaml)).unwrap_or_else(|e| panic!("test manifest is invalid: {e}"))
}

/// Fresh credentials, as a new store would get them.
pub fn credentials() -> StoreCredentials {
    StoreCredentials::generate()
}
