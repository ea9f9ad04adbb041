//! Live ACL changes on every pod: Redis does not replicate `ACL SETUSER`, so the operator applies
//! it to each pod itself, as its own ACL user, and checks the result with a real `AUTH`. A highly
//! available store's Sentinels check the app user's password too (Sentinel-aware clients log in to
//! them), and read their ACL file only at start, so the same change goes to every Sentinel.
//!
//! Passwords travel only as SHA-256 hashes (`#<hash>` adds, `!<hash>` removes), so the clear text
//! never appears in an `ACL SETUSER` argument (SLOWLOG, MONITOR, command logs). Redis echoes a
//! rejected argument in its error text, so Redis errors are summarised (kind and code), never
//! quoted. The clear text is sent only in `AUTH`, the command Redis itself redacts, to verify.

use std::time::Duration;

use futures::future::join_all;
use redis::{ConnectionAddr, ErrorKind, RedisError};
use tracing::{debug, trace, warn};

use crate::build::acl::APP_USER;
use crate::password::Password;
use crate::redis_client;
use crate::rotation::error::RotationError;

/// One Redis pod (or the Sentinel in it), dialled by its own address, not through a Service.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEndpoint {
    /// The pod name, for errors and logs.
    pub name: String,
    /// Plain TCP or TLS (`ConnectionAddr::TcpTls`) address of the pod.
    pub addr: ConnectionAddr,
}

/// Every process that checks the app user's password, each dialled on its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveTargets {
    /// The Redis server of every pod.
    pub redis: Vec<PodEndpoint>,
    /// The Sentinel of every pod of a highly available store; empty for a standalone store.
    pub sentinels: Vec<PodEndpoint>,
}

/// How the operator logs in to change the app user's passwords.
#[derive(Clone, Debug)]
pub struct LiveAcl {
    /// The operator's ACL user (it needs `+acl|setuser`).
    pub operator_user: String,
    pub operator_password: Password,
    /// Per pod: connect, change and verify must finish within this time.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Add,
    Remove,
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Change::Add => "add the new app password live",
            Change::Remove => "retire the old app password live",
        }
    }
}

impl LiveAcl {
    /// `ACL SETUSER app #<hash>` on every pod, then checks that each pod accepts the password.
    /// Idempotent: adding a password the user already has changes nothing. All pods are tried
    /// (concurrently); the error names every pod that failed.
    pub async fn add_app_password(
        &self,
        pods: &[PodEndpoint],
        password: &Password,
    ) -> Result<(), RotationError> {
        self.on_every_pod(pods, password, Change::Add).await
    }

    /// `ACL SETUSER app !<hash>` on every pod, then checks that each pod refuses the password.
    /// Idempotent: a password already removed (Redis: "does not exist") counts as removed.
    pub async fn remove_app_password(
        &self,
        pods: &[PodEndpoint],
        password: &Password,
    ) -> Result<(), RotationError> {
        self.on_every_pod(pods, password, Change::Remove).await
    }

    /// [`Self::add_app_password`] on every Redis pod, then on every Sentinel. Both come before the
    /// connection Secret changes, so no client is ever given a password one of them refuses.
    pub async fn add_app_password_everywhere(
        &self,
        targets: &LiveTargets,
        password: &Password,
    ) -> Result<(), RotationError> {
        self.add_app_password(&targets.redis, password).await?;
        if !targets.sentinels.is_empty() {
            self.add_app_password(&targets.sentinels, password).await?;
        }
        Ok(())
    }

    /// [`Self::remove_app_password`] on every Redis pod, then on every Sentinel.
    pub async fn remove_app_password_everywhere(
        &self,
        targets: &LiveTargets,
        password: &Password,
    ) -> Result<(), RotationError> {
        self.remove_app_password(&targets.redis, password).await?;
        if !targets.sentinels.is_empty() {
            self.remove_app_password(&targets.sentinels, password)
                .await?;
        }
        Ok(())
    }

