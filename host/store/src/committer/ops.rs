//! What each KV write means, as pure decisions over the key's current live
//! value: the committer reads the value, asks one of these what to write,
//! and commits the answer. No I/O here, so the semantics test without a
//! database.

use outpost_wire::Change;

/// A write to the node's database.
#[derive(Debug)]
pub enum WriteOp {
    /// Store `value` under `key`.
    Set {
        /// Store id (see [`crate::tree_name`]).
        store: String,
        /// Whether the write also goes to the outbox for the cloud.
        replicated: bool,
        /// Key to write.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` (a replicated store keeps a tombstone).
    Delete {
        /// Store id (see [`crate::tree_name`]).
        store: String,
        /// Whether the delete also goes to the outbox for the cloud.
        replicated: bool,
        /// Key to delete.
        key: String,
    },
    /// Add `delta` to the decimal integer under `key` (absent counts as 0).
    Increment {
        /// Store id (see [`crate::tree_name`]).
        store: String,
        /// Whether the write also goes to the outbox for the cloud.
        replicated: bool,
        /// Key holding the counter.
        key: String,
        /// Amount to add; may be negative.
        delta: i64,
    },
    /// Write `new` only if the live value is `expected`.
    CompareAndSwap {
        /// Store id (see [`crate::tree_name`]).
        store: String,
        /// Whether the write also goes to the outbox for the cloud.
        replicated: bool,
        /// Key to swap.
        key: String,
        /// The value the caller believes is current (`None`: absent).
        expected: Option<Vec<u8>>,
        /// The value to write if it is.
        new: Vec<u8>,
    },
    /// Publish an event to the cloud through the outbox.
    Enqueue {
        /// Topic to publish to.
        topic: String,
        /// The event's body.
        payload: Vec<u8>,
        /// Retries with the same topic and key return the first event's id.
        idempotency_key: Option<String>,
    },
    /// Move a quarantined record back into the outbox under the next
    /// sequence number, in one transaction (an operator's re-send):
    /// `Written::Id(seq)`, or `Written::Done` if it is no longer there.
    Requeue {
        /// Its id in quarantine.
        quarantined: u64,
    },
    /// Writes from the cloud's feed, applied last-writer-wins, the feed
    /// position they bring this node up to, and the id of the cloud
    /// database that cursor belongs to.
    ApplyRemote {
        /// Feed changes, applied in order.
        changes: Vec<Change>,
        /// Feed position to store as the pull cursor.
        cursor: u64,
        /// Id of the cloud database the cursor belongs to.
        cloud: u64,
    },
}

/// A write's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Applied (or, for a local delete of nothing, nothing to do).
    Done,
    /// `Increment`'s new value.
    Number(i64),
    /// `Enqueue`'s event id.
    Id(u64),
    /// Refused; nothing changed.
    Rejected(Rejection),
    /// `ApplyRemote`: changes that won here, and changes older than the
    /// local version (left alone).
    Remote {
        /// Changes that replaced the local version.
        applied: u64,
        /// Changes not newer than the local version, skipped.
        older: u64,
    },
}

/// The outbox record a replicated KV write made: what an edge that waits
/// for the cloud's answer to this write waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The record's sequence number.
    pub seq: u64,
    /// The version the write was stamped with.
    pub version: outpost_wire::Version,
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `CompareAndSwap` found a different current value.
    Conflict,
    /// `Increment` found a non-integer, or would overflow.
    NotANumber,
    /// `Increment`'s result would not fit an `i64`.
    Overflow,
    /// A replicated write or an event would take the outbox over its limit.
    OutboxFull,
}

/// What a read-modify-write did.
pub enum Applied {
    /// Wrote this (`None`: deleted).
    Wrote(Option<Vec<u8>>),
    /// Nothing to write (a local delete of an absent key).
    Unchanged,
    /// Refused; nothing changed.
    Rejected(Rejection),
}

