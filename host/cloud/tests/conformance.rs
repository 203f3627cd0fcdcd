//! The store contract's conformance suite: the same test functions run
//! against every backend (embedded sled, and PostgreSQL in a private
//! cluster the suite starts itself), so both give the same answers for the
//! same calls. Each test gets a fresh database; where replicas matter,
//! `replica()` opens a second handle over the same database (for
//! PostgreSQL a second connection pool and LISTEN connection, as a second
//! `outpost cloud` process would; for sled, the one process it can be).

use outpost_cloud::api::explorer;
use outpost_cloud::contract::{
    Checked, CloudStore, CloudStoreError, KeyPage, MAX_PAGE_BYTES, Reviewed,
};
use outpost_cloud::credentials::{Enrol, Principal, token_hash};
use outpost_cloud::pg::{Pg, PgOptions};
use outpost_cloud::sled_store::Sled;
use outpost_wire::explain::Review;
use outpost_wire::validate::Invalid;
use outpost_wire::{Entry, Origin, Record, Superseded, Version};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A fresh database of one backend, and how to reach it again.
trait Backend: Sized + Send + Sync + 'static {
    type Store: CloudStore;
    async fn fresh() -> Self;
    fn store(&self) -> Self::Store;
    /// Another replica over the same database.
    async fn replica(&self) -> Self::Store;
    /// The same database closed and opened again, as a restart does (the
    /// caller drops its handles first).
    async fn reopen(self) -> Self;
}

struct SledBackend {
    store: Sled,
    _dir: tempfile::TempDir,
}

impl Backend for SledBackend {
    type Store = Sled;
    async fn fresh() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            store: Sled::open(dir.path()).unwrap(),
            _dir: dir,
        }
    }
    fn store(&self) -> Sled {
        self.store.clone()
    }
    async fn replica(&self) -> Sled {
        self.store.clone()
    }
    async fn reopen(self) -> Self {
        let Self { store, _dir: dir } = self;
        drop(store);
        // The old instance's threads let go of sled's lock soon after.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match Sled::open(dir.path()) {
                Ok(store) => return Self { store, _dir: dir },
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("cannot reopen the database: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

struct PgBackend {
    url: String,
    store: Pg,
}

impl Backend for PgBackend {
    type Store = Pg;
    async fn fresh() -> Self {
        let url = tokio::task::spawn_blocking(|| outpost_pg_cluster::fresh_database("conformance"))
            .await
            .unwrap();
        let store = Pg::connect(&url, PgOptions::default()).await.unwrap();
        Self { url, store }
    }
    fn store(&self) -> Pg {
        self.store.clone()
    }
    async fn replica(&self) -> Pg {
        Pg::connect(&self.url, PgOptions::default()).await.unwrap()
    }
    async fn reopen(self) -> Self {
        let Self { url, store } = self;
        drop(store);
        let store = Pg::connect(&url, PgOptions::default()).await.unwrap();
        Self { url, store }
    }
}

fn kv(seq: u64, key: &str, value: &str, hlc: u64, node: &str, seen: Option<Version>) -> Entry {
    Entry {
        origin: None,
        outcome: false,
        seq,
        record: Record::Kv {
            store: "s".into(),
            key: key.into(),
            value: Some(value.as_bytes().to_vec()),
            version: Version {
                hlc,
                node: node.into(),
            },
            seen,
        },
    }
}

fn event(seq: u64, topic: &str, payload: u8, key: Option<&str>) -> Entry {
    Entry {
        origin: None,
        outcome: false,
        seq,
        record: Record::Event {
            topic: topic.into(),
            payload: vec![payload],
            idempotency_key: key.map(Into::into),
            hlc: seq,
        },
    }
}

/// Each test node has its own database, so its own epoch.
fn batch(node: &str, entries: Vec<Entry>) -> Checked {
    Checked {
        node: node.into(),
        epoch: u64::from(node.as_bytes()[0]),
        entries: entries.into_iter().map(|e| (e, None)).collect(),
    }
}

async fn value_of(store: &impl CloudStore, key: &str) -> Option<Vec<u8>> {
    store.get("s", key).await.unwrap().and_then(|(_, v)| v)
}

async fn a_second_node_on_an_epoch_is_refused_and_changes_nothing<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    store
        .ingest(batch("a", vec![kv(1, "k", "v1", 10, "a", None)]))
        .await
        .unwrap();
    let mut copy = batch("b", vec![kv(2, "k", "v2", 11, "b", None)]);
    copy.epoch = u64::from(b'a');
    assert!(matches!(
        store.ingest(copy).await,
        Err(CloudStoreError::EpochOwned { owner, .. }) if owner == "a"
    ));
    assert_eq!(value_of(&store, "k").await.unwrap(), b"v1");
}

async fn gaps_before_or_inside_a_batch_are_refused<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let holed = batch(
        "a",
        vec![
            kv(1, "k", "v", 10, "a", None),
            kv(3, "k", "v", 11, "a", None),
        ],
    );
    assert!(matches!(
        store.ingest(holed).await,
        Err(CloudStoreError::SequenceGap {
            expected: 2,
            got: 3
        })
    ));
    assert!(store.get("s", "k").await.unwrap().is_none());
    // A new epoch may start anywhere (its earlier records went to a
    // replaced cloud database); from then on, no gaps.
    let first = batch("a", vec![kv(5, "k", "v", 10, "a", None)]);
    assert_eq!(store.ingest(first).await.unwrap().applied, 1);
    let late = batch("a", vec![kv(7, "k", "v", 12, "a", None)]);
    assert!(matches!(
        store.ingest(late).await,
        Err(CloudStoreError::SequenceGap {
            expected: 6,
            got: 7
        })
    ));
    assert_eq!(store.feed(0, 10).await.unwrap().changes.len(), 1);
}

async fn out_of_order_batches_are_refused<B: Backend>() {
    let db = B::fresh().await;
    let b = batch(
        "a",
        vec![kv(2, "k", "v", 1, "a", None), kv(1, "k", "v", 2, "a", None)],
    );
    assert!(matches!(
        db.store().ingest(b).await,
        Err(CloudStoreError::OutOfOrder(1, 2))
    ));
    assert!(db.store().get("s", "k").await.unwrap().is_none());
}

async fn a_redelivery_with_other_content_is_a_clone<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    store
        .ingest(batch("a", vec![kv(1, "k", "mine", 10, "a", None)]))
        .await
        .unwrap();
    let same = store
        .ingest(batch("a", vec![kv(1, "k", "mine", 10, "a", None)]))
        .await
        .unwrap();
    assert_eq!(same.duplicates, 1);
    let other = batch(
        "a",
        vec![
            kv(1, "k", "theirs", 12, "a", None),
            kv(2, "j", "x", 13, "a", None),
        ],
    );
    assert!(matches!(
        store.ingest(other).await,
        Err(CloudStoreError::CloneDetected(1))
    ));
    assert!(
        store.get("s", "j").await.unwrap().is_none(),
        "nothing of it applied"
    );
}

async fn refused_entries_consume_their_sequence_number_and_apply_nothing<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let mut b = batch(
        "a",
        vec![
            kv(1, "k", "bad", 10, "a", None),
            kv(2, "j", "good", 11, "a", None),
        ],
    );
    b.entries[0].1 = Some(Invalid::ClockSkew);
    let ack = store.ingest(b.clone()).await.unwrap();
    assert_eq!((ack.applied, ack.through), (1, 2));
    assert_eq!(ack.refused.len(), 1);
    assert_eq!(
        (ack.refused[0].seq, ack.refused[0].code.as_str()),
        (1, "clock-skew")
    );
    assert!(store.get("s", "k").await.unwrap().is_none());
    // The answer may have been lost: a redelivery says "refused" again.
    let again = store.ingest(b).await.unwrap();
    assert_eq!((again.duplicates, again.refused.len()), (2, 1));
    assert_eq!(again.refused[0].seq, 1);
    let next = store
        .ingest(batch("a", vec![kv(3, "k", "v", 12, "a", None)]))
        .await
        .unwrap();
    assert_eq!(next.applied, 1, "no gap after a refusal");
}

