//! `spec.monitoring.serviceMonitor`: the prometheus-operator `ServiceMonitor` `<name>` that scrapes
//! the exporter sidecar through the headless Service, applied after the children (and deleted when
//! the field is turned off). The object is built by `build::service_monitor`; discovery and the
//! hash-gated apply are those of every optional API ([`crate::apply_optional`]).
//!
//! prometheus-operator is optional: its API is discovered once per operator (a positive answer is
//! kept, a negative one re-checked every [`crate::apply_optional::DISCOVERY_RECHECK`]), and when it is missing the store is
//! not failed; a `ServiceMonitorUnavailable` condition and one Warning Event say so instead.
//! Steady state sends nothing: applies are remembered by hash, and a store without the field costs
//! no call unless this process applied one for it, or its spec changed since an operator last
//! processed it (then one read, and a delete only of our own).

use kube::api::DeleteParams;
use kube::runtime::events::EventType;

use crate::apply_optional::{OptionalApi, api_installed, apply_optional, memo_key};
use crate::build::service_monitor::{MONITORING_GROUP, MONITORING_VERSION, ServiceMonitor};
use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::{Error, Result};
use crate::metrics::Verb;
use crate::validate::ValidatedStore;
use crate::vocabulary::{ConditionType, EventAction, Reason};

/// prometheus-operator's `ServiceMonitor`, an optional API.
pub const SERVICE_MONITOR_API: OptionalApi = OptionalApi {
    provider: "prometheus-operator",
    group: MONITORING_GROUP,
    version: MONITORING_VERSION,
    kind: crate::build::service_monitor::SERVICE_MONITOR_KIND,
    plural: "servicemonitors",
};

fn store_memo_key(store: &ValidatedStore) -> String {
    memo_key(&store.namespace, &store.name, &store.owner_reference.uid)
}

/// Applies `desired` (the build step's ServiceMonitor: the field is on) or removes the store's
/// ServiceMonitor (`None`: the field is off). Returns the message of the
/// `ServiceMonitorUnavailable` condition when the field is on but prometheus-operator is not
/// installed; the first time that happens for a store, a Warning Event says so too.
pub async fn reconcile_service_monitor(
    ctx: &Context,
    store: &SessionStore,
    validated: &ValidatedStore,
    desired: Option<&ServiceMonitor>,
) -> Result<Option<String>> {
    let key = store_memo_key(validated);
    let Some(desired) = desired else {
        // A generation an operator already processed had its ServiceMonitor removed then, and a
        // store never processed has none of ours: only a spec changed since (e.g. the field turned
        // off while the operator was down) is worth a look when this process applied nothing.
        let observed = store.status.as_ref().and_then(|s| s.observed_generation);
        let unprocessed_change = observed.is_some() && observed != store.metadata.generation;
        remove_ours(ctx, validated, key, unprocessed_change).await?;
        return Ok(None);
    };
    if !api_installed(ctx, &SERVICE_MONITOR_API, &ctx.service_monitors).await? {
        let message = format!(
            "spec.monitoring.serviceMonitor: the prometheus-operator API \
             ({MONITORING_GROUP}/{MONITORING_VERSION} ServiceMonitor) is not installed; install \
             prometheus-operator or set spec.monitoring.serviceMonitor: false"
        );
        let already_said = store.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == ConditionType::ServiceMonitorUnavailable)
        });
        if !already_said {
            tracing::warn!("{message}");
            ctx.publish(
                store,
                EventType::Warning,
                Reason::ServiceMonitorUnavailable,
                EventAction::Provisioning,
                message.clone(),
            )
            .await;
        }
        return Ok(Some(message));
    }
    apply_optional(
        ctx,
        &SERVICE_MONITOR_API,
        &ctx.service_monitors,
        &validated.owner_reference.uid,
        desired,
    )
    .await?;
    Ok(None)
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
    if !worth_a_look || !api_installed(ctx, &SERVICE_MONITOR_API, &ctx.service_monitors).await? {
        return Ok(());
    }
    let api = SERVICE_MONITOR_API.api(ctx, &store.namespace);
    let name = &store.name;
    if remembered.is_none() {
        // Not applied by this operator process: look before deleting, and only delete ours.
        ctx.metrics.api_request(Verb::Get);
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
    ctx.metrics.api_request(Verb::Delete);
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
