//! The cloud tier's Prometheus metrics (`GET /metrics`, token required).

use crate::guard::StorageHealth;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Content type of [`CloudMetrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A counter's `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The outcome counted.
    pub result: &'static str,
}

/// Every metric of the cloud tier.
#[derive(Debug, Default)]
pub struct CloudMetrics {
    /// Ingest requests by outcome: accepted, malformed, too-large, failed.
    pub batches: Family<ResultLabels, Counter>,
    /// Ingested entries: applied, or duplicate (dedup hits on redelivery).
    pub entries: Family<ResultLabels, Counter>,
    /// Change-feed requests answered.
    pub feed_reads: Counter,
    /// Changes served by the feed.
    pub feed_changes: Counter,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: Counter,
    /// Conflicts recorded so far; set when scraped.
    pub conflicts: Gauge,
    /// 1 while the store accepts writes; set when scraped.
    pub storage_writable: Gauge,
}

impl CloudMetrics {
    /// Adds `n` to `family`'s `result` counter.
    pub fn count(family: &Family<ResultLabels, Counter>, result: &'static str, n: u64) {
        family.get_or_create(&ResultLabels { result }).inc_by(n);
    }

    /// The metrics in OpenMetrics text, without the storage's.
    pub fn render(&self) -> String {
        self.render_registry(Registry::with_prefix("outpost_cloud"))
    }

    /// The metrics in OpenMetrics text, with the storage's as of `storage`:
    /// `storage_writable`, and the store's own counts of writes (ingests,
    /// credential changes) answered 503 because storage was failing.
    pub fn render_with(&self, storage: &StorageHealth) -> String {
        let mut r = Registry::with_prefix("outpost_cloud");
        self.storage_writable.set(i64::from(storage.writable));
        r.register(
            "storage_writable",
            "1 while the cloud's database accepts writes; 0 while its disk is full or failing (ingests answer 503, reads go on)",
            self.storage_writable.clone(),
        );
        // The store keeps these counts; a family made per scrape shows them.
        let refused = Family::<ResultLabels, Counter>::default();
        Self::count(&refused, "refused", storage.refused);
        Self::count(&refused, "outcome-unknown", storage.outcome_unknown);
        r.register(
            "storage_refused_writes",
            "Writes answered 503 because storage was failing: refused (not applied), or outcome-unknown (the flush failed or stalled; the edge sends the batch again, harmlessly)",
            refused,
        );
        r.register(
            "storage_reopens",
            "Times the database was reopened to recover from a storage failure",
            ConstCounter::new(storage.reopens),
        );
        self.render_registry(r)
    }

    fn render_registry(&self, mut r: Registry) -> String {
        r.register("batches", "Ingest requests by result", self.batches.clone());
        r.register(
            "entries",
            "Ingested entries: applied, or duplicate (already applied, skipped)",
            self.entries.clone(),
        );
        r.register(
            "feed_reads",
            "Change-feed requests answered",
            self.feed_reads.clone(),
        );
        r.register(
            "feed_changes",
            "Changes served by the change feed",
            self.feed_changes.clone(),
        );
        r.register(
            "unauthorized_requests",
            "Requests refused for a missing or wrong token",
            self.unauthorized.clone(),
        );
        r.register(
            "conflicts",
            "Conflicts recorded (writes made without seeing the current version)",
            self.conflicts.clone(),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_metrics_show_whether_writes_are_accepted_and_what_was_refused() {
        let storage = StorageHealth {
            writable: false,
            failing_since: Some(std::time::SystemTime::now()),
            last_error: None,
            free_bytes: None,
            refused: 3,
            outcome_unknown: 1,
            reopens: 2,
        };
        let text = CloudMetrics::default().render_with(&storage);
        for line in [
            "outpost_cloud_storage_writable 0",
            "outpost_cloud_storage_refused_writes_total{result=\"refused\"} 3",
            "outpost_cloud_storage_refused_writes_total{result=\"outcome-unknown\"} 1",
            "outpost_cloud_storage_reopens_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }
}