async fn a_renumbered_record_is_not_applied_twice<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let old = Checked {
        node: "a".into(),
        epoch: 1,
        entries: vec![
            (event(1, "t", 1, None), None),
            (event(2, "t", 2, None), None),
        ],
    };
    store.ingest(old).await.unwrap();
    // Epoch 1's data dir was renewed with 2 and 3 still in its outbox (2's
    // ack was lost), now numbered 1 and 2 of epoch 2.
    let mut renumbered = vec![event(1, "t", 2, None), event(2, "t", 3, None)];
    for (e, seq) in renumbered.iter_mut().zip([2, 3]) {
        // The HLC is part of the record: keep the original's.
        if let Record::Event { hlc, .. } = &mut e.record {
            *hlc = seq;
        }
        e.origin = Some(Origin { epoch: 1, seq });
    }
    let renewed = Checked {
        node: "a".into(),
        epoch: 2,
        entries: renumbered.into_iter().map(|e| (e, None)).collect(),
    };
    let ack = store.ingest(renewed).await.unwrap();
    assert_eq!((ack.applied, ack.duplicates), (1, 1));
    // A copy still on epoch 1 ships its seq 3 (the same record) later.
    let late = Checked {
        node: "a".into(),
        epoch: 1,
        entries: vec![(event(3, "t", 3, None), None)],
    };
    let ack = store.ingest(late).await.unwrap();
    assert_eq!((ack.applied, ack.duplicates), (0, 1));
    let payloads: Vec<u8> = store
        .events("t", 0, 10)
        .await
        .unwrap()
        .items
        .iter()
        .map(|e| e.payload[0])
        .collect();
    assert_eq!(payloads, [1, 2, 3]);
}

async fn a_record_refused_at_its_first_place_is_applied_when_renumbered_and_valid<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let refused = Checked {
        node: "a".into(),
        epoch: 1,
        entries: vec![(event(1, "t", 7, None), Some(Invalid::TopicNotAllowed))],
    };
    assert_eq!(store.ingest(refused).await.unwrap().refused.len(), 1);
    let mut renumbered = event(1, "t", 7, None);
    renumbered.origin = Some(Origin { epoch: 1, seq: 1 });
    let renewed = Checked {
        node: "a".into(),
        epoch: 2,
        entries: vec![(renumbered, None)],
    };
    let ack = store.ingest(renewed).await.unwrap();
    assert_eq!((ack.applied, ack.duplicates), (1, 0));
    assert_eq!(store.events("t", 0, 10).await.unwrap().items.len(), 1);
}

async fn pages_stop_at_a_byte_budget_but_hold_at_least_one_item<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let big = "x".repeat(MAX_PAGE_BYTES / 3);
    let entries = (1..=5)
        .map(|i| kv(i, &format!("k{i}"), &big, 10 + i, "a", None))
        .collect();
    store.ingest(batch("a", entries)).await.unwrap();
    let page = store.feed(0, 1000).await.unwrap();
    assert!(
        (1..5).contains(&page.changes.len()),
        "{} changes",
        page.changes.len()
    );
    let huge = "y".repeat(MAX_PAGE_BYTES + 1);
    store
        .ingest(batch("b", vec![kv(1, "h", &huge, 99, "b", None)]))
        .await
        .unwrap();
    let mut since = page.next;
    let mut seen = page.changes.len();
    while seen < 6 {
        let page = store.feed(since, 1000).await.unwrap();
        assert!(!page.changes.is_empty());
        seen += page.changes.len();
        since = page.next;
    }
}

/// Keys and idempotency keys may hold any character, NUL included (the
/// edge allows them; PostgreSQL's TEXT would refuse them).
async fn keys_with_nul_and_other_bytes_are_kept_exactly<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let key = "a\u{0}b\u{1}é";
    let ack = store
        .ingest(batch(
            "a",
            vec![
                kv(1, key, "v", 10, "a", None),
                event(2, "t", 1, Some("k\u{0}1")),
                event(3, "t", 2, Some("k\u{0}1")),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(ack.applied, 3);
    assert_eq!(value_of(&store, key).await.unwrap(), b"v");
    assert!(store.get("s", "a").await.unwrap().is_none());
    let feed = store.feed(0, 10).await.unwrap().changes;
    assert_eq!(feed[0].key, key);
    let events = store.events("t", 0, 10).await.unwrap().items;
    assert_eq!(
        events.len(),
        1,
        "the second claim of the key is a duplicate"
    );
    assert_eq!(events[0].idempotency_key.as_deref(), Some("k\u{0}1"));
}

/// Events and conflicts pages stop before the item that would cross the
/// byte budget (bar the first), on every backend alike.
async fn event_pages_stop_before_the_item_that_crosses_the_budget<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let big = vec![7u8; MAX_PAGE_BYTES / 3];
    let entries = (1..=4)
        .map(|seq| Entry {
            origin: None,
            outcome: false,
            seq,
            record: Record::Event {
                topic: "big".into(),
                payload: big.clone(),
                idempotency_key: None,
                hlc: seq,
            },
        })
        .collect();
    store.ingest(batch("a", entries)).await.unwrap();
    let mut sizes = Vec::new();
    let mut since = 0;
    loop {
        let page = store.events("big", since, 100).await.unwrap();
        if page.items.is_empty() {
            break;
        }
        sizes.push(page.items.len());
        since = page.next;
    }
    // Each event is over a quarter of the budget in JSON (base64): two
    // fit a page, a third would cross it.
    assert_eq!(sizes, [2, 2], "{sizes:?}");
}

async fn credentials_are_found_by_token_hash_and_revoked<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let (credential, token) = Enrol::node("edge-a").issue().unwrap();
    store.put_credential(credential.clone()).await.unwrap();
    let hash = token_hash(&token);
    // Another replica knows it at once: nothing is kept per process.
    let other = db.replica().await;
    assert_eq!(
        other.credential_by_hash(&hash).await.unwrap(),
        Some(credential.clone())
    );
    assert!(store.revoke_credential(&credential.id).await.unwrap());
    let revoked = other.credential_by_hash(&hash).await.unwrap().unwrap();
    assert!(revoked.revoked_ms.is_some());
    assert!(!store.revoke_credential("nope").await.unwrap());
    assert_eq!(other.credentials().await.unwrap().len(), 1);
}

async fn redelivery_applies_nothing_twice<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let b = batch(
        "a",
        vec![
            kv(1, "k", "v1", 10, "a", None),
            kv(2, "k", "v2", 11, "a", None),
        ],
    );
    let first = store.ingest(b.clone()).await.unwrap();
    assert_eq!((first.applied, first.duplicates, first.through), (2, 0, 2));
    // At another replica, after the first answer was lost.
    let again = db.replica().await.ingest(b).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 2));
    assert_eq!(store.feed(0, 100).await.unwrap().changes.len(), 2);
}

async fn concurrent_writes_resolve_by_hlc_and_record_a_conflict<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    store
        .ingest(batch("b", vec![kv(1, "k", "from-b", 20, "b", None)]))
        .await
        .unwrap();
    // `a` wrote earlier (lower HLC) without having seen b's write.
    store
        .ingest(batch("a", vec![kv(1, "k", "from-a", 10, "a", None)]))
        .await
        .unwrap();
    let (version, value) = store.get("s", "k").await.unwrap().unwrap();
    assert_eq!(
        (version.node.as_str(), value.unwrap()),
        ("b", b"from-b".to_vec())
    );
    let conflicts = store.conflicts(0, 10).await.unwrap().items;
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].winner.node, "b");
    assert_eq!(conflicts[0].loser.node, "a");
    assert_eq!(conflicts[0].winner_value.as_deref(), Some(&b"from-b"[..]));
    assert_eq!(conflicts[0].loser_value.as_deref(), Some(&b"from-a"[..]));
    assert_eq!(store.conflict_count().await.unwrap(), 1);
    // The losing write does not enter the feed.
    assert_eq!(store.feed(0, 10).await.unwrap().changes.len(), 1);
    // A tie on HLC goes to the higher node id.
    store
        .ingest(batch("c", vec![kv(1, "k", "from-c", 20, "c", None)]))
        .await
        .unwrap();
    assert_eq!(value_of(&store, "k").await.unwrap(), b"from-c");
}

