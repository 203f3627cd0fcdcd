//! Drains the outbox to the cloud in sequence order. Records leave the
//! outbox only after the cloud acknowledges them (durably); a failed or
//! unanswered upload is retried with backoff, and any redelivery is
//! harmless because the cloud deduplicates on (node id, sequence).

use super::Link;
use super::backoff::Backoff;
use super::client::CloudError;
use super::status::Blocked;
use crate::metrics::ResultLabels;
use bytes::Bytes;
use http::StatusCode;
use outpost_store::{Storage, StorageError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bound on a batch's record bytes (one larger record still goes alone).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// `{"node":...,"epoch":E,"entries":[{"seq":N,"record":<stored JSON>},...]}`,
/// built from the stored records without decoding them; a record that
/// `--new-epoch` renumbered carries its `origin`, and one a writer waits
/// on (a forward store) asks for its `outcome`.
fn encode_batch(
    node: &str,
    epoch: u64,
    records: &[(u64, outpost_store::IVec)],
    origin: impl Fn(u64) -> Option<outpost_wire::Origin>,
    awaited: &[u64],
) -> Bytes {
    let node = serde_json::to_string(node).expect("strings serialize");
    let size: usize = records.iter().map(|(_, r)| r.len() + 32).sum();
    let mut out = Vec::with_capacity(size + node.len() + 64);
    out.extend_from_slice(b"{\"node\":");
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(format!(",\"epoch\":{epoch},\"entries\":[").as_bytes());
    for (i, (seq, record)) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"seq\":{seq},").as_bytes());
        if awaited.binary_search(seq).is_ok() {
            out.extend_from_slice(b"\"outcome\":true,");
        }
        if let Some(o) = origin(*seq) {
            out.extend_from_slice(
                format!("\"origin\":{{\"epoch\":{},\"seq\":{}}},", o.epoch, o.seq).as_bytes(),
            );
        }
        out.extend_from_slice(b"\"record\":");
        out.extend_from_slice(record);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// How often a blocked stream asks the cloud again: the operator's fix
/// (a new credential, a restored cloud) is picked up without a restart.
const BLOCKED_RETRY: Duration = Duration::from_secs(30);

/// What the shipper does with a failed upload.
enum Verdict {
    /// The cloud refused the stream itself: keep every record, stop, say so.
    Block(Blocked),
    /// The cloud's typed refusal of the batch's bytes: narrow it down to the
    /// record at fault and set that one aside.
    Narrow(String),
    /// Anything else (the link, a proxy, a 5xx, an untyped 4xx): retry.
    Retry,
}

fn verdict(error: &CloudError) -> Verdict {
    use outpost_wire::refusal;
    match error {
        CloudError::Unauthorized => Verdict::Block(Blocked {
            code: "unauthorized".into(),
            message: "the cloud does not accept this node's token (unknown or revoked): enrol the node (`outpost cloud enrol NODE-ID`) and restart it with the new --cloud-token".into(),
        }),
        CloudError::Status {
            status,
            code: Some(code),
            body,
        } => match code.as_str() {
            refusal::EPOCH_OWNED | refusal::CLONE_DETECTED => Verdict::Block(Blocked {
                code: code.clone(),
                message: format!("{body} — this data dir was copied from another node; restart this node with --new-epoch"),
            }),
            refusal::SEQUENCE_GAP => Verdict::Block(Blocked {
                code: code.clone(),
                message: format!("{body} — records are missing before the cloud's next expected one; restart this node with --new-epoch to renumber its outbox"),
            }),
            refusal::WRONG_NODE | refusal::FORBIDDEN => Verdict::Block(Blocked {
                code: code.clone(),
                message: format!("{body} — the --cloud-token does not belong to this node id"),
            }),
            refusal::TOO_LARGE | refusal::MALFORMED
                if *status == StatusCode::PAYLOAD_TOO_LARGE || *status == StatusCode::BAD_REQUEST =>
            {
                Verdict::Narrow(format!("cloud answered {status} {code}: {body}"))
            }
            _ => Verdict::Retry,
        },
        _ => Verdict::Retry,
    }
}

