//! An in-process Kubernetes API double for reconcile tests and the benchmark: it stores what it is
//! sent (GET / POST / server-side-apply PATCH / DELETE by path), answers like the API server does for
//! the calls the reconcile makes (404 Status, 409 on create of an existing name, echo of the stored
//! object), injects faults on request, and logs every call with its verb, URI and body.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use sessionstore_operator::cache::{ChildKind, LiveChild, MemoryCache};

/// One request the reconcile sent.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    /// Path and query, as sent.
    pub uri: String,
    pub body: Option<Value>,
}

impl Call {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// `"PATCH /api/v1/namespaces/shop/configmaps/web-config"`, for readable assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path())
    }

    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

/// A fault to inject: answer `code` to the first `times` requests whose method matches and whose
/// path contains `path_contains`.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Method,
    pub path_contains: String,
    pub code: u16,
    pub times: usize,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    log: Vec<Call>,
    faults: Vec<Fault>,
    resource_version: u64,
}

/// The double; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct ApiDouble {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message, "metadata": {}})
}

/// A collection path + name from a POST body.
fn object_path(collection: &str, body: &Value) -> String {
    format!(
        "{collection}/{}",
        body.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    )
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_object() && t.get(k).is_some_and(Value::is_object) {
                    if let Some(slot) = t.get_mut(k) {
                        merge(slot, v);
                    }
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// A LIST of the objects stored directly under a collection path, filtered by an equality-only
/// `labelSelector` (`k=v,k2=v2`), as the API server answers it.
fn list(objects: &BTreeMap<String, Value>, collection: &str, uri: &str) -> Value {
    let selector: Vec<(String, String)> = uri
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("labelSelector="))
        .flat_map(|s| {
            let decoded = s
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/");
            decoded
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let prefix = format!("{collection}/");
    let items: Vec<Value> = objects
        .iter()
        .filter(|(path, _)| {
            path.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.contains('/'))
        })
        .filter(|(_, object)| {
            selector.iter().all(|(k, v)| {
                object
                    .pointer("/metadata/labels")
                    .and_then(|l| l.get(k))
                    .and_then(Value::as_str)
                    == Some(v.as_str())
            })
        })
        .map(|(_, object)| object.clone())
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

impl ApiDouble {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores an object at its API path (e.g. a Secret that already exists).
    pub fn put(&self, path: &str, object: Value) {
        self.lock().objects.insert(path.into(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    pub fn remove(&self, path: &str) {
        self.lock().objects.remove(path);
    }

    /// Every stored object whose path contains `fragment`.
    pub fn objects(&self, fragment: &str) -> Vec<(String, Value)> {
        self.lock()
            .objects
            .iter()
            .filter(|(p, _)| p.contains(fragment))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect()
    }

    pub fn fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Takes the calls logged so far.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().log)
    }

    /// Answers one request.
    pub async fn respond(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let path = parts.uri.path().to_string();
        let (code, answer) = self.handle(&parts.method, &uri, &path, body);
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }

    fn handle(&self, method: &Method, uri: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut state = self.lock();
        state.log.push(Call {
            method: method.clone(),
            uri: uri.into(),
            body: body.clone(),
        });
        if let Some(fault) = state
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == *method && path.contains(&f.path_contains))
        {
            fault.times -= 1;
            let code = fault.code;
            return (code, status(code, "InjectedFault", "injected by the test"));
        }
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        match *method {
            Method::GET => match state.objects.get(path) {
                Some(object) => (200, object.clone()),
                None if path.ends_with("/pods") => (200, list(&state.objects, path, uri)),
                None => (404, status(404, "NotFound", "not found")),
            },
            Method::POST => {
                let Some(mut body) = body else {
                    return (400, status(400, "BadRequest", "no body"));
                };
                if path.ends_with("/events") {
                    return (201, body);
                }
                let key = object_path(path, &body);
                if state.objects.contains_key(&key) {
                    return (409, status(409, "AlreadyExists", "already exists"));
                }
                body["metadata"]["resourceVersion"] = json!(rv);
                body["metadata"]["uid"] = json!(format!("uid-{rv}"));
                state.objects.insert(key, body.clone());
                (201, body)
            }
            Method::PATCH => {
                let Some(patch) = body else {
                    return (400, status(400, "BadRequest", "no body"));
                };
                if let Some(object_path) = path.strip_suffix("/status") {
                    let Some(object) = state.objects.get_mut(object_path) else {
                        return (404, status(404, "NotFound", "not found"));
                    };
                    object["status"] = patch.get("status").cloned().unwrap_or(Value::Null);
                    object["metadata"]["resourceVersion"] = json!(rv);
                    return (200, object.clone());
                }
                let object = match state.objects.get(path) {
                    Some(existing) => {
                        let mut merged = existing.clone();
                        let spec_changed = existing.get("spec") != patch.get("spec");
                        merge(&mut merged, &patch);
                        let generation = existing
                            .pointer("/metadata/generation")
                            .and_then(Value::as_i64)
                            .unwrap_or(1);
                        merged["metadata"]["generation"] = json!(if spec_changed {
                            generation + 1
                        } else {
                            generation
                        });
                        merged
                    }
                    None => {
                        let mut created = patch.clone();
                        created["metadata"]["generation"] = json!(1);
                        created["metadata"]["uid"] = json!(format!("uid-{rv}"));
                        created
                    }
                };
                let mut object = object;
                object["metadata"]["resourceVersion"] = json!(rv);
                state.objects.insert(path.into(), object.clone());
                (200, object)
            }
            Method::DELETE => match state.objects.remove(path) {
                Some(_) => (200, status(200, "Deleted", "deleted")),
                None => (404, status(404, "NotFound", "not found")),
            },
            _ => (
                405,
                status(405, "MethodNotAllowed", "not supported by the double"),
            ),
        }
    }
}

/// A kube `Client` whose requests are answered by the double, through `tower_test`'s mock pair
/// (the kube-rs `ApiServerVerifier` pattern) with a task serving the handle.
pub fn mock_client(double: &ApiDouble) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = double.clone();
    let task = tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            send.send_response(server.respond(request).await);
        }
    });
    (kube::Client::new(service, "default"), task)
}

impl ApiDouble {
    /// Feeds `cache` what the operator's label-selected watches would hold: the metadata of every
    /// stored child.
    pub fn fill_cache(&self, cache: &MemoryCache) {
        for (fragment, kind) in [
            ("/configmaps/", ChildKind::ConfigMap),
            ("/services/", ChildKind::Service),
            ("/statefulsets/", ChildKind::StatefulSet),
            ("/networkpolicies/", ChildKind::NetworkPolicy),
            ("/poddisruptionbudgets/", ChildKind::PodDisruptionBudget),
        ] {
            for (_, object) in self.objects(fragment) {
                let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
                    serde_json::from_value(object["metadata"].clone()).expect("metadata");
                cache.insert(
                    kind,
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                    LiveChild::from_meta(&meta),
                );
            }
        }
    }
}
