//! One edge batch into PostgreSQL, exactly once, in one transaction, with
//! any number of replicas doing the same at once (READ COMMITTED; the
//! locks below make it correct, not the isolation level).
//!
//! The transaction, in lock order (every transaction takes its locks in
//! this order, so replicas do not deadlock; a deadlock or serialization
//! failure anyway is retried with bounded backoff):
//! 1. the batch's epoch row, `FOR UPDATE` (created if new): batches of one
//!    epoch run one at a time, whichever replicas they reach, so the same
//!    batch at two replicas applies once and the second sees duplicates;
//!    the epochs named by the entries' origins, `FOR UPDATE`, so a
//!    renumbered record and its copy on the old epoch are never both new;
//! 2. the digests at the batch's places: one `outpost_batch_digests` row
//!    per earlier batch (8 bytes a record, and its refusals) covers a
//!    redelivered range; `outpost_digests` holds the rare per-place claims
//!    of renumbered records. A redelivery must match (else clone-detected),
//!    a record applied at another place is a duplicate;
//! 3. the KV rows that exist, `FOR UPDATE` in key order, so last-writer-wins
//!    and conflicts are decided on rows no other transaction can change
//!    before this one commits. Keys nobody has written are inserted at the
//!    end `ON CONFLICT DO NOTHING` (which waits for a concurrent insert of
//!    the same key); if one was taken meanwhile, the transaction runs
//!    again and then finds and locks that row;
//! 4. idempotency keys, inserted `ON CONFLICT DO NOTHING` (a concurrent
//!    insert of the same key waits for the other transaction);
//! 5. last, the one counters row, `FOR UPDATE`, for the feed cursors,
//!    event and conflict ids. Holding it until commit makes ids commit in
//!    order: a transaction gets its ids only after the one before has
//!    committed and is visible, so a reader that sees id N has every id
//!    below N visible too and can never pass a gap that fills later. It
//!    is held only for the final inserts and the commit (one round trip
//!    of pipelined statements, then COMMIT).
//!
//! The writes that need no ids (KV rows, digests, the watermark) go out
//! pipelined before step 5; when entries ask for their outcome
//! (`Entry::outcome`), one `SELECT` of their keys' current versions is
//! sent last in that pipeline, so it sees the batch's writes, and takes no
//! lock (a batch of redeliveries only, which writes nothing, sends just
//! that statement). A batch without such an entry sends nothing more. A
//! retried attempt decides and reads everything again.

use super::{Fail, i64_of, u64_of};
use crate::contract::{
    Awaited, Checked, CloudStoreError, Current, DIGEST_WINDOW, MAX_BATCH_ENTRIES, awaited,
    entry_digest, superseded,
};
use deadpool_postgres::{Pool, Transaction};
use outpost_wire::validate::Invalid;
use outpost_wire::{Ack, Change, Conflict, Event, Record, Refusal, Superseded, Version};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Most attempts of one batch after serialization failures or deadlocks.
const MAX_ATTEMPTS: u32 = 8;

/// How far an ingest got before it failed.
#[derive(Debug)]
pub(crate) enum Attempted {
    /// Nothing was committed.
    Before(Fail),
    /// The commit was sent and its answer lost: applied or not.
    InDoubt(Fail),
}

/// Refuses, before any I/O, a batch too big for a feed row or whose
/// entries are not consecutive.
pub(crate) fn check_order(batch: &Checked) -> Result<(), CloudStoreError> {
    // The API refuses bigger batches (413); the feed's reads rely on a row
    // holding at most this many changes.
    if batch.entries.len() > MAX_BATCH_ENTRIES {
        return Err(CloudStoreError::Internal(format!(
            "a batch of {} entries, over {MAX_BATCH_ENTRIES}",
            batch.entries.len()
        )));
    }
    batch.check_sequence()
}