impl From<Applied> for Written {
    fn from(applied: Applied) -> Self {
        match applied {
            Applied::Wrote(_) | Applied::Unchanged => Written::Done,
            Applied::Rejected(rejection) => Written::Rejected(rejection),
        }
    }
}

/// A stored counter: decimal text, surrounding whitespace allowed.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// What to do with a key: `None`, nothing; `Some(None)`, delete it;
/// `Some(Some(v))`, set it to `v`. `Err`: refuse the write.
pub type Decision = Result<Option<Option<Vec<u8>>>, Rejection>;

/// `set`: always write the value.
pub fn set(value: &[u8]) -> Decision {
    Ok(Some(Some(value.to_vec())))
}

/// `delete`: a replicated delete is always recorded, present or not: its
/// tombstone must beat any older write still on its way here. A local
/// delete of nothing changes nothing.
pub fn delete(replicated: bool, current: Option<&[u8]>) -> Decision {
    Ok((replicated || current.is_some()).then_some(None))
}

/// `increment`: an absent key counts from 0; a value that is not a decimal
/// integer, or a sum that overflows, is refused.
pub fn increment(current: Option<&[u8]>, delta: i64) -> Decision {
    let now = match current {
        None => 0,
        Some(bytes) => parse_integer(bytes).ok_or(Rejection::NotANumber)?,
    };
    let next = now.checked_add(delta).ok_or(Rejection::Overflow)?;
    Ok(Some(Some(next.to_string().into_bytes())))
}

/// `compare-and-swap`: write `new` only if the live value is `expected`
/// (`None`: absent).
pub fn compare_and_swap(current: Option<&[u8]>, expected: Option<&[u8]>, new: &[u8]) -> Decision {
    if current == expected {
        Ok(Some(Some(new.to_vec())))
    } else {
        Err(Rejection::Conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_always_writes() {
        assert_eq!(set(b"v"), Ok(Some(Some(b"v".to_vec()))));
    }

    #[test]
    fn a_replicated_delete_always_leaves_a_tombstone() {
        assert_eq!(delete(true, None), Ok(Some(None)));
        assert_eq!(delete(true, Some(b"x")), Ok(Some(None)));
        assert_eq!(delete(false, Some(b"x")), Ok(Some(None)));
        assert_eq!(delete(false, None), Ok(None), "nothing to delete locally");
    }

    #[test]
    fn increment_counts_from_zero_and_refuses_what_is_not_a_number() {
        assert_eq!(increment(None, 5), Ok(Some(Some(b"5".to_vec()))));
        assert_eq!(increment(Some(b" 41\n"), 1), Ok(Some(Some(b"42".to_vec()))));
        assert_eq!(increment(Some(b"-3"), -4), Ok(Some(Some(b"-7".to_vec()))));
        assert_eq!(increment(Some(b"abc"), 1), Err(Rejection::NotANumber));
        assert_eq!(increment(Some(b"1.5"), 1), Err(Rejection::NotANumber));
        let max = i64::MAX.to_string();
        assert_eq!(increment(Some(max.as_bytes()), 1), Err(Rejection::Overflow));
    }

    #[test]
    fn compare_and_swap_writes_only_over_the_expected_value() {
        assert_eq!(
            compare_and_swap(None, None, b"n"),
            Ok(Some(Some(b"n".to_vec())))
        );
        assert_eq!(
            compare_and_swap(Some(b"a"), Some(b"a"), b"n"),
            Ok(Some(Some(b"n".to_vec())))
        );
        assert_eq!(
            compare_and_swap(Some(b"a"), Some(b"b"), b"n"),
            Err(Rejection::Conflict)
        );
        assert_eq!(
            compare_and_swap(Some(b"a"), None, b"n"),
            Err(Rejection::Conflict)
        );
        assert_eq!(
            compare_and_swap(None, Some(b"a"), b"n"),
            Err(Rejection::Conflict)
        );
    }
}
