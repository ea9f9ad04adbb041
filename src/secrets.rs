//! The two Secrets of a store, handled apart from the other children because their passwords are
//! generated once and must never be regenerated or overwritten.
//!
//! - Read: Secrets are fetched by name (never listed or watched); the passwords they hold become the
//!   `StoreCredentials`, and only what is missing is generated.
//! - Create: a missing Secret is created with POST (never server-side apply), so a concurrent
//!   creator makes our create fail with 409 and the reconcile re-reads instead of overwriting.
//! - Patch: on an existing Secret only labels, ownerReferences and *derived* keys (the ACL file,
//!   host, uri, ...) are applied, and only when they differ; password keys are left out of the patch.
//! - Remember: the credentials and the applied hashes are kept in memory for a few minutes, so a
//!   resync of an unchanged store sends no request at all; a periodic requeue re-reads them and so
//!   notices a deleted Secret. Never while a rotation is in progress: each step re-reads.
//! - Publish: the connection Secret's `password` changes in exactly one place,
//!   [`publish_connection_password`], called by a rotation step (see `rotation::step`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::build::StoreCredentials;
use crate::build::keys::{
    OPERATOR_PASSWORD_KEY, PROBE_PASSWORD_KEY, REPLICATION_PASSWORD_KEY, SENTINEL_PASSWORD_KEY,
};
use crate::build::meta::{ChildNames, MANAGER};
use crate::cache::APPLIED_HASH_ANNOTATION;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::hash::object_hash;
use crate::metrics::Verb;
use crate::password::Password;
use crate::rotation::RotationState;
use crate::validate::ValidatedStore;

/// Connection Secret key holding the application password.
pub const PASSWORD_KEY: &str = "password";
/// Key of the user's own Secret named by `spec.auth.existingSecret`.
pub const EXISTING_SECRET_KEY: &str = "password";

/// Which of the two Secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretRole {
    Connection,
    Internal,
}

impl SecretRole {
    /// Keys whose values are generated once and never overwritten by an apply.
    /// With `auth.existingSecret` the connection password is the user's password at creation;
    /// a later change of the user's Secret reaches it through a rotation (both passwords valid
    /// during the grace period), never through an apply, so it is stored in both cases.
    pub fn stored_keys(self) -> &'static [&'static str] {
        match self {
            SecretRole::Connection => &[PASSWORD_KEY],
            SecretRole::Internal => &[
                OPERATOR_PASSWORD_KEY,
                REPLICATION_PASSWORD_KEY,
                SENTINEL_PASSWORD_KEY,
                PROBE_PASSWORD_KEY,
            ],
        }
    }

    pub fn name(self, store: &str) -> String {
        match self {
            SecretRole::Connection => ChildNames::connection_secret(store),
            SecretRole::Internal => ChildNames::internal_secret(store),
        }
    }
}

/// What this reconcile knows about one Secret before applying it.
#[derive(Clone)]
pub enum SecretState {
    /// Read from the API server.
    Existing(Box<Secret>),
    /// Read, and not there.
    Missing,
    /// Not read (the connection Secret was missing, so this one most likely is too): create it
    /// optimistically; a 409 makes the reconcile re-read.
    Unread,
    /// Not read: remembered from a recent reconcile with this applied hash.
    Remembered(String),
}

impl SecretState {
    fn secret(&self) -> Option<&Secret> {
        match self {
            SecretState::Existing(secret) => Some(secret),
            _ => None,
        }
    }
}

/// The outcome of the read step.
pub struct SecretsRead {
    /// `app` is the connection Secret's password (what applications use now); a new store's is
    /// the `auth.existingSecret` password or a generated one.
    pub credentials: StoreCredentials,
    pub connection: SecretState,
    pub internal: SecretState,
    /// The rotation state persisted in the internal Secret (`initial` for a new store).
    pub rotation: RotationState,
    /// The password of `spec.auth.existingSecret`, when set: a rotation starts when it differs
    /// from the connection Secret's.
    pub supplied_password: Option<Password>,
}

