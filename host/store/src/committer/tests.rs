//! The committer against a real sled database in a temp dir.

use crate::{Rejection, Storage, WriteOp, Written, tree_name};
use outpost_wire::envelope::{self, Stored};
use outpost_wire::{Change, Record, Version};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

const NODE: &str = "node-a";
const STORE: &str = "@counter";

fn open(dir: &TempDir) -> Arc<Storage> {
    Storage::open(dir.path(), Some(NODE)).expect("open the database")
}

/// A new database in a new temp dir (kept alive by the returned handle).
fn fresh() -> (TempDir, Arc<Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    (dir, storage)
}

/// What `ApplyRemote` answers when `applied` changes won and `older` lost.
fn remote_outcome(applied: u64, older: u64) -> Written {
    Written::Remote { applied, older }
}

/// Drops `storage` and opens the same directory again. The writer thread
/// holds sled's file lock until it sees its queue closed, so the open is
/// retried until that thread has let go.
fn reopen(dir: &TempDir, storage: Arc<Storage>) -> Arc<Storage> {
    assert_eq!(
        Arc::strong_count(&storage),
        1,
        "the test holds the only handle"
    );
    drop(storage);
    let mut attempts = 0;
    loop {
        match Storage::open(dir.path(), Some(NODE)) {
            Ok(storage) => return storage,
            Err(e) if attempts >= 1000 => panic!("cannot reopen the database: {e}"),
            Err(_) => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

async fn write(storage: &Storage, op: WriteOp) -> Written {
    storage.write(op).await.expect("the write reaches the disk")
}

fn set(key: &str, value: &[u8], replicated: bool) -> WriteOp {
    WriteOp::Set {
        store: STORE.into(),
        replicated,
        key: key.into(),
        value: value.to_vec(),
    }
}

fn delete(key: &str, replicated: bool) -> WriteOp {
    WriteOp::Delete {
        store: STORE.into(),
        replicated,
        key: key.into(),
    }
}

fn increment(key: &str, delta: i64) -> WriteOp {
    WriteOp::Increment {
        store: STORE.into(),
        replicated: true,
        key: key.into(),
        delta,
    }
}

fn cas(key: &str, expected: Option<&[u8]>, new: &[u8]) -> WriteOp {
    WriteOp::CompareAndSwap {
        store: STORE.into(),
        replicated: true,
        key: key.into(),
        expected: expected.map(<[u8]>::to_vec),
        new: new.to_vec(),
    }
}

fn enqueue(topic: &str, payload: &[u8], idempotency_key: Option<&str>) -> WriteOp {
    WriteOp::Enqueue {
        topic: topic.into(),
        payload: payload.to_vec(),
        idempotency_key: idempotency_key.map(str::to_owned),
    }
}

fn remote(changes: Vec<Change>) -> WriteOp {
    WriteOp::ApplyRemote {
        changes,
        cursor: 1,
        cloud: 1,
    }
}

fn change(key: &str, value: Option<&[u8]>, hlc: u64, node: &str) -> Change {
    Change {
        cursor: 1,
        store: STORE.into(),
        key: key.into(),
        value: value.map(<[u8]>::to_vec),
        version: Version {
            hlc,
            node: node.into(),
        },
    }
}

/// Every durable outbox record, decoded, with its sequence number.
fn records(storage: &Storage) -> Vec<(u64, Record)> {
    storage
        .outbox_batch(usize::MAX, usize::MAX)
        .expect("read the outbox")
        .into_iter()
        .map(|(seq, json)| (seq, serde_json::from_slice(&json).expect("a record")))
        .collect()
}

fn seqs(storage: &Storage) -> Vec<u64> {
    records(storage).into_iter().map(|(seq, _)| seq).collect()
}

/// The only outbox record, which must be a KV record.
fn only_kv_record(
    storage: &Storage,
) -> (String, String, Option<Vec<u8>>, Version, Option<Version>) {
    let mut all = records(storage);
    assert_eq!(all.len(), 1, "exactly one outbox record: {all:?}");
    match all.remove(0).1 {
        Record::Kv {
            store,
            key,
            value,
            version,
            seen,
        } => (store, key, value, version, seen),
        other => panic!("expected a KV record, got {other:?}"),
    }
}

/// What the store's tree holds for `key`, tombstones included.
fn stored(storage: &Storage, key: &str) -> Option<Stored> {
    let tree = storage.handles().db.open_tree(tree_name(STORE)).unwrap();
    tree.get(key)
        .unwrap()
        .map(|bytes| envelope::decode(&bytes).expect("a valid envelope"))
}

fn version_of(storage: &Storage, key: &str) -> Version {
    stored(storage, key).expect("the key is stored").version
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---- set / get and the outbox record ----

#[tokio::test]
async fn set_then_get_returns_the_value() {
    let (_dir, storage) = fresh();
    assert_eq!(write(&storage, set("k", b"v", false)).await, Written::Done);
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"v".to_vec()));
    assert!(storage.exists(STORE, "k").unwrap());
    assert_eq!(storage.get(STORE, "other").unwrap(), None);
}

#[tokio::test]
async fn a_local_write_adds_no_outbox_record() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"v", false)).await;
    assert_eq!(storage.outbox_len(), 0);
    assert_eq!(storage.outbox_bytes(), 0);
    assert!(records(&storage).is_empty());
}

