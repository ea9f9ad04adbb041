//! Step 6, observe: the store's health from Redis (at most one probe per store per health
//! interval, see `observe::step`) and, while fewer pods are ready than desired, why (from the
//! caches, and the StatefulSet's Events when pods are missing).

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::Api;
use kube::api::ListParams;

use super::apply::Applied;
use super::decide::Decided;
use crate::build::meta::ChildNames;
use crate::context::Context;
use crate::crd::SessionStore;
use crate::diagnosis::{self, Diagnosis};
use crate::metrics::Verb;
use crate::observe::step::Observed;
use crate::validate::ValidatedStore;

/// What the observe step hands to the status step.
pub(super) struct Seen {
    pub health: Observed,
    pub diagnosis: Option<Diagnosis>,
}

pub(super) async fn observe(
    ctx: &Context,
    store: &SessionStore,
    decided: &Decided<'_>,
    applied: &Applied,
) -> Seen {
    let validated = decided.store.as_ref();
    let health = ctx
        .health
        .observe(
            ctx.cluster(),
            store,
            validated,
            &decided.secrets.credentials,
            decided.tls_ca(),
        )
        .await;
    let diagnosis = if applied.ready_replicas < validated.replicas {
        diagnose(ctx, validated).await
    } else {
        None
    };
    Seen { health, diagnosis }
}

/// Why the store's pods are not ready: pods from the watch cache (none: no diagnosis, no call),
/// the StatefulSet's Events listed only when some pod was never created.
async fn diagnose(ctx: &Context, store: &ValidatedStore) -> Option<Diagnosis> {
    let pods = ctx.cache.pods_of_store(&store.namespace, &store.name)?;
    let statefulset = ChildNames::statefulset(&store.name);
    let created = ctx
        .cache
        .statefulset_status(&store.namespace, &statefulset)
        .map(|s| s.replicas);
    let events = if diagnosis::pods_missing(store, &pods, created) {
        statefulset_events(ctx, &store.namespace, &statefulset).await
    } else {
        Vec::new()
    };
    diagnosis::diagnose(&diagnosis::Inputs {
        store,
        pods: &pods,
        created,
        events: &events,
        now: k8s_openapi::jiff::Timestamp::now(),
    })
}

/// The StatefulSet's Events, oldest first; none when they cannot be read (a diagnosis is a
/// help, never a reason to fail the reconcile).
async fn statefulset_events(
    ctx: &Context,
    namespace: &str,
    statefulset: &str,
) -> Vec<diagnosis::StatefulSetEvent> {
    ctx.metrics.api_request(Verb::List);
    let api: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), namespace);
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind=StatefulSet,involvedObject.name={statefulset}"
    ));
    let mut events = match api.list(&params).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "could not list the StatefulSet's Events for the diagnosis");
            return Vec::new();
        }
    };
    let when = |e: &CoreEvent| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    events.sort_by_key(when);
    events
        .into_iter()
        .map(|e| diagnosis::StatefulSetEvent {
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        })
        .collect()
}
