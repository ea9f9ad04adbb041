//! End-to-end suite against a real cluster, run only when `SESSIONSTORE_E2E_KUBECONFIG` names a
//! kubeconfig (never the ambient one, so a stray context is never touched). Without it the test
//! prints that it was skipped and passes.
//!
//! Installs the CRD, starts the operator binary, applies a development and a production store,
//! waits for every child and the status, checks ownerReferences, deletes a child and sees it
//! restored, restarts the operator and sees the password unchanged, writes a session key from a
//! client pod through the connection Secret to a Redis pod IP, deletes a store and sees its
//! children garbage-collected (needs the cluster's kube-controller-manager). The highly available
//! cases (failover, rolling update, scaling) are in `e2e_ha` and need `SESSIONSTORE_E2E_HA` too.

mod e2e_api;
mod e2e_diagnosis;
mod e2e_ha;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, CustomResourceExt, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use sessionstore_operator::crd::SessionStore;

const ENV: &str = "SESSIONSTORE_E2E_KUBECONFIG";
const MANAGER: &str = "sessionstore-e2e";

type Fallible<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Polls `check` every 2 s until it returns `Some`, for at most `seconds`.
async fn eventually<T, F, Fut>(what: &str, seconds: u64, mut check: F) -> Fallible<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..seconds.div_ceil(2) {
        if let Some(value) = check().await {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(format!("timed out after {seconds}s waiting for {what}").into())
}

async fn exists<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// The operator binary under test, started as a user would run it against a cluster.
pub struct Operator(Child);

impl Operator {
    /// Starts the operator for `namespace` as the RBAC identity of the operator (see
    /// [`operator_kubeconfig`]), with leader election on and its Lease in `namespace`, after
    /// binding the chart's ClusterRole and Role to that identity.
    pub fn start(kubeconfig: &str, namespace: &str) -> Fallible<Self> {
        Self::start_with(kubeconfig, namespace, &[])
    }

    /// As [`Operator::start`], with extra `run` flags.
    pub fn start_with(kubeconfig: &str, namespace: &str, extra_args: &[&str]) -> Fallible<Self> {
        let identity = operator_kubeconfig(kubeconfig);
        let child = Command::new(env!("CARGO_BIN_EXE_sessionstore-operator"))
            .args([
                "run",
                "--http-addr",
                "127.0.0.1:0",
                "--namespace",
                namespace,
                "--operator-namespace",
                namespace,
                "--pod-name",
                &format!("e2e-{}", std::process::id()),
            ])
            .args(extra_args)
            .env("KUBECONFIG", identity)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Operator(child))
    }

    /// The operator's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    pub fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The RBAC user the local control plane kit creates for the operator (no permissions of its own).
pub const OPERATOR_USER: &str = "sessionstore-operator";
const OPERATOR_ENV: &str = "SESSIONSTORE_E2E_OPERATOR_KUBECONFIG";

/// The kubeconfig the operator under test runs with: `SESSIONSTORE_E2E_OPERATOR_KUBECONFIG`, else
/// the kit's `operator.kubeconfig` beside the admin kubeconfig. Without either (a cluster of your
/// own) the admin kubeconfig, and RBAC is not what is tested: said once on stdout.
pub fn operator_kubeconfig(admin: &str) -> String {
    if let Ok(path) = std::env::var(OPERATOR_ENV) {
        return path;
    }
    let beside = std::path::Path::new(admin).with_file_name("operator.kubeconfig");
    if beside.exists() {
        return beside.to_string_lossy().into_owned();
    }
    println!(
        "NOTE: no {OPERATOR_ENV} and no operator.kubeconfig beside {admin}: the operator runs with \
         the admin kubeconfig, so its RBAC rules are not exercised"
    );
    admin.to_string()
}

/// The chart's RBAC objects as rendered in `deploy/operator.yaml`, by kind.
fn rendered_rbac(kind: &str) -> Fallible<serde_json::Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/operator.yaml");
    let text = std::fs::read_to_string(path)?;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document)?;
        if value["kind"] == kind {
            return Ok(value);
        }
    }
    Err(format!("{path} has no {kind}").into())
}

