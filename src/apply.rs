//! Step 3 of the pipeline: the desired children reach the cluster with server-side apply under one
//! field manager, in dependency order, and only when they changed.
//!
//! Each applied child carries the hash of its desired form in an annotation. A child is skipped when
//! the watch cache shows that hash *and* nobody else edited it since our last apply (its generation,
//! or resourceVersion for kinds without one, is what we last saw), so an unchanged store costs no
//! write and no read, while a deleted or hand-edited child is applied again.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::DesiredChildren;
use crate::build::meta::{ChildNames, MANAGER};
use crate::cache::{APPLIED_HASH_ANNOTATION, Cached, ChildKind, LiveChild, describe, drift_key};
use crate::context::Context;
use crate::context::memo::{ChildKey, RememberedCredentials};
use crate::error::{Error, Result};
use crate::hash::object_hash;
use crate::metrics::Verb;
use crate::secrets::{self, SecretApplied, SecretRole, SecretsRead};
use crate::validate::ValidatedStore;

/// What the apply step did, for status and Events.
#[derive(Clone, Debug, Default)]
pub struct ApplyOutcome {
    /// The connection Secret was created by this reconcile (a new store).
    pub created: bool,
    /// Children written (created or patched or deleted) by this reconcile.
    pub writes: u32,
    /// The StatefulSet's status when the apply returned it.
    pub statefulset_status: Option<StatefulSetStatus>,
}

/// Applies every child in order: ConfigMap and Secrets before the StatefulSet that mounts them.
/// Destructured without `..`: a new child that is not applied here fails to compile.
pub async fn apply_children(
    ctx: &Context,
    store: &ValidatedStore,
    children: DesiredChildren,
    secrets_read: &SecretsRead,
) -> Result<ApplyOutcome> {
    let DesiredChildren {
        config_map,
        internal_secret,
        connection_secret,
        headless_service,
        service,
        statefulset,
        network_policy,
        pod_disruption_budget,
        // The optional APIs' objects have their own steps: the Certificate is applied by
        // `tls::prepare` before the build (its Secret is an input of the build), the ServiceMonitor
        // by `service_monitor` after the children (a missing API is a condition, not a failure); the
        // pipeline's apply step takes the ServiceMonitor out before calling this.
        certificate: _,
        service_monitor: _,
    } = children;
    let mut outcome = ApplyOutcome::default();

    outcome.count(
        apply_child(ctx, ChildKind::ConfigMap, config_map)
            .await?
            .is_some(),
    );

    apply_secrets(
        ctx,
        store,
        connection_secret,
        internal_secret,
        secrets_read,
        &mut outcome,
    )
    .await?;

    outcome.count(
        apply_child(ctx, ChildKind::Service, headless_service)
            .await?
            .is_some(),
    );
    outcome.count(
        apply_child(ctx, ChildKind::Service, service)
            .await?
            .is_some(),
    );
    let applied_sts: Option<StatefulSet> =
        apply_child(ctx, ChildKind::StatefulSet, statefulset).await?;
    outcome.count(applied_sts.is_some());
    outcome.statefulset_status = applied_sts.and_then(|s| s.status);
    outcome.count(
        apply_child(ctx, ChildKind::NetworkPolicy, network_policy)
            .await?
            .is_some(),
    );
    match pod_disruption_budget {
        Some(pdb) => outcome.count(
            apply_child(ctx, ChildKind::PodDisruptionBudget, pdb)
                .await?
                .is_some(),
        ),
        None => outcome.count(
            delete_child::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(
                ctx,
                ChildKind::PodDisruptionBudget,
                &store.namespace,
                &ChildNames::pod_disruption_budget(&store.name),
            )
            .await?,
        ),
    }
    Ok(outcome)
}

