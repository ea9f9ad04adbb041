//! The rotation state machine: from the spec, the persisted state and the clock, the one next step.
//! Pure (the new password comes from the caller's generator), so every transition is unit-tested.
//!
//! Stable --Begin--> NewPasswordPersisted --AddNewPasswordLive--> NewPasswordLive
//!   --PublishToConnectionSecret--> Published --(grace over) RetireOldPasswordLive--> OldPasswordRetired
//!   --Finish--> Stable
//!
//! The controller performs `step`, then persists `then` (with the `users.acl` of
//! [`RotationState::acl_credentials`]). A crash between the two repeats the step, which is
//! idempotent; a crash after persisting moves on. Nothing else is remembered.

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use tracing::{debug, trace};

use crate::crd::AuthStatus;
use crate::password::Password;
use crate::rotation::state::{Rotation, RotationState, Stage, rfc3339};

/// Everything the plan depends on.
#[derive(Clone, Debug)]
pub struct RotationInput<'a> {
    /// `spec.auth.rotation`. `None` never starts a rotation (removing the field is not a request).
    pub desired_rotation: Option<&'a str>,
    /// `ValidatedStore.auth.rotation_grace_period_seconds`.
    pub grace_period_seconds: i64,
    /// With `spec.auth.existingSecret`: the user's password. A change of it (not of
    /// `desired_rotation`, which the user cannot pair with a password) starts a rotation to it.
    pub supplied_password: Option<&'a Password>,
    /// Read from the internal Secret.
    pub state: &'a RotationState,
    /// The connection Secret's `password`: the password applications use in the Stable phase.
    pub connection_password: &'a Password,
    pub now: DateTime<Utc>,
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Stable and nothing asked for.
    Nothing,
    /// Persist `then` (it holds the new password, and `users.acl` must hold both hashes) in the
    /// internal Secret before the new password is used anywhere.
    Begin,
    /// `ACL SETUSER app #<hash>` on every pod ([`crate::rotation::LiveAcl::add_app_password`]).
    AddNewPasswordLive { password: Password },
    /// Write the connection Secret: `password` = `password`, `previous-password` = `previous`
    /// (and the `uri` built from `password`).
    PublishToConnectionSecret {
        password: Password,
        previous_password: Password,
    },
    /// Grace period: come back at this time (requeue); the old password still works.
    WaitUntil(DateTime<Utc>),
    /// `ACL SETUSER app !<hash>` on every pod ([`crate::rotation::LiveAcl::remove_app_password`]).
    RetireOldPasswordLive { password: Password },
    /// Write the connection Secret without `previous-password` (password = `password`), then
    /// persist `then` (Stable).
    Finish { password: Password },
}

impl Step {
    /// The step's name for logs, Events and metrics (no data, so nothing secret).
    pub fn name(&self) -> &'static str {
        match self {
            Step::Nothing => "Nothing",
            Step::Begin => "Begin",
            Step::AddNewPasswordLive { .. } => "AddNewPasswordLive",
            Step::PublishToConnectionSecret { .. } => "PublishToConnectionSecret",
            Step::WaitUntil(_) => "WaitUntil",
            Step::RetireOldPasswordLive { .. } => "RetireOldPasswordLive",
            Step::Finish { .. } => "Finish",
        }
    }
}

/// The next step and the state to persist once it has succeeded (`None`: nothing to persist).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub step: Step,
    pub then: Option<RotationState>,
}

/// Decides the next step. `generate` is called only when a rotation begins without a supplied
/// password (the controller passes `Password::generate`, the CSPRNG).
pub fn plan(input: &RotationInput<'_>, generate: impl FnOnce() -> Password) -> Plan {
    let result = match input.state {
        RotationState::Stable { rotation } => plan_stable(input, rotation.as_deref(), generate),
        RotationState::InProgress(r) => plan_in_progress(input, r),
    };
    debug!(
        step = result.step.name(),
        phase = phase_name(input.state, input.now),
        rotation = input.state.rotation().unwrap_or(""),
        "rotation plan"
    );
    result
}