/// Binds the chart's ClusterRole (cluster-wide, as the chart does) and its leader-election Role (in
/// `namespace`, where the operator under test keeps its Lease) to the operator's RBAC user, so a
/// rule missing from the chart fails a test here instead of a user's install.
pub async fn grant_operator_rbac(client: &Client, namespace: &str) -> Fallible {
    let ssa = PatchParams::apply(MANAGER).force();
    let cluster_role = rendered_rbac("ClusterRole")?;
    let role_name = cluster_role["metadata"]["name"]
        .as_str()
        .ok_or("ClusterRole without a name")?
        .to_string();
    let subjects =
        json!([{"kind": "User", "name": OPERATOR_USER, "apiGroup": "rbac.authorization.k8s.io"}]);
    Api::<ClusterRole>::all(client.clone())
        .patch(&role_name, &ssa, &Patch::Apply(&cluster_role))
        .await?;
    let binding = format!("{role_name}-e2e");
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            &binding,
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": binding},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
                "subjects": subjects,
            })),
        )
        .await?;
    let mut role = rendered_rbac("Role")?;
    role["metadata"]["namespace"] = json!(namespace);
    let role_name = role["metadata"]["name"]
        .as_str()
        .ok_or("Role without a name")?
        .to_string();
    Api::<Role>::namespaced(client.clone(), namespace)
        .patch(&role_name, &ssa, &Patch::Apply(&role))
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch(
            &role_name,
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": role_name, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
                "subjects": subjects,
            })),
        )
        .await?;
    Ok(())
}

/// Admin access to the cluster named by `SESSIONSTORE_E2E_KUBECONFIG`, with its path; `None` when
/// the variable is unset (the suite then prints SKIPPED).
pub async fn admin_client() -> Fallible<Option<(Client, String)>> {
    let Ok(kubeconfig) = std::env::var(ENV) else {
        return Ok(None);
    };
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Some((Client::try_from(config)?, kubeconfig)))
}

/// Creates namespace `ns` and lets the operator's RBAC user work there.
pub async fn create_namespace(client: &Client, ns: &str) -> Fallible {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    grant_operator_rbac(client, ns).await
}

/// A finished pod's output: the API's log endpoint (served by a real kubelet), else the container
/// log file of the local control plane kit (`<state>/kubelet/pods/<uid>/<container>.log`, beside the
/// kubeconfig), whose stand-in kubelet serves no log endpoint.
pub async fn pod_output(client: &Client, ns: &str, pod: &str, container: &str) -> Fallible<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let api_error = match pods.logs(pod, &kube::api::LogParams::default()).await {
        Ok(logs) => return Ok(logs),
        Err(e) => e,
    };
    let uid = pods.get(pod).await?.uid().ok_or("pod without uid")?;
    let kubeconfig = std::env::var(ENV)?;
    let file = std::path::Path::new(&kubeconfig)
        .with_file_name("kubelet")
        .join("pods")
        .join(uid)
        .join(format!("{container}.log"));
    std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "no output of pod {pod}: the log API said {api_error}, and {} is unreadable: {e}",
            file.display()
        )
        .into()
    })
}

/// Deletes namespace `ns` (the end of every case, whatever its result).
pub async fn delete_namespace(client: &Client, ns: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
}

fn store(name: &str, profile: &str) -> serde_json::Value {
    json!({
        "apiVersion": "sessionstore.dev/v1alpha1", "kind": "SessionStore",
        "metadata": {"name": name},
        "spec": {"profile": profile, "clients": {"podSelector": {"matchLabels": {"app": "e2e-client"}}}},
    })
}

async fn connection_password(client: &Client, ns: &str, store: &str) -> Option<Vec<u8>> {
    let secret: Secret = exists(client, ns, &format!("{store}-connection")).await?;
    secret.data?.get("password").map(|b| b.0.clone())
}

