//! What the node has been doing, for the admin API: per-function request
//! counters and last load error, and a bounded log of recent deploy events.

use crate::metrics::{LatencyHistogram, Metrics};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Deploy events kept for `GET /events`; older ones are dropped.
pub const MAX_EVENTS: usize = 512;

/// Counters of one function name, shared by all its versions so they
/// survive reloads. Bumped on every request, so atomics only.
#[derive(Debug)]
pub struct FunctionStats {
    pub requests: AtomicU64,
    /// Responses with a 5xx status.
    pub errors: AtomicU64,
    /// The same histogram Prometheus scrapes as `request_duration_seconds`.
    pub latency: LatencyHistogram,
    /// What the HTTP cache did for its requests.
    pub cache: CacheCounts,
}

impl FunctionStats {
    /// Stats that belong to no registry (tests, benchmarks).
    pub fn detached() -> Arc<Self> {
        Arc::new(Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: LatencyHistogram::default(),
            cache: Default::default(),
        })
    }

    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(elapsed);
    }
}

/// What happened to a function's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Loaded,
    Reloaded,
    /// Same code, new settings file.
    Settings,
    Removed,
    Failed,
    /// The files are back to what serves (a bad edit undone): the failure
    /// no longer stands.
    Restored,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: u64,
    /// RFC 3339, UTC.
    pub at: String,
    pub function: String,
    pub kind: EventKind,
    /// Short hash of the version concerned, when there is one.
    pub version: Option<String>,
    /// `compiled` or `cache`, for loads.
    pub source: Option<&'static str>,
    /// Load time, for loads.
    pub ms: Option<u64>,
    /// Why a load failed.
    pub message: Option<String>,
}

/// A failed load, remembered until the name loads again or goes away.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    pub at: String,
    pub message: String,
}

#[derive(Debug)]
struct NameState {
    stats: Arc<FunctionStats>,
    last_error: Option<LoadFailure>,
}

#[derive(Debug, Default)]
struct Inner {
    names: BTreeMap<String, NameState>,
    events: VecDeque<Event>,
    next_id: u64,
}

/// The node's activity book; one per node.
#[derive(Debug)]
pub struct Activity {
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

impl Activity {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stats of `name`, created on first use.
    pub fn stats(&self, name: &str) -> Arc<FunctionStats> {
        let mut inner = self.lock();
        self.entry(&mut inner, name).stats.clone()
    }

    fn entry<'a>(&self, inner: &'a mut Inner, name: &str) -> &'a mut NameState {
        inner.names.entry(name.to_owned()).or_insert_with(|| {
            let latency = self.metrics.latency(&Arc::from(name));
            NameState {
                stats: Arc::new(FunctionStats {
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    latency,
                    cache: Default::default(),
                }),
                last_error: None,
            }
        })
    }

    /// Records a deploy event; a failure is also kept as the name's last
    /// error, and any other event for the name clears it.
    pub fn record(&self, mut event: Event) {
        let mut inner = self.lock();
        inner.next_id += 1;
        event.id = inner.next_id;
        let entry = self.entry(&mut inner, &event.function);
        entry.last_error = match (event.kind, &event.message) {
            (EventKind::Failed, Some(message)) => Some(LoadFailure {
                at: event.at.clone(),
                message: message.clone(),
            }),
            (EventKind::Failed, None) => entry.last_error.take(),
            _ => None,
        };
        if inner.events.len() == MAX_EVENTS {
            inner.events.pop_front();
        }
        inner.events.push_back(event);
    }

    /// A new event to fill in and [`record`](Self::record).
    pub fn event(function: &str, kind: EventKind) -> Event {
        Event {
            id: 0,
            at: rfc3339(SystemTime::now()),
            function: function.to_owned(),
            kind,
            version: None,
            source: None,
            ms: None,
            message: None,
        }
    }

    /// The newest `limit` events, newest first.
    pub fn events(&self, limit: usize) -> Vec<Event> {
        self.lock()
            .events
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Every name the node has seen, with its stats and last load error.
    pub fn names(&self) -> Vec<(String, Arc<FunctionStats>, Option<LoadFailure>)> {
        self.lock()
            .names
            .iter()
            .map(|(name, s)| (name.clone(), s.stats.clone(), s.last_error.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_bounded_and_newest_first() {
        let activity = Activity::new(Metrics::new());
        for i in 0..MAX_EVENTS + 10 {
            let mut e = Activity::event(&format!("f{}", i % 3), EventKind::Loaded);
            e.ms = Some(i as u64);
            activity.record(e);
        }
        let events = activity.events(usize::MAX);
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events[0].ms, Some((MAX_EVENTS + 9) as u64));
        assert!(events[0].id > events[1].id);
    }

    #[test]
    fn a_failure_is_the_last_error_until_the_next_load() {
        let activity = Activity::new(Metrics::new());
        let mut failed = Activity::event("f", EventKind::Failed);
        failed.message = Some("bad bytes".into());
        activity.record(failed);
        assert_eq!(
            activity.names()[0].2.as_ref().map(|e| e.message.as_str()),
            Some("bad bytes")
        );
        activity.record(Activity::event("f", EventKind::Loaded));
        assert!(activity.names()[0].2.is_none());
    }

    #[test]
    fn stats_survive_across_lookups() {
        let activity = Activity::new(Metrics::new());
        activity.stats("f").record(503, Duration::from_millis(1));
        let stats = activity.stats("f");
        assert_eq!(stats.requests.load(Ordering::Relaxed), 1);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
        assert_eq!(stats.latency.snapshot().count, 1);
    }
}

/// A function's cache counters, shared by its versions.
#[derive(Debug, Default)]
pub struct CacheCounts {
    /// Fresh hits (304s included).
    pub hits: AtomicU64,
    /// Function runs for a GET or HEAD.
    pub misses: AtomicU64,
    /// Stale answers.
    pub stale: AtomicU64,
    /// Requests the cache did not look at.
    pub bypass: AtomicU64,
    /// Background refreshes started.
    pub refreshes: AtomicU64,
}

impl CacheCounts {
    /// The counts now, for the admin API and the metrics (each only
    /// grows, so a later read never shows less).
    pub fn totals(&self) -> CacheTotals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheTotals {
            hits: get(&self.hits),
            misses: get(&self.misses),
            stale: get(&self.stale),
            bypass: get(&self.bypass),
            refreshes: get(&self.refreshes),
        }
    }
}

/// [`CacheCounts`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheTotals {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub bypass: u64,
    pub refreshes: u64,
}

impl CacheTotals {
    /// Requests the cache looked up (answered from it or not).
    pub fn looked_up(&self) -> u64 {
        self.hits + self.misses + self.stale
    }

    /// Answers from the cache (fresh or stale) over requests looked up;
    /// `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let looked = self.looked_up();
        (looked > 0).then(|| (self.hits + self.stale) as f64 / looked as f64)
    }
}
