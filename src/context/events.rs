//! The one way a step publishes an Event about a store: counted as an API call, and a failure is
//! logged, never fatal to the reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::Context;
use crate::crd::SessionStore;
use crate::metrics::Verb;
use crate::vocabulary::{EventAction, Reason};

impl Context {
    /// Publishes an Event about the store (`reason` is the Event's reason, `action` what the
    /// operator was doing).
    pub async fn publish(
        &self,
        store: &SessionStore,
        type_: EventType,
        reason: Reason,
        action: EventAction,
        note: String,
    ) {
        self.send(store, type_, reason, action, note, None).await;
    }

    /// Publishes an Event about the store and one related object (a pod): the Event recorder folds
    /// Events with the same reason and objects into one series (keeping the first note), so each
    /// related object gets its own.
    pub async fn publish_related(
        &self,
        store: &SessionStore,
        type_: EventType,
        reason: Reason,
        action: EventAction,
        note: String,
        related: ObjectReference,
    ) {
        self.send(store, type_, reason, action, note, Some(related))
            .await;
    }

    async fn send(
        &self,
        store: &SessionStore,
        type_: EventType,
        reason: Reason,
        action: EventAction,
        note: String,
        secondary: Option<ObjectReference>,
    ) {
        self.metrics.api_request(Verb::Create);
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary,
        };
        if let Err(error) = self.recorder.publish(&event, &store.object_ref(&())).await {
            tracing::warn!(%error, %reason, "could not publish Event");
        }
    }
}
