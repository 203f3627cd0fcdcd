//! What one function version may do: each capability's policy, the
//! per-request limits and the function's env and secrets, built once by
//! the loader from the function's settings and the host's.

use crate::function_env::FunctionEnv;
use crate::limits::Limits;
use outpost_caps::cache::CachePolicy;
use outpost_caps::kv::KvPolicy;
use outpost_caps::outbound::HostPattern;
use outpost_caps::queue::QueuePolicy;
use std::sync::Arc;

/// What a function version may do, from its settings and the host's.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Stores it may open, which replicate, key and value limits.
    pub kv: Arc<KvPolicy>,
    /// What it may enqueue.
    pub queue: QueuePolicy,
    /// Per-request limits (the host's, or tighter).
    pub limits: Limits,
    /// Hosts outbound HTTP may reach; empty denies all.
    pub allowed_hosts: Arc<[HostPattern]>,
    /// `[env]` and the secrets' values, read when the settings were
    /// applied; shared by every request of the version.
    pub env: Arc<FunctionEnv>,
    /// `[cache]`: the HTTP cache in front of it.
    pub cache: crate::function_config::CacheSection,
    /// The node's HTTP cache, which `outpost:edge/cache` purges this
    /// function's own entries from (none: the node runs without one).
    pub purge: CachePolicy,
}
