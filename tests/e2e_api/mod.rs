//! End-to-end cases that only a real API server can answer, counted from its audit log: a Ready
//! store costs no write (and an operator restart adds none), and a crash of the operator after any
//! write of a store's creation loses nothing (the store converges, its Secrets are created once and
//! never replaced).
//!
//! The audit log is `SESSIONSTORE_E2E_AUDIT_LOG`, else the local kit's `log/audit.log` beside the
//! kubeconfig; without one the cases print SKIPPED. Writes are counted per namespace, so other cases
//! running at the same time (with the same operator identity) do not disturb the count.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use sessionstore_operator::crd::{Phase, SessionStore};
use sessionstore_operator::fault::ABORT_AFTER_WRITES_ENV;

use super::{
    ENV, Fallible, MANAGER, OPERATOR_USER, Operator, admin_client, create_namespace,
    delete_namespace, eventually, install_crd,
};

const AUDIT_ENV: &str = "SESSIONSTORE_E2E_AUDIT_LOG";
/// How long a Ready store is watched for writes (the figure), and after a restart.
const QUIET_SECONDS: u64 = 120;

/// One API request the operator's user made, from the audit log.
#[derive(Clone, Debug)]
struct Write {
    verb: String,
    resource: String,
    name: String,
    code: i64,
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} -> {}",
            self.verb, self.resource, self.name, self.code
        )
    }
}

/// The API server's audit log, read from a mark onwards.
struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// `None` (after printing why) when no audit log is reachable.
    fn find(case: &str) -> Option<Self> {
        let path = match std::env::var(AUDIT_ENV) {
            Ok(path) => PathBuf::from(path),
            Err(_) => std::path::Path::new(&std::env::var(ENV).ok()?)
                .with_file_name("log")
                .join("audit.log"),
        };
        if path.exists() {
            Some(AuditLog { path })
        } else {
            println!(
                "SKIPPED: {case} counts API calls in the API server's audit log; set {AUDIT_ENV} \
                 (no {} here)",
                path.display()
            );
            None
        }
    }

    /// The current end of the log: later reads start here.
    fn mark(&self) -> Fallible<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Completed writes (create, update, patch, delete) by the operator's user in `ns` since `mark`,
    /// Lease renewals aside, in the order the API server answered them.
    fn operator_writes_since(&self, mark: u64, ns: &str) -> Fallible<Vec<Write>> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(mark))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let mut writes = Vec::new();
        // The last line may still be being written: only whole lines count.
        for line in text.lines().filter(|l| l.ends_with('}')) {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let verb = event["verb"].as_str().unwrap_or_default();
            let object = &event["objectRef"];
            let counted = event["stage"] == "ResponseComplete"
                && event["user"]["username"] == OPERATOR_USER
                && matches!(
                    verb,
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
                && object["namespace"] == ns
                && object["resource"] != "leases";
            if counted {
                let mut resource = object["resource"].as_str().unwrap_or_default().to_string();
                if let Some(sub) = object["subresource"].as_str() {
                    resource = format!("{resource}/{sub}");
                }
                writes.push(Write {
                    verb: verb.to_string(),
                    resource,
                    name: object["name"].as_str().unwrap_or_default().to_string(),
                    code: event["responseStatus"]["code"].as_i64().unwrap_or_default(),
                });
            }
        }
        Ok(writes)
    }

    /// Whether the operator's user has listed or watched SessionStores in `ns` since `mark` (a
    /// started operator that holds its Lease does so first).
    fn operator_started_since(&self, mark: u64, ns: &str) -> Fallible<bool> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(mark))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(text.lines().any(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|e| {
                e["user"]["username"] == OPERATOR_USER
                    && e["objectRef"]["resource"] == "sessionstores"
                    && e["objectRef"]["namespace"] == ns
                    && matches!(e["verb"].as_str(), Some("list" | "watch"))
            })
        }))
    }
}

fn summary(writes: &[Write]) -> String {
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for w in writes {
        *by_kind
            .entry(format!("{} {}", w.verb, w.resource))
            .or_default() += 1;
    }
    format!("{by_kind:?}")
}

fn manifest(name: &str, profile: &str) -> Value {
    json!({
        "apiVersion": "sessionstore.dev/v1alpha1", "kind": "SessionStore",
        "metadata": {"name": name},
        "spec": {
            "profile": profile,
            "clients": {"podSelector": {"matchLabels": {"app": "e2e-client"}}},
            "persistence": {"mode": "none"},
            "memory": {"limit": "256Mi"},
        },
    })
}

/// Waits until `name` is Ready for its current generation.
/// Whether the store is Ready at its current generation now.
async fn is_ready(stores: &Api<SessionStore>, name: &str) -> bool {
    let Ok(store) = stores.get(name).await else {
        return false;
    };
    store.status.is_some_and(|status| {
        status.phase == Some(Phase::Ready)
            && status.observed_generation == store.metadata.generation
    })
}

