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
//! | egress: the cluster DNS pods (`--dns-namespace` AND `--dns-pod-labels`) | 53/UDP, 53/TCP |

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::keys::METRICS_PORT;
use crate::build::meta::{ChildNames, Component, object_meta, pod_selector_labels};
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
        // DNS to the cluster DNS pods only (one peer: their namespace AND their labels, operator
        // settings defaulting to kube-system / k8s-app=kube-dns). Any destination on port 53 would
        // let a replica told `REPLICAOF <host> 53` send `AUTH replication <password>` anywhere.
        // Clusters whose DNS differs (openshift-dns, NodeLocal DNSCache on a host-network address)
        // set the two settings (README "Network").
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(match_labels(BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_string(),
                    settings.dns_namespace.clone(),
                )]))),
                pod_selector: Some(match_labels(settings.dns_pod_labels.clone())),
                ip_block: None,
            }]),
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

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::build::fixtures;

    fn policy(ingress: serde_json::Value, egress: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {
                "name": "checkout",
                "namespace": "shop",
                "labels": fixtures::labels("network"),
                "ownerReferences": fixtures::owner_references()
            },
            "spec": {
                "podSelector": {"matchLabels": fixtures::pod_selector()},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": egress
            }
        }))
        .unwrap()
    }

    fn operator_peer() -> serde_json::Value {
        json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sessionstore-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "sessionstore-operator"}}
        })
    }

    fn own_pods() -> serde_json::Value {
        json!({"podSelector": {"matchLabels": fixtures::pod_selector()}})
    }

    fn dns() -> serde_json::Value {
        json!({
            "to": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
            }],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        })
    }

    #[test]
    fn standalone_same_namespace_clients() {
        let built = desired_network_policy(&fixtures::development(), &OperatorSettings::default());
        let redis = json!([{"port": 6379, "protocol": "TCP"}]);
        let expected = policy(
            json!([{
                "from": [
                    // No namespaceSelector: the client pods of the store's own namespace only.
                    {"podSelector": {"matchLabels": {"app": "checkout"}}},
                    operator_peer(),
                    own_pods()
                ],
                "ports": redis
            }]),
            json!([{"to": [own_pods()], "ports": redis}, dns()]),
        );
        assert_eq!(built, expected);
    }

    #[test]
    fn highly_available_with_namespace_selector_and_metrics() {
        let store = fixtures::store(
            "    namespaceSelector: {matchLabels: {team: payments}}\n  monitoring: {exporter: true}\n",
        );
        let settings = OperatorSettings {
            operator_namespace: "platform".into(),
            operator_pod_labels: BTreeMap::from([("app".to_string(), "sso".to_string())]),
            monitoring_namespace_labels: BTreeMap::from([(
                "purpose".to_string(),
                "prometheus".to_string(),
            )]),
            ..OperatorSettings::default()
        };
        let built = desired_network_policy(&store, &settings);
        let redis = json!([{"port": 6379, "protocol": "TCP"}, {"port": 26379, "protocol": "TCP"}]);
        let expected = policy(
            json!([
                {
                    "from": [
                        // ONE peer with both selectors: AND, not OR.
                        {
                            "podSelector": {"matchLabels": {"app": "checkout"}},
                            "namespaceSelector": {"matchLabels": {"team": "payments"}}
                        },
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform"}},
                            "podSelector": {"matchLabels": {"app": "sso"}}
                        },
                        own_pods()
                    ],
                    "ports": redis
                },
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"purpose": "prometheus"}}}],
                    "ports": [{"port": 9121, "protocol": "TCP"}]
                }
            ]),
            json!([{"to": [own_pods()], "ports": redis}, dns()]),
        );
        assert_eq!(built, expected);
    }

    /// A selector that matches everything: absent, or with neither labels nor expressions.
    fn matches_everything(selector: Option<&LabelSelector>) -> bool {
        selector.is_none_or(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        })
    }

    #[test]
    fn no_peer_is_wider_than_intended() {
        let settings = OperatorSettings::default();
        for (shape, store) in fixtures::all_shapes() {
            let spec = desired_network_policy(&store, &settings).spec.unwrap();
            assert_eq!(
                spec.policy_types,
                Some(vec!["Ingress".to_string(), "Egress".to_string()]),
                "{shape}"
            );
            assert!(
                !matches_everything(spec.pod_selector.as_ref()),
                "{shape}: policy must select the store's pods"
            );
            for rule in spec.ingress.unwrap() {
                // Every rule names its ports and its peers; none admits all sources.
                let ports = rule.ports.unwrap();
                assert!(!ports.is_empty(), "{shape}");
                let peers = rule.from.unwrap();
                assert!(!peers.is_empty(), "{shape}");
                for peer in peers {
                    assert_eq!(peer.ip_block, None, "{shape}");
                    let metrics_only = ports
                        .iter()
                        .all(|p| p.port == Some(IntOrString::Int(METRICS_PORT)));
                    if metrics_only {
                        // The monitoring namespace is the only peer without a pod selector, and only for metrics.
                        assert!(
                            !matches_everything(peer.namespace_selector.as_ref()),
                            "{shape}"
                        );
                        assert_eq!(peer.pod_selector, None, "{shape}");
                    } else {
                        assert!(
                            !matches_everything(peer.pod_selector.as_ref()),
                            "{shape}: {peer:?}"
                        );
                        assert!(
                            !ports
                                .iter()
                                .any(|p| p.port == Some(IntOrString::Int(METRICS_PORT))),
                            "{shape}: metrics port mixed into a Redis rule"
                        );
                    }
                }
            }
            for rule in spec.egress.unwrap() {
                let ports = rule.ports.unwrap();
                let peers = rule
                    .to
                    .unwrap_or_else(|| panic!("{shape}: egress to anywhere"));
                assert!(!peers.is_empty(), "{shape}: egress to anywhere");
                let dns = ports.iter().all(|p| p.port == Some(IntOrString::Int(53)));
                match dns {
                    // Port 53 only to the DNS pods: their namespace AND their labels, one peer.
                    true => {
                        assert_eq!(peers.len(), 1, "{shape}");
                        assert_eq!(peers[0].ip_block, None, "{shape}");
                        assert!(
                            !matches_everything(peers[0].pod_selector.as_ref()),
                            "{shape}"
                        );
                        assert!(
                            !matches_everything(peers[0].namespace_selector.as_ref()),
                            "{shape}"
                        );
                    }
                    false => {
                        for peer in peers {
                            assert_eq!(
                                peer.namespace_selector, None,
                                "{shape}: egress leaves the namespace"
                            );
                            assert_eq!(
                                peer.pod_selector,
                                Some(match_labels(pod_selector_labels(&store))),
                                "{shape}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dns_egress_follows_the_operator_settings() {
        let settings = OperatorSettings {
            dns_namespace: "openshift-dns".into(),
            dns_pod_labels: BTreeMap::from([(
                "dns.operator.openshift.io/daemonset-dns".to_string(),
                "default".to_string(),
            )]),
            ..OperatorSettings::default()
        };
        let spec = desired_network_policy(&fixtures::production(), &settings)
            .spec
            .unwrap();
        let dns = spec.egress.unwrap().pop().unwrap();
        assert_eq!(
            serde_json::to_value(dns.to).unwrap(),
            json!([{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},
                "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default"}}
            }])
        );
    }

    #[test]
    fn metrics_port_is_closed_without_the_exporter() {
        let spec = desired_network_policy(&fixtures::production(), &OperatorSettings::default())
            .spec
            .unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        assert!(!text.contains("9121"));
        assert_eq!(spec.ingress.unwrap().len(), 1);
    }
}
