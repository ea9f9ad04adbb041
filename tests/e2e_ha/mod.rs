//! End-to-end cases for highly available stores on a real cluster: failover of the primary pod,
//! an ordered rolling update, and scaling 3 -> 5 -> 3, each in its own namespace.
//!
//! They need more than the base suite: the operator dials every pod (Sentinel discovery and the
//! deliberate handover use the pods' headless DNS names), so it must run where those resolve and
//! route. `SESSIONSTORE_E2E_HA=in-cluster`: the operator is already deployed in the cluster (with
//! the image under test) and watches every namespace; the cases only create stores.
//! `SESSIONSTORE_E2E_HA=local`: the cases start the local binary, for hosts that resolve
//! `*.svc.cluster.local` and reach pod IPs. Unset: the cases print that they were skipped.
//!
//! Sessions are written and read by short-lived `redis-cli` pods (allowed by the store's
//! NetworkPolicy) through the primary-only ClusterIP Service and the connection Secret, as an
//! application would. Every wait is bounded; figures are printed, never asserted against a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use sessionstore_operator::build::meta::ROLE_LABEL;
use sessionstore_operator::crd::{Phase, SessionStore};

mod disruption;
mod engine_switch;
mod writer;

use super::{
    ENV, Fallible, MANAGER, Operator, admin_client, create_namespace, delete_namespace, eventually,
    install_crd, pod_output,
};

const HA_ENV: &str = "SESSIONSTORE_E2E_HA";
/// Sessions written before each disruption.
const SESSIONS: u32 = 2000;
/// A fresh HA store: image pulls, three pods started one after the other, Sentinels agreeing.
const READY_SECONDS: u64 = 600;

/// One case's cluster access and namespace; `finish` stops the operator and deletes the namespace.
struct HaCase {
    client: Client,
    kubeconfig: String,
    ns: String,
    ssa: PatchParams,
    operator: Option<Operator>,
}

