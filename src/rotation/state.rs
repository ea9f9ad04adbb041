//! The rotation state persisted in the internal Secret: the only memory a rotation has, so an
//! operator restarted at any point reads it back and resumes where the last persisted step left off.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::ByteString;

use crate::build::StoreCredentials;
use crate::password::Password;
use crate::rotation::error::RotationError;

/// Internal Secret key: the `spec.auth.rotation` value the app password belongs to (or is being
/// rotated to). Absent when no rotation value was ever set.
pub const ROTATION_ID_KEY: &str = "rotation-id";
/// Internal Secret key: where the rotation stands, one of the [`Stage`] names or `stable`.
pub const ROTATION_PHASE_KEY: &str = "rotation-phase";
/// Internal Secret key: RFC 3339 time the rotation began.
pub const ROTATION_STARTED_AT_KEY: &str = "rotation-started-at";
/// Internal Secret key: RFC 3339 time after which the previous password is retired.
pub const PREVIOUS_PASSWORD_EXPIRES_AT_KEY: &str = "previous-password-expires-at";
/// Internal Secret key: the new app password, persisted before it is used anywhere.
pub const NEXT_PASSWORD_KEY: &str = "rotation-next-password";
/// Internal Secret key: the app password being replaced, kept until it is retired.
pub const PREVIOUS_PASSWORD_KEY: &str = "rotation-previous-password";

/// Every key this module owns in the internal Secret (the controller merges them into its data).
pub const ROTATION_KEYS: [&str; 6] = [
    ROTATION_ID_KEY,
    ROTATION_PHASE_KEY,
    ROTATION_STARTED_AT_KEY,
    PREVIOUS_PASSWORD_EXPIRES_AT_KEY,
    NEXT_PASSWORD_KEY,
    PREVIOUS_PASSWORD_KEY,
];

const STABLE: &str = "stable";

/// Where an in-progress rotation stands. Each stage names what has been done and persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Both passwords are in the persisted `users.acl`; the new one is not yet live on the pods.
    NewPasswordPersisted,
    /// Every pod accepts both passwords; the connection Secret still carries the old one.
    NewPasswordLive,
    /// The connection Secret carries the new password (and the old under `previous-password`);
    /// the old one keeps working until `previous_password_expires_at`.
    Published,
    /// The old password is refused by every pod and gone from `users.acl`; only cleanup is left.
    OldPasswordRetired,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::NewPasswordPersisted => "new-password-persisted",
            Stage::NewPasswordLive => "new-password-live",
            Stage::Published => "published",
            Stage::OldPasswordRetired => "old-password-retired",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [
            Stage::NewPasswordPersisted,
            Stage::NewPasswordLive,
            Stage::Published,
            Stage::OldPasswordRetired,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// A rotation between `Begin` and `Finish`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rotation {
    /// The `spec.auth.rotation` value being rotated to.
    pub rotation: Option<String>,
    pub stage: Stage,
    pub started_at: DateTime<Utc>,
    /// Set when the new password is published: the end of the grace period.
    pub previous_password_expires_at: Option<DateTime<Utc>>,
    pub new_password: Password,
    pub old_password: Password,
}

/// What the internal Secret says about the app password.
#[derive(Clone, Debug, PartialEq)]
pub enum RotationState {
    /// One app password (the connection Secret's); `rotation` is the value it belongs to.
    Stable {
        rotation: Option<String>,
    },
    InProgress(Rotation),
}

impl Default for RotationState {
    fn default() -> Self {
        RotationState::Stable { rotation: None }
    }
}

impl RotationState {
    /// The state to write into a newly created internal Secret: the password generated with the
    /// store belongs to the rotation value set at creation, so creating a store never rotates.
    pub fn initial(spec_rotation: Option<&str>) -> Self {
        RotationState::Stable {
            rotation: spec_rotation.map(str::to_owned),
        }
    }

