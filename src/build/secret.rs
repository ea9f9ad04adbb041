//! The two Secrets: `<name>-connection` (what applications mount; with Sentinel also the Sentinel
//! addresses and master name) and `<name>-internal` (the ACL files and the operator's, replication
//! and Sentinel credentials), and reading passwords back
//! from them so a reconcile never regenerates what already exists.
//!
//! `ca.crt` with TLS: the CA lives in the TLS Secret (the user's, or cert-manager's), which a pure
//! builder cannot read. The controller reads the TLS Secret (to know it is ready) and hands its
//! `ca.crt` in (`BuildInput::tls`); `desired_connection_secret_with_ca` copies it in. `render`
//! reads no Secret, so it shows the connection Secret without `ca.crt`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::build::acl::{APP_USER, REPLICATION_USER, exporter_password, users_acl};
use crate::build::credentials::StoreCredentials;
use crate::build::keys::{
    EXPORTER_PASSWORD_FILE_KEY, OPERATOR_PASSWORD_KEY, PROBE_PASSWORD_KEY, REPLICATION_CONF_KEY,
    REPLICATION_PASSWORD_KEY, SENTINEL_PASSWORD_KEY, SENTINEL_USERS_ACL_KEY, USERS_ACL_KEY,
    VALKEY_SENTINEL_USERS_ACL_KEY,
};
use crate::build::meta::{ChildNames, Component, object_meta};
use crate::build::sentinel::{connection_secret_sentinel_entries, sentinel_users_acl};
use crate::build::statefulset::exporter_password_file;
use crate::crd::Engine;
use crate::password::Password;
use crate::settings::OperatorSettings;
use crate::validate::{REDIS_PORT, ValidatedStore};

// Connection Secret keys (the Service Binding spec's well-known entries).
pub const CONNECTION_SECRET_TYPE: &str = "servicebinding.io/redis";
pub const TYPE_KEY: &str = "type";
pub const PROVIDER_KEY: &str = "provider";
pub const HOST_KEY: &str = "host";
pub const PORT_KEY: &str = "port";
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const URI_KEY: &str = "uri";
pub const CA_CERT_KEY: &str = "ca.crt";
/// During a rotation: the previous application password, still accepted until it is retired.
pub const PREVIOUS_PASSWORD_KEY: &str = "previous-password";
pub const BINDING_TYPE: &str = "redis";
pub const BINDING_PROVIDER: &str = "sessionstore";

fn bytes(value: impl Into<String>) -> ByteString {
    ByteString(value.into().into_bytes())
}

/// Quotes a value for `redis.conf`-style files: double quotes, every byte that is not a letter or
/// digit as `\xHH`, so no value can end the line, the argument or the quoted string.
pub fn redis_config_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

/// What a replica needs to authenticate to its primary: included by `redis.conf`, kept here so
/// the ConfigMap never holds the password.
pub fn replication_conf(credentials: &StoreCredentials) -> String {
    format!(
        "masteruser {REPLICATION_USER}\nmasterauth {}\n",
        redis_config_quote(credentials.replication.expose())
    )
}

pub fn desired_internal_secret(store: &ValidatedStore, credentials: &StoreCredentials) -> Secret {
    let mut secret = Secret {
        metadata: object_meta(
            store,
            ChildNames::internal_secret(&store.name),
            Component::Credentials,
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                USERS_ACL_KEY.to_string(),
                bytes(users_acl(store, credentials)),
            ),
            (
                REPLICATION_CONF_KEY.to_string(),
                bytes(replication_conf(credentials)),
            ),
            (
                OPERATOR_PASSWORD_KEY.to_string(),
                bytes(credentials.operator.expose()),
            ),
            (
                REPLICATION_PASSWORD_KEY.to_string(),
                bytes(credentials.replication.expose()),
            ),
            (
                SENTINEL_PASSWORD_KEY.to_string(),
                bytes(credentials.sentinel.expose()),
            ),
            (
                PROBE_PASSWORD_KEY.to_string(),
                bytes(credentials.probe.expose()),
            ),
            // Always present, so turning the exporter on or off only changes the StatefulSet.
            (
                EXPORTER_PASSWORD_FILE_KEY.to_string(),
                bytes(exporter_password_file(
                    store,
                    &exporter_password(credentials),
                )),
            ),
        ])),
        ..Secret::default()
    };
    if store.is_highly_available()
        && let Some(data) = secret.data.as_mut()
    {
        // Sentinel's own users (hashed passwords), read through `aclfile` in sentinel.conf. Redis's
        // file stays in a Valkey store's Secret: the Redis pods of a store switching to Valkey
        // mount it until they are rolled.
        data.insert(
            SENTINEL_USERS_ACL_KEY.to_string(),
            bytes(sentinel_users_acl(credentials, Engine::Redis)),
        );
        if store.engine == Engine::Valkey {
            data.insert(
                VALKEY_SENTINEL_USERS_ACL_KEY.to_string(),
                bytes(sentinel_users_acl(credentials, Engine::Valkey)),
            );
        }
    }
    secret
}

