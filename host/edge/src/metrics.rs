//! The edge node's Prometheus metrics: one registry whose handles the
//! request path bumps with atomics; gauges that describe state (outbox,
//! lag, slots) are refreshed from their sources when scraped, and so are
//! the HTTP cache's counters ([`CacheMetrics`]), raised to the cache's own
//! counts so the request path bumps one atomic, not two.

use outpost_caps::ops::OpCounts;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: 25 µs to 30 s, dense
/// where a fresh-instance request usually lands.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A histogram over [`LATENCY_BUCKETS`] that records with three relaxed
/// atomic adds and no lock, so it can sit on the request path, and that the
/// admin API can read as well as Prometheus.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per-bucket (not cumulative) counts; the last cell is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram's state at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum_seconds: f64,
    /// `(upper bound, observations in this bucket)`, ending with `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, as Prometheus shows them.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.buckets
            .iter()
            .map(|&(le, n)| {
                total += n;
                (le, total)
            })
            .collect()
    }
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.0.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.0.buckets)
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_seconds: self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(
            snapshot.sum_seconds,
            snapshot.count,
            &snapshot.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A label value that is shared, not copied, on every request.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: Name,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub function: Name,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// What the HTTP cache did for a request of one function.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub function: Name,
    /// `hit`, `miss`, `stale` or `bypass` (`http_cache::Outcome`).
    pub result: &'static str,
}

/// One cloud replica, by its base URL as configured (so the label set is
/// as small as the `--cloud` list).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub url: String,
}

/// Every metric of an edge node.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses sent by functions (and host errors on their behalf).
    pub requests: Family<RequestLabels, Counter>,
    /// Time from the request's arrival to its response head.
    pub request_duration: Family<FunctionLabels, LatencyHistogram>,
    /// Time to create a fresh instance (`instantiate_async`).
    pub instantiate_duration: LatencyHistogram,
    /// Requests refused with 503 because every instance slot was busy.
    pub overloaded: Family<FunctionLabels, Counter>,
    /// Module versions made ready, by where their code came from.
    pub loads: Family<SourceLabels, Counter>,
    pub load_failures: Counter,
    pub compile_duration: LatencyHistogram,
    /// KV and queue host calls, counted by the capabilities.
    pub kv_ops: OpCounts,
    /// Batches sent to the cloud, by outcome.
    pub ship_batches: Family<ResultLabels, Counter>,
    pub ship_bytes: Counter,
    /// Outbox records the cloud refused for good, by its code.
    pub ship_refused: Family<ResultLabels, Counter>,
    /// Writes from other nodes read from the feed, by whether they won here.
    pub remote_writes: Family<ResultLabels, Counter>,
    /// Refreshed when scraped.
    pub gauges: ScrapeGauges,
    /// The HTTP cache's, refreshed when scraped.
    pub cache: CacheMetrics,
}

/// The HTTP cache's metrics. The counters are the cache's own per-function
/// counts (`activity::CacheCounts`, kept by the request path), carried
/// over at scrape with [`raise`]; a series per function the node has seen,
/// as `request_duration_seconds` has.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    /// Requests by function and what the cache did.
    pub requests: Family<CacheLabels, Counter>,
    /// Background refreshes (stale-while-revalidate) started, by function.
    pub refreshes: Family<FunctionLabels, Counter>,
    /// Entries evicted to make room, since start.
    pub evictions: Counter,
    /// Bytes held, as counted against `[cache] memory-bytes`.
    pub bytes: Gauge,
    /// Entries held.
    pub entries: Gauge,
    /// Bytes held per function.
    pub function_bytes: Family<FunctionLabels, Gauge>,
}

/// Raises `counter` to `total`, a count kept elsewhere that only grows:
/// never lowers it, so two scrapes at once cannot make it go back.
pub fn raise(counter: &Counter, total: u64) {
    counter.inner().fetch_max(total, Ordering::Relaxed);
}

