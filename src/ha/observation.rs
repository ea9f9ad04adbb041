//! What the HA step observes and hands on (the store's pods and their roles, the primary it found,
//! its condition types), in a leaf module so the rolling update, the handover, the disruption
//! guard and the status step can use it without importing the HA step back.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::build::meta::ROLE_LABEL;
use crate::build::statefulset::REDIS_CONTAINER;
use crate::cache::REVISION_LABEL;
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;
use crate::vocabulary::Reason;

/// What the HA step and the rolling update need of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRole {
    pub name: String,
    pub ip: Option<String>,
    /// Current value of `sessionstore.dev/role`.
    pub role_label: Option<String>,
    /// `metadata.uid`: the precondition of a rolling-update delete (never a recreated pod).
    pub uid: Option<String>,
    /// `controller-revision-hash`: the StatefulSet revision the pod was made from.
    pub revision: Option<String>,
    /// The Ready condition is True.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set: the pod is going away.
    pub terminating: bool,
    /// When the Redis container last exited (`lastState.terminated.finishedAt`, Unix seconds): a
    /// primary whose Redis just crashed is followed closely (see `ha::step::RESTART_FOLLOW`).
    pub redis_exited_at: Option<i64>,
}

impl PodRole {
    pub fn of(pod: &Pod) -> Option<Self> {
        let label = |key: &str| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key).cloned())
        };
        Some(PodRole {
            name: pod.metadata.name.clone()?,
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            role_label: label(ROLE_LABEL),
            uid: pod.metadata.uid.clone(),
            revision: label(REVISION_LABEL),
            ready: crate::pods::is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            redis_exited_at: pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|statuses| statuses.iter().find(|c| c.name == REDIS_CONTAINER))
                .and_then(|c| {
                    c.last_state
                        .as_ref()?
                        .terminated
                        .as_ref()?
                        .finished_at
                        .as_ref()
                })
                .map(|t| t.0.as_second()),
        })
    }

    /// Only what `role_label_changes` looks at.
    pub(crate) fn as_pod(&self) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: self
                    .role_label
                    .clone()
                    .map(|role| [(ROLE_LABEL.to_string(), role)].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }
}

/// Sentinel addresses for a store.
pub type AddressFn = dyn Fn(&ValidatedStore, &OperatorSettings) -> Vec<String> + Send + Sync;

/// A change of primary seen by the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    pub from: String,
    pub to: String,
}

/// What the step saw, for the status step and the requeue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryObservation {
    /// The primary pod: the one just discovered, or the last known one while none is known.
    pub primary: Option<String>,
    /// Whether a majority named a pod of this store in this reconcile.
    pub known: bool,
    /// `PrimaryKnown` condition reason and message.
    pub reason: Reason,
    pub message: String,
    /// Set when the primary differs from the one in the status.
    pub failover: Option<Failover>,
    /// Role labels patched in this reconcile.
    pub label_writes: usize,
    /// Reconcile again this soon (HA stores are polled for failovers).
    pub requeue: Option<Duration>,
    /// The pods read in this reconcile (`None` when the step stopped before reading them), so
    /// the rolling update does not read them again.
    pub pods: Option<Vec<PodRole>>,
}

impl PrimaryObservation {
    pub(crate) fn unknown(
        previous: Option<String>,
        reason: Reason,
        message: String,
        requeue: Option<Duration>,
    ) -> Self {
        PrimaryObservation {
            primary: previous,
            known: false,
            reason,
            message,
            failover: None,
            label_writes: 0,
            requeue,
            pods: None,
        }
    }
}
