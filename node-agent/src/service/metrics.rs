//! Prometheus metrics of the agent's service.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Labels of the restore counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `Succeeded`, or the failure's reason.
    outcome: String,
}

/// The agent's metrics; cheap to clone (the counters are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    restores: Family<OutcomeLabels, Counter>,
    restore_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            restores: Family::default(),
            // A restore takes a fraction of a second to minutes (large memory, transfers).
            restore_duration: Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        }
    }
}

impl Metrics {
    /// Registers the metrics under the `podrestore_agent` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let sub = registry.sub_registry_with_prefix("podrestore_agent");
        sub.register(
            "restores",
            "Restores the engine finished, by outcome (Succeeded or the failure reason)",
            self.restores.clone(),
        );
        sub.register(
            "restore_duration_seconds",
            "Time from the start of the engine's restore to its result",
            self.restore_duration.clone(),
        );
        self
    }

    /// Counts one finished restore.
    pub fn observe_restore(&self, outcome: &str, took: Duration) {
        self.restores
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.restore_duration.observe(took.as_secs_f64());
    }
}