/// What applying one Secret did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretApplied {
    Created(String),
    Patched(String),
    Unchanged(String),
}

impl SecretApplied {
    pub fn hash(&self) -> &str {
        match self {
            SecretApplied::Created(h) | SecretApplied::Patched(h) | SecretApplied::Unchanged(h) => {
                h
            }
        }
    }
}

/// Builds the credentials from the Secrets that exist, generating only what is missing.
///
/// The app password is the connection Secret's (what applications hold); only a new store takes
/// `existing_password` (`spec.auth.existingSecret`) instead, since a later change of that password
/// must go through a rotation. Unlike `StoreCredentials::from_secrets`, an unreadable stored
/// password is an error rather than silently replaced, and `app_previous` is left to the rotation
/// state (the internal Secret), not read from the connection Secret.
pub fn credentials_from_secrets(
    connection: Option<&Secret>,
    internal: Option<&Secret>,
    existing_password: Option<Password>,
) -> Result<StoreCredentials> {
    let app = match stored_password(connection, PASSWORD_KEY)? {
        Some(password) => password,
        None => existing_password.unwrap_or_else(Password::generate),
    };
    Ok(StoreCredentials {
        app,
        app_previous: None,
        operator: stored_password(internal, OPERATOR_PASSWORD_KEY)?
            .unwrap_or_else(Password::generate),
        replication: stored_password(internal, REPLICATION_PASSWORD_KEY)?
            .unwrap_or_else(Password::generate),
        sentinel: stored_password(internal, SENTINEL_PASSWORD_KEY)?
            .unwrap_or_else(Password::generate),
        probe: stored_password(internal, PROBE_PASSWORD_KEY)?.unwrap_or_else(Password::generate),
    })
}

/// A non-empty password under `key`, or `None`. Errors never contain the value.
fn stored_password(secret: Option<&Secret>, key: &str) -> Result<Option<Password>> {
    let Some(secret) = secret else {
        return Ok(None);
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        });
    match value {
        None => Ok(None),
        Some(bytes) if bytes.is_empty() => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(|s| Some(Password::from_secret_value(s)))
            .map_err(|_| Error::SecretData {
                secret: secret.metadata.name.clone().unwrap_or_default(),
                message: format!("key {key} is not UTF-8 text"),
            }),
    }
}

/// Reads the Secrets (or remembers them) and derives the credentials. With `optimistic`, a missing
/// connection Secret means the internal one is not read but created (a 409 makes the caller retry
/// with `optimistic = false`).
pub async fn read_credentials(
    ctx: &Context,
    store: &ValidatedStore,
    optimistic: bool,
) -> Result<SecretsRead> {
    if let Some(remembered) = ctx.credentials.fresh(store) {
        return Ok(SecretsRead {
            credentials: remembered.credentials,
            connection: SecretState::Remembered(remembered.connection_hash),
            internal: SecretState::Remembered(remembered.internal_hash),
            rotation: remembered.rotation,
            supplied_password: remembered.supplied_password,
        });
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &store.namespace);
    let existing_password = match &store.auth.existing_secret {
        Some(name) => Some(read_existing_secret(ctx, &api, name, &store.namespace).await?),
        None => None,
    };
    let connection = get_secret(ctx, &api, &SecretRole::Connection.name(&store.name)).await?;
    // A missing connection Secret means a new store: skip the read of the internal one and create
    // it optimistically (a 409 re-reads). Saves one request per new store.
    let internal = match connection {
        SecretState::Missing if optimistic => SecretState::Unread,
        _ => get_secret(ctx, &api, &SecretRole::Internal.name(&store.name)).await?,
    };
    let credentials = credentials_from_secrets(
        connection.secret(),
        internal.secret(),
        existing_password.clone(),
    )?;
    let rotation = match internal.secret().and_then(|s| s.data.as_ref()) {
        Some(data) => RotationState::from_secret_data(data).map_err(|e| Error::SecretData {
            secret: SecretRole::Internal.name(&store.name),
            message: e.to_string(),
        })?,
        // A new store: the password it is created with belongs to the rotation value set now.
        None => RotationState::initial(store.auth.rotation.as_deref()),
    };
    Ok(SecretsRead {
        credentials,
        connection,
        internal,
        rotation,
        supplied_password: existing_password,
    })
}

