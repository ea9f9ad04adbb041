//! The real reconcile over the API double, with what rotation and TLS scenarios need on top of the
//! basic double: spec edits, Secret reads (decoded), pods with a loopback address, and a real
//! `redis-server` started from the Secrets the reconcile created. The store declares the test
//! engine (`support::engine`: every crate using this module also declares `mod support`).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{Value, json};
use sessionstore_operator::build::StoreCredentials;
use sessionstore_operator::cache::MemoryCache;
use sessionstore_operator::context::Context;
use sessionstore_operator::crd::SessionStore;
use sessionstore_operator::metrics::{self, Metrics};
use sessionstore_operator::password::Password;
use sessionstore_operator::reconcile::reconcile;
use sessionstore_operator::rotation::addresses::ListPods;
use sessionstore_operator::settings::OperatorSettings;
use sessionstore_operator::validate::{ValidatedStore, validate};

use crate::api_double::{ApiDouble, mock_client};

pub const STORE_PATH: &str = "/apis/sessionstore.dev/v1alpha1/namespaces/shop/sessionstores/web";
pub const SECRETS: &str = "/api/v1/namespaces/shop/secrets";
pub const PODS: &str = "/api/v1/namespaces/shop/pods";

pub fn store_json(spec: Value) -> Value {
    json!({
        "apiVersion": "sessionstore.dev/v1alpha1",
        "kind": "SessionStore",
        "metadata": {"name": "web", "namespace": "shop", "uid": "5e55-1", "generation": 1, "resourceVersion": "1"},
        "spec": spec,
    })
}

pub struct Harness {
    pub double: ApiDouble,
    pub cache: Arc<MemoryCache>,
    pub ctx: Arc<Context>,
    _server: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A store with `spec` (declaring the test engine); a rotation dials pods on loopback at
    /// `redis_port`.
    pub fn new(mut spec: Value, redis_port: u16) -> Self {
        crate::support::engine::declare_json(&mut spec);
        let double = ApiDouble::new();
        double.put(STORE_PATH, store_json(spec));
        let cache = MemoryCache::new();
        let (client, server) = mock_client(&double);
        let (_registry, metrics): (_, Metrics) = metrics::new_registry();
        let ctx = Context::new(client, OperatorSettings::default(), cache.clone(), metrics)
            .with_pod_addresses(Arc::new(ListPods {
                port: redis_port,
                ..ListPods::default()
            }));
        Harness {
            double,
            cache,
            ctx: Arc::new(ctx),
            _server: server,
        }
    }

    /// A fresh Context over the same double and cache (an operator restart), dialling pods at
    /// `redis_port`.
    pub fn restarted(&self, redis_port: u16) -> Harness {
        self.restarted_with(ListPods {
            port: redis_port,
            ..ListPods::default()
        })
    }

    /// A fresh Context over the same double and cache, dialling pods (and an HA store's
    /// Sentinels) where `pods` says.
    pub fn restarted_with(&self, pods: ListPods) -> Harness {
        let (client, server) = mock_client(&self.double);
        let (_registry, metrics): (_, Metrics) = metrics::new_registry();
        let ctx = Context::new(
            client,
            OperatorSettings::default(),
            self.cache.clone(),
            metrics,
        )
        .with_pod_addresses(Arc::new(pods));
        Harness {
            double: self.double.clone(),
            cache: self.cache.clone(),
            ctx: Arc::new(ctx),
            _server: server,
        }
    }

    pub fn store(&self) -> Arc<SessionStore> {
        let value = self.double.get(STORE_PATH).expect("store seeded");
        Arc::new(serde_json::from_value(value).expect("a SessionStore"))
    }

    pub fn validated(&self) -> ValidatedStore {
        validate(&self.store()).expect("valid store")
    }

    pub async fn reconcile(&self) -> sessionstore_operator::Result<Action> {
        tokio::time::timeout(
            Duration::from_secs(30),
            reconcile(self.store(), self.ctx.clone()),
        )
        .await
        .expect("reconcile finishes")
    }

    /// Edits the spec as `kubectl apply` would: the generation moves on.
    pub fn edit_spec(&self, edit: impl FnOnce(&mut Value)) {
        let mut store = self.double.get(STORE_PATH).expect("store");
        edit(&mut store["spec"]);
        let generation = store["metadata"]["generation"].as_i64().unwrap_or(1);
        store["metadata"]["generation"] = json!(generation + 1);
        self.double.put(STORE_PATH, store);
    }

    /// Feeds the cache what label-selected watches would hold.
    pub fn sync_cache(&self) {
        self.double.fill_cache(&self.cache);
    }

    /// A running pod of the store, reachable on 127.0.0.1.
    pub fn add_pod(&self, name: &str) {
        self.double.put(
            &format!("{PODS}/{name}"),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "shop", "labels": {
                    "app.kubernetes.io/name": "sessionstore", "app.kubernetes.io/instance": "web"},
                    // As the StatefulSet controller sets it: the rotation dials only owned pods.
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "name": "web", "uid": "sts-web", "controller": true}]},
                "status": {"podIP": "127.0.0.1", "phase": "Running"},
            }),
        );
    }

    /// A key of a Secret the double holds, decoded.
    pub fn secret_data(&self, name: &str, key: &str) -> Option<String> {
        secret_data(&self.double, name, key)
    }

    /// The credentials the pods would mount now (connection password + internal passwords).
    pub fn stored_credentials(&self) -> StoreCredentials {
        let pw = |secret: &str, key: &str| {
            Password::from_secret_value(self.secret_data(secret, key).expect("stored password"))
        };
        StoreCredentials {
            app: pw("web-connection", "password"),
            app_previous: None,
            operator: pw("web-internal", "operator-password"),
            replication: pw("web-internal", "replication-password"),
            sentinel: pw("web-internal", "sentinel-password"),
            probe: pw("web-internal", "probe-password"),
        }
    }
}

pub fn secret_data(double: &ApiDouble, name: &str, key: &str) -> Option<String> {
    let secret = double.get(&format!("{SECRETS}/{name}"))?;
    let encoded = secret
        .pointer(&format!("/data/{key}"))?
        .as_str()?
        .to_string();
    let bytes: k8s_openapi::ByteString = serde_json::from_value(Value::String(encoded)).ok()?;
    String::from_utf8(bytes.0).ok()
}

/// A Secret as the API server would hold it (`data` base64).
pub fn secret_json(name: &str, type_: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let bytes = k8s_openapi::ByteString(v.as_bytes().to_vec());
            (k.to_string(), serde_json::to_value(bytes).expect("base64"))
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"},
        "type": type_,
        "data": data,
    })
}
