//! Turns one store's observation into the `Healthy` and `Degraded` conditions, with reasons in
//! words and messages that carry the figures. Pure: the clock is a parameter.
//!
//! - `Healthy` is True when the primary answers and nothing needs attention; otherwise False with
//!   the most severe problem as its reason and every problem in its message.
//! - `Degraded` is True when the store serves sessions but something needs attention (memory
//!   pressure, evictions, keys without TTL, a replica down). When the store does not serve at all
//!   it is False with reason `NotServing` (the cause is in `Healthy`), so an alert on Degraded and
//!   one on Healthy never fire for the same cause twice.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::observe::info::{PodProblem, RedisInfo, Role, StoreObservation};
use crate::vocabulary::{ConditionStatus, ConditionType, Reason};

/// Memory use above this share of `maxmemory` is `MemoryPressure`.
pub const MEMORY_PRESSURE_RATIO: f64 = 0.90;

/// One thing that needs attention, most severe first in `Verdict::problems`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    pub message: String,
}

/// What the observation means for the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// A primary answered and is not loading: applications can read and write sessions.
    pub serving: bool,
    /// Most severe first. Empty means healthy.
    pub problems: Vec<Problem>,
    /// A one-line summary of the figures when healthy (for the `Healthy=True` message).
    pub summary: String,
}

/// Judges an observation. `previous_evicted_keys` is the primary's `evicted_keys` at the previous
/// probe (kept by `HealthTracker`): evictions are reported only when the counter grew since then.
pub fn assess(observation: &StoreObservation, previous_evicted_keys: Option<u64>) -> Verdict {
    // Pushed most severe first: whether the store serves at all, then memory and evictions,
    // then replicas, then keys without TTL (a risk for later, not a fault now).
    let mut problems = Vec::new();
    let mut later = Vec::new();
    let primary = observation.primary();
    let mut serving = false;
    let mut summary = String::new();

    match primary {
        None => problems.push(no_primary_problem(observation)),
        Some((name, info)) if info.loading => problems.push(Problem {
            reason: Reason::Loading,
            message: format!("primary {name} is loading its dataset from disk and refuses commands until it is done"),
        }),
        Some((name, info)) => {
            serving = true;
            summary = primary_summary(name, info);
            primary_problems(info, previous_evicted_keys, &mut problems, &mut later);
        }
    }

    // Every other pod: replicas, and pods that did not answer while a primary did.
    let primary_name = primary.map(|(name, _)| name);
    let mut pods: Vec<_> = observation
        .pods
        .iter()
        .filter(|p| Some(p.name.as_str()) != primary_name)
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    let mut links_down = Vec::new();
    if primary.is_some() {
        for pod in pods {
            match &pod.result {
                Err(PodProblem::NotRunning) => problems.push(Problem {
                    reason: Reason::PodsNotRunning,
                    message: format!("pod {} is not running yet", pod.name),
                }),
                Err(PodProblem::AuthRefused) => problems.push(Problem {
                    reason: Reason::AuthRefused,
                    message: format!("pod {}: {}", pod.name, PodProblem::AuthRefused.describe()),
                }),
                Err(problem) => problems.push(Problem {
                    reason: Reason::Unreachable,
                    message: format!("pod {}: {}", pod.name, problem.describe()),
                }),
                Ok(info) if info.loading => problems.push(Problem {
                    reason: Reason::Loading,
                    message: format!("replica {} is loading its dataset from disk", pod.name),
                }),
                Ok(info) if info.role == Some(Role::Replica) && info.master_link_up != Some(true) => {
                    links_down.push(Problem {
                        reason: Reason::ReplicaLinkDown,
                        message: format!(
                            "replica {} has no link to its primary (master_link_status down): it serves stale data and cannot take over safely",
                            pod.name
                        ),
                    })
                }
                Ok(_) => {}
            }
        }
    }
    // A replica that answers with a broken link is less urgent than one that does not answer.
    problems.append(&mut links_down);
    problems.append(&mut later);
    Verdict {
        serving,
        problems,
        summary,
    }
}