async fn wait_ready(stores: &Api<SessionStore>, name: &str, seconds: u64) -> Fallible {
    eventually(&format!("{name} to be Ready"), seconds, || async {
        let store = stores.get(name).await.ok()?;
        let status = store.status?;
        (status.phase == Some(Phase::Ready)
            && status.observed_generation == store.metadata.generation)
            .then_some(())
    })
    .await
}

#[tokio::test]
async fn quiet_steady_state_no_writes_when_ready_nor_after_a_restart() -> Fallible {
    let Some((client, kubeconfig)) = admin_client().await? else {
        println!("SKIPPED: quiet steady state needs a cluster; set {ENV}");
        return Ok(());
    };
    let Some(audit) = AuditLog::find("quiet steady state") else {
        return Ok(());
    };
    install_crd(&client).await?;
    let ns = format!("sessionstore-e2e-quiet-{}", std::process::id());
    create_namespace(&client, &ns).await?;
    let result = quiet(&client, &kubeconfig, &ns, &audit).await;
    delete_namespace(&client, &ns).await;
    result
}

async fn quiet(client: &Client, kubeconfig: &str, ns: &str, audit: &AuditLog) -> Fallible {
    let stores: Api<SessionStore> = Api::namespaced(client.clone(), ns);
    let ssa = PatchParams::apply(MANAGER).force();
    let operator = Operator::start(kubeconfig, ns)?;
    let start = audit.mark()?;
    for (name, profile) in [("dev", "development"), ("prod", "production")] {
        stores
            .patch(name, &ssa, &Patch::Apply(manifest(name, profile)))
            .await?;
    }
    for name in ["dev", "prod"] {
        wait_ready(&stores, name, 600).await?;
    }
    let ready = audit.mark()?;
    let creation = audit.operator_writes_since(start, ns)?;
    println!(
        "quiet: both stores Ready after {} operator writes: {}",
        creation.len(),
        summary(&creation)
    );

    tokio::time::sleep(Duration::from_secs(QUIET_SECONDS)).await;
    let while_ready = audit.operator_writes_since(ready, ns)?;
    println!(
        "quiet: {} operator writes in the {QUIET_SECONDS} s after Ready (Leases aside)",
        while_ready.len()
    );

    // A restart (SIGKILL: the Lease is taken over once it expires) reconciles every store again.
    operator.stop();
    let restart = audit.mark()?;
    let operator = Operator::start(kubeconfig, ns)?;
    eventually(
        "the restarted operator to take the Lease and list SessionStores",
        120,
        || async {
            audit
                .operator_started_since(restart, ns)
                .ok()?
                .then_some(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(QUIET_SECONDS)).await;
    let after_restart = audit.operator_writes_since(restart, ns)?;
    println!(
        "quiet: {} operator writes in the {QUIET_SECONDS} s after a restart (Leases aside)",
        after_restart.len()
    );
    operator.stop();
    let listed = |writes: &[Write]| {
        writes
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if !while_ready.is_empty() || !after_restart.is_empty() {
        return Err(format!(
            "a Ready store must cost no write; while Ready: [{}]; after the restart: [{}]",
            listed(&while_ready),
            listed(&after_restart)
        )
        .into());
    }
    Ok(())
}

/// The connection and internal Secrets of `store`: name -> (uid, data).
async fn secrets_of(
    client: &Client,
    ns: &str,
    store: &str,
) -> BTreeMap<String, (String, BTreeMap<String, Vec<u8>>)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut found = BTreeMap::new();
    for name in [format!("{store}-connection"), format!("{store}-internal")] {
        if let Ok(Some(secret)) = api.get_opt(&name).await {
            let data = secret
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            found.insert(name, (secret.uid().unwrap_or_default(), data));
        }
    }
    found
}

#[tokio::test]
async fn crash_after_any_write_of_a_creation_converges_without_new_secrets() -> Fallible {
    let Some((client, kubeconfig)) = admin_client().await? else {
        println!("SKIPPED: crash anywhere needs a cluster; set {ENV}");
        return Ok(());
    };
    let Some(audit) = AuditLog::find("crash anywhere") else {
        return Ok(());
    };
    install_crd(&client).await?;
    let base = format!("sessionstore-e2e-crash-{}", std::process::id());

    // How many writes a creation takes, without a crash.
    let ns = format!("{base}-0");
    create_namespace(&client, &ns).await?;
    let counted = clean_creation(&client, &kubeconfig, &ns, &audit).await;
    delete_namespace(&client, &ns).await;
    let writes = counted?;
    println!(
        "crash: a creation takes {} writes: {}",
        writes.len(),
        writes
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );

    for k in 1..=writes.len() {
        let ns = format!("{base}-{k}");
        create_namespace(&client, &ns).await?;
        let result = crash_after(&client, &kubeconfig, &ns, &audit, k).await;
        delete_namespace(&client, &ns).await;
        result.map_err(|e| format!("crash after write {k}: {e}"))?;
    }
    Ok(())
}

async fn clean_creation(
    client: &Client,
    kubeconfig: &str,
    ns: &str,
    audit: &AuditLog,
) -> Fallible<Vec<Write>> {
    let stores: Api<SessionStore> = Api::namespaced(client.clone(), ns);
    let operator = Operator::start_with(kubeconfig, ns, &["--no-leader-election"])?;
    let mark = audit.mark()?;
    stores
        .patch(
            "crash",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(manifest("crash", "development")),
        )
        .await?;
    wait_ready(&stores, "crash", 300).await?;
    // The last writes (status, Events) may land just after Ready is readable: settle until the
    // count stops growing for 5 s.
    let mut seen = audit.operator_writes_since(mark, ns)?.len();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = audit.operator_writes_since(mark, ns)?.len();
        if now == seen {
            break;
        }
        seen = now;
    }
    operator.stop();
    audit.operator_writes_since(mark, ns)
}

/// Creates a store with an operator that aborts after its `k`-th write, then restarts it
/// normally: the store must become Ready, each Secret created exactly once, and a Secret that
/// existed at the crash keeps its uid and data.
async fn crash_after(
    client: &Client,
    kubeconfig: &str,
    ns: &str,
    audit: &AuditLog,
    k: usize,
) -> Fallible {
    let stores: Api<SessionStore> = Api::namespaced(client.clone(), ns);
    let mark = audit.mark()?;
    let started = Instant::now();
    let mut crashing = std::process::Command::new(env!("CARGO_BIN_EXE_sessionstore-operator"))
        .args([
            "run",
            "--no-leader-election",
            "--http-addr",
            "127.0.0.1:0",
            "--namespace",
            ns,
        ])
        .env("KUBECONFIG", super::operator_kubeconfig(kubeconfig))
        .env("LOG_LEVEL", "warn")
        .env(ABORT_AFTER_WRITES_ENV, k.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    stores
        .patch(
            "crash",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(manifest("crash", "development")),
        )
        .await?;
    // The operator aborts at its k-th write, unless this creation converged in fewer writes (how
    // many status writes a creation takes depends on when the pods become ready): then there is
    // nothing to crash at, which is seen as Ready with a write count that stopped below k.
    let mut exit = None;
    let mut last_count = None;
    for step in 0..600 {
        if let Some(status) = crashing.try_wait()? {
            exit = Some(status);
            break;
        }
        if step % 50 == 49 {
            let count = audit.operator_writes_since(mark, ns)?.len();
            if last_count == Some(count) && count < k && is_ready(&stores, "crash").await {
                let _ = crashing.kill();
                let _ = crashing.wait();
                println!("crash: write {k} never came: the creation converged in {count} writes");
                return Ok(());
            }
            last_count = Some(count);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(exit) = exit else {
        let _ = crashing.kill();
        let _ = crashing.wait();
        return Err("the operator neither crashed nor converged within 60 s".into());
    };
    if exit.success() {
        return Err(format!("the operator exited cleanly ({exit}) instead of aborting").into());
    }
    let before = audit.operator_writes_since(mark, ns)?;
    let at_crash = secrets_of(client, ns, "crash").await;

    let operator = Operator::start_with(kubeconfig, ns, &["--no-leader-election"])?;
    let ready = wait_ready(&stores, "crash", 300).await;
    let after = secrets_of(client, ns, "crash").await;
    operator.stop();
    ready?;
    let all = audit.operator_writes_since(mark, ns)?;
    println!(
        "crash: aborted after write {k} ({}), Ready {:.1}s after the start, {} writes before the \
         crash, {} in all; Secrets at the crash: {:?}",
        before.last().map(|w| w.to_string()).unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        before.len(),
        all.len(),
        at_crash.keys().collect::<Vec<_>>()
    );
    if before.len() != k {
        return Err(format!(
            "the audit log shows {} writes before the crash, expected {k}: {}",
            before.len(),
            summary(&before)
        )
        .into());
    }
    for secret in ["crash-connection", "crash-internal"] {
        let created = all
            .iter()
            .filter(|w| w.verb == "create" && w.resource == "secrets" && w.name == secret)
            .filter(|w| (200..300).contains(&w.code))
            .count();
        if created != 1 {
            return Err(format!("{secret} was created {created} times").into());
        }
        let Some((uid, data)) = after.get(secret) else {
            return Err(format!("{secret} is missing after the restart").into());
        };
        if let Some((uid_at_crash, data_at_crash)) = at_crash.get(secret) {
            if uid != uid_at_crash {
                return Err(format!("{secret} was replaced (new uid) after the crash").into());
            }
            // Only keys present at the crash must be unchanged (keys may be added, never changed).
            for (key, value) in data_at_crash {
                if data.get(key) != Some(value) {
                    return Err(format!("{secret} key {key} changed after the crash").into());
                }
            }
        }
    }
    Ok(())
}
