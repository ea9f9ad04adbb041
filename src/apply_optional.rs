//! One applier for the children whose API is optional (cert-manager's `Certificate`,
//! prometheus-operator's `ServiceMonitor`): the API is discovered once per operator, and an object
//! is server-side applied only when its hash differs from what our last apply left.
//!
//! Discovery: a positive answer is kept for good, a negative one re-checked every
//! [`DISCOVERY_RECHECK`] (so installing the optional operator later needs no restart), never per
//! reconcile. Applies are remembered by hash per object, and after a restart the live object's
//! hash annotation answers instead, so a steady state sends nothing.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use crate::build::meta::MANAGER;
use crate::cache::APPLIED_HASH_ANNOTATION;
use crate::context::Context;
use crate::context::memo::OptionalApiMemo;
use crate::error::{Error, Result};
use crate::hash::object_hash;
use crate::metrics::Verb;

/// An API the operator uses when it is installed.
#[derive(Clone, Copy, Debug)]
pub struct OptionalApi {
    /// Who provides it, for logs (`cert-manager`).
    pub provider: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource's plural name, as discovery lists it.
    pub plural: &'static str,
}

impl OptionalApi {
    pub fn group_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    pub fn resource(&self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(self.group, self.version, self.kind))
    }

    /// The namespaced API of this resource.
    pub fn api(&self, ctx: &Context, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(ctx.client.clone(), namespace, &self.resource())
    }
}

/// The memo key of one object of a store: `namespace/name/uid` (the uid tells a re-created store).
pub fn memo_key(namespace: &str, name: &str, owner_uid: &str) -> String {
    format!("{namespace}/{name}/{owner_uid}")
}

/// Whether the API is installed: remembered, or asked once (one discovery GET).
pub async fn api_installed(
    ctx: &Context,
    api: &OptionalApi,
    memo: &OptionalApiMemo,
) -> Result<bool> {
    if let Some(known) = memo.known_api() {
        return Ok(known);
    }
    ctx.metrics.api_request(Verb::Get);
    let group_version = api.group_version();
    let installed = match ctx.client.list_api_group_resources(&group_version).await {
        Ok(list) => list.resources.iter().any(|r| r.name == api.plural),
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(e) => return Err(Error::kube(format!("discovering {group_version}"), e)),
    };
    tracing::info!(installed, provider = api.provider, "optional API discovery");
    memo.note_api(installed);
    Ok(installed)
}

/// Server-side applies `object` (named `name` in `namespace`, owned by the store `owner_uid`)
/// unless our last apply (remembered, or its annotation after a restart) already carries the same
/// hash. The hash is of the object's JSON form before the annotation is added.
pub async fn apply_optional<T: Serialize>(
    ctx: &Context,
    api: &OptionalApi,
    memo: &OptionalApiMemo,
    owner_uid: &str,
    object: &T,
) -> Result<()> {
    let mut desired = serde_json::to_value(object).map_err(|source| Error::Serialize {
        what: api.kind.into(),
        source,
    })?;
    let namespace = desired["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = api.kind;
    let hash = object_hash(&desired)?;
    let key = memo_key(&namespace, &name, owner_uid);
    let remembered = memo.get(&key);
    if remembered.as_ref().and_then(Option::as_deref) == Some(hash.as_str()) {
        return Ok(());
    }
    let client = api.api(ctx, &namespace);
    if remembered.is_none() {
        ctx.metrics.api_request(Verb::Get);
        let live = client
            .get_metadata_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("reading {kind} {name}"), e))?;
        let live_hash = live
            .and_then(|m| m.metadata.annotations)
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION).cloned());
        if live_hash.as_deref() == Some(hash.as_str()) {
            memo.set(key, Some(hash));
            return Ok(());
        }
    }
    if let Some(meta) = desired.get_mut("metadata") {
        meta["annotations"] = json!(BTreeMap::from([(APPLIED_HASH_ANNOTATION, hash.clone())]));
    }
    ctx.metrics.api_request(Verb::Patch);
    client
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|e| Error::kube(format!("applying {kind} {namespace}/{name}"), e))?;
    tracing::info!(kind, name = %name, "applied {kind}");
    memo.set(key, Some(hash));
    Ok(())
}