fn plan_stable(
    input: &RotationInput<'_>,
    persisted: Option<&str>,
    generate: impl FnOnce() -> Password,
) -> Plan {
    let (rotation, new_password) = match input.supplied_password {
        // existingSecret: the user's Secret is the source; rotate when it no longer matches.
        Some(supplied) if supplied != input.connection_password => {
            (persisted.map(str::to_owned), supplied.clone())
        }
        Some(_) => return nothing(),
        None => match input.desired_rotation {
            Some(desired) if Some(desired) != persisted => (Some(desired.to_owned()), generate()),
            _ => return nothing(),
        },
    };
    trace!(
        rotation = rotation.as_deref().unwrap_or(""),
        "rotation requested"
    );
    Plan {
        step: Step::Begin,
        then: Some(RotationState::InProgress(Rotation {
            rotation,
            stage: Stage::NewPasswordPersisted,
            started_at: input.now,
            previous_password_expires_at: None,
            new_password,
            old_password: input.connection_password.clone(),
        })),
    }
}

/// A rotation in progress always finishes before the next one starts, whatever the spec says now:
/// abandoning it half-way would leave applications holding a password about to be refused.
fn plan_in_progress(input: &RotationInput<'_>, r: &Rotation) -> Plan {
    let advance = |stage: Stage, expires: Option<DateTime<Utc>>| {
        Some(RotationState::InProgress(Rotation {
            stage,
            previous_password_expires_at: expires,
            ..r.clone()
        }))
    };
    match r.stage {
        Stage::NewPasswordPersisted => Plan {
            step: Step::AddNewPasswordLive {
                password: r.new_password.clone(),
            },
            then: advance(Stage::NewPasswordLive, None),
        },
        Stage::NewPasswordLive => Plan {
            step: Step::PublishToConnectionSecret {
                password: r.new_password.clone(),
                previous_password: r.old_password.clone(),
            },
            // The grace period starts when applications can first see the new password.
            then: advance(
                Stage::Published,
                Some(ceil_to_second(
                    input.now + TimeDelta::seconds(input.grace_period_seconds.max(0)),
                )),
            ),
        },
        Stage::Published => match r.previous_password_expires_at {
            Some(expires) if input.now < expires => Plan {
                step: Step::WaitUntil(expires),
                then: None,
            },
            expires => Plan {
                step: Step::RetireOldPasswordLive {
                    password: r.old_password.clone(),
                },
                then: advance(Stage::OldPasswordRetired, expires),
            },
        },
        Stage::OldPasswordRetired => Plan {
            step: Step::Finish {
                password: r.new_password.clone(),
            },
            then: Some(RotationState::Stable {
                rotation: r.rotation.clone(),
            }),
        },
    }
}

/// Times are persisted with second precision; rounding up keeps the grace period at least as long
/// as asked instead of up to a second shorter.
fn ceil_to_second(time: DateTime<Utc>) -> DateTime<Utc> {
    match time.with_nanosecond(0) {
        Some(whole) if whole < time => whole + TimeDelta::seconds(1),
        Some(whole) => whole,
        None => time,
    }
}

fn nothing() -> Plan {
    Plan {
        step: Step::Nothing,
        then: None,
    }
}

fn phase_name(state: &RotationState, now: DateTime<Utc>) -> &'static str {
    match state {
        RotationState::Stable { .. } => "Stable",
        RotationState::InProgress(r) => match (r.stage, r.previous_password_expires_at) {
            (Stage::OldPasswordRetired, _) => "Retiring",
            (Stage::Published, Some(expires)) if now >= expires => "Retiring",
            _ => "Rotating",
        },
    }
}

