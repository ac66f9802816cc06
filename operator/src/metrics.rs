//! Prometheus metrics of the operator.

use std::time::{Duration, Instant};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The operator's metrics; clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    reconcile_duration: Histogram,
    reconcile_errors: Family<ReasonLabels, Counter>,
    restore_duration: Histogram,
    restores: Family<OutcomeLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconcile_duration: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
            ]),
            reconcile_errors: Family::default(),
            restore_duration: Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            restores: Family::default(),
            leader: Gauge::default(),
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Registers every metric under the `podrestore_operator` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let sub = registry.sub_registry_with_prefix("podrestore_operator");
        sub.register(
            "reconcile_duration_seconds",
            "Duration of PodRestore reconciles (a reconcile waits for the restore it drives)",
            self.reconcile_duration.clone(),
        );
        sub.register(
            "reconcile_errors",
            "Failed PodRestore reconciles by reason",
            self.reconcile_errors.clone(),
        );
        sub.register(
            "restore_duration_seconds",
            "Time from the agent accepting a restore to its result",
            self.restore_duration.clone(),
        );
        sub.register(
            "restores",
            "Finished restores by outcome (RestoreSucceeded, RestoreFailed, Interrupted)",
            self.restores.clone(),
        );
        sub.register(
            "leader",
            "1 while this replica holds the leader Lease",
            self.leader.clone(),
        );
        self
    }

    /// Starts timing a reconcile.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self.reconcile_duration.clone(),
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a finished restore.
    pub fn restore_finished(&self, outcome: &str, took: Option<Duration>) {
        self.restores
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(took) = took {
            self.restore_duration.observe(took.as_secs_f64());
        }
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Failed reconciles counted for `reason` (tests).
    #[cfg(test)]
    pub fn errors_for(&self, reason: &str) -> u64 {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .get()
    }
}
