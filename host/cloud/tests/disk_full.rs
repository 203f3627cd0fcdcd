//! The cloud's database on a real, small tmpfs that fills up: an ingest
//! answers storage-unavailable (never an ack) within a bound, later ones
//! at once, reads and credential lookups keep working, health says so, and
//! ingests resume by themselves once space is freed. Batches are resent
//! the way an edge resends them (the same sequence numbers), and every
//! acknowledged one is in the reopened database exactly once, with no id
//! handed out twice. Mounting needs root: without it these tests fail
//! (they do not skip).
//!
//! In a file of their own so that they run in a process of their own, one
//! at a time: sled orders transactions with one lock for the whole
//! process, so an instance stuck on its full disk would hold up any other
//! database in it (the cloud has one database, so this is the tests'
//! problem only).

use outpost_cloud::contract::{Checked, CloudStoreError};
use outpost_cloud::credentials::{Enrol, token_hash};
use outpost_cloud::guard::StorageOptions;
use outpost_cloud::sled_store::SledStore;
use outpost_sled_guard::tmpfs::Tmpfs;
use outpost_wire::{Ack, Entry, Record, Version};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODE: &str = "edge-a";
const EPOCH: u64 = 7;
const STORE: &str = "@disk";
const TOPIC: &str = "t";
/// Generous: an ingest must answer at all, well before an edge gives up
/// on the request; nothing here measures speed.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// How long recovery may take once space is freed.
const RECOVER_WITHIN: Duration = Duration::from_secs(60);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn options() -> StorageOptions {
    StorageOptions {
        // Let sled itself meet the full disk (the guard has its own test).
        min_free_bytes: 0,
        probe_interval: Duration::from_millis(200),
        stall_reopen_after: Duration::from_secs(2),
        ..StorageOptions::default()
    }
}

fn filled(i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("value {i} ").into_bytes();
    v.resize(len, b'0' + (i % 10) as u8);
    v
}

/// What an edge would ship: numbered records, resent as they were until
/// acknowledged.
struct Edge {
    next_seq: u64,
    /// The batch sent and not acknowledged yet.
    pending: Option<Checked>,
    /// key -> value of every acknowledged KV record.
    acked: BTreeMap<String, Vec<u8>>,
    /// Payloads of every acknowledged event.
    acked_events: BTreeSet<Vec<u8>>,
    value_len: usize,
}

impl Edge {
    fn new(value_len: usize) -> Self {
        Self {
            next_seq: 1,
            pending: None,
            acked: BTreeMap::new(),
            acked_events: BTreeSet::new(),
            value_len,
        }
    }

    /// The batch to send: the pending one again, or `kvs` new KV records
    /// and one event.
    fn batch(&mut self, kvs: u64) -> Checked {
        if let Some(pending) = &self.pending {
            return pending.clone();
        }
        let mut entries = Vec::new();
        for _ in 0..kvs {
            let seq = self.next_seq;
            self.next_seq += 1;
            let record = Record::Kv {
                store: STORE.into(),
                key: format!("k{seq}"),
                value: Some(filled(seq, self.value_len)),
                version: Version {
                    hlc: seq << 16,
                    node: NODE.into(),
                },
                seen: None,
            };
            entries.push((record, seq));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        entries.push((
            Record::Event {
                topic: TOPIC.into(),
                payload: format!("event {seq}").into_bytes(),
                idempotency_key: None,
                hlc: seq << 16,
            },
            seq,
        ));
        let batch = Checked {
            node: NODE.into(),
            epoch: EPOCH,
            entries: entries
                .into_iter()
                .map(|(record, seq)| {
                    (
                        Entry {
                            seq,
                            record,
                            origin: None,
                            outcome: false,
                        },
                        None,
                    )
                })
                .collect(),
        };
        self.pending = Some(batch.clone());
        batch
    }

    /// Sends the next batch; `Err` is the storage failure it got (the
    /// batch stays pending).
    fn ship(&mut self, store: &Arc<SledStore>, kvs: u64) -> Result<Ack, String> {
        let batch = self.batch(kvs);
        match ingest(store, batch.clone()) {
            Ok(ack) => {
                assert_eq!(ack.through, batch.entries.last().unwrap().0.seq);
                assert_eq!(ack.applied + ack.duplicates, batch.entries.len() as u64);
                for (entry, _) in &batch.entries {
                    match &entry.record {
                        Record::Kv { key, value, .. } => {
                            self.acked.insert(key.clone(), value.clone().unwrap());
                        }
                        Record::Event { payload, .. } => {
                            self.acked_events.insert(payload.clone());
                        }
                        Record::Skipped { .. } => {}
                    }
                }
                self.pending = None;
                Ok(ack)
            }
            Err(CloudStoreError::Unavailable(reason)) => Err(reason),
            Err(e) => panic!("an ingest failed otherwise than storage-unavailable: {e}"),
        }
    }
}

/// An ingest that must answer within [`ANSWER_WITHIN`] (run on a thread of
/// its own, as the cloud runs it on the blocking pool).
fn ingest(store: &Arc<SledStore>, batch: Checked) -> Result<Ack, CloudStoreError> {
    let (done, answer) = std::sync::mpsc::channel();
    let store = store.clone();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = done.send(store.ingest(&batch));
    });
    answer
        .recv_timeout(ANSWER_WITHIN)
        .unwrap_or_else(|_| panic!("an ingest did not answer within {:?}", started.elapsed()))
}