async fn writes_to_one_key_in_one_batch_resolve_in_order<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let v1 = Version {
        hlc: 10,
        node: "a".into(),
    };
    let ack = store
        .ingest(batch(
            "a",
            vec![
                kv(1, "k", "one", 10, "a", None),
                kv(2, "k", "two", 11, "a", Some(v1)),
                // Stale and blind: loses, and is a conflict.
                kv(3, "k", "old", 5, "a", None),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(ack.applied, 3);
    assert_eq!(value_of(&store, "k").await.unwrap(), b"two");
    let feed = store.feed(0, 10).await.unwrap().changes;
    let values: Vec<&[u8]> = feed.iter().map(|c| c.value.as_deref().unwrap()).collect();
    assert_eq!(values, [&b"one"[..], b"two"]);
    assert_eq!(store.conflicts(0, 10).await.unwrap().items.len(), 1);
}

/// `entry` as a write its edge waits on (a `forward` store).
fn awaited(mut entry: Entry) -> Entry {
    entry.outcome = true;
    entry
}

fn version(hlc: u64, node: &str) -> Version {
    Version {
        hlc,
        node: node.into(),
    }
}

/// A waiting write that loses last-writer-wins hears which version won;
/// one that wins (over nothing, or over what it saw) hears nothing.
async fn a_waiting_write_that_loses_hears_the_winner<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    store
        .ingest(batch("b", vec![kv(1, "k", "from-b", 20, "b", None)]))
        .await
        .unwrap();
    // `a` wrote earlier (lower HLC) and arrives later.
    let ack = store
        .ingest(batch(
            "a",
            vec![awaited(kv(1, "k", "from-a", 10, "a", None))],
        ))
        .await
        .unwrap();
    assert_eq!((ack.applied, ack.duplicates), (1, 0));
    assert_eq!(
        ack.superseded,
        [Superseded {
            seq: 1,
            winner: version(20, "b")
        }]
    );
    assert_eq!(ack.answered, [1]);
    assert_eq!(value_of(&store, "k").await.unwrap(), b"from-b");
    let ack = store
        .ingest(batch(
            "a",
            vec![
                awaited(kv(2, "j", "new", 11, "a", None)),
                awaited(kv(3, "k", "newest", 30, "a", Some(version(20, "b")))),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(ack.applied, 2);
    assert!(ack.superseded.is_empty(), "{:?}", ack.superseded);
    assert_eq!(ack.answered, [2, 3], "both answered: the edge says applied");
    assert_eq!(value_of(&store, "k").await.unwrap(), b"newest");
}

/// A redelivered waiting write is answered by the key's version now, not
/// by what its first delivery did: here a newer write from another node
/// came in between. Same for a renumbered record whose old place applied
/// it. Duplicates count as before.
async fn a_redelivered_waiting_write_is_answered_by_the_current_version<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let b = batch(
        "a",
        vec![
            awaited(kv(1, "k", "from-a", 10, "a", None)),
            awaited(kv(2, "j", "from-a", 11, "a", None)),
        ],
    );
    let first = store.ingest(b.clone()).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (2, 0));
    assert!(first.superseded.is_empty(), "{:?}", first.superseded);
    store
        .ingest(batch("b", vec![kv(1, "k", "from-b", 20, "b", None)]))
        .await
        .unwrap();
    // The first answer was lost; the edge sends again, at another replica.
    let again = db.replica().await.ingest(b).await.unwrap();
    assert_eq!((again.applied, again.duplicates, again.through), (0, 2, 2));
    let lost = [Superseded {
        seq: 1,
        winner: version(20, "b"),
    }];
    assert_eq!(again.superseded, lost);
    // The data dir was renewed with seq 1 still in its outbox: renumbered
    // to 1 of a new epoch, skipped because its old place applied it.
    let mut renumbered = awaited(kv(1, "k", "from-a", 10, "a", None));
    renumbered.origin = Some(Origin {
        epoch: u64::from(b'a'),
        seq: 1,
    });
    let renewed = Checked {
        node: "a".into(),
        epoch: 1000,
        entries: vec![(renumbered, None)],
    };
    let ack = store.ingest(renewed).await.unwrap();
    assert_eq!((ack.applied, ack.duplicates), (0, 1));
    assert_eq!(ack.superseded, lost);
    assert_eq!(store.feed(0, 10).await.unwrap().changes.len(), 3);
}

/// A node's own later write in the same batch supersedes its earlier one.
async fn a_waiting_write_superseded_in_its_own_batch_hears_the_later_one<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let ack = store
        .ingest(batch(
            "a",
            vec![
                awaited(kv(1, "k", "one", 10, "a", None)),
                kv(2, "k", "two", 11, "a", Some(version(10, "a"))),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(ack.applied, 2);
    assert_eq!(
        ack.superseded,
        [Superseded {
            seq: 1,
            winner: version(11, "a")
        }]
    );
}

/// Asking for the outcome is not content: a redelivery that flips the
/// flag (either way) is a plain duplicate, not a clone.
async fn the_outcome_flag_is_not_part_of_the_digest<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let plain = vec![
        kv(1, "k", "v1", 10, "a", None),
        awaited(kv(2, "j", "v2", 11, "a", None)),
    ];
    let flipped: Vec<Entry> = plain
        .iter()
        .cloned()
        .map(|mut e| {
            e.outcome = !e.outcome;
            e
        })
        .collect();
    assert_eq!(
        outpost_cloud::contract::entry_digest(&plain[0]),
        outpost_cloud::contract::entry_digest(&flipped[0])
    );
    let first = store.ingest(batch("a", plain.clone())).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (2, 0));
    for entries in [flipped, plain] {
        let again = store.ingest(batch("a", entries)).await.unwrap();
        assert_eq!((again.applied, again.duplicates), (0, 2));
        assert!(again.superseded.is_empty(), "{:?}", again.superseded);
    }
    assert_eq!(store.feed(0, 10).await.unwrap().changes.len(), 2);
}

/// Events and placeholders ignore the flag.
async fn the_outcome_flag_on_an_event_changes_nothing<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let skipped = Entry {
        origin: None,
        outcome: true,
        seq: 2,
        record: Record::Skipped {
            reason: "too-large".into(),
        },
    };
    let b = batch("a", vec![awaited(event(1, "t", 7, None)), skipped]);
    let ack = store.ingest(b.clone()).await.unwrap();
    assert_eq!((ack.applied, ack.through), (2, 2));
    assert!(ack.superseded.is_empty(), "{:?}", ack.superseded);
    let again = store.ingest(b).await.unwrap();
    assert_eq!(again.duplicates, 2);
    assert!(again.superseded.is_empty(), "{:?}", again.superseded);
    let events = store.events("t", 0, 10).await.unwrap().items;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload, [7]);
}

/// A refused write was never a candidate: it gets its refusal, no
/// outcome, on its first delivery and when redelivered.
async fn a_refused_waiting_write_gets_no_outcome<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    store
        .ingest(batch("b", vec![kv(1, "k", "from-b", 20, "b", None)]))
        .await
        .unwrap();
    let mut b = batch(
        "a",
        vec![
            awaited(kv(1, "k", "bad", 10, "a", None)),
            awaited(kv(2, "k", "late", 11, "a", None)),
        ],
    );
    b.entries[0].1 = Some(Invalid::ClockSkew);
    let lost = [Superseded {
        seq: 2,
        winner: version(20, "b"),
    }];
    let ack = store.ingest(b.clone()).await.unwrap();
    assert_eq!((ack.applied, ack.refused.len()), (1, 1));
    assert_eq!(ack.superseded, lost);
    let again = store.ingest(b).await.unwrap();
    assert_eq!((again.duplicates, again.refused.len()), (2, 1));
    assert_eq!(again.superseded, lost);
}

async fn a_write_that_saw_the_current_version_is_no_conflict<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    store
        .ingest(batch("b", vec![kv(1, "k", "v1", 20, "b", None)]))
        .await
        .unwrap();
    let seen = Some(Version {
        hlc: 20,
        node: "b".into(),
    });
    store
        .ingest(batch("a", vec![kv(1, "k", "v2", 30, "a", seen)]))
        .await
        .unwrap();
    assert!(store.conflicts(0, 10).await.unwrap().items.is_empty());
    assert_eq!(value_of(&store, "k").await.unwrap(), b"v2");
}

async fn deletes_are_versioned_tombstones<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let mut delete = kv(
        2,
        "k",
        "",
        11,
        "a",
        Some(Version {
            hlc: 10,
            node: "a".into(),
        }),
    );
    if let Record::Kv { value, .. } = &mut delete.record {
        *value = None;
    }
    store
        .ingest(batch("a", vec![kv(1, "k", "v", 10, "a", None), delete]))
        .await
        .unwrap();
    let (version, value) = store.get("s", "k").await.unwrap().unwrap();
    assert_eq!((version.hlc, value), (11, None));
    let feed = store.feed(0, 10).await.unwrap().changes;
    assert_eq!(feed.len(), 2);
    assert!(feed[1].value.is_none());
}

