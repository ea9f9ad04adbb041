//! `spec.monitoring.serviceMonitor`: the prometheus-operator `ServiceMonitor` `<name>` that scrapes
//! the exporter sidecar through the headless Service, applied after the children (and deleted when
//! the field is turned off), the way `tls` applies cert-manager Certificates.
//!
//! prometheus-operator is optional: its API is discovered once per operator (a positive answer is
//! kept, a negative one re-checked every [`DISCOVERY_RECHECK`]), and when it is missing the store is
//! not failed; a `ServiceMonitorUnavailable` condition and one Warning Event say so instead.
//! Steady state sends nothing: applies are remembered by hash, and a store without the field costs
//! no call unless this process applied one for it, or its spec changed since an operator last
//! processed it (then one read, and a delete only of our own).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::runtime::events::EventType;
use serde_json::json;

use crate::build::meta::{ChildNames, Component, MANAGER, object_meta};
use crate::build::service::desired_headless_service;
use crate::cache::APPLIED_HASH_ANNOTATION;
use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::{Error, Result};
use crate::hash::object_hash;
use crate::status::SERVICE_MONITOR_UNAVAILABLE;
use crate::tls::DISCOVERY_RECHECK;
use crate::validate::ValidatedStore;

pub const MONITORING_GROUP: &str = "monitoring.coreos.com";
pub const MONITORING_VERSION: &str = "v1";
/// Name of the exporter port on the headless Service (and the pods).
pub const METRICS_PORT_NAME: &str = "metrics";
pub const SCRAPE_INTERVAL: &str = "30s";

/// Per-operator memory: prometheus-operator's presence, and what each store's ServiceMonitor is.
#[derive(Default)]
pub struct ServiceMonitorMemo {
    api: Mutex<Option<(bool, Instant)>>,
    /// `namespace/name/uid` -> `Some(hash)` of our last apply, or `None`: known not to exist.
    objects: Mutex<HashMap<String, Option<String>>>,
}

impl ServiceMonitorMemo {
    fn known_api(&self) -> Option<bool> {
        match *self.api.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((true, _)) => Some(true),
            Some((false, at)) if at.elapsed() < DISCOVERY_RECHECK => Some(false),
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<Option<String>> {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn set(&self, key: String, state: Option<String>) {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, state);
    }
}

/// The prometheus-operator `ServiceMonitor` API resource.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        MONITORING_GROUP,
        MONITORING_VERSION,
        "ServiceMonitor",
    ))
}

/// The ServiceMonitor for a store (pure). The ClusterIP Service carries the same labels as the
/// headless one (both come from `object_meta` with `Component::Redis`) but no `metrics` port; the
/// `keep` relabeling on the Service name makes the selection exact anyway, so every pod is scraped
/// once, through `<name>-headless`, whatever labels the two Services come to share.
pub fn desired_service_monitor(store: &ValidatedStore) -> serde_json::Value {
    let headless = desired_headless_service(store);
    let headless_name = ChildNames::headless_service(&store.name);
    let match_labels = headless.metadata.labels.unwrap_or_default();
    let metadata = object_meta(store, store.name.clone(), Component::Redis);
    json!({
        "apiVersion": format!("{MONITORING_GROUP}/{MONITORING_VERSION}"),
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": match_labels},
            "namespaceSelector": {"matchNames": [store.namespace]},
            "endpoints": [{
                "port": METRICS_PORT_NAME,
                "interval": SCRAPE_INTERVAL,
                "relabelings": [{
                    "sourceLabels": ["__meta_kubernetes_service_name"],
                    "regex": headless_name,
                    "action": "keep",
                }],
            }],
        },
    })
}

fn memo_key(store: &ValidatedStore) -> String {
    format!(
        "{}/{}/{}",
        store.namespace, store.name, store.owner_reference.uid
    )
}

/// Applies (field on) or removes (field off) the store's ServiceMonitor. Returns the message of
/// the `ServiceMonitorUnavailable` condition when the field is on but prometheus-operator is not
/// installed; the first time that happens for a store, a Warning Event says so too.
pub async fn reconcile_service_monitor(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
) -> Result<Option<String>> {
    let key = memo_key(validated);
    if !validated.monitoring.service_monitor {
        // A generation an operator already processed had its ServiceMonitor removed then, and a
        // store never processed has none of ours: only a spec changed since (e.g. the field turned
        // off while the operator was down) is worth a look when this process applied nothing.
        let observed = store.status.as_ref().and_then(|s| s.observed_generation);
        let unprocessed_change = observed.is_some() && observed != store.metadata.generation;
        remove_ours(ctx, validated, key, unprocessed_change).await?;
        return Ok(None);
    }
    if !api_installed(ctx).await? {
        let message = format!(
            "spec.monitoring.serviceMonitor: the prometheus-operator API \
             ({MONITORING_GROUP}/{MONITORING_VERSION} ServiceMonitor) is not installed; install \
             prometheus-operator or set spec.monitoring.serviceMonitor: false"
        );
        let already_said = store.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == SERVICE_MONITOR_UNAVAILABLE)
        });
        if !already_said {
            tracing::warn!("{message}");
            ctx.publish(
                store,
                EventType::Warning,
                SERVICE_MONITOR_UNAVAILABLE,
                "Provisioning",
                message.clone(),
            )
            .await;
        }
        return Ok(Some(message));
    }
    apply(ctx, validated, key).await?;
    Ok(None)
}

