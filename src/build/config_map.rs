//! The `<name>-config` ConfigMap: a hardened `redis.conf` that holds no secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use crate::build::meta::{ChildNames, Component, object_meta};
use crate::validate::ValidatedStore;

pub const REDIS_CONF_KEY: &str = "redis.conf";

pub fn redis_conf(store: &ValidatedStore) -> String {
    let mut conf = String::new();
    conf.push_str(&format!("maxmemory {}\n", store.memory.maxmemory_bytes));
    conf
}

pub fn desired_config_map(store: &ValidatedStore) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(store, ChildNames::config_map(&store.name), Component::Config),
        data: Some(BTreeMap::from([(REDIS_CONF_KEY.to_string(), redis_conf(store))])),
        ..ConfigMap::default()
    }
}