    /// Reads the state back from the internal Secret's data. Missing keys mean a store that never
    /// rotated (Stable); keys that are present but unreadable are an error, never a guess.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, RotationError> {
        let text = |key: &'static str| -> Result<Option<String>, RotationError> {
            match data.get(key) {
                None => Ok(None),
                Some(bytes) => String::from_utf8(bytes.0.clone()).map(Some).map_err(|_| {
                    RotationError::CorruptState {
                        key,
                        reason: "not UTF-8".into(),
                    }
                }),
            }
        };
        let required = |key: &'static str| -> Result<String, RotationError> {
            text(key)?.ok_or(RotationError::CorruptState {
                key,
                reason: "missing while a rotation is in progress".into(),
            })
        };
        let time = |key: &'static str, value: &str| -> Result<DateTime<Utc>, RotationError> {
            DateTime::parse_from_rfc3339(value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| RotationError::CorruptState {
                    key,
                    reason: format!("not an RFC 3339 time: {e}"),
                })
        };

        let rotation = text(ROTATION_ID_KEY)?;
        let phase = text(ROTATION_PHASE_KEY)?;
        let stage = match phase.as_deref() {
            None | Some(STABLE) => return Ok(RotationState::Stable { rotation }),
            Some(other) => Stage::parse(other).ok_or_else(|| RotationError::CorruptState {
                key: ROTATION_PHASE_KEY,
                // A phase name is not secret, and naming it helps whoever edited the Secret.
                reason: format!("unknown phase {other:?}"),
            })?,
        };
        let started_at = time(ROTATION_STARTED_AT_KEY, &required(ROTATION_STARTED_AT_KEY)?)?;
        let previous_password_expires_at = match text(PREVIOUS_PASSWORD_EXPIRES_AT_KEY)? {
            Some(value) => Some(time(PREVIOUS_PASSWORD_EXPIRES_AT_KEY, &value)?),
            None if matches!(stage, Stage::Published | Stage::OldPasswordRetired) => {
                return Err(RotationError::CorruptState {
                    key: PREVIOUS_PASSWORD_EXPIRES_AT_KEY,
                    reason: "missing after the new password was published".into(),
                });
            }
            None => None,
        };
        let password = |key: &'static str| -> Result<Password, RotationError> {
            let value = required(key)?;
            if value.is_empty() {
                return Err(RotationError::CorruptState {
                    key,
                    reason: "empty".into(),
                });
            }
            Ok(Password::from_secret_value(value))
        };
        Ok(RotationState::InProgress(Rotation {
            rotation,
            stage,
            started_at,
            previous_password_expires_at,
            new_password: password(NEXT_PASSWORD_KEY)?,
            old_password: password(PREVIOUS_PASSWORD_KEY)?,
        }))
    }

    /// The rotation keys of the internal Secret for this state. Keys absent from the map must be
    /// absent from the Secret (the controller drops every [`ROTATION_KEYS`] entry not returned).
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_string(), ByteString(value.as_bytes().to_vec()));
        };
        match self {
            RotationState::Stable { rotation } => {
                put(ROTATION_PHASE_KEY, STABLE);
                if let Some(rotation) = rotation {
                    put(ROTATION_ID_KEY, rotation);
                }
            }
            RotationState::InProgress(r) => {
                put(ROTATION_PHASE_KEY, r.stage.as_str());
                if let Some(rotation) = &r.rotation {
                    put(ROTATION_ID_KEY, rotation);
                }
                put(ROTATION_STARTED_AT_KEY, &rfc3339(r.started_at));
                if let Some(expires) = r.previous_password_expires_at {
                    put(PREVIOUS_PASSWORD_EXPIRES_AT_KEY, &rfc3339(expires));
                }
                put(NEXT_PASSWORD_KEY, r.new_password.expose());
                put(PREVIOUS_PASSWORD_KEY, r.old_password.expose());
            }
        }
        data
    }

    /// Replaces the internal Secret's rotation keys with this state's, leaving its other keys
    /// (`users.acl`, the operator's credentials) alone.
    pub fn merge_into_secret_data(&self, data: &mut BTreeMap<String, ByteString>) {
        for key in ROTATION_KEYS {
            data.remove(key);
        }
        data.extend(self.to_secret_data());
    }

    /// The app passwords the ACL file (`users.acl`) must hold in this state, as the credentials the
    /// builders take: `base` carries the other users' passwords and, in `app`, the connection
    /// Secret's current password.
    ///
    /// Stable: the current one. From `Begin` until the old one is retired: the new and the old,
    /// so a pod restarted at any point accepts both. After retirement: the new one only.
    pub fn acl_credentials(&self, base: &StoreCredentials) -> StoreCredentials {
        let (app, app_previous) = match self {
            RotationState::Stable { .. } => (base.app.clone(), None),
            RotationState::InProgress(r) => match r.stage {
                Stage::NewPasswordPersisted | Stage::NewPasswordLive | Stage::Published => {
                    (r.new_password.clone(), Some(r.old_password.clone()))
                }
                Stage::OldPasswordRetired => (r.new_password.clone(), None),
            },
        };
        StoreCredentials {
            app,
            app_previous,
            ..base.clone()
        }
    }

    /// The rotation value the current (or incoming) app password belongs to.
    pub fn rotation(&self) -> Option<&str> {
        match self {
            RotationState::Stable { rotation } => rotation.as_deref(),
            RotationState::InProgress(r) => r.rotation.as_deref(),
        }
    }
}

