//! Prometheus metrics of the controller (names in the run contract): reconciles, errors by kind,
//! reconcile duration, API requests by verb and stores by phase, encoded in the text format.
//! The health work registers its gauges in the same [`Registry`].

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::Phase;
use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: &'static str,
}

/// The API verbs the operator counts (`sessionstore_api_requests_total{verb}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Create,
    Patch,
    Delete,
}

impl Verb {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

/// The controller's metrics, cheap to clone (every metric is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<KindLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub api_requests: Family<VerbLabels, Counter>,
    pub stores: Family<PhaseLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            // 1 ms .. ~16 s: a reconcile is a handful of API calls.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            api_requests: Family::default(),
            stores: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `sessionstore_` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "reconciles",
            "Reconciles by result",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error kind",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "api_requests",
            "Kubernetes API requests sent by reconciles, by verb",
            self.api_requests.clone(),
        );
        registry.register("stores", "SessionStores by phase", self.stores.clone());
        self
    }

    /// A registry with the contract's prefix.
    pub fn registry() -> Registry {
        Registry::with_prefix("sessionstore")
    }

    /// Starts timing a reconcile; the duration is recorded when the guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self.reconcile_duration.clone(),
            start: Instant::now(),
        }
    }

    pub fn reconcile_ok(&self) {
        self.reconciles
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
    }

    pub fn reconcile_failed(&self, error: &Error) {
        self.reconciles
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
        self.reconcile_errors
            .get_or_create(&KindLabels {
                kind: error.metric_label(),
            })
            .inc();
    }

    /// Counts one API request.
    pub fn api_request(&self, verb: Verb) {
        self.api_requests
            .get_or_create(&VerbLabels {
                verb: verb.as_str(),
            })
            .inc();
    }

    /// Sets the stores-by-phase gauge from the phases of every known store (recounted at scrape time,
    /// so deleted stores disappear without a finalizer).
    pub fn set_store_phases(&self, phases: impl IntoIterator<Item = Option<Phase>>) {
        let mut counts = [0i64; Phase::ALL.len()];
        for phase in phases.into_iter().flatten() {
            if let Some(i) = Phase::ALL.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        for (phase, count) in Phase::ALL.iter().zip(counts) {
            self.stores
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(count);
        }
    }
}

/// Records a reconcile's duration on drop.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Encodes a registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// A registry plus the controller's metrics registered in it, shared by the web server.
pub fn new_registry() -> (Arc<Registry>, Metrics) {
    let mut registry = Metrics::registry();
    let metrics = Metrics::default().register(&mut registry);
    (Arc::new(registry), metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_the_run_contract() {
        let (registry, metrics) = new_registry();
        metrics.reconcile_ok();
        metrics.reconcile_failed(&Error::Startup("x".into()));
        metrics.api_request(Verb::Patch);
        metrics.set_store_phases([Some(Phase::Ready), Some(Phase::Ready), None]);
        drop(metrics.reconcile_timer());
        let text = encode(&registry).expect("encodes");
        for expected in [
            "sessionstore_reconciles_total{result=\"ok\"} 1",
            "sessionstore_reconciles_total{result=\"error\"} 1",
            "sessionstore_reconcile_errors_total{kind=\"startup\"} 1",
            "sessionstore_api_requests_total{verb=\"patch\"} 1",
            "sessionstore_stores{phase=\"Ready\"} 2",
            "sessionstore_stores{phase=\"Failed\"} 0",
            "sessionstore_reconcile_duration_seconds_count 1",
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
    }
}
