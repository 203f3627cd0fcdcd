//! `outpost bench cold-start`: how fast one component starts and serves on
//! this machine, measured in process with the engine `outpost serve` uses.

use crate::activity::FunctionStats;
use crate::config::ServeConfig;
use crate::function::Function;
use crate::invoke::admission::Admission;
use crate::loader::{Loader, Settings};
use crate::state::RequestState;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Store;

/// What `outpost bench cold-start` reports. Times in microseconds.
#[derive(Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub bytes: u64,
    pub allocator: &'static str,
    /// Cache miss: compile, validate, link (what a new file costs).
    pub compile_us: u64,
    /// Cache hit: deserialize and link (what a restart costs).
    pub cache_load_us: u64,
    /// A fresh instance, without running the handler (median).
    pub instantiate_us: u64,
    /// The first request after loading: instance and handler, end to end.
    pub first_request_us: u64,
    pub first_status: u16,
    /// Requests after the first, each in a fresh instance.
    pub requests: usize,
    pub warm_p50_us: u64,
    pub warm_p99_us: u64,
    /// Warm requests that did not answer 2xx.
    pub warm_failures: usize,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sends `GET path` to a fresh instance of `function`; returns the status
/// once the whole body has been read.
async fn request(function: &Arc<Function>, admission: &Admission, path: &str) -> u16 {
    let req = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, "bench")
        .body(
            Empty::<Bytes>::new().map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
        )
        .expect("a valid request");
    let id = http::HeaderValue::from_static("cold-start");
    let response = crate::invoke::invoke(function.clone(), admission, req, &id).await;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// Measures the component at `path`, serving `request_path` for the
/// request phases. Compiles into a throwaway cache: nothing is kept.
pub async fn run(path: &Path, requests: usize, request_path: &str) -> anyhow::Result<Report> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| outpost_wire::names::is_valid(s))
        .unwrap_or("bench")
        .to_owned();
    let scratch = tempfile_dir()?;
    // One engine: this measures one thread's requests, and compile and
    // cache-load times are one engine's.
    let config = ServeConfig {
        engines: 1,
        ..ServeConfig::default()
    };
    let (engines, allocator) = crate::engine::build(&config)?;
    let cache = crate::cache::CodeCache::open(scratch.path(), &engines[0])?;
    let storage = outpost_store::Storage::open(scratch.path(), Some("bench"))?;
    let metrics = crate::metrics::Metrics::new();
    let services = Arc::new(outpost_caps::Services {
        catalog: Arc::new(outpost_caps::kv::Catalog::new(
            Default::default(),
            storage.clone(),
        )),
        storage,
        ops: metrics.kv_ops.clone(),
        link: Default::default(),
    });
    let loader = Loader::new(
        engines,
        cache,
        services,
        config.kv_limits,
        config.limits,
        metrics.clone(),
    )?;
    let settings = Settings::default();
    let load = |loader: &Loader| -> anyhow::Result<(Function, Duration)> {
        let started = Instant::now();
        let function = loader
            .load(&name, &bytes, &settings, FunctionStats::detached())
            .map_err(|e| anyhow::anyhow!("{} does not load: {e}", path.display()))?;
        Ok((function, started.elapsed()))
    };
    let (_, compile) = load(&loader)?;
    let (function, cache_load) = load(&loader)?;
    let function = Arc::new(function);
    let admission = Admission::new(config.max_instances as usize, config.queue_timeout, metrics);

    let started = Instant::now();
    let first_status = request(&function, &admission, request_path).await;
    let first_request = started.elapsed();

    let mut instantiations = Vec::with_capacity(requests.clamp(1, 1000));
    for _ in 0..instantiations.capacity() {
        let id = http::HeaderValue::from_static("cold-start");
        let pre = function.pre();
        let mut store = Store::new(
            pre.engine(),
            RequestState::new(&function.name, &function.policy, &function.services, id),
        );
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let started = Instant::now();
        pre.instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("cannot instantiate: {e:#}"))?;
        instantiations.push(started.elapsed());
    }
    instantiations.sort();

    let mut warm = Vec::with_capacity(requests);
    let mut warm_failures = 0;
    for _ in 0..requests {
        let started = Instant::now();
        let status = request(&function, &admission, request_path).await;
        warm.push(started.elapsed());
        warm_failures += usize::from(!(200..300).contains(&status));
    }
    warm.sort();
    Ok(Report {
        file: path.display().to_string(),
        bytes: bytes.len() as u64,
        allocator: allocator.as_str(),
        compile_us: micros(compile),
        cache_load_us: micros(cache_load),
        instantiate_us: micros(percentile(&instantiations, 0.5)),
        first_request_us: micros(first_request),
        first_status,
        requests,
        warm_p50_us: micros(percentile(&warm, 0.5)),
        warm_p99_us: micros(percentile(&warm, 0.99)),
        warm_failures,
    })
}

/// A scratch folder for the cache and database, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<Scratch> {
    let dir = std::env::temp_dir().join(format!(
        "outpost-cold-start-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(Scratch(dir))
}

/// Human units for a microsecond count.
fn human(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

impl Report {
    /// The report as a table.
    pub fn table(&self) -> String {
        let rows = [
            (
                "compile (cache miss: compile + link)",
                human(self.compile_us),
            ),
            (
                "load from cache (deserialize + link)",
                human(self.cache_load_us),
            ),
            ("instantiate (median)", human(self.instantiate_us)),
            (
                "first request",
                format!(
                    "{} (status {})",
                    human(self.first_request_us),
                    self.first_status
                ),
            ),
            ("warm request p50", human(self.warm_p50_us)),
            ("warm request p99", human(self.warm_p99_us)),
        ];
        let mut out = format!(
            "{} ({} bytes, {} allocator, {} warm requests{})\n\n| phase | time |\n|---|---|\n",
            self.file,
            self.bytes,
            self.allocator,
            self.requests,
            if self.warm_failures > 0 {
                format!(", {} not 2xx", self.warm_failures)
            } else {
                String::new()
            }
        );
        for (phase, time) in rows {
            out.push_str(&format!("| {phase} | {time} |\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_micros(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(human(999), "999 µs");
        assert_eq!(human(1_500), "1.50 ms");
    }
}