/// Installs (server-side apply) the CRD and waits until it is established. An API server older
/// than 1.29 cannot compile some of its CEL rules (transition rules with `oldSelf`, the
/// `quantity()` library): when a dry run is refused as invalid, those are dropped, as the local
/// kit's `crd-compat.py` does, and stay tested by the client-side CEL evaluator in `tests/crd.rs`.
pub async fn install_crd(client: &Client) -> Fallible {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = serde_json::to_value(SessionStore::crd())?;
    let dry_run = PatchParams::apply(MANAGER).force().dry_run();
    if let Err(kube::Error::Api(refused)) = crds
        .patch(
            "sessionstores.sessionstore.dev",
            &dry_run,
            &Patch::Apply(&crd),
        )
        .await
        && refused.code == 422
    {
        let dropped = drop_rules_newer_than_the_server(&mut crd);
        println!(
            "the API server refused the CRD ({}); installing it without the {dropped} CEL rule(s) \
             that need Kubernetes 1.29+",
            refused.message.chars().take(160).collect::<String>()
        );
    }
    crds.patch(
        "sessionstores.sessionstore.dev",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await?;
    eventually("the CRD to be established", 60, || async {
        let crd = crds.get("sessionstores.sessionstore.dev").await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await?;
    Ok(())
}

/// Removes CEL rules with `oldSelf` or `quantity(` and `null` enum members; returns how many rules.
fn drop_rules_newer_than_the_server(node: &mut serde_json::Value) -> usize {
    let mut dropped = 0;
    match node {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(members)) = map.get_mut("enum") {
                members.retain(|m| !m.is_null());
            }
            if let Some(serde_json::Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                let before = rules.len();
                rules.retain(|r| {
                    let rule = r["rule"].as_str().unwrap_or_default();
                    !rule.contains("oldSelf") && !rule.contains("quantity(")
                });
                dropped += before - rules.len();
                if rules.is_empty() {
                    map.remove("x-kubernetes-validations");
                }
            }
            for value in map.values_mut() {
                dropped += drop_rules_newer_than_the_server(value);
            }
        }
        serde_json::Value::Array(items) => {
            for value in items {
                dropped += drop_rules_newer_than_the_server(value);
            }
        }
        _ => {}
    }
    dropped
}

#[tokio::test]
async fn operator_end_to_end_on_a_real_cluster() -> Fallible {
    let Some((client, kubeconfig)) = admin_client().await? else {
        println!(
            "SKIPPED: end-to-end suite needs a cluster; set {ENV} to a kubeconfig path to run it"
        );
        return Ok(());
    };
    let ssa = PatchParams::apply(MANAGER).force();
    install_crd(&client).await?;
    let ns = format!("sessionstore-e2e-{}", std::process::id());
    create_namespace(&client, &ns).await?;
    let result = scenario(&client, &kubeconfig, &ns, &ssa).await;
    delete_namespace(&client, &ns).await;
    result
}

async fn scenario(client: &Client, kubeconfig: &str, ns: &str, ssa: &PatchParams) -> Fallible {
    let stores: Api<SessionStore> = Api::namespaced(client.clone(), ns);
    let operator = Operator::start(kubeconfig, ns)?;
    stores
        .patch("dev", ssa, &Patch::Apply(store("dev", "development")))
        .await?;
    stores
        .patch("prod", ssa, &Patch::Apply(store("prod", "production")))
        .await?;

    for name in ["dev", "prod"] {
        let owner = stores.get(name).await?.uid().ok_or("store without uid")?;
        let check_owner = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                           what: &str|
         -> Fallible {
            let owned = meta
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == owner && o.controller == Some(true));
            if owned {
                Ok(())
            } else {
                Err(format!("{what} lacks the controller ownerReference").into())
            }
        };
        let config_map = format!("{name}-config");
        let cm: ConfigMap =
            eventually("ConfigMap", 120, || exists(client, ns, &config_map)).await?;
        check_owner(&cm.metadata, "ConfigMap")?;
        for secret in [format!("{name}-internal"), format!("{name}-connection")] {
            let s: Secret = eventually("Secret", 60, || exists(client, ns, &secret)).await?;
            check_owner(&s.metadata, &secret)?;
        }
        for svc in [format!("{name}-headless"), name.to_string()] {
            let s: Service = eventually("Service", 60, || exists(client, ns, &svc)).await?;
            check_owner(&s.metadata, &svc)?;
        }
        let sts: StatefulSet = eventually("StatefulSet", 60, || exists(client, ns, name)).await?;
        check_owner(&sts.metadata, "StatefulSet")?;
        let np: NetworkPolicy =
            eventually("NetworkPolicy", 60, || exists(client, ns, name)).await?;
        check_owner(&np.metadata, "NetworkPolicy")?;
        let pdb: Option<PodDisruptionBudget> = exists(client, ns, name).await;
        if name == "prod" {
            let pdb = eventually("PodDisruptionBudget", 60, || {
                exists::<PodDisruptionBudget>(client, ns, name)
            })
            .await?;
            check_owner(&pdb.metadata, "PodDisruptionBudget")?;
        } else if pdb.is_some() {
            return Err("a development store has no PodDisruptionBudget".into());
        }
        let replicas = if name == "prod" { 3 } else { 1 };
        eventually(&format!("{name} to be Ready in status"), 300, || async {
            let store = stores.get(name).await.ok()?;
            let status = store.status?;
            (status.observed_generation == store.metadata.generation
                && status.phase == Some(sessionstore_operator::crd::Phase::Ready)
                && status.ready_replicas == Some(replicas)
                && status.connection_secret.as_deref() == Some(&format!("{name}-connection"))
                && status.endpoint.is_some())
            .then_some(())
        })
        .await?;
    }
    println!("children, ownerReferences and status: ok");

    // A deleted child comes back.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let old = services.get("dev").await?.uid();
    services.delete("dev", &DeleteParams::default()).await?;
    eventually("the deleted Service to be restored", 60, || async {
        let svc = services.get_opt("dev").await.ok()??;
        (svc.uid() != old).then_some(())
    })
    .await?;
    println!("deleted child restored: ok");

    // A restart keeps the password.
    let before = connection_password(client, ns, "dev")
        .await
        .ok_or("no password")?;
    operator.stop();
    // A short health interval, so the session count below shows within seconds.
    let operator = Operator::start_with(kubeconfig, ns, &["--health-interval-seconds", "5"])?;
    // A spec change forces a reconcile after the restart.
    stores
        .patch("dev", ssa, &Patch::Apply(json!({"apiVersion": "sessionstore.dev/v1alpha1", "kind": "SessionStore",
            "metadata": {"name": "dev"}, "spec": {"profile": "development", "clients": {"podSelector": {"matchLabels": {"app": "e2e-client"}}},
            "connection": {"timeoutSeconds": 301}}})))
        .await?;
    eventually("the changed spec to be observed", 60, || async {
        let s = stores.get("dev").await.ok()?;
        (s.status?.observed_generation == s.metadata.generation).then_some(())
    })
    .await?;
    let after = connection_password(client, ns, "dev")
        .await
        .ok_or("no password after restart")?;
    if before != after {
        return Err("the password changed across an operator restart".into());
    }
    println!("password unchanged across a restart: ok");

    write_a_session(client, ns).await?;
    // status.health counts it: one key under the prefix, with a TTL.
    eventually("status.health to count the session", 120, || async {
        let health = stores.get("dev").await.ok()?.status?.health?;
        (health.session_keys == Some(1) && health.keys_without_ttl == Some(0)).then_some(())
    })
    .await?;
    println!("status.health counts the session: ok");

    // Deleting the store garbage-collects its children.
    stores.delete("prod", &DeleteParams::foreground()).await?;
    eventually("prod's children to be garbage-collected", 180, || async {
        let sts: Option<StatefulSet> = exists(client, ns, "prod").await;
        let secret: Option<Secret> = exists(client, ns, "prod-connection").await;
        (sts.is_none() && secret.is_none()).then_some(())
    })
    .await?;
    println!("children garbage-collected: ok");
    operator.stop();
    Ok(())
}

