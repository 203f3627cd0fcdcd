//! Builds the process-wide wasmtime `Engine`: pooling allocator with
//! copy-on-write memory images, falling back to on-demand allocation.

use crate::config::{AllocatorChoice, ServeConfig};
use std::hash::{Hash, Hasher};
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

/// Advances `engine`'s epoch every [`EPOCH_TICK`] on one thread for the
/// whole process; the thread ends when the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("outpost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("start the epoch thread");
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

/// Builds the engine for `cfg.allocator`. With `Auto`, a pool whose address
/// space cannot be reserved (a low `ulimit -v`, a 32-bit-sized VM) falls
/// back to on-demand allocation; the log says which one is in use.
pub fn build(cfg: &ServeConfig) -> anyhow::Result<(Engine, Allocator)> {
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
    let pooling = || -> anyhow::Result<Engine> {
        match pooling_with(Enabled::Yes) {
            Ok(engine) => {
                tracing::debug!("pooling allocator uses PAGEMAP_SCAN");
                Ok(engine)
            }
            Err(e) => {
                tracing::info!(reason = %format!("{e:#}"), "PAGEMAP_SCAN unavailable; pooling allocator resets whole kept-resident pages");
                pooling_with(Enabled::No)
            }
        }
    };
    let (engine, allocator) = match cfg.allocator {
        AllocatorChoice::OnDemand => (on_demand()?, Allocator::OnDemand),
        AllocatorChoice::Pooling => (pooling()?, Allocator::Pooling),
        AllocatorChoice::Auto => match pooling() {
            Ok(engine) => (engine, Allocator::Pooling),
            Err(e) => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    max_instances = cfg.max_instances,
                    "cannot reserve the pooling allocator's address space; falling back to on-demand allocation"
                );
                (on_demand()?, Allocator::OnDemand)
            }
        },
    };
    tracing::info!(
        allocator = %allocator.as_str(),
        max_instances = cfg.max_instances,
        "engine ready"
    );
    start_epoch_ticker(&engine);
    Ok((engine, allocator))
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
