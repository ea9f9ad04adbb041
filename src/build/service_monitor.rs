//! The prometheus-operator `ServiceMonitor` `<name>` of a store with
//! `spec.monitoring.serviceMonitor`: it scrapes the exporter sidecar through the headless Service.
//! Typed here (prometheus-operator's API is not in k8s-openapi) and built like every other child;
//! `crate::service_monitor` discovers the API and applies or removes it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::build::meta::{ChildNames, Component, object_meta};
use crate::build::service::desired_headless_service;
use crate::validate::ValidatedStore;

pub const MONITORING_GROUP: &str = "monitoring.coreos.com";
pub const MONITORING_VERSION: &str = "v1";
pub const SERVICE_MONITOR_KIND: &str = "ServiceMonitor";
/// Name of the exporter port on the headless Service (and the pods).
pub const METRICS_PORT_NAME: &str = "metrics";
pub const SCRAPE_INTERVAL: &str = "30s";

/// A prometheus-operator `monitoring.coreos.com/v1` `ServiceMonitor`, as much of it as the
/// operator sets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub namespace_selector: NamespaceSelector,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    pub match_names: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub port: String,
    pub interval: String,
    pub relabelings: Vec<RelabelConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub regex: String,
    pub action: String,
}

/// The ServiceMonitor for a store, whether or not the spec asks for one (the caller decides; see
/// [`desired_service_monitor_if_enabled`]). The ClusterIP Service carries the same labels as the
/// headless one (both come from `object_meta` with `Component::Redis`) but no `metrics` port; the
/// `keep` relabeling on the Service name makes the selection exact anyway, so every pod is scraped
/// once, through `<name>-headless`, whatever labels the two Services come to share.
pub fn desired_service_monitor(store: &ValidatedStore) -> ServiceMonitor {
    let headless = desired_headless_service(store);
    let headless_name = ChildNames::headless_service(&store.name);
    let match_labels = headless.metadata.labels.unwrap_or_default();
    ServiceMonitor {
        api_version: format!("{MONITORING_GROUP}/{MONITORING_VERSION}"),
        kind: SERVICE_MONITOR_KIND.into(),
        metadata: object_meta(store, store.name.clone(), Component::Redis),
        spec: ServiceMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(match_labels),
                match_expressions: None,
            },
            namespace_selector: NamespaceSelector {
                match_names: vec![store.namespace.clone()],
            },
            endpoints: vec![Endpoint {
                port: METRICS_PORT_NAME.into(),
                interval: SCRAPE_INTERVAL.into(),
                relabelings: vec![RelabelConfig {
                    source_labels: vec!["__meta_kubernetes_service_name".into()],
                    regex: headless_name,
                    action: "keep".into(),
                }],
            }],
        },
    }
}

/// The ServiceMonitor when `spec.monitoring.serviceMonitor` asks for one.
pub fn desired_service_monitor_if_enabled(store: &ValidatedStore) -> Option<ServiceMonitor> {
    store
        .monitoring
        .service_monitor
        .then(|| desired_service_monitor(store))
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::build::fixtures;

    fn store(monitoring: &str) -> ValidatedStore {
        fixtures::store_from_yaml(&format!(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
             metadata: {{name: web, namespace: shop, uid: u1}}\n\
             spec:\n  clients: {{podSelector: {{}}}}\n  monitoring: {monitoring}\n"
        ))
    }

    #[test]
    fn the_service_monitor_scrapes_the_headless_metrics_port_every_30s() {
        let store = store("{exporter: true, serviceMonitor: true}");
        let labels = json!({
            "app.kubernetes.io/name": "sessionstore",
            "app.kubernetes.io/instance": "web",
            "app.kubernetes.io/managed-by": "sessionstore-operator",
            "app.kubernetes.io/component": "redis",
        });
        assert_eq!(
            serde_json::to_value(desired_service_monitor(&store)).expect("json"),
            json!({
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": {
                    "name": "web",
                    "namespace": "shop",
                    "labels": labels,
                    "ownerReferences": [serde_json::to_value(&store.owner_reference).expect("json")],
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "namespaceSelector": {"matchNames": ["shop"]},
                    "endpoints": [{
                        "port": "metrics",
                        "interval": "30s",
                        "relabelings": [{
                            "sourceLabels": ["__meta_kubernetes_service_name"],
                            "regex": "web-headless",
                            "action": "keep",
                        }],
                    }],
                },
            })
        );
        assert_eq!(store.owner_reference.uid, "u1");
        assert_eq!(store.owner_reference.controller, Some(true));
    }

    #[test]
    fn the_port_it_names_is_on_the_headless_service_only() {
        let store = store("{exporter: true, serviceMonitor: true}");
        let port_names = |service: k8s_openapi::api::core::v1::Service| -> Vec<String> {
            service
                .spec
                .and_then(|s| s.ports)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.name)
                .collect()
        };
        assert!(
            port_names(desired_headless_service(&store)).contains(&METRICS_PORT_NAME.to_string())
        );
        assert!(
            !port_names(crate::build::service::desired_service(&store))
                .contains(&METRICS_PORT_NAME.to_string())
        );
    }

    #[test]
    fn only_a_store_asking_for_one_has_one() {
        assert!(desired_service_monitor_if_enabled(&store("{exporter: true}")).is_none());
        assert!(
            desired_service_monitor_if_enabled(&store("{exporter: true, serviceMonitor: true}"))
                .is_some()
        );
    }
}
