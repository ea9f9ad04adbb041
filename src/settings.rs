//! Operator-wide settings the builders need (who the operator is, where monitoring runs): set once
//! from flags at start-up, passed down explicitly, never read from the environment inside reconcile.

use std::collections::BTreeMap;

/// Default Redis image: a pinned release, so an operator upgrade never changes Redis by surprise.
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.2.5";
/// Default Valkey image (`spec.engine: valkey`), pinned as the Redis one.
pub const DEFAULT_VALKEY_IMAGE: &str = "valkey/valkey:8.0.1";
/// Where the cluster DNS pods run by default (CoreDNS and kube-dns both keep this name and label).
pub const DEFAULT_DNS_NAMESPACE: &str = "kube-system";
/// Default labels of the cluster DNS pods, as `--dns-pod-labels` takes them.
pub const DEFAULT_DNS_POD_LABELS: &str = "k8s-app=kube-dns";
/// Default Prometheus exporter sidecar image.
pub const DEFAULT_EXPORTER_IMAGE: &str = "oliver006/redis_exporter:v1.62.0";

/// The images a store gets when its spec names none (`--redis-image`, `--valkey-image`, `--exporter-image`): a
/// registry mirror for air-gapped clusters, or a new exporter with an operator upgrade. Changing
/// them rolls every store that does not pin its own image (an ordered rolling update for HA stores).
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultImages {
    pub redis: String,
    pub valkey: String,
    pub exporter: String,
}

impl DefaultImages {
    /// The default image of `engine`.
    pub fn server(&self, engine: crate::crd::Engine) -> &str {
        match engine {
            crate::crd::Engine::Redis => &self.redis,
            crate::crd::Engine::Valkey => &self.valkey,
        }
    }
}

impl Default for DefaultImages {
    fn default() -> Self {
        DefaultImages {
            redis: DEFAULT_REDIS_IMAGE.into(),
            valkey: DEFAULT_VALKEY_IMAGE.into(),
            exporter: DEFAULT_EXPORTER_IMAGE.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OperatorSettings {
    /// Namespace the operator's pods run in (NetworkPolicy ingress for health and rotation).
    pub operator_namespace: String,
    /// Labels of the operator's pods.
    pub operator_pod_labels: BTreeMap<String, String>,
    /// Labels selecting the namespace Prometheus scrapes from, when metrics are on.
    pub monitoring_namespace_labels: BTreeMap<String, String>,
    /// Cluster DNS domain used in endpoints (`<svc>.<ns>.svc.<domain>`).
    pub cluster_domain: String,
    /// Images of stores whose spec names none.
    pub images: DefaultImages,
    /// Namespace of the cluster DNS pods: the only DNS destination of the stores' pods.
    pub dns_namespace: String,
    /// Labels of the cluster DNS pods (in `dns_namespace`).
    pub dns_pod_labels: BTreeMap<String, String>,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            operator_namespace: "sessionstore-system".into(),
            operator_pod_labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "sessionstore-operator".to_string(),
            )]),
            monitoring_namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                "monitoring".to_string(),
            )]),
            cluster_domain: "cluster.local".into(),
            images: DefaultImages::default(),
            dns_namespace: DEFAULT_DNS_NAMESPACE.into(),
            dns_pod_labels: BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
        }
    }
}
