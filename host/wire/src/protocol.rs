//! The edge <-> cloud protocol: outbox records, ingest batches and acks,
//! the change feed, events and conflicts. JSON, with bytes as base64.

use serde::{Deserialize, Serialize};

/// The version of a key's value: when (HLC) and by whom. Ordered by HLC,
/// then node id, which is the last-writer-wins order everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The writer's hybrid logical clock stamp (see [`crate::hlc`]).
    pub hlc: u64,
    /// Id of the node that made the write; breaks ties between equal stamps.
    pub node: String,
}

/// One change made on an edge, as it travels in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// A write to a replicated store.
    Kv {
        /// Store id (`@NAME` for a function's own store, else the shared name).
        store: String,
        /// Key written in that store.
        key: String,
        /// `None` is a delete (a tombstone, so it can win or lose like a write).
        #[serde(with = "b64_opt")]
        value: Option<Vec<u8>>,
        /// Version the write was stamped with on its node.
        version: Version,
        /// The version of the key the writer saw before writing; a write that
        /// did not see the cloud's current version is a conflict.
        seen: Option<Version>,
    },
    /// A queue event.
    Event {
        /// Topic the event was published to.
        topic: String,
        /// The event's body, opaque to the host.
        #[serde(with = "b64")]
        payload: Vec<u8>,
        /// Key under which retries of the same enqueue collapse into one event.
        idempotency_key: Option<String>,
        /// HLC stamp at enqueue time.
        hlc: u64,
    },
    /// A placeholder for a record the edge set aside after the cloud refused
    /// its bytes: it keeps the sequence without a gap and applies nothing.
    Skipped {
        /// Why the original was set aside.
        reason: String,
    },
}

/// A record with its per-node sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Per-node sequence number, increasing in commit order, never reused.
    pub seq: u64,
    /// The change itself.
    pub record: Record,
    /// Where the record was numbered before `--new-epoch` renumbered it:
    /// the cloud applies it only if that position did not already apply
    /// the same record, so a renewed (or copied) data dir applies nothing
    /// twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The edge waits on this write (a `forward` store): the ack says
    /// whether the record's version is the cloud's current one for its key
    /// once the batch is applied (redelivered or not), or which version
    /// superseded it. Not part of the entry's content (its digest).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome: bool,
}

/// A record's position under an earlier epoch of the same data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The earlier epoch.
    pub epoch: u64,
    /// Its sequence number there.
    pub seq: u64,
}

/// What an edge POSTs to `/v1/ingest`: entries in increasing `seq` order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// Id of the sending edge node.
    pub node: String,
    /// Random id of the edge's database, fixed at its creation: an edge
    /// whose data dir was wiped restarts its sequence numbers under a new
    /// epoch instead of having them mistaken for duplicates.
    pub epoch: u64,
    /// The records being shipped, oldest first.
    pub entries: Vec<Entry>,
}

/// The cloud's answer to a batch, sent only once the batch is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Entries applied for the first time.
    pub applied: u64,
    /// Entries already applied by an earlier delivery (ignored).
    pub duplicates: u64,
    /// Highest sequence number in the batch: everything up to it may go.
    pub through: u64,
    /// Entries the cloud refused for good (its verdict on each, by code):
    /// they count as consumed, so the edge sets them aside instead of
    /// sending them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refusal>,
    /// Of the KV entries that asked for their [`Entry::outcome`], those
    /// whose version is not the cloud's current one for their key after
    /// this batch (a newer write won, from any node); the others are the
    /// current version. Absent from clouds that predate it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<Superseded>,
    /// The sequence numbers of the flagged KV entries the cloud answered
    /// (those in `superseded` and the current ones): the edge says
    /// "applied" only for one listed here, so a cloud that predates the
    /// flag, or an entry it did not answer, never reads as applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<u64>,
}

/// A write that lost, as the cloud tells the edge that waits on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    /// The entry's sequence number.
    pub seq: u64,
    /// The version the cloud holds for the key instead.
    pub winner: Version,
}

/// The cloud's verdict on one entry it will never apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The entry's sequence number.
    pub seq: u64,
    /// A code of [`crate::validate::Invalid`].
    pub code: String,
    /// What was wrong, for the operator.
    pub reason: String,
}

/// Codes of the cloud's refusals of a whole batch (the `error` field of its
/// JSON error body). The edge stops shipping on these until the cause is
/// fixed, and never drops records for them.
pub mod refusal {
    /// The batch's epoch belongs to another node: the data dir was copied.
    pub const EPOCH_OWNED: &str = "epoch-owned";
    /// The batch does not start at the next expected sequence number.
    pub const SEQUENCE_GAP: &str = "sequence-gap";
    /// An already applied sequence number arrived with different content:
    /// two processes ship under one database identity.
    pub const CLONE_DETECTED: &str = "clone-detected";
    /// The batch names another node than the credential's.
    pub const WRONG_NODE: &str = "wrong-node";
    /// The credential may not ship batches (a reader's).
    pub const FORBIDDEN: &str = "forbidden";
    /// The body is over the cloud's batch limit.
    pub const TOO_LARGE: &str = "too-large";
    /// The body is not a batch at all.
    pub const MALFORMED: &str = "malformed-batch";
}