/// Kubernetes' own time format (second precision, `Z`), as in `status` and `metav1.Time`.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rotation(stage: Stage) -> RotationState {
        RotationState::InProgress(Rotation {
            rotation: Some("2025-q3".into()),
            stage,
            started_at: at("2025-07-01T10:00:00Z"),
            previous_password_expires_at: match stage {
                Stage::Published | Stage::OldPasswordRetired => Some(at("2025-07-01T10:10:00Z")),
                _ => None,
            },
            new_password: Password::from_secret_value("new-pw".into()),
            old_password: Password::from_secret_value("old-pw".into()),
        })
    }

    #[test]
    fn every_state_round_trips_through_the_secret() {
        let states = [
            RotationState::Stable { rotation: None },
            RotationState::Stable {
                rotation: Some("v1".into()),
            },
            rotation(Stage::NewPasswordPersisted),
            rotation(Stage::NewPasswordLive),
            rotation(Stage::Published),
            rotation(Stage::OldPasswordRetired),
        ];
        for state in states {
            let data = state.to_secret_data();
            assert_eq!(RotationState::from_secret_data(&data).unwrap(), state);
        }
    }

    #[test]
    fn a_secret_without_rotation_keys_is_stable_without_a_rotation_value() {
        let data = BTreeMap::from([("users.acl".to_string(), ByteString(b"user app".to_vec()))]);
        assert_eq!(
            RotationState::from_secret_data(&data).unwrap(),
            RotationState::Stable { rotation: None }
        );
    }

    #[test]
    fn merging_replaces_only_rotation_keys() {
        let mut data = rotation(Stage::Published).to_secret_data();
        data.insert("users.acl".into(), ByteString(b"acl".to_vec()));
        RotationState::Stable {
            rotation: Some("2025-q3".into()),
        }
        .merge_into_secret_data(&mut data);
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, vec![ROTATION_ID_KEY, ROTATION_PHASE_KEY, "users.acl"]);
    }

    #[test]
    fn unreadable_state_is_an_error_that_names_the_key_not_the_value() {
        let mut data = rotation(Stage::Published).to_secret_data();
        data.remove(NEXT_PASSWORD_KEY);
        let err = RotationState::from_secret_data(&data)
            .unwrap_err()
            .to_string();
        assert!(err.contains(NEXT_PASSWORD_KEY), "{err}");
        assert!(!err.contains("old-pw"), "{err}");

        let mut data = rotation(Stage::Published).to_secret_data();
        data.insert(ROTATION_PHASE_KEY.into(), ByteString(b"half-done".to_vec()));
        assert!(RotationState::from_secret_data(&data).is_err());

        let mut data = rotation(Stage::Published).to_secret_data();
        data.remove(PREVIOUS_PASSWORD_EXPIRES_AT_KEY);
        assert!(RotationState::from_secret_data(&data).is_err());
    }

    #[test]
    fn acl_credentials_hold_both_passwords_exactly_between_begin_and_retirement() {
        let base = StoreCredentials {
            app: Password::from_secret_value("old-pw".into()),
            ..StoreCredentials::generate()
        };
        let new = Password::from_secret_value("new-pw".into());
        let old = Password::from_secret_value("old-pw".into());

        let stable = RotationState::Stable { rotation: None }.acl_credentials(&base);
        assert_eq!((stable.app, stable.app_previous), (old.clone(), None));
        for stage in [
            Stage::NewPasswordPersisted,
            Stage::NewPasswordLive,
            Stage::Published,
        ] {
            let c = rotation(stage).acl_credentials(&base);
            assert_eq!(
                (c.app, c.app_previous),
                (new.clone(), Some(old.clone())),
                "{stage:?}"
            );
            assert_eq!(c.operator, base.operator);
        }
        let retired = rotation(Stage::OldPasswordRetired).acl_credentials(&base);
        assert_eq!((retired.app, retired.app_previous), (new, None));
    }
}
