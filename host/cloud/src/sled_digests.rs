//! What the sled backend keeps of each applied `(epoch, seq)`: the entry's
//! digest, and the refusal code if it was refused, so a redelivery is told
//! from a second process under the same identity. One row per ingested
//! batch holds the digests of its run of sequence numbers (a row per
//! entry, plus its removal once out of [`DIGEST_WINDOW`], were two of the
//! six tree writes an entry cost); the old places of renumbered records
//! (`--new-epoch`) are claimed one row each, as before.
//!
//! Rows are read outside the batch's transaction (sled's transactional
//! trees cannot range-read), which is sound because one writer ingests at
//! a time (see `SledStore::write`).

use crate::contract::DIGEST_WINDOW;
use sled::Tree;

/// `epoch seq` as a key: big-endian, so one epoch's rows sort by sequence.
pub(crate) fn place(epoch: u64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&epoch.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn split_place(key: &[u8]) -> Option<(u64, u64)> {
    let key: [u8; 16] = key.try_into().ok()?;
    Some((
        u64::from_be_bytes(key[..8].try_into().ok()?),
        u64::from_be_bytes(key[8..].try_into().ok()?),
    ))
}

/// A batch row: for each sequence number from the key's on, one byte of
/// length and what is kept for it (8 bytes of digest, then a refusal
/// code, if any).
pub(crate) fn encode_row<'a>(kept: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut row = Vec::new();
    for kept in kept {
        debug_assert!(kept.len() <= u8::MAX as usize, "digest and code fit");
        row.push(kept.len() as u8);
        row.extend_from_slice(kept);
    }
    row
}

/// What `row` keeps for its `index`th sequence number, and how many it
/// holds in all.
fn decode_row(row: &[u8], index: u64) -> (Option<&[u8]>, u64) {
    let (mut at, mut i, mut found) = (0usize, 0u64, None);
    while let Some(&len) = row.get(at) {
        let end = at + 1 + len as usize;
        let Some(kept) = row.get(at + 1..end) else {
            break;
        };
        if i == index {
            found = Some(kept);
        }
        at = end;
        i += 1;
    }
    (found, i)
}

/// The digest trees, read outside a transaction.
pub(crate) struct Digests<'a> {
    /// `epoch first-seq` -> [`encode_row`] of a batch.
    pub(crate) rows: &'a Tree,
    /// `epoch seq` -> kept bytes, one place each: claims of renumbered
    /// records' old places (and every place, in databases written before
    /// batch rows).
    pub(crate) claims: &'a Tree,
}

impl Digests<'_> {
    /// What is kept for `(epoch, seq)`: 8 bytes of digest, then a refusal
    /// code if it was refused; `None` if nothing was applied there (or it
    /// is out of the window).
    pub(crate) fn at(&self, epoch: u64, seq: u64) -> Result<Option<Vec<u8>>, sled::Error> {
        if let Some(kept) = self.claim(epoch, seq)? {
            return Ok(Some(kept));
        }
        let Some((key, row)) = self
            .rows
            .range(place(epoch, 0)..=place(epoch, seq))
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let Some((_, first)) = split_place(&key) else {
            return Ok(None);
        };
        Ok(decode_row(&row, seq - first).0.map(<[u8]>::to_vec))
    }

    /// The claim on `(epoch, seq)`, if any (see [`Digests::at`]).
    pub(crate) fn claim(&self, epoch: u64, seq: u64) -> Result<Option<Vec<u8>>, sled::Error> {
        Ok(self
            .claims
            .get(place(epoch, seq))?
            .map(|kept| kept.to_vec()))
    }

    /// The keys of `epoch`'s rows that hold nothing at or after
    /// `last - DIGEST_WINDOW`: what a batch ending at `last` removes.
    pub(crate) fn expired(&self, epoch: u64, last: u64) -> Result<Vec<[u8; 16]>, sled::Error> {
        let Some(cutoff) = last.checked_sub(DIGEST_WINDOW) else {
            return Ok(Vec::new());
        };
        let mut expired = Vec::new();
        for item in self.rows.range(place(epoch, 0)..place(epoch, cutoff)) {
            let (key, row) = item?;
            let Some((_, first)) = split_place(&key) else {
                continue;
            };
            let (_, count) = decode_row(&row, u64::MAX);
            if first + count <= cutoff {
                expired.push(place(epoch, first));
            } else {
                break;
            }
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_gives_back_each_places_digest_and_code() {
        let row = encode_row([&b"digest01"[..], b"digest02malformed", b"digest03"]);
        assert_eq!(decode_row(&row, 0), (Some(&b"digest01"[..]), 3));
        assert_eq!(decode_row(&row, 1).0, Some(&b"digest02malformed"[..]));
        assert_eq!(decode_row(&row, 3).0, None);
    }

    #[test]
    fn places_are_found_in_their_batch_row_and_old_rows_expire() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (rows, claims) = (
            db.open_tree("rows").unwrap(),
            db.open_tree("claims").unwrap(),
        );
        let digests = Digests {
            rows: &rows,
            claims: &claims,
        };
        let kept: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 8]).collect();
        rows.insert(place(7, 1), encode_row(kept[..5].iter().map(Vec::as_slice)))
            .unwrap();
        rows.insert(place(7, 6), encode_row(kept[5..].iter().map(Vec::as_slice)))
            .unwrap();
        assert_eq!(digests.at(7, 1).unwrap(), Some(vec![0; 8]));
        assert_eq!(digests.at(7, 5).unwrap(), Some(vec![4; 8]));
        assert_eq!(digests.at(7, 6).unwrap(), Some(vec![5; 8]));
        assert_eq!(digests.at(7, 10).unwrap(), Some(vec![9; 8]));
        assert_eq!(digests.at(7, 11).unwrap(), None);
        assert_eq!(digests.at(8, 3).unwrap(), None, "another epoch");
        claims.insert(place(8, 3), b"claimed!".as_slice()).unwrap();
        assert_eq!(digests.at(8, 3).unwrap(), Some(b"claimed!".to_vec()));
        // A batch ending DIGEST_WINDOW + 6 past the start drops the first
        // row (1..=5) only.
        assert!(digests.expired(7, DIGEST_WINDOW + 5).unwrap().is_empty());
        assert_eq!(
            digests.expired(7, DIGEST_WINDOW + 6).unwrap(),
            vec![place(7, 1)]
        );
        assert_eq!(
            digests.expired(7, DIGEST_WINDOW + 11).unwrap(),
            vec![place(7, 1), place(7, 6)]
        );
    }
}