#[tokio::test]
async fn a_replicated_write_of_a_new_key_adds_one_record_that_saw_nothing() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"v", true)).await;
    let (store, key, value, version, seen) = only_kv_record(&storage);
    assert_eq!(store, STORE);
    assert_eq!(key, "k");
    assert_eq!(value, Some(b"v".to_vec()));
    assert_eq!(version.node, NODE);
    assert_eq!(
        version,
        version_of(&storage, "k"),
        "the record carries the stored version"
    );
    assert_eq!(seen, None);
}

#[tokio::test]
async fn a_replicated_overwrite_has_seen_the_previous_version() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"one", true)).await;
    let first = version_of(&storage, "k");
    storage.outbox_ack(u64::MAX).unwrap();
    write(&storage, set("k", b"two", true)).await;
    let (_, _, value, version, seen) = only_kv_record(&storage);
    assert_eq!(value, Some(b"two".to_vec()));
    assert_eq!(seen, Some(first.clone()));
    assert!(version > first, "a later write has a later version");
}

#[tokio::test]
async fn a_replicated_write_over_a_local_value_has_seen_its_version() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"local", false)).await;
    let local = version_of(&storage, "k");
    write(&storage, set("k", b"shared", true)).await;
    let (_, _, _, _, seen) = only_kv_record(&storage);
    assert_eq!(seen, Some(local));
}

#[tokio::test]
async fn outbox_bytes_counts_the_records_and_ack_releases_them() {
    let (_dir, storage) = fresh();
    write(&storage, set("a", b"1", true)).await;
    write(&storage, enqueue("orders", b"{}", None)).await;
    let batch = storage.outbox_batch(usize::MAX, usize::MAX).unwrap();
    let total: u64 = batch.iter().map(|(_, json)| json.len() as u64).sum();
    assert_eq!(storage.outbox_bytes(), total);
    assert_eq!(storage.outbox_ack(batch[0].0).unwrap(), 1);
    assert_eq!(storage.outbox_bytes(), batch[1].1.len() as u64);
    assert_eq!(storage.outbox_len(), 1);
}

#[tokio::test]
async fn a_batch_from_a_sequence_number_skips_the_records_before_it() {
    let (_dir, storage) = fresh();
    for key in ["a", "b", "c"] {
        write(&storage, set(key, b"1", true)).await;
    }
    let all = storage.outbox_batch(usize::MAX, usize::MAX).unwrap();
    let seqs: Vec<u64> = all.iter().map(|(seq, _)| *seq).collect();
    let from_second = storage
        .outbox_batch_from(seqs[1], usize::MAX, usize::MAX)
        .unwrap();
    assert_eq!(
        from_second.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        seqs[1..]
    );
    // Past the last durable record: nothing, not a panic on an empty range.
    assert!(
        storage
            .outbox_batch_from(seqs[2] + 1, usize::MAX, usize::MAX)
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .outbox_batch_from(u64::MAX, usize::MAX, usize::MAX)
            .unwrap()
            .is_empty()
    );
}

// ---- sequence numbers ----

