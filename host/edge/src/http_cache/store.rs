//! The cache's memory: responses by key and variant, held within a byte
//! budget and evicted least recently used first; purges by function, by
//! URL and by surrogate key.
//!
//! Sharded by key so that hits on different URLs rarely wait for each
//! other; each shard holds its share of the budget.

use super::rules::Stored;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 16;
/// What an entry costs beyond its body, headers and key: the structs, the
/// maps' slots. An estimate; it keeps a flood of tiny entries bounded too.
const ENTRY_OVERHEAD: usize = 512;

/// Where a response lives: the function, and the request target as the
/// client gave it (authority, path and query). GET and HEAD share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The function's name.
    pub function: Arc<str>,
    /// `authority` + path + `?query`.
    pub target: String,
}

/// One stored response.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The `Vary`'d request headers' values, normalised (see `rules`).
    pub variant: Vec<u8>,
    /// Freshness and validators.
    pub stored: Stored,
    /// The response's status.
    pub status: StatusCode,
    /// Its headers, as the function sent them.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
    /// `Surrogate-Key` values, for purges.
    pub surrogate_keys: Vec<String>,
    /// The version (code and settings) that made it.
    pub version: (Arc<str>, Arc<str>),
}

impl Entry {
    fn size(&self, key: &Key) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        ENTRY_OVERHEAD
            + self.body.len()
            + headers
            + key.target.len()
            + self.variant.len()
            + self.surrogate_keys.iter().map(String::len).sum::<usize>()
    }
}

struct Slot {
    /// Shared with the requests it answers: a hit clones a pointer.
    entry: Arc<Entry>,
    size: usize,
    /// Its place in the shard's recency order.
    placed: u64,
    /// When it was last used. A hit only sets this (no reordering, no
    /// allocation); eviction moves a slot used since it was placed to the
    /// back instead of evicting it, a second chance that makes the order
    /// least recently used by the time it matters.
    used: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Key, Vec<Slot>>,
    /// Recency: placement tick -> (key, variant); the first is the least
    /// recently placed (see [`Slot::used`]).
    order: BTreeMap<u64, (Key, Vec<u8>)>,
    bytes: usize,
}

/// What a purge or an eviction removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Entries.
    pub entries: u64,
    /// Bytes (as counted against the budget).
    pub bytes: u64,
}

/// The responses held, within a byte budget.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    budget_per_shard: usize,
    tick: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
    evictions: AtomicU64,
}

impl Store {
    /// A store of at most `budget` bytes.
    pub fn new(budget: usize) -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            budget_per_shard: budget / SHARDS,
            tick: AtomicU64::new(0),
            hasher: std::collections::hash_map::RandomState::new(),
            evictions: AtomicU64::new(0),
        }
    }

    /// The largest entry the store takes: one shard's budget.
    pub fn largest(&self) -> usize {
        self.budget_per_shard
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    /// The entry for `key` whose variant `matches`, marked recently used.
    pub fn get(&self, key: &Key, matches: impl Fn(&Entry) -> bool) -> Option<Arc<Entry>> {
        let mut shard = self.shard(key).lock().expect("cache shard lock");
        let tick = self.next_tick();
        let shard = &mut *shard;
        let slot = shard
            .entries
            .get_mut(key)?
            .iter_mut()
            .find(|s| matches(&s.entry))?;
        slot.used = tick;
        Some(slot.entry.clone())
    }

    /// Stores `entry` under `key`, replacing the same variant, then evicts
    /// the least recently used entries until the shard is within budget.
    /// An entry larger than [`Store::largest`] is not stored.
    pub fn insert(&self, key: Key, entry: Entry) -> Removed {
        let size = entry.size(&key);
        if size > self.budget_per_shard {
            return Removed::default();
        }
        let mut shard = self.shard(&key).lock().expect("cache shard lock");
        let shard = &mut *shard;
        let tick = self.next_tick();
        let variant = entry.variant.clone();
        let slots = shard.entries.entry(key.clone()).or_default();
        if let Some(old) = slots.iter().position(|s| s.entry.variant == variant) {
            let old = slots.swap_remove(old);
            shard.order.remove(&old.placed);
            shard.bytes -= old.size;
        }
        slots.push(Slot {
            entry: Arc::new(entry),
            size,
            placed: tick,
            used: tick,
        });
        shard.order.insert(tick, (key, variant));
        shard.bytes += size;
        let mut evicted = Removed::default();
        while shard.bytes > self.budget_per_shard {
            let Some((placed, (key, variant))) = shard.order.pop_first() else {
                break;
            };
            let slot = shard
                .entries
                .get_mut(&key)
                .and_then(|slots| slots.iter_mut().find(|s| s.entry.variant == variant));
            if let Some(slot) = slot
                && slot.used > placed
            {
                // Used since it was placed: to the back, not out.
                let again = self.next_tick();
                slot.placed = again;
                slot.used = again;
                shard.order.insert(again, (key, variant));
                continue;
            }
            if let Some(bytes) = remove_slot(shard, &key, &variant) {
                evicted.entries += 1;
                evicted.bytes += bytes as u64;
            }
        }
        self.evictions.fetch_add(evicted.entries, Ordering::Relaxed);
        evicted
    }

    /// Removes every entry `doomed` picks.
    pub fn purge(&self, doomed: impl Fn(&Key, &Entry) -> bool) -> Removed {
        let mut removed = Removed::default();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().expect("cache shard lock");
            let shard = &mut *shard;
            let mut freed = 0;
            let order = &mut shard.order;
            shard.entries.retain(|key, slots| {
                slots.retain(|s| {
                    if doomed(key, &s.entry) {
                        order.remove(&s.placed);
                        freed += s.size;
                        removed.entries += 1;
                        false
                    } else {
                        true
                    }
                });
                !slots.is_empty()
            });
            shard.bytes -= freed;
            removed.bytes += freed as u64;
        }
        removed
    }

    /// Removes every variant of `key`.
    pub fn purge_key(&self, key: &Key) -> Removed {
        let mut shard = self.shard(key).lock().expect("cache shard lock");
        let shard = &mut *shard;
        let Some(slots) = shard.entries.remove(key) else {
            return Removed::default();
        };
        let mut removed = Removed::default();
        for s in slots {
            shard.order.remove(&s.placed);
            shard.bytes -= s.size;
            removed.entries += 1;
            removed.bytes += s.size as u64;
        }
        removed
    }

    /// Bytes held, as counted against the budget.
    pub fn bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().expect("cache shard lock").bytes as u64)
            .sum()
    }

    /// Entries held.
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .expect("cache shard lock")
                    .entries
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }

    /// Entries evicted for room since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Bytes and entries held per function.
    pub fn per_function(&self) -> HashMap<Arc<str>, (u64, u64)> {
        let mut out: HashMap<Arc<str>, (u64, u64)> = HashMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("cache shard lock");
            for (key, slots) in &shard.entries {
                let e = out.entry(key.function.clone()).or_default();
                for s in slots {
                    e.0 += s.size as u64;
                    e.1 += 1;
                }
            }
        }
        out
    }
}

