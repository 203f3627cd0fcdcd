//! The host capabilities a function imports, each one unit in plain code
//! (the shape of wasmtime's `wasi-keyvalue` and Spin's factors):
//!
//! - settings, parsed from the function's `NAME.toml` section;
//! - a policy, built once per function version;
//! - a context, made per request and held in one field of the edge's store
//!   data;
//! - an `add_to_linker` generic over that store data, with a projection
//!   onto its own context.
//!
//! [`kv`] (stores, grants, replication), [`wasi_keyvalue`] (the standard
//! `wasi:keyvalue` over kv's stores and policy), [`queue`] (durable events
//! to the cloud), [`outbound`] (`wasi:http` requests out, deny by
//! default) and [`cache`] (a function's own entries in the node's HTTP
//! cache, purged by surrogate key).
//! A capability reports its failures with its own typed errors; it knows
//! nothing of the edge's server, router or admin.

#![warn(missing_docs)]

pub mod bindings;
pub mod cache;
pub mod kv;
pub mod link;
pub mod ops;
pub mod outbound;
pub mod queue;
mod storage_failure;
pub mod wasi_keyvalue;

use std::sync::Arc;

/// The node-wide parts the capabilities share: made once per node, held
/// by every function version, and cloned (one `Arc`) into each request's
/// kv and queue contexts.
pub struct Services {
    /// The node's database.
    pub storage: Arc<outpost_store::Storage>,
    /// Which stores replicate.
    pub catalog: Arc<kv::Catalog>,
    /// `outpost_kv_operations_total{op, result}`.
    pub ops: ops::OpCounts,
    /// The cloud link as replication sees it (freshness, forward writes).
    pub link: Arc<link::CloudLink>,
}
