//! The feed as PostgreSQL stores it: one row per batch, its changes packed
//! into one `BYTEA` (cursors `first_cursor..`), so a batch of a thousand
//! changes costs the database one row and one index entry instead of a
//! thousand, and the counters row is held for one small insert.
//!
//! Layout, big-endian: per change, `store` and `key` (u32 length + UTF-8),
//! `hlc` (u64), `node` (u32 length + UTF-8), then the value: `0` for a
//! delete, or `1`, u32 length and the bytes.

use outpost_wire::{Change, Version};

/// Packs `changes` (in cursor order) into one row's bytes.
pub fn encode(changes: &[Change]) -> Vec<u8> {
    let size: usize = changes
        .iter()
        .map(|c| {
            25 + c.store.len()
                + c.key.len()
                + c.version.node.len()
                + c.value.as_ref().map_or(0, Vec::len)
        })
        .sum();
    let mut out = Vec::with_capacity(size);
    for change in changes {
        put_bytes(&mut out, change.store.as_bytes());
        put_bytes(&mut out, change.key.as_bytes());
        out.extend_from_slice(&change.version.hlc.to_be_bytes());
        put_bytes(&mut out, change.version.node.as_bytes());
        match &change.value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                put_bytes(&mut out, value);
            }
        }
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a change field is far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the changes of one row, numbering them from `first_cursor`.
pub fn decode(first_cursor: u64, mut bytes: &[u8]) -> Result<Vec<Change>, String> {
    let mut changes = Vec::new();
    while !bytes.is_empty() {
        let store = take_text(&mut bytes)?;
        let key = take_text(&mut bytes)?;
        let hlc = u64::from_be_bytes(take(&mut bytes, 8)?.try_into().expect("8 bytes"));
        let node = take_text(&mut bytes)?;
        let value = match take(&mut bytes, 1)?[0] {
            0 => None,
            1 => Some(take_bytes(&mut bytes)?.to_vec()),
            other => return Err(format!("bad value tag {other}")),
        };
        changes.push(Change {
            cursor: first_cursor + changes.len() as u64,
            store,
            key,
            value,
            version: Version { hlc, node },
        });
    }
    Ok(changes)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if bytes.len() < n {
        return Err(format!("truncated: wanted {n} bytes, {} left", bytes.len()));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = u32::from_be_bytes(take(bytes, 4)?.try_into().expect("4 bytes"));
    take(bytes, len as usize)
}

fn take_text(bytes: &mut &[u8]) -> Result<String, String> {
    String::from_utf8(take_bytes(bytes)?.to_vec()).map_err(|e| format!("not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(cursor: u64, key: &str, value: Option<&[u8]>) -> Change {
        Change {
            cursor,
            store: "@fn".into(),
            key: key.into(),
            value: value.map(<[u8]>::to_vec),
            version: Version {
                hlc: u64::MAX - cursor,
                node: "edge-é".into(),
            },
        }
    }

    #[test]
    fn changes_round_trip_with_their_cursors() {
        let changes = vec![
            change(7, "a", Some(b"one")),
            change(8, "", None),
            change(9, "k\u{0}ey", Some(&[0, 255, 1])),
            change(10, "empty", Some(b"")),
        ];
        assert_eq!(decode(7, &encode(&changes)).unwrap(), changes);
        assert!(decode(1, &[]).unwrap().is_empty());
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let bytes = encode(&[change(1, "a", Some(b"value"))]);
        for cut in 0..bytes.len() {
            assert!(
                decode(1, &bytes[..cut]).is_err() || cut == 0,
                "cut at {cut}"
            );
        }
        let mut bad = bytes.clone();
        let tag = bad.len() - 10;
        bad[tag] = 9;
        assert!(decode(1, &bad).is_err());
    }
}