/// The in-cluster DNS name applications connect to (the ClusterIP Service, primary only).
pub fn service_host(store: &ValidatedStore, settings: &OperatorSettings) -> String {
    format!(
        "{}.{}.svc.{}",
        ChildNames::service(&store.name),
        store.namespace,
        settings.cluster_domain
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for the userinfo of a URI.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The connection URI applications use: database 0, `rediss://` with TLS.
pub fn connection_uri(
    store: &ValidatedStore,
    settings: &OperatorSettings,
    password: &Password,
) -> String {
    let scheme = if store.tls.is_some() {
        "rediss"
    } else {
        "redis"
    };
    format!(
        "{scheme}://{APP_USER}:{}@{}:{REDIS_PORT}/0",
        percent_encode(password.expose()),
        service_host(store, settings)
    )
}

/// The internal Secret with `extra` keys merged in (a rotation's persisted state: no builder
/// writes those keys, so they replace nothing the builder wrote).
pub fn desired_internal_secret_with(
    store: &ValidatedStore,
    credentials: &StoreCredentials,
    extra: &BTreeMap<String, ByteString>,
) -> Secret {
    let mut secret = desired_internal_secret(store, credentials);
    secret
        .data
        .get_or_insert_with(BTreeMap::new)
        .extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    secret
}

/// The connection Secret with the TLS Secret's `ca.crt` (or without one when `ca_crt` is `None`).
pub fn desired_connection_secret_with_ca(
    store: &ValidatedStore,
    credentials: &StoreCredentials,
    settings: &OperatorSettings,
    ca_crt: Option<&ByteString>,
) -> Secret {
    let mut secret = desired_connection_secret(store, credentials, settings);
    set_ca_certificate(&mut secret, ca_crt);
    secret
}

/// The connection Secret (without `ca.crt`; see the module documentation).
pub fn desired_connection_secret(
    store: &ValidatedStore,
    credentials: &StoreCredentials,
    settings: &OperatorSettings,
) -> Secret {
    let mut data = BTreeMap::from([
        (TYPE_KEY.to_string(), bytes(BINDING_TYPE)),
        (PROVIDER_KEY.to_string(), bytes(BINDING_PROVIDER)),
        (HOST_KEY.to_string(), bytes(service_host(store, settings))),
        (PORT_KEY.to_string(), bytes(REDIS_PORT.to_string())),
        (USERNAME_KEY.to_string(), bytes(APP_USER)),
        (PASSWORD_KEY.to_string(), bytes(credentials.app.expose())),
        (
            URI_KEY.to_string(),
            bytes(connection_uri(store, settings, &credentials.app)),
        ),
    ]);
    if let Some(previous) = &credentials.app_previous {
        data.insert(PREVIOUS_PASSWORD_KEY.to_string(), bytes(previous.expose()));
    }
    // Sentinel-aware clients may ask the Sentinels for the primary (empty when standalone).
    for (key, value) in connection_secret_sentinel_entries(store, settings) {
        data.insert(key, bytes(value));
    }
    Secret {
        metadata: object_meta(
            store,
            ChildNames::connection_secret(&store.name),
            Component::Credentials,
        ),
        type_: Some(CONNECTION_SECRET_TYPE.into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Copies the CA certificate (the TLS Secret's `ca.crt`) into a connection Secret, or removes it
/// when there is none, so applications can verify the server.
pub fn set_ca_certificate(connection: &mut Secret, ca_crt: Option<&ByteString>) {
    let data = connection.data.get_or_insert_with(BTreeMap::new);
    match ca_crt {
        Some(ca) => {
            data.insert(CA_CERT_KEY.to_string(), ca.clone());
        }
        None => {
            data.remove(CA_CERT_KEY);
        }
    }
}

/// Which passwords `StoreCredentials::from_secrets` had to generate (absent or unusable): the
/// controller must create or complete those Secrets, and only those.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratedCredentials {
    pub app: bool,
    pub operator: bool,
    pub replication: bool,
    pub sentinel: bool,
    pub probe: bool,
}

impl GeneratedCredentials {
    pub fn any(&self) -> bool {
        self.app || self.operator || self.replication || self.sentinel || self.probe
    }
}

/// A password from a Secret's `data`: present, UTF-8 and not empty, or `None`.
fn read_password(secret: Option<&Secret>, key: &str) -> Option<Password> {
    let value = secret?.data.as_ref()?.get(key)?;
    let text = String::from_utf8(value.0.clone()).ok()?;
    (!text.is_empty()).then(|| Password::from_secret_value(text))
}

impl StoreCredentials {
    /// The credentials of an existing store read back from its Secrets, generating only what is
    /// missing (a new store, or a key someone deleted), so a reconcile, a restart or an upgrade
    /// never replaces a password that exists.
    ///
    /// The application password comes from `existing_app_password` (the user's
    /// `spec.auth.existingSecret`) when given, else from the connection Secret. The previous
    /// password (a rotation in progress) is carried over from the connection Secret as is;
    /// deciding when a rotation starts or ends is the controller's business.
    pub fn from_secrets(
        connection: Option<&Secret>,
        internal: Option<&Secret>,
        existing_app_password: Option<Password>,
    ) -> (StoreCredentials, GeneratedCredentials) {
        let mut generated = GeneratedCredentials::default();
        let or_generate = |found: Option<Password>, flag: &mut bool| {
            found.unwrap_or_else(|| {
                *flag = true;
                Password::generate()
            })
        };
        let app = or_generate(
            existing_app_password.or_else(|| read_password(connection, PASSWORD_KEY)),
            &mut generated.app,
        );
        let operator = or_generate(
            read_password(internal, OPERATOR_PASSWORD_KEY),
            &mut generated.operator,
        );
        let replication = or_generate(
            read_password(internal, REPLICATION_PASSWORD_KEY),
            &mut generated.replication,
        );
        let sentinel = or_generate(
            read_password(internal, SENTINEL_PASSWORD_KEY),
            &mut generated.sentinel,
        );
        let probe = or_generate(
            read_password(internal, PROBE_PASSWORD_KEY),
            &mut generated.probe,
        );
        let app_previous = read_password(connection, PREVIOUS_PASSWORD_KEY).filter(|p| *p != app);
        (
            StoreCredentials {
                app,
                app_previous,
                operator,
                replication,
                sentinel,
                probe,
            },
            generated,
        )
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::crd::SessionStore;
    use crate::validate::validate;

    fn store(extra_spec: &str) -> ValidatedStore {
        let yaml = format!(
            "apiVersion: sessionstore.dev/v1alpha1\nkind: SessionStore\n\
             metadata: {{name: checkout, namespace: shop, uid: 0c7a-uid}}\n\
             spec:\n  clients: {{podSelector: {{}}}}\n{extra_spec}"
        );
        let store: SessionStore = serde_yaml::from_str(&yaml).expect("test manifest");
        validate(&store).expect("valid test manifest")
    }

    fn credentials(previous: Option<&str>) -> StoreCredentials {
        StoreCredentials {
            app: Password::from_secret_value("appPW".into()),
            app_previous: previous.map(|p| Password::from_secret_value(p.into())),
            operator: Password::from_secret_value("opPW".into()),
            replication: Password::from_secret_value("replPW".into()),
            sentinel: Password::from_secret_value("sentPW".into()),
            probe: Password::from_secret_value("probePW".into()),
        }
    }

    fn expected_meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "sessionstore".to_string(),
                ),
                (
                    "app.kubernetes.io/instance".to_string(),
                    "checkout".to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "sessionstore-operator".to_string(),
                ),
                (
                    "app.kubernetes.io/component".to_string(),
                    "credentials".to_string(),
                ),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "sessionstore.dev/v1alpha1".into(),
                kind: "SessionStore".into(),
                name: "checkout".into(),
                uid: "0c7a-uid".into(),
                controller: Some(true),
                // kube's `controller_owner_ref` leaves it unset (no finalizer permission needed).
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        }
    }

    fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, ByteString>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), bytes(*v)))
                .collect(),
        )
    }

    /// Compares Secrets without `{:?}`-printing their values on failure (only the differing keys).
    fn assert_same_secret(actual: &Secret, expected: &Secret) {
        assert_eq!(actual.metadata, expected.metadata);
        assert_eq!(actual.type_, expected.type_);
        assert_eq!(actual.string_data, None);
        let keys = |s: &Secret| {
            s.data
                .as_ref()
                .map(|d| d.keys().cloned().collect::<Vec<_>>())
        };
        assert_eq!(keys(actual), keys(expected));
        for (key, value) in expected.data.iter().flatten() {
            let got = actual.data.as_ref().and_then(|d| d.get(key));
            assert!(got == Some(value), "value of {key} differs");
        }
        assert!(
            actual == expected,
            "Secrets differ outside metadata, type and data"
        );
    }

    #[test]
    fn whole_internal_secret() {
        let store = store("");
        let creds = credentials(None);
        let expected = Secret {
            metadata: expected_meta("checkout-internal"),
            type_: Some("Opaque".into()),
            data: data(&[
                ("users.acl", &users_acl(&store, &creds)),
                (
                    "replication.conf",
                    "masteruser replication\nmasterauth \"replPW\"\n",
                ),
                ("operator-password", "opPW"),
                ("replication-password", "replPW"),
                ("sentinel-password", "sentPW"),
                ("probe-password", "probePW"),
                (
                    "exporter-password.json",
                    &exporter_password_file(&store, &exporter_password(&creds)),
                ),
                // Production defaults to 3 replicas with Sentinel.
                (
                    "sentinel-users.acl",
                    &sentinel_users_acl(&creds, Engine::Redis),
                ),
            ]),
            ..Secret::default()
        };
        assert_same_secret(&desired_internal_secret(&store, &creds), &expected);
    }

    #[test]
    fn highly_available_internal_secret_adds_sentinel_users_only() {
        let standalone = store("  replicas: 1\n");
        let ha = store("  replicas: 3\n");
        let creds = credentials(Some("oldPW"));
        let keys = |s: &Secret| {
            s.data
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        };
        let mut expected = keys(&desired_internal_secret(&standalone, &creds));
        assert!(!expected.contains(&"sentinel-users.acl".to_string()));
        expected.push("sentinel-users.acl".to_string());
        expected.sort();
        let secret = desired_internal_secret(&ha, &creds);
        assert_eq!(keys(&secret), expected);
        let acl = secret
            .data
            .as_ref()
            .and_then(|d| d.get("sentinel-users.acl"))
            .map(|v| v.0.clone());
        assert!(acl == Some(sentinel_users_acl(&creds, Engine::Redis).into_bytes()));
    }

    #[test]
    fn a_valkey_store_adds_valkeys_sentinel_users_beside_redis_ones() {
        let creds = credentials(None);
        let file = |s: &Secret, key: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| String::from_utf8_lossy(&v.0).to_string())
        };
        let valkey = desired_internal_secret(&store("  replicas: 3\n  engine: valkey\n"), &creds);
        assert_eq!(
            file(&valkey, "sentinel-users-valkey.acl"),
            Some(sentinel_users_acl(&creds, Engine::Valkey))
        );
        // Still there for the Redis pods of a store switching to Valkey.
        assert_eq!(
            file(&valkey, "sentinel-users.acl"),
            Some(sentinel_users_acl(&creds, Engine::Redis))
        );
        let redis = desired_internal_secret(&store("  replicas: 3\n"), &creds);
        assert_eq!(file(&redis, "sentinel-users-valkey.acl"), None);
        let standalone =
            desired_internal_secret(&store("  replicas: 1\n  engine: valkey\n"), &creds);
        assert_eq!(file(&standalone, "sentinel-users-valkey.acl"), None);
    }

    #[test]
    fn whole_connection_secret() {
        let expected = Secret {
            metadata: expected_meta("checkout-connection"),
            type_: Some("servicebinding.io/redis".into()),
            data: data(&[
                ("type", "redis"),
                ("provider", "sessionstore"),
                ("host", "checkout.shop.svc.cluster.local"),
                ("port", "6379"),
                ("username", "app"),
                ("password", "appPW"),
                (
                    "uri",
                    "redis://app:appPW@checkout.shop.svc.cluster.local:6379/0",
                ),
                // Production defaults to 3 replicas with Sentinel.
                (
                    "sentinel-addresses",
                    "checkout-0.checkout-headless.shop.svc.cluster.local:26379,\
                     checkout-1.checkout-headless.shop.svc.cluster.local:26379,\
                     checkout-2.checkout-headless.shop.svc.cluster.local:26379",
                ),
                ("sentinel-master-name", "checkout"),
            ]),
            ..Secret::default()
        };
        let actual =
            desired_connection_secret(&store(""), &credentials(None), &OperatorSettings::default());
        assert_same_secret(&actual, &expected);
    }

    #[test]
    fn connection_secret_with_tls_rotation_and_ca() {
        let settings = OperatorSettings {
            cluster_domain: "k8s.example".into(),
            ..OperatorSettings::default()
        };
        let store = store("  replicas: 1\n  tls: {enabled: true, secretName: checkout-tls}\n");
        let mut actual = desired_connection_secret(&store, &credentials(Some("oldPW")), &settings);
        set_ca_certificate(&mut actual, Some(&bytes("-----BEGIN CERTIFICATE-----\n")));
        let expected = Secret {
            metadata: expected_meta("checkout-connection"),
            type_: Some("servicebinding.io/redis".into()),
            data: data(&[
                ("type", "redis"),
                ("provider", "sessionstore"),
                ("host", "checkout.shop.svc.k8s.example"),
                ("port", "6379"),
                ("username", "app"),
                ("password", "appPW"),
                ("previous-password", "oldPW"),
                (
                    "uri",
                    "rediss://app:appPW@checkout.shop.svc.k8s.example:6379/0",
                ),
                ("ca.crt", "-----BEGIN CERTIFICATE-----\n"),
            ]),
            ..Secret::default()
        };
        assert_same_secret(&actual, &expected);
        set_ca_certificate(&mut actual, None);
        assert!(
            !actual
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key("ca.crt"))
        );
    }

    #[test]
    fn uri_percent_encodes_the_password() {
        let password = Password::from_secret_value("p@ss:w/rd %é~".into());
        let uri = connection_uri(&store(""), &OperatorSettings::default(), &password);
        assert_eq!(
            uri,
            "redis://app:p%40ss%3Aw%2Frd%20%25%C3%A9~@checkout.shop.svc.cluster.local:6379/0"
        );
    }

    #[test]
    fn replication_conf_quotes_every_special_byte() {
        let mut creds = credentials(None);
        creds.replication = Password::from_secret_value("a b\"\nrequirepass x\\".into());
        assert_eq!(
            replication_conf(&creds),
            "masteruser replication\nmasterauth \"a\\x20b\\x22\\x0arequirepass\\x20x\\x5c\"\n"
        );
    }

    #[test]
    fn from_secrets_reads_back_what_the_builders_wrote() {
        let store = store("");
        let creds = credentials(Some("oldPW"));
        let connection = desired_connection_secret(&store, &creds, &OperatorSettings::default());
        let internal = desired_internal_secret(&store, &creds);
        let (read, generated) =
            StoreCredentials::from_secrets(Some(&connection), Some(&internal), None);
        assert!(read == creds, "credentials read back differ");
        assert_eq!(generated, GeneratedCredentials::default());
    }

    #[test]
    fn from_secrets_generates_only_what_is_missing() {
        let store = store("");
        let creds = credentials(None);
        let mut internal = desired_internal_secret(&store, &creds);
        if let Some(d) = internal.data.as_mut() {
            d.remove(SENTINEL_PASSWORD_KEY);
            d.insert(OPERATOR_PASSWORD_KEY.into(), ByteString(Vec::new()));
        }
        let (read, generated) = StoreCredentials::from_secrets(None, Some(&internal), None);
        assert_eq!(
            generated,
            GeneratedCredentials {
                app: true,
                operator: true,
                replication: false,
                sentinel: true,
                probe: false,
            }
        );
        assert!(read.replication == creds.replication);
        assert!(read.operator != creds.operator && !read.operator.expose().is_empty());
        assert!(read.app_previous.is_none());

        let (fresh, generated) = StoreCredentials::from_secrets(None, None, None);
        assert!(
            generated.app
                && generated.operator
                && generated.replication
                && generated.sentinel
                && generated.probe
        );
        let all = [
            &fresh.app,
            &fresh.operator,
            &fresh.replication,
            &fresh.sentinel,
            &fresh.probe,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(a != b, "two users got the same password");
            }
        }
    }

    #[test]
    fn existing_app_password_wins_over_the_connection_secret() {
        let store = store("");
        let connection =
            desired_connection_secret(&store, &credentials(None), &OperatorSettings::default());
        let mine = Password::from_secret_value("users-own".into());
        let (read, generated) =
            StoreCredentials::from_secrets(Some(&connection), None, Some(mine.clone()));
        assert!(read.app == mine);
        assert!(!generated.app);
    }

    #[test]
    fn no_password_in_the_config_map() {
        let store = store("  replicas: 3\n  tls: {enabled: true, secretName: t}\n");
        let creds = credentials(Some("oldPW"));
        let conf = crate::build::config_map::redis_conf(&store);
        for p in [
            &creds.app,
            &creds.operator,
            &creds.replication,
            &creds.sentinel,
            &creds.probe,
        ] {
            assert!(!conf.contains(p.expose()));
        }
        assert!(
            !conf.contains("oldPW")
                && !conf.contains("masterauth")
                && !conf.contains("requirepass")
        );
    }
}
