//! Test support for the rotation tests: Redis pods (the shared real-server harness, started
//! from the operator's own `redis.conf` and persisted `users.acl`), and a simulated controller that drives the rotation plan
//! against them with the two Secrets held in memory (what would be in the API server).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::ByteString;
use sessionstore_operator::build::StoreCredentials;
use sessionstore_operator::build::acl::users_acl;
use sessionstore_operator::password::Password;
use sessionstore_operator::render::parse_stores;
use sessionstore_operator::rotation::{
    LiveAcl, Plan, PodEndpoint, RotationError, RotationInput, RotationState, Step, plan,
};
use sessionstore_operator::validate::{ValidatedStore, validate};

/// The store under test: development profile, one pod, a short grace period.
pub fn store(rotation: &str, grace_seconds: i64) -> ValidatedStore {
    let yaml = format!(
        r#"
apiVersion: sessionstore.dev/v1alpha1
kind: SessionStore
metadata: {{name: checkout, namespace: shop}}
spec:
  profile: development
  clients: {{podSelector: {{matchLabels: {{app: checkout}}}}}}
  auth: {{rotation: "{rotation}", rotationGracePeriodSeconds: {grace_seconds}}}
"#
    );
    let mut stores = parse_stores(&yaml, "test.yaml").expect("parse");
    crate::support::engine::declare(&mut stores[0]);
    validate(&stores[0]).expect("valid store")
}

/// A Redis pod: the shared harness's real `redis-server`, started from the operator's generated
/// `redis.conf` and internal Secret, under a pod name.
pub struct RedisServer {
    pub name: String,
    server: crate::support::redis_server::RedisServer,
}

impl RedisServer {
    /// Starts a pod whose mounted internal Secret holds exactly `users_acl` (the persisted file):
    /// the harness builds the Secret from `credentials`, and this checks that it is the same file.
    /// Fails (never skips) when redis-server is missing: CI installs it.
    pub fn start(
        name: &str,
        store: &ValidatedStore,
        credentials: &StoreCredentials,
        users_acl_text: &str,
    ) -> Self {
        assert_eq!(
            users_acl(store, credentials),
            users_acl_text,
            "the pod must start from the persisted users.acl"
        );
        RedisServer {
            name: name.to_string(),
            server: crate::support::redis_server::RedisServer::start(store, credentials),
        }
    }

    pub fn endpoint(&self) -> PodEndpoint {
        PodEndpoint {
            name: self.name.clone(),
            addr: redis::ConnectionAddr::Tcp("127.0.0.1".into(), self.server.port()),
        }
    }
}

/// Whether `user`/`password` can log in and use a session key on `pod`.
pub async fn can_login(pod: &PodEndpoint, user: &str, password: &Password) -> bool {
    session_round_trip(pod, user, password, "session:probe")
        .await
        .is_ok()
}

/// What an application does per request: a new connection, AUTH, SET and GET of a session key.
pub async fn session_round_trip(
    pod: &PodEndpoint,
    user: &str,
    password: &Password,
    key: &str,
) -> Result<(), String> {
    let mut conn =
        sessionstore_operator::rotation::live::connect(pod, user, password, Duration::from_secs(2))
            .await
            .map_err(|e| format!("connect/AUTH: {:?}", e.kind()))?;
    let value = format!("v{}", rand::random::<u32>());
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(&value)
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("SET: {:?}", e.kind()))?;
    let got: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("GET: {:?}", e.kind()))?;
    if got != value {
        return Err("GET returned another value".into());
    }
    Ok(())
}

/// The app-facing connection Secret: the keys a rotation touches.
#[derive(Clone, Debug)]
pub struct ConnectionSecret {
    pub password: Password,
    pub previous_password: Option<Password>,
}

/// Where a simulated operator crash happens within one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// The step's side effect happened, its state was not persisted.
    BeforePersist,
    /// The step and its persist both happened; the operator dies right after.
    AfterPersist,
}

/// The cluster as far as a rotation is concerned: the two Secrets. Only this survives a "restart".
pub struct Cluster {
    pub internal: BTreeMap<String, ByteString>,
    pub connection: Arc<RwLock<ConnectionSecret>>,
    /// Operator, replication and Sentinel passwords (created with the store, never rotated here).
    pub base: StoreCredentials,
}

