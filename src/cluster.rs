//! What a step may call on the cluster (the API client, the counter of API calls, the watch
//! caches and the operator's settings), borrowed from the `Context`. The hooks the `Context` holds take this view, never the
//! `Context` itself, so the hooks sit below it.

use kube::Client;

use crate::cache::ChildCache;
use crate::metrics::Metrics;
use crate::settings::OperatorSettings;

/// A borrowed view of the `Context`'s cluster access.
#[derive(Clone, Copy)]
pub struct Cluster<'a> {
    pub client: &'a Client,
    pub metrics: &'a Metrics,
    pub cache: &'a dyn ChildCache,
    pub settings: &'a OperatorSettings,
}