impl HaCase {
    /// `None` (after printing why) when the suite or the HA cases are not enabled.
    async fn start(case: &str) -> Fallible<Option<Self>> {
        if std::env::var(ENV).is_err() {
            println!("SKIPPED: HA case {case} needs a cluster; set {ENV} to a kubeconfig path");
            return Ok(None);
        }
        let local = match std::env::var(HA_ENV).as_deref() {
            Ok("in-cluster") => false,
            Ok("local") => true,
            _ => {
                println!(
                    "SKIPPED: HA case {case}: the operator must reach the pods; set {HA_ENV}=in-cluster \
                     (operator deployed in the cluster) or {HA_ENV}=local (this host resolves \
                     cluster DNS and routes pod IPs)"
                );
                return Ok(None);
            }
        };
        let Some((client, kubeconfig)) = admin_client().await? else {
            return Ok(None);
        };
        install_crd(&client).await?;
        let ns = format!("sessionstore-e2e-{case}-{}", std::process::id());
        create_namespace(&client, &ns).await?;
        let operator = if local {
            match Operator::start(&kubeconfig, &ns) {
                Ok(operator) => Some(operator),
                Err(e) => {
                    delete_namespace(&client, &ns).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        Ok(Some(HaCase {
            client,
            kubeconfig,
            ns,
            ssa: PatchParams::apply(MANAGER).force(),
            operator,
        }))
    }

    /// Stops the local operator and deletes the namespace (whatever the case's result).
    async fn finish(self, result: Fallible) -> Fallible {
        if let Some(operator) = self.operator {
            operator.stop();
        }
        delete_namespace(&self.client, &self.ns).await;
        result
    }

    fn stores(&self) -> Api<SessionStore> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn apply_store(&self, name: &str, replicas: i32, extra_config: Value) -> Fallible {
        self.apply_store_spec(name, replicas, json!({"extraConfig": extra_config}))
            .await
    }

    /// Applies the HA test store with `more` merged into its spec (top-level fields).
    async fn apply_store_spec(&self, name: &str, replicas: i32, more: Value) -> Fallible {
        let mut spec = json!({
            "profile": "production",
            "replicas": replicas,
            "clients": {"podSelector": {"matchLabels": {"app": "e2e-client"}}},
            "persistence": {"mode": "none"},
            "memory": {"limit": "256Mi"},
            "sentinel": {"downAfterMilliseconds": 5000},
        });
        if let (Some(spec), Value::Object(more)) = (spec.as_object_mut(), more) {
            spec.extend(more);
        }
        let manifest = json!({
            "apiVersion": "sessionstore.dev/v1alpha1", "kind": "SessionStore",
            "metadata": {"name": name},
            "spec": spec,
        });
        self.stores()
            .patch(name, &self.ssa, &Patch::Apply(manifest))
            .await?;
        Ok(())
    }

    /// Waits until the store reports Ready for its current generation with `replicas` ready pods
    /// and a primary; returns the primary pod's name.
    async fn wait_ready(&self, name: &str, replicas: i32, seconds: u64) -> Fallible<String> {
        let stores = self.stores();
        eventually(
            &format!("{name} to be Ready with {replicas} pods"),
            seconds,
            || async {
                let store = stores.get(name).await.ok()?;
                let status = store.status?;
                let ok = status.phase == Some(Phase::Ready)
                    && status.observed_generation == store.metadata.generation
                    && status.ready_replicas == Some(replicas);
                if ok { status.primary } else { None }
            },
        )
        .await
    }

    /// Waits until the store has settled after a disruption: Ready with `replicas` pods, every
    /// pod serving and none of them still one of `gone` (uids deleted before), the pod in
    /// status.primary labelled primary and alone behind the Service, every other pod a replica.
    /// Reading sessions through the Service name before that races the Service's EndpointSlice.
    async fn wait_settled(
        &self,
        name: &str,
        replicas: i32,
        gone: &[String],
        seconds: u64,
    ) -> Fallible<String> {
        eventually(
            &format!(
                "{name} to settle with {replicas} serving pods and one primary behind its Service"
            ),
            seconds,
            || async {
                let store = self.stores().get(name).await.ok()?;
                let status = store.status?;
                let ready = status.phase == Some(Phase::Ready)
                    && status.observed_generation == store.metadata.generation
                    && status.ready_replicas == Some(replicas);
                let primary = status.primary.filter(|_| ready)?;
                let pods = self.pod_states(name).await.ok()?;
                let all_serving = pods.len() == usize::try_from(replicas).ok()?
                    && pods.values().all(|p| p.serving && !gone.contains(&p.uid));
                let roles_right = pods.iter().all(|(pod, state)| {
                    let want = if *pod == primary {
                        "primary"
                    } else {
                        "replica"
                    };
                    state.role.as_deref() == Some(want)
                });
                let endpoints = self.service_endpoints(name).await.ok()?;
                (all_serving && roles_right && endpoints == [primary.clone()]).then_some(primary)
            },
        )
        .await
    }

    /// A client of the store as an application is one: the connection Secret's host (the
    /// Service name), username and password.
    async fn service_client(&self, store: &str) -> Fallible<redis::Client> {
        let secret: Secret = Api::namespaced(self.client.clone(), &self.ns)
            .get(&format!("{store}-connection"))
            .await?;
        let value = |key: &str| -> Fallible<String> {
            let data = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .ok_or("connection Secret key missing")?;
            Ok(String::from_utf8(data.0.clone())?)
        };
        Ok(writer::client(
            &value("host")?,
            &value("username")?,
            &value("password")?,
        )?)
    }

    async fn status_primary(&self, name: &str) -> Option<String> {
        self.stores().get(name).await.ok()?.status?.primary
    }

    /// Runs `script` in a short-lived `redis-cli` pod (a client the NetworkPolicy admits) with the
    /// connection Secret's username and password; returns its output.
    async fn redis_cli(&self, store: &str, pod: &str, script: &str) -> Fallible<String> {
        let secret_env = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": format!("{store}-connection"), "key": key}}});
        let manifest = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "labels": {"app": "e2e-client"}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 999, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "redis-cli", "image": "redis:7.2.5",
                    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                    "env": [secret_env("REDIS_USER", "username"), secret_env("REDISCLI_AUTH", "password")],
                    "command": ["sh", "-c", script],
                }],
            },
        });
        let pods = self.pods();
        pods.create(&PostParams::default(), &serde_json::from_value(manifest)?)
            .await?;
        let phase = eventually(&format!("client pod {pod} to finish"), 300, || async {
            let phase = pods.get_opt(pod).await.ok()??.status?.phase?;
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
        })
        .await?;
        let logs = pod_output(&self.client, &self.ns, pod, "redis-cli").await?;
        let _ = pods.delete(pod, &DeleteParams::default()).await;
        if phase != "Succeeded" {
            return Err(format!("client pod {pod} failed; output: {logs}").into());
        }
        Ok(logs)
    }

    /// Writes `SESSIONS` session keys through the primary Service, then `WAIT`s for `replicas`
    /// replicas to hold them, so a later failover may not lose them (asynchronous replication).
    async fn write_sessions(&self, store: &str, replicas: i32) -> Fallible {
        let cli = format!("redis-cli -h {store} -p 6379 --user \"$REDIS_USER\" --no-auth-warning");
        let script = format!(
            "seq 1 {SESSIONS} | sed 's/.*/SET session:e2e:& user-& EX 3600/' | {cli} | grep -cx OK; \
             {cli} WAIT {replicas} 10000"
        );
        let out = self.redis_cli(store, "e2e-writer", &script).await?;
        let lines: Vec<&str> = out.split_whitespace().collect();
        let written = lines.first().and_then(|l| l.parse::<u32>().ok());
        let replicated = lines.get(1).and_then(|l| l.parse::<i32>().ok());
        println!(
            "{store}: wrote {written:?} of {SESSIONS} sessions, WAIT saw {replicated:?} replicas"
        );
        if written != Some(SESSIONS) || replicated.is_none_or(|r| r < replicas) {
            return Err(format!("{store}: writing sessions failed; output: {out}").into());
        }
        Ok(())
    }

    /// How many of the written sessions the primary Service still serves.
    async fn count_sessions(&self, store: &str, pod: &str) -> Fallible<u32> {
        let cli = format!("redis-cli -h {store} -p 6379 --user \"$REDIS_USER\" --no-auth-warning");
        let script = format!(
            "seq 1 {SESSIONS} | sed 's/.*/EXISTS session:e2e:&/' | {cli} | grep -cx 1; true"
        );
        let out = self.redis_cli(store, pod, &script).await?;
        out.trim()
            .parse::<u32>()
            .map_err(|_| format!("{store}: unexpected read-back output: {out}").into())
    }

    /// `PrimaryChanged` Events recorded for the store (a repeated Event counts its series).
    async fn primary_changed_events(&self, store: &str) -> Fallible<i32> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("PrimaryChanged"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(store))
            .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1)))
            .sum())
    }

    /// Names of the pods behind the primary Service that are ready to serve.
    async fn service_endpoints(&self, store: &str) -> Fallible<Vec<String>> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        let list = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={store}")))
            .await?;
        let mut names: Vec<String> = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .filter_map(|e| e.target_ref.as_ref().and_then(|r| r.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Pod name -> (uid, ready, role label) for the store's pods.
    async fn pod_states(&self, store: &str) -> Fallible<BTreeMap<String, PodState>> {
        let list = self
            .pods()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={store}")))
            .await?;
        Ok(list
            .items
            .iter()
            .filter(|p| p.name_any().starts_with(&format!("{store}-")))
            .map(|p| (p.name_any(), PodState::of(p)))
            .collect())
    }
}

/// What [`HaCase::watch_roll`] saw of a rolling update.
struct RollSeen {
    /// Poll index at which each pod was first seen replaced (a new uid).
    replaced_at: BTreeMap<String, usize>,
    /// The most pods seen not serving at once.
    most_down: usize,
    took: Duration,
}

impl HaCase {
    /// Polls the store's pods every second until each of `before` was replaced, every pod serves and
    /// the store is Ready for its generation (at most 900 s).
    async fn watch_roll(
        &self,
        store: &str,
        before: &BTreeMap<String, PodState>,
    ) -> Fallible<RollSeen> {
        let started = Instant::now();
        // Poll index at which each pod was seen replaced (new uid), and the most pods seen not serving.
        let mut replaced_at: BTreeMap<String, usize> = BTreeMap::new();
        let mut most_down = 0;
        let mut poll = 0;
        loop {
            if started.elapsed() > Duration::from_secs(900) {
                return Err(format!(
                    "timed out after 900s waiting for the rolling update; replaced so far: {replaced_at:?}"
                )
                .into());
            }
            poll += 1;
            let now = self.pod_states(store).await?;
            let mut down = 0;
            for (name, was) in before {
                match now.get(name) {
                    Some(pod) => {
                        if pod.uid != was.uid {
                            replaced_at.entry(name.clone()).or_insert(poll);
                        }
                        if !pod.serving {
                            down += 1;
                        }
                    }
                    None => down += 1,
                }
            }
            most_down = most_down.max(down);
            let settled = replaced_at.len() == before.len()
                && down == 0
                && self
                    .stores()
                    .get(store)
                    .await
                    .ok()
                    .and_then(|s| {
                        let status = s.status?;
                        Some(
                            status.phase == Some(Phase::Ready)
                                && status.observed_generation == s.metadata.generation,
                        )
                    })
                    .unwrap_or(false);
            if settled {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(RollSeen {
            replaced_at,
            most_down,
            took: started.elapsed(),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
struct PodState {
    uid: String,
    /// Ready and not being deleted.
    serving: bool,
    role: Option<String>,
}

impl PodState {
    fn of(pod: &Pod) -> Self {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        PodState {
            uid: pod.uid().unwrap_or_default(),
            serving: ready && pod.metadata.deletion_timestamp.is_none(),
            role: pod.labels().get(ROLE_LABEL).cloned(),
        }
    }
}

/// The StatefulSet ordinal of `store-<n>`.
fn ordinal(pod: &str) -> Option<i32> {
    pod.rsplit('-').next()?.parse().ok()
}

#[tokio::test]
async fn ha_primary_pod_deleted_fails_over_and_comes_back_as_replica() -> Fallible {
    let Some(case) = HaCase::start("failover").await? else {
        return Ok(());
    };
    let result = failover(&case).await;
    case.finish(result).await
}

async fn failover(case: &HaCase) -> Fallible {
    let store = "ha";
    case.apply_store(store, 3, json!({})).await?;
    let old = case.wait_ready(store, 3, READY_SECONDS).await?;
    case.write_sessions(store, 2).await?;
    let events_before = case.primary_changed_events(store).await?;
    let old_uid = case
        .pod_states(store)
        .await?
        .get(&old)
        .map(|p| p.uid.clone())
        .ok_or("the primary pod is not listed")?;

    let deleted_at = Instant::now();
    case.pods().delete(&old, &DeleteParams::default()).await?;
    let new = eventually("a new primary in status.primary", 180, || async {
        case.status_primary(store).await.filter(|p| *p != old)
    })
    .await?;
    let to_status = deleted_at.elapsed();
    eventually(
        "the new primary labelled, behind the Service, with a PrimaryChanged Event",
        180,
        || async {
            let pods = case.pod_states(store).await.ok()?;
            let labelled = pods.get(&new)?.role.as_deref() == Some("primary");
            let endpoints = case.service_endpoints(store).await.ok()?;
            let events = case.primary_changed_events(store).await.ok()?;
            (labelled && endpoints == [new.clone()] && events > events_before).then_some(())
        },
    )
    .await?;
    let to_service = deleted_at.elapsed();
    let survived = case.count_sessions(store, "e2e-reader").await?;
    println!(
        "failover: primary {old} deleted -> status.primary {new} after {:.1}s, Service and label \
         after {:.1}s; sessions surviving: {survived} of {SESSIONS}",
        to_status.as_secs_f64(),
        to_service.as_secs_f64()
    );
    if survived != SESSIONS {
        return Err(format!("{} sessions lost in the failover", SESSIONS - survived).into());
    }

    eventually("the deleted pod to come back as a replica", 300, || async {
        let pods = case.pod_states(store).await.ok()?;
        let back = pods.get(&old)?;
        (back.uid != old_uid && back.serving && back.role.as_deref() == Some("replica"))
            .then_some(())
    })
    .await?;
    println!(
        "failover: {old} back as a replica after {:.1}s",
        deleted_at.elapsed().as_secs_f64()
    );
    let primary = case.status_primary(store).await;
    if primary.as_deref() != Some(new.as_str()) {
        return Err(format!("the primary moved again after the failover: {primary:?}").into());
    }
    Ok(())
}

#[tokio::test]
async fn ha_rolling_update_restarts_replicas_first_then_hands_over_once() -> Fallible {
    let Some(case) = HaCase::start("rollout").await? else {
        return Ok(());
    };
    let result = rolling_update(&case).await;
    case.finish(result).await
}

async fn rolling_update(case: &HaCase) -> Fallible {
    let store = "roll";
    case.apply_store(store, 3, json!({})).await?;
    let old_primary = case.wait_ready(store, 3, READY_SECONDS).await?;
    case.write_sessions(store, 2).await?;
    let before = case.pod_states(store).await?;
    if before.len() != 3 {
        return Err(format!("expected 3 pods before the update, found {before:?}").into());
    }
    let events_before = case.primary_changed_events(store).await?;

    // A new redis.conf value changes the config hash in the pod template: every pod must roll.
    case.apply_store(store, 3, json!({"hz": "20"})).await?;
    let RollSeen {
        replaced_at,
        most_down,
        took,
    } = case.watch_roll(store, &before).await?;
    let new_primary = case
        .status_primary(store)
        .await
        .ok_or("no primary after the update")?;
    let changes = case.primary_changed_events(store).await? - events_before;
    let survived = case.count_sessions(store, "e2e-reader").await?;
    let mut order: Vec<(&usize, &String)> = replaced_at.iter().map(|(n, p)| (p, n)).collect();
    order.sort();
    println!(
        "rolling update: {:.1}s; restart order (poll, pod): {order:?}; most pods down at once: \
         {most_down}; primary {old_primary} -> {new_primary}; PrimaryChanged Events: {changes}; \
         sessions surviving: {survived} of {SESSIONS}",
        took.as_secs_f64()
    );
    let primary_poll = replaced_at.get(&old_primary).copied().unwrap_or(0);
    let replicas_before_primary = replaced_at
        .iter()
        .filter(|(name, _)| **name != old_primary)
        .all(|(_, at)| *at < primary_poll);
    if !replicas_before_primary {
        return Err(
            format!("the old primary {old_primary} was not restarted last: {order:?}").into(),
        );
    }
    if most_down > 1 {
        return Err(format!("{most_down} pods were down at once").into());
    }
    if changes != 1 || new_primary == old_primary {
        return Err(format!(
            "expected exactly one handover away from {old_primary}; saw {changes} PrimaryChanged, \
             primary now {new_primary}"
        )
        .into());
    }
    if survived != SESSIONS {
        return Err(format!(
            "{} sessions lost in the rolling update",
            SESSIONS - survived
        )
        .into());
    }
    Ok(())
}

#[tokio::test]
async fn ha_scale_three_five_three_keeps_sessions_and_a_primary_in_range() -> Fallible {
    let Some(case) = HaCase::start("scale").await? else {
        return Ok(());
    };
    let result = scale(&case).await;
    case.finish(result).await
}

async fn scale(case: &HaCase) -> Fallible {
    let store = "scale";
    case.apply_store(store, 3, json!({})).await?;
    let at_three = case.wait_ready(store, 3, READY_SECONDS).await?;
    case.write_sessions(store, 2).await?;

    case.apply_store(store, 5, json!({})).await?;
    let mut at_five = case.wait_settled(store, 5, &[], READY_SECONDS).await?;
    // The scale-down guard matters only when the primary is a pod about to be removed: delete the
    // primary (a Sentinel failover picks among the other four) a few times to try to get it there.
    // Each deletion waits for the store to settle again (the deleted pod back as a serving replica,
    // the Service on the new primary), so no deletion lands while the last one is still restarting.
    let mut deleted_uids = Vec::new();
    for _ in 0..3 {
        if ordinal(&at_five).is_some_and(|n| n >= 3) {
            break;
        }
        let uid = case
            .pod_states(store)
            .await?
            .get(&at_five)
            .map(|p| p.uid.clone())
            .ok_or_else(|| format!("the primary {at_five} is not listed"))?;
        case.pods()
            .delete(&at_five, &DeleteParams::default())
            .await
            .map_err(|e| format!("deleting the primary {at_five}: {e}"))?;
        deleted_uids.push(uid);
        let previous = at_five.clone();
        eventually("a failover after deleting the primary", 180, || async {
            case.status_primary(store).await.filter(|p| *p != previous)
        })
        .await?;
        at_five = case
            .wait_settled(store, 5, &deleted_uids, READY_SECONDS)
            .await?;
    }
    let guard_exercised = ordinal(&at_five).is_some_and(|n| n >= 3);
    let in_between = case.count_sessions(store, "e2e-reader-5").await?;

    case.apply_store(store, 3, json!({})).await?;
    let started = Instant::now();
    let statefulsets: Api<StatefulSet> = Api::namespaced(case.client.clone(), &case.ns);
    let at_end = eventually("the store to settle at 3 pods", READY_SECONDS, || async {
        let sts = statefulsets.get(store).await.ok()?;
        let pods = case.pod_states(store).await.ok()?;
        let primary = case.status_primary(store).await?;
        let gone =
            !pods.contains_key(&format!("{store}-3")) && !pods.contains_key(&format!("{store}-4"));
        let labelled = pods.get(&primary)?.role.as_deref() == Some("primary");
        let ok = sts.spec?.replicas == Some(3) && gone && labelled && ordinal(&primary)? < 3;
        ok.then_some(primary)
    })
    .await?;
    case.wait_settled(store, 3, &[], READY_SECONDS).await?;
    let survived = case.count_sessions(store, "e2e-reader-3").await?;
    println!(
        "scale: primary at 3 pods {at_three}, at 5 pods {at_five} (guard exercised: \
         {guard_exercised}), back at 3 pods {at_end} after {:.1}s; sessions at 5: {in_between}, \
         at the end: {survived} of {SESSIONS}",
        started.elapsed().as_secs_f64()
    );
    if in_between != SESSIONS || survived != SESSIONS {
        return Err(format!(
            "sessions lost while scaling: {in_between} at 5 pods, {survived} at the end"
        )
        .into());
    }
    Ok(())
}

#[tokio::test]
async fn ha_operator_upgrade_with_a_new_exporter_image_rolls_without_losing_a_write() -> Fallible {
    let Some(mut case) = HaCase::start("upgrade").await? else {
        return Ok(());
    };
    let result = upgrade(&mut case).await;
    case.finish(result).await
}

/// The operator restarted with a changed pod template (`--exporter-image`, as an upgrade that
/// ships a new exporter does) rolls an HA store in order while an application writes sessions
/// through the Service name: at most one pod down, every acknowledged write kept.
async fn upgrade(case: &mut HaCase) -> Fallible {
    let Some(operator) = case.operator.take() else {
        println!("SKIPPED: the upgrade case restarts the local operator ({HA_ENV}=local)");
        return Ok(());
    };
    let store = "upgrade";
    let manifest = json!({
        "apiVersion": "sessionstore.dev/v1alpha1", "kind": "SessionStore",
        "metadata": {"name": store},
        "spec": {
            "profile": "production", "replicas": 3,
            "clients": {"podSelector": {"matchLabels": {"app": "e2e-client"}}},
            "persistence": {"mode": "none"},
            "memory": {"limit": "256Mi"},
            "sentinel": {"downAfterMilliseconds": 5000},
            "monitoring": {"exporter": true},
        },
    });
    case.stores()
        .patch(store, &case.ssa, &Patch::Apply(manifest))
        .await?;
    let old_primary = case.wait_ready(store, 3, READY_SECONDS).await?;
    let before = case.pod_states(store).await?;
    let events_before = case.primary_changed_events(store).await?;

    let client = case.service_client(store).await?;
    let prefix = "session:upgrade:";
    let writing = writer::ServiceWriter::start(client.clone(), prefix, Duration::from_secs(900));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The upgrade: the same operator, restarted with a new exporter image.
    operator.stop();
    case.operator = Some(Operator::start_with(
        &case.kubeconfig,
        &case.ns,
        &["--exporter-image", UPGRADED_EXPORTER],
    )?);
    let seen = case.watch_roll(store, &before).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = writing.stop()?;
    let seen = seen?;
    let lost = tokio::task::spawn_blocking({
        let acknowledged = report.acknowledged.clone();
        move || writer::lost_writes(&client, prefix, &acknowledged)
    })
    .await??;
    let new_primary = case
        .status_primary(store)
        .await
        .ok_or("no primary after the upgrade")?;
    let changes = case.primary_changed_events(store).await? - events_before;
    let template = Api::<StatefulSet>::namespaced(case.client.clone(), &case.ns)
        .get(store)
        .await?
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| {
            p.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    println!(
        "upgrade: {:.1}s; restart order (poll, pod): {:?}; most pods down at once: {}; primary \
         {old_primary} -> {new_primary}; PrimaryChanged Events: {changes}; writes acknowledged {}, \
         lost {lost}, write errors {}, longest write gap {:.2}s; images now {template:?}",
        seen.took.as_secs_f64(),
        {
            let mut order: Vec<(&usize, &String)> =
                seen.replaced_at.iter().map(|(n, p)| (p, n)).collect();
            order.sort();
            order
        },
        seen.most_down,
        report.acknowledged.len(),
        report.errors,
        report.longest_gap.as_secs_f64(),
    );
    if !template.iter().any(|i| i == UPGRADED_EXPORTER) {
        return Err(
            format!("the StatefulSet does not run {UPGRADED_EXPORTER}: {template:?}").into(),
        );
    }
    if seen.most_down > 1 {
        return Err(format!("{} pods were down at once", seen.most_down).into());
    }
    if report.acknowledged.is_empty() {
        return Err("the writer never got a write acknowledged".into());
    }
    if lost != 0 {
        return Err(format!("{lost} acknowledged writes lost in the upgrade").into());
    }
    if changes != 1 {
        return Err(
            format!("expected one handover in the upgrade, saw {changes} PrimaryChanged").into(),
        );
    }
    Ok(())
}

/// The exporter image the upgraded operator defaults to (any other tag changes the pod template).
const UPGRADED_EXPORTER: &str = "oliver006/redis_exporter:v1.63.0";