/// Applies the two Secrets (created once, patched only where a key is missing) and remembers the
/// credentials they now hold.
async fn apply_secrets(
    ctx: &Context,
    store: &ValidatedStore,
    connection_secret: Secret,
    internal_secret: Secret,
    secrets_read: &SecretsRead,
    outcome: &mut ApplyOutcome,
) -> Result<()> {
    // The connection Secret first: it holds the only copy of the application password, and the
    // internal Secret's ACL file is derived from it. Created in the other order, a crash between
    // the two creates left an ACL for a password stored nowhere, and the next reconcile generated
    // another (found by the e2e crash-anywhere case).
    let connection = secrets::apply_secret(
        ctx,
        SecretRole::Connection,
        connection_secret,
        &secrets_read.connection,
        &secrets_read.credentials,
    )
    .await?;
    let internal = secrets::apply_secret(
        ctx,
        SecretRole::Internal,
        internal_secret,
        &secrets_read.internal,
        &secrets_read.credentials,
    )
    .await?;
    outcome.count(!matches!(internal, SecretApplied::Unchanged(_)));
    outcome.count(!matches!(connection, SecretApplied::Unchanged(_)));
    outcome.created = matches!(connection, SecretApplied::Created(_));
    ctx.credentials.remember(
        store,
        RememberedCredentials {
            credentials: secrets_read.credentials.clone(),
            rotation: secrets_read.rotation.clone(),
            supplied_password: secrets_read.supplied_password.clone(),
            connection_hash: connection.hash().into(),
            internal_hash: internal.hash().into(),
        },
    );
    Ok(())
}

impl ApplyOutcome {
    fn count(&mut self, wrote: bool) {
        if wrote {
            self.writes += 1;
        }
    }
}

/// Server-side applies one child unless the live object already carries its hash.
/// Returns the object the API server stored, or `None` when nothing was sent.
pub async fn apply_child<K>(ctx: &Context, kind: ChildKind, mut desired: K) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let hash = object_hash(&desired)?;
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH_ANNOTATION.into(), hash.clone());
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let what = describe(&desired);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let memo_key = ChildKey::new(kind, &namespace, &name);

    let live = match ctx.cache.lookup(kind, &namespace, &name) {
        Cached::Unknown => {
            ctx.metrics.api_request(Verb::Get);
            match api.get_metadata_opt(&name).await {
                Ok(Some(meta)) => Cached::Present(LiveChild::from_meta(&meta.metadata)),
                Ok(None) => Cached::Absent,
                Err(e) => return Err(Error::kube(format!("reading {what}"), e)),
            }
        }
        known => known,
    };
    if let Cached::Present(live) = &live
        && live.applied_hash.as_deref() == Some(hash.as_str())
        && ctx.drift.untouched(&memo_key, &live.drift_key)
    {
        return Ok(None);
    }

    tracing::debug!(child = %what, "applying");
    ctx.metrics.api_request(Verb::Patch);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|e| Error::kube(format!("applying {what}"), e))?;
    ctx.drift.record(memo_key, drift_key(applied.meta()));
    Ok(Some(applied))
}

/// Deletes a child the store no longer needs (the PDB when replicas drop to 1), if it exists.
async fn delete_child<K>(
    ctx: &Context,
    kind: ChildKind,
    namespace: &str,
    name: &str,
) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let exists = match ctx.cache.lookup(kind, namespace, name) {
        Cached::Absent => false,
        Cached::Present(_) => true,
        Cached::Unknown => {
            ctx.metrics.api_request(Verb::Get);
            api.get_metadata_opt(name)
                .await
                .map_err(|e| {
                    Error::kube(format!("reading {} {namespace}/{name}", kind.as_str()), e)
                })?
                .is_some()
        }
    };
    if !exists {
        return Ok(false);
    }
    ctx.metrics.api_request(Verb::Delete);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => {
            return Err(Error::kube(
                format!("deleting {} {namespace}/{name}", kind.as_str()),
                e,
            ));
        }
    }
    ctx.drift.forget(&ChildKey::new(kind, namespace, name));
    Ok(true)
}
