//! What a guest hears when the node's storage fails: whether its write is
//! certainly not applied (`io`) or may have been (`outcome-unknown`), with
//! an error id that ties it to the log line carrying the detail.

use outpost_store::StorageError;

/// A storage failure as a guest sees it.
pub(crate) struct GuestFailure {
    /// The write may or may not have been applied.
    pub outcome_unknown: bool,
    /// For the guest: what happened, and the error id.
    pub message: String,
}

/// Classifies `error` for the guest, under error id `id`.
pub(crate) fn for_guest(error: &StorageError, id: &str) -> GuestFailure {
    match error {
        StorageError::OutcomeUnknown(_) => GuestFailure {
            outcome_unknown: true,
            message: format!(
                "storage failed while making the write durable; it may or may not be applied (error id {id})"
            ),
        },
        StorageError::Unavailable(_) => GuestFailure {
            outcome_unknown: false,
            message: format!("storage unavailable; not applied, retry later (error id {id})"),
        },
        _ => GuestFailure {
            outcome_unknown: false,
            message: format!("storage failure (error id {id})"),
        },
    }
}