fn no_primary_problem(observation: &StoreObservation) -> Problem {
    let mut pods: Vec<_> = observation.pods.iter().collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    if pods.is_empty() {
        return Problem {
            reason: Reason::PodsNotRunning,
            message: "no pod exists yet".into(),
        };
    }
    if pods.iter().all(|p| p.result == Err(PodProblem::NotRunning)) {
        let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        return Problem {
            reason: Reason::PodsNotRunning,
            message: format!(
                "no pod is running yet ({}); waiting for them to start",
                names.join(", ")
            ),
        };
    }
    let details: Vec<String> = pods
        .iter()
        .map(|p| match &p.result {
            Ok(info) if info.role == Some(Role::Replica) => format!("{}: replica", p.name),
            Ok(_) => format!("{}: answered without a role", p.name),
            Err(problem) => format!("{}: {}", p.name, problem.describe()),
        })
        .collect();
    let (reason, lead) = if pods.iter().any(|p| p.result.is_ok()) {
        (
            Reason::NoPrimary,
            "pods answer but none is primary (failover in progress?)",
        )
    } else if pods
        .iter()
        .any(|p| p.result == Err(PodProblem::AuthRefused))
    {
        (Reason::AuthRefused, "the operator cannot log in to Redis")
    } else {
        (Reason::Unreachable, "no pod answered")
    };
    Problem {
        reason,
        message: format!("{lead}: {}", details.join("; ")),
    }
}

fn primary_problems(
    info: &RedisInfo,
    previous_evicted_keys: Option<u64>,
    problems: &mut Vec<Problem>,
    later: &mut Vec<Problem>,
) {
    if let (Some(used), Some(max)) = (info.used_memory, info.maxmemory)
        && max > 0
        && used as f64 > max as f64 * MEMORY_PRESSURE_RATIO
    {
        let policy = info.maxmemory_policy.as_deref().unwrap_or("unknown");
        problems.push(Problem {
            reason: Reason::MemoryPressure,
            message: format!(
                "used memory {} is {:.0}% of maxmemory {} (above {:.0}%); under {policy} Redis evicts or refuses writes when it is full",
                bytes(used),
                used as f64 * 100.0 / max as f64,
                bytes(max),
                MEMORY_PRESSURE_RATIO * 100.0
            ),
        });
    }
    if let (Some(now), Some(before)) = (info.evicted_keys, previous_evicted_keys) {
        // A smaller counter means Redis restarted: everything it counts since is new.
        let evicted = if now >= before { now - before } else { now };
        if evicted > 0 {
            problems.push(Problem {
                reason: Reason::Evicting,
                message: format!(
                    "{evicted} keys evicted since the last check ({now} since Redis started): sessions are being dropped to make room"
                ),
            });
        }
    }
    if let Some(policy) = info.eviction_policy()
        && policy.evicts_only_keys_with_ttl()
    {
        let without = info.keys_without_ttl();
        if without > 0 {
            later.push(Problem {
                reason: Reason::KeysWithoutTtl,
                message: format!(
                    "{without} keys have no TTL; under {} they are never evicted and writes will fail once memory is full",
                    policy.as_redis()
                ),
            });
        }
    }
}

fn primary_summary(name: &str, info: &RedisInfo) -> String {
    let memory = match (info.used_memory, info.maxmemory) {
        (Some(used), Some(max)) if max > 0 => format!(
            "memory {} of {} ({:.0}%)",
            bytes(used),
            bytes(max),
            used as f64 * 100.0 / max as f64
        ),
        (Some(used), _) => format!("memory {} (no maxmemory)", bytes(used)),
        _ => "memory unknown".into(),
    };
    format!(
        "primary {name} answers: {memory}, {} session keys",
        info.keys
    )
}