async fn events_are_kept_per_topic_and_deduplicated_by_idempotency_key<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    store
        .ingest(batch(
            "a",
            vec![
                event(1, "orders", 1, Some("o1")),
                event(2, "other", 2, None),
            ],
        ))
        .await
        .unwrap();
    store
        .ingest(batch(
            "b",
            vec![
                event(1, "orders", 1, Some("o1")),
                event(2, "orders", 2, None),
                event(3, "orders", 3, Some("o2")),
                // The same key twice in one batch: the first one counts.
                event(4, "orders", 4, Some("o2")),
            ],
        ))
        .await
        .unwrap();
    let orders = store.events("orders", 0, 10).await.unwrap().items;
    let payloads: Vec<u8> = orders.iter().map(|e| e.payload[0]).collect();
    assert_eq!(payloads, [1, 2, 3], "{orders:?}");
    assert_eq!(orders[0].node, "a");
    assert_eq!(store.events("other", 0, 10).await.unwrap().items.len(), 1);
    // Paging with `since`.
    let first = store.events("orders", 0, 2).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = store.events("orders", first.next, 10).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].payload, [3]);
    let none = store.events("orders", rest.next, 10).await.unwrap();
    assert!(none.items.is_empty());
    assert_eq!(none.next, rest.next);
}

async fn the_same_batch_at_two_replicas_at_once_applies_once<B: Backend>() {
    let db = B::fresh().await;
    let (one, two) = (db.store(), db.replica().await);
    for round in 0..10u64 {
        let entries = (1..=50)
            .map(|i| {
                let seq = round * 50 + i;
                kv(seq, &format!("k{seq}"), "v", seq, "a", None)
            })
            .chain(std::iter::once(event(
                round * 50 + 51,
                "t",
                round as u8,
                None,
            )))
            .collect::<Vec<_>>();
        // Renumber so that each round continues the last.
        let entries: Vec<Entry> = entries
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e.seq = round * 51 + i as u64 + 1;
                e
            })
            .collect();
        let b = batch("a", entries);
        let (x, y) = tokio::join!(one.ingest(b.clone()), two.ingest(b));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.applied + y.applied, 51, "round {round}: {x:?} {y:?}");
        assert_eq!(x.duplicates + y.duplicates, 51, "round {round}");
    }
    let mut cursors = Vec::new();
    let mut since = 0;
    loop {
        let page = one.feed(since, 1000).await.unwrap();
        if page.changes.is_empty() {
            break;
        }
        cursors.extend(page.changes.iter().map(|c| c.cursor));
        since = page.next;
    }
    assert_eq!(cursors.len(), 500);
    assert_eq!(one.events("t", 0, 100).await.unwrap().items.len(), 10);
}

/// Two edges write the same new keys at the same moment through two
/// replicas, neither having seen the other's: for every key the later
/// writer wins, once, with one conflict (the insert race for a key nobody
/// had written is decided again, not lost).
async fn two_edges_racing_on_new_keys_at_two_replicas_resolve_once<B: Backend>() {
    const ROUNDS: u64 = 20;
    let db = B::fresh().await;
    let (one, two) = (db.store(), db.replica().await);
    for round in 1..=ROUNDS {
        let keys: Vec<String> = (0..20).map(|i| format!("r{round}-{i}")).collect();
        let entries = |node: &str, hlc: u64| {
            keys.iter()
                .enumerate()
                .map(|(i, key)| kv((round - 1) * 20 + i as u64 + 1, key, node, hlc, node, None))
                .collect::<Vec<_>>()
        };
        let (a, b) = tokio::join!(
            one.ingest(batch("a", entries("a", round * 10))),
            two.ingest(batch("b", entries("b", round * 10 + 5))),
        );
        assert_eq!((a.unwrap().applied, b.unwrap().applied), (20, 20));
        for key in &keys {
            assert_eq!(value_of(&one, key).await.unwrap(), b"b", "{key}");
        }
    }
    let mut conflicts = Vec::new();
    let mut since = 0;
    loop {
        let page = one.conflicts(since, 1000).await.unwrap();
        if page.items.is_empty() {
            break;
        }
        since = page.next;
        conflicts.extend(page.items);
    }
    assert_eq!(conflicts.len() as u64, ROUNDS * 20, "one conflict per key");
    assert!(
        conflicts
            .iter()
            .all(|c| c.winner.node == "b" && c.loser.node == "a")
    );
    let keys: HashSet<&str> = conflicts.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys.len() as u64, ROUNDS * 20);
}

/// Edges ship through two replicas at once while readers page the feed
/// from both: every reader sees every change exactly once, in cursor
/// order, with nothing skipped (ids that commit out of order would make a
/// reader pass a gap that fills later).
async fn readers_see_every_change_once_while_two_replicas_commit<B: Backend>() {
    const EDGES: u64 = 6;
    const BATCHES: u64 = 15;
    const PER_BATCH: u64 = 40;
    let db = B::fresh().await;
    let replicas = [db.store(), db.replica().await];
    let total = (EDGES * BATCHES * PER_BATCH) as usize;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..4 {
        let store = replicas[r % 2].clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut since = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let page = store.feed(since, 37).await.unwrap();
                seen.extend(page.changes.iter().map(|c| (c.cursor, c.key.clone())));
                since = page.next;
                if page.changes.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let mut writers = Vec::new();
    for edge in 0..EDGES {
        let store = replicas[(edge % 2) as usize].clone();
        writers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let entries = (0..PER_BATCH)
                    .map(|i| {
                        let seq = b * PER_BATCH + i + 1;
                        let node = format!("edge{edge}");
                        kv(seq, &format!("{node}-{seq}"), "v", seq, &node, None)
                    })
                    .collect();
                let mut checked = batch(&format!("edge{edge}"), entries);
                checked.epoch = 1000 + edge;
                let ack = store.ingest(checked).await.unwrap();
                assert_eq!(ack.applied, PER_BATCH);
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    for reader in readers {
        let seen = reader.await.unwrap();
        assert_eq!(seen.len(), total, "a reader missed or repeated changes");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "cursor order");
        let keys: HashSet<&String> = seen.iter().map(|(_, k)| k).collect();
        assert_eq!(keys.len(), total);
    }
}

/// A change accepted by one replica wakes a feed reader waiting on the
/// other (for PostgreSQL, through LISTEN/NOTIFY).
async fn a_change_at_one_replica_wakes_a_reader_waiting_on_another<B: Backend>() {
    let db = B::fresh().await;
    let (writer, reader) = (db.store(), db.replica().await);
    // Let the second replica's LISTEN connection come up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 1..=3u64 {
        let grew = reader.feed_grew().notified();
        tokio::pin!(grew);
        grew.as_mut().enable();
        writer
            .ingest(batch("a", vec![kv(round, "k", "v", round, "a", None)]))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), grew)
            .await
            .expect("the waiting reader was woken");
        let page = reader.feed(round - 1, 10).await.unwrap();
        assert_eq!(page.changes.len(), 1);
    }
}

/// A KV write of `value` (`None`: a delete) to `store`.
fn kv_in(store: &str, seq: u64, key: &str, value: Option<&[u8]>, hlc: u64, node: &str) -> Entry {
    Entry {
        origin: None,
        outcome: false,
        seq,
        record: Record::Kv {
            store: store.into(),
            key: key.into(),
            value: value.map(<[u8]>::to_vec),
            version: version(hlc, node),
            seen: None,
        },
    }
}

fn review(by: &str, at_ms: u64, note: Option<&str>) -> Review {
    Review {
        by: by.into(),
        at_ms,
        note: note.map(Into::into),
    }
}

/// Conflict 1: `a` wrote `k` blind under b's newer write.
async fn one_conflict(store: &impl CloudStore) {
    store
        .ingest(batch("b", vec![kv(1, "k", "from-b", 20, "b", None)]))
        .await
        .unwrap();
    store
        .ingest(batch("a", vec![kv(1, "k", "from-a", 10, "a", None)]))
        .await
        .unwrap();
    assert_eq!(store.conflict_count().await.unwrap(), 1);
}

async fn a_review_is_kept_once_and_survives_a_reopen<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    one_conflict(&store).await;
    let first = review(
        "operator",
        1_700_000_000_000,
        Some("lost a cart; told the shop"),
    );
    assert_eq!(
        store.review_conflict(1, first.clone()).await.unwrap(),
        Reviewed::Recorded(first.clone())
    );
    // Again, here or at another replica: the first review stands.
    let later = review("dev", 1_700_000_000_500, None);
    assert_eq!(
        store.review_conflict(1, later.clone()).await.unwrap(),
        Reviewed::Already(first.clone())
    );
    assert_eq!(
        db.replica()
            .await
            .review_conflict(1, later.clone())
            .await
            .unwrap(),
        Reviewed::Already(first.clone())
    );
    for unknown in [0, 2, u64::MAX >> 1] {
        assert_eq!(
            store.review_conflict(unknown, later.clone()).await.unwrap(),
            Reviewed::NoSuchConflict,
            "conflict {unknown}"
        );
    }
    assert_eq!(
        store.reviews(0, 10).await.unwrap(),
        BTreeMap::from([(1, first.clone())])
    );
    assert!(store.reviews(1, 10).await.unwrap().is_empty());
    assert!(store.reviews(0, 0).await.unwrap().is_empty());
    assert!(store.reviews(5, 1).await.unwrap().is_empty());

    drop(store);
    let db = db.reopen().await;
    let store = db.store();
    assert_eq!(
        store.reviews(0, 10).await.unwrap(),
        BTreeMap::from([(1, first.clone())]),
        "durable"
    );
    assert_eq!(
        store.review_conflict(1, later).await.unwrap(),
        Reviewed::Already(first)
    );
}

