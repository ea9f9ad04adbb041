//! Step 4, apply: server-side apply of the children that changed (Secrets created once), the
//! optional ServiceMonitor, and the StatefulSet's ready replicas as the apply (or the cache) saw
//! them.

use kube::runtime::events::EventType;

use super::decide::Decided;
use crate::apply::apply_children;
use crate::build::DesiredChildren;
use crate::build::meta::ChildNames;
use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::Result;
use crate::service_monitor::reconcile_service_monitor;
use crate::validate::ValidatedStore;
use crate::vocabulary::{EventAction, Reason};

/// What the apply step hands on.
pub(super) struct Applied {
    /// Ready pods of the StatefulSet.
    pub ready_replicas: i32,
    /// The StatefulSet was written by this reconcile.
    pub statefulset_written: bool,
    /// Why the ServiceMonitor could not be applied (the API is missing), for the status.
    pub service_monitor_unavailable: Option<String>,
}

pub(super) async fn apply(
    ctx: &Context,
    store: &SessionStore,
    decided: &Decided<'_>,
    mut children: DesiredChildren,
) -> Result<Applied> {
    let validated = decided.store.as_ref();
    let service_monitor = children.service_monitor.take();
    let outcome = apply_children(ctx, validated, children, &decided.secrets).await?;
    if outcome.writes > 0 {
        tracing::info!(writes = outcome.writes, "applied children");
    }
    if outcome.created {
        let note = format!(
            "Created the Redis children and the connection Secret {}",
            ChildNames::connection_secret(&validated.name)
        );
        ctx.publish(
            store,
            EventType::Normal,
            Reason::Created,
            EventAction::Provisioning,
            note,
        )
        .await;
    }
    // Optional prometheus-operator object, after the children: a missing API is a condition, not
    // a failure.
    let service_monitor_unavailable =
        reconcile_service_monitor(ctx, store, validated, service_monitor.as_ref()).await?;
    let statefulset_written = outcome.statefulset_status.is_some();
    let ready_replicas = match outcome.statefulset_status {
        Some(status) => status.ready_replicas.unwrap_or(0),
        None => statefulset_ready_replicas(ctx, validated).await?,
    };
    Ok(Applied {
        ready_replicas,
        statefulset_written,
        service_monitor_unavailable,
    })
}

/// Ready replicas from the watch cache, or from the API server when there is no cache.
async fn statefulset_ready_replicas(ctx: &Context, store: &ValidatedStore) -> Result<i32> {
    let ready = ctx
        .read_statefulset(
            store,
            |cache, namespace, name| {
                cache
                    .statefulset_status(namespace, name)
                    .map(|s| s.ready_replicas.unwrap_or(0))
            },
            |sts| {
                sts.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
            },
        )
        .await?;
    Ok(ready.unwrap_or(0))
}
