//! A loaded, validated function version: what the router hands a request.

use crate::activity::FunctionStats;
use crate::policy::Policy;
use crate::state::RequestState;
use outpost_caps::Services;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Where a version's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Compiled,
    Cache,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Compiled => "compiled",
            Origin::Cache => "cache",
        }
    }
}

/// One immutable version of a function. Requests hold an `Arc` to the
/// version they started on, so a reload never disturbs them; the version is
/// freed when its last request ends.
pub struct Function {
    pub name: Arc<str>,
    /// Hex SHA-256 of the `.wasm` bytes: the version's identity.
    pub sha256: String,
    /// Hex SHA-256 of the settings file (`NAME.toml`), or of nothing.
    pub settings_sha256: String,
    /// What this version's settings allow it.
    pub policy: Policy,
    /// The node's database and store catalog, shared by every function.
    pub services: Arc<Services>,
    /// Linked and type-checked once per version and engine (one per core,
    /// in engine order); each request only instantiates the one of the
    /// engine its thread uses (see [`Function::pre`]).
    pub pres: Arc<[ProxyPre<RequestState>]>,
    pub origin: Origin,
    pub loaded_at: SystemTime,
    /// Wall time from reading the file's bytes to a ready `ProxyPre`.
    pub load_time: Duration,
    /// The name's request counters, shared by all its versions.
    pub stats: Arc<FunctionStats>,
}

impl Function {
    /// The same code under new settings: no recompile, no relink.
    pub fn with_settings(&self, settings_sha256: String, policy: Policy) -> Function {
        Function {
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            settings_sha256,
            policy,
            services: self.services.clone(),
            pres: self.pres.clone(),
            origin: self.origin,
            loaded_at: SystemTime::now(),
            load_time: Duration::ZERO,
            stats: self.stats.clone(),
        }
    }

    /// Which engine the calling thread instantiates from (index into `pres`).
    pub fn engine_index(&self) -> usize {
        crate::engine::engine_for_current_thread(self.pres.len())
    }

    /// The version linked for the calling thread's engine.
    pub fn pre(&self) -> &ProxyPre<RequestState> {
        &self.pres[self.engine_index()]
    }

    /// The first 12 hex digits of the hash, as shown in logs.
    pub fn short_hash(&self) -> &str {
        &self.sha256[..12]
    }
}