/// `1536` -> `1.5 KiB`: messages are read by people.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The `Healthy` and `Degraded` conditions for a verdict, merged into `existing` (the store's
/// current conditions) so `lastTransitionTime` only moves when a status flips.
pub fn health_conditions(
    verdict: &Verdict,
    generation: Option<i64>,
    existing: &[Condition],
    now: &Time,
) -> [Condition; 2] {
    let all_messages = || {
        verdict
            .problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let healthy = match verdict.problems.first() {
        None => (
            ConditionStatus::True,
            Reason::AllChecksPassed,
            verdict.summary.clone(),
        ),
        Some(first) => (ConditionStatus::False, first.reason, all_messages()),
    };
    let degraded = match (verdict.serving, verdict.problems.first()) {
        (true, Some(first)) => (ConditionStatus::True, first.reason, all_messages()),
        (true, None) => (
            ConditionStatus::False,
            Reason::AsExpected,
            "nothing needs attention".to_string(),
        ),
        (false, _) => (
            ConditionStatus::False,
            Reason::NotServing,
            "the store is not serving sessions; the Healthy condition says why".to_string(),
        ),
    };
    let make = |type_: ConditionType,
                (status, reason, message): (ConditionStatus, Reason, String)| {
        merge_condition(
            existing,
            Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                observed_generation: generation,
                last_transition_time: now.clone(),
            },
        )
    };
    [
        make(ConditionType::Healthy, healthy),
        make(ConditionType::Degraded, degraded),
    ]
}

/// Keeps the existing condition's `lastTransitionTime` when its status did not change.
pub fn merge_condition(existing: &[Condition], mut desired: Condition) -> Condition {
    if let Some(old) = existing.iter().find(|c| c.type_ == desired.type_)
        && old.status == desired.status
    {
        desired.last_transition_time = old.last_transition_time.clone();
    }
    desired
}