/// Ships until storage refuses; returns the first failure.
fn fill_disk(store: &Arc<SledStore>, edge: &mut Edge, kvs: u64) -> String {
    for _ in 0..100_000 {
        if let Err(reason) = edge.ship(store, kvs) {
            return reason;
        }
    }
    panic!("the disk never filled");
}

/// Every change of the feed, following pages.
fn whole_feed(store: &SledStore) -> Vec<outpost_wire::Change> {
    let mut all = Vec::new();
    let mut since = 0;
    loop {
        let page = store.feed(since, 1000).expect("the feed reads");
        if page.changes.is_empty() {
            return all;
        }
        since = page.next;
        all.extend(page.changes);
    }
}

/// A node credential, stored while storage works; returns its token hash.
fn enrol(store: &SledStore) -> String {
    let (credential, token) = Enrol::node(NODE).issue().unwrap();
    store.put_credential(&credential).unwrap();
    token_hash(&token)
}

/// While storage fails: ingests are refused, several at once too, reads
/// and credential lookups work, health says so; then `free_space`, and
/// ingests come back (the pending batch first, as an edge resends it).
fn recovers_after_space_is_freed(
    store: &Arc<SledStore>,
    edge: &mut Edge,
    token_hash: &str,
    free_space: impl FnOnce(),
) {
    let refused = ingest(store, edge.batch(1));
    assert!(
        matches!(&refused, Err(CloudStoreError::Unavailable(r)) if r.contains("nothing was applied")),
        "an ingest while failing is refused, not applied: {refused:?}"
    );
    let at_once: Vec<_> = (0..8)
        .map(|_| {
            let (store, batch) = (store.clone(), edge.batch(1));
            std::thread::spawn(move || ingest(&store, batch))
        })
        .collect();
    for answer in at_once {
        let answer = answer.join().unwrap();
        assert!(
            matches!(answer, Err(CloudStoreError::Unavailable(_))),
            "{answer:?}"
        );
    }
    let feed = whole_feed(store);
    assert!(!feed.is_empty(), "the feed reads while storage fails");
    let (key, value) = edge.acked.iter().next().expect("something was acked");
    assert_eq!(
        store.get(STORE, key).unwrap().and_then(|c| c.1).as_deref(),
        Some(value.as_slice()),
        "keys read"
    );
    assert!(!store.events(TOPIC, 0, 10).unwrap().items.is_empty());
    assert!(
        store.credential_by_hash(token_hash).unwrap().is_some(),
        "edges still authenticate"
    );
    let health = store.health();
    assert!(!health.writable, "{health:?}");
    assert!(
        health.failing_since.is_some() && health.last_error.is_some(),
        "{health:?}"
    );
    assert!(health.refused >= 9, "{health:?}");

    free_space();
    let deadline = Instant::now() + RECOVER_WITHIN;
    loop {
        match edge.ship(store, 1) {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(reason) => panic!(
                "ingests did not resume within {RECOVER_WITHIN:?}: {reason} ({:?})",
                store.health()
            ),
        }
    }
    let health = store.health();
    assert!(
        health.writable && health.failing_since.is_none(),
        "{health:?}"
    );
    for _ in 0..10 {
        edge.ship(store, 3).expect("ingests go on");
    }
}