async fn get_secret(ctx: &Context, api: &Api<Secret>, name: &str) -> Result<SecretState> {
    ctx.metrics.api_request(Verb::Get);
    match api.get_opt(name).await {
        Ok(Some(secret)) => Ok(SecretState::Existing(Box::new(secret))),
        Ok(None) => Ok(SecretState::Missing),
        Err(e) => Err(Error::kube(format!("reading Secret {name}"), e)),
    }
}

async fn read_existing_secret(
    ctx: &Context,
    api: &Api<Secret>,
    name: &str,
    namespace: &str,
) -> Result<Password> {
    ctx.metrics.api_request(Verb::Get);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {name} (spec.auth.existingSecret)"), e))?
        .ok_or_else(|| Error::ExistingSecret {
            message: format!("Secret {namespace}/{name} does not exist; create it with a `{EXISTING_SECRET_KEY}` key"),
        })?;
    stored_password(Some(&secret), EXISTING_SECRET_KEY)?.ok_or_else(|| Error::ExistingSecret {
        message: format!("Secret {namespace}/{name} has no non-empty `{EXISTING_SECRET_KEY}` key"),
    })
}

/// Makes sure a Secret about to be created carries its stored passwords, whatever the builder
/// wrote: the read step finds them there next time, so they are generated exactly once.
pub fn with_stored_passwords(
    mut secret: Secret,
    role: SecretRole,
    credentials: &StoreCredentials,
) -> Secret {
    normalize(&mut secret);
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    for key in role.stored_keys() {
        let password = match *key {
            PASSWORD_KEY => &credentials.app,
            OPERATOR_PASSWORD_KEY => &credentials.operator,
            REPLICATION_PASSWORD_KEY => &credentials.replication,
            SENTINEL_PASSWORD_KEY => &credentials.sentinel,
            PROBE_PASSWORD_KEY => &credentials.probe,
            _ => continue,
        };
        data.entry((*key).to_string())
            .or_insert_with(|| ByteString(password.expose().as_bytes().to_vec()));
    }
    secret
}

/// `stringData` folded into `data`, so comparisons and patches see one map.
fn normalize(secret: &mut Secret) {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
}

/// The part of a desired Secret the operator may apply to an existing one: labels,
/// ownerReferences and derived keys; never a stored password, never the immutable type.
pub fn existing_secret_patch(desired: &Secret, role: SecretRole) -> Secret {
    let stored = role.stored_keys();
    let data: BTreeMap<String, ByteString> = desired
        .data
        .iter()
        .flatten()
        .filter(|(key, _)| !stored.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: desired.metadata.name.clone(),
            namespace: desired.metadata.namespace.clone(),
            labels: desired.metadata.labels.clone(),
            owner_references: desired.metadata.owner_references.clone(),
            ..ObjectMeta::default()
        },
        data: (!data.is_empty()).then_some(data),
        ..Secret::default()
    }
}