/// Replaces (or adds) conditions of the same type in a list, keeping the others in place.
pub fn upsert_conditions(
    conditions: &mut Vec<Condition>,
    updates: impl IntoIterator<Item = Condition>,
) {
    for update in updates {
        let update = merge_condition(conditions, update);
        match conditions.iter_mut().find(|c| c.type_ == update.type_) {
            Some(slot) => *slot = update,
            None => conditions.push(update),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Phase;

    /// The phase the status step derives from the verdict's `Healthy` condition.
    fn phase_of(v: &Verdict) -> Phase {
        let now = time(0);
        let [healthy, _] = health_conditions(v, None, &[], &now);
        crate::status::phase_from_health(Some(&healthy))
    }
    use crate::observe::info::PodObservation;

    fn primary(
        used: u64,
        max: u64,
        keys: u64,
        with_ttl: u64,
        evicted: u64,
        policy: &str,
    ) -> RedisInfo {
        RedisInfo {
            redis_version: Some("7.0.15".into()),
            role: Some(Role::Primary),
            used_memory: Some(used),
            maxmemory: Some(max),
            maxmemory_policy: Some(policy.into()),
            evicted_keys: Some(evicted),
            keys,
            keys_with_ttl: with_ttl,
            ..RedisInfo::default()
        }
    }

    fn replica(link_up: bool) -> RedisInfo {
        RedisInfo {
            role: Some(Role::Replica),
            master_link_up: Some(link_up),
            ..RedisInfo::default()
        }
    }

    fn store(pods: Vec<(&str, Result<RedisInfo, PodProblem>)>) -> StoreObservation {
        StoreObservation {
            pods: pods
                .into_iter()
                .map(|(name, result)| PodObservation {
                    name: name.into(),
                    ready: result.is_ok(),
                    result,
                })
                .collect(),
        }
    }

    fn reasons(v: &Verdict) -> Vec<Reason> {
        v.problems.iter().map(|p| p.reason).collect()
    }

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn a_quiet_store_is_healthy_and_ready() {
        let v = assess(
            &store(vec![(
                "s-0",
                Ok(primary(1 << 20, 100 << 20, 5, 5, 0, "volatile-lru")),
            )]),
            Some(0),
        );
        assert!(v.serving);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(phase_of(&v), Phase::Ready);
        assert_eq!(
            v.summary,
            "primary s-0 answers: memory 1.0 MiB of 100.0 MiB (1%), 5 session keys"
        );
    }

    #[test]
    fn memory_pressure_evictions_and_keys_without_ttl_are_named_with_figures() {
        let v = assess(
            &store(vec![(
                "s-0",
                Ok(primary(1_950_000, 2 << 20, 10, 7, 40, "volatile-lru")),
            )]),
            Some(15),
        );
        assert_eq!(
            reasons(&v),
            vec![
                Reason::MemoryPressure,
                Reason::Evicting,
                Reason::KeysWithoutTtl
            ]
        );
        assert!(
            v.problems[0]
                .message
                .starts_with("used memory 1.9 MiB is 93% of maxmemory 2.0 MiB"),
            "{}",
            v.problems[0].message
        );
        assert!(
            v.problems[1]
                .message
                .starts_with("25 keys evicted since the last check (40 since Redis started)")
        );
        assert_eq!(
            v.problems[2].message,
            "3 keys have no TTL; under volatile-lru they are never evicted and writes will fail once memory is full"
        );
        assert_eq!(phase_of(&v), Phase::Degraded);
    }

    #[test]
    fn no_eviction_reported_without_a_previous_figure_or_growth() {
        let info = primary(1, 100, 0, 0, 40, "allkeys-lru");
        assert!(
            assess(&store(vec![("s-0", Ok(info.clone()))]), None)
                .problems
                .is_empty()
        );
        assert!(
            assess(&store(vec![("s-0", Ok(info.clone()))]), Some(40))
                .problems
                .is_empty()
        );
        // Counter went down: Redis restarted, and the 40 it counts since are new.
        assert_eq!(
            reasons(&assess(&store(vec![("s-0", Ok(info))]), Some(100))),
            vec![Reason::Evicting]
        );
    }

    #[test]
    fn keys_without_ttl_only_matter_under_volatile_policies() {
        let allkeys = primary(1, 100, 10, 0, 0, "allkeys-lru");
        assert!(
            assess(&store(vec![("s-0", Ok(allkeys))]), Some(0))
                .problems
                .is_empty()
        );
        let volatile = primary(1, 100, 10, 0, 0, "volatile-ttl");
        assert_eq!(
            reasons(&assess(&store(vec![("s-0", Ok(volatile))]), Some(0))),
            vec![Reason::KeysWithoutTtl]
        );
    }

    #[test]
    fn pods_not_running_yet_is_reported_calmly_as_provisioning() {
        let v = assess(
            &store(vec![
                ("s-0", Err(PodProblem::NotRunning)),
                ("s-1", Err(PodProblem::NotRunning)),
            ]),
            None,
        );
        assert!(!v.serving);
        assert_eq!(reasons(&v), vec![Reason::PodsNotRunning]);
        assert_eq!(
            v.problems[0].message,
            "no pod is running yet (s-0, s-1); waiting for them to start"
        );
        assert_eq!(phase_of(&v), Phase::Provisioning);
    }

    #[test]
    fn unreachable_and_auth_refused_say_which() {
        let v = assess(
            &store(vec![("s-0", Err(PodProblem::ConnectionRefused))]),
            None,
        );
        assert_eq!(reasons(&v), vec![Reason::Unreachable]);
        assert_eq!(
            v.problems[0].message,
            "no pod answered: s-0: connection refused on the Redis port"
        );
        let v = assess(&store(vec![("s-0", Err(PodProblem::ConnectTimeout))]), None);
        assert!(
            v.problems[0]
                .message
                .contains("no answer to the connection within the timeout")
        );
        let v = assess(&store(vec![("s-0", Err(PodProblem::AuthRefused))]), None);
        assert_eq!(reasons(&v), vec![Reason::AuthRefused]);
        assert!(v.problems[0].message.starts_with(
            "the operator cannot log in to Redis: s-0: Redis refused the operator's ACL user"
        ));
        assert_eq!(phase_of(&v), Phase::Degraded);
    }

    #[test]
    fn loading_primary_is_not_serving() {
        let mut info = primary(1, 100, 0, 0, 0, "allkeys-lru");
        info.loading = true;
        let v = assess(&store(vec![("s-0", Ok(info))]), None);
        assert!(!v.serving);
        assert_eq!(reasons(&v), vec![Reason::Loading]);
        assert_eq!(phase_of(&v), Phase::Provisioning);
    }

    #[test]
    fn replica_problems_degrade_but_the_store_serves() {
        let v = assess(
            &store(vec![
                ("s-0", Ok(primary(1, 100, 0, 0, 0, "allkeys-lru"))),
                ("s-1", Ok(replica(false))),
                ("s-2", Err(PodProblem::CommandTimeout)),
                ("s-3", Ok(replica(true))),
            ]),
            Some(0),
        );
        assert!(v.serving);
        assert_eq!(
            reasons(&v),
            vec![Reason::Unreachable, Reason::ReplicaLinkDown]
        );
        assert!(
            v.problems[0]
                .message
                .starts_with("pod s-2: connected, but Redis did not answer")
        );
        assert!(
            v.problems[1]
                .message
                .starts_with("replica s-1 has no link to its primary")
        );
    }

    #[test]
    fn only_replicas_answering_means_no_primary() {
        let v = assess(
            &store(vec![
                ("s-0", Err(PodProblem::ConnectionRefused)),
                ("s-1", Ok(replica(false))),
            ]),
            None,
        );
        assert_eq!(reasons(&v), vec![Reason::NoPrimary]);
        assert_eq!(
            v.problems[0].message,
            "pods answer but none is primary (failover in progress?): s-0: connection refused on the Redis port; s-1: replica"
        );
    }

    #[test]
    fn conditions_keep_transition_time_while_status_holds() {
        let healthy = assess(
            &store(vec![("s-0", Ok(primary(1, 100, 0, 0, 0, "allkeys-lru")))]),
            Some(0),
        );
        let [h1, d1] = health_conditions(&healthy, Some(3), &[], &time(1000));
        assert_eq!(
            (h1.status.as_str(), h1.reason.as_str()),
            ("True", Reason::AllChecksPassed.as_str())
        );
        assert_eq!(
            (d1.status.as_str(), d1.reason.as_str()),
            ("False", Reason::AsExpected.as_str())
        );
        assert_eq!(h1.observed_generation, Some(3));

        // Same status later: the time stays.
        let [h2, d2] = health_conditions(&healthy, Some(3), &[h1.clone(), d1.clone()], &time(2000));
        assert_eq!(h2.last_transition_time, time(1000));
        assert_eq!(d2.last_transition_time, time(1000));

        // Memory pressure: Healthy flips (new time), Degraded flips too.
        let pressured = assess(
            &store(vec![("s-0", Ok(primary(95, 100, 0, 0, 0, "allkeys-lru")))]),
            Some(0),
        );
        let [h3, d3] = health_conditions(&pressured, Some(3), &[h2, d2], &time(3000));
        assert_eq!(
            (h3.status.as_str(), h3.reason.as_str()),
            ("False", Reason::MemoryPressure.as_str())
        );
        assert_eq!(
            (d3.status.as_str(), d3.reason.as_str()),
            ("True", Reason::MemoryPressure.as_str())
        );
        assert_eq!(h3.last_transition_time, time(3000));
        assert_eq!(d3.message, h3.message);

        // Down: Degraded is False with NotServing, and its time moves only because its status flipped.
        let down = assess(
            &store(vec![("s-0", Err(PodProblem::ConnectionRefused))]),
            None,
        );
        let [h4, d4] = health_conditions(&down, Some(3), &[h3, d3], &time(4000));
        assert_eq!(
            (h4.status.as_str(), h4.reason.as_str()),
            ("False", Reason::Unreachable.as_str())
        );
        assert_eq!(
            h4.last_transition_time,
            time(3000),
            "Healthy was already False"
        );
        assert_eq!(
            (d4.status.as_str(), d4.reason.as_str()),
            ("False", Reason::NotServing.as_str())
        );
        assert_eq!(d4.last_transition_time, time(4000));
    }

    #[test]
    fn upsert_replaces_by_type_and_keeps_others() {
        let other = Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Applied".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: time(1),
        };
        let mut list = vec![other.clone()];
        let v = assess(
            &store(vec![("s-0", Ok(primary(1, 100, 0, 0, 0, "allkeys-lru")))]),
            Some(0),
        );
        upsert_conditions(&mut list, health_conditions(&v, None, &[], &time(5)));
        upsert_conditions(&mut list, health_conditions(&v, None, &[], &time(9)));
        assert_eq!(list.len(), 3);
        assert_eq!(list[0], other);
        assert_eq!(list[1].type_, ConditionType::Healthy.as_str());
        assert_eq!(list[1].last_transition_time, time(5));
    }
}
