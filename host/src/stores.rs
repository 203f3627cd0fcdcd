//! Which KV stores replicate. A store replicates if the host config says so
//! or if any deployed function declares it replicated: every writer of a
//! replicated store must ship its writes, or nodes would diverge.

use crate::function::Function;
use arc_swap::ArcSwap;
use std::collections::HashSet;
use std::sync::Arc;

/// The store id of a function's own `default` store. `@` cannot appear in a
/// store name, so no other function can name it.
pub fn own_store_id(function: &str) -> String {
    format!("@{function}")
}

pub struct Catalog {
    /// Shared stores the host config declares replicated.
    host_replicated: HashSet<String>,
    /// Every replicated store id, rebuilt whenever the functions change.
    replicated: ArcSwap<HashSet<String>>,
}

impl Catalog {
    pub fn new(host_replicated: HashSet<String>) -> Self {
        Self {
            replicated: ArcSwap::from_pointee(host_replicated.clone()),
            host_replicated,
        }
    }

    pub fn is_replicated(&self, store: &str) -> bool {
        self.replicated.load().contains(store)
    }

    /// Recomputes the replicated set from the host config and `functions`.
    pub fn rebuild<'a>(&self, functions: impl Iterator<Item = &'a Arc<Function>>) {
        let mut replicated = self.host_replicated.clone();
        for function in functions {
            replicated.extend(function.kv.replicated.iter().cloned());
        }
        self.replicated.store(Arc::new(replicated));
    }
}