async fn two_reviews_at_two_replicas_at_once_keep_one<B: Backend>() {
    let db = B::fresh().await;
    let (store, other) = (db.store(), db.replica().await);
    one_conflict(&store).await;
    let (mine, theirs) = (
        review("operator", 1, Some("mine")),
        review("node:edge-a", 2, None),
    );
    let (a, b) = tokio::join!(
        store.review_conflict(1, mine.clone()),
        other.review_conflict(1, theirs.clone())
    );
    let kept = match (a.unwrap(), b.unwrap()) {
        (Reviewed::Recorded(won), Reviewed::Already(kept))
        | (Reviewed::Already(kept), Reviewed::Recorded(won)) => {
            assert_eq!(won, kept, "the loser hears the winner's review");
            won
        }
        other => panic!("one review must win: {other:?}"),
    };
    assert!(kept == mine || kept == theirs);
    assert_eq!(
        other.reviews(0, 1).await.unwrap(),
        BTreeMap::from([(1, kept)])
    );
}

async fn the_operators_review_replaces_anyone_elses_and_then_stands<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    one_conflict(&store).await;
    // Newlines, tabs and any Unicode are kept as they are on every backend.
    let node = review("node:a", 1, Some("mine\n\tcafé"));
    assert_eq!(
        store.review_conflict(1, node.clone()).await.unwrap(),
        Reviewed::Recorded(node.clone())
    );
    // Another non-operator keeps it.
    assert_eq!(
        store
            .review_conflict(1, review("dev", 2, None))
            .await
            .unwrap(),
        Reviewed::Already(node.clone())
    );
    // The operator's takes its place...
    let operator = review("operator", 3, Some("checked"));
    assert_eq!(
        db.replica()
            .await
            .review_conflict(1, operator.clone())
            .await
            .unwrap(),
        Reviewed::Recorded(operator.clone())
    );
    // ...and stands, against anyone, the operator again too.
    for again in [
        review("node:a", 4, None),
        review("dev", 5, None),
        review("operator", 6, Some("later")),
    ] {
        assert_eq!(
            store.review_conflict(1, again).await.unwrap(),
            Reviewed::Already(operator.clone())
        );
    }
    assert_eq!(
        store.reviews(0, 1).await.unwrap(),
        BTreeMap::from([(1, operator.clone())])
    );
    assert_eq!(store.reviewed_ids(0, 1).await.unwrap(), BTreeSet::from([1]));
    assert!(store.reviewed_ids(1, 5).await.unwrap().is_empty());
    assert!(store.reviewed_ids(3, 1).await.unwrap().is_empty());
    drop(store);
    let db = db.reopen().await;
    assert_eq!(
        db.store().reviews(0, 1).await.unwrap(),
        BTreeMap::from([(1, operator)]),
        "durable"
    );
}

async fn an_operator_and_a_node_reviewing_at_once_keep_the_operators<B: Backend>() {
    let db = B::fresh().await;
    let (store, other) = (db.store(), db.replica().await);
    one_conflict(&store).await;
    let (operator, node) = (review("operator", 1, None), review("node:a", 2, None));
    let (a, b) = tokio::join!(
        store.review_conflict(1, operator.clone()),
        other.review_conflict(1, node.clone())
    );
    assert_eq!(a.unwrap(), Reviewed::Recorded(operator.clone()));
    match b.unwrap() {
        // First, then replaced; or second, and told the operator's.
        Reviewed::Recorded(heard) => assert_eq!(heard, node),
        Reviewed::Already(heard) => assert_eq!(heard, operator),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        other.reviews(0, 1).await.unwrap(),
        BTreeMap::from([(1, operator)])
    );
}

/// A JSON value of about `elements` bytes nested `depth` deep: each
/// element on a line of its own once pretty-printed, indented `2 * depth`.
fn deep_json(depth: usize, elements: usize, digit: char) -> Vec<u8> {
    let mut json = "[".repeat(depth);
    json.push_str(&vec![digit.to_string(); elements].join(","));
    json.push_str(&"]".repeat(depth));
    json.into_bytes()
}

/// The bytes of every `shown` text in `answer`, and whether any is cut.
fn shown_bytes(answer: &Value) -> (usize, bool) {
    match answer {
        Value::Object(map) => {
            let (mut bytes, mut cut) = (0, false);
            for (field, value) in map {
                if field.ends_with("shown") {
                    bytes += value["text"].as_str().unwrap().len();
                    cut |= value["cut"] == true;
                } else {
                    let (b, c) = shown_bytes(value);
                    bytes += b;
                    cut |= c;
                }
            }
            (bytes, cut)
        }
        Value::Array(items) => items
            .iter()
            .map(shown_bytes)
            .fold((0, false), |a, b| (a.0 + b.0, a.1 | b.1)),
        _ => (0, false),
    }
}

async fn a_history_of_large_values_stays_within_its_answer_budget<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    // Four versions of 3 MiB each: 12 MiB to show, 8 MiB of room.
    let mut seen = None;
    for (seq, fill) in [b'a', b'b', b'c', b'd'].into_iter().enumerate() {
        let seq = seq as u64 + 1;
        let value = vec![fill; 3 * 1024 * 1024];
        let mut entry = kv_in("s", seq, "big", Some(&value), seq * 10, "b");
        if let Record::Kv { seen: s, .. } = &mut entry.record {
            *s = seen.clone();
        }
        store.ingest(batch("b", vec![entry])).await.unwrap();
        seen = Some(version(seq * 10, "b"));
    }
    let h = history_of(&store, &[("store", "s"), ("key", "big")]).await;
    let (bytes, cut) = shown_bytes(&h);
    assert!(bytes <= MAX_PAGE_BYTES, "{bytes}");
    assert!(!cut, "each fits whole");
    assert_eq!(
        h["current"]["shown"]["text"].as_str().unwrap().len(),
        3 << 20
    );
    assert_eq!(versions(&h["versions"]), [(40, "b".into())], "newest first");
    assert_eq!(h["window"]["truncated"], true);
    assert_eq!(h["window"]["complete"], true, "everything was scanned");

    // One value whose display is over a hundred times its size: shown
    // cut, with its whole size, and nothing after it.
    let deep = deep_json(100, 300_000, '1');
    store
        .ingest(batch(
            "b",
            vec![kv_in("s", 5, "deep", Some(&deep), 60, "b")],
        ))
        .await
        .unwrap();
    let h = history_of(&store, &[("store", "s"), ("key", "deep")]).await;
    let current = &h["current"]["shown"];
    assert_eq!(
        (&current["format"], &current["cut"]),
        (&json!("json"), &json!(true))
    );
    let full = current["full_bytes"].as_u64().unwrap();
    assert!(full > 100 * deep.len() as u64 / 2, "{full}");
    let (bytes, _) = shown_bytes(&h);
    assert!(bytes <= MAX_PAGE_BYTES, "{bytes}");
    assert!(
        current["text"]
            .as_str()
            .unwrap()
            .starts_with("[\n  [\n    [")
    );
    assert_eq!(h["versions"], json!([]));
    assert_eq!(h["window"]["truncated"], true);
}