pub async fn run(storage: Arc<Storage>, link: Link, batch_max: usize) {
    let count = |result: &'static str| {
        link.metrics
            .ship_batches
            .get_or_create(&ResultLabels { result })
            .inc();
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut down_since: Option<Instant> = None;
    // After the cloud refused a batch's bytes (typed too-large/malformed),
    // the records of that batch go one at a time, so the culprit is found.
    let mut singles = 0usize;
    // Acknowledged records are dropped on a blocking thread while the next
    // batch goes out (a batch's drop took a fifth of a drain's time); the
    // next batch is read from past them.
    let mut from = 0u64;
    let mut dropping: Option<tokio::task::JoinHandle<Result<usize, StorageError>>> = None;
    loop {
        let max = if singles > 0 { 1 } else { batch_max };
        let started = Instant::now();
        let batch = match storage.outbox_batch_from(from, max, MAX_BATCH_BYTES) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(target: "outpost::replication::shipper", error = %e, "cannot read the outbox");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let Some(&(last, _)) = batch.last() else {
            if !dropped(dropping.take()).await {
                from = 0;
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            // Idle: wake on the next write, or look again now and then.
            tokio::select! {
                () = storage.outbox_grew().notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        let origins = match storage.origins(batch[0].0, last) {
            Ok(origins) => origins,
            Err(e) => {
                // Without them a renumbered record could apply twice: wait.
                tracing::error!(target: "outpost::replication::shipper", error = %e, "cannot read the records' origins");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let origin = |seq| origins.get(&seq).copied();
        let awaited = storage.awaiting().awaited(batch[0].0, last);
        let body = encode_batch(storage.node_id(), storage.epoch(), &batch, origin, &awaited);
        link.metrics.ship_bytes.inc_by(body.len() as u64);
        let (read, bytes) = (started.elapsed(), body.len());
        match link.client.ingest(body).await {
            Ok(ack) => {
                let answered = started.elapsed();
                count("acked");
                singles = singles.saturating_sub(1);
                let mut through = ack.through.min(last);
                for refused in &ack.refused {
                    if !batch.iter().any(|(seq, _)| *seq == refused.seq) {
                        continue;
                    }
                    // The cloud's verdict on this record, and it has
                    // consumed the sequence number: set it aside (on disk,
                    // listed and re-sendable from the admin API).
                    let reason = format!("{}: {}", refused.code, refused.reason);
                    tracing::error!(target: "outpost::replication::shipper", seq = refused.seq, code = %refused.code, reason = %refused.reason, "the cloud refused this outbox record; quarantined");
                    link.metrics
                        .ship_refused
                        .get_or_create(&ResultLabels {
                            result: known_code(&refused.code),
                        })
                        .inc();
                    if let Err(e) = storage.quarantine(refused.seq, &reason).await {
                        // Never drop it instead: keep it (and what follows)
                        // in the outbox; the redelivery is refused again.
                        tracing::error!(target: "outpost::replication::shipper", seq = refused.seq, error = %e, "cannot quarantine the record; keeping it in the outbox");
                        through = through.min(refused.seq.saturating_sub(1));
                    }
                }
                if let Some(blocked) = link.status.snapshot().blocked {
                    tracing::info!(target: "outpost::replication::shipper", code = %blocked.code, "the cloud accepts this node's stream again; shipping resumed");
                }
                link.status.acked(through);
                storage.mark_answered(&batch, through);
                if !storage.awaiting().is_empty() {
                    answer_waiters(&storage, &ack, through);
                }
                if !dropped(dropping.take()).await {
                    // Its records are still there: read them again, and
                    // the cloud counts them as duplicates.
                    from = 0;
                } else {
                    from = through.saturating_add(1);
                }
                let dropper = storage.clone();
                dropping = Some(tokio::task::spawn_blocking(move || {
                    dropper.outbox_ack(through)
                }));
                if let Some(since) = down_since.take() {
                    tracing::info!(target: "outpost::replication::shipper",
                        down_ms = since.elapsed().as_millis() as u64,
                        pending = storage.outbox_len(),
                        "cloud reachable again; draining the outbox"
                    );
                }
                tracing::debug!(target: "outpost::replication::shipper",
                    records = batch.len(),
                    applied = ack.applied,
                    duplicates = ack.duplicates,
                    refused = ack.refused.len(),
                    through,
                    bytes,
                    read_us = read.as_micros() as u64,
                    upload_us = (answered - read).as_micros() as u64,
                    ack_us = (started.elapsed() - answered).as_micros() as u64,
                    "batch acknowledged"
                );
                backoff.reset();
            }
            Err(e) => match verdict(&e) {
                Verdict::Block(blocked) => {
                    count("blocked");
                    if link.status.snapshot().blocked.as_ref() != Some(&blocked) {
                        tracing::error!(target: "outpost::replication::shipper",
                            code = %blocked.code,
                            pending = storage.outbox_len(),
                            "the cloud refuses this node's stream; shipping stopped, records kept: {}",
                            blocked.message
                        );
                    }
                    link.status.block(blocked);
                    storage.awaiting().all_queued();
                    tokio::time::sleep(BLOCKED_RETRY).await;
                }
                Verdict::Narrow(reason) if batch.len() > 1 => {
                    count("refused");
                    tracing::warn!(target: "outpost::replication::shipper", records = batch.len(), reason = %reason, "the cloud refused a batch; sending its records one at a time");
                    singles = batch.len();
                }
                Verdict::Narrow(reason) if is_placeholder(&batch[0].1) => {
                    // Even the placeholder is refused: this is not about
                    // the record, so setting it aside again would loop.
                    count("blocked");
                    let blocked = Blocked {
                        code: "placeholder-refused".into(),
                        message: format!(
                            "the cloud refuses even a placeholder record ({reason}); records kept"
                        ),
                    };
                    tracing::error!(target: "outpost::replication::shipper", seq = last, "the cloud refuses this node's stream; shipping stopped, records kept: {}", blocked.message);
                    link.status.block(blocked);
                    storage.awaiting().all_queued();
                    tokio::time::sleep(BLOCKED_RETRY).await;
                }
                Verdict::Narrow(reason) => {
                    count("refused");
                    singles = 0;
                    tracing::error!(target: "outpost::replication::shipper", seq = last, reason = %reason, "the cloud refuses this outbox record; quarantined, and a placeholder keeps its sequence number");
                    if let Err(e) = storage.quarantine_and_skip(last, &reason).await {
                        tracing::error!(target: "outpost::replication::shipper", error = %e, "cannot quarantine the record");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                Verdict::Retry => {
                    count("failed");
                    link.status.unreachable(&e);
                    // Writers waiting on the cloud hear "queued" now, not
                    // at their timeout: the records stay and ship later.
                    storage.awaiting().all_queued();
                    let delay = backoff.next_delay();
                    if let CloudError::Status {
                        code: None, status, ..
                    } = &e
                    {
                        tracing::warn!(target: "outpost::replication::shipper", status = status.as_u16(), error = %e, "an answer that is not the cloud's own verdict (a proxy?); records kept, will retry");
                    }
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        tracing::warn!(target: "outpost::replication::shipper", error = %e, pending = storage.outbox_len(), "cannot ship to the cloud; writes stay in the outbox and will be retried");
                    } else {
                        tracing::debug!(target: "outpost::replication::shipper", error = %e, retry_ms = delay.as_millis() as u64, "ship retry failed");
                    }
                    super::probe::wait(&link.client, &e, delay).await;
                }
            },
        }
    }
}

/// Tells the writers waiting on records up to `through` what the cloud
/// said of each: refused (quarantined), superseded by a newer version,
/// applied (only when the cloud says it answered that record: a cloud
/// that predates the flag answers none), or else queued.
fn answer_waiters(storage: &Storage, ack: &outpost_wire::Ack, through: u64) {
    use outpost_store::CloudAnswer;
    storage.awaiting().answer_through(through, |seq| {
        if let Some(refused) = ack.refused.iter().find(|r| r.seq == seq) {
            CloudAnswer::Refused(format!("{}: {}", refused.code, refused.reason))
        } else if let Some(lost) = ack.superseded.iter().find(|s| s.seq == seq) {
            CloudAnswer::Superseded(lost.winner.clone())
        } else if ack.answered.contains(&seq) {
            CloudAnswer::Applied
        } else {
            CloudAnswer::Queued
        }
    });
}

/// Waits for the previous drop of acknowledged records; false if it failed
/// (logged here), so the shipper reads from the outbox's start again.
async fn dropped(previous: Option<tokio::task::JoinHandle<Result<usize, StorageError>>>) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    match previous.await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::error!(target: "outpost::replication::shipper", error = %e, "cannot drop acknowledged records from the outbox");
            false
        }
        Err(e) => {
            tracing::error!(target: "outpost::replication::shipper", error = %e, "the drop of acknowledged records did not finish");
            false
        }
    }
}

/// Whether a stored record is a [`outpost_wire::Record::Skipped`]
/// placeholder.
fn is_placeholder(record: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<outpost_wire::Record>(record),
        Ok(outpost_wire::Record::Skipped { .. })
    )
}

/// `code` as a label value: one of the known refusal codes, else `other`
/// (so a misbehaving cloud cannot grow the label set).
fn known_code(code: &str) -> &'static str {
    outpost_wire::validate::Invalid::from_code(code).map_or("other", |i| i.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_wire::{Batch, Record};

    #[test]
    fn batches_are_valid_json_for_the_cloud() {
        let record = Record::Event {
            topic: "t".into(),
            payload: b"x".to_vec(),
            idempotency_key: None,
            hlc: 1,
        };
        let raw: outpost_store::IVec = serde_json::to_vec(&record).unwrap().into();
        let origin = |seq| (seq == 4).then_some(outpost_wire::Origin { epoch: 6, seq: 40 });
        let batch = encode_batch("edge \"1\"", 7, &[(3, raw.clone()), (4, raw)], origin, &[4]);
        let parsed: Batch = serde_json::from_slice(&batch).unwrap();
        assert_eq!(parsed.node, "edge \"1\"");
        assert_eq!(parsed.epoch, 7);
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.entries[1].seq, 4);
        assert_eq!(parsed.entries[0].record, record);
        assert_eq!(parsed.entries[0].origin, None);
        assert!(!parsed.entries[0].outcome && parsed.entries[1].outcome);
        assert_eq!(
            parsed.entries[1].origin.map(|o| (o.epoch, o.seq)),
            Some((6, 40))
        );
    }
}
