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
//! 2. the digests at every entry's place and origin: redeliveries must
//!    match (else clone-detected), and a record applied at another place is
//!    a duplicate;
//! 3. the KV rows the batch writes, `FOR UPDATE` in key order, created as
//!    placeholders (`hlc` NULL) first so that a key nobody has written yet
//!    is locked too: last-writer-wins and conflicts are decided on rows no
//!    other transaction can change before this one commits;
//! 4. idempotency keys, inserted `ON CONFLICT DO NOTHING` (a concurrent
//!    insert of the same key waits for the other transaction);
//! 5. last, the one counters row, `FOR UPDATE`, for the feed cursors,
//!    event and conflict ids. Holding it until commit makes ids commit in
//!    order: a transaction gets its ids only after the one before has
//!    committed and is visible, so a reader that sees id N has every id
//!    below N visible too and can never pass a gap that fills later. It
//!    is held only for the final inserts and the commit (one round trip
//!    of pipelined statements, then COMMIT).

use super::{Fail, i64_of, u64_of};
use crate::contract::{Checked, CloudStoreError, Current};
use deadpool_postgres::{Pool, Transaction};
use outpost_wire::validate::Invalid;
use outpost_wire::{Ack, Change, Conflict, Entry, Event, Record, Refusal, Version};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How many recent entries per epoch keep a digest (as the sled store).
const DIGEST_WINDOW: u64 = 65536;

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

/// What identifies an entry's content (as the sled store computes it, so a
/// database moved between backends would agree).
fn digest(entry: &Entry) -> [u8; 8] {
    let json = serde_json::to_vec(&entry.record).expect("serializes");
    Sha256::digest(&json)[..8].try_into().expect("8 bytes")
}

/// Refuses a batch whose entries are not consecutive, before any I/O.
pub(crate) fn check_order(batch: &Checked) -> Result<(), CloudStoreError> {
    for pair in batch.entries.windows(2) {
        let (before, after) = (pair[0].0.seq, pair[1].0.seq);
        if after <= before {
            return Err(CloudStoreError::OutOfOrder(after, before));
        }
        if after != before + 1 {
            return Err(CloudStoreError::SequenceGap {
                expected: before + 1,
                got: after,
            });
        }
    }
    Ok(())
}

