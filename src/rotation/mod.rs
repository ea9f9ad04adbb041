//! Zero-downtime rotation of the application password: a pure plan decided from state persisted in
//! the internal Secret (`plan`, `state`), and the live ACL changes on every pod (`live`).
//!
//! The controller drives it one step per call: read the persisted [`RotationState`], ask
//! [`plan::plan`] for the next [`Step`], perform it, then persist [`Plan::then`]. Every step is
//! idempotent, so an operator restart at any point resumes from what was persisted and finishes.

pub mod addresses;
pub mod error;
pub mod live;
pub mod plan;
pub mod state;
pub mod step;

pub use error::RotationError;
pub use live::{LiveAcl, LiveTargets, PodEndpoint};
pub use plan::{Plan, RotationInput, Step, auth_status, plan};
pub use state::{RotationState, Stage};
