//! The database on a real, small tmpfs that fills up: writes answer
//! quickly (outcome unknown, then unavailable), reads keep working, health
//! says so, and writes resume by themselves once space is freed, with no
//! acknowledged write lost. Mounting needs root: without it these tests
//! fail (they do not skip).

use outpost_sled_guard::tmpfs::Tmpfs;
use outpost_store::{Storage, StorageError, StorageOptions, WriteOp, Written};
use outpost_wire::Record;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE: &str = "n1";
const STORE: &str = "@disk";
/// Generous: a write must answer at all, well before the edge's 30 s
/// deadline; nothing here measures speed.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// How long recovery may take once space is freed.
const RECOVER_WITHIN: Duration = Duration::from_secs(60);

/// One test at a time: sled serializes transactions with one lock for the
/// whole process, so a sled instance stuck on its full disk would hold up
/// the other tests' databases (a node has one database, so this is the
/// tests' problem only).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options() -> StorageOptions {
    StorageOptions {
        // Let sled itself meet the full disk (the guard has its own test).
        min_free_bytes: 0,
        probe_interval: Duration::from_millis(200),
        stall_reopen_after: Duration::from_secs(2),
        ..StorageOptions::default()
    }
}

fn set(key: &str, value: &[u8]) -> WriteOp {
    WriteOp::Set {
        store: STORE.into(),
        replicated: true,
        key: key.into(),
        value: value.to_vec(),
    }
}

/// A write that must answer within [`ANSWER_WITHIN`].
async fn write(storage: &Storage, op: WriteOp) -> Result<Written, StorageError> {
    let started = Instant::now();
    match tokio::time::timeout(ANSWER_WITHIN, storage.write(op)).await {
        Ok(result) => result,
        Err(_) => panic!("a write did not answer within {:?}", started.elapsed()),
    }
}

fn filled(i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("value {i} ").into_bytes();
    v.resize(len, b'0' + (i % 10) as u8);
    v
}

/// Drops `storage` and opens the directory again, retrying while the old
/// writer's threads let go of sled's lock.
fn reopen(dir: &Path, storage: Arc<Storage>) -> Arc<Storage> {
    assert_eq!(
        Arc::strong_count(&storage),
        1,
        "the test holds the only handle"
    );
    drop(storage);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Storage::open_with(dir, Some(NODE), &options()) {
            Ok(storage) => return storage,
            Err(e) if Instant::now() > deadline => panic!("cannot reopen the database: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Every acknowledged write is in the reopened database, and in the outbox
/// under a sequence number of its own.
fn assert_all_acknowledged_kept(
    dir: &Path,
    storage: Arc<Storage>,
    acked: &BTreeMap<String, Vec<u8>>,
) {
    let storage = reopen(dir, storage);
    for (key, value) in acked {
        assert_eq!(
            storage.get(STORE, key).unwrap().as_deref(),
            Some(value.as_slice()),
            "acknowledged write {key} survives"
        );
    }
    let mut shipped = BTreeMap::new();
    for (seq, bytes) in storage.outbox_batch(usize::MAX, usize::MAX).unwrap() {
        if let Ok(Record::Kv { key, value, .. }) = serde_json::from_slice::<Record>(&bytes) {
            shipped.insert(key, (seq, value));
        }
    }
    for (key, value) in acked {
        let (_, recorded) = shipped
            .get(key)
            .unwrap_or_else(|| panic!("{key} has its outbox record"));
        assert_eq!(
            recorded.as_deref(),
            Some(value.as_slice()),
            "{key}'s record is its own"
        );
    }
    drop(storage);
}

/// Fills the disk with writes of `len` bytes from `writers` writers at
/// once; returns what was acknowledged and every failure.
async fn fill_disk(
    storage: &Arc<Storage>,
    writers: usize,
    len: usize,
) -> (BTreeMap<String, Vec<u8>>, Vec<StorageError>) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            for i in 0.. {
                let key = format!("w{w}-{i}");
                let value = filled(i, len);
                match write(&storage, set(&key, &value)).await {
                    Ok(Written::Done) => {
                        acked.insert(key, value);
                    }
                    Ok(other) => panic!("unexpected answer {other:?}"),
                    Err(e) => return (acked, e),
                }
                assert!(i < 100_000, "the disk never filled");
            }
            unreachable!()
        }));
    }
    let mut acked = BTreeMap::new();
    let mut failures = Vec::new();
    for task in tasks {
        let (mine, failure) = task.await.unwrap();
        acked.extend(mine);
        failures.push(failure);
    }
    (acked, failures)
}

