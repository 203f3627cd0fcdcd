//! Which KV stores replicate. A store replicates if the host config says
//! so, if any deployed function declares it replicated, or if it ever did
//! on this node: every writer of a replicated store must ship its writes
//! (and keep tombstones), or nodes would diverge.

use super::KvPolicy;
use super::mode::StoreWrite;
use arc_swap::ArcSwap;
use outpost_store::Storage;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The store id of a function's own `default` store. `@` cannot appear in a
/// store name, so no other function can name it.
pub fn own_store_id(function: &str) -> String {
    format!("@{function}")
}

/// The node's replicated stores: what the host declares, what deployed
/// functions declare, and what ever replicated here.
pub struct Catalog {
    /// Where "once replicated" is remembered across restarts.
    storage: Arc<Storage>,
    /// Host-declared plus ever-replicated stores: never shrinks.
    sticky: Mutex<HashSet<String>>,
    /// Every replicated store id, rebuilt whenever the functions change.
    replicated: ArcSwap<HashSet<String>>,
    /// Write modes the host config sets, by store name.
    host_writes: std::sync::OnceLock<HashMap<String, StoreWrite>>,
}

impl Catalog {
    /// The catalog of a node whose host config replicates `host_replicated`.
    pub fn new(host_replicated: HashSet<String>, storage: Arc<Storage>) -> Self {
        let mut sticky = HashSet::new();
        match storage.replicated_stores() {
            Ok(stored) => sticky.extend(stored),
            Err(e) => {
                tracing::error!(target: "outpost::stores", error = %e, "cannot read which stores replicated before")
            }
        }
        let catalog = Self {
            replicated: ArcSwap::from_pointee(sticky.clone()),
            sticky: Mutex::new(sticky),
            storage,
            host_writes: std::sync::OnceLock::new(),
        };
        catalog.add(host_replicated.iter());
        catalog
    }

    /// Remembers `stores` as replicated for good (on disk, where the feed
    /// puller reads them too); a store new here makes the node read the
    /// feed again from the start, since the changes it was sent before
    /// were not for it then.
    fn add<'a>(&self, stores: impl Iterator<Item = &'a String>) {
        let mut sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = false;
        for store in stores {
            if sticky.insert(store.clone()) {
                new = true;
                if let Err(e) = self.storage.mark_replicated(store) {
                    tracing::error!(target: "outpost::stores", store = %store, error = %e, "cannot record that a store replicates");
                }
                tracing::info!(target: "outpost::stores", store = %store, "store now replicates");
            }
        }
        if new && let Err(e) = self.storage.request_resync() {
            tracing::error!(target: "outpost::stores", error = %e, "cannot ask for a re-read of the change feed");
        }
        self.replicated.store(Arc::new(sticky.clone()));
    }

    /// The host config's write modes, by store name; set once at start
    /// (later calls are ignored).
    pub fn set_host_writes(&self, writes: HashMap<String, StoreWrite>) {
        let _ = self.host_writes.set(writes);
    }

    /// How `policy`'s function writes to `store`: its own setting, else
    /// the host's, else `local`.
    pub fn write_of(&self, policy: &KvPolicy, store: &str) -> StoreWrite {
        policy
            .writes
            .get(store)
            .or_else(|| self.host_writes.get().and_then(|w| w.get(store)))
            .copied()
            .unwrap_or_default()
    }

    /// Whether writes to `store` replicate.
    pub fn is_replicated(&self, store: &str) -> bool {
        self.replicated.load().contains(store)
    }

    /// Recomputes the replicated set from the policies of the functions
    /// deployed now, remembering newly replicated stores for good.
    pub fn rebuild<'a>(&self, policies: impl Iterator<Item = &'a KvPolicy>) {
        self.add(policies.flat_map(|policy| policy.replicated.iter()));
    }
}