/// When the dev pod runs: a client pod (allowed by the NetworkPolicy) writes a session key to the
/// Redis pod's IP with the connection Secret's username and password.
async fn write_a_session(client: &Client, ns: &str) -> Fallible {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let ready = eventually("the dev Redis pod to be ready", 300, || async {
        let pod = pods.get_opt("dev-0").await.ok()??;
        let status = pod.status?;
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready { status.pod_ip } else { None }
    })
    .await;
    let pod_ip = ready?;
    let secret_env = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": "dev-connection", "key": key}}});
    let client_pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "e2e-client", "labels": {"app": "e2e-client"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 999, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "redis-cli", "image": "redis:7.2.5",
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                "env": [secret_env("REDIS_USER", "username"), secret_env("REDISCLI_AUTH", "password")],
                "command": ["sh", "-c", format!("redis-cli -h {pod_ip} -p 6379 --user \"$REDIS_USER\" SET session:e2e ok EX 60 | grep -x OK")],
            }],
        },
    });
    pods.create(&PostParams::default(), &serde_json::from_value(client_pod)?)
        .await?;
    let phase = eventually("the client pod to finish", 180, || async {
        let phase = pods.get_opt("e2e-client").await.ok()??.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await?;
    if phase != "Succeeded" {
        return Err(
            "the client pod could not write a session key with the connection Secret".into(),
        );
    }
    println!("session key written through the connection Secret: ok");
    Ok(())
}
