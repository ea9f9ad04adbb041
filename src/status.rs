//! Last step of the pipeline: the status the operator owns (observedGeneration, phase, Ready and
//! Available conditions, endpoint, connection Secret, replicas), computed purely from what was
//! validated, applied and observed, and written with server-side apply only when it changed.
//!
//! HA stores also get `primary` and the `PrimaryKnown`/`Failover` conditions from the HA step
//! (`ha::step`) and the `Updating` condition from the rolling update (`ha::rollout_step`); a
//! standalone store has none of them.
//!
//! Conditions of other types (e.g. `Healthy`/`Degraded` from the health step) are carried over, and a
//! condition's `lastTransitionTime` only moves when its status flips, so a resync compares equal.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::build::meta::{ChildNames, MANAGER};
use crate::context::Context;
use crate::crd::{AuthStatus, Endpoint, HealthStatus, Phase, SessionStore, SessionStoreStatus};
use crate::diagnosis::Diagnosis;
use crate::error::{Error, Result};
use crate::ha::observation::PrimaryObservation;
use crate::ha::rollout_step::RolloutObservation;
use crate::metrics::Verb;
use crate::settings::OperatorSettings;
use crate::validate::{REDIS_PORT, ValidatedStore, ValidationError};
use crate::vocabulary::{ConditionStatus, ConditionType, Reason};

/// Where the reconcile got to, which decides the status.
pub enum Progress<'a> {
    /// The spec cannot be reconciled; waits for the user.
    Invalid(&'a ValidationError),
    /// `spec.auth.existingSecret` is missing or unusable; the message names it.
    WaitingForSecret(&'a str),
    /// The TLS Secret (or the cert-manager API for `issuerRef`) is not there yet; `reason` is the
    /// Ready condition's reason, `message` names the spec field.
    WaitingForTls { reason: Reason, message: &'a str },
    /// Every child is applied; `ready_replicas` from the StatefulSet's status, `auth` from the
    /// rotation step; `service_monitor_unavailable` the message when the ServiceMonitor could not
    /// be created for lack of its API.
    /// rotation step, `ha` what the HA step saw and `rollout` what the rolling update did (`None`
    /// for a standalone store).
    Applied {
        store: &'a ValidatedStore,
        ready_replicas: i32,
        auth: Option<&'a AuthStatus>,
        service_monitor_unavailable: Option<&'a str>,
        ha: Option<&'a PrimaryObservation>,
        rollout: Option<&'a RolloutObservation>,
        /// Why fewer pods are ready than desired, when the diagnosis found a cause.
        diagnosis: Option<&'a Diagnosis>,
    },
}

/// The status fields this controller owns, as sent in the server-side apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Written by the health step (`observe::step`) and carried over by every other status write:
    /// with server-side apply a field this manager leaves out would be removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
}

impl OwnedStatus {
    /// The same fields read from a live status.
    pub fn of(status: &SessionStoreStatus) -> Self {
        OwnedStatus {
            observed_generation: status.observed_generation,
            phase: status.phase,
            conditions: status.conditions.clone(),
            endpoint: status.endpoint.clone(),
            connection_secret: status.connection_secret.clone(),
            replicas: status.replicas,
            ready_replicas: status.ready_replicas,
            health: status.health.clone(),
            auth: status.auth.clone(),
            primary: status.primary.clone(),
        }
    }

    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The status a store should have now.
pub fn desired_status(
    current: Option<&SessionStoreStatus>,
    generation: Option<i64>,
    progress: &Progress<'_>,
    settings: &OperatorSettings,
    now: &Time,
) -> OwnedStatus {
    let previous = current.map(OwnedStatus::of).unwrap_or_default();
    let conditions = Conditions {
        previous: &previous,
        generation,
        now,
    };
    let mut next = OwnedStatus {
        observed_generation: generation,
        ..previous.clone()
    };
    // Types this reconcile decided; the others are carried over below.
    let mut decided = vec![ConditionType::Ready, ConditionType::Available];
    let mut ours = match progress {
        Progress::Invalid(error) => {
            next.phase = Some(Phase::Failed);
            conditions.not_ready(Reason::InvalidSpec, error.to_string())
        }
        Progress::WaitingForSecret(message) => {
            next.phase = Some(Phase::Pending);
            conditions.not_ready(Reason::ExistingSecretMissing, (*message).to_string())
        }
        Progress::WaitingForTls { reason, message } => {
            next.phase = Some(Phase::Pending);
            conditions.not_ready(*reason, (*message).to_string())
        }
        Progress::Applied {
            store,
            ready_replicas,
            auth,
            service_monitor_unavailable,
            ha,
            rollout,
            diagnosis,
        } => {
            // Only there while the problem is: a later apply that created it drops the condition.
            // `Updating`: decided by the rolling update, kept while it has nothing new to say,
            // dropped for a standalone store.
            decided.extend([
                ConditionType::ServiceMonitorUnavailable,
                ConditionType::Updating,
            ]);
            let applied = AppliedView {
                store,
                ready_replicas: *ready_replicas,
                auth: *auth,
                service_monitor_unavailable: *service_monitor_unavailable,
                ha: *ha,
                rollout: *rollout,
                diagnosis: *diagnosis,
            };
            applied_status(&mut next, &conditions, settings, &applied)
        }
    };
    // Conditions written by other steps (health) keep their place after ours. The HA conditions
    // are ours: re-added above for an HA store, dropped for a standalone one.
    let applied = matches!(progress, Progress::Applied { .. });
    ours.extend(
        previous
            .conditions
            .iter()
            .filter(|c| !decided.iter().any(|t| c.type_ == *t))
            .filter(|c| {
                !applied
                    || (c.type_ != ConditionType::PrimaryKnown
                        && c.type_ != ConditionType::Failover)
            })
            .cloned(),
    );
    next.conditions = ours;
    next
}

/// Makes this reconcile's conditions: a condition keeps its `lastTransitionTime` from `previous`
/// while its status does not change.
struct Conditions<'a> {
    previous: &'a OwnedStatus,
    generation: Option<i64>,
    now: &'a Time,
}

impl Conditions<'_> {
    fn make(&self, type_: ConditionType, ok: bool, reason: Reason, message: String) -> Condition {
        let status = ConditionStatus::from(ok).to_string();
        let last_transition_time = self
            .previous
            .condition(type_)
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.now.clone());
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            observed_generation: self.generation,
            last_transition_time,
        }
    }

    /// Before anything is applied: `Ready=False` with why, `Available` as it was.
    fn not_ready(&self, reason: Reason, message: String) -> Vec<Condition> {
        let mut ours = vec![self.make(ConditionType::Ready, false, reason, message)];
        ours.extend(self.previous.condition(ConditionType::Available).cloned());
        ours
    }
}

