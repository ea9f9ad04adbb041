//! Why a store's pods are not ready, in words an SRE can act on at 3 a.m.: while fewer pods are
//! ready than desired, the cause is read from the stripped pod cache (container states, the
//! scheduler's condition) and, when pods are missing, from the StatefulSet's `FailedCreate`
//! Events. One `Ready=False` reason per cause; the message names the pod, quotes Kubernetes or
//! Redis verbatim and says what to change.
//!
//! Deciding is pure ([`diagnose`]); the controller reads the inputs (the cache, one Event list
//! only on the pods-missing path) and writes the result with the rest of the status.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::build::statefulset::{EXPORTER_CONTAINER, REDIS_CONTAINER};
use crate::validate::ValidatedStore;
use crate::vocabulary::{ConditionStatus, Reason};

/// How long a running Redis may fail its readiness probe before it is reported: the Redis
/// container's start-up probe window (every 5 s, 120 failures; checked against the built
/// StatefulSet by the tests), which is what a large dataset may take to load.
pub const STARTUP_ALLOWANCE: Duration = Duration::from_secs(600);

/// Lines of a termination message quoted in the status (Redis's fatal error is in the last few).
const QUOTED_LINES: usize = 4;
/// Longest quote from a termination message or Event.
const MAX_QUOTE: usize = 600;
/// Longest line quoted from a termination message (Redis's start-up warnings run long).
const MAX_LINE: usize = 160;

/// One cause and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// One of the `Ready=False` reasons this module decides (also the Warning Event's reason).
    pub reason: Reason,
    pub message: String,
}

/// A `FailedCreate`-style Event of the store's StatefulSet: reason and message verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetEvent {
    pub reason: String,
    pub message: String,
}

/// What the diagnosis reads, all from caches except `events` (listed only when pods are missing).
pub struct Inputs<'a> {
    pub store: &'a ValidatedStore,
    /// The store's cached pods (stripped by `cache::strip_pod`).
    pub pods: &'a [Pod],
    /// `status.replicas` of the StatefulSet (pods it created), if known.
    pub created: Option<i32>,
    /// The StatefulSet's recent Events, newest last; empty unless pods are missing.
    pub events: &'a [StatefulSetEvent],
    pub now: Timestamp,
}

/// Whether some desired pod does not exist, so the StatefulSet's Events are worth a read.
pub fn pods_missing(store: &ValidatedStore, pods: &[Pod], created: Option<i32>) -> bool {
    let existing = (0..store.replicas)
        .filter(|i| {
            let name = crate::pods::pod_name(&store.name, i);
            pods.iter().any(|p| p.name_any() == name)
        })
        .count();
    created.is_some_and(|c| c < store.replicas) && existing < store.replicas as usize
}

/// The first cause found, pods in ordinal order; `None` when nothing explains the wait yet
/// (pods starting normally).
pub fn diagnose(inputs: &Inputs<'_>) -> Option<Diagnosis> {
    let store = inputs.store;
    for ordinal in 0..store.replicas {
        let name = crate::pods::pod_name(&store.name, ordinal);
        let Some(pod) = inputs.pods.iter().find(|p| p.name_any() == name) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(found) = diagnose_pod(store, pod, inputs.now) {
            return Some(found);
        }
    }
    if pods_missing(store, inputs.pods, inputs.created) {
        return pods_not_created(store, inputs.events);
    }
    None
}

/// The first cause found on one pod: an image that cannot be pulled, a container that was
/// OOM-killed or exits with an error, a pod that cannot be scheduled, a Redis that never gets ready.
fn diagnose_pod(store: &ValidatedStore, pod: &Pod, now: Timestamp) -> Option<Diagnosis> {
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    let containers: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();

    image_pull_failed(&name, &containers)
        .or_else(|| container_failed(store, &name, &containers))
        .or_else(|| scheduling_problem(store, &name, status))
        .or_else(|| redis_not_ready(store, &name, &containers, now))
}