/// Applies `batch`, retrying serialization failures and deadlocks.
pub(crate) async fn run(pool: &Pool, batch: &Checked) -> Result<Ack, Attempted> {
    let digests: Vec<[u8; 8]> = batch.entries.iter().map(|(e, _)| entry_digest(e)).collect();
    let mut backoff = Duration::from_millis(2);
    for attempt in 1.. {
        let mut client = pool.get().await.map_err(|e| Attempted::Before(e.into()))?;
        match once(&mut client, batch, &digests).await {
            Err(Attempted::Before(Fail::Retry(reason))) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(target: "outpost::cloud::pg", attempt, reason, "retrying a batch");
                tokio::time::sleep(backoff + Duration::from_millis(fastrand::u64(0..5))).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
    unreachable!("the loop returns")
}

/// A KV row: (store, key).
type Slot = (String, String);

/// What the batch writes, decided under the locks, before the ids.
#[derive(Default)]
struct Plan {
    /// Final state of each KV row written: (store, key) -> (version, value).
    kv: HashMap<Slot, Current>,
    /// Feed changes in entry order (cursors come from the counters).
    feed: Vec<Change>,
    /// Conflicts in entry order (ids come from the counters).
    conflicts: Vec<Conflict>,
    /// Events in entry order (ids come from the counters).
    events: Vec<Event>,
}

type Place = (i64, i64);

async fn once(
    client: &mut deadpool_postgres::Client,
    batch: &Checked,
    digests: &[[u8; 8]],
) -> Result<Ack, Attempted> {
    let before = Attempted::Before;
    let started = std::time::Instant::now();
    let tx = client.transaction().await.map_err(|e| before(e.into()))?;
    let ack = plan_and_write(&tx, batch, digests).await.map_err(before)?;
    let written = started.elapsed();
    tx.commit()
        .await
        .map_err(|e| Attempted::InDoubt(e.into()))?;
    tracing::debug!(target: "outpost::cloud::pg",
        entries = batch.entries.len(),
        write_us = written.as_micros() as u64,
        commit_us = (started.elapsed() - written).as_micros() as u64,
        "batch committed");
    Ok(ack)
}

async fn plan_and_write(
    tx: &Transaction<'_>,
    batch: &Checked,
    digests: &[[u8; 8]],
) -> Result<Ack, Fail> {
    let epoch = i64_of(batch.epoch);
    let select_epoch = tx
        .prepare_cached("SELECT node, applied FROM outpost_epochs WHERE epoch = $1 FOR UPDATE")
        .await?;
    if batch.entries.is_empty() {
        if let Some(row) = tx.query_opt(&select_epoch, &[&epoch]).await? {
            let owner: String = row.get(0);
            if owner != batch.node {
                return Err(Fail::Refused(CloudStoreError::EpochOwned {
                    epoch: batch.epoch,
                    owner,
                }));
            }
        }
        return Ok(Ack {
            applied: 0,
            duplicates: 0,
            through: 0,
            refused: Vec::new(),
            superseded: Vec::new(),
            answered: Vec::new(),
        });
    }

    // 1. The epoch row.
    let (owner, mark, known) = match tx.query_opt(&select_epoch, &[&epoch]).await? {
        Some(row) => (row.get::<_, String>(0), u64_of(row.get(1)), true),
        None => {
            let insert = tx
                .prepare_cached(
                    "INSERT INTO outpost_epochs (epoch, node, applied) VALUES ($1, $2, 0) ON CONFLICT (epoch) DO NOTHING",
                )
                .await?;
            let inserted = tx.execute(&insert, &[&epoch, &batch.node]).await?;
            let row = tx.query_one(&select_epoch, &[&epoch]).await?;
            (row.get::<_, String>(0), u64_of(row.get(1)), inserted == 0)
        }
    };
    if owner != batch.node {
        return Err(Fail::Refused(CloudStoreError::EpochOwned {
            epoch: batch.epoch,
            owner,
        }));
    }
    let first = batch.entries[0].0.seq;
    // An epoch this database knows must continue where it stopped; a new
    // one may start anywhere (its earlier records went to a database that
    // was replaced).
    if known && first > mark.saturating_add(1) {
        return Err(Fail::Refused(CloudStoreError::SequenceGap {
            expected: mark.saturating_add(1),
            got: first,
        }));
    }
    let fresh: Vec<usize> = (0..batch.entries.len())
        .filter(|&i| batch.entries[i].0.seq > mark)
        .collect();
    let mut origin_epochs: Vec<i64> = fresh
        .iter()
        .filter_map(|&i| batch.entries[i].0.origin.map(|o| i64_of(o.epoch)))
        .filter(|&e| e != epoch)
        .collect();
    origin_epochs.sort_unstable();
    origin_epochs.dedup();
    // An origin epoch that no batch has committed yet has no row to lock,
    // while its first batch may be mid-transaction on another replica: a
    // placeholder row (node '', never a node id) makes this transaction
    // wait for that one, or that one for this; it is removed before commit,
    // so it binds the epoch to no one.
    let mut held: Vec<i64> = Vec::new();
    if !origin_epochs.is_empty() {
        let hold = tx
            .prepare_cached(
                "INSERT INTO outpost_epochs (epoch, node, applied) SELECT e, '', 0 FROM unnest($1::INT8[]) AS e
                 ON CONFLICT (epoch) DO NOTHING RETURNING epoch",
            )
            .await?;
        let lock = tx
            .prepare_cached(
                "SELECT epoch FROM outpost_epochs WHERE epoch = ANY($1) ORDER BY epoch FOR UPDATE",
            )
            .await?;
        held = tx
            .query(&hold, &[&origin_epochs])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.query(&lock, &[&origin_epochs]).await?;
    }

    // 2. Digests at every place the batch touches: the batch's own
    // redelivered range (one row per earlier batch), claims at its fresh
    // places, and its entries' origins.
    let mut kept: HashMap<Place, Vec<u8>> = HashMap::new();
    let last = batch.entries.last().expect("not empty").0.seq;
    let claims_in_range = tx
        .prepare_cached(
            "SELECT seq, digest FROM outpost_digests WHERE epoch = $1 AND seq >= $2 AND seq <= $3",
        )
        .await?;
    let batches_in_range = tx
        .prepare_cached(
            "SELECT first_seq, digests, refused_seqs, refused_codes FROM outpost_batch_digests
             WHERE epoch = $1 AND last_seq >= $2 AND first_seq <= $3",
        )
        .await?;
    let fresh_from = mark.saturating_add(1).max(first);
    if fresh_from <= last {
        for row in tx
            .query(
                &claims_in_range,
                &[&epoch, &i64_of(fresh_from), &i64_of(last)],
            )
            .await?
        {
            kept.insert((epoch, row.get(0)), row.get(1));
        }
    }
    if first <= mark {
        let rows = tx
            .query(
                &batches_in_range,
                &[&epoch, &i64_of(first), &i64_of(mark.min(last))],
            )
            .await?;
        for row in &rows {
            spread_batch_row(&mut kept, epoch, row);
        }
    }
    let origins: Vec<Place> = fresh
        .iter()
        .filter_map(|&i| batch.entries[i].0.origin)
        .map(|o| (i64_of(o.epoch), i64_of(o.seq)))
        .collect();
    if !origins.is_empty() {
        let (origin_epochs, origin_seqs): (Vec<i64>, Vec<i64>) = origins.iter().copied().unzip();
        let claims_at = tx
            .prepare_cached(
                "SELECT d.epoch, d.seq, d.digest FROM unnest($1::INT8[], $2::INT8[]) AS p(epoch, seq)
                 JOIN outpost_digests AS d ON d.epoch = p.epoch AND d.seq = p.seq",
            )
            .await?;
        for row in tx
            .query(&claims_at, &[&origin_epochs, &origin_seqs])
            .await?
        {
            kept.insert((row.get(0), row.get(1)), row.get(2));
        }
        // A place its own stream wrote is that stream's, over any claim.
        let batches_at = tx
            .prepare_cached(
                "SELECT DISTINCT b.epoch, b.first_seq, b.digests, b.refused_seqs, b.refused_codes
                 FROM unnest($1::INT8[], $2::INT8[]) AS p(epoch, seq)
                 JOIN outpost_batch_digests AS b
                   ON b.epoch = p.epoch AND b.first_seq <= p.seq AND b.last_seq >= p.seq",
            )
            .await?;
        for row in tx
            .query(&batches_at, &[&origin_epochs, &origin_seqs])
            .await?
        {
            let row_epoch: i64 = row.get(0);
            spread_batch_columns(
                &mut kept,
                row_epoch,
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
            );
        }
    }

    let mut ack = Ack {
        applied: 0,
        duplicates: 0,
        through: batch.entries.last().map_or(0, |(e, _)| e.seq),
        refused: Vec::new(),
        superseded: Vec::new(),
        answered: Vec::new(),
    };
    // Redeliveries must carry what was applied; a refusal is said again,
    // in case the first answer was lost.
    for (index, (entry, _)) in batch.entries.iter().enumerate() {
        if entry.seq > mark {
            break;
        }
        ack.duplicates += 1;
        if let Some(stored) = kept.get(&(epoch, i64_of(entry.seq))) {
            let (stored_digest, code) = stored.split_at(8.min(stored.len()));
            if stored_digest != digests[index] {
                return Err(Fail::Refused(CloudStoreError::CloneDetected(entry.seq)));
            }
            if let Some(invalid) = std::str::from_utf8(code).ok().and_then(Invalid::from_code) {
                ack.refused.push(refusal(entry.seq, invalid));
            }
        }
    }
    // Refused records are not answered: a redelivered one by what was kept
    // (the refusals so far, in seq order), a fresh one by its verdict.
    let awaited = awaited(
        batch
            .entries
            .iter()
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(e, _)| e),
        |seq| seq <= mark && ack.refused.binary_search_by_key(&seq, |r| r.seq).is_ok(),
    );
    let outcome_stores: Vec<&str> = awaited.iter().map(|w| w.store).collect();
    let outcome_keys: Vec<&[u8]> = awaited.iter().map(|w| w.key.as_bytes()).collect();
    let outcome_params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
        &[&outcome_stores, &outcome_keys];
    if fresh.is_empty() {
        if !awaited.is_empty() {
            let read = tx.prepare_cached(CURRENT_VERSIONS).await?;
            let rows = tx.query(&read, outcome_params).await?;
            ack.superseded = superseded_by(&awaited, &rows)?;
            ack.answered = awaited.iter().map(|w| w.seq).collect();
        }
        return Ok(ack);
    }

    // Which fresh entries apply: valid, and not applied at another place.
    let applies: Vec<bool> = fresh
        .iter()
        .map(|&i| {
            let (entry, verdict) = &batch.entries[i];
            let places = std::iter::once((epoch, i64_of(entry.seq)))
                .chain(entry.origin.map(|o| (i64_of(o.epoch), i64_of(o.seq))));
            let seen_before = places
                .filter_map(|p| kept.get(&p))
                .any(|d| d.as_slice() == digests[i]);
            match verdict {
                Some(invalid) => {
                    ack.refused.push(refusal(entry.seq, *invalid));
                    false
                }
                None if seen_before => {
                    ack.duplicates += 1;
                    false
                }
                None => {
                    ack.applied += 1;
                    true
                }
            }
        })
        .collect();

    // 3. The KV rows, locked in key order.
    let mut keys: Vec<(&str, &str)> = fresh
        .iter()
        .zip(&applies)
        .filter(|&(_, &applies)| applies)
        .filter_map(|(&i, _)| match &batch.entries[i].0.record {
            Record::Kv { store, key, .. } => Some((store.as_str(), key.as_str())),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut current: HashMap<Slot, Option<Current>> = HashMap::with_capacity(keys.len());
    if !keys.is_empty() {
        let stores: Vec<&str> = keys.iter().map(|k| k.0).collect();
        // Keys are bytes in the database: a key may hold any character,
        // NUL included, which PostgreSQL's TEXT refuses.
        let names: Vec<&[u8]> = keys.iter().map(|k| k.1.as_bytes()).collect();
        // Rows that exist are locked here; a key nobody has written yet is
        // inserted at the end, and if another transaction inserted it
        // meanwhile the insert says so and this one runs again (and then
        // finds and locks the row).
        let lock = tx
            .prepare_cached(
                "SELECT k.store, k.key, k.hlc, k.node, k.value
                 FROM unnest($1::TEXT[], $2::BYTEA[]) AS w(store, key)
                 JOIN outpost_kv AS k ON k.store = w.store AND k.key = w.key
                 ORDER BY k.store, k.key FOR UPDATE OF k",
            )
            .await?;
        for row in tx.query(&lock, &[&stores, &names]).await? {
            let version = Version {
                hlc: u64_of(row.get(2)),
                node: row.get(3),
            };
            let key = String::from_utf8(row.get::<_, Vec<u8>>(1))
                .map_err(|e| Fail::Other(format!("a stored key is not UTF-8: {e}")))?;
            current.insert((row.get(0), key), Some((version, row.get(4))));
        }
    }

    // 4. Idempotency keys: the first of each in the batch claims it.
    let mut claims: Vec<(&str, &str)> = Vec::new();
    let mut claimed_here = HashSet::new();
    for (&i, _) in fresh.iter().zip(&applies).filter(|&(_, &a)| a) {
        if let Record::Event {
            topic,
            idempotency_key: Some(key),
            ..
        } = &batch.entries[i].0.record
            && claimed_here.insert((topic.as_str(), key.as_str()))
        {
            claims.push((topic.as_str(), key.as_str()));
        }
    }
    let mut won: HashSet<(String, String)> = HashSet::new();
    if !claims.is_empty() {
        let topics: Vec<&str> = claims.iter().map(|c| c.0).collect();
        let names: Vec<&[u8]> = claims.iter().map(|c| c.1.as_bytes()).collect();
        let claim = tx
            .prepare_cached(
                "INSERT INTO outpost_idempotency (topic, key) SELECT * FROM unnest($1::TEXT[], $2::BYTEA[])
                 ON CONFLICT (topic, key) DO NOTHING RETURNING topic, key",
            )
            .await?;
        for row in tx.query(&claim, &[&topics, &names]).await? {
            let key = String::from_utf8_lossy(row.get::<_, &[u8]>(1)).into_owned();
            won.insert((row.get(0), key));
        }
    }

    // Decide, in entry order, exactly as the sled store does.
    let mut plan = Plan::default();
    for (&i, _) in fresh.iter().zip(&applies).filter(|&(_, &a)| a) {
        let entry = &batch.entries[i].0;
        match &entry.record {
            Record::Kv {
                store,
                key,
                value,
                version,
                seen,
            } => {
                let slot = (store.clone(), key.clone());
                let now = plan
                    .kv
                    .get(&slot)
                    .cloned()
                    .or_else(|| current.get(&slot).cloned().flatten());
                let incoming_wins = now.as_ref().is_none_or(|(v, _)| version > v);
                if let Some((current_version, current_value)) = &now
                    && version != current_version
                    && seen.as_ref() != Some(current_version)
                {
                    let (winner, winner_value, loser, loser_value) = if incoming_wins {
                        (version, value, current_version, current_value)
                    } else {
                        (current_version, current_value, version, value)
                    };
                    plan.conflicts.push(Conflict {
                        id: 0,
                        store: store.clone(),
                        key: key.clone(),
                        winner: winner.clone(),
                        winner_value: winner_value.clone(),
                        loser: loser.clone(),
                        loser_value: loser_value.clone(),
                    });
                }
                if incoming_wins {
                    plan.kv.insert(slot, (version.clone(), value.clone()));
                    plan.feed.push(Change {
                        cursor: 0,
                        store: store.clone(),
                        key: key.clone(),
                        value: value.clone(),
                        version: version.clone(),
                    });
                }
            }
            Record::Event {
                topic,
                payload,
                idempotency_key,
                hlc,
            } => {
                if let Some(key) = idempotency_key {
                    // Only the first claim in the batch, and only if no
                    // earlier batch (on any node) made it.
                    if !won.remove(&(topic.clone(), key.clone())) {
                        continue;
                    }
                }
                plan.events.push(Event {
                    id: 0,
                    topic: topic.clone(),
                    node: batch.node.clone(),
                    seq: entry.seq,
                    payload: payload.clone(),
                    idempotency_key: idempotency_key.clone(),
                    hlc: *hlc,
                });
            }
            Record::Skipped { .. } => {}
        }
    }

    // Writes that need no ids, pipelined.
    let new_mark = last;
    // The batch's own places: one row, a digest per fresh entry, and its
    // refusals.
    let mut row_digests = Vec::with_capacity(fresh.len() * 8);
    let mut refused_seqs: Vec<i64> = Vec::new();
    let mut refused_codes: Vec<&str> = Vec::new();
    let mut claim_epochs = Vec::new();
    let mut claim_seqs = Vec::new();
    let mut claim_digests: Vec<Vec<u8>> = Vec::new();
    for &i in &fresh {
        let (entry, verdict) = &batch.entries[i];
        row_digests.extend_from_slice(&digests[i]);
        let mut stored = digests[i].to_vec();
        if let Some(invalid) = verdict {
            refused_seqs.push(i64_of(entry.seq));
            refused_codes.push(invalid.code());
            stored.extend_from_slice(invalid.code().as_bytes());
        }
        // The old place is claimed only if nothing is there: its own
        // stream's record, or another claim.
        if let Some(origin) = entry.origin {
            let place = (i64_of(origin.epoch), i64_of(origin.seq));
            if !kept.contains_key(&place) {
                claim_epochs.push(place.0);
                claim_seqs.push(place.1);
                claim_digests.push(stored);
            }
        }
    }
    let (mut updates, mut inserts) = (KvColumns::default(), KvColumns::default());
    // In key order, like the locks: two batches creating the same keys
    // then wait for each other instead of deadlocking.
    let mut written: Vec<_> = plan.kv.iter().collect();
    written.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (slot, (version, value)) in written {
        let target = if current.get(slot).is_some_and(Option::is_some) {
            &mut updates
        } else {
            &mut inserts
        };
        target.push(slot, version, value.as_deref());
    }
    let update_kv = tx
        .prepare_cached(
            "UPDATE outpost_kv AS k SET hlc = w.hlc, node = w.node, value = w.value
             FROM unnest($1::TEXT[], $2::BYTEA[], $3::INT8[], $4::TEXT[], $5::BYTEA[]) AS w(store, key, hlc, node, value)
             WHERE k.store = w.store AND k.key = w.key",
        )
        .await?;
    // No ON CONFLICT: its speculative insertion made this statement half
    // again as slow, for a race that rolls the transaction back anyway.
    let insert_kv = tx
        .prepare_cached(
            "INSERT INTO outpost_kv (store, key, hlc, node, value)
             SELECT * FROM unnest($1::TEXT[], $2::BYTEA[], $3::INT8[], $4::TEXT[], $5::BYTEA[])",
        )
        .await?;
    let own = tx
        .prepare_cached(
            "INSERT INTO outpost_batch_digests (epoch, first_seq, last_seq, digests, refused_seqs, refused_codes)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    let claims = tx
        .prepare_cached(
            "INSERT INTO outpost_digests (epoch, seq, digest) SELECT * FROM unnest($1::INT8[], $2::INT8[], $3::BYTEA[])
             ON CONFLICT (epoch, seq) DO NOTHING",
        )
        .await?;
    let prune = tx
        .prepare_cached(
            "DELETE FROM outpost_batch_digests WHERE epoch = $1 AND last_seq > $2 AND last_seq <= $3",
        )
        .await?;
    let advance = tx
        .prepare_cached("UPDATE outpost_epochs SET applied = $2 WHERE epoch = $1")
        .await?;
    let release = tx
        .prepare_cached("DELETE FROM outpost_epochs WHERE epoch = ANY($1) AND node = ''")
        .await?;
    let read_outcome = if awaited.is_empty() {
        None
    } else {
        Some(tx.prepare_cached(CURRENT_VERSIONS).await?)
    };
    // Rows ending in the window that just slid past: each prune deletes
    // the few rows of batches that left it.
    let prune_from = i64_of(mark.saturating_sub(DIGEST_WINDOW));
    let prune_to = i64_of(new_mark.saturating_sub(DIGEST_WINDOW));
    let (fresh_first, new_mark) = (i64_of(batch.entries[fresh[0]].0.seq), i64_of(new_mark));
    let own_params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[
        &epoch,
        &fresh_first,
        &new_mark,
        &row_digests,
        &refused_seqs,
        &refused_codes,
    ];
    let advance_params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[&epoch, &new_mark];
    // join, not try_join: after the first failing statement of a pipeline
    // the rest fail with 25P02, and only that first error says what
    // happened. They are looked at in the order they were sent.
    let sent = tokio::join!(
        async {
            if updates.is_empty() {
                return Ok(0);
            }
            tx.execute(&update_kv, &updates.params()).await
        },
        async {
            if inserts.is_empty() {
                return Ok(0);
            }
            tx.execute(&insert_kv, &inserts.params()).await
        },
        tx.execute(&own, own_params),
        async {
            if claim_epochs.is_empty() {
                return Ok(0);
            }
            tx.execute(&claims, &[&claim_epochs, &claim_seqs, &claim_digests])
                .await
        },
        async {
            if prune_to <= prune_from {
                return Ok(0);
            }
            tx.execute(&prune, &[&epoch, &prune_from, &prune_to]).await
        },
        tx.execute(&advance, advance_params),
        async {
            if held.is_empty() {
                return Ok(0);
            }
            tx.execute(&release, &[&held]).await
        },
        // Sent after the KV writes, so it reads what they wrote. No lock:
        // the rows this batch wrote are locked already, and of the others
        // (redeliveries) the last committed version is the answer.
        async {
            match &read_outcome {
                None => Ok(Vec::new()),
                Some(read) => tx.query(read, outcome_params).await,
            }
        },
    );
    let (outcome_rows, outcome_failure) = match sent.7 {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let first_failure = [sent.0, sent.1, sent.2, sent.3, sent.4, sent.5, sent.6]
        .into_iter()
        .find_map(Result::err)
        .or(outcome_failure);
    if let Some(e) = first_failure {
        if created_meanwhile(&e) {
            // Another batch created one of these keys after this one
            // looked: decide again, on the row it made.
            return Err(Fail::Retry(
                "a key was created by a concurrent batch".to_owned(),
            ));
        }
        return Err(e.into());
    }
    ack.superseded = superseded_by(&awaited, &outcome_rows)?;
    ack.answered = awaited.iter().map(|w| w.seq).collect();

    if plan.feed.is_empty() && plan.conflicts.is_empty() && plan.events.is_empty() {
        return Ok(ack);
    }
    // 5. Ids, last: see the module docs for why this makes the feed gap-free.
    let take_ids = tx
        .prepare_cached(
            "UPDATE outpost_counters
             SET next_feed = next_feed + $1, next_event = next_event + $2, next_conflict = next_conflict + $3
             WHERE id = 1 RETURNING next_feed - $1, next_event - $2, next_conflict - $3",
        )
        .await?;
    let count = |n: usize| i64::try_from(n).expect("small");
    let ids = tx
        .query_one(
            &take_ids,
            &[
                &count(plan.feed.len()),
                &count(plan.events.len()),
                &count(plan.conflicts.len()),
            ],
        )
        .await?;
    let (feed_base, event_base, conflict_base) =
        (u64_of(ids.get(0)), u64_of(ids.get(1)), u64_of(ids.get(2)));
    let insert_feed = tx
        .prepare_cached(
            "INSERT INTO outpost_feed (last_cursor, first_cursor, changes) VALUES ($1, $2, $3)",
        )
        .await?;
    let insert_conflicts = tx
        .prepare_cached(
            "INSERT INTO outpost_conflicts (id, body) SELECT * FROM unnest($1::INT8[], $2::BYTEA[])",
        )
        .await?;
    let insert_events = tx
        .prepare_cached(
            "INSERT INTO outpost_events (topic, id, body) SELECT * FROM unnest($1::TEXT[], $2::INT8[], $3::BYTEA[])",
        )
        .await?;
    for (i, change) in plan.feed.iter_mut().enumerate() {
        change.cursor = feed_base + i as u64;
    }
    let feed_row = super::feed_rows::encode(&plan.feed);
    let (first_cursor, last_cursor) = (
        i64_of(feed_base),
        i64_of(feed_base + plan.feed.len() as u64).wrapping_sub(1),
    );
    let (conflict_ids, conflict_bodies): (Vec<i64>, Vec<Vec<u8>>) = plan
        .conflicts
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            c.id = conflict_base + i as u64;
            (i64_of(c.id), serde_json::to_vec(c).expect("serializes"))
        })
        .unzip();
    let mut event_topics = Vec::with_capacity(plan.events.len());
    let (event_ids, event_bodies): (Vec<i64>, Vec<Vec<u8>>) = plan
        .events
        .iter_mut()
        .enumerate()
        .map(|(i, e)| {
            e.id = event_base + i as u64;
            event_topics.push(e.topic.as_str());
            (i64_of(e.id), serde_json::to_vec(&*e).expect("serializes"))
        })
        .unzip();
    tokio::try_join!(
        async {
            if plan.feed.is_empty() {
                return Ok(0);
            }
            tx.execute(&insert_feed, &[&last_cursor, &first_cursor, &feed_row])
                .await?;
            // Delivered at commit, to every replica's LISTEN connection.
            tx.execute("SELECT pg_notify('outpost_feed', '')", &[])
                .await
        },
        async {
            if conflict_ids.is_empty() {
                return Ok(0);
            }
            tx.execute(&insert_conflicts, &[&conflict_ids, &conflict_bodies])
                .await
        },
        async {
            if event_ids.is_empty() {
                return Ok(0);
            }
            tx.execute(&insert_events, &[&event_topics, &event_ids, &event_bodies])
                .await
        },
    )?;
    Ok(ack)
}

/// The current version of each (store, key) of the batch's awaited writes
/// ([`awaited`]); one statement for all of them, run after the writes.
const CURRENT_VERSIONS: &str = "SELECT store, key, hlc, node FROM outpost_kv
     WHERE (store, key) IN (SELECT * FROM unnest($1::TEXT[], $2::BYTEA[]))";

/// The ack's superseded lines, from the rows [`CURRENT_VERSIONS`] read.
fn superseded_by(
    awaited: &[Awaited<'_>],
    rows: &[tokio_postgres::Row],
) -> Result<Vec<Superseded>, Fail> {
    let current: HashMap<(&str, &[u8]), Version> = rows
        .iter()
        .map(|row| {
            let version = Version {
                hlc: u64_of(row.get(2)),
                node: row.get(3),
            };
            ((row.get(0), row.get(1)), version)
        })
        .collect();
    superseded(awaited, |write| {
        Ok(current.get(&(write.store, write.key.as_bytes())).cloned())
    })
}

/// Whether `e` is the KV insert finding a row that was not there when this
/// transaction looked: a key that a concurrent batch created.
fn created_meanwhile(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("outpost_kv_pkey")
    })
}

/// KV rows as the columns one `unnest` statement takes.
#[derive(Default)]
struct KvColumns<'a> {
    stores: Vec<&'a str>,
    keys: Vec<&'a [u8]>,
    hlcs: Vec<i64>,
    nodes: Vec<&'a str>,
    values: Vec<Option<&'a [u8]>>,
}

impl<'a> KvColumns<'a> {
    fn push(&mut self, slot: &'a Slot, version: &'a Version, value: Option<&'a [u8]>) {
        self.stores.push(&slot.0);
        self.keys.push(slot.1.as_bytes());
        self.hlcs.push(i64_of(version.hlc));
        self.nodes.push(&version.node);
        self.values.push(value);
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
        [
            &self.stores,
            &self.keys,
            &self.hlcs,
            &self.nodes,
            &self.values,
        ]
    }
}

/// Adds the places one `outpost_batch_digests` row covers to `kept`.
fn spread_batch_row(kept: &mut HashMap<Place, Vec<u8>>, epoch: i64, row: &tokio_postgres::Row) {
    spread_batch_columns(kept, epoch, row.get(0), row.get(1), row.get(2), row.get(3));
}

/// Adds each place of a batch's digest row (`first_seq`, 8 bytes a place,
/// refusal codes by seq) to `kept`, over any claim there.
fn spread_batch_columns(
    kept: &mut HashMap<Place, Vec<u8>>,
    epoch: i64,
    first_seq: i64,
    digests: &[u8],
    refused_seqs: Vec<i64>,
    refused_codes: Vec<String>,
) {
    let codes: HashMap<i64, String> = refused_seqs.into_iter().zip(refused_codes).collect();
    for (offset, digest) in digests.chunks_exact(8).enumerate() {
        let seq = first_seq + offset as i64;
        let mut stored = digest.to_vec();
        if let Some(code) = codes.get(&seq) {
            stored.extend_from_slice(code.as_bytes());
        }
        kept.insert((epoch, seq), stored);
    }
}

fn refusal(seq: u64, invalid: Invalid) -> Refusal {
    Refusal {
        seq,
        code: invalid.code().to_owned(),
        reason: invalid.describe().to_owned(),
    }
}