/// The fields of [`Progress::Applied`].
struct AppliedView<'a> {
    store: &'a ValidatedStore,
    ready_replicas: i32,
    auth: Option<&'a AuthStatus>,
    service_monitor_unavailable: Option<&'a str>,
    ha: Option<&'a PrimaryObservation>,
    rollout: Option<&'a RolloutObservation>,
    diagnosis: Option<&'a Diagnosis>,
}

/// The status of a store whose children are applied: fills `next` and returns its conditions.
fn applied_status(
    next: &mut OwnedStatus,
    conditions: &Conditions<'_>,
    settings: &OperatorSettings,
    applied: &AppliedView<'_>,
) -> Vec<Condition> {
    if let Some(auth) = applied.auth {
        next.auth = Some(auth.clone());
    }
    let store = applied.store;
    let (replicas, ready) = (store.replicas, applied.ready_replicas);
    let replicas_view = ReplicasView {
        replicas,
        ready,
        was_ready: matches!(
            conditions.previous.phase,
            Some(Phase::Ready | Phase::Degraded)
        ),
        // An HA store whose primary was never found has no Service endpoint yet: not ready.
        no_primary_yet: applied.ha.is_some_and(|h| h.primary.is_none()),
    };
    next.phase = Some(replicas_view.phase(conditions.previous));
    let mut ours = vec![
        replicas_view.ready_condition(conditions, applied.diagnosis),
        available_condition(conditions, ready),
    ];
    next.endpoint = Some(Endpoint {
        host: format!(
            "{}.{}.svc.{}",
            ChildNames::service(&store.name),
            store.namespace,
            settings.cluster_domain
        ),
        port: REDIS_PORT,
        tls: store.tls.is_some(),
    });
    next.connection_secret = Some(ChildNames::connection_secret(&store.name));
    next.replicas = Some(replicas);
    next.ready_replicas = Some(ready);
    if let Some(message) = applied.service_monitor_unavailable {
        ours.push(conditions.make(
            ConditionType::ServiceMonitorUnavailable,
            true,
            Reason::PrometheusOperatorMissing,
            message.to_string(),
        ));
    }
    match applied.ha {
        Some(ha) => {
            ours.extend(ha_conditions(conditions, ha));
            next.primary = ha.primary.clone();
        }
        None => next.primary = None,
    }
    match applied.rollout.map(|r| r.condition.as_ref()) {
        Some(Some(updating)) => ours.push(conditions.make(
            ConditionType::Updating,
            updating.updating,
            updating.reason,
            updating.message.clone(),
        )),
        Some(None) => ours.extend(
            conditions
                .previous
                .condition(ConditionType::Updating)
                .cloned(),
        ),
        None => {}
    }
    ours
}

