//! Step 3, build: the desired children of the decided store, pure (see `crate::build`).

use super::decide::Decided;
use crate::build::DesiredChildren;
use crate::context::Context;

pub(super) fn children(ctx: &Context, decided: &Decided<'_>) -> DesiredChildren {
    crate::rotation::step::desired_children(
        &decided.store,
        &decided.secrets,
        &ctx.settings,
        decided.tls.as_ref(),
    )
}
