//! What a read's freshness is computed from: how many of each replicated
//! store's local writes still wait in the outbox (not yet answered by the
//! cloud), and the HLC through which the cloud has answered this node's
//! writes.
//!
//! Both are kept in memory as records come and go and recounted from the
//! outbox whenever the database is opened, so a crash costs nothing but
//! the recount. Sequence numbers and HLC stamps are handed out in the same
//! (commit) order by the one writer, and acks remove a prefix of the
//! outbox, so "answered" is one watermark: a local version at or below it
//! has been answered by the cloud.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-store counts of waiting records, and the answered watermark.
#[derive(Debug, Default)]
pub struct Pending {
    by_store: Mutex<HashMap<String, u64>>,
    /// Highest HLC of a local record the cloud has answered.
    acked_hlc: AtomicU64,
}

/// The store a stored outbox record writes to; `None` for events and
/// placeholders. serde writes a `Record::Kv` tag first and `store` next,
/// and store ids never need escaping, so the common case is a prefix
/// match, not a parse of the whole record (the drop of a 4096-record
/// batch runs this for each).
pub(crate) fn record_store(record: &[u8]) -> Option<String> {
    const PREFIX: &[u8] = br#"{"kind":"kv","store":""#;
    // Events and placeholders: no store, and their payloads are not parsed.
    if record.starts_with(br#"{"kind":""#) && !record.starts_with(br#"{"kind":"kv""#) {
        return None;
    }
    if let Some(rest) = record.strip_prefix(PREFIX)
        && let Some(end) = rest.iter().position(|&b| b == b'"' || b == b'\\')
        && rest[end] == b'"'
    {
        return std::str::from_utf8(&rest[..end]).ok().map(str::to_owned);
    }
    match serde_json::from_slice::<outpost_wire::Record>(record) {
        Ok(outpost_wire::Record::Kv { store, .. }) => Some(store),
        _ => None,
    }
}

/// The HLC stamp of a stored outbox record; `None` for a placeholder (or
/// a record that does not parse).
pub(crate) fn record_hlc(record: &[u8]) -> Option<u64> {
    match serde_json::from_slice::<outpost_wire::Record>(record).ok()? {
        outpost_wire::Record::Kv { version, .. } => Some(version.hlc),
        outpost_wire::Record::Event { hlc, .. } => Some(hlc),
        outpost_wire::Record::Skipped { .. } => None,
    }
}

impl Pending {
    /// Counts `records` (the whole outbox, oldest first) afresh; `last_hlc`
    /// is the node's clock as stored, the watermark when nothing waits.
    pub(crate) fn recount(&self, records: impl Iterator<Item = impl AsRef<[u8]>>, last_hlc: u64) {
        let mut by_store = HashMap::new();
        let mut oldest = None;
        for record in records {
            let record = record.as_ref();
            // Placeholders carry no stamp: the oldest stamped record counts.
            if oldest.is_none() {
                oldest = record_hlc(record);
            }
            if let Some(store) = record_store(record) {
                *by_store.entry(store).or_insert(0) += 1;
            }
        }
        // Everything older than the oldest waiting record was answered.
        let acked = oldest.map_or(last_hlc, |hlc| hlc.saturating_sub(1));
        *self.lock() = by_store;
        self.acked_hlc.store(acked, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.by_store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records for `stores` (one entry per record) joined the outbox.
    pub(crate) fn added(&self, stores: &[String]) {
        if stores.is_empty() {
            return;
        }
        let mut by_store = self.lock();
        for store in stores {
            *by_store.entry(store.clone()).or_insert(0) += 1;
        }
    }

    /// Records of `stores` left the outbox.
    pub(crate) fn removed(&self, stores: impl IntoIterator<Item = String>) {
        let mut by_store = self.lock();
        for store in stores {
            if let Some(n) = by_store.get_mut(&store) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by_store.remove(&store);
                }
            }
        }
    }

    /// The cloud answered local records up to HLC `hlc`.
    pub(crate) fn answered_through(&self, hlc: u64) {
        self.acked_hlc.fetch_max(hlc, Ordering::AcqRel);
    }

    /// Local writes of `store` waiting for the cloud.
    pub fn of(&self, store: &str) -> u64 {
        self.lock().get(store).copied().unwrap_or(0)
    }

    /// Highest HLC of a local record the cloud has answered.
    pub fn acked_hlc(&self) -> u64 {
        self.acked_hlc.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_wire::{Record, Version};

    fn kv(store: &str, hlc: u64) -> Vec<u8> {
        serde_json::to_vec(&Record::Kv {
            store: store.into(),
            key: "k".into(),
            value: Some(b"v".to_vec()),
            version: Version {
                hlc,
                node: "n".into(),
            },
            seen: None,
        })
        .unwrap()
    }

    #[test]
    fn the_store_is_read_from_the_records_prefix_and_by_parsing_otherwise() {
        assert_eq!(record_store(&kv("@shop", 1)).as_deref(), Some("@shop"));
        let event = serde_json::to_vec(&Record::Event {
            topic: "t".into(),
            payload: vec![],
            idempotency_key: None,
            hlc: 5,
        })
        .unwrap();
        assert_eq!(record_store(&event), None);
        assert_eq!(record_hlc(&event), Some(5));
        // Same record, fields in another order: still found.
        let reordered = br#"{"store":"carts","kind":"kv","key":"k","value":null,"version":{"hlc":3,"node":"n"},"seen":null}"#;
        assert_eq!(record_store(reordered).as_deref(), Some("carts"));
        assert_eq!(record_hlc(reordered), Some(3));
    }

    #[test]
    fn a_recount_sets_the_watermark_just_below_the_oldest_waiting_record() {
        let pending = Pending::default();
        let records = [kv("a", 10), kv("b", 11), kv("a", 12)];
        pending.recount(records.iter().map(Vec::as_slice), 99);
        assert_eq!((pending.of("a"), pending.of("b")), (2, 1));
        assert_eq!(pending.acked_hlc(), 9);
        pending.removed(["a".to_owned()]);
        pending.answered_through(10);
        assert_eq!((pending.of("a"), pending.acked_hlc()), (1, 10));
        pending.recount(std::iter::empty::<&[u8]>(), 99);
        assert_eq!((pending.of("a"), pending.acked_hlc()), (0, 99));
    }
}