/// How many pods are ready, which decides the phase and the `Ready` condition.
struct ReplicasView {
    replicas: i32,
    ready: i32,
    /// The store was Ready or Degraded before.
    was_ready: bool,
    no_primary_yet: bool,
}

impl ReplicasView {
    fn phase(&self, previous: &OwnedStatus) -> Phase {
        let (replicas, ready) = (self.replicas, self.ready);
        if ready >= replicas && self.no_primary_yet {
            Phase::Provisioning
        } else if ready >= replicas {
            phase_from_health(previous.condition(ConditionType::Healthy))
        } else if ready >= 1 && self.was_ready {
            Phase::Degraded
        } else {
            Phase::Provisioning
        }
    }

    fn ready_condition(
        &self,
        conditions: &Conditions<'_>,
        diagnosis: Option<&Diagnosis>,
    ) -> Condition {
        let (replicas, ready) = (self.replicas, self.ready);
        if ready >= replicas && self.no_primary_yet {
            conditions.make(
                ConditionType::Ready,
                false,
                Reason::WaitingForPrimary,
                format!("{ready} of {replicas} replicas ready; no primary known yet"),
            )
        } else if ready >= replicas {
            conditions.make(
                ConditionType::Ready,
                true,
                Reason::AllReplicasReady,
                format!("{ready} of {replicas} replicas ready"),
            )
        } else if let Some(diagnosis) = diagnosis {
            conditions.make(
                ConditionType::Ready,
                false,
                diagnosis.reason,
                format!(
                    "{ready} of {replicas} replicas ready; {}",
                    diagnosis.message
                ),
            )
        } else {
            let reason = if self.was_ready {
                Reason::ReplicasNotReady
            } else {
                Reason::Provisioning
            };
            conditions.make(
                ConditionType::Ready,
                false,
                reason,
                format!("{ready} of {replicas} replicas ready"),
            )
        }
    }
}

fn available_condition(conditions: &Conditions<'_>, ready: i32) -> Condition {
    if ready >= 1 {
        conditions.make(
            ConditionType::Available,
            true,
            Reason::Serving,
            "at least one Redis pod is ready to serve sessions".into(),
        )
    } else {
        conditions.make(
            ConditionType::Available,
            false,
            Reason::NoReadyReplicas,
            "no Redis pod is ready yet".into(),
        )
    }
}

/// `PrimaryKnown`, and `Failover` once a failover was seen.
fn ha_conditions(conditions: &Conditions<'_>, ha: &PrimaryObservation) -> Vec<Condition> {
    let mut ours = vec![conditions.make(
        ConditionType::PrimaryKnown,
        ha.known,
        ha.reason,
        ha.message.clone(),
    )];
    if let Some(failover) = &ha.failover {
        // Stays True after the first failover; its time is that of the latest one.
        let mut c = conditions.make(
            ConditionType::Failover,
            true,
            Reason::PrimaryChanged,
            format!("primary changed from {} to {}", failover.from, failover.to),
        );
        c.last_transition_time = conditions.now.clone();
        ours.push(c);
    } else {
        ours.extend(
            conditions
                .previous
                .condition(ConditionType::Failover)
                .cloned(),
        );
    }
    ours
}