#[tokio::test]
async fn writes_and_events_get_consecutive_seqs_in_commit_order() {
    let (_dir, storage) = fresh();
    write(&storage, set("a", b"1", true)).await;
    let Written::Id(event) = write(&storage, enqueue("orders", b"{}", None)).await else {
        panic!("enqueue returns an id");
    };
    write(&storage, set("local", b"x", false)).await;
    write(&storage, delete("a", true)).await;
    let all = records(&storage);
    let seqs: Vec<u64> = all.iter().map(|(seq, _)| *seq).collect();
    let first = seqs[0];
    assert!(first > 0);
    assert_eq!(
        seqs,
        [first, first + 1, first + 2],
        "a local write takes no seq"
    );
    assert_eq!(event, first + 1);
    assert!(matches!(&all[0].1, Record::Kv { value: Some(_), .. }));
    assert!(matches!(&all[1].1, Record::Event { .. }));
    assert!(matches!(&all[2].1, Record::Kv { value: None, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_each_get_their_own_seq() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let key = format!("k{i}");
                storage.write(set(&key, key.as_bytes(), true)).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Written::Done);
    }
    let seqs = seqs(&storage);
    let first = seqs[0];
    assert_eq!(seqs, (first..first + 64).collect::<Vec<_>>());
    for i in 0..64 {
        let key = format!("k{i}");
        assert_eq!(storage.get(STORE, &key).unwrap(), Some(key.into_bytes()));
    }
}

#[tokio::test]
async fn seqs_continue_after_a_reopen() {
    let (dir, storage) = fresh();
    write(&storage, set("a", b"1", true)).await;
    write(&storage, enqueue("orders", b"{}", None)).await;
    let before = seqs(&storage);
    let storage = reopen(&dir, storage);
    assert_eq!(seqs(&storage), before, "unshipped records survive");
    write(&storage, set("b", b"2", true)).await;
    let after = seqs(&storage);
    assert_eq!(after.len(), 3);
    assert_eq!(after[2], before[1] + 1);
}

#[tokio::test]
async fn seqs_are_not_reused_after_the_outbox_is_acked() {
    let (_dir, storage) = fresh();
    write(&storage, set("a", b"1", true)).await;
    write(&storage, set("b", b"2", true)).await;
    let highest = *seqs(&storage).last().unwrap();
    assert_eq!(storage.outbox_ack(highest).unwrap(), 2);
    assert_eq!(storage.outbox_len(), 0);
    write(&storage, set("c", b"3", true)).await;
    assert_eq!(seqs(&storage), [highest + 1]);
}

#[tokio::test]
async fn seqs_are_not_reused_after_an_ack_and_a_reopen() {
    let (dir, storage) = fresh();
    write(&storage, set("a", b"1", true)).await;
    write(&storage, enqueue("orders", b"{}", None)).await;
    let highest = *seqs(&storage).last().unwrap();
    storage.outbox_ack(highest).unwrap();
    let storage = reopen(&dir, storage);
    assert_eq!(storage.outbox_len(), 0);
    assert_eq!(storage.outbox_bytes(), 0, "recounted at open");
    let Written::Id(id) = write(&storage, enqueue("orders", b"{}", None)).await else {
        panic!("enqueue returns an id");
    };
    assert!(id > highest, "{id} reuses a seq up to {highest}");
    write(&storage, set("b", b"2", true)).await;
    assert_eq!(seqs(&storage), [id, id + 1]);
}

#[tokio::test]
async fn values_survive_a_reopen() {
    let (dir, storage) = fresh();
    write(&storage, set("local", b"l", false)).await;
    write(&storage, set("shared", b"s", true)).await;
    let storage = reopen(&dir, storage);
    assert_eq!(storage.get(STORE, "local").unwrap(), Some(b"l".to_vec()));
    assert_eq!(storage.get(STORE, "shared").unwrap(), Some(b"s".to_vec()));
    assert_eq!(storage.node_id(), NODE);
}

// ---- delete ----

#[tokio::test]
async fn a_replicated_delete_of_an_absent_key_leaves_a_tombstone_and_a_record() {
    let (_dir, storage) = fresh();
    assert_eq!(write(&storage, delete("k", true)).await, Written::Done);
    let tombstone = stored(&storage, "k").expect("a tombstone is stored");
    assert_eq!(tombstone.value, None);
    let (store, key, value, version, seen) = only_kv_record(&storage);
    assert_eq!((store.as_str(), key.as_str()), (STORE, "k"));
    assert_eq!(value, None);
    assert_eq!(version, tombstone.version);
    assert_eq!(seen, None);
    assert!(!storage.exists(STORE, "k").unwrap());
}

#[tokio::test]
async fn a_local_delete_of_an_absent_key_writes_nothing() {
    let (_dir, storage) = fresh();
    assert_eq!(write(&storage, delete("k", false)).await, Written::Done);
    assert_eq!(stored(&storage, "k"), None);
    assert_eq!(storage.outbox_len(), 0);
}

#[tokio::test]
async fn after_a_replicated_delete_the_key_is_gone() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"v", true)).await;
    let written = version_of(&storage, "k");
    storage.outbox_ack(u64::MAX).unwrap();
    write(&storage, delete("k", true)).await;
    assert_eq!(storage.get(STORE, "k").unwrap(), None);
    assert!(!storage.exists(STORE, "k").unwrap());
    assert!(
        storage
            .list_keys(STORE, "", None, 10)
            .unwrap()
            .keys
            .is_empty()
    );
    let (_, _, value, _, seen) = only_kv_record(&storage);
    assert_eq!(value, None);
    assert_eq!(seen, Some(written));
}

#[tokio::test]
async fn after_a_local_delete_the_key_is_gone() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"v", false)).await;
    write(&storage, delete("k", false)).await;
    assert_eq!(storage.get(STORE, "k").unwrap(), None);
    assert!(!storage.exists(STORE, "k").unwrap());
    assert_eq!(storage.outbox_len(), 0);
}

#[tokio::test]
async fn a_write_over_a_tombstone_has_seen_the_tombstone() {
    let (_dir, storage) = fresh();
    write(&storage, delete("k", true)).await;
    let tombstone = version_of(&storage, "k");
    storage.outbox_ack(u64::MAX).unwrap();
    write(&storage, set("k", b"back", true)).await;
    let (_, _, _, _, seen) = only_kv_record(&storage);
    assert_eq!(seen, Some(tombstone));
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"back".to_vec()));
}

// ---- increment ----

