//! Builds the process-wide wasmtime `Engine`: pooling allocator with
//! copy-on-write memory images, falling back to on-demand allocation.

use crate::config::{AllocatorChoice, ServeConfig};
use std::hash::{Hash, Hasher};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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

/// Settings shared by both allocators. Compiled code depends on these, so
/// they must not differ between the two (the code cache is shared).
fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Copy-on-write images make instantiation a few mmaps instead of copying
    // every data segment.
    config.memory_init_cow(true);
    config
}

fn pooling_config(max_instances: u32) -> PoolingAllocationConfig {
    let n = max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
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
        .max_tables_per_module(4);
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
    let pooling = || -> anyhow::Result<Engine> {
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            cfg.max_instances,
        )));
        Ok(Engine::new(&config)?)
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
