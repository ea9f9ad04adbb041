//! `render`: validate and build a SessionStore manifest with no cluster, as a YAML stream.
//! Secret values are redacted unless asked for, so a render can be pasted into a ticket safely.

use kube::CustomResourceExt;
use serde::Serialize;

use crate::build::{BuildInput, DesiredChildren, StoreCredentials, desired_children};
use crate::crd::SessionStore;
use crate::error::{Error, Result};
use crate::settings::OperatorSettings;
use crate::validate::validate_with;

/// What replaces every Secret value in a render without `--show-secrets`.
pub const REDACTED: &str = "<redacted>";

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> Result<String> {
    to_yaml("CustomResourceDefinition", &SessionStore::crd())
}

/// Parses every `SessionStore` document of a YAML stream (other kinds are an error).
pub fn parse_stores(source: &str, path: &str) -> Result<Vec<SessionStore>> {
    let mut stores = Vec::new();
    for document in serde_yaml::Deserializer::from_str(source) {
        let value = serde_yaml::Value::deserialize_from(document, path)?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if kind != "SessionStore" {
            return Err(Error::Input {
                path: path.into(),
                message: format!("expected kind SessionStore, found {kind:?}"),
            });
        }
        let store: SessionStore = serde_yaml::from_value(value).map_err(|e| Error::Input {
            path: path.into(),
            message: e.to_string(),
        })?;
        stores.push(store);
    }
    if stores.is_empty() {
        return Err(Error::Input {
            path: path.into(),
            message: "no SessionStore document found".into(),
        });
    }
    Ok(stores)
}

/// Validates and builds every store in `source`, returning the children as one YAML stream.
pub fn render(
    source: &str,
    path: &str,
    show_secrets: bool,
    settings: &OperatorSettings,
) -> Result<String> {
    let mut out = String::new();
    for mut store in parse_stores(source, path)? {
        if store.metadata.namespace.is_none() {
            store.metadata.namespace = Some("default".into());
        }
        let validated = validate_with(&store, &settings.images)?;
        let credentials = StoreCredentials::generate();
        let children = desired_children(&BuildInput::new(&validated, &credentials, settings));
        for document in child_documents(&children, show_secrets)? {
            out.push_str("---\n");
            out.push_str(&document);
        }
    }
    Ok(out)
}

/// Each child as a YAML document, in apply order.
fn child_documents(children: &DesiredChildren, show_secrets: bool) -> Result<Vec<String>> {
    let DesiredChildren {
        config_map,
        internal_secret,
        connection_secret,
        headless_service,
        service,
        statefulset,
        network_policy,
        pod_disruption_budget,
        certificate,
        service_monitor,
    } = children;
    let secret = |s: &k8s_openapi::api::core::v1::Secret| -> Result<String> {
        let mut value = to_value("Secret", s)?;
        if !show_secrets {
            redact_secret_values(&mut value);
        }
        to_yaml("Secret", &value)
    };
    let mut docs = vec![
        to_yaml(
            "ConfigMap",
            &with_type_meta::<k8s_openapi::api::core::v1::ConfigMap>(config_map)?,
        )?,
        secret(internal_secret)?,
        secret(connection_secret)?,
        to_yaml(
            "Service",
            &with_type_meta::<k8s_openapi::api::core::v1::Service>(headless_service)?,
        )?,
        to_yaml(
            "Service",
            &with_type_meta::<k8s_openapi::api::core::v1::Service>(service)?,
        )?,
        to_yaml(
            "StatefulSet",
            &with_type_meta::<k8s_openapi::api::apps::v1::StatefulSet>(statefulset)?,
        )?,
        to_yaml(
            "NetworkPolicy",
            &with_type_meta::<k8s_openapi::api::networking::v1::NetworkPolicy>(network_policy)?,
        )?,
    ];
    if let Some(pdb) = pod_disruption_budget {
        docs.push(to_yaml(
            "PodDisruptionBudget",
            &with_type_meta::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(pdb)?,
        )?);
    }
    // The optional APIs' objects, as the controller applies them when their API is installed.
    if let Some(certificate) = certificate {
        docs.push(to_yaml("Certificate", certificate)?);
    }
    if let Some(service_monitor) = service_monitor {
        docs.push(to_yaml("ServiceMonitor", service_monitor)?);
    }
    Ok(docs)
}

/// k8s-openapi serializes `apiVersion` and `kind` itself; this keeps the JSON value form uniform.
fn with_type_meta<K: Serialize>(object: &K) -> Result<serde_json::Value> {
    to_value(std::any::type_name::<K>(), object)
}

fn redact_secret_values(secret: &mut serde_json::Value) {
    for field in ["data", "stringData"] {
        if let Some(map) = secret.get_mut(field).and_then(|d| d.as_object_mut()) {
            for value in map.values_mut() {
                *value = serde_json::Value::String(REDACTED.into());
            }
        }
    }
}

fn to_value<T: Serialize>(what: &str, object: &T) -> Result<serde_json::Value> {
    serde_json::to_value(object).map_err(|source| Error::Serialize {
        what: what.into(),
        source,
    })
}

fn to_yaml<T: Serialize>(what: &str, object: &T) -> Result<String> {
    serde_yaml::to_string(object).map_err(|e| Error::Input {
        path: what.into(),
        message: format!("serializing to YAML: {e}"),
    })
}

trait DeserializeDocument: Sized {
    fn deserialize_from(document: serde_yaml::Deserializer<'_>, path: &str) -> Result<Self>;
}

impl DeserializeDocument for serde_yaml::Value {
    fn deserialize_from(document: serde_yaml::Deserializer<'_>, path: &str) -> Result<Self> {
        serde::Deserialize::deserialize(document).map_err(|e| Error::Input {
            path: path.into(),
            message: e.to_string(),
        })
    }
}