/// Creates a missing Secret, or patches the derived parts of an existing one when they differ.
pub async fn apply_secret(
    ctx: &Context,
    role: SecretRole,
    desired: Secret,
    state: &SecretState,
    credentials: &StoreCredentials,
) -> Result<SecretApplied> {
    let desired = with_stored_passwords(desired, role, credentials);
    let mut patch = existing_secret_patch(&desired, role);
    let hash = object_hash(&patch)?;
    let name = desired.metadata.name.clone().unwrap_or_default();
    let namespace = desired.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);

    let live = match state {
        SecretState::Remembered(remembered) if *remembered == hash => {
            return Ok(SecretApplied::Unchanged(hash));
        }
        SecretState::Remembered(_) => get_secret(ctx, &api, &name).await?,
        other => other.clone(),
    };
    match live {
        SecretState::Existing(live) => {
            add_missing_stored_keys(ctx, &api, &live, &desired, role).await?;
            if live_matches(&live, &patch, &hash) {
                return Ok(SecretApplied::Unchanged(hash));
            }
            patch
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(APPLIED_HASH_ANNOTATION.into(), hash.clone());
            ctx.metrics.api_request(Verb::Patch);
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::kube(format!("patching Secret {namespace}/{name}"), e))?;
            Ok(SecretApplied::Patched(hash))
        }
        SecretState::Missing | SecretState::Unread | SecretState::Remembered(_) => {
            let mut desired = desired;
            desired
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(APPLIED_HASH_ANNOTATION.into(), hash.clone());
            let params = PostParams {
                dry_run: false,
                field_manager: Some(MANAGER.into()),
            };
            ctx.metrics.api_request(Verb::Create);
            match api.create(&params, &desired).await {
                Ok(_) => Ok(SecretApplied::Created(hash)),
                Err(kube::Error::Api(status)) if status.code == 409 => Err(Error::Conflict {
                    context: format!("creating Secret {namespace}/{name}"),
                }),
                Err(e) => Err(Error::kube(
                    format!("creating Secret {namespace}/{name}"),
                    e,
                )),
            }
        }
    }
}

/// The stored passwords an existing internal Secret lacks (absent or empty), with the values of
/// `desired` (generated by this reconcile): what an operator upgrade that adds a stored password
/// (`probe-password`) must add to the stores created before it. Keys the live Secret has are never
/// in the result. The connection Secret's password is left to the rotation, its one writer.
pub fn missing_stored_keys(
    live: &Secret,
    desired: &Secret,
    role: SecretRole,
) -> BTreeMap<String, ByteString> {
    if role != SecretRole::Internal {
        return BTreeMap::new();
    }
    role.stored_keys()
        .iter()
        .filter(|key| {
            live.data
                .as_ref()
                .and_then(|d| d.get(**key))
                .is_none_or(|v| v.0.is_empty())
        })
        .filter_map(|key| {
            let value = desired.data.as_ref()?.get(*key)?;
            Some(((*key).to_string(), value.clone()))
        })
        .collect()
}

/// Adds [`missing_stored_keys`] to the live Secret: a JSON merge patch naming only those keys,
/// guarded by the live `resourceVersion`, so it never rewrites a key that exists (a concurrent
/// writer makes it fail with 409 and the reconcile re-reads), and the keys never become fields of
/// the apply manager (whose next apply, which leaves passwords out, would remove them).
async fn add_missing_stored_keys(
    ctx: &Context,
    api: &Api<Secret>,
    live: &Secret,
    desired: &Secret,
    role: SecretRole,
) -> Result<()> {
    let missing = missing_stored_keys(live, desired, role);
    if missing.is_empty() {
        return Ok(());
    }
    let name = live.metadata.name.clone().unwrap_or_default();
    let namespace = live.metadata.namespace.clone().unwrap_or_default();
    let keys: Vec<&str> = missing.keys().map(String::as_str).collect();
    tracing::info!(secret = %name, keys = ?keys, "adding missing stored passwords");
    let body = serde_json::json!({
        "metadata": {"resourceVersion": live.metadata.resource_version},
        "data": missing,
    });
    ctx.metrics.api_request(Verb::Patch);
    match api
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(Error::Conflict {
            context: format!("adding stored passwords to Secret {namespace}/{name}"),
        }),
        Err(e) => Err(Error::kube(
            format!("adding stored passwords to Secret {namespace}/{name}"),
            e,
        )),
    }
}