/// Gauges set from their sources at scrape time.
#[derive(Debug, Default)]
pub struct ScrapeGauges {
    pub functions: Gauge,
    pub instances_in_flight: Gauge,
    pub instance_slots: Gauge,
    pub pool_saturation: Gauge<f64, AtomicU64>,
    pub admission_waiting: Gauge,
    pub outbox_records: Gauge,
    pub outbox_bytes: Gauge,
    pub outbox_oldest_age: Gauge<f64, AtomicU64>,
    pub quarantined: Gauge,
    pub replication_lag: Gauge<f64, AtomicU64>,
    pub conflicts_seen: Gauge,
    pub cloud_reachable: Gauge,
    /// 1 for the cloud replica requests go to now, 0 for the others.
    pub cloud_replica: Family<ReplicaLabels, Gauge>,
    /// Times a failing cloud replica made requests move to the next.
    pub cloud_failovers: Gauge,
    /// 1 while the cloud refuses this node's stream (shipping stopped).
    pub replication_blocked: Gauge,
    /// 1 while the node's database accepts writes.
    pub storage_writable: Gauge,
    /// Lifetime counts from the database's health, set at scrape.
    pub storage_outcome_unknown: Gauge,
    pub storage_refused: Gauge,
    pub storage_reopens: Gauge,
    /// Write groups committed (one flush each) and the writes in them.
    pub storage_write_groups: Gauge,
    pub storage_grouped_writes: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The request counter for one function and status.
    pub fn count_request(&self, function: &Arc<str>, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                function: Name(function.clone()),
                status,
            })
            .inc();
    }

    /// The latency histogram of one function, shared with the registry.
    pub fn latency(&self, function: &Arc<str>) -> LatencyHistogram {
        self.request_duration.get_or_create_owned(&FunctionLabels {
            function: Name(function.clone()),
        })
    }

    /// The registry in OpenMetrics text.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("outpost");
        self.register(&mut registry);
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Registration is rebuilt per scrape (metrics are cheap clones of
    /// shared atomics), so the registry needs no lock and no 'static.
    fn register(&self, r: &mut Registry) {
        r.register(
            "requests",
            "Responses by function and status",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request arrival to response head, by function",
            self.request_duration.clone(),
        );
        r.register(
            "instantiate_duration_seconds",
            "Time to create a fresh instance",
            self.instantiate_duration.clone(),
        );
        r.register(
            "overload_rejections",
            "Requests answered 503 because no instance slot was free",
            self.overloaded.clone(),
        );
        r.register(
            "module_loads",
            "Module versions made ready, by code source (compiled or cache)",
            self.loads.clone(),
        );
        r.register(
            "module_load_failures",
            "Module files that failed to load",
            self.load_failures.clone(),
        );
        r.register(
            "compile_duration_seconds",
            "Time to compile a module (cache misses)",
            self.compile_duration.clone(),
        );
        r.register(
            "kv_operations",
            "KV host calls by operation and result",
            self.kv_ops.0.clone(),
        );
        r.register(
            "shipper_batches",
            "Outbox batches sent to the cloud, by result",
            self.ship_batches.clone(),
        );
        r.register(
            "shipper_bytes",
            "Bytes of outbox batches sent to the cloud",
            self.ship_bytes.clone(),
        );
        r.register(
            "shipper_refused_records",
            "Outbox records the cloud refused for good (quarantined here), by the cloud's code",
            self.ship_refused.clone(),
        );
        r.register(
            "remote_writes",
            "Writes from the cloud's feed, by whether they won here (applied) or lost to a newer local version (older)",
            self.remote_writes.clone(),
        );
        let c = &self.cache;
        r.register(
            "cache_requests",
            "Function requests by what the HTTP cache did: hit (a fresh entry, 304s included), stale (a stale entry), miss (the function ran), bypass (not looked up)",
            c.requests.clone(),
        );
        r.register(
            "cache_refreshes",
            "Background refreshes of stale entries (stale-while-revalidate) started, by function",
            c.refreshes.clone(),
        );
        r.register(
            "cache_evictions",
            "HTTP cache entries evicted to make room, since start",
            c.evictions.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes the HTTP cache holds, as counted against its memory budget",
            c.bytes.clone(),
        );
        r.register(
            "cache_entries",
            "Responses the HTTP cache holds",
            c.entries.clone(),
        );
        r.register(
            "cache_function_bytes",
            "Bytes the HTTP cache holds for each function",
            c.function_bytes.clone(),
        );
        let g = &self.gauges;
        for (name, help, gauge) in [
            ("functions", "Functions serving", &g.functions),
            (
                "instances_in_flight",
                "Instances running now",
                &g.instances_in_flight,
            ),
            (
                "instance_slots",
                "Instances that may run at once",
                &g.instance_slots,
            ),
            (
                "admission_waiting",
                "Requests waiting for an instance slot",
                &g.admission_waiting,
            ),
            (
                "outbox_records",
                "Records waiting to be shipped",
                &g.outbox_records,
            ),
            (
                "outbox_bytes",
                "Bytes of records waiting to be shipped",
                &g.outbox_bytes,
            ),
            (
                "outbox_quarantined_records",
                "Records the cloud refused for good",
                &g.quarantined,
            ),
            (
                "conflicts_seen",
                "Conflicts the cloud tier has recorded, as of the last feed read",
                &g.conflicts_seen,
            ),
            (
                "cloud_reachable",
                "1 if the last exchange with the cloud succeeded",
                &g.cloud_reachable,
            ),
            (
                "cloud_failovers",
                "Times a failing cloud replica (no connection, no answer in time, a 5xx) made requests move to the next, since start",
                &g.cloud_failovers,
            ),
            (
                "storage_writable",
                "1 while the node's database accepts writes; 0 while its disk is full or failing (reads go on)",
                &g.storage_writable,
            ),
            (
                "storage_outcome_unknown_writes",
                "Writes answered outcome-unknown (a flush failed or stalled) since start",
                &g.storage_outcome_unknown,
            ),
            (
                "storage_refused_writes",
                "Writes refused unapplied while storage was failing, since start",
                &g.storage_refused,
            ),
            (
                "storage_reopens",
                "Times the database was reopened to recover from a failure, since start",
                &g.storage_reopens,
            ),
            (
                "storage_write_groups",
                "Write groups committed since start, one flush each",
                &g.storage_write_groups,
            ),
            (
                "storage_grouped_writes",
                "Writes committed in those groups since start: over storage_write_groups, how many writes share a flush",
                &g.storage_grouped_writes,
            ),
            (
                "replication_blocked",
                "1 while the cloud refuses this node's stream (a copied data dir, a gap, a wrong credential); records are kept",
                &g.replication_blocked,
            ),
        ] {
            r.register(name, help, gauge.clone());
        }
        r.register(
            "cloud_replica",
            "1 for the cloud replica requests go to now, 0 for the other configured ones",
            g.cloud_replica.clone(),
        );
        for (name, help, gauge) in [
            (
                "pool_saturation_ratio",
                "Instances in flight over instance slots",
                &g.pool_saturation,
            ),
            (
                "outbox_oldest_age_seconds",
                "Age of the oldest record waiting to be shipped",
                &g.outbox_oldest_age,
            ),
            (
                "replication_lag_seconds",
                "Seconds since the change feed was last read to its end",
                &g.replication_lag,
            ),
        ] {
            r.register(name, help, gauge.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_snapshot() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(60));
        h.observe(Duration::from_secs(100));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        let cumulative = s.cumulative();
        assert_eq!(cumulative[0], (0.000_025, 1));
        assert_eq!(cumulative[2], (0.000_1, 2));
        assert_eq!(cumulative.last().unwrap().1, 3);
        assert!(cumulative.last().unwrap().0.is_infinite());
    }

    #[test]
    fn render_names_every_family() {
        let m = Metrics::default();
        let name: Arc<str> = "hello".into();
        m.count_request(&name, 200);
        m.latency(&name).observe(Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("outpost_requests_total{function=\"hello\",status=\"200\"} 1"));
        assert!(text.contains("outpost_request_duration_seconds_count{function=\"hello\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn cache_counters_are_counters_raised_never_lowered() {
        let m = Metrics::default();
        let labels = CacheLabels {
            function: Name("c".into()),
            result: "hit",
        };
        raise(&m.cache.requests.get_or_create(&labels), 5);
        raise(&m.cache.requests.get_or_create(&labels), 3);
        raise(&m.cache.evictions, 2);
        m.cache.bytes.set(100);
        let text = m.render();
        assert!(
            text.contains("# TYPE outpost_cache_requests counter"),
            "{text}"
        );
        assert!(text.contains("outpost_cache_requests_total{function=\"c\",result=\"hit\"} 5"));
        assert!(text.contains("# TYPE outpost_cache_evictions counter"));
        assert!(text.contains("outpost_cache_evictions_total 2"));
        assert!(text.contains("# TYPE outpost_cache_bytes gauge"));
        assert!(text.contains("outpost_cache_bytes 100"));
    }
}
