//! Where a rotation finds the Redis pods (and Sentinels) of a store: the [`PodAddresses`] hook the
//! `Context` holds, asked only while a live step is due, so a store that is not rotating never
//! lists its pods. [`ListPods`] lists them by their selector labels and keeps only the store's own.

use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use redis::ConnectionAddr;

use crate::build::TlsInputs;
use crate::build::meta::{ChildNames, pod_selector_labels};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::metrics::Verb;
use crate::pods::{is_pod_of, label_selector};
use crate::redis_client::tls_connection_addr;
use crate::rotation::{LiveTargets, PodEndpoint, RotationError};
use crate::settings::OperatorSettings;
use crate::validate::{REDIS_PORT, SENTINEL_PORT, ValidatedStore};

/// Where the Redis pods (and Sentinels) of a store can be reached, for the live ACL changes.
pub trait PodAddresses: Send + Sync {
    /// Every pod of the store, and for a highly available store every pod's Sentinel.
    /// `Ok(None)`: some pod has no address yet (the caller waits).
    fn endpoints<'a>(
        &'a self,
        cluster: Cluster<'a>,
        store: &'a ValidatedStore,
        tls: Option<&'a TlsInputs>,
    ) -> BoxFuture<'a, Result<Option<LiveTargets>>>;
}

/// Lists the store's pods by their selector labels (only while a live step is due), keeps those
/// the store owns ([`is_store_pod`]: labels are not proof, anyone who can create pods in the
/// namespace can copy them) and dials each by its IP (plain) or by its stable DNS name under the headless Service (TLS: the certificate
/// names the Service names, and the store's CA is the only one trusted). The Sentinel of an HA pod
/// is dialled the same way on its own port (it listens on TLS only when the store has TLS, with the
/// same certificate).
#[derive(Clone, Debug)]
pub struct ListPods {
    /// Redis port of every pod.
    pub port: u16,
    /// Sentinel port of every pod (highly available stores).
    pub sentinel_port: u16,
}

impl Default for ListPods {
    fn default() -> Self {
        ListPods {
            port: u16::try_from(REDIS_PORT).unwrap_or(6379),
            sentinel_port: u16::try_from(SENTINEL_PORT).unwrap_or(26379),
        }
    }
}

impl PodAddresses for ListPods {
    fn endpoints<'a>(
        &'a self,
        cluster: Cluster<'a>,
        store: &'a ValidatedStore,
        tls: Option<&'a TlsInputs>,
    ) -> BoxFuture<'a, Result<Option<LiveTargets>>> {
        Box::pin(async move {
            let selector = label_selector(&pod_selector_labels(store));
            let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &store.namespace);
            cluster.metrics.api_request(Verb::List);
            let pods = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| Error::kube(format!("listing Pods of {}", store.name), e))?;
            let mut targets = LiveTargets::default();
            let sentinels = store.is_highly_available();
            for pod in pods.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if !is_store_pod(&pod, store) {
                    tracing::warn!(pod = %name, "pod carries the store's labels but is not its pod; not dialled");
                    continue;
                }
                let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
                let Some(ip) = ip.filter(|ip| !ip.is_empty()) else {
                    tracing::info!(pod = %name, "pod has no IP yet; rotation waits");
                    return Ok(None);
                };
                let addr = |port: u16| match store.tls.as_ref() {
                    None => Ok(ConnectionAddr::Tcp(ip.clone(), port)),
                    Some(_) => tls_addr(
                        cluster.settings,
                        store,
                        &name,
                        port,
                        tls.and_then(|t| t.ca_crt.as_ref()),
                    ),
                };
                if sentinels {
                    targets.sentinels.push(PodEndpoint {
                        name: format!("{name} (sentinel)"),
                        addr: addr(self.sentinel_port)?,
                    });
                }
                targets.redis.push(PodEndpoint {
                    addr: addr(self.port)?,
                    name,
                });
            }
            Ok(Some(targets))
        })
    }
}

/// Whether a listed pod is one of the store's own: named `<store>-<ordinal>` (as the probe cache
/// checks) and controlled by the store's StatefulSet. The operator sends this pod its own password
/// and the app user's new password (in `AUTH`, to verify), so a look-alike must not get them.
pub fn is_store_pod(pod: &Pod, store: &ValidatedStore) -> bool {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let statefulset = ChildNames::statefulset(&store.name);
    let controlled = pod.metadata.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.api_version == "apps/v1"
            && o.kind == "StatefulSet"
            && o.name == statefulset
    });
    is_pod_of(name, &store.name) && controlled
}

/// A TLS address trusting only the store's CA, named as the certificate names the pod.
fn tls_addr(
    settings: &OperatorSettings,
    store: &ValidatedStore,
    pod: &str,
    port: u16,
    ca: Option<&ByteString>,
) -> Result<ConnectionAddr> {
    let host = format!(
        "{pod}.{}.{}.svc.{}",
        ChildNames::headless_service(&store.name),
        store.namespace,
        settings.cluster_domain.trim_end_matches('.')
    );
    let Some(ca) = ca else {
        return Err(RotationError::Live {
            action: "connect over TLS",
            failed: 1,
            total: 1,
            details: format!("{pod}: the TLS Secret has no ca.crt to verify the pod with"),
        }
        .into());
    };
    tls_connection_addr(host, port, &ca.0).map_err(|e| {
        RotationError::Live {
            action: "connect over TLS",
            failed: 1,
            total: 1,
            details: format!("{pod}: unusable CA certificate ({:?})", e.kind()),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SessionStore;

    #[test]
    fn only_the_stores_own_pods_are_dialled() {
        let store = crate::validate::validate(
            &serde_yaml::from_str::<SessionStore>(
                "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
                 metadata: {name: web, namespace: shop, uid: u}\nspec: {clients: {podSelector: {}}}\n",
            )
            .unwrap(),
        )
        .unwrap();
        let pod = |name: &str, owner: Option<(&str, &str, bool)>| -> Pod {
            let owners: Vec<_> = owner
                .into_iter()
                .map(|(kind, owner, controller)| {
                    serde_json::json!({"apiVersion": "apps/v1", "kind": kind, "name": owner,
                                       "uid": "s", "controller": controller})
                })
                .collect();
            serde_json::from_value(serde_json::json!({"metadata": {
                "name": name, "namespace": "shop", "ownerReferences": owners,
                "labels": {"app.kubernetes.io/instance": "web"}
            }}))
            .unwrap()
        };
        assert!(is_store_pod(
            &pod("web-0", Some(("StatefulSet", "web", true))),
            &store
        ));
        assert!(is_store_pod(
            &pod("web-12", Some(("StatefulSet", "web", true))),
            &store
        ));
        // Same labels, but not the store's: another name, no owner, another owner, not controller.
        for (name, owner) in [
            ("web-x", Some(("StatefulSet", "web", true))),
            ("impostor", Some(("StatefulSet", "web", true))),
            ("web-web-0", Some(("StatefulSet", "web", true))),
            ("web-0", None),
            ("web-0", Some(("StatefulSet", "other", true))),
            ("web-0", Some(("ReplicaSet", "web", true))),
            ("web-0", Some(("StatefulSet", "web", false))),
        ] {
            assert!(!is_store_pod(&pod(name, owner), &store), "{name} {owner:?}");
        }
    }
}