#[tokio::test]
async fn increment_of_an_absent_key_starts_from_the_delta() {
    let (_dir, storage) = fresh();
    assert_eq!(write(&storage, increment("n", 5)).await, Written::Number(5));
    assert_eq!(storage.get(STORE, "n").unwrap(), Some(b"5".to_vec()));
    assert_eq!(
        write(&storage, increment("n", -7)).await,
        Written::Number(-2)
    );
    assert_eq!(storage.get(STORE, "n").unwrap(), Some(b"-2".to_vec()));
    assert_eq!(storage.outbox_len(), 2, "each increment is replicated");
}

#[tokio::test]
async fn increment_of_a_non_integer_is_refused_and_changes_nothing() {
    let (_dir, storage) = fresh();
    write(&storage, set("n", b"abc", true)).await;
    let before = version_of(&storage, "n");
    let len = storage.outbox_len();
    assert_eq!(
        write(&storage, increment("n", 1)).await,
        Written::Rejected(Rejection::NotANumber)
    );
    assert_eq!(storage.get(STORE, "n").unwrap(), Some(b"abc".to_vec()));
    assert_eq!(version_of(&storage, "n"), before);
    assert_eq!(storage.outbox_len(), len);
}

#[tokio::test]
async fn increment_that_overflows_is_refused() {
    let (_dir, storage) = fresh();
    let max = i64::MAX.to_string();
    write(&storage, set("n", max.as_bytes(), true)).await;
    let len = storage.outbox_len();
    assert_eq!(
        write(&storage, increment("n", 1)).await,
        Written::Rejected(Rejection::Overflow)
    );
    assert_eq!(storage.get(STORE, "n").unwrap(), Some(max.into_bytes()));
    assert_eq!(storage.outbox_len(), len);
}

// ---- compare-and-swap ----

#[tokio::test]
async fn compare_and_swap_writes_over_the_expected_value() {
    let (_dir, storage) = fresh();
    assert_eq!(
        write(&storage, cas("k", None, b"first")).await,
        Written::Done
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"first".to_vec()));
    assert_eq!(
        write(&storage, cas("k", Some(b"first"), b"second")).await,
        Written::Done
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"second".to_vec()));
    assert_eq!(storage.outbox_len(), 2);
}

#[tokio::test]
async fn compare_and_swap_over_another_value_conflicts_and_changes_nothing() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"current", true)).await;
    let before = version_of(&storage, "k");
    let len = storage.outbox_len();
    assert_eq!(
        write(&storage, cas("k", Some(b"stale"), b"new")).await,
        Written::Rejected(Rejection::Conflict)
    );
    assert_eq!(
        write(&storage, cas("k", None, b"new")).await,
        Written::Rejected(Rejection::Conflict),
        "expecting absence conflicts with a live value"
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"current".to_vec()));
    assert_eq!(version_of(&storage, "k"), before);
    assert_eq!(storage.outbox_len(), len);
}

#[tokio::test]
async fn compare_and_swap_expecting_absence_succeeds_over_a_tombstone() {
    let (_dir, storage) = fresh();
    write(&storage, delete("k", true)).await;
    assert_eq!(write(&storage, cas("k", None, b"new")).await, Written::Done);
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"new".to_vec()));
}

// ---- enqueue ----

#[tokio::test]
async fn enqueue_returns_the_seq_of_its_record() {
    let (_dir, storage) = fresh();
    let Written::Id(id) = write(&storage, enqueue("orders", b"payload", Some("k1"))).await else {
        panic!("enqueue returns an id");
    };
    let all = records(&storage);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, id);
    match &all[0].1 {
        Record::Event {
            topic,
            payload,
            idempotency_key,
            hlc,
        } => {
            assert_eq!(topic, "orders");
            assert_eq!(payload, b"payload");
            assert_eq!(idempotency_key.as_deref(), Some("k1"));
            assert!(*hlc > 0);
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_retried_enqueue_returns_the_first_id_and_adds_no_record() {
    let (_dir, storage) = fresh();
    let first = write(&storage, enqueue("orders", b"one", Some("k1"))).await;
    let again = write(&storage, enqueue("orders", b"two", Some("k1"))).await;
    assert!(matches!(first, Written::Id(_)));
    assert_eq!(again, first);
    assert_eq!(storage.outbox_len(), 1);
}

#[tokio::test]
async fn a_retried_enqueue_is_recognised_after_the_event_shipped_and_a_reopen() {
    let (dir, storage) = fresh();
    let first = write(&storage, enqueue("orders", b"one", Some("k1"))).await;
    storage.outbox_ack(u64::MAX).unwrap();
    let storage = reopen(&dir, storage);
    assert_eq!(
        write(&storage, enqueue("orders", b"one", Some("k1"))).await,
        first
    );
    assert_eq!(storage.outbox_len(), 0);
}

#[tokio::test]
async fn the_same_idempotency_key_on_another_topic_is_a_new_event() {
    let (_dir, storage) = fresh();
    let Written::Id(a) = write(&storage, enqueue("orders", b"x", Some("k1"))).await else {
        panic!("enqueue returns an id");
    };
    let Written::Id(b) = write(&storage, enqueue("invoices", b"x", Some("k1"))).await else {
        panic!("enqueue returns an id");
    };
    assert_ne!(a, b);
    assert_eq!(storage.outbox_len(), 2);
}

#[tokio::test]
async fn enqueues_without_a_key_are_never_deduplicated() {
    let (_dir, storage) = fresh();
    let a = write(&storage, enqueue("orders", b"x", None)).await;
    let b = write(&storage, enqueue("orders", b"x", None)).await;
    assert_ne!(a, b);
    assert_eq!(storage.outbox_len(), 2);
}

// ---- outbox limit ----

/// Room for a few small records, not for a big one.
const SMALL_OUTBOX: u64 = 512;

fn open_small(dir: &TempDir) -> Arc<Storage> {
    Storage::open_with_limit(dir.path(), Some(NODE), SMALL_OUTBOX).expect("open the database")
}

fn big() -> Vec<u8> {
    vec![b'x'; SMALL_OUTBOX as usize]
}

#[tokio::test]
async fn a_replicated_write_that_does_not_fit_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_small(&dir);
    assert_eq!(write(&storage, set("k", b"old", true)).await, Written::Done);
    let before = version_of(&storage, "k");
    let len = storage.outbox_len();
    assert_eq!(
        write(&storage, set("k", &big(), true)).await,
        Written::Rejected(Rejection::OutboxFull)
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"old".to_vec()));
    assert_eq!(version_of(&storage, "k"), before);
    assert_eq!(storage.outbox_len(), len);
}