fn image_pull_failed(name: &str, containers: &[&ContainerStatus]) -> Option<Diagnosis> {
    for c in containers {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        let why = waiting
            .and_then(|w| w.reason.as_deref())
            .unwrap_or_default();
        if ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"].contains(&why) {
            let field = if c.name == EXPORTER_CONTAINER {
                "spec.monitoring.exporterImage"
            } else {
                "spec.image"
            };
            let detail = waiting.and_then(|w| w.message.as_deref()).unwrap_or(why);
            return Some(Diagnosis {
                reason: Reason::ImagePullFailed,
                message: format!(
                    "pod {name}, container {}: {why}: {}. Fix: check that {field} ({}) names an image that exists and that the nodes may pull it (registry reachable, imagePullSecrets)",
                    c.name,
                    quote(detail),
                    c.image,
                ),
            });
        }
    }
    None
}

fn container_failed(
    store: &ValidatedStore,
    name: &str,
    containers: &[&ContainerStatus],
) -> Option<Diagnosis> {
    for c in containers {
        if c.ready {
            continue;
        }
        let terminated = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
        let Some(terminated) = terminated else {
            continue;
        };
        if terminated.reason.as_deref() == Some("OOMKilled") {
            return Some(Diagnosis {
                reason: Reason::OomKilled,
                message: format!(
                    "pod {name}, container {}: OOMKilled (exit code {}): it used more than its memory limit{}. Fix: raise spec.memory.limit, or lower spec.memory.maxmemory (now {} bytes) to leave more headroom for copy-on-write during saves, client buffers and the replication backlog",
                    c.name,
                    terminated.exit_code,
                    if c.name == REDIS_CONTAINER {
                        format!(" ({})", store.memory.limit)
                    } else {
                        String::new()
                    },
                    store.memory.maxmemory_bytes,
                ),
            });
        }
        if terminated.exit_code != 0 {
            let output = terminated
                .message
                .as_deref()
                .map(last_lines)
                .filter(|l| !l.is_empty())
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            return Some(Diagnosis {
                reason: Reason::CrashLooping,
                message: format!(
                    "pod {name}, container {} exits with code {}{output}. Fix: the lines quoted are the container's own last output; change what they name (a directive comes from spec.extraConfig or another spec field), and the pod restarts on its own. Full log: kubectl -n {} logs {name} -c {} --previous",
                    c.name, terminated.exit_code, store.namespace, c.name,
                ),
            });
        }
    }

    None
}

fn scheduling_problem(store: &ValidatedStore, name: &str, status: &PodStatus) -> Option<Diagnosis> {
    let scheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == ConditionStatus::False);
    if let Some(condition) = scheduled {
        let said = condition.message.as_deref().unwrap_or_default();
        if said.contains("unbound") && said.contains("PersistentVolumeClaim") {
            let class = store
                .persistence
                .storage_class_name
                .as_deref()
                .map(|c| format!("the StorageClass {c:?} (spec.persistence.storageClassName)"))
                .unwrap_or_else(|| "the cluster's default StorageClass".into());
            return Some(Diagnosis {
                reason: Reason::VolumeNotBound,
                message: format!(
                    "pod {name} waits for its volume data-{name}, which no provisioner has bound: {}. Fix: {class} must exist and have a working provisioner (kubectl get storageclass; kubectl -n {} describe pvc data-{name}); spec.persistence.storageClassName is immutable, so for another class create a new SessionStore",
                    quote(said),
                    store.namespace,
                ),
            });
        }
        if condition.reason.as_deref() == Some("Unschedulable") {
            return Some(Diagnosis {
                reason: Reason::Unschedulable,
                message: format!(
                    "pod {name} cannot be scheduled: {}. Fix: give the cluster a node with {} of memory free that matches spec.nodeSelector, spec.tolerations, spec.affinity and spec.topologySpreadConstraints, or relax those fields",
                    quote(said),
                    store.memory.limit,
                ),
            });
        }
    }

    None
}

