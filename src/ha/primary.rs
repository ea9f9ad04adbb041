//! Primary discovery: the operator asks every Sentinel which address is the primary and trusts only
//! a strict majority of the configured Sentinels, so one stale or partitioned Sentinel can never
//! move the primary-only Service. Also the pure role-label decisions that follow from the answer.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;

use crate::build::meta::ROLE_LABEL;
use crate::password::Password;
use crate::redis_client;

/// How to reach the Sentinels. Credentials are those of Sentinel's `operator` ACL user.
#[derive(Clone)]
pub struct DiscoveryOptions {
    pub username: String,
    pub password: Password,
    /// Dial the Sentinels over TLS with these certificates (stores with TLS enabled).
    pub tls: Option<redis::TlsCertificates>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Sentinels asked at the same time (the rest wait their turn).
    pub max_concurrency: usize,
}

impl DiscoveryOptions {
    /// Defaults sized for a reconcile: a dead Sentinel costs at most ~2 s.
    pub fn new(username: impl Into<String>, password: Password) -> Self {
        DiscoveryOptions {
            username: username.into(),
            password,
            tls: None,
            connect_timeout: Duration::from_millis(1000),
            response_timeout: Duration::from_millis(1000),
            max_concurrency: 9,
        }
    }
}

/// The primary a majority of Sentinels agrees on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryAnswer {
    pub host: String,
    pub port: u16,
    /// The StatefulSet pod behind `host` (`<store>-<n>`), when the host is its headless DNS name.
    pub pod: Option<String>,
    /// Sentinels that named this address.
    pub agreeing: usize,
    /// Sentinels asked.
    pub asked: usize,
}

impl PrimaryAnswer {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error("no Sentinel address to ask")]
    NoSentinels,
    #[error("{0:?} is not a host:port Sentinel address")]
    InvalidAddress(String),
    /// Fewer than a strict majority agree: the operator must not move the primary label.
    #[error(
        "no majority of Sentinels agrees on a primary: {answered} of {asked} answered, best answer {best} had {best_votes} vote(s), {needed} needed"
    )]
    NoMajority {
        asked: usize,
        answered: usize,
        best: String,
        best_votes: usize,
        needed: usize,
    },
}

