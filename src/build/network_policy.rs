//! The NetworkPolicy: Redis reachable only from `spec.clients`, the operator, the store's own pods
//! (and Prometheus when metrics are on); the pods themselves reach only each other and DNS.
//!
//! | peer | ports |
//! |---|---|
//! | `spec.clients` (podSelector AND namespaceSelector, one peer) | redis (+ sentinel when HA) |
//! | operator pods (its namespace AND its pod labels) | redis (+ sentinel when HA) |
//! | the store's own pods | redis (+ sentinel when HA) |
//! | monitoring namespace (exporter on) | metrics only |
//! | egress: the store's own pods | redis (+ sentinel when HA) |
//! | egress: DNS | 53/UDP, 53/TCP |

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::meta::{ChildNames, Component, object_meta, pod_selector_labels};
use crate::build::statefulset::METRICS_PORT;
use crate::settings::OperatorSettings;
use crate::validate::{REDIS_PORT, SENTINEL_PORT, ValidatedStore};

/// Label every namespace carries with its own name (set by the API server since Kubernetes 1.22).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub fn desired_network_policy(
    store: &ValidatedStore,
    settings: &OperatorSettings,
) -> NetworkPolicy {
    let redis_ports = redis_ports(store);
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(match_labels(pod_selector_labels(store))),
        ..NetworkPolicyPeer::default()
    };
    // Both selectors in ONE peer: pods matching podSelector inside namespaces matching
    // namespaceSelector. Without a namespaceSelector the peer means "this namespace only".
    let clients = NetworkPolicyPeer {
        pod_selector: Some(store.clients.pod_selector.clone()),
        namespace_selector: store.clients.namespace_selector.clone(),
        ip_block: None,
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(match_labels(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_string(),
            settings.operator_namespace.clone(),
        )]))),
        pod_selector: Some(match_labels(settings.operator_pod_labels.clone())),
        ip_block: None,
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![clients, operator, own_pods.clone()]),
        ports: Some(redis_ports.clone()),
    }];
    if store.monitoring.exporter {
        // Prometheus's pod labels differ between installations; its namespace is the boundary,
        // and this rule opens the metrics port only (the exporter holds no session data).
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(match_labels(
                    settings.monitoring_namespace_labels.clone(),
                )),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(METRICS_PORT)]),
        });
    }
    let egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![own_pods]),
            ports: Some(redis_ports),
        },
        // DNS to any destination, port 53 only: cluster DNS runs as CoreDNS/kube-dns pods, as
        // NodeLocal DNSCache on a link-local host-network address (no pod selector can match it) or
        // in `openshift-dns`; a selector on one of them breaks the others. Only DNS is reachable,
        // and a narrower peer would not stop DNS tunnelling, which recursive cluster DNS forwards.
        NetworkPolicyEgressRule {
            to: None,
            ports: Some(vec![
                NetworkPolicyPort {
                    port: Some(IntOrString::Int(53)),
                    protocol: Some("UDP".into()),
                    end_port: None,
                },
                tcp(53),
            ]),
        },
    ];
    NetworkPolicy {
        metadata: object_meta(
            store,
            ChildNames::network_policy(&store.name),
            Component::Network,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels(pod_selector_labels(store))),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// Redis, plus Sentinel when the store runs it (clients that are Sentinel-aware ask it for the primary).
fn redis_ports(store: &ValidatedStore) -> Vec<NetworkPolicyPort> {
    let mut ports = vec![tcp(REDIS_PORT)];
    if store.is_highly_available() {
        ports.push(tcp(SENTINEL_PORT));
    }
    ports
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}
