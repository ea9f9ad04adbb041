//! End-to-end cases for the diagnosis in status (`src/diagnosis.rs`) on a real cluster: a store
//! that names a missing PriorityClass, one whose volume claim names a missing StorageClass, and
//! one whose Redis crash-loops. Each case sees the reason and the fix in the `Ready` condition
//! and exactly one Warning Event with that reason, in its own namespace, with the local operator
//! binary running as its RBAC user.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch};
use kube::{Api, Client};
use serde_json::{Value, json};
use sessionstore_operator::crd::SessionStore;

use super::{
    ENV, Fallible, MANAGER, Operator, admin_client, create_namespace, delete_namespace, eventually,
    install_crd,
};

/// Long enough for pod creation to fail, the scheduler to refuse, or two crashes.
const DIAGNOSIS_SECONDS: u64 = 180;

/// The store's Ready condition as (reason, message).
async fn ready_condition(stores: &Api<SessionStore>, name: &str) -> Option<(String, String)> {
    let store = stores.get(name).await.ok()?;
    let ready = store
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((ready.reason, ready.message))
}

/// Waits until the Ready reason is `reason`; returns the message.
async fn wait_for_reason(stores: &Api<SessionStore>, name: &str, reason: &str) -> Fallible<String> {
    let found = eventually(
        &format!("Ready reason {reason}"),
        DIAGNOSIS_SECONDS,
        || async {
            ready_condition(stores, name)
                .await
                .filter(|(r, _)| r == reason)
                .map(|(_, m)| m)
        },
    )
    .await;
    match found {
        Ok(message) => Ok(message),
        Err(e) => {
            let last = ready_condition(stores, name).await;
            Err(format!("{e}; last Ready condition: {last:?}").into())
        }
    }
}

/// Warning Events about the store with this reason (the Recorder keeps a series in one object).
async fn warnings(client: &Client, ns: &str, store: &str, reason: &str) -> Fallible<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(store)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("SessionStore")
        })
        .collect())
}

/// Asserts the reason's message holds every part, and exactly one Warning Event says the same.
async fn assert_diagnosed(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    parts: &[&str],
) -> Fallible {
    let stores: Api<SessionStore> = Api::namespaced(client.clone(), ns);
    let message = wait_for_reason(&stores, name, reason).await?;
    println!("{name}: Ready=False {reason}: {message}");
    for part in parts {
        if !message.contains(part) {
            return Err(format!("the {reason} message lacks {part:?}: {message}").into());
        }
    }
    let events = eventually(&format!("a Warning Event {reason}"), 30, || async {
        warnings(client, ns, name, reason)
            .await
            .ok()
            .filter(|e| !e.is_empty())
    })
    .await?;
    if events.len() != 1 {
        return Err(format!("{} Warning Events {reason}, expected one", events.len()).into());
    }
    let note = events[0].note.clone().unwrap_or_default();
    if !message.ends_with(&note) {
        return Err(format!("the Event says {note:?}, the status {message:?}").into());
    }
    Ok(())
}

/// One case: a namespace, the operator, one store; the namespace is deleted whatever the result.
async fn case(
    label: &str,
    spec: Value,
    body: impl AsyncFnOnce(&Client, &str, &str) -> Fallible,
) -> Fallible {
    let Some((client, kubeconfig)) = admin_client().await? else {
        println!("SKIPPED: diagnosis case {label} needs a cluster; set {ENV} to a kubeconfig path");
        return Ok(());
    };
    install_crd(&client).await?;
    let ns = format!("sessionstore-diag-{label}-{}", std::process::id());
    create_namespace(&client, &ns).await?;
    let result = async {
        let _operator = Operator::start(&kubeconfig, &ns)?;
        let stores: Api<SessionStore> = Api::namespaced(client.clone(), &ns);
        let mut spec = spec;
        spec["clients"] = json!({"podSelector": {"matchLabels": {"app": "e2e-client"}}});
        let store = json!({
            "apiVersion": "sessionstore.dev/v1alpha1", "kind": "SessionStore",
            "metadata": {"name": "web"}, "spec": spec,
        });
        stores
            .patch(
                "web",
                &kube::api::PatchParams::apply(MANAGER).force(),
                &Patch::Apply(store),
            )
            .await?;
        body(&client, &ns, "web").await
    }
    .await;
    delete_namespace(&client, &ns).await;
    result
}

#[tokio::test]
async fn a_missing_priority_class_is_pods_not_created() -> Fallible {
    let class = format!("e2e-missing-{}", std::process::id());
    let spec = json!({"profile": "development", "priorityClassName": class});
    case("priority", spec, async |client, ns, name| {
        assert_diagnosed(
            client,
            ns,
            name,
            "PodsNotCreated",
            &[
                &format!("no PriorityClass with name {class} was found"),
                "remove spec.priorityClassName",
            ],
        )
        .await
    })
    .await
}

#[tokio::test]
async fn a_missing_storage_class_is_volume_not_bound() -> Fallible {
    let spec = json!({
        "profile": "development",
        "persistence": {"mode": "snapshot", "storageClassName": "e2e-no-such-class"},
    });
    case("storage", spec, async |client, ns, name| {
        assert_diagnosed(
            client,
            ns,
            name,
            "VolumeNotBound",
            &[
                "pod web-0",
                "PersistentVolumeClaim",
                "\"e2e-no-such-class\"",
            ],
        )
        .await
    })
    .await
}

#[tokio::test]
async fn a_node_selector_no_node_matches_is_unschedulable() -> Fallible {
    let spec = json!({
        "profile": "development",
        "nodeSelector": {"e2e.sessionstore.dev/pool": "nowhere"},
    });
    case("unschedulable", spec, async |client, ns, name| {
        assert_diagnosed(
            client,
            ns,
            name,
            "Unschedulable",
            &["pod web-0 cannot be scheduled", "spec.nodeSelector"],
        )
        .await
    })
    .await
}

/// A store whose ACL file was broken by hand (someone edited the internal Secret): Redis refuses
/// it at start-up, and the pod crash-loops with Redis's own words in the status.
#[tokio::test]
async fn a_crash_loop_quotes_redis() -> Fallible {
    case(
        "crash",
        json!({"profile": "development"}),
        async |client, ns, name| {
            let stores: Api<SessionStore> = Api::namespaced(client.clone(), ns);
            wait_for_reason(&stores, name, "AllReplicasReady").await?;
            let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
            let internal = format!("{name}-internal");
            let patch =
                json!({"data": {"users.acl": ByteString(b"user app on nosuchrule\n".to_vec())}});
            secrets
                .patch(
                    &internal,
                    &kube::api::PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await?;
            Api::<Pod>::namespaced(client.clone(), ns)
                .delete(&format!("{name}-0"), &DeleteParams::default())
                .await?;
            assert_diagnosed(
                client,
                ns,
                name,
                "CrashLooping",
                &[
                    "pod web-0, container redis exits with code 1",
                    "Aborting Redis startup because of ACL errors",
                ],
            )
            .await
        },
    )
    .await
}