/// Asks every Sentinel for `master_name`'s primary, concurrently and with timeouts, and returns the
/// address named by a strict majority of `sentinels` (unreachable Sentinels count as no vote).
pub async fn discover_primary(
    sentinels: &[String],
    master_name: &str,
    options: &DiscoveryOptions,
) -> Result<PrimaryAnswer, DiscoveryError> {
    if sentinels.is_empty() {
        return Err(DiscoveryError::NoSentinels);
    }
    let addresses = sentinels
        .iter()
        .map(|s| split_host_port(s).ok_or_else(|| DiscoveryError::InvalidAddress(s.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let answers: Vec<Option<(String, u16)>> = futures::stream::iter(addresses)
        .map(|(host, port)| ask_sentinel(host, port, master_name, options))
        .buffer_unordered(options.max_concurrency.max(1))
        .collect()
        .await;
    tally(&answers, sentinels.len(), master_name)
}

/// Counts votes; pure so the majority rule is tested without Sentinels.
fn tally(
    answers: &[Option<(String, u16)>],
    asked: usize,
    master_name: &str,
) -> Result<PrimaryAnswer, DiscoveryError> {
    let mut votes: BTreeMap<(String, u16), usize> = BTreeMap::new();
    for (host, port) in answers.iter().flatten() {
        *votes.entry((host.to_ascii_lowercase(), *port)).or_default() += 1;
    }
    let needed = asked / 2 + 1;
    let best = votes.iter().max_by_key(|(_, count)| **count);
    match best {
        Some(((host, port), count)) if *count >= needed => Ok(PrimaryAnswer {
            host: host.clone(),
            port: *port,
            pod: pod_for_host(host, master_name),
            agreeing: *count,
            asked,
        }),
        _ => Err(DiscoveryError::NoMajority {
            asked,
            answered: answers.iter().flatten().count(),
            best: best
                .map(|((h, p), _)| format!("{h}:{p}"))
                .unwrap_or_else(|| "none".into()),
            best_votes: best.map(|(_, c)| *c).unwrap_or(0),
            needed,
        }),
    }
}

/// One Sentinel's answer, or `None` when it is unreachable, slow, refuses us or does not know
/// the master. Errors are only logged at debug level: they carry no secret but are expected noise.
async fn ask_sentinel(
    host: String,
    port: u16,
    master_name: &str,
    options: &DiscoveryOptions,
) -> Option<(String, u16)> {
    let client = redis_client::client_for(
        host.clone(),
        port,
        &options.username,
        &options.password,
        options.tls.as_ref(),
    );
    let client = client.ok()?;
    let deadline = options.connect_timeout + options.response_timeout;
    let query = async {
        let mut conn =
            redis_client::connect(&client, options.connect_timeout, options.response_timeout)
                .await?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(master_name)
            .query_async::<Option<(String, String)>>(&mut conn)
            .await
    };
    match tokio::time::timeout(deadline, query).await {
        Ok(Ok(Some((h, p)))) => p.parse().ok().map(|p| (h, p)),
        Ok(Ok(None)) => None,
        Ok(Err(error)) => {
            tracing::debug!(sentinel = %format!("{host}:{port}"), %error, "Sentinel did not answer");
            None
        }
        Err(_) => {
            tracing::debug!(sentinel = %format!("{host}:{port}"), "Sentinel timed out");
            None
        }
    }
}

pub(crate) fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// The pod behind a headless-Service host name: `<store>-<n>.<store>-headless...` -> `<store>-<n>`.
pub fn pod_for_host(host: &str, store_name: &str) -> Option<String> {
    let label = host.split('.').next()?;
    crate::pods::is_pod_of(label, store_name).then(|| label.to_string())
}

/// Value of the `sessionstore.dev/role` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// The role every pod should carry once `primary_pod` is the primary.
pub fn desired_role_labels(pods: &[String], primary_pod: &str) -> Vec<(String, Role)> {
    pods.iter()
        .map(|pod| {
            let role = if pod == primary_pod {
                Role::Primary
            } else {
                Role::Replica
            };
            (pod.clone(), role)
        })
        .collect()
}

/// A label patch the controller must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleChange {
    pub pod: String,
    pub role: Role,
}

/// Only the pods whose label is wrong (a steady store sends nothing), demotions first: the
/// Service briefly has no endpoint rather than two primaries taking writes.
pub fn role_label_changes(pods: &[Pod], primary_pod: &str) -> Vec<RoleChange> {
    let mut changes: Vec<RoleChange> = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let current = pod.metadata.labels.as_ref().and_then(|l| l.get(ROLE_LABEL));
            let role = if name == primary_pod {
                Role::Primary
            } else {
                Role::Replica
            };
            (current.map(String::as_str) != Some(role.as_str()))
                .then_some(RoleChange { pod: name, role })
        })
        .collect();
    changes.sort_by_key(|c| (c.role == Role::Primary, c.pod.clone()));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn vote(host: &str, port: u16) -> Option<(String, u16)> {
        Some((host.to_string(), port))
    }

    #[test]
    fn majority_of_configured_sentinels_wins_and_maps_to_a_pod() {
        let h1 = "checkout-1.checkout-headless.shop.svc.cluster.local";
        let answer = tally(
            &[vote(h1, 6379), vote(h1, 6379), vote("checkout-0.x", 6379)],
            3,
            "checkout",
        );
        assert_eq!(
            answer,
            Ok(PrimaryAnswer {
                host: h1.into(),
                port: 6379,
                pod: Some("checkout-1".into()),
                agreeing: 2,
                asked: 3
            })
        );
    }

    #[test]
    fn unreachable_sentinels_are_not_a_majority() {
        // Two of five agree, three are silent: two is not a majority of five.
        let result = tally(
            &[vote("a", 1), vote("a", 1), None, None, None],
            5,
            "checkout",
        );
        assert_eq!(
            result,
            Err(DiscoveryError::NoMajority {
                asked: 5,
                answered: 2,
                best: "a:1".into(),
                best_votes: 2,
                needed: 3
            })
        );
        let split = tally(&[vote("a", 1), vote("b", 1), None], 3, "checkout");
        assert!(matches!(
            split,
            Err(DiscoveryError::NoMajority {
                needed: 2,
                best_votes: 1,
                ..
            })
        ));
    }

    #[test]
    fn host_case_does_not_split_the_vote() {
        let answer = tally(
            &[vote("Checkout-2.H", 6379), vote("checkout-2.h", 6379), None],
            3,
            "checkout",
        );
        assert_eq!(answer.map(|a| a.pod), Ok(Some("checkout-2".into())));
    }

    #[test]
    fn pod_names_come_only_from_this_stores_hosts() {
        assert_eq!(
            pod_for_host("checkout-10.checkout-headless.ns.svc", "checkout"),
            Some("checkout-10".into())
        );
        assert_eq!(pod_for_host("checkout-api-1.x", "checkout"), None);
        assert_eq!(pod_for_host("checkout-.x", "checkout"), None);
        assert_eq!(pod_for_host("10.0.0.3", "checkout"), None);
    }

    #[test]
    fn sentinel_addresses_must_be_host_port() {
        assert_eq!(split_host_port("a.b:26379"), Some(("a.b".into(), 26379)));
        assert_eq!(split_host_port("[::1]:26379"), Some(("::1".into(), 26379)));
        assert_eq!(split_host_port("a.b"), None);
        assert_eq!(split_host_port(":1"), None);
    }

    fn pod(name: &str, role: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: role.map(|r| [(ROLE_LABEL.to_string(), r.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn desired_labels_name_one_primary() {
        let pods = vec!["s-0".to_string(), "s-1".to_string(), "s-2".to_string()];
        assert_eq!(
            desired_role_labels(&pods, "s-1"),
            vec![
                ("s-0".into(), Role::Replica),
                ("s-1".into(), Role::Primary),
                ("s-2".into(), Role::Replica)
            ]
        );
    }

    #[test]
    fn label_changes_after_failover_demote_first_and_skip_correct_pods() {
        let pods = [
            pod("s-0", Some("primary")),
            pod("s-1", Some("replica")),
            pod("s-2", None),
        ];
        assert_eq!(
            role_label_changes(&pods, "s-1"),
            vec![
                RoleChange {
                    pod: "s-0".into(),
                    role: Role::Replica
                },
                RoleChange {
                    pod: "s-2".into(),
                    role: Role::Replica
                },
                RoleChange {
                    pod: "s-1".into(),
                    role: Role::Primary
                },
            ]
        );
        let steady = [pod("s-0", Some("replica")), pod("s-1", Some("primary"))];
        assert!(role_label_changes(&steady, "s-1").is_empty());
    }
}