#[tokio::test]
async fn a_refused_write_does_not_use_up_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_small(&dir);
    write(&storage, set("a", b"1", true)).await;
    write(&storage, set("k", &big(), true)).await;
    write(&storage, set("b", b"2", true)).await;
    let seqs = seqs(&storage);
    assert_eq!(seqs, [seqs[0], seqs[0] + 1]);
}

#[tokio::test]
async fn an_enqueue_that_does_not_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_small(&dir);
    assert_eq!(
        write(&storage, enqueue("orders", &big(), None)).await,
        Written::Rejected(Rejection::OutboxFull)
    );
    assert_eq!(storage.outbox_len(), 0);
    assert_eq!(storage.outbox_bytes(), 0);
}

#[tokio::test]
async fn a_refused_enqueue_does_not_claim_its_idempotency_key() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_small(&dir);
    assert_eq!(
        write(&storage, enqueue("orders", &big(), Some("k1"))).await,
        Written::Rejected(Rejection::OutboxFull)
    );
    let Written::Id(id) = write(&storage, enqueue("orders", b"small", Some("k1"))).await else {
        panic!("the retry is accepted");
    };
    assert_eq!(seqs(&storage), [id]);
}

#[tokio::test]
async fn a_full_outbox_still_takes_local_writes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_small(&dir);
    assert_eq!(
        write(&storage, set("k", &big(), false)).await,
        Written::Done
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(big()));
    assert_eq!(storage.outbox_len(), 0);
}

#[tokio::test]
async fn an_acked_outbox_has_room_again() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_small(&dir);
    let value = vec![b'x'; SMALL_OUTBOX as usize / 2];
    assert_eq!(write(&storage, set("a", &value, true)).await, Written::Done);
    assert_eq!(
        write(&storage, set("b", &value, true)).await,
        Written::Rejected(Rejection::OutboxFull)
    );
    storage.outbox_ack(u64::MAX).unwrap();
    assert_eq!(write(&storage, set("b", &value, true)).await, Written::Done);
    assert_eq!(storage.get(STORE, "b").unwrap(), Some(value));
}

// ---- remote changes ----

#[tokio::test]
async fn a_newer_remote_change_replaces_the_local_value() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"mine", true)).await;
    let local = version_of(&storage, "k");
    let newer = change("k", Some(b"theirs"), local.hlc + 1, "node-b");
    assert_eq!(
        write(&storage, remote(vec![newer.clone()])).await,
        remote_outcome(1, 0)
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"theirs".to_vec()));
    assert_eq!(version_of(&storage, "k"), newer.version);
}

#[tokio::test]
async fn an_older_remote_change_is_left_alone_and_counted() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"mine", true)).await;
    let local = version_of(&storage, "k");
    let older = change("k", Some(b"theirs"), local.hlc - 1, "node-z");
    assert_eq!(
        write(&storage, remote(vec![older])).await,
        remote_outcome(0, 1)
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"mine".to_vec()));
    assert_eq!(version_of(&storage, "k"), local);
}

#[tokio::test]
async fn a_remote_change_to_an_absent_key_is_applied() {
    let (_dir, storage) = fresh();
    let result = write(
        &storage,
        remote(vec![change("k", Some(b"v"), 1 << 16, "node-b")]),
    )
    .await;
    assert_eq!(result, remote_outcome(1, 0));
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"v".to_vec()));
}

#[tokio::test]
async fn equal_remote_stamps_are_ordered_by_node_id() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"mine", true)).await;
    let hlc = version_of(&storage, "k").hlc;
    // "node-0" < "node-a" < "node-b".
    let loses = change("k", Some(b"zero"), hlc, "node-0");
    let wins = change("k", Some(b"bee"), hlc, "node-b");
    assert_eq!(
        write(&storage, remote(vec![loses])).await,
        remote_outcome(0, 1)
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"mine".to_vec()));
    assert_eq!(
        write(&storage, remote(vec![wins])).await,
        remote_outcome(1, 0)
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"bee".to_vec()));
}

