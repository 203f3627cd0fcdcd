//! Builds the wasmtime engines: one per core, each with its own pooling
//! allocator and copy-on-write memory images (falling back to on-demand
//! allocation), and says which one the current thread uses.

use crate::config::{AllocatorChoice, ServeConfig};
use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

impl Allocator {
    pub fn as_str(self) -> &'static str {
        match self {
            Allocator::Pooling => "pooling",
            Allocator::OnDemand => "on-demand",
        }
    }
}

/// How often the epoch advances: the granularity of request deadlines, and
/// how long a CPU-bound guest runs before it yields to other requests.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings shared by both allocators. Compiled code depends on these, so
/// they must not differ between the two (the code cache is shared).
fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Copy-on-write images make instantiation a few mmaps instead of copying
    // every data segment.
    config.memory_init_cow(true);
    // Guests check the epoch in loops and calls: a spinning guest yields
    // every tick and is cut off at its deadline.
    config.epoch_interruption(true);
    config
}

/// Advances every engine's epoch every [`EPOCH_TICK`] on one thread for
/// the whole process; the thread ends when all the engines are dropped.
pub fn start_epoch_ticker(engines: &[Engine]) {
    let weak: Vec<_> = engines.iter().map(Engine::weak).collect();
    std::thread::Builder::new()
        .name("outpost-epoch".into())
        .spawn(move || {
            loop {
                let mut alive = false;
                for engine in weak.iter().filter_map(|w| w.upgrade()) {
                    engine.increment_epoch();
                    alive = true;
                }
                if !alive {
                    return;
                }
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("start the epoch thread");
}

/// Threads numbered in the order they first asked for an engine.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_NUMBER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Which of `engines` engines the calling thread uses. Each thread keeps
/// one engine for its whole life, and threads take the engines in turn, so
/// the runtime's worker threads (the first threads to serve requests) each
/// get their own: two cores serving at once then share none of an engine's
/// state (its instance pool, reference counts and type registry). Sharing
/// one costs two workers about 15% of their throughput
/// (`cargo bench -p outpost --bench scaling`). A task that moves to
/// another thread mid-request keeps its store and engine; that is only
/// slower, never wrong.
pub fn engine_for_current_thread(engines: usize) -> usize {
    if engines <= 1 {
        return 0;
    }
    let number = THREAD_NUMBER.with(|n| {
        n.get().unwrap_or_else(|| {
            let next = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            n.set(Some(next));
            next
        })
    });
    number % engines
}

/// Bytes of each pooled linear memory (and table) reset with `memset`
/// instead of `madvise` when a slot is reused: a small guest's heap stays
/// resident, so the next request neither faults its pages back in nor makes
/// the kernel flush TLBs on the other cores.
const KEEP_RESIDENT: usize = 128 * 1024;

fn pooling_config(
    max_instances: u32,
    max_memory_bytes: usize,
    pagemap_scan: Enabled,
) -> PoolingAllocationConfig {
    let n = max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT)
        // With PAGEMAP_SCAN (Linux >= 6.7) only the pages a request
        // dirtied are reset, not the whole kept-resident prefix.
        .pagemap_scan(pagemap_scan);
    // One slot per concurrent request. A component built from a language's
    // standard library is several core instances (the program, plus
    // wit-component's shim and fixup modules); interpreters such as
    // componentize-py link a dozen, so core-instance and table slots are
    // sized generously: they are virtual address space, not resident memory.
    pool.total_component_instances(n)
        .total_memories(n)
        .total_stacks(n)
        .total_core_instances(n.saturating_mul(16))
        .total_tables(n.saturating_mul(8))
        .max_memories_per_module(1)
        .max_tables_per_module(4)
        .max_memory_size(max_memory_bytes);
    pool
}

/// Builds `cfg.engines` engines for `cfg.allocator` (at least one). With
/// `Auto`, a pool whose address space cannot be reserved (a low
/// `ulimit -v`, a 32-bit-sized VM) falls back to on-demand allocation; an
/// extra engine whose pool cannot be reserved is left out, and the node
/// runs with fewer. The log says which allocator and how many engines.
pub fn build(cfg: &ServeConfig) -> anyhow::Result<(Vec<Engine>, Allocator)> {
    let on_demand = || -> anyhow::Result<Engine> {
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        Ok(Engine::new(&config)?)
    };
    let pooling_with = |pagemap_scan| -> anyhow::Result<Engine> {
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            cfg.max_instances,
            cfg.limits.max_memory_bytes,
            pagemap_scan,
        )));
        Ok(Engine::new(&config)?)
    };
    // Ask for PAGEMAP_SCAN outright so the log can say whether it is in
    // use; an older kernel refuses it, and the pool goes without.
    let pooling = || -> anyhow::Result<(Engine, Enabled)> {
        match pooling_with(Enabled::Yes) {
            Ok(engine) => {
                tracing::debug!(target: "outpost::engine", "pooling allocator uses PAGEMAP_SCAN");
                Ok((engine, Enabled::Yes))
            }
            Err(e) => {
                tracing::info!(target: "outpost::engine", reason = %format!("{e:#}"), "PAGEMAP_SCAN unavailable; pooling allocator resets whole kept-resident pages");
                Ok((pooling_with(Enabled::No)?, Enabled::No))
            }
        }
    };
    let (first, allocator, pagemap_scan) = match cfg.allocator {
        AllocatorChoice::OnDemand => (on_demand()?, Allocator::OnDemand, Enabled::No),
        AllocatorChoice::Pooling => {
            let (engine, scan) = pooling()?;
            (engine, Allocator::Pooling, scan)
        }
        AllocatorChoice::Auto => match pooling() {
            Ok((engine, scan)) => (engine, Allocator::Pooling, scan),
            Err(e) => {
                tracing::warn!(target: "outpost::engine",
                    error = %format!("{e:#}"),
                    max_instances = cfg.max_instances,
                    "cannot reserve the pooling allocator's address space; falling back to on-demand allocation"
                );
                (on_demand()?, Allocator::OnDemand, Enabled::No)
            }
        },
    };
    // The other engines are built exactly like the first, so compiled code
    // and the cache's compatibility hash are the same for all of them.
    let mut engines = vec![first];
    while engines.len() < cfg.engines.max(1) {
        let more = match allocator {
            Allocator::Pooling => pooling_with(pagemap_scan),
            Allocator::OnDemand => on_demand(),
        };
        match more {
            Ok(engine) => engines.push(engine),
            Err(e) => {
                tracing::warn!(target: "outpost::engine",
                    error = %format!("{e:#}"),
                    allocator = %allocator.as_str(),
                    wanted = cfg.engines,
                    built = engines.len(),
                    "cannot build another engine; running with fewer (a pool needs max-instances slots of address space)"
                );
                break;
            }
        }
    }
    tracing::info!(target: "outpost::engine",
        allocator = %allocator.as_str(),
        max_instances = cfg.max_instances,
        engines = engines.len(),
        "engines ready"
    );
    start_epoch_ticker(&engines);
    Ok((engines, allocator))
}

/// A short, stable digest of everything that makes compiled code
/// incompatible: wasmtime version, target, and code-affecting settings.
pub fn compat_hash(engine: &Engine) -> String {
    // SipHash with fixed keys: stable across runs of the same binary, which is
    // all a cache key needs.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_keeps_one_engine_and_threads_take_them_in_turn() {
        assert_eq!(engine_for_current_thread(1), 0);
        // Two threads asking at once get different engines; each keeps its
        // own on every later call.
        let barrier = std::sync::Barrier::new(2);
        let picks: Vec<(usize, usize)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let first = engine_for_current_thread(2);
                        barrier.wait();
                        (first, engine_for_current_thread(2))
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        for (first, later) in &picks {
            assert_eq!(first, later);
            assert!(*first < 2);
        }
        assert_ne!(picks[0].0, picks[1].0);
    }
}