/// The phase of a store whose replicas are all ready, from the last written `Healthy` condition:
/// Ready when healthy (or not probed yet), Provisioning while pods start or load, else Degraded.
pub fn phase_from_health(healthy: Option<&Condition>) -> Phase {
    match healthy {
        None => Phase::Ready,
        Some(c) if c.status == ConditionStatus::True => Phase::Ready,
        Some(c) if c.reason == Reason::PodsNotRunning || c.reason == Reason::Loading => {
            Phase::Provisioning
        }
        Some(_) => Phase::Degraded,
    }
}

/// Whether the desired status differs from the live one.
pub fn differs(current: Option<&SessionStoreStatus>, desired: &OwnedStatus) -> bool {
    current.map(OwnedStatus::of).as_ref() != Some(desired)
}

/// Writes the owned status with server-side apply on the status subresource.
pub async fn patch_status(ctx: &Context, store: &SessionStore, status: &OwnedStatus) -> Result<()> {
    let namespace = store.namespace().unwrap_or_default();
    let name = store.name_any();
    let api: Api<SessionStore> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": SessionStore::api_version(&()),
        "kind": SessionStore::kind(&()),
        "status": status,
    });
    ctx.metrics.api_request(Verb::Patch);
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("writing status of SessionStore {namespace}/{name}"),
            e,
        )
    })?;
    Ok(())
}

/// Computes the status and writes it when it changed. Returns whether it wrote.
pub async fn write_status(
    ctx: &Context,
    store: &SessionStore,
    progress: &Progress<'_>,
) -> Result<bool> {
    write_status_over(ctx, store, store.status.as_ref(), progress).await
}

/// Like `write_status`, starting from `base` (the live status with the health step's update laid
/// over it) but still comparing with the live status, so only real changes are written.
pub async fn write_status_over(
    ctx: &Context,
    store: &SessionStore,
    base: Option<&SessionStoreStatus>,
    progress: &Progress<'_>,
) -> Result<bool> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let desired = desired_status(base, store.meta().generation, progress, &ctx.settings, &now);
    if !differs(store.status.as_ref(), &desired) {
        return Ok(false);
    }
    log_transition(store, &desired);
    patch_status(ctx, store, &desired).await?;
    Ok(true)
}

