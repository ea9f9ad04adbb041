//! Step 2, decide: what this reconcile builds. The scale-down guard may hold the pod count while
//! the primary is a pod the shrink would remove (it is handed over first), and the password
//! rotation moves one step, so the build that follows agrees with its state.

use std::borrow::Cow;
use std::time::Duration;

use super::read::Inputs;
use crate::build::TlsInputs;
use crate::context::Context;
use crate::crd::SessionStore;
use crate::error::Result;
use crate::ha::scale::guard_scale_down;
use crate::rotation::step::{RotationOutcome, reconcile_rotation};
use crate::secrets::SecretsRead;
use crate::validate::ValidatedStore;

/// What the later steps build, apply and observe.
pub(super) struct Decided<'a> {
    /// The store to build: the spec, or the spec at the pod count that runs now while a
    /// scale-down is held.
    pub store: Cow<'a, ValidatedStore>,
    /// Look again this soon while a scale-down is held.
    pub scale_hold_requeue: Option<Duration>,
    pub tls: Option<TlsInputs>,
    /// The Secrets as the rotation step left them.
    pub secrets: SecretsRead,
    pub rotation: RotationOutcome,
}

impl Decided<'_> {
    /// The store CA (TLS stores): the only CA trusted when the operator dials Redis and Sentinel.
    pub fn tls_ca(&self) -> Option<&[u8]> {
        self.tls.as_ref().and_then(TlsInputs::ca_pem)
    }
}

pub(super) async fn decide<'a>(
    ctx: &Context,
    store: &SessionStore,
    validated: &'a ValidatedStore,
    inputs: Inputs,
) -> Result<Decided<'a>> {
    let Inputs { tls, mut secrets } = inputs;
    let tls_ca = tls.as_ref().and_then(TlsInputs::ca_pem);
    let hold = guard_scale_down(ctx, store, validated, &secrets.credentials, tls_ca).await?;
    let (store_to_build, scale_hold_requeue) = match hold {
        Some(hold) => (Cow::Owned(hold.store), Some(hold.requeue)),
        None => (Cow::Borrowed(validated), None),
    };
    let rotation =
        reconcile_rotation(ctx, store, &store_to_build, &mut secrets, tls.as_ref()).await?;
    Ok(Decided {
        store: store_to_build,
        scale_hold_requeue,
        tls,
        secrets,
        rotation,
    })
}