async fn api_installed(ctx: &Context) -> Result<bool> {
    if let Some(known) = ctx.service_monitors.known_api() {
        return Ok(known);
    }
    ctx.metrics.api_request("get");
    let group_version = format!("{MONITORING_GROUP}/{MONITORING_VERSION}");
    let installed = match ctx.client.list_api_group_resources(&group_version).await {
        Ok(list) => list.resources.iter().any(|r| r.name == "servicemonitors"),
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(e) => return Err(Error::kube(format!("discovering {group_version}"), e)),
    };
    tracing::info!(installed, "prometheus-operator API discovery");
    *ctx.service_monitors
        .api
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some((installed, Instant::now()));
    Ok(installed)
}

fn api(ctx: &Context, store: &ValidatedStore) -> Api<DynamicObject> {
    Api::namespaced_with(
        ctx.client.clone(),
        &store.namespace,
        &service_monitor_resource(),
    )
}

/// Server-side applies the ServiceMonitor unless our last apply (remembered, or its annotation
/// after a restart) already carries the same hash.
async fn apply(ctx: &Context, store: &ValidatedStore, key: String) -> Result<()> {
    let mut desired = desired_service_monitor(store);
    let hash = object_hash(&desired)?;
    let remembered = ctx.service_monitors.get(&key);
    if remembered.as_ref().and_then(Option::as_deref) == Some(hash.as_str()) {
        return Ok(());
    }
    let api = api(ctx, store);
    let name = &store.name;
    if remembered.is_none() {
        ctx.metrics.api_request("get");
        let live = api
            .get_metadata_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading ServiceMonitor {name}"), e))?;
        let live_hash = live
            .and_then(|m| m.metadata.annotations)
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION).cloned());
        if live_hash.as_deref() == Some(hash.as_str()) {
            ctx.service_monitors.set(key, Some(hash));
            return Ok(());
        }
    }
    if let Some(meta) = desired.get_mut("metadata") {
        meta["annotations"] = json!(BTreeMap::from([(APPLIED_HASH_ANNOTATION, hash.clone())]));
    }
    ctx.metrics.api_request("patch");
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("applying ServiceMonitor {}/{name}", store.namespace),
            e,
        )
    })?;
    tracing::info!(service_monitor = %name, "applied ServiceMonitor");
    ctx.service_monitors.set(key, Some(hash));
    Ok(())
}

/// Deletes the store's ServiceMonitor if it exists and this store is its controller. A store this
/// process never applied one for is looked at only when `unprocessed_change`; one known to have
/// none (or whose cluster has no prometheus-operator) costs no call.
async fn remove_ours(
    ctx: &Context,
    store: &ValidatedStore,
    key: String,
    unprocessed_change: bool,
) -> Result<()> {
    let remembered = ctx.service_monitors.get(&key);
    let worth_a_look = match &remembered {
        Some(applied) => applied.is_some(),
        None => unprocessed_change,
    };
    if !worth_a_look || !api_installed(ctx).await? {
        return Ok(());
    }
    let api = api(ctx, store);
    let name = &store.name;
    if remembered.is_none() {
        // Not applied by this operator process: look before deleting, and only delete ours.
        ctx.metrics.api_request("get");
        let live = api
            .get_metadata_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading ServiceMonitor {name}"), e))?;
        let ours = live.is_some_and(|m| {
            m.metadata
                .owner_references
                .unwrap_or_default()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == store.owner_reference.uid)
        });
        if !ours {
            ctx.service_monitors.set(key, None);
            return Ok(());
        }
    }
    ctx.metrics.api_request("delete");
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(service_monitor = %name, "deleted ServiceMonitor"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => {
            return Err(Error::kube(
                format!("deleting ServiceMonitor {}/{name}", store.namespace),
                e,
            ));
        }
    }
    ctx.service_monitors.set(key, None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::validate::validate;

    fn store(monitoring: &str) -> ValidatedStore {
        let store: SessionStore = serde_yaml::from_str(&format!(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
             metadata: {{name: web, namespace: shop, uid: u1}}\n\
             spec:\n  clients: {{podSelector: {{}}}}\n  monitoring: {monitoring}\n"
        ))
        .expect("yaml");
        validate(&store).expect("valid")
    }

    #[test]
    fn the_service_monitor_scrapes_the_headless_metrics_port_every_30s() {
        let store = store("{exporter: true, serviceMonitor: true}");
        let labels = json!({
            "app.kubernetes.io/name": "sessionstore",
            "app.kubernetes.io/instance": "web",
            "app.kubernetes.io/managed-by": "sessionstore-operator",
            "app.kubernetes.io/component": "redis",
        });
        assert_eq!(
            desired_service_monitor(&store),
            json!({
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": {
                    "name": "web",
                    "namespace": "shop",
                    "labels": labels,
                    "ownerReferences": [serde_json::to_value(&store.owner_reference).expect("json")],
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "namespaceSelector": {"matchNames": ["shop"]},
                    "endpoints": [{
                        "port": "metrics",
                        "interval": "30s",
                        "relabelings": [{
                            "sourceLabels": ["__meta_kubernetes_service_name"],
                            "regex": "web-headless",
                            "action": "keep",
                        }],
                    }],
                },
            })
        );
        assert_eq!(store.owner_reference.uid, "u1");
        assert_eq!(store.owner_reference.controller, Some(true));
    }

    #[test]
    fn the_port_it_names_is_on_the_headless_service_only() {
        let store = store("{exporter: true, serviceMonitor: true}");
        let port_names = |service: k8s_openapi::api::core::v1::Service| -> Vec<String> {
            service
                .spec
                .and_then(|s| s.ports)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.name)
                .collect()
        };
        assert!(
            port_names(desired_headless_service(&store)).contains(&METRICS_PORT_NAME.to_string())
        );
        assert!(
            !port_names(crate::build::service::desired_service(&store))
                .contains(&METRICS_PORT_NAME.to_string())
        );
    }
}
