//! The operator's words on the wire, spelled once: the condition types, condition statuses,
//! condition and Event reasons and Event actions it writes. Alerts, dashboards, `kubectl get` and
//! the README's troubleshooting table match on these strings, so every module names a variant
//! here instead of repeating a literal. Imports nothing from the crate: every module may use it.

use std::fmt;

/// An enum of wire words: `as_str`, `Display`, `ALL`, and comparison with the strings Kubernetes
/// objects carry (`condition.type_ == ConditionType::Ready`).
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $wire:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The string written to the API server.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }

            /// The variant spelled `wire`, if any.
            pub fn parse(wire: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|word| word.as_str() == wire)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl From<$name> for String {
            fn from(word: $name) -> String {
                word.as_str().to_string()
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, word: &$name) -> bool {
                self == word.as_str()
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, word: &$name) -> bool {
                *self == word.as_str()
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, word: &$name) -> bool {
                self == word.as_str()
            }
        }
    };
}

words! {
    /// The condition types the operator writes on a SessionStore.
    pub enum ConditionType {
        /// All replicas ready (and, for HA, a primary known): the status step.
        Ready = "Ready",
        /// At least one Redis pod serves sessions: the status step.
        Available = "Available",
        /// The health probe found nothing that needs attention: the health step.
        Healthy = "Healthy",
        /// The store serves sessions but something needs attention: the health step.
        Degraded = "Degraded",
        /// A majority of Sentinels names a primary pod (and the role labels follow it): HA only.
        PrimaryKnown = "PrimaryKnown",
        /// The last failover the operator saw (True once one happened; its time that of the
        /// latest one, its message `old -> new`): HA only.
        Failover = "Failover",
        /// A rolling update of the pods is in progress: HA only.
        Updating = "Updating",
        /// Present (True) while `spec.monitoring.serviceMonitor` is on but prometheus-operator's
        /// API is missing; the store itself is not failed for it.
        ServiceMonitorUnavailable = "ServiceMonitorUnavailable",
    }
}

words! {
    /// A condition's status.
    pub enum ConditionStatus {
        True = "True",
        False = "False",
        Unknown = "Unknown",
    }
}

