//! The two Secrets: `<name>-connection` (what applications mount) and `<name>-internal`
//! (the ACL file and the operator's, replication and Sentinel credentials).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use crate::build::StoreCredentials;
use crate::build::acl::users_acl;
use crate::build::meta::{ChildNames, Component, object_meta};
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;

pub fn desired_internal_secret(store: &ValidatedStore, credentials: &StoreCredentials) -> Secret {
    Secret {
        metadata: object_meta(store, ChildNames::internal_secret(&store.name), Component::Credentials),
        type_: Some("Opaque".into()),
        string_data: None,
        data: Some(BTreeMap::from([(
            "users.acl".to_string(),
            k8s_openapi::ByteString(users_acl(store, credentials).into_bytes()),
        )])),
        ..Secret::default()
    }
}

pub fn desired_connection_secret(
    store: &ValidatedStore,
    _credentials: &StoreCredentials,
    _settings: &OperatorSettings,
) -> Secret {
    Secret {
        metadata: object_meta(store, ChildNames::connection_secret(&store.name), Component::Credentials),
        type_: Some("servicebinding.io/redis".into()),
        ..Secret::default()
    }
}
