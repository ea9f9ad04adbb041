//! Deliberate handover of the primary role, for the rolling update and the scale-down guard: the
//! operator pauses writes on the primary, waits until a replica has every write, then asks a
//! Sentinel to fail over, so no acknowledged write is lost and no pod dies while it is primary.
//!
//! The reconcile sees it through the [`Handover`] trait so mocked-API tests can inject answers.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::build::StoreCredentials;
use crate::settings::OperatorSettings;
use crate::validate::ValidatedStore;

/// What the reconcile asks for.
pub struct HandoverRequest<'a> {
    pub store: &'a ValidatedStore,
    pub settings: &'a OperatorSettings,
    pub credentials: &'a StoreCredentials,
    /// The store CA for TLS stores (Redis and Sentinel are dialled over TLS with it).
    pub tls_ca: Option<&'a [u8]>,
    /// The pod a majority of Sentinels names as primary now.
    pub primary: &'a str,
    /// Pods that must not become primary (those a scale-down is about to remove).
    pub avoid: &'a [String],
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoverOutcome {
    /// Writes were paused, a replica had caught up, and a Sentinel accepted `SENTINEL FAILOVER`.
    /// The new primary shows up in a later discovery.
    Started { message: String },
    /// Nothing was changed (no caught-up replica, a failover already in progress, a Sentinel or
    /// the primary unreachable): try again on a later reconcile. The message says why, without
    /// any secret.
    NotNow { message: String },
}

/// The handover, injectable.
pub trait Handover: Send + Sync {
    fn hand_over<'a>(&'a self, request: HandoverRequest<'a>) -> BoxFuture<'a, HandoverOutcome>;
}

/// Placeholder until the real Sentinel handover lands (issue 7 work in progress).
pub struct SentinelHandover;

impl Handover for SentinelHandover {
    fn hand_over<'a>(&'a self, _request: HandoverRequest<'a>) -> BoxFuture<'a, HandoverOutcome> {
        Box::pin(async {
            HandoverOutcome::NotNow {
                message: "handover not implemented yet".into(),
            }
        })
    }
}

/// The default handover of a running operator.
pub fn default_handover() -> Arc<dyn Handover> {
    Arc::new(SentinelHandover)
}