fn remove_slot(shard: &mut Shard, key: &Key, variant: &[u8]) -> Option<usize> {
    let slots = shard.entries.get_mut(key)?;
    let at = slots.iter().position(|s| s.entry.variant == variant)?;
    let slot = slots.swap_remove(at);
    if slots.is_empty() {
        shard.entries.remove(key);
    }
    shard.bytes -= slot.size;
    Some(slot.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn entry(body: usize) -> Entry {
        let mut response = HeaderMap::new();
        response.insert(
            http::header::CACHE_CONTROL,
            "public, max-age=60".parse().unwrap(),
        );
        let stored = super::super::rules::storable(
            &http::Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &response,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        )
        .unwrap();
        Entry {
            variant: Vec::new(),
            stored,
            status: StatusCode::OK,
            headers: response,
            body: Bytes::from(vec![0u8; body]),
            surrogate_keys: Vec::new(),
            version: (Arc::from("a"), Arc::from("b")),
        }
    }

    fn key(n: usize) -> Key {
        Key {
            function: Arc::from("f"),
            target: format!("host/{n}"),
        }
    }

    #[test]
    fn an_entry_used_since_it_was_stored_outlives_one_that_was_not() {
        // One shard's budget holds about three 10 KiB entries; all keys
        // are tried until three land in the same shard.
        let store = Store::new(SHARDS * 36 * 1024);
        let shard_of = |k: &Key| store.hasher.hash_one(k) as usize % SHARDS;
        let same: Vec<Key> = (0..1000)
            .map(key)
            .filter(|k| shard_of(k) == shard_of(&key(0)))
            .take(4)
            .collect();
        for k in &same[..3] {
            store.insert(k.clone(), entry(10 * 1024));
        }
        // The oldest is used again: the next insert evicts the second.
        assert!(store.get(&same[0], |_| true).is_some());
        let evicted = store.insert(same[3].clone(), entry(10 * 1024));
        assert_eq!(evicted.entries, 1);
        assert!(store.get(&same[0], |_| true).is_some());
        assert!(store.get(&same[1], |_| true).is_none());
        assert!(store.get(&same[2], |_| true).is_some());
        assert!(store.bytes() <= (SHARDS * 36 * 1024) as u64);
    }

    #[test]
    fn purges_free_their_bytes_and_a_too_large_entry_is_not_stored() {
        let store = Store::new(16 * 1024 * 1024);
        store.insert(key(1), entry(100));
        store.insert(key(2), entry(100));
        assert_eq!(store.entries(), 2);
        assert_eq!(store.purge_key(&key(1)).entries, 1);
        assert_eq!(store.purge(|_, _| true).entries, 1);
        assert_eq!((store.entries(), store.bytes()), (0, 0));
        store.insert(key(3), entry(store.largest() + 1));
        assert_eq!(store.entries(), 0);
    }
}