impl Cluster {
    /// A store as the controller creates it: one app password, Stable state, its users.acl.
    pub fn create(store: &ValidatedStore, app: Password) -> Self {
        let base = StoreCredentials {
            app: app.clone(),
            ..StoreCredentials::generate()
        };
        let mut internal = BTreeMap::new();
        let state = RotationState::initial(store.auth.rotation.as_deref());
        state.merge_into_secret_data(&mut internal);
        internal.insert(
            "users.acl".into(),
            ByteString(users_acl(store, &state.acl_credentials(&base)).into_bytes()),
        );
        Cluster {
            internal,
            connection: Arc::new(RwLock::new(ConnectionSecret {
                password: app,
                previous_password: None,
            })),
            base,
        }
    }

    /// The credentials the persisted users.acl was built from (what a restarted pod mounts).
    pub fn acl_credentials(&self) -> StoreCredentials {
        self.state().acl_credentials(&StoreCredentials {
            app: self.connection().password,
            ..self.base.clone()
        })
    }

    /// Starts a pod from what is persisted now.
    pub fn start_pod(&self, name: &str, store: &ValidatedStore) -> RedisServer {
        RedisServer::start(name, store, &self.acl_credentials(), &self.users_acl())
    }

    pub fn users_acl(&self) -> String {
        String::from_utf8(self.internal["users.acl"].0.clone()).expect("utf8")
    }

    pub fn state(&self) -> RotationState {
        RotationState::from_secret_data(&self.internal).expect("readable state")
    }

    pub fn connection(&self) -> ConnectionSecret {
        self.connection.read().expect("lock").clone()
    }

    pub fn live_acl(&self) -> LiveAcl {
        LiveAcl {
            operator_user: "operator".into(),
            operator_password: self.base.operator.clone(),
            timeout: Duration::from_secs(3),
        }
    }

    /// One reconcile's worth of rotation, exactly as the controller is asked to do it: read the
    /// state, plan, perform the step, persist `then` with its users.acl. Returns the plan.
    pub async fn step(
        &mut self,
        store: &ValidatedStore,
        pods: &[PodEndpoint],
        crash: Option<Crash>,
        generate: impl FnOnce() -> Password,
    ) -> Result<Plan, RotationError> {
        let state = RotationState::from_secret_data(&self.internal)?;
        let connection_password = self.connection().password;
        let p = plan(
            &RotationInput {
                desired_rotation: store.auth.rotation.as_deref(),
                grace_period_seconds: store.auth.rotation_grace_period_seconds,
                supplied_password: None,
                state: &state,
                connection_password: &connection_password,
                now: Utc::now(),
            },
            generate,
        );
        let live = self.live_acl();
        match &p.step {
            Step::Nothing | Step::Begin | Step::WaitUntil(_) => {}
            Step::AddNewPasswordLive { password } => live.add_app_password(pods, password).await?,
            Step::PublishToConnectionSecret {
                password,
                previous_password,
            } => {
                *self.connection.write().expect("lock") = ConnectionSecret {
                    password: password.clone(),
                    previous_password: Some(previous_password.clone()),
                };
            }
            Step::RetireOldPasswordLive { password } => {
                live.remove_app_password(pods, password).await?
            }
            Step::Finish { password } => {
                *self.connection.write().expect("lock") = ConnectionSecret {
                    password: password.clone(),
                    previous_password: None,
                };
            }
        }
        if crash == Some(Crash::BeforePersist) {
            return Ok(p);
        }
        if let Some(then) = &p.then {
            let base = StoreCredentials {
                app: self.connection().password,
                ..self.base.clone()
            };
            then.merge_into_secret_data(&mut self.internal);
            self.internal.insert(
                "users.acl".into(),
                ByteString(users_acl(store, &then.acl_credentials(&base)).into_bytes()),
            );
        }
        Ok(p)
    }

    /// Drives the rotation to Stable, sleeping through the grace period. Bounded: 20 steps.
    pub async fn drive_to_stable(
        &mut self,
        store: &ValidatedStore,
        pods: &[PodEndpoint],
    ) -> Vec<&'static str> {
        let mut steps = Vec::new();
        for _ in 0..20 {
            let p = self
                .step(store, pods, None, Password::generate)
                .await
                .expect("rotation step");
            steps.push(p.step.name());
            match p.step {
                Step::Nothing => return steps,
                Step::WaitUntil(t) => {
                    let wait = (t - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(
                        wait.min(Duration::from_secs(30)) + Duration::from_millis(20),
                    )
                    .await;
                }
                _ => {}
            }
        }
        panic!("rotation did not reach Stable in 20 steps: {steps:?}");
    }
}
