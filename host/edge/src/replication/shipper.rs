//! Drains the outbox to the cloud in sequence order. Records leave the
//! outbox only after the cloud acknowledges them (durably); a failed or
//! unanswered upload is retried with backoff, and any redelivery is
//! harmless because the cloud deduplicates on (node id, sequence).

use super::Link;
use super::backoff::Backoff;
use super::client::CloudError;
use crate::metrics::ResultLabels;
use bytes::Bytes;
use http::StatusCode;
use outpost_store::Storage;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bound on a batch's record bytes (one larger record still goes alone).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// `{"node":...,"epoch":E,"entries":[{"seq":N,"record":<stored JSON>},...]}`,
/// built from the stored records without decoding them.
fn encode_batch(node: &str, epoch: u64, records: &[(u64, outpost_store::IVec)]) -> Bytes {
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
        out.extend_from_slice(format!("{{\"seq\":{seq},\"record\":").as_bytes());
        out.extend_from_slice(record);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
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
    // After the cloud refused a batch as malformed or too large, the records
    // of that batch go one at a time, so the culprit is found and set aside.
    let mut singles = 0usize;
    loop {
        let max = if singles > 0 { 1 } else { batch_max };
        let batch = match storage.outbox_batch(max, MAX_BATCH_BYTES) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(target: "outpost::replication::shipper", error = %e, "cannot read the outbox");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let Some(&(last, _)) = batch.last() else {
            // Idle: wake on the next write, or look again now and then.
            tokio::select! {
                () = storage.outbox_grew().notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        let body = encode_batch(storage.node_id(), storage.epoch(), &batch);
        link.metrics.ship_bytes.inc_by(body.len() as u64);
        match link.client.ingest(body).await {
            Err(CloudError::Status { status, body })
                if status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                count("refused");
                // Retrying the same bytes cannot succeed. Narrow down to the
                // record at fault and set it aside (on disk, reported), so
                // one bad record cannot block every later one.
                if batch.len() > 1 {
                    singles = batch.len();
                    continue;
                }
                singles = 0;
                let reason = format!("cloud answered {status}: {body}");
                tracing::error!(target: "outpost::replication::shipper", seq = last, reason = %reason, "the cloud refuses this outbox record; quarantined");
                if let Err(e) = storage.quarantine(last, &reason) {
                    tracing::error!(target: "outpost::replication::shipper", error = %e, "cannot quarantine the record");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
            Ok(ack) => {
                count("acked");
                singles = singles.saturating_sub(1);
                let through = ack.through.min(last);
                link.status.acked(through);
                if let Err(e) = storage.outbox_ack(through) {
                    tracing::error!(target: "outpost::replication::shipper", error = %e, "cannot drop acknowledged records from the outbox");
                }
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
                    through,
                    "batch acknowledged"
                );
                backoff.reset();
            }
            Err(e) => {
                count("failed");
                link.status.unreachable(&e);
                let delay = backoff.next_delay();
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    tracing::warn!(target: "outpost::replication::shipper", error = %e, pending = storage.outbox_len(), "cannot ship to the cloud; writes stay in the outbox and will be retried");
                } else {
                    tracing::debug!(target: "outpost::replication::shipper", error = %e, retry_ms = delay.as_millis() as u64, "ship retry failed");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
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
        let batch = encode_batch("edge \"1\"", 7, &[(3, raw.clone()), (4, raw)]);
        let parsed: Batch = serde_json::from_slice(&batch).unwrap();
        assert_eq!(parsed.node, "edge \"1\"");
        assert_eq!(parsed.epoch, 7);
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.entries[1].seq, 4);
        assert_eq!(parsed.entries[0].record, record);
    }
}
