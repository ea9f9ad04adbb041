//! When a failed store is tried again: a capped exponential backoff per store (longer after the
//! API server answered 429), counted by kind of failure; a success resets it.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::Error;
use crate::key::StoreKey;

/// First and largest delay of the per-store error backoff.
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Smallest delay after the API server answered 429 (too many requests).
const THROTTLED_MIN: Duration = Duration::from_secs(30);

/// A reconcile succeeded: counted, and the store's backoff starts over.
pub(super) fn succeeded(ctx: &Context, store: &SessionStore) {
    ctx.metrics.reconcile_ok();
    ctx.failures().remove(&StoreKey::of(store));
}

/// Decides when a failed store is tried again: capped exponential backoff per store, longer after
/// a 429. Also counts the failure by kind.
pub fn error_policy(store: Arc<SessionStore>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let failures = {
        let mut map = ctx.failures();
        let entry = map.entry(StoreKey::of(&store)).or_insert(0);
        *entry = entry.saturating_add(1);
        *entry
    };
    let delay = backoff_delay(failures, error.is_throttled());
    tracing::warn!(
        namespace = %store.namespace().unwrap_or_default(),
        name = %store.name_any(),
        kind = error.metric_label(),
        failures,
        retry_in_seconds = delay.as_secs(),
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

/// `BACKOFF_BASE * 2^(failures-1)`, capped at `BACKOFF_MAX`; at least `THROTTLED_MIN` after a 429.
fn backoff_delay(failures: u32, throttled: bool) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let delay = BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX);
    if throttled {
        delay.max(THROTTLED_MIN)
    } else {
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_delay(1, false), Duration::from_secs(5));
        assert_eq!(backoff_delay(2, false), Duration::from_secs(10));
        assert_eq!(backoff_delay(4, false), Duration::from_secs(40));
        assert_eq!(backoff_delay(7, false), Duration::from_secs(300));
        assert_eq!(backoff_delay(40, false), Duration::from_secs(300));
        assert_eq!(backoff_delay(1, true), Duration::from_secs(30));
    }
}