async fn a_history_scan_stops_at_its_budget_and_keeps_the_newest<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    // 40 changes, every other one to `k`.
    let entries = (1..=40)
        .map(|seq| {
            let key = if seq % 2 == 0 { "k" } else { "other" };
            let value = format!("v{seq}");
            kv_in("s", seq, key, Some(value.as_bytes()), seq, "b")
        })
        .collect();
    store.ingest(batch("b", entries)).await.unwrap();
    let q = explorer::HistoryQuery::parse(&query(&[("store", "s"), ("key", "k")])).unwrap();
    for limits in [
        explorer::ScanLimits {
            read_bytes: 1,
            time: Duration::from_secs(60),
        },
        explorer::ScanLimits {
            read_bytes: u64::MAX,
            time: Duration::ZERO,
        },
    ] {
        let h =
            serde_json::to_value(explorer::history(&store, &q, &limits).await.unwrap()).unwrap();
        // The most recent records, read whatever the budget.
        assert_eq!(h["window"]["changes_scanned"], 16, "{limits:?}: {h}");
        assert_eq!(h["window"]["complete"], false);
        let hlcs: Vec<u64> = versions(&h["versions"]).into_iter().map(|v| v.0).collect();
        assert_eq!(hlcs, [40, 38, 36, 34, 32, 30, 28, 26], "{limits:?}");
    }
    let h = history_of(&store, &[("store", "s"), ("key", "k")]).await;
    assert_eq!(h["window"]["changes_scanned"], 40);
    assert_eq!(h["versions"].as_array().unwrap().len(), 20);
}

/// Conflicts 1..=n, odd ones in store `s`, even ones in `t` (benign).
async fn conflicts_in_two_stores(store: &impl CloudStore, n: u64) {
    for seq in 1..=n {
        let (name, loser) = if seq % 2 == 1 {
            ("s", "lost")
        } else {
            ("t", "same")
        };
        let key = format!("k{seq}");
        store
            .ingest(batch(
                "b",
                vec![kv_in(name, seq, &key, Some(b"same"), 20, "b")],
            ))
            .await
            .unwrap();
        store
            .ingest(batch(
                "a",
                vec![kv_in(name, seq, &key, Some(loser.as_bytes()), 10, "a")],
            ))
            .await
            .unwrap();
    }
    assert_eq!(store.conflict_count().await.unwrap(), n);
}

async fn stats_stop_at_their_budget_and_count_only_what_a_node_may_see<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    conflicts_in_two_stores(&store, 40).await;
    for id in [1, 2, 4] {
        store
            .review_conflict(id, review("operator", 7, None))
            .await
            .unwrap();
    }
    let stats = async |principal: &Principal, pairs: &[(&str, &str)], limits| {
        let q = explorer::StatsQuery::parse(&query(pairs)).unwrap();
        serde_json::to_value(
            explorer::stats(&store, principal, &q, &limits)
                .await
                .unwrap(),
        )
        .unwrap()
    };
    let all = explorer::ScanLimits::default();
    let s = stats(&Principal::Admin, &[], all).await;
    assert_eq!((&s["total"], &s["reviewed"]), (&json!(40), &json!(3)));
    assert_eq!((&s["window"], &s["complete"]), (&json!(40), &json!(true)));

    // A node counts only its stores' conflicts (and their reviews); what
    // it learns of the rest is how many records were scanned.
    let (node, _) = Enrol {
        stores: Some(vec!["s".into()]),
        ..Enrol::node("a")
    }
    .issue()
    .unwrap();
    let node = Principal::Holder(node);
    let s = stats(&node, &[], all).await;
    assert_eq!(
        (&s["total"], &s["benign"], &s["divergent"], &s["reviewed"]),
        (&json!(20), &json!(0), &json!(20), &json!(1)),
        "{s}"
    );
    assert_eq!(
        s["by_store"],
        json!([{"store": "s", "count": 20, "benign": 0, "divergent": 20}])
    );
    assert_eq!(s["by_pair"], json!([{"nodes": ["a", "b"], "count": 20}]));
    assert_eq!(s["window"], 40, "records scanned, of any store");
    let hidden = stats(&node, &[("store", "t")], all).await;
    assert_eq!(
        (&hidden["total"], &hidden["by_store"]),
        (&json!(0), &json!([]))
    );

    // Out of budget: the most recent conflicts still, and said so.
    for limits in [
        explorer::ScanLimits {
            read_bytes: 0,
            time: Duration::from_secs(60),
        },
        explorer::ScanLimits {
            read_bytes: u64::MAX,
            time: Duration::ZERO,
        },
    ] {
        let s = stats(&Principal::Admin, &[], limits).await;
        assert_eq!(
            (&s["total"], &s["window"], &s["complete"]),
            (&json!(16), &json!(16), &json!(false)),
            "{limits:?}"
        );
        assert_eq!(s["reviewed"], 0, "1, 2 and 4 are older than the 16 newest");
    }
}

async fn a_conflict_page_budgets_on_what_it_shows<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    // Conflict 1's two values are under 1 MiB each, their displays over
    // 50 MiB each; conflict 2 is small.
    let (won, lost) = (deep_json(100, 300_000, '1'), deep_json(100, 300_000, '2'));
    store
        .ingest(batch("b", vec![kv_in("s", 1, "deep", Some(&won), 20, "b")]))
        .await
        .unwrap();
    store
        .ingest(batch(
            "a",
            vec![kv_in("s", 1, "deep", Some(&lost), 10, "a")],
        ))
        .await
        .unwrap();
    store
        .ingest(batch(
            "b",
            vec![kv_in("s", 2, "small", Some(b"x"), 20, "b")],
        ))
        .await
        .unwrap();
    store
        .ingest(batch(
            "a",
            vec![kv_in("s", 2, "small", Some(b"y"), 10, "a")],
        ))
        .await
        .unwrap();
    let page = async |since: u64| {
        let page = explorer::list(&store, &Principal::Admin, since, 10, &Default::default())
            .await
            .unwrap();
        serde_json::to_value(page).unwrap()
    };
    let first = page(0).await;
    assert_eq!(
        first["items"].as_array().unwrap().len(),
        1,
        "alone on its page"
    );
    assert_eq!(first["next"], 1);
    let item = &first["items"][0];
    let (bytes, cut) = shown_bytes(item);
    assert!(cut && bytes <= MAX_PAGE_BYTES, "{bytes}");
    for side in ["winner_shown", "loser_shown"] {
        assert_eq!(item[side]["cut"], true, "{side}");
        assert!(item[side]["full_bytes"].as_u64().unwrap() > 50 << 20);
    }
    let second = page(1).await;
    assert_eq!(second["items"][0]["id"], 2);
    assert_eq!(
        second["items"][0]["winner_shown"],
        json!({"format": "text", "text": "x"})
    );
}

async fn keys_are_listed_in_byte_order_with_tombstones_in_pages<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    store
        .ingest(batch(
            "a",
            vec![
                kv_in("s", 1, "b", Some(b"2"), 10, "a"),
                kv_in("s", 2, "\u{e9}", Some(b"5"), 11, "a"),
                kv_in("s", 3, "a\u{0}x", Some(b"1"), 12, "a"),
                kv_in("s", 4, "c", None, 13, "a"),
                kv_in("s", 5, "a", Some(b"0"), 14, "a"),
                // Neighbouring stores stay out of it.
                kv_in("s2", 6, "a", Some(b"other"), 15, "a"),
                kv_in("r", 7, "z", Some(b"other"), 16, "a"),
            ],
        ))
        .await
        .unwrap();
    let keys =
        |page: &KeyPage| -> Vec<String> { page.items.iter().map(|(k, _)| k.clone()).collect() };
    let all = store.keys("s", None, 100).await.unwrap();
    assert_eq!(keys(&all), ["a", "a\u{0}x", "b", "c", "\u{e9}"]);
    assert_eq!(all.next, None);
    let (version_c, value_c) = &all.items[3].1;
    assert_eq!(
        (version_c, value_c),
        (&version(13, "a"), &None),
        "a tombstone"
    );
    assert_eq!(all.items[0].1.1.as_deref(), Some(&b"0"[..]));

    let first = store.keys("s", None, 2).await.unwrap();
    assert_eq!(keys(&first), ["a", "a\u{0}x"]);
    assert_eq!(first.next.as_deref(), Some("a\u{0}x"));
    let second = store.keys("s", first.next.as_deref(), 2).await.unwrap();
    assert_eq!(keys(&second), ["b", "c"]);
    assert_eq!(second.next.as_deref(), Some("c"));
    let last = store.keys("s", Some("c"), 2).await.unwrap();
    assert_eq!(keys(&last), ["\u{e9}"]);
    assert_eq!(last.next, None);
    // A page that ends exactly at the last key says there is no more.
    assert_eq!(store.keys("s", Some("b"), 2).await.unwrap().next, None);
    // `after` need not be a key there.
    assert_eq!(
        keys(&store.keys("s", Some("bb"), 100).await.unwrap()),
        ["c", "\u{e9}"]
    );
    let none = store.keys("nope", None, 10).await.unwrap();
    assert!(none.items.is_empty() && none.next.is_none());

    // Large values: a page stops at the byte budget, holding at least one.
    let big = vec![b'x'; MAX_PAGE_BYTES / 3];
    store
        .ingest(batch(
            "b",
            (1..=4)
                .map(|i| kv_in("big", i, &format!("k{i}"), Some(&big), 20 + i, "b"))
                .collect(),
        ))
        .await
        .unwrap();
    let (mut after, mut sizes) = (None, Vec::new());
    loop {
        let page = store.keys("big", after.as_deref(), 100).await.unwrap();
        sizes.push(page.items.len());
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes.iter().sum::<usize>(), 4);
    assert!(sizes.iter().all(|&n| (1..=3).contains(&n)), "{sizes:?}");
    assert!(sizes.len() >= 2, "the budget cut a page: {sizes:?}");
}

fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn history_of<S: CloudStore>(store: &S, pairs: &[(&str, &str)]) -> Value {
    let q = explorer::HistoryQuery::parse(&query(pairs)).unwrap();
    let limits = explorer::ScanLimits::default();
    serde_json::to_value(explorer::history(store, &q, &limits).await.unwrap()).unwrap()
}

fn versions(list: &Value) -> Vec<(u64, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"]["hlc"].as_u64().unwrap(),
                v["version"]["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn a_keys_history_links_its_versions_to_the_writes_they_beat<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    let ms = |ms: u64| ms << 16;
    // b writes k (v1); a writes it blind, older: loses (conflict 1). b
    // writes again having seen v1: no conflict. c writes blind, newer:
    // wins over b's second (conflict 2). Other keys go by meanwhile.
    store
        .ingest(batch(
            "b",
            vec![
                kv(1, "k", "v1", ms(2000), "b", None),
                kv(2, "other", "x", ms(2001), "b", None),
            ],
        ))
        .await
        .unwrap();
    store
        .ingest(batch("a", vec![kv(1, "k", "from-a", ms(1000), "a", None)]))
        .await
        .unwrap();
    store
        .ingest(batch(
            "b",
            vec![kv(
                3,
                "k",
                r#"{"v":2}"#,
                ms(3000),
                "b",
                Some(version(ms(2000), "b")),
            )],
        ))
        .await
        .unwrap();
    store
        .ingest(batch("c", vec![kv(1, "k", "from-c", ms(4000), "c", None)]))
        .await
        .unwrap();
    store
        .ingest(batch("a", vec![kv(2, "after", "x", ms(5000), "a", None)]))
        .await
        .unwrap();
    assert_eq!(store.feed_head().await.unwrap(), 5, "k thrice, two others");
    assert_eq!(store.conflict_count().await.unwrap(), 2);

    let h = history_of(&store, &[("store", "s"), ("key", "k")]).await;
    assert_eq!(
        (h["store"].as_str(), h["key"].as_str()),
        (Some("s"), Some("k"))
    );
    assert_eq!(
        h["current"]["version"],
        json!({"hlc": ms(4000), "node": "c"})
    );
    assert_eq!(h["current"]["at_ms"], 4000);
    assert_eq!(
        h["current"]["shown"],
        json!({"format": "text", "text": "from-c"})
    );
    assert_eq!(
        versions(&h["versions"]),
        [
            (ms(4000), "c".into()),
            (ms(3000), "b".into()),
            (ms(2000), "b".into())
        ],
        "newest first"
    );
    let cursors: Vec<u64> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["cursor"].as_u64().unwrap())
        .collect();
    assert_eq!(cursors, [4, 3, 1]);
    assert_eq!(h["versions"][0]["conflicts"], json!([2]));
    assert_eq!(h["versions"][1]["conflicts"], json!([]));
    assert_eq!(h["versions"][2]["conflicts"], json!([1]));
    assert_eq!(h["versions"][1]["shown"]["format"], "json");
    assert_eq!(h["versions"][1]["at_ms"], 3000);
    assert_eq!(
        versions(&h["lost"]),
        [(ms(3000), "b".into()), (ms(1000), "a".into())]
    );
    assert_eq!(h["lost"][0]["conflict"], 2);
    assert_eq!(
        h["lost"][0]["lost_to"],
        json!({"hlc": ms(4000), "node": "c"})
    );
    assert_eq!(h["lost"][1]["conflict"], 1);
    assert_eq!(h["lost"][1]["shown"]["text"], "from-a");
    assert_eq!(
        h["window"],
        json!({"changes_scanned": 5, "conflicts_scanned": 2, "complete": true, "truncated": false})
    );

    // A limit keeps the newest; a window looks back only so far.
    let h = history_of(&store, &[("store", "s"), ("key", "k"), ("limit", "1")]).await;
    assert_eq!(versions(&h["versions"]), [(ms(4000), "c".into())]);
    assert_eq!(versions(&h["lost"]), [(ms(3000), "b".into())]);
    let h = history_of(&store, &[("store", "s"), ("key", "k"), ("window", "2")]).await;
    assert_eq!(versions(&h["versions"]), [(ms(4000), "c".into())]);
    assert_eq!(
        h["window"],
        json!({"changes_scanned": 2, "conflicts_scanned": 2, "complete": false, "truncated": false})
    );
    // An unknown key is no error: nothing to show.
    let h = history_of(&store, &[("store", "s"), ("key", "never")]).await;
    assert_eq!(
        (&h["current"], &h["versions"], &h["lost"]),
        (&Value::Null, &json!([]), &json!([]))
    );
}

async fn a_filtered_list_scans_on_and_says_where_it_stopped<B: Backend>() {
    let db = B::fresh().await;
    let store = db.store();
    // Conflicts 1..=6 alternate between stores `s` (odd) and `t` (even);
    // the ones in `t` are benign.
    for (i, name) in ["s", "t", "s", "t", "s", "t"].into_iter().enumerate() {
        let key = format!("k{i}");
        let loser = if name == "t" { "same" } else { "lost" };
        let seq = i as u64 + 1;
        store
            .ingest(batch(
                "b",
                vec![kv_in(name, seq, &key, Some(b"same"), 20, "b")],
            ))
            .await
            .unwrap();
        store
            .ingest(batch(
                "a",
                vec![kv_in(name, seq, &key, Some(loser.as_bytes()), 10, "a")],
            ))
            .await
            .unwrap();
    }
    assert_eq!(store.conflict_count().await.unwrap(), 6);
    store
        .review_conflict(4, review("operator", 7, None))
        .await
        .unwrap();
    let list = async |since: u64, limit: usize, pairs: &[(&str, &str)]| {
        let filter = explorer::Filter::parse(&query(pairs)).unwrap();
        let page = explorer::list(&store, &Principal::Admin, since, limit, &filter)
            .await
            .unwrap();
        let page = serde_json::to_value(page).unwrap();
        let ids: Vec<u64> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        (ids, page["next"].as_u64().unwrap(), page)
    };
    let (ids, next, _) = list(0, 2, &[("store", "t")]).await;
    assert_eq!(
        (ids, next),
        (vec![2, 4], 4),
        "next: the last match, when full"
    );
    let (ids, next, _) = list(4, 2, &[("store", "t")]).await;
    assert_eq!((ids, next), (vec![6], 6), "next: the last scanned");
    let (ids, next, _) = list(6, 2, &[("store", "t")]).await;
    assert_eq!((ids, next), (vec![], 6), "at the end, next stays");
    let (ids, _, page) = list(0, 100, &[("reviewed", "true")]).await;
    assert_eq!(ids, [4]);
    assert_eq!(page["items"][0]["review"]["by"], "operator");
    assert_eq!(page["items"][0]["kind"], "benign");
    let (ids, _, page) = list(0, 100, &[]).await;
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    assert_eq!(page["items"][0]["review"], Value::Null);
    let (ids, _, _) = list(0, 100, &[("kind", "divergent"), ("node", "a")]).await;
    assert_eq!(ids, [1, 3, 5]);
    let (ids, _, _) = list(0, 100, &[("prefix", "k1")]).await;
    assert_eq!(ids, [2]);
    // A node sees the stores it may write, and pages on past the rest.
    let (node, _) = Enrol {
        stores: Some(vec!["s".into()]),
        ..Enrol::node("edge-s")
    }
    .issue()
    .unwrap();
    let page = explorer::list(
        &store,
        &Principal::Holder(node),
        0,
        100,
        &explorer::Filter::default(),
    )
    .await
    .unwrap();
    let page = serde_json::to_value(page).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["next"], 6);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name::<super::SledBackend>().await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name::<super::PgBackend>().await
                }
            )*
        }
    };
}

