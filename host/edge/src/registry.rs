//! The live routing table: function name -> current version, swapped
//! atomically on every deploy.

use crate::function::Function;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Table = HashMap<Arc<str>, Arc<Function>>;

/// Readers (every request) do one atomic load and a hash lookup; writers
/// (deploys, rare) copy the table and swap it in.
#[derive(Default)]
pub struct Registry {
    table: ArcSwap<Table>,
    /// Serialises writers so two deploys never lose each other's update.
    write: Mutex<()>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Function>> {
        self.table.load().get(name).cloned()
    }

    /// Publishes `function` as the current version of its name and returns
    /// the version it replaced. In-flight requests keep the old one alive.
    pub fn publish(&self, function: Arc<Function>) -> Option<Arc<Function>> {
        self.update(|table| table.insert(function.name.clone(), function))
    }

    /// Removes the route; later requests for `name` get 404.
    pub fn remove(&self, name: &str) -> Option<Arc<Function>> {
        self.update(|table| table.remove(name))
    }

    /// Every current version, in no particular order.
    pub fn functions(&self) -> Vec<Arc<Function>> {
        self.table.load().values().cloned().collect()
    }

    /// Names currently routed, in no particular order.
    pub fn names(&self) -> Vec<String> {
        self.table.load().keys().map(|k| k.to_string()).collect()
    }

    pub fn len(&self) -> usize {
        self.table.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = Table::clone(&self.table.load());
        let result = f(&mut table);
        self.table.store(Arc::new(table));
        result
    }
}