fn redis_not_ready(
    store: &ValidatedStore,
    name: &str,
    containers: &[&ContainerStatus],
    now: Timestamp,
) -> Option<Diagnosis> {
    let redis = containers.iter().find(|c| c.name == REDIS_CONTAINER)?;
    let started = redis
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())?;
    let running_for = now.duration_since(started.0);
    let allowance = k8s_openapi::jiff::SignedDuration::try_from(STARTUP_ALLOWANCE).ok()?;
    if !redis.ready && running_for > allowance {
        return Some(Diagnosis {
            reason: Reason::NotReady,
            message: format!(
                "pod {name}: Redis has run for more than {} minutes without passing its readiness probe (PING as the probe user). Fix: read kubectl -n {} logs {name} -c redis: a dataset still loading (raise spec.memory.limit if it is close to it), or an ACL file the server refused (the Secret {}-internal was edited: delete the pod to reload it)",
                STARTUP_ALLOWANCE.as_secs() / 60,
                store.namespace,
                store.name,
            ),
        });
    }
    None
}

fn pods_not_created(store: &ValidatedStore, events: &[StatefulSetEvent]) -> Option<Diagnosis> {
    let event = events.iter().rev().find(|e| e.reason == "FailedCreate")?;
    let said = &event.message;
    let fix = if said.contains("PriorityClass") {
        "create that PriorityClass (kubectl get priorityclass), or remove spec.priorityClassName"
            .to_string()
    } else if said.contains("exceeded quota") {
        format!(
            "raise the namespace's ResourceQuota (kubectl -n {} describe resourcequota), or lower spec.memory.limit and spec.resources",
            store.namespace
        )
    } else if said.contains("PodSecurity") {
        format!(
            "the namespace's Pod Security level refuses the pod; the pods meet `restricted` except what the message names: set the namespace label pod-security.kubernetes.io/enforce accordingly (kubectl get namespace {} --show-labels)",
            store.namespace
        )
    } else {
        format!(
            "change what the message names (kubectl -n {} describe statefulset {})",
            store.namespace, store.name
        )
    };
    Some(Diagnosis {
        reason: Reason::PodsNotCreated,
        message: format!(
            "the StatefulSet {} cannot create its pods: {}. Fix: {fix}",
            store.name,
            quote(said)
        ),
    })
}

/// The last few non-empty lines of a termination message, one line, capped, and without any line
/// that could carry a secret (a config or ACL line Redis echoes).
pub fn last_lines(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(QUOTED_LINES);
    let kept: Vec<String> = lines[start..]
        .iter()
        .map(|line| {
            let lower = line.to_ascii_lowercase();
            if ["pass", "auth", "secret", "user "]
                .iter()
                .any(|w| lower.contains(w))
                || line.contains('>')
                    && !line.starts_with(">>> '")
                    && line.split_whitespace().any(|w| w.starts_with('>'))
            {
                "[line withheld: it may hold a secret]".to_string()
            } else {
                quote_capped(line, MAX_LINE)
            }
        })
        .collect();
    // The fatal line is the last: when too long, the beginning goes.
    let joined = kept.join(" | ");
    let count = joined.chars().count();
    if count > MAX_QUOTE {
        let tail: String = joined.chars().skip(count - MAX_QUOTE).collect();
        format!("...{tail}")
    } else {
        joined
    }
}

/// Text from Kubernetes or Redis, on one line and capped.
fn quote(text: &str) -> String {
    quote_capped(text, MAX_QUOTE)
}

