//! Step 3, build: the desired children of the decided store and its Secrets as the rotation left
//! them, pure (see `crate::build`, which `render` calls the same way).

use super::decide::Decided;
use crate::build::DesiredChildren;
use crate::context::Context;
use crate::rotation::step::build_input;

pub(super) fn children(ctx: &Context, decided: &Decided<'_>) -> DesiredChildren {
    crate::build::desired_children(&build_input(
        &decided.store,
        &decided.secrets,
        &ctx.settings,
        decided.tls.as_ref(),
    ))
}