#[tokio::test]
async fn a_remote_change_with_the_current_version_is_not_reapplied() {
    let (_dir, storage) = fresh();
    let c = change("k", Some(b"v"), 7 << 16, "node-b");
    write(&storage, remote(vec![c.clone()])).await;
    assert_eq!(write(&storage, remote(vec![c])).await, remote_outcome(0, 1));
}

#[tokio::test]
async fn remote_changes_converge_whatever_their_order() {
    let (_dir, storage) = fresh();
    let early = change("k", Some(b"early"), 5 << 16, "node-b");
    let late = change("k", Some(b"late"), 6 << 16, "node-c");
    assert_eq!(
        write(&storage, remote(vec![late, early])).await,
        remote_outcome(1, 1)
    );
    assert_eq!(storage.get(STORE, "k").unwrap(), Some(b"late".to_vec()));
}

#[tokio::test]
async fn a_remote_tombstone_deletes() {
    let (_dir, storage) = fresh();
    write(&storage, set("k", b"mine", true)).await;
    let hlc = version_of(&storage, "k").hlc;
    write(&storage, remote(vec![change("k", None, hlc + 1, "node-b")])).await;
    assert_eq!(storage.get(STORE, "k").unwrap(), None);
    assert!(!storage.exists(STORE, "k").unwrap());
    assert_eq!(stored(&storage, "k").expect("a tombstone").value, None);
}

#[tokio::test]
async fn remote_changes_add_no_outbox_record() {
    let (_dir, storage) = fresh();
    let changes = vec![
        change("a", Some(b"1"), 1 << 16, "node-b"),
        change("b", None, 2 << 16, "node-b"),
    ];
    write(&storage, remote(changes)).await;
    assert_eq!(storage.outbox_len(), 0);
    assert_eq!(storage.outbox_bytes(), 0);
}

#[tokio::test]
async fn the_pull_cursor_and_cloud_id_read_back() {
    let (dir, storage) = fresh();
    assert_eq!(
        (storage.pull_cursor().unwrap(), storage.cloud_id().unwrap()),
        (0, 0)
    );
    let op = WriteOp::ApplyRemote {
        changes: vec![change("k", Some(b"v"), 1 << 16, "node-b")],
        cursor: 42,
        cloud: 7,
    };
    write(&storage, op).await;
    assert_eq!(storage.pull_cursor().unwrap(), 42);
    assert_eq!(storage.cloud_id().unwrap(), 7);
    let empty = WriteOp::ApplyRemote {
        changes: Vec::new(),
        cursor: 43,
        cloud: 7,
    };
    assert_eq!(write(&storage, empty).await, remote_outcome(0, 0));
    assert_eq!(storage.pull_cursor().unwrap(), 43);
    let storage = reopen(&dir, storage);
    assert_eq!(storage.pull_cursor().unwrap(), 43);
    assert_eq!(storage.cloud_id().unwrap(), 7);
}

#[tokio::test]
async fn a_local_write_after_a_remote_change_has_seen_it() {
    let (_dir, storage) = fresh();
    let theirs = change("k", Some(b"theirs"), 1 << 16, "node-b");
    write(&storage, remote(vec![theirs.clone()])).await;
    write(&storage, set("k", b"mine", true)).await;
    let (_, _, _, version, seen) = only_kv_record(&storage);
    assert_eq!(seen, Some(theirs.version.clone()));
    assert!(version > theirs.version);
}

#[tokio::test]
async fn the_clock_moves_past_an_observed_remote_stamp() {
    let (_dir, storage) = fresh();
    // A minute ahead: a skewed but sane clock.
    let ahead = (wall_ms() + 60_000) << 16;
    write(
        &storage,
        remote(vec![change("theirs", Some(b"v"), ahead, "node-b")]),
    )
    .await;
    write(&storage, set("mine", b"v", true)).await;
    assert!(version_of(&storage, "mine").hlc > ahead);
}

#[tokio::test]
async fn an_observed_remote_stamp_survives_a_reopen() {
    let (dir, storage) = fresh();
    let ahead = (wall_ms() + 60_000) << 16;
    write(
        &storage,
        remote(vec![change("theirs", Some(b"v"), ahead, "node-b")]),
    )
    .await;
    let storage = reopen(&dir, storage);
    write(&storage, set("mine", b"v", true)).await;
    assert!(version_of(&storage, "mine").hlc > ahead);
}

#[tokio::test]
async fn a_remote_stamp_far_in_the_future_does_not_drag_the_clock() {
    let (_dir, storage) = fresh();
    let wild = (wall_ms() + 60 * 60 * 1000) << 16;
    let result = write(
        &storage,
        remote(vec![change("theirs", Some(b"v"), wild, "node-b")]),
    )
    .await;
    assert_eq!(
        result,
        remote_outcome(1, 0),
        "the change itself still lands"
    );
    write(&storage, set("mine", b"v", true)).await;
    assert!(version_of(&storage, "mine").hlc < wild);
}