/// One accepted KV write, as served by the change feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the feed; pass the last one seen as `since`.
    pub cursor: u64,
    /// Store id the write belongs to.
    pub store: String,
    /// Key written in that store.
    pub key: String,
    /// The value written; `None` for a delete (tombstone).
    #[serde(with = "b64_opt")]
    pub value: Option<Vec<u8>>,
    /// The write's version, compared last-writer-wins on each edge.
    pub version: Version,
}

/// A page of the change feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedPage {
    /// Accepted writes after `since`, in feed order.
    pub changes: Vec<Change>,
    /// Cursor to ask from next time (the last change's, or `since` if none).
    pub next: u64,
    /// Random id of the cloud's database: cursors are only meaningful for
    /// the database that issued them, so a new id means "start over".
    pub cloud: u64,
    /// Conflicts the cloud has recorded so far, for the edge's metrics.
    #[serde(default)]
    pub conflicts: u64,
}

/// A queue event as stored by the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Cloud-wide position of the event.
    pub id: u64,
    /// Topic the event was published to.
    pub topic: String,
    /// Edge node that enqueued it.
    pub node: String,
    /// The event's id on its node (what `enqueue` returned there).
    pub seq: u64,
    /// The event's body, opaque to the host.
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    /// Idempotency key given at enqueue, if any.
    pub idempotency_key: Option<String>,
    /// HLC stamp from the enqueuing node.
    pub hlc: u64,
}

/// A write that was made without seeing the cloud's current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Cloud-wide position of the conflict record, for paging.
    pub id: u64,
    /// Store id of the contested key.
    pub store: String,
    /// The contested key.
    pub key: String,
    /// The version that is now current.
    pub winner: Version,
    /// The current value (`None`: deleted).
    #[serde(with = "b64_opt")]
    pub winner_value: Option<Vec<u8>>,
    /// Version of the write that lost last-writer-wins.
    pub loser: Version,
    /// The value the losing write carried (`None`: a delete), kept for operators.
    #[serde(with = "b64_opt")]
    pub loser_value: Option<Vec<u8>>,
}

/// A page of events or conflicts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items on this page, oldest first.
    pub items: Vec<T>,
    /// Position to ask from next time (the last item's, or `since` if none).
    pub next: u64,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes bytes as a standard base64 string.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads a standard base64 string back into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` bytes as base64 and `None` as null.
    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::b64::serialize(bytes, s),
            None => s.serialize_none(),
        }
    }

    /// Reads null as `None` and a base64 string as `Some` bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_json() {
        let records = [
            Record::Kv {
                store: "@profile".into(),
                key: "user/1".into(),
                value: Some(vec![0, 159, 255]),
                version: Version {
                    hlc: 7,
                    node: "a".into(),
                },
                seen: None,
            },
            Record::Kv {
                store: "s".into(),
                key: "k".into(),
                value: None,
                version: Version {
                    hlc: 8,
                    node: "a".into(),
                },
                seen: Some(Version {
                    hlc: 7,
                    node: "b".into(),
                }),
            },
            Record::Event {
                topic: "orders".into(),
                payload: b"{}".to_vec(),
                idempotency_key: Some("k1".into()),
                hlc: 9,
            },
        ];
        for record in records {
            let json = serde_json::to_string(&record).unwrap();
            assert_eq!(
                serde_json::from_str::<Record>(&json).unwrap(),
                record,
                "{json}"
            );
        }
    }

    #[test]
    fn versions_order_by_hlc_then_node() {
        let v = |hlc, node: &str| Version {
            hlc,
            node: node.into(),
        };
        assert!(v(2, "a") > v(1, "z"));
        assert!(v(1, "b") > v(1, "a"));
    }
}

/// Fuzzing of the cloud's batch decoder (proptest as the fuzzer, so it
/// runs bounded in the normal test suite).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn version() -> impl Strategy<Value = Version> {
        (any::<u64>(), "[a-z0-9.-]{1,16}").prop_map(|(hlc, node)| Version { hlc, node })
    }

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                "@?[a-z]{1,8}",
                "\\PC{0,16}",
                prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
                version(),
                prop::option::of(version()),
            )
                .prop_map(|(store, key, value, version, seen)| Record::Kv {
                    store,
                    key,
                    value,
                    version,
                    seen,
                }),
            (
                "[a-z.]{1,8}",
                prop::collection::vec(any::<u8>(), 0..64),
                prop::option::of("\\PC{1,16}"),
                any::<u64>(),
            )
                .prop_map(|(topic, payload, idempotency_key, hlc)| Record::Event {
                    topic,
                    payload,
                    idempotency_key,
                    hlc,
                }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = serde_json::from_slice::<Batch>(&bytes);
        }

        #[test]
        fn mangled_batches_never_panic_the_decoder(
            entries in prop::collection::vec((any::<u64>(), record()), 0..6),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let batch = Batch {
                node: "n".into(),
                epoch: 1,
                entries: entries.into_iter().map(|(seq, record)| Entry { seq, record, origin: None, outcome: false }).collect(),
            };
            let mut json = serde_json::to_vec(&batch).unwrap();
            let decoded: Batch = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(decoded.entries, batch.entries);
            let i = flip.index(json.len());
            json[i] ^= 0x20;
            let _ = serde_json::from_slice::<Batch>(&json);
            json.truncate(cut.index(json.len()));
            let _ = serde_json::from_slice::<Batch>(&json);
        }
    }
}
