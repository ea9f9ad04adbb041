//! The PodDisruptionBudget (replicas > 1): at most one Redis pod down at a time.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::build::meta::{ChildNames, Component, object_meta};
use crate::validate::ValidatedStore;

pub fn desired_pod_disruption_budget(store: &ValidatedStore) -> Option<PodDisruptionBudget> {
    (store.replicas > 1).then(|| PodDisruptionBudget {
        metadata: object_meta(store, ChildNames::pod_disruption_budget(&store.name), Component::Redis),
        ..PodDisruptionBudget::default()
    })
}
