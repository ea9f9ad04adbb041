//! SessionStore operator: a secure, reliable Redis for every application's user sessions.
//!
//! One reconcile is a fixed pipeline, one module per step:
//! `validate` (spec -> `ValidatedStore`, no client) -> `build` (desired children, pure)
//! -> `apply` (server-side apply, skip unchanged) -> `observe` (Redis health) -> `status`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod crd;
pub mod error;
pub mod password;
pub mod quantity;
pub mod settings;
pub mod validate;
pub mod build;
pub mod render;

pub use error::{Error, Result};
