//! The ClusterIP Service `<name>` (primary only) and the headless `<name>-headless`.

use k8s_openapi::api::core::v1::Service;

use crate::build::meta::{ChildNames, Component, object_meta};
use crate::validate::ValidatedStore;

pub fn desired_service(store: &ValidatedStore) -> Service {
    Service {
        metadata: object_meta(store, ChildNames::service(&store.name), Component::Redis),
        ..Service::default()
    }
}

pub fn desired_headless_service(store: &ValidatedStore) -> Service {
    Service {
        metadata: object_meta(store, ChildNames::headless_service(&store.name), Component::Redis),
        ..Service::default()
    }
}