conformance!(
    a_second_node_on_an_epoch_is_refused_and_changes_nothing,
    gaps_before_or_inside_a_batch_are_refused,
    out_of_order_batches_are_refused,
    a_redelivery_with_other_content_is_a_clone,
    refused_entries_consume_their_sequence_number_and_apply_nothing,
    a_renumbered_record_is_not_applied_twice,
    a_record_refused_at_its_first_place_is_applied_when_renumbered_and_valid,
    pages_stop_at_a_byte_budget_but_hold_at_least_one_item,
    keys_with_nul_and_other_bytes_are_kept_exactly,
    event_pages_stop_before_the_item_that_crosses_the_budget,
    credentials_are_found_by_token_hash_and_revoked,
    redelivery_applies_nothing_twice,
    concurrent_writes_resolve_by_hlc_and_record_a_conflict,
    writes_to_one_key_in_one_batch_resolve_in_order,
    a_waiting_write_that_loses_hears_the_winner,
    a_redelivered_waiting_write_is_answered_by_the_current_version,
    a_waiting_write_superseded_in_its_own_batch_hears_the_later_one,
    the_outcome_flag_is_not_part_of_the_digest,
    the_outcome_flag_on_an_event_changes_nothing,
    a_refused_waiting_write_gets_no_outcome,
    a_write_that_saw_the_current_version_is_no_conflict,
    deletes_are_versioned_tombstones,
    events_are_kept_per_topic_and_deduplicated_by_idempotency_key,
    the_same_batch_at_two_replicas_at_once_applies_once,
    two_edges_racing_on_new_keys_at_two_replicas_resolve_once,
    readers_see_every_change_once_while_two_replicas_commit,
    a_change_at_one_replica_wakes_a_reader_waiting_on_another,
    a_review_is_kept_once_and_survives_a_reopen,
    two_reviews_at_two_replicas_at_once_keep_one,
    keys_are_listed_in_byte_order_with_tombstones_in_pages,
    a_keys_history_links_its_versions_to_the_writes_they_beat,
    a_filtered_list_scans_on_and_says_where_it_stopped,
    the_operators_review_replaces_anyone_elses_and_then_stands,
    an_operator_and_a_node_reviewing_at_once_keep_the_operators,
    a_history_of_large_values_stays_within_its_answer_budget,
    a_history_scan_stops_at_its_budget_and_keeps_the_newest,
    stats_stop_at_their_budget_and_count_only_what_a_node_may_see,
    a_conflict_page_budgets_on_what_it_shows,
);

/// What only the PostgreSQL backend has: migrations under concurrent
/// starts, and retries the edge never sees.
mod postgres_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_at_once_migrate_the_schema_once() {
        let url = tokio::task::spawn_blocking(|| outpost_pg_cluster::fresh_database("migrate"))
            .await
            .unwrap();
        let starts = (0..4).map(|_| Pg::connect(&url, PgOptions::default()));
        let stores: Vec<Pg> = futures_join_all(starts).await;
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let versions: Vec<i64> = client
            .query("SELECT version FROM outpost_schema ORDER BY version", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: Vec<i64> = (0..=outpost_cloud::pg::schema::MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
        // They all serve the one database.
        stores[0]
            .ingest(batch("a", vec![kv(1, "k", "v", 1, "a", None)]))
            .await
            .unwrap();
        for store in &stores {
            assert_eq!(value_of(store, "k").await.unwrap(), b"v");
        }
    }

    async fn futures_join_all<F: Future<Output = anyhow::Result<Pg>>>(
        starts: impl Iterator<Item = F>,
    ) -> Vec<Pg> {
        let handles: Vec<_> = starts.map(|f| async move { f.await.unwrap() }).collect();
        let mut stores = Vec::new();
        let mut set = Vec::new();
        for handle in handles {
            set.push(Box::pin(handle));
        }
        // Polled together, so the migrations really race.
        let mut pending: Vec<_> = set.into_iter().map(Some).collect();
        std::future::poll_fn(|cx| {
            let mut all = true;
            for slot in pending.iter_mut() {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(store) => {
                            stores.push(store);
                            *slot = None;
                        }
                        std::task::Poll::Pending => all = false,
                    }
                }
            }
            if all {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        stores
    }

    /// Another transaction locks the batch's second key and then wants its
    /// first, which the ingest holds: PostgreSQL breaks the deadlock by
    /// aborting one side. Whichever it picks, the ingest succeeds: aborted,
    /// it is retried inside the cloud, never answered with the error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deadlock_is_retried_inside_the_cloud() {
        let db = PgBackend::fresh().await;
        let store = db.store();
        store
            .ingest(batch(
                "z",
                vec![
                    kv(1, "k1", "z", 1, "z", None),
                    kv(2, "k2", "z", 2, "z", None),
                ],
            ))
            .await
            .unwrap();
        let (mut client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let other = client.transaction().await.unwrap();
        other
            .execute("SELECT 1 FROM outpost_kv WHERE key = 'k2' FOR UPDATE", &[])
            .await
            .unwrap();
        let ingest = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .ingest(batch(
                        "a",
                        vec![
                            kv(1, "k1", "a", 10, "a", None),
                            kv(2, "k2", "a", 11, "a", None),
                        ],
                    ))
                    .await
            }
        });
        // Let the ingest take k1 and queue for k2.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mine = other
            .execute("SELECT 1 FROM outpost_kv WHERE key = 'k1' FOR UPDATE", &[])
            .await;
        match mine {
            Ok(_) => other.commit().await.unwrap(),
            Err(_) => other.rollback().await.unwrap(),
        }
        let ack = ingest
            .await
            .unwrap()
            .expect("the edge never sees the deadlock");
        assert_eq!(ack.applied, 2);
        assert_eq!(value_of(&store, "k1").await.unwrap(), b"a");
        assert_eq!(value_of(&store, "k2").await.unwrap(), b"a");
    }

    /// A batch that must run again (a key it was creating was created by
    /// another transaction meanwhile) answers the outcome of the run that
    /// committed: the other's version won.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_batch_reads_the_outcome_again() {
        let db = PgBackend::fresh().await;
        let store = db.store();
        let (mut client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let other = client.transaction().await.unwrap();
        other
            .execute(
                "INSERT INTO outpost_kv (store, key, hlc, node, value) VALUES ('s', 'k'::BYTEA, 20, 'b', 'from-b'::BYTEA)",
                &[],
            )
            .await
            .unwrap();
        let ingest = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .ingest(batch(
                        "a",
                        vec![awaited(kv(1, "k", "from-a", 10, "a", None))],
                    ))
                    .await
            }
        });
        // Let the ingest find no row and queue its insert behind ours.
        tokio::time::sleep(Duration::from_millis(500)).await;
        other.commit().await.unwrap();
        let ack = ingest.await.unwrap().expect("the edge never sees the race");
        assert_eq!(ack.applied, 1);
        assert_eq!(
            ack.superseded,
            [Superseded {
                seq: 1,
                winner: version(20, "b")
            }]
        );
        assert_eq!(value_of(&store, "k").await.unwrap(), b"from-b");
        // Decided again on the row the other made: `a` lost, blind.
        assert_eq!(store.conflict_count().await.unwrap(), 1);
    }

    /// The database link over TLS: verified against the given CA, and
    /// refused when the server's certificate does not verify.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_link_is_tls_verified_against_its_ca() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let cluster = tokio::task::spawn_blocking(move || {
            let cluster =
                outpost_pg_cluster::PgCluster::start_with(&outpost_pg_cluster::PgOptions {
                    fsync: false,
                    ..Default::default()
                })
                .unwrap();
            cluster.create_database("tls").unwrap();
            cluster.enable_tls(&cert_pem, &key_pem).unwrap();
            cluster
        })
        .await
        .unwrap();
        let url = format!("{}?sslmode=require", cluster.url("tls"));
        let options = PgOptions {
            ca: Some(ca_path),
            ..PgOptions::default()
        };
        let store = Pg::connect(&url, options).await.unwrap();
        store
            .ingest(batch("a", vec![kv(1, "k", "v", 1, "a", None)]))
            .await
            .unwrap();
        assert_eq!(value_of(&store, "k").await.unwrap(), b"v");
        let ssl = tokio::task::spawn_blocking(move || {
            let answer = cluster
                .psql(
                    "tls",
                    "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'outpost-cloud'",
                )
                .unwrap();
            (answer, cluster)
        })
        .await
        .unwrap();
        assert_eq!(ssl.0, "t", "every connection of the replica is TLS");
        // Without the CA, the server's certificate does not verify.
        let refused = Pg::connect(&url, PgOptions::default()).await;
        let error = refused
            .err()
            .expect("an unverified server is refused")
            .to_string();
        assert!(error.contains("certificate"), "{error}");
        drop(ssl.1);
    }
}
