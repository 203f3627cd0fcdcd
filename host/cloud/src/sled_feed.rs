//! The sled backend's change feed: one row per ingested batch, keyed by
//! the batch's first cursor, holding its changes in cursor order (a row
//! per change was one of the three tree writes an entry cost). A row
//! whose value is a bare JSON object is one change, as databases written
//! before packing hold them; both kinds are read alike.

use crate::contract::MAX_PAGE_BYTES;
use outpost_wire::Change;
use sled::Tree;

/// Appends one change's JSON to a packed row: 4 bytes of big-endian
/// length, then the JSON. A packed row never starts with `{` (a change is
/// far below 2^24 bytes), which tells it from a single-change row.
pub(crate) fn pack(row: &mut Vec<u8>, json: &[u8]) {
    row.extend_from_slice(&(json.len() as u32).to_be_bytes());
    row.extend_from_slice(json);
}

/// The JSON of each change in `row`, in cursor order.
fn unpack(row: &[u8]) -> Vec<&[u8]> {
    if row.first() == Some(&b'{') {
        return vec![row];
    }
    let mut items = Vec::new();
    let mut at = 0;
    while let Some(len) = row.get(at..at + 4) {
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(json) = row.get(at + 4..at + 4 + len) else {
            break;
        };
        items.push(json);
        at += 4 + len;
    }
    items
}

fn cursor_of(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

/// Changes after `since` and below `durable`: at most `limit` and (past
/// the first) at most [`MAX_PAGE_BYTES`] of them, with the last cursor
/// read. Changes that fail to decode are logged and skipped, never
/// allowed to stall a reader.
pub(crate) fn read(
    feed: &Tree,
    since: u64,
    durable: u64,
    limit: usize,
) -> Result<(Vec<Change>, u64), sled::Error> {
    let first = since.saturating_add(1);
    let (mut changes, mut last, mut bytes) = (Vec::new(), since, 0);
    if first >= durable || limit == 0 {
        return Ok((changes, last));
    }
    // The row holding `first` may start before it.
    let start = match feed.range(..=first.to_be_bytes()).next_back() {
        Some(item) => item?.0.to_vec(),
        None => first.to_be_bytes().to_vec(),
    };
    for item in feed.range(start..durable.to_be_bytes().to_vec()) {
        let (key, row) = item?;
        for (offset, json) in unpack(&row).into_iter().enumerate() {
            let cursor = cursor_of(&key) + offset as u64;
            if cursor < first {
                continue;
            }
            if cursor >= durable
                || changes.len() == limit
                || (!changes.is_empty() && bytes + json.len() > MAX_PAGE_BYTES)
            {
                return Ok((changes, last));
            }
            bytes += json.len();
            last = cursor;
            match serde_json::from_slice(json) {
                Ok(change) => changes.push(change),
                Err(e) => {
                    tracing::error!(target: "outpost::cloud::store", id = cursor, error = %e, "skipping an undecodable change")
                }
            }
        }
    }
    Ok((changes, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_wire::Version;

    fn change(cursor: u64) -> Change {
        Change {
            cursor,
            store: "s".into(),
            key: format!("k{cursor}"),
            value: Some(b"v".to_vec()),
            version: Version {
                hlc: cursor,
                node: "n".into(),
            },
        }
    }

    fn json(cursor: u64) -> Vec<u8> {
        serde_json::to_vec(&change(cursor)).unwrap()
    }

    #[test]
    fn pages_start_inside_rows_stop_at_durable_and_read_old_single_rows() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let feed = db.open_tree("feed").unwrap();
        // An old single-change row, then two packed batches: 2..=4, 5..=6.
        feed.insert(1u64.to_be_bytes(), json(1)).unwrap();
        for (first, last) in [(2u64, 4u64), (5, 6)] {
            let mut row = Vec::new();
            for cursor in first..=last {
                pack(&mut row, &json(cursor));
            }
            feed.insert(first.to_be_bytes(), row).unwrap();
        }
        let cursors = |since, durable, limit| {
            let (changes, last) = read(&feed, since, durable, limit).unwrap();
            (changes.iter().map(|c| c.cursor).collect::<Vec<_>>(), last)
        };
        assert_eq!(cursors(0, 7, 100), (vec![1, 2, 3, 4, 5, 6], 6));
        assert_eq!(cursors(2, 7, 100), (vec![3, 4, 5, 6], 6), "inside a row");
        assert_eq!(cursors(2, 7, 2), (vec![3, 4], 4), "limit");
        assert_eq!(cursors(0, 5, 100), (vec![1, 2, 3, 4], 4), "durable");
        assert_eq!(cursors(6, 7, 100), (vec![], 6), "at the end");
    }
}
