//! `outpost_kv_operations_total{op, result}`: how the capabilities count
//! their host calls. The edge registers the family in its metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The labels of one count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The host call (`get`, `set`, `enqueue`, ...).
    pub op: &'static str,
    /// `ok` or the error's name.
    pub result: &'static str,
}

/// Host calls by operation and result; clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct OpCounts(pub Family<OpLabels, Counter>);

impl OpCounts {
    /// Counts one call of `op` that ended in `result`.
    pub fn count(&self, op: &'static str, result: &'static str) {
        self.0.get_or_create(&OpLabels { op, result }).inc();
    }
}