/// After the disk filled: later writes are refused at once, reads work,
/// health says not writable; freeing space brings writes back.
async fn recovers_after_space_is_freed(
    storage: &Arc<Storage>,
    free_space: impl FnOnce(),
    acked: &mut BTreeMap<String, Vec<u8>>,
) {
    let refused = write(storage, set("while-full", b"x")).await;
    assert!(
        matches!(refused, Err(StorageError::Unavailable(_))),
        "a write while failing is refused, not applied: {refused:?}"
    );
    let (key, value) = acked.iter().next().expect("something was written first");
    assert_eq!(
        storage.get(STORE, key).unwrap().as_deref(),
        Some(value.as_slice()),
        "reads keep working"
    );
    assert!(storage.exists(STORE, key).unwrap());
    assert!(
        !storage
            .list_keys(STORE, "", None, 10)
            .unwrap()
            .keys
            .is_empty()
    );
    let health = storage.health();
    assert!(!health.writable, "{health:?}");
    assert!(
        health.failing_since.is_some() && health.last_error.is_some(),
        "{health:?}"
    );
    assert!(health.outcome_unknown + health.refused >= 1, "{health:?}");

    free_space();
    let deadline = Instant::now() + RECOVER_WITHIN;
    let mut attempt = 0;
    loop {
        let key = format!("after-{attempt}");
        let value = filled(attempt, 100);
        match write(storage, set(&key, &value)).await {
            Ok(written) => {
                assert_eq!(written, Written::Done);
                acked.insert(key, value);
                break;
            }
            Err(StorageError::Unavailable(_) | StorageError::OutcomeUnknown(_))
                if Instant::now() < deadline =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "writes did not resume within {RECOVER_WITHIN:?}: {e} ({:?})",
                storage.health()
            ),
        }
    }
    let health = storage.health();
    assert!(
        health.writable && health.failing_since.is_none(),
        "{health:?}"
    );
    for i in 0..20 {
        let key = format!("later-{i}");
        let value = filled(i, 500);
        assert_eq!(
            write(storage, set(&key, &value)).await.unwrap(),
            Written::Done
        );
        acked.insert(key, value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_outcome_unknown_and_writes_resume_once_space_is_freed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let disk = Tmpfs::mount("4m");
    let filler = disk.fill("filler", 1024 * 1024);
    let storage = Storage::open_with(disk.path(), Some(NODE), &options()).unwrap();

    let (mut acked, failures) = fill_disk(&storage, 1, 1000).await;
    assert!(!acked.is_empty());
    assert!(
        matches!(failures[0], StorageError::OutcomeUnknown(_)),
        "the write that met the full disk is in doubt: {:?}",
        failures[0]
    );
    let free = || std::fs::remove_file(&filler).expect("free the filler");
    recovers_after_space_is_freed(&storage, free, &mut acked).await;
    assert!(storage.health().reopens >= 1, "sled needed a new instance");
    assert_all_acknowledged_kept(disk.path(), storage, &acked);
}

/// Large values go to sled's blob files, and a failed blob write leaves
/// every later sled flush blocked for good: the writers must still hear
/// back, and the database must still come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_that_never_returns_is_answered_and_recovered_from() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let disk = Tmpfs::mount("4m");
    let storage = Storage::open_with(disk.path(), Some(NODE), &options()).unwrap();

    let (mut acked, failures) = fill_disk(&storage, 8, 100_000).await;
    for failure in &failures {
        assert!(
            matches!(
                failure,
                StorageError::OutcomeUnknown(_) | StorageError::Unavailable(_)
            ),
            "{failure:?}"
        );
    }
    assert!(
        failures
            .iter()
            .any(|f| matches!(f, StorageError::OutcomeUnknown(_))),
        "some write was in the group that failed: {failures:?}"
    );
    // sled rewrites whole nodes of large values, so it needs more than a
    // little room back.
    recovers_after_space_is_freed(&storage, || disk.grow("64m"), &mut acked).await;
    assert_all_acknowledged_kept(disk.path(), storage, &acked);
}

/// With room kept free, writes stop before sled ever meets the full disk:
/// refused as not applied, and back without a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_space_guard_refuses_writes_before_the_disk_is_full() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let disk = Tmpfs::mount("16m");
    let storage = Storage::open_with(
        disk.path(),
        Some(NODE),
        &StorageOptions {
            min_free_bytes: 8 * 1024 * 1024,
            ..options()
        },
    )
    .unwrap();
    let mut acked = BTreeMap::new();
    acked.insert("before".to_owned(), b"kept".to_vec());
    assert_eq!(
        write(&storage, set("before", b"kept")).await.unwrap(),
        Written::Done
    );

    let filler = disk.fill("filler", 9 * 1024 * 1024);
    let refused = write(&storage, set("low", b"x")).await;
    assert!(
        matches!(refused, Err(StorageError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(storage.get(STORE, "low").unwrap(), None, "not applied");
    let health = storage.health();
    assert!(
        !health.writable
            && health
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("nearly full")),
        "{health:?}"
    );

    let free = || std::fs::remove_file(&filler).expect("free the filler");
    recovers_after_space_is_freed(&storage, free, &mut acked).await;
    let health = storage.health();
    assert_eq!(
        (health.reopens, health.outcome_unknown),
        (0, 0),
        "{health:?}"
    );
    assert_all_acknowledged_kept(disk.path(), storage, &acked);
}
