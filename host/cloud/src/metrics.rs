//! The cloud tier's Prometheus metrics (`GET /metrics`, token required).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
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
}

impl CloudMetrics {
    /// Adds `n` to `family`'s `result` counter.
    pub fn count(family: &Family<ResultLabels, Counter>, result: &'static str, n: u64) {
        family.get_or_create(&ResultLabels { result }).inc_by(n);
    }

    /// The metrics in OpenMetrics text.
    pub fn render(&self) -> String {
        let mut r = Registry::with_prefix("outpost_cloud");
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
