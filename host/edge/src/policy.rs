//! What one function version may do: each capability's policy and the
//! per-request limits, built once by the loader from the function's
//! settings and the host's.

use crate::limits::Limits;
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
}
