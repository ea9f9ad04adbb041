//! Step 5, act on Redis (HA stores only): learn the primary from a Sentinel majority and move the
//! role labels to it (handing a stopping primary over first), then drive the ordered rolling
//! update (replicas first, a handover, the old primary last).

use super::apply::Applied;
use super::decide::Decided;
use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::Result;
use crate::ha::observation::PrimaryObservation;
use crate::ha::rollout_step::{RolloutObservation, reconcile_rollout};
use crate::ha::step::reconcile_primary;

/// What the HA steps saw (both `None` for a standalone store).
pub(super) struct Acted {
    pub ha: Option<PrimaryObservation>,
    pub rollout: Option<RolloutObservation>,
}

pub(super) async fn act(
    ctx: &Context,
    store: &SessionStore,
    decided: &Decided<'_>,
    applied: &Applied,
) -> Result<Acted> {
    let validated = decided.store.as_ref();
    let credentials = &decided.secrets.credentials;
    let ha = reconcile_primary(
        ctx,
        store,
        validated,
        credentials,
        applied.ready_replicas,
        decided.tls_ca(),
    )
    .await?;
    let rollout = reconcile_rollout(
        ctx,
        store,
        validated,
        credentials,
        decided.tls_ca(),
        ha.as_ref(),
        applied.statefulset_written,
    )
    .await?;
    Ok(Acted { ha, rollout })
}
