//! SessionStore operator: a secure, reliable Redis for every application's user sessions.
//!
//! One reconcile is a fixed pipeline, one file per step in [`reconcile`]: read (spec -> `ValidatedStore`,
//! TLS and Secrets) -> decide (scale guard, rotation) -> build (desired children, pure) -> apply
//! (server-side apply, skip unchanged) -> act (HA primary, rolling update) -> observe (Redis
//! health) -> status. The steps share the [`context::Context`]; every module depends only on the
//! modules below it (no import circle, checked by `tests/module_graph.rs`).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod build;
pub mod crd;
pub mod diagnosis;
pub mod error;
pub mod ha;
pub mod observe;
pub mod password;
pub mod pods;
pub mod quantity;
pub mod redis_client;
pub mod redis_commands;
pub mod redis_config;
pub mod render;
pub mod rotation;
pub mod settings;
pub mod validate;
pub mod vocabulary;

#[cfg(test)]
mod test_servers;

pub mod apply;
pub mod apply_optional;
pub mod cache;
pub mod cluster;
pub mod context;
pub mod fault;
pub mod hash;
pub mod http;
pub mod key;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod secrets;
pub mod service_monitor;
pub mod status;
pub mod telemetry;
pub mod tls;

pub use error::{Error, Result};