// A flush that does not come back (held by a test gate, as a disk that
// stops answering would hold it).

use crate::{StorageError, StorageOptions};
use outpost_sled_guard::gate;

/// Short bounds, so that a held flush is given up on quickly.
fn impatient(stall_reopen_after: Duration) -> StorageOptions {
    StorageOptions {
        min_free_bytes: 0,
        // Generous: a real flush on a loaded 2-core machine can take a
        // while, and only the held one is meant to time out.
        flush_timeout: Duration::from_secs(2),
        probe_interval: Duration::from_millis(20),
        stall_reopen_after,
        ..StorageOptions::default()
    }
}

/// A write must answer at all; nothing here measures speed.
async fn answer(storage: &Storage, op: WriteOp) -> Result<Written, StorageError> {
    tokio::time::timeout(Duration::from_secs(20), storage.write(op))
        .await
        .expect("the write answers")
}

/// Waits (at most 20 s) until writes are accepted again; returns the first
/// one accepted.
async fn until_writable(storage: &Storage, op: impl Fn() -> WriteOp) -> Written {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match answer(storage, op()).await {
            Ok(written) => return written,
            Err(StorageError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("writes did not resume: {e} ({:?})", storage.health()),
        }
    }
}

#[tokio::test]
async fn a_flush_past_the_bound_answers_outcome_unknown_then_refuses_writes_until_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let options = impatient(Duration::from_secs(3600));
    let storage = Storage::open_with(dir.path(), Some(NODE), &options).unwrap();
    assert_eq!(
        write(&storage, enqueue("t", b"first", None)).await,
        Written::Id(1)
    );

    let held = gate::hold_next_flush(&dir.path().join("db"));
    let unknown = answer(&storage, enqueue("t", b"held", None)).await;
    assert!(
        matches!(unknown, Err(StorageError::OutcomeUnknown(_))),
        "{unknown:?}"
    );
    assert!(held.holding());
    let refused = answer(&storage, set("k", b"v", true)).await;
    assert!(
        matches!(refused, Err(StorageError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(
        stored(&storage, "k"),
        None,
        "a refused write is not applied"
    );
    assert!(matches!(
        storage.sync().await,
        Err(StorageError::Unavailable(_))
    ));
    let moved = storage
        .on_writer(|handles| Ok(handles.quarantine.insert(b"q", &b"r"[..])?))
        .await;
    assert!(
        matches!(moved, Err(StorageError::Unavailable(_))),
        "{moved:?}"
    );
    assert_eq!(storage.quarantined(), 0, "not run");
    let health = storage.health();
    assert!(
        !health.writable && health.failing_since.is_some(),
        "{health:?}"
    );
    assert_eq!(
        (health.outcome_unknown, health.refused),
        (1, 3),
        "{health:?}"
    );
    assert_eq!(
        seqs(&storage),
        [1],
        "the shipper sees no record that is not on disk"
    );

    held.release();
    let written = until_writable(&storage, || enqueue("t", b"after", None)).await;
    assert_eq!(written, Written::Id(3), "no sequence number twice");
    assert_eq!(
        seqs(&storage),
        [1, 2, 3],
        "the held write made it in the end"
    );
    let health = storage.health();
    assert!(
        health.writable && health.failing_since.is_none(),
        "{health:?}"
    );
    assert!(
        health
            .last_error
            .is_some_and(|e| e.contains("did not finish"))
    );
    assert_eq!(health.reopens, 0, "a flush that finished needs no reopen");
    storage.sync().await.unwrap();
}

#[tokio::test]
async fn a_flush_that_stays_stuck_is_given_up_and_the_database_reopened_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let options = impatient(Duration::from_millis(500));
    let storage = Storage::open_with(dir.path(), Some(NODE), &options).unwrap();
    write(&storage, set("before", b"1", true)).await;
    assert_eq!(
        write(&storage, enqueue("t", b"first", None)).await,
        Written::Id(2)
    );

    let held = gate::hold_next_flush(&dir.path().join("db"));
    let unknown = answer(&storage, enqueue("t", b"held", None)).await;
    assert!(
        matches!(unknown, Err(StorageError::OutcomeUnknown(_))),
        "{unknown:?}"
    );

    // Never released: the database is reopened around it.
    let written = until_writable(&storage, || enqueue("t", b"after", None)).await;
    let Written::Id(after) = written else {
        panic!("{written:?}")
    };
    assert!(
        after > 3,
        "the held write's number ({}) is not handed out again",
        3
    );
    assert!(held.holding(), "still stuck");
    assert_eq!(storage.health().reopens, 1);
    assert_eq!(
        storage.get(STORE, "before").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    write(&storage, set("later", b"2", true)).await;
    let shipped = seqs(&storage);
    assert!(
        shipped.windows(2).all(|w| w[1] == w[0] + 1) && shipped.contains(&after),
        "no gap in the outbox after the reopen (the cloud would refuse it): {shipped:?}"
    );

    held.release();
    let storage = reopen(&dir, storage);
    assert_eq!(
        storage.get(STORE, "later").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert!(seqs(&storage).contains(&after));
}

#[tokio::test]
async fn work_run_on_the_writer_answers_once_durable() {
    let (dir, storage) = fresh();
    let answer = storage
        .on_writer(|handles| {
            use sled::Transactional;
            (&handles.outbox, &handles.quarantine)
                .transaction(|(_, quarantine)| {
                    quarantine.insert(&b"q"[..], &b"r"[..])?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(7)
                })
                .map_err(|_| StorageError::Corrupt("the transaction failed".into()))
        })
        .await;
    assert_eq!(answer.unwrap(), 7);
    let storage = reopen(&dir, storage);
    assert_eq!(storage.quarantined(), 1, "durable");
}

#[tokio::test]
async fn the_outbox_count_follows_the_records_through_writes_groups_acks_and_a_reopen() {
    let (dir, storage) = fresh();
    let tree_len = |storage: &Storage| storage.handles().outbox.len();
    // A group of concurrent writes, some of which add no record (local
    // writes, a refused compare-and-swap, a repeated idempotency key).
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..40 {
        let storage = storage.clone();
        writes.spawn(async move {
            let op = match i % 5 {
                0 => set(&format!("r{i}"), b"v", true),
                1 => set(&format!("l{i}"), b"v", false),
                2 => cas("absent", Some(b"x"), b"n"),
                3 => enqueue("t", b"p", Some("same")),
                _ => enqueue("t", b"p", None),
            };
            storage.write(op).await.unwrap();
        });
    }
    writes.join_all().await;
    assert_eq!(storage.outbox_len(), tree_len(&storage));
    assert_eq!(storage.outbox_len(), 8 + 1 + 8);
    let batch = storage.outbox_batch(5, usize::MAX).unwrap();
    storage.outbox_ack(batch[4].0).unwrap();
    assert_eq!(storage.outbox_len(), 12);
    let storage = reopen(&dir, storage);
    assert_eq!(storage.outbox_len(), 12);
    assert_eq!(storage.outbox_len(), tree_len(&storage));
}

#[tokio::test]
async fn a_replicated_write_says_which_record_it_made_and_counts_as_pending_until_acked() {
    let (dir, storage) = fresh();
    let (written, receipt) = storage.write_receipt(set("k", b"v", true)).await.unwrap();
    assert_eq!(written, Written::Done);
    let receipt = receipt.expect("a replicated write makes a record");
    let (_, local) = storage.write_receipt(set("l", b"v", false)).await.unwrap();
    assert_eq!(local, None, "a local write makes no record");
    storage.write(increment("n", 1)).await.unwrap();
    assert_eq!(storage.pending_writes(STORE), 2);
    let stored = storage.get_versioned(STORE, "k").unwrap().unwrap();
    assert_eq!(stored.version, receipt.version);
    assert!(!storage.is_answered(&stored.version));

    storage.outbox_ack(receipt.seq).unwrap();
    assert_eq!(storage.pending_writes(STORE), 1);
    assert!(storage.is_answered(&stored.version));
    let newer = storage.get_versioned(STORE, "n").unwrap().unwrap();
    assert!(!storage.is_answered(&newer.version));
    // Another node's version came from the cloud.
    let foreign = Version {
        hlc: u64::MAX,
        node: "node-b".into(),
    };
    assert!(storage.is_answered(&foreign));

    // Counted again from the outbox on open.
    let storage = reopen(&dir, storage);
    assert_eq!(storage.pending_writes(STORE), 1);
    assert!(storage.is_answered(&stored.version));
    assert!(!storage.is_answered(&newer.version));
    storage.outbox_ack(u64::MAX - 1).unwrap();
    assert_eq!(storage.pending_writes(STORE), 0);
    assert!(storage.is_answered(&newer.version));
}

#[tokio::test]
async fn a_write_that_awaits_the_cloud_is_registered_before_its_record_can_ship() {
    let (_dir, storage) = fresh();
    let reply = storage
        .write_awaiting_cloud(set("k", b"v", true))
        .await
        .unwrap();
    let receipt = reply.receipt.expect("a record");
    // Shippable now, and already registered.
    let batch = storage.outbox_batch(10, usize::MAX).unwrap();
    assert_eq!(batch.last().map(|(seq, _)| *seq), Some(receipt.seq));
    assert_eq!(
        storage.awaiting().awaited(0, receipt.seq),
        vec![receipt.seq]
    );
    storage
        .awaiting()
        .answer_through(receipt.seq, |_| crate::CloudAnswer::Applied);
    assert_eq!(
        reply.answer.unwrap().await.unwrap(),
        crate::CloudAnswer::Applied
    );
    // A local write has no record to wait on.
    let local = storage
        .write_awaiting_cloud(set("l", b"v", false))
        .await
        .unwrap();
    assert!(local.answer.is_none() && local.receipt.is_none());
}