    async fn on_every_pod(
        &self,
        pods: &[PodEndpoint],
        password: &Password,
        change: Change,
    ) -> Result<(), RotationError> {
        if pods.is_empty() {
            return Err(RotationError::NoPods {
                action: change.action(),
            });
        }
        let results = join_all(pods.iter().map(|pod| async move {
            let outcome =
                tokio::time::timeout(self.timeout, self.change_pod(pod, password, change)).await;
            let outcome =
                outcome.unwrap_or_else(|_| Err(format!("timed out after {:?}", self.timeout)));
            (pod.name.as_str(), outcome)
        }))
        .await;
        let failures: Vec<String> = results
            .into_iter()
            .filter_map(|(pod, outcome)| outcome.err().map(|reason| format!("{pod}: {reason}")))
            .collect();
        if failures.is_empty() {
            debug!(
                user = APP_USER,
                pods = pods.len(),
                action = change.action(),
                "live ACL change applied on every pod"
            );
            return Ok(());
        }
        warn!(
            user = APP_USER,
            failed = failures.len(),
            total = pods.len(),
            action = change.action(),
            "live ACL change incomplete"
        );
        Err(RotationError::Live {
            action: change.action(),
            failed: failures.len(),
            total: pods.len(),
            details: failures.join("; "),
        })
    }

    /// One pod: the change, then the proof (a fresh `AUTH` as the app user).
    async fn change_pod(
        &self,
        pod: &PodEndpoint,
        password: &Password,
        change: Change,
    ) -> Result<(), String> {
        trace!(pod = %pod.name, user = %self.operator_user, "connecting as the operator");
        let mut conn = connect(
            pod,
            &self.operator_user,
            &self.operator_password,
            self.timeout,
        )
        .await
        .map_err(|e| format!("operator login failed: {}", summarise(&e)))?;
        let hash = sha256_hex(password);
        let rule = match change {
            Change::Add => format!("#{hash}"),
            Change::Remove => format!("!{hash}"),
        };
        let result: Result<(), RedisError> = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(APP_USER)
            .arg(&rule)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(()) => {
                trace!(pod = %pod.name, user = APP_USER, action = change.action(), "ACL SETUSER ok")
            }
            Err(e) if change == Change::Remove && is_already_removed(&e) => {
                trace!(pod = %pod.name, user = APP_USER, "password was already removed")
            }
            Err(e) => return Err(format!("ACL SETUSER {APP_USER} refused: {}", summarise(&e))),
        }
        // Prove it the way an application would see it: a fresh connection and AUTH.
        let login = connect(pod, APP_USER, password, self.timeout).await;
        match (change, login) {
            (Change::Add, Ok(_)) => {}
            (Change::Add, Err(e)) => {
                return Err(format!(
                    "the new password is not accepted after ACL SETUSER: {}",
                    summarise(&e)
                ));
            }
            (Change::Remove, Ok(_)) => {
                return Err("the old password is still accepted after ACL SETUSER".into());
            }
            (Change::Remove, Err(e)) if e.kind() == ErrorKind::AuthenticationFailed => {}
            // A network failure proves nothing about the password: report it, do not assume.
            (Change::Remove, Err(e)) => {
                return Err(format!("could not verify the refusal: {}", summarise(&e)));
            }
        }
        trace!(pod = %pod.name, user = APP_USER, action = change.action(), "verified with AUTH");
        Ok(())
    }
}

/// Opens an authenticated connection (the redis crate sends `AUTH user password` on connect).
pub async fn connect(
    pod: &PodEndpoint,
    user: &str,
    password: &Password,
    timeout: Duration,
) -> Result<redis::aio::MultiplexedConnection, RedisError> {
    let client = redis_client::client_at(pod.addr.clone(), user, password)?;
    redis_client::connect(&client, timeout, timeout).await
}

/// The hex SHA-256 Redis compares passwords by (what follows `#` in `Password::acl_hash`).
fn sha256_hex(password: &Password) -> String {
    password.acl_hash().trim_start_matches('#').to_string()
}

/// Redis 7.0/7.2 and Valkey: "The password you are trying to remove from the user does not exist".
fn is_already_removed(e: &RedisError) -> bool {
    e.detail().is_some_and(|d| d.contains("does not exist"))
}

/// A Redis error without its detail text: the detail may quote the `ACL SETUSER` argument.
fn summarise(e: &RedisError) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_io_error() {
        return format!("connection error ({:?})", e.kind());
    }
    match e.code() {
        Some(code) => format!("Redis error {code}"),
        None => format!("{:?}", e.kind()),
    }
}