fn quote_capped(text: &str, max: usize) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > max {
        let cut: String = one_line.chars().take(max).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::store;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a Pod")
    }

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().expect("a timestamp")
    }

    fn run(
        spec: &str,
        pods: &[Pod],
        created: Option<i32>,
        events: &[StatefulSetEvent],
    ) -> Option<Diagnosis> {
        let store = store(spec);
        diagnose(&Inputs {
            store: &store,
            pods,
            created,
            events,
            now: at("2026-12-03T10:00:00Z"),
        })
    }

    fn with_container(name: &str, container: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "status": {"containerStatuses": [container]}
        }))
    }

    const DEV: &str = "  profile: development\n";

    #[test]
    fn missing_priority_class_is_pods_not_created_with_the_event_verbatim() {
        let said = "create Pod checkout-0 in StatefulSet checkout failed error: pods \"checkout-0\" is forbidden: no PriorityClass with name business-critical was found";
        let events = [
            StatefulSetEvent {
                reason: "SuccessfulCreate".into(),
                message: "older".into(),
            },
            StatefulSetEvent {
                reason: "FailedCreate".into(),
                message: said.into(),
            },
        ];
        let found = run(DEV, &[], Some(0), &events).expect("a cause");
        assert_eq!(found.reason, Reason::PodsNotCreated);
        assert!(found.message.contains(said), "{}", found.message);
        assert!(
            found.message.contains("remove spec.priorityClassName"),
            "{}",
            found.message
        );
        // Quota and Pod Security get their own fix.
        for (said, fix) in [
            (
                "pods \"checkout-0\" is forbidden: exceeded quota: mem, requested: limits.memory=256Mi",
                "ResourceQuota",
            ),
            (
                "pods \"checkout-0\" is forbidden: violates PodSecurity \"restricted:latest\": seccompProfile",
                "pod-security.kubernetes.io/enforce",
            ),
        ] {
            let events = [StatefulSetEvent {
                reason: "FailedCreate".into(),
                message: said.into(),
            }];
            let found = run(DEV, &[], Some(0), &events).expect("a cause");
            assert!(
                found.message.contains(said) && found.message.contains(fix),
                "{}",
                found.message
            );
        }
        // No Event yet, or every pod created: nothing to say.
        assert_eq!(run(DEV, &[], Some(0), &[]), None);
        assert_eq!(run(DEV, &[], Some(1), &events), None);
        assert_eq!(run(DEV, &[], None, &events), None);
    }

    #[test]
    fn pending_claim_is_volume_not_bound_and_other_pending_is_unschedulable() {
        let pending = |message: &str| {
            pod(serde_json::json!({
                "metadata": {"name": "checkout-0", "namespace": "shop"},
                "status": {"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": message
                }]}
            }))
        };
        let said = "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
        let found = run(
            "  persistence: {storageClassName: nope}\n",
            &[pending(said)],
            Some(3),
            &[],
        )
        .expect("a cause");
        assert_eq!(found.reason, Reason::VolumeNotBound);
        assert!(
            found.message.contains(said) && found.message.contains("\"nope\""),
            "{}",
            found.message
        );
        let said = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.";
        let found = run(DEV, &[pending(said)], Some(1), &[]).expect("a cause");
        assert_eq!(found.reason, Reason::Unschedulable);
        assert!(
            found.message.contains(said) && found.message.contains("spec.nodeSelector"),
            "{}",
            found.message
        );
    }

    #[test]
    fn image_pull_errors_name_the_image_field() {
        for why in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"] {
            let found = run(
                DEV,
                &[with_container(
                    "checkout-0",
                    serde_json::json!({"name": "redis", "ready": false, "restartCount": 0, "image": "redis:nope", "imageID": "",
                        "state": {"waiting": {"reason": why, "message": "manifest unknown"}}}),
                )],
                Some(1),
                &[],
            )
            .expect("a cause");
            assert_eq!(found.reason, Reason::ImagePullFailed);
            assert!(
                found.message.contains(why)
                    && found.message.contains("manifest unknown")
                    && found.message.contains("spec.image (redis:nope)"),
                "{}",
                found.message
            );
        }
    }

    #[test]
    fn a_crash_loop_quotes_the_exit_code_and_redis_last_lines() {
        let output = "1:C 03 Dec 2026 10:00:00.000 # oO0OoO0OoO0Oo Redis is starting\n\n*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***\nReading the configuration file, at line 42\n>>> 'lazy-expire \"yes\"'\nBad directive or wrong number of arguments\n";
        let crashed = |state: serde_json::Value| {
            with_container(
                "checkout-0",
                serde_json::json!({"name": "redis", "ready": false, "restartCount": 3, "image": "redis:7.2.5", "imageID": "",
                    "state": state,
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": output}}}),
            )
        };
        // Waiting to restart and briefly running again read the same: one message, one write.
        let waiting = run(
            DEV,
            &[crashed(
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}),
            )],
            Some(1),
            &[],
        )
        .expect("a cause");
        let running = run(
            DEV,
            &[crashed(
                serde_json::json!({"running": {"startedAt": "2026-12-03T09:59:59Z"}}),
            )],
            Some(1),
            &[],
        )
        .expect("a cause");
        assert_eq!(waiting, running);
        assert_eq!(waiting.reason, Reason::CrashLooping);
        assert!(
            waiting.message.contains("exits with code 1")
                && waiting.message.contains(
                    ">>> 'lazy-expire \"yes\"' | Bad directive or wrong number of arguments"
                )
                && !waiting.message.contains("Redis is starting"),
            "{}",
            waiting.message
        );
    }

    #[test]
    fn oom_killed_says_which_memory_field_to_change() {
        let found = run(
            DEV,
            &[with_container(
                "checkout-0",
                serde_json::json!({"name": "redis", "ready": false, "restartCount": 1, "image": "redis", "imageID": "",
                    "state": {"running": {"startedAt": "2026-12-03T09:59:00Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
            )],
            Some(1),
            &[],
        )
        .expect("a cause");
        assert_eq!(found.reason, Reason::OomKilled);
        assert!(
            found.message.contains("(256Mi)")
                && found.message.contains("spec.memory.limit")
                && found.message.contains("spec.memory.maxmemory"),
            "{}",
            found.message
        );
    }

    #[test]
    fn running_but_not_ready_is_reported_only_after_the_allowance() {
        let running = |started: &str| {
            with_container(
                "checkout-0",
                serde_json::json!({"name": "redis", "ready": false, "restartCount": 0, "image": "redis", "imageID": "",
                    "state": {"running": {"startedAt": started}}}),
            )
        };
        assert_eq!(
            run(DEV, &[running("2026-12-03T09:55:00Z")], Some(1), &[]),
            None
        );
        let found = run(DEV, &[running("2026-12-03T09:49:00Z")], Some(1), &[]).expect("a cause");
        assert_eq!(found.reason, Reason::NotReady);
        assert!(
            found.message.contains("pod checkout-0"),
            "{}",
            found.message
        );
    }

    #[test]
    fn lines_that_may_hold_a_secret_are_withheld() {
        let quoted = last_lines(
            ">>> 'masterauth \"hunter2\"'\nuser app on >hunter2 ~x\nrequirepass x\nBad directive",
        );
        assert!(!quoted.contains("hunter2"), "{quoted}");
        assert!(quoted.ends_with("Bad directive"), "{quoted}");
    }

    #[test]
    fn the_allowance_is_the_redis_start_up_probe_window() {
        let built = crate::build::statefulset::desired_statefulset(
            &store(DEV),
            &crate::settings::OperatorSettings::default(),
            "hash",
        );
        let pod_spec = built
            .spec
            .and_then(|s| s.template.spec)
            .expect("a pod template");
        let redis = pod_spec
            .containers
            .iter()
            .find(|c| c.name == REDIS_CONTAINER)
            .expect("the redis container");
        let probe = redis.startup_probe.as_ref().expect("a start-up probe");
        let window = probe.period_seconds.unwrap_or(10) * probe.failure_threshold.unwrap_or(3);
        assert_eq!(
            u64::try_from(window).ok(),
            Some(STARTUP_ALLOWANCE.as_secs())
        );
        // Redis's own fatal line reaches the termination message.
        for c in pod_spec
            .containers
            .iter()
            .chain(pod_spec.init_containers.iter().flatten())
        {
            if c.name == REDIS_CONTAINER || c.name.starts_with("sentinel") {
                assert_eq!(
                    c.termination_message_policy.as_deref(),
                    Some("FallbackToLogsOnError"),
                    "{}",
                    c.name
                );
            }
        }
    }
}