fn log_transition(store: &SessionStore, desired: &OwnedStatus) {
    let before = store.status.as_ref().and_then(|s| s.phase);
    if before != desired.phase {
        tracing::info!(
            from = before.map(Phase::as_str).unwrap_or("None"),
            to = desired.phase.map(Phase::as_str).unwrap_or("None"),
            reason = desired
                .condition(ConditionType::Ready)
                .map(|c| c.reason.as_str())
                .unwrap_or_default(),
            "phase changed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate;
    use k8s_openapi::jiff::Timestamp;

    fn store(yaml: &str) -> SessionStore {
        serde_yaml::from_str(yaml).expect("valid yaml")
    }

    fn dev() -> SessionStore {
        let mut s = store(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\nmetadata: {name: web, namespace: shop, uid: u1, generation: 2}\nspec:\n  profile: development\n  clients: {podSelector: {matchLabels: {app: web}}}\n",
        );
        s.metadata.generation = Some(2);
        s
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid time"))
    }

    #[test]
    fn provisioning_then_ready_keeps_unchanged_transition_times() {
        let settings = OperatorSettings::default();
        let validated = validate(&dev()).expect("valid");
        let first = desired_status(
            None,
            Some(2),
            &Progress::Applied {
                store: &validated,
                ready_replicas: 0,
                auth: None,
                service_monitor_unavailable: None,
                ha: None,
                rollout: None,
                diagnosis: None,
            },
            &settings,
            &at(100),
        );
        assert_eq!(first.phase, Some(Phase::Provisioning));
        assert_eq!(
            first
                .condition(ConditionType::Ready)
                .map(|c| c.status.as_str()),
            Some("False")
        );
        assert_eq!(
            first.endpoint.as_ref().map(|e| e.host.as_str()),
            Some("web.shop.svc.cluster.local")
        );
        assert_eq!(first.connection_secret.as_deref(), Some("web-connection"));

        let live = SessionStoreStatus {
            observed_generation: first.observed_generation,
            phase: first.phase,
            conditions: first.conditions.clone(),
            endpoint: first.endpoint.clone(),
            connection_secret: first.connection_secret.clone(),
            replicas: first.replicas,
            ready_replicas: first.ready_replicas,
            auth: first.auth.clone(),
            ..SessionStoreStatus::default()
        };
        // Same inputs later: equal, nothing to write.
        let again = desired_status(
            Some(&live),
            Some(2),
            &Progress::Applied {
                store: &validated,
                ready_replicas: 0,
                auth: None,
                service_monitor_unavailable: None,
                ha: None,
                rollout: None,
                diagnosis: None,
            },
            &settings,
            &at(500),
        );
        assert!(!differs(Some(&live), &again));

        let ready = desired_status(
            Some(&live),
            Some(2),
            &Progress::Applied {
                store: &validated,
                ready_replicas: 1,
                auth: None,
                service_monitor_unavailable: None,
                ha: None,
                rollout: None,
                diagnosis: None,
            },
            &settings,
            &at(900),
        );
        assert!(differs(Some(&live), &ready));
        assert_eq!(ready.phase, Some(Phase::Ready));
        let r = ready
            .condition(ConditionType::Ready)
            .expect("ready condition");
        assert_eq!(
            (r.status.as_str(), r.last_transition_time.clone()),
            ("True", at(900))
        );
    }

    #[test]
    fn a_diagnosis_is_the_ready_reason_while_replicas_are_missing() {
        let settings = OperatorSettings::default();
        let validated = validate(&dev()).expect("valid");
        let diagnosis = Diagnosis {
            reason: Reason::CrashLooping,
            message: "pod web-0, container redis exits with code 1".into(),
        };
        let applied = |ready: i32,
                       diagnosis: Option<&Diagnosis>,
                       current: Option<&SessionStoreStatus>,
                       now: i64| {
            desired_status(
                current,
                Some(2),
                &Progress::Applied {
                    store: &validated,
                    ready_replicas: ready,
                    auth: None,
                    service_monitor_unavailable: None,
                    ha: None,
                    rollout: None,
                    diagnosis,
                },
                &settings,
                &at(now),
            )
        };
        let first = applied(0, Some(&diagnosis), None, 100);
        let ready = first.condition(ConditionType::Ready).expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "CrashLooping")
        );
        assert_eq!(
            ready.message,
            "0 of 1 replicas ready; pod web-0, container redis exits with code 1"
        );
        assert_eq!(first.phase, Some(Phase::Provisioning));
        let live = SessionStoreStatus {
            observed_generation: first.observed_generation,
            phase: first.phase,
            conditions: first.conditions.clone(),
            endpoint: first.endpoint.clone(),
            connection_secret: first.connection_secret.clone(),
            replicas: first.replicas,
            ready_replicas: first.ready_replicas,
            ..SessionStoreStatus::default()
        };
        // The same cause later: nothing to write.
        assert!(!differs(
            Some(&live),
            &applied(0, Some(&diagnosis), Some(&live), 500)
        ));
        // All ready: the diagnosis no longer applies.
        let healed = applied(1, None, Some(&live), 900);
        assert_eq!(
            healed
                .condition(ConditionType::Ready)
                .map(|c| c.reason.as_str()),
            Some("AllReplicasReady")
        );
    }

    #[test]
    fn invalid_spec_names_the_field_and_keeps_health_conditions() {
        let settings = OperatorSettings::default();
        let live = SessionStoreStatus {
            conditions: vec![Condition {
                type_: "Healthy".into(),
                status: "True".into(),
                reason: "Ok".into(),
                message: "fine".into(),
                observed_generation: Some(1),
                last_transition_time: at(1),
            }],
            ..SessionStoreStatus::default()
        };
        let error = ValidationError {
            field: "spec.replicas".into(),
            message: "2 is rejected".into(),
        };
        let status = desired_status(
            Some(&live),
            Some(3),
            &Progress::Invalid(&error),
            &settings,
            &at(5),
        );
        assert_eq!(status.phase, Some(Phase::Failed));
        let ready = status.condition(ConditionType::Ready).expect("ready");
        assert_eq!(ready.reason, "InvalidSpec");
        assert!(ready.message.contains("spec.replicas"));
        assert!(status.condition(ConditionType::Healthy).is_some());
        assert_eq!(status.observed_generation, Some(3));
    }
}
