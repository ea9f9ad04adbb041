//! The PodDisruptionBudget (replicas > 1): at most one Redis pod down at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::meta::{ChildNames, Component, object_meta, pod_selector_labels};
use crate::validate::ValidatedStore;

/// `maxUnavailable: 1` keeps a Sentinel majority and a replica for every drain. A standalone store
/// gets none: a budget of zero disruptions would block node drains forever.
pub fn desired_pod_disruption_budget(store: &ValidatedStore) -> Option<PodDisruptionBudget> {
    (store.replicas > 1).then(|| PodDisruptionBudget {
        metadata: object_meta(
            store,
            ChildNames::pod_disruption_budget(&store.name),
            Component::Redis,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(pod_selector_labels(store)),
                match_expressions: None,
            }),
            // A pod that is not ready serves nobody; letting it be evicted keeps a stuck pod from
            // blocking every node drain, while healthy pods stay protected by the budget.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            min_available: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::build::fixtures;

    #[test]
    fn standalone_store_has_no_budget() {
        assert_eq!(
            desired_pod_disruption_budget(&fixtures::development()),
            None
        );
    }

    #[test]
    fn replicated_store_allows_one_pod_down() {
        for replicas in [3, 5] {
            let store = fixtures::store(&format!("  replicas: {replicas}\n"));
            let expected: PodDisruptionBudget = serde_json::from_value(json!({
                "metadata": {
                    "name": "checkout",
                    "namespace": "shop",
                    "labels": fixtures::labels("redis"),
                    "ownerReferences": fixtures::owner_references()
                },
                "spec": {
                    "maxUnavailable": 1,
                    "selector": {"matchLabels": fixtures::pod_selector()},
                    "unhealthyPodEvictionPolicy": "AlwaysAllow"
                }
            }))
            .unwrap();
            assert_eq!(
                desired_pod_disruption_budget(&store),
                Some(expected),
                "replicas {replicas}"
            );
        }
    }
}
