//! The ClusterIP Service `<name>` (primary only) and the headless `<name>-headless`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::keys::METRICS_PORT;
use crate::build::meta::{ChildNames, Component, ROLE_LABEL, object_meta, pod_selector_labels};
use crate::validate::{REDIS_PORT, SENTINEL_PORT, ValidatedStore};

/// Value of [`ROLE_LABEL`] the operator puts on the current primary pod.
pub const PRIMARY_ROLE: &str = "primary";

/// What applications connect to. With Sentinel (replicas >= 3) it selects only the pod the operator
/// labelled primary, so clients need not be Sentinel-aware and never write to a read-only replica;
/// a standalone store has exactly one pod, which the plain selector finds.
pub fn desired_service(store: &ValidatedStore) -> Service {
    let mut selector = pod_selector_labels(store);
    if store.is_highly_available() {
        selector.insert(ROLE_LABEL.into(), PRIMARY_ROLE.into());
    }
    Service {
        metadata: object_meta(store, ChildNames::service(&store.name), Component::Redis),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![port("redis", REDIS_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Per-pod DNS (`<pod>.<name>-headless`) for replication, Sentinel and the exporter's scrape.
/// Not-ready pods are published: a replica must resolve its primary, and Sentinels each other,
/// before any of them is ready.
pub fn desired_headless_service(store: &ValidatedStore) -> Service {
    let mut ports = vec![port("redis", REDIS_PORT)];
    if store.is_highly_available() {
        ports.push(port("sentinel", SENTINEL_PORT));
    }
    if store.monitoring.exporter {
        ports.push(port("metrics", METRICS_PORT));
    }
    Service {
        metadata: object_meta(
            store,
            ChildNames::headless_service(&store.name),
            Component::Redis,
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(pod_selector_labels(store)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::build::fixtures;

    fn service(name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": "shop",
                "labels": fixtures::labels("redis"),
                "ownerReferences": fixtures::owner_references()
            },
            "spec": spec
        }))
        .unwrap()
    }

    fn redis_port() -> serde_json::Value {
        json!({"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"})
    }

    #[test]
    fn standalone_service_selects_the_single_pod() {
        let store = fixtures::development();
        let expected = service(
            "checkout",
            json!({"type": "ClusterIP", "selector": fixtures::pod_selector(), "ports": [redis_port()]}),
        );
        assert_eq!(desired_service(&store), expected);
    }

    #[test]
    fn highly_available_service_selects_only_the_primary() {
        let store = fixtures::production();
        let mut selector = fixtures::pod_selector();
        selector["sessionstore.dev/role"] = json!("primary");
        let expected = service(
            "checkout",
            json!({"type": "ClusterIP", "selector": selector, "ports": [redis_port()]}),
        );
        assert_eq!(desired_service(&store), expected);
    }

    #[test]
    fn standalone_headless_service_publishes_not_ready_pods() {
        let store = fixtures::development();
        let expected = service(
            "checkout-headless",
            json!({
                "type": "ClusterIP",
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": fixtures::pod_selector(),
                "ports": [redis_port()]
            }),
        );
        assert_eq!(desired_headless_service(&store), expected);
    }

    #[test]
    fn highly_available_headless_service_adds_sentinel_and_metrics_ports() {
        let store = fixtures::store("  monitoring: {exporter: true}\n");
        let expected = service(
            "checkout-headless",
            json!({
                "type": "ClusterIP",
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": fixtures::pod_selector(),
                "ports": [
                    redis_port(),
                    {"name": "sentinel", "port": 26379, "targetPort": "sentinel", "protocol": "TCP"},
                    {"name": "metrics", "port": 9121, "targetPort": "metrics", "protocol": "TCP"}
                ]
            }),
        );
        assert_eq!(desired_headless_service(&store), expected);
    }
}