/// `status.auth`: the phase and times of the rotation, never a password.
/// `Rotating` while both passwords are valid, `Retiring` once the grace period is over and the old
/// password is being removed, `Stable` otherwise.
pub fn auth_status(state: &RotationState, now: DateTime<Utc>) -> AuthStatus {
    match state {
        RotationState::Stable { rotation } => AuthStatus {
            rotation: rotation.clone(),
            phase: Some(phase_name(state, now).into()),
            rotation_started_at: None,
            previous_password_expires_at: None,
        },
        RotationState::InProgress(r) => AuthStatus {
            rotation: r.rotation.clone(),
            phase: Some(phase_name(state, now).into()),
            rotation_started_at: Some(rfc3339(r.started_at)),
            previous_password_expires_at: r.previous_password_expires_at.map(rfc3339),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn pw(s: &str) -> Password {
        Password::from_secret_value(s.into())
    }

    fn input<'a>(
        state: &'a RotationState,
        desired: Option<&'a str>,
        connection: &'a Password,
        now: &str,
    ) -> RotationInput<'a> {
        RotationInput {
            desired_rotation: desired,
            grace_period_seconds: 600,
            supplied_password: None,
            state,
            connection_password: connection,
            now: at(now),
        }
    }

    fn no_generate() -> Password {
        panic!("must not generate a password here")
    }

    #[test]
    fn stable_with_the_same_or_no_rotation_value_does_nothing() {
        let old = pw("old");
        for (persisted, desired) in [(None, None), (Some("v1"), Some("v1")), (Some("v1"), None)] {
            let state = RotationState::Stable {
                rotation: persisted.map(str::to_owned),
            };
            let p = plan(
                &input(&state, desired, &old, "2025-07-01T10:00:00Z"),
                no_generate,
            );
            assert_eq!(
                p,
                Plan {
                    step: Step::Nothing,
                    then: None
                }
            );
        }
    }

    #[test]
    fn a_full_rotation_walks_every_step_in_order() {
        let old = pw("old");
        let mut state = RotationState::Stable {
            rotation: Some("v1".into()),
        };
        let mut steps = Vec::new();
        let mut now = at("2025-07-01T10:00:00Z");
        for _ in 0..10 {
            let p = plan(
                &RotationInput {
                    now,
                    ..input(&state, Some("v2"), &old, "2025-07-01T10:00:00Z")
                },
                || pw("new"),
            );
            if p.step == Step::Nothing {
                break;
            }
            steps.push(p.step.clone());
            match p.then {
                Some(then) => state = then,
                None => now += TimeDelta::seconds(601),
            }
        }
        let expires = at("2025-07-01T10:10:00Z");
        assert_eq!(
            steps,
            vec![
                Step::Begin,
                Step::AddNewPasswordLive {
                    password: pw("new")
                },
                Step::PublishToConnectionSecret {
                    password: pw("new"),
                    previous_password: pw("old"),
                },
                Step::WaitUntil(expires),
                Step::RetireOldPasswordLive {
                    password: pw("old")
                },
                Step::Finish {
                    password: pw("new")
                },
            ]
        );
        assert_eq!(
            state,
            RotationState::Stable {
                rotation: Some("v2".into())
            }
        );
    }

    #[test]
    fn begin_persists_the_new_password_with_the_old_one_before_anything_else() {
        let old = pw("old");
        let state = RotationState::Stable { rotation: None };
        let p = plan(
            &input(&state, Some("v1"), &old, "2025-07-01T10:00:00Z"),
            || pw("fresh"),
        );
        assert_eq!(p.step, Step::Begin);
        assert_eq!(
            p.then,
            Some(RotationState::InProgress(Rotation {
                rotation: Some("v1".into()),
                stage: Stage::NewPasswordPersisted,
                started_at: at("2025-07-01T10:00:00Z"),
                previous_password_expires_at: None,
                new_password: pw("fresh"),
                old_password: pw("old"),
            }))
        );
    }

    fn in_progress(stage: Stage, expires: Option<&str>) -> RotationState {
        RotationState::InProgress(Rotation {
            rotation: Some("v2".into()),
            stage,
            started_at: at("2025-07-01T10:00:00Z"),
            previous_password_expires_at: expires.map(at),
            new_password: pw("new"),
            old_password: pw("old"),
        })
    }

    #[test]
    fn replanning_from_the_same_persisted_state_repeats_the_same_step() {
        // What a restart between a step and its persist sees: the same step, same passwords.
        let old = pw("old");
        for state in [
            in_progress(Stage::NewPasswordPersisted, None),
            in_progress(Stage::NewPasswordLive, None),
            in_progress(Stage::Published, Some("2025-07-01T10:10:00Z")),
            in_progress(Stage::OldPasswordRetired, Some("2025-07-01T10:10:00Z")),
        ] {
            let a = plan(
                &input(&state, Some("v2"), &old, "2025-07-01T10:20:00Z"),
                no_generate,
            );
            let b = plan(
                &input(&state, Some("v2"), &old, "2025-07-01T10:20:00Z"),
                no_generate,
            );
            assert_eq!(a, b);
            assert_ne!(a.step, Step::Nothing);
        }
    }

    #[test]
    fn the_grace_period_starts_at_publish_and_the_old_password_is_kept_until_it_ends() {
        let old = pw("old");
        let live = in_progress(Stage::NewPasswordLive, None);
        let p = plan(
            &input(&live, Some("v2"), &old, "2025-07-01T10:04:59.250Z"),
            no_generate,
        );
        let published = p.then.unwrap();
        assert_eq!(
            published,
            in_progress(Stage::Published, Some("2025-07-01T10:15:00Z"))
        );

        let before = plan(
            &input(&published, Some("v2"), &old, "2025-07-01T10:14:59Z"),
            no_generate,
        );
        assert_eq!(before.step, Step::WaitUntil(at("2025-07-01T10:15:00Z")));
        assert_eq!(before.then, None);
        let after = plan(
            &input(&published, Some("v2"), &old, "2025-07-01T10:15:00Z"),
            no_generate,
        );
        assert_eq!(
            after.step,
            Step::RetireOldPasswordLive {
                password: pw("old")
            }
        );
    }

    #[test]
    fn a_new_rotation_value_mid_rotation_waits_for_the_current_one_to_finish() {
        let old = pw("old");
        let state = in_progress(Stage::Published, Some("2025-07-01T10:10:00Z"));
        let p = plan(
            &input(&state, Some("v3"), &old, "2025-07-01T10:01:00Z"),
            no_generate,
        );
        assert_eq!(p.step, Step::WaitUntil(at("2025-07-01T10:10:00Z")));
        let done = plan(
            &input(
                &in_progress(Stage::OldPasswordRetired, Some("2025-07-01T10:10:00Z")),
                Some("v3"),
                &old,
                "2025-07-01T10:11:00Z",
            ),
            no_generate,
        );
        assert_eq!(
            done.then,
            Some(RotationState::Stable {
                rotation: Some("v2".into())
            })
        );
        // ... and the next plan, from Stable v2 with v3 desired, begins the next rotation.
        let new = pw("new");
        let next = plan(
            &input(
                &done.then.unwrap(),
                Some("v3"),
                &new,
                "2025-07-01T10:11:00Z",
            ),
            || pw("newer"),
        );
        assert_eq!(next.step, Step::Begin);
    }

    #[test]
    fn a_changed_existing_secret_password_rotates_to_that_password() {
        let old = pw("old");
        let user = pw("users-new");
        let state = RotationState::Stable { rotation: None };
        let base = input(&state, Some("ignored"), &old, "2025-07-01T10:00:00Z");
        let p = plan(
            &RotationInput {
                supplied_password: Some(&user),
                ..base.clone()
            },
            no_generate,
        );
        assert_eq!(p.step, Step::Begin);
        match p.then {
            Some(RotationState::InProgress(r)) => {
                assert_eq!(
                    (r.new_password, r.old_password, r.rotation),
                    (user.clone(), old.clone(), None)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let same = plan(
            &RotationInput {
                supplied_password: Some(&old),
                ..base
            },
            no_generate,
        );
        assert_eq!(same.step, Step::Nothing);
    }

    #[test]
    fn status_shows_phases_and_times_but_never_a_password() {
        let now = at("2025-07-01T10:05:00Z");
        assert_eq!(
            auth_status(
                &RotationState::Stable {
                    rotation: Some("v1".into())
                },
                now
            ),
            AuthStatus {
                rotation: Some("v1".into()),
                phase: Some("Stable".into()),
                rotation_started_at: None,
                previous_password_expires_at: None,
            }
        );
        let published = in_progress(Stage::Published, Some("2025-07-01T10:10:00Z"));
        assert_eq!(
            auth_status(&published, now),
            AuthStatus {
                rotation: Some("v2".into()),
                phase: Some("Rotating".into()),
                rotation_started_at: Some("2025-07-01T10:00:00Z".into()),
                previous_password_expires_at: Some("2025-07-01T10:10:00Z".into()),
            }
        );
        assert_eq!(
            auth_status(&published, at("2025-07-01T10:10:00Z"))
                .phase
                .as_deref(),
            Some("Retiring")
        );
        let json = serde_json::to_string(&auth_status(&published, now)).unwrap();
        assert!(!json.contains("new") && !json.contains("old"), "{json}");
    }
}