impl From<bool> for ConditionStatus {
    fn from(ok: bool) -> Self {
        if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

words! {
    /// The reasons of the conditions and Events the operator writes (CamelCase words, stable:
    /// alerts match on them). Some are both a condition reason and an Event reason.
    pub enum Reason {
        // Ready, while the reconcile cannot go on (also the Warning Event).
        /// Ready=False: the spec cannot be reconciled; waits for a change.
        InvalidSpec = "InvalidSpec",
        /// Ready=False: `spec.auth.existingSecret` is missing or unusable.
        ExistingSecretMissing = "ExistingSecretMissing",
        /// Ready=False: `spec.tls.issuerRef` but cert-manager's API is not installed.
        TlsIssuerUnavailable = "TlsIssuerUnavailable",
        /// Ready=False: the TLS Secret is not there (yet).
        TlsSecretMissing = "TlsSecretMissing",

        // Ready and Available, once the children are applied.
        /// Ready=True.
        AllReplicasReady = "AllReplicasReady",
        /// Ready=False: every replica is ready but no primary is known yet (HA).
        WaitingForPrimary = "WaitingForPrimary",
        /// Ready=False: a store that was ready lost a replica.
        ReplicasNotReady = "ReplicasNotReady",
        /// Ready=False: pods are starting and nothing is wrong so far.
        Provisioning = "Provisioning",
        /// Available=True.
        Serving = "Serving",
        /// Available=False.
        NoReadyReplicas = "NoReadyReplicas",

        // Ready=False diagnoses (`diagnosis`), each also a Warning Event.
        PodsNotCreated = "PodsNotCreated",
        Unschedulable = "Unschedulable",
        VolumeNotBound = "VolumeNotBound",
        ImagePullFailed = "ImagePullFailed",
        CrashLooping = "CrashLooping",
        OomKilled = "OOMKilled",
        NotReady = "NotReady",

        // Healthy and Degraded (`observe::conditions`).
        AllChecksPassed = "AllChecksPassed",
        AsExpected = "AsExpected",
        NotServing = "NotServing",
        PodsNotRunning = "PodsNotRunning",
        Unreachable = "Unreachable",
        AuthRefused = "AuthRefused",
        NoPrimary = "NoPrimary",
        Loading = "Loading",
        MemoryPressure = "MemoryPressure",
        Evicting = "Evicting",
        KeysWithoutTtl = "KeysWithoutTtl",
        ReplicaLinkDown = "ReplicaLinkDown",

        // PrimaryKnown (`ha::step`).
        SentinelMajority = "SentinelMajority",
        WaitingForPods = "WaitingForPods",
        SentinelTlsCaMissing = "SentinelTlsCaMissing",
        WaitingForSentinels = "WaitingForSentinels",
        NoSentinelMajority = "NoSentinelMajority",
        SentinelsCatchingUp = "SentinelsCatchingUp",
        PrimaryNotAPod = "PrimaryNotAPod",
        PrimaryPodMissing = "PrimaryPodMissing",

        /// Failover=True, and the Normal Event of a change of primary.
        PrimaryChanged = "PrimaryChanged",

        // Updating (`ha::rollout_step`); the last two are also Events.
        UpToDate = "UpToDate",
        Waiting = "Waiting",
        RestartingPod = "RestartingPod",
        HandingOverPrimary = "HandingOverPrimary",

        /// ServiceMonitorUnavailable=True.
        PrometheusOperatorMissing = "PrometheusOperatorMissing",

        // Events only.
        /// Warning: a ServiceMonitor is asked for but its API is missing.
        ServiceMonitorUnavailable = "ServiceMonitorUnavailable",
        /// Normal: the children and the connection Secret were created.
        Created = "Created",
        /// Normal: every replica is ready.
        Ready = "Ready",
        /// Normal: the engine (Redis/Valkey) changes.
        SwitchingEngine = "SwitchingEngine",
        /// Warning: a handover was refused (rolling update, scale-down, stopping primary).
        HandoverRefused = "HandoverRefused",
        /// A scale-down waits for (or refuses) the handover of the primary.
        ScaleDownHandover = "ScaleDownHandover",
        /// Normal: the password rotation's steps.
        RotationStarted = "RotationStarted",
        RotationPublished = "RotationPublished",
        RotationFinished = "RotationFinished",
    }
}

words! {
    /// What the operator was doing when it published an Event (the Event's `action`).
    pub enum EventAction {
        Validating = "Validating",
        ReadingSecret = "ReadingSecret",
        Provisioning = "Provisioning",
        Diagnosing = "Diagnosing",
        Updating = "Updating",
        RollingUpdate = "RollingUpdate",
        PodStopping = "PodStopping",
        ScaleDown = "ScaleDown",
        Failover = "Failover",
        Rotating = "Rotating",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips_and_is_unique() {
        fn check<T: Copy + Eq + fmt::Debug>(all: &[T], as_str: fn(T) -> &'static str) {
            let mut seen = std::collections::BTreeSet::new();
            for word in all {
                assert!(seen.insert(as_str(*word)), "{word:?} spelled twice");
            }
        }
        check(ConditionType::ALL, ConditionType::as_str);
        check(ConditionStatus::ALL, ConditionStatus::as_str);
        check(Reason::ALL, Reason::as_str);
        check(EventAction::ALL, EventAction::as_str);
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
            assert_eq!(reason.to_string(), reason.as_str());
        }
        assert_eq!(Reason::OomKilled.as_str(), "OOMKilled");
        assert_eq!(ConditionStatus::from(true), ConditionStatus::True);
        assert!("True" == ConditionStatus::True);
        let wire = String::from("Ready");
        assert!(wire == ConditionType::Ready);
    }

    #[test]
    fn the_readme_explains_every_condition_reason() {
        let readme = include_str!("../README.md");
        let missing: Vec<_> = Reason::ALL
            .iter()
            .filter(|reason| !readme.contains(&format!("`{reason}`")))
            .collect();
        assert!(missing.is_empty(), "not in README.md: {missing:?}");
    }
}