/// Writes a rotation's password into the existing connection Secret: `password`, the derived keys
/// (`uri`, `previous-password`, ...) and the applied-hash annotation, so the apply that follows
/// finds it unchanged. The ONLY write that replaces the connection Secret's password.
///
/// A JSON merge patch, not server-side apply: the password must never become a field owned by the
/// apply manager, or the next apply (which leaves passwords out) would delete it. A derived key the
/// desired Secret no longer has (`previous-password` after a rotation) is removed explicitly.
/// Returns the applied hash.
pub async fn publish_connection_password(
    ctx: &Context,
    desired: Secret,
    credentials: &StoreCredentials,
) -> Result<String> {
    let desired = with_stored_passwords(desired, SecretRole::Connection, credentials);
    let patch = existing_secret_patch(&desired, SecretRole::Connection);
    let hash = object_hash(&patch)?;
    let name = desired.metadata.name.clone().unwrap_or_default();
    let namespace = desired.metadata.namespace.clone().unwrap_or_default();
    let mut data = serde_json::Map::new();
    for (key, value) in desired.data.iter().flatten() {
        let value = serde_json::to_value(value).map_err(|source| Error::Serialize {
            what: format!("Secret {namespace}/{name} key {key}"),
            source,
        })?;
        data.insert(key.clone(), value);
    }
    if !data.contains_key(crate::build::secret::PREVIOUS_PASSWORD_KEY) {
        data.insert(
            crate::build::secret::PREVIOUS_PASSWORD_KEY.into(),
            serde_json::Value::Null,
        );
    }
    let body = serde_json::json!({
        "metadata": {"annotations": {APPLIED_HASH_ANNOTATION: hash}},
        "data": data,
    });
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.metrics.api_request(Verb::Patch);
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Merge(&body),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("publishing the password in Secret {namespace}/{name}"),
            e,
        )
    })?;
    Ok(hash)
}