/// Applies `batch`, retrying serialization failures and deadlocks.
pub(crate) async fn run(pool: &Pool, batch: &Checked) -> Result<Ack, Attempted> {
    let digests: Vec<[u8; 8]> = batch.entries.iter().map(|(e, _)| digest(e)).collect();
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
    let tx = client.transaction().await.map_err(|e| before(e.into()))?;
    let ack = plan_and_write(&tx, batch, digests).await.map_err(before)?;
    tx.commit()
        .await
        .map_err(|e| Attempted::InDoubt(e.into()))?;
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
    if !origin_epochs.is_empty() {
        let lock = tx
            .prepare_cached(
                "SELECT epoch FROM outpost_epochs WHERE epoch = ANY($1) ORDER BY epoch FOR UPDATE",
            )
            .await?;
        tx.query(&lock, &[&origin_epochs]).await?;
    }

    // 2. Digests at every place the batch touches.
    let mut place_epochs = Vec::new();
    let mut place_seqs = Vec::new();
    for (entry, _) in &batch.entries {
        place_epochs.push(epoch);
        place_seqs.push(i64_of(entry.seq));
        if entry.seq > mark
            && let Some(origin) = entry.origin
        {
            place_epochs.push(i64_of(origin.epoch));
            place_seqs.push(i64_of(origin.seq));
        }
    }
    let select_digests = tx
        .prepare_cached(
            "SELECT d.epoch, d.seq, d.digest FROM unnest($1::INT8[], $2::INT8[]) AS p(epoch, seq)
             JOIN outpost_digests AS d ON d.epoch = p.epoch AND d.seq = p.seq",
        )
        .await?;
    let kept: HashMap<Place, Vec<u8>> = tx
        .query(&select_digests, &[&place_epochs, &place_seqs])
        .await?
        .into_iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();

    let mut ack = Ack {
        applied: 0,
        duplicates: 0,
        through: batch.entries.last().map_or(0, |(e, _)| e.seq),
        refused: Vec::new(),
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
    if fresh.is_empty() {
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
        let names: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let placeholders = tx
            .prepare_cached(
                "INSERT INTO outpost_kv (store, key) SELECT * FROM unnest($1::TEXT[], $2::TEXT[])
                 ON CONFLICT (store, key) DO NOTHING",
            )
            .await?;
        let lock = tx
            .prepare_cached(
                "SELECT k.store, k.key, k.hlc, k.node, k.value
                 FROM unnest($1::TEXT[], $2::TEXT[]) AS w(store, key)
                 JOIN outpost_kv AS k ON k.store = w.store AND k.key = w.key
                 ORDER BY k.store, k.key FOR UPDATE OF k",
            )
            .await?;
        tx.execute(&placeholders, &[&stores, &names]).await?;
        for row in tx.query(&lock, &[&stores, &names]).await? {
            let hlc: Option<i64> = row.get(2);
            let version = hlc.map(|hlc| Version {
                hlc: u64_of(hlc),
                node: row.get::<_, Option<String>>(3).unwrap_or_default(),
            });
            current.insert((row.get(0), row.get(1)), version.map(|v| (v, row.get(4))));
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
        let names: Vec<&str> = claims.iter().map(|c| c.1).collect();
        let claim = tx
            .prepare_cached(
                "INSERT INTO outpost_idempotency (topic, key) SELECT * FROM unnest($1::TEXT[], $2::TEXT[])
                 ON CONFLICT (topic, key) DO NOTHING RETURNING topic, key",
            )
            .await?;
        for row in tx.query(&claim, &[&topics, &names]).await? {
            won.insert((row.get(0), row.get(1)));
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
    let new_mark = batch.entries.last().expect("not empty").0.seq;
    let mut own_epochs = Vec::new();
    let mut own_seqs = Vec::new();
    let mut own_digests: Vec<Vec<u8>> = Vec::new();
    let mut origin_place_epochs = Vec::new();
    let mut origin_place_seqs = Vec::new();
    let mut origin_digests: Vec<Vec<u8>> = Vec::new();
    for &i in &fresh {
        let (entry, verdict) = &batch.entries[i];
        let mut stored = digests[i].to_vec();
        if let Some(invalid) = verdict {
            stored.extend_from_slice(invalid.code().as_bytes());
        }
        own_epochs.push(epoch);
        own_seqs.push(i64_of(entry.seq));
        if let Some(origin) = entry.origin {
            origin_place_epochs.push(i64_of(origin.epoch));
            origin_place_seqs.push(i64_of(origin.seq));
            origin_digests.push(stored.clone());
        }
        own_digests.push(stored);
    }
    let (kv_stores, kv_keys, kv_hlcs, kv_nodes, kv_values) = {
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((store, key), (version, value)) in &plan.kv {
            columns.0.push(store.as_str());
            columns.1.push(key.as_str());
            columns.2.push(i64_of(version.hlc));
            columns.3.push(version.node.as_str());
            columns.4.push(value.as_deref());
        }
        columns
    };
    let update_kv = tx
        .prepare_cached(
            "UPDATE outpost_kv AS k SET hlc = w.hlc, node = w.node, value = w.value
             FROM unnest($1::TEXT[], $2::TEXT[], $3::INT8[], $4::TEXT[], $5::BYTEA[]) AS w(store, key, hlc, node, value)
             WHERE k.store = w.store AND k.key = w.key",
        )
        .await?;
    // A place of this epoch may hold a digest claimed by a renumbered copy
    // of its record: this stream's own record replaces it.
    let own = tx
        .prepare_cached(
            "INSERT INTO outpost_digests (epoch, seq, digest) SELECT * FROM unnest($1::INT8[], $2::INT8[], $3::BYTEA[])
             ON CONFLICT (epoch, seq) DO UPDATE SET digest = EXCLUDED.digest",
        )
        .await?;
    // The old place is claimed only if its own stream left it empty.
    let origins = tx
        .prepare_cached(
            "INSERT INTO outpost_digests (epoch, seq, digest) SELECT * FROM unnest($1::INT8[], $2::INT8[], $3::BYTEA[])
             ON CONFLICT (epoch, seq) DO NOTHING",
        )
        .await?;
    let prune = tx
        .prepare_cached("DELETE FROM outpost_digests WHERE epoch = $1 AND seq > $2 AND seq <= $3")
        .await?;
    let advance = tx
        .prepare_cached("UPDATE outpost_epochs SET applied = $2 WHERE epoch = $1")
        .await?;
    let prune_from = i64_of(
        mark.max(first.saturating_sub(1))
            .saturating_sub(DIGEST_WINDOW),
    );
    let prune_to = i64_of(new_mark.saturating_sub(DIGEST_WINDOW));
    let new_mark = i64_of(new_mark);
    let own_params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
        &[&own_epochs, &own_seqs, &own_digests];
    let advance_params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[&epoch, &new_mark];
    tokio::try_join!(
        async {
            if kv_stores.is_empty() {
                Ok(0)
            } else {
                tx.execute(
                    &update_kv,
                    &[&kv_stores, &kv_keys, &kv_hlcs, &kv_nodes, &kv_values],
                )
                .await
            }
        },
        tx.execute(&own, own_params),
        async {
            if origin_place_epochs.is_empty() {
                Ok(0)
            } else {
                tx.execute(
                    &origins,
                    &[&origin_place_epochs, &origin_place_seqs, &origin_digests],
                )
                .await
            }
        },
        async {
            if prune_to > prune_from {
                tx.execute(&prune, &[&epoch, &prune_from, &prune_to]).await
            } else {
                Ok(0)
            }
        },
        tx.execute(&advance, advance_params),
    )?;

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
            "INSERT INTO outpost_feed (cursor, store, key, value, hlc, node)
             SELECT * FROM unnest($1::INT8[], $2::TEXT[], $3::TEXT[], $4::BYTEA[], $5::INT8[], $6::TEXT[])",
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
    let cursors: Vec<i64> = (0..plan.feed.len())
        .map(|i| i64_of(feed_base + i as u64))
        .collect();
    let feed_stores: Vec<&str> = plan.feed.iter().map(|c| c.store.as_str()).collect();
    let feed_keys: Vec<&str> = plan.feed.iter().map(|c| c.key.as_str()).collect();
    let feed_values: Vec<Option<&[u8]>> = plan.feed.iter().map(|c| c.value.as_deref()).collect();
    let feed_hlcs: Vec<i64> = plan.feed.iter().map(|c| i64_of(c.version.hlc)).collect();
    let feed_nodes: Vec<&str> = plan.feed.iter().map(|c| c.version.node.as_str()).collect();
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
            if cursors.is_empty() {
                return Ok(0);
            }
            tx.execute(
                &insert_feed,
                &[
                    &cursors,
                    &feed_stores,
                    &feed_keys,
                    &feed_values,
                    &feed_hlcs,
                    &feed_nodes,
                ],
            )
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

fn refusal(seq: u64, invalid: Invalid) -> Refusal {
    Refusal {
        seq,
        code: invalid.code().to_owned(),
        reason: invalid.describe().to_owned(),
    }
}