/// Drops `store` and opens the directory again (retrying while the old
/// instance's threads let go of sled's lock), then checks that every
/// acknowledged record is there exactly once and no id was handed out
/// twice.
fn assert_all_acknowledged_kept(dir: &Path, store: Arc<SledStore>, edge: &Edge) {
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        match SledStore::open_with(dir, &options()) {
            Ok(store) => break store,
            Err(e) if Instant::now() > deadline => panic!("cannot reopen the database: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    for (key, value) in &edge.acked {
        assert_eq!(
            store.get(STORE, key).unwrap().and_then(|c| c.1).as_deref(),
            Some(value.as_slice()),
            "acknowledged write {key} survives"
        );
    }
    let feed = whole_feed(&store);
    let cursors: BTreeSet<u64> = feed.iter().map(|c| c.cursor).collect();
    assert_eq!(cursors.len(), feed.len(), "no feed cursor twice");
    let keys: BTreeSet<&str> = feed.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys.len(), feed.len(), "every key once in the feed");
    for key in edge.acked.keys() {
        assert!(keys.contains(key.as_str()), "{key} is in the feed");
    }
    let mut events = Vec::new();
    let mut since = 0;
    loop {
        let page = store.events(TOPIC, since, 1000).unwrap();
        if page.items.is_empty() {
            break;
        }
        since = page.next;
        events.extend(page.items);
    }
    let ids: BTreeSet<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "no event id twice");
    let payloads: BTreeSet<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    assert_eq!(payloads.len(), events.len(), "every event once");
    for payload in &edge.acked_events {
        assert!(payloads.contains(payload.as_slice()), "acked event kept");
    }
    // The edge goes on where it was: nothing it sends is a duplicate.
    let mut edge_after = Edge::new(10);
    edge_after.next_seq = edge.next_seq;
    let ack = edge_after.ship(&store, 1).expect("ingests after reopening");
    assert_eq!((ack.applied, ack.duplicates), (2, 0));
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_full_disk_answers_unavailable_and_ingests_resume_once_space_is_freed() {
    let _serial = serial();
    let disk = Tmpfs::mount("4m");
    let filler = disk.fill("filler", 1024 * 1024);
    let store = SledStore::open_with(disk.path(), &options()).unwrap();
    let token_hash = enrol(&store);
    let mut edge = Edge::new(1000);

    let first = fill_disk(&store, &mut edge, 7);
    assert!(!edge.acked.is_empty());
    assert!(
        first.contains("not acknowledged"),
        "the ingest that met the full disk is in doubt: {first}"
    );
    let free = || std::fs::remove_file(&filler).expect("free the filler");
    recovers_after_space_is_freed(&store, &mut edge, &token_hash, free);
    assert!(store.health().reopens >= 1, "sled needed a new instance");
    assert_all_acknowledged_kept(disk.path(), store, &edge);
}

/// Large values go to sled's blob files, and a failed blob write leaves
/// every later flush of that instance blocked for good: the ingest must
/// still answer (the instance is retired, never flushed again), later ones
/// too, and the database must still come back.
#[test]
fn large_values_that_fail_their_blob_write_are_answered_and_recovered_from() {
    let _serial = serial();
    let disk = Tmpfs::mount("4m");
    let store = SledStore::open_with(disk.path(), &options()).unwrap();
    let token_hash = enrol(&store);
    let mut edge = Edge::new(200_000);

    let first = fill_disk(&store, &mut edge, 2);
    assert!(!edge.acked.is_empty());
    assert!(first.contains("not acknowledged"), "{first}");
    // sled rewrites whole nodes of large values, so it needs more than a
    // little room back.
    recovers_after_space_is_freed(&store, &mut edge, &token_hash, || disk.grow("64m"));
    assert_all_acknowledged_kept(disk.path(), store, &edge);
}

/// With room kept free, ingests stop before sled ever meets the full disk:
/// refused as not applied, and back without a reopen.
#[test]
fn the_free_space_guard_refuses_ingests_before_the_disk_is_full() {
    let _serial = serial();
    let disk = Tmpfs::mount("16m");
    let guarded = StorageOptions {
        min_free_bytes: 8 * 1024 * 1024,
        ..options()
    };
    let store = SledStore::open_with(disk.path(), &guarded).unwrap();
    let token_hash = enrol(&store);
    let mut edge = Edge::new(1000);
    edge.ship(&store, 3).expect("room at first");

    let filler = disk.fill("filler", 9 * 1024 * 1024);
    let refused = edge.ship(&store, 3).expect_err("the guard refuses");
    assert!(
        refused.contains("nothing was applied") && refused.contains("nearly full"),
        "{refused}"
    );
    let pending = edge.pending.clone().unwrap();
    let Record::Kv { key, .. } = &pending.entries[0].0.record else {
        unreachable!()
    };
    assert_eq!(store.get(STORE, key).unwrap(), None, "not applied");

    let free = || std::fs::remove_file(&filler).expect("free the filler");
    recovers_after_space_is_freed(&store, &mut edge, &token_hash, free);
    let health = store.health();
    assert_eq!(
        (health.reopens, health.outcome_unknown),
        (0, 0),
        "{health:?}"
    );
    assert_all_acknowledged_kept(disk.path(), store, &edge);
}