/// Whether an existing Secret already carries the patch: same hash annotation, same derived keys
/// (a hand edit of a derived key is restored), our labels and ownerReferences present.
fn live_matches(live: &Secret, patch: &Secret, hash: &str) -> bool {
    let annotated = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
        .is_some_and(|h| h == hash);
    let data_matches = patch
        .data
        .iter()
        .flatten()
        .all(|(k, v)| live.data.as_ref().and_then(|d| d.get(k)) == Some(v));
    let labels_match = patch
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| live.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    let owners_match = patch.metadata.owner_references.iter().flatten().all(|o| {
        live.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|l| l.uid == o.uid && l.controller == o.controller)
    });
    annotated && data_matches && labels_match && owners_match
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn stored_passwords_are_reused_and_only_missing_ones_generated() {
        let connection = secret("s-connection", &[("password", "app-pw")]);
        let internal = secret(
            "s-internal",
            &[("operator-password", "op-pw"), ("users.acl", "x")],
        );
        let creds =
            credentials_from_secrets(Some(&connection), Some(&internal), None).expect("reads");
        assert_eq!(creds.app.expose(), "app-pw");
        assert_eq!(creds.operator.expose(), "op-pw");
        assert_eq!(
            creds.replication.expose().len(),
            crate::password::GENERATED_PASSWORD_LEN
        );
        assert_ne!(creds.replication, creds.sentinel);
    }

    #[test]
    fn existing_secret_password_seeds_a_new_store_and_a_change_is_left_to_rotation() {
        let users = || Some(Password::from_secret_value("users-own".into()));
        let creds = credentials_from_secrets(None, None, users()).expect("reads");
        assert_eq!(creds.app.expose(), "users-own");
        // Once published, the connection Secret's password is what applications hold: a new
        // password in the user's Secret is rotated in, not swapped under them.
        let connection = secret("s-connection", &[("password", "old")]);
        let creds = credentials_from_secrets(Some(&connection), None, users()).expect("reads");
        assert_eq!(creds.app.expose(), "old");
    }

    #[test]
    fn a_non_utf8_password_is_an_error_that_does_not_show_the_bytes() {
        let mut bad = secret("s-connection", &[]);
        bad.data = Some(BTreeMap::from([(
            "password".into(),
            ByteString(vec![0xff, 0xfe, 0x41]),
        )]));
        let err = credentials_from_secrets(Some(&bad), None, None).expect_err("fails");
        assert!(err.to_string().contains("s-connection"));
        assert!(err.to_string().contains("password"));
    }

    #[test]
    fn the_patch_of_an_existing_secret_leaves_out_every_stored_password() {
        let desired = secret(
            "s-internal",
            &[
                ("operator-password", "a"),
                ("replication-password", "b"),
                ("sentinel-password", "c"),
                ("users.acl", "acl"),
            ],
        );
        let patch = existing_secret_patch(&desired, SecretRole::Internal);
        let keys: Vec<_> = patch
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["users.acl"]);

        let desired = secret("s-connection", &[("password", "a"), ("host", "h")]);
        let patch = existing_secret_patch(&desired, SecretRole::Connection);
        let keys: Vec<_> = patch
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["host"]);
        // With auth.existingSecret too: only a rotation publishes a new password.
        let patch = existing_secret_patch(&desired, SecretRole::Connection);
        let keys: Vec<_> = patch
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["host"]);
    }

    #[test]
    fn an_upgrade_adds_only_the_stored_passwords_an_existing_secret_lacks() {
        // A store created before `probe-password` existed, one key emptied by hand.
        let live = secret(
            "s-internal",
            &[
                ("operator-password", "op-live"),
                ("replication-password", "repl-live"),
                ("sentinel-password", ""),
                ("users.acl", "old"),
            ],
        );
        let creds = credentials_from_secrets(None, Some(&live), None).expect("reads");
        assert_eq!(creds.operator.expose(), "op-live");
        let desired = with_stored_passwords(
            secret("s-internal", &[("users.acl", "new")]),
            SecretRole::Internal,
            &creds,
        );
        let missing = missing_stored_keys(&live, &desired, SecretRole::Internal);
        let keys: Vec<&str> = missing.keys().map(String::as_str).collect();
        assert_eq!(keys, ["probe-password", "sentinel-password"]);
        assert!(
            missing.get("probe-password").map(|v| v.0.as_slice())
                == Some(creds.probe.expose().as_bytes())
        );
        // Nothing missing: nothing to add; the connection Secret's password is never added here.
        assert!(missing_stored_keys(&desired, &desired, SecretRole::Internal).is_empty());
        let connection = secret("s-connection", &[("host", "h")]);
        let desired = secret("s-connection", &[("password", "p"), ("host", "h")]);
        assert!(missing_stored_keys(&connection, &desired, SecretRole::Connection).is_empty());
    }

    #[test]
    fn created_secrets_carry_their_passwords_even_when_the_builder_left_them_out() {
        let creds = StoreCredentials::generate();
        let internal = with_stored_passwords(
            secret("s-internal", &[("users.acl", "x")]),
            SecretRole::Internal,
            &creds,
        );
        let read = credentials_from_secrets(None, Some(&internal), None).expect("reads");
        assert_eq!(read.operator, creds.operator);
        assert_eq!(read.replication, creds.replication);
        assert_eq!(read.sentinel, creds.sentinel);
        // A builder-provided value is kept as is.
        let internal = with_stored_passwords(
            secret("s-internal", &[("operator-password", "from-builder")]),
            SecretRole::Internal,
            &creds,
        );
        assert_eq!(
            internal
                .data
                .as_ref()
                .and_then(|d| d.get("operator-password"))
                .map(|b| b.0.as_slice()),
            Some(&b"from-builder"[..])
        );
    }
}
