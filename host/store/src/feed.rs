//! Where this node stands in the cloud's change feed beyond its cursor: a
//! request to read the feed again from the start, made when a store starts
//! replicating here (the changes it was sent before were not for it then).

use crate::{Storage, StorageError, u64_value};

/// Meta key: a request number, present while a full re-read of the feed
/// is owed.
const META_RESYNC: &[u8] = b"feed_resync";

impl Storage {
    /// Asks the puller to read the feed from the start. Applying is
    /// last-writer-wins, so reading changes again changes nothing that is
    /// already right. Not flushed here (a flush can stall on a failing
    /// disk, and this runs on the deploy path): it is on disk with the next
    /// write's group commit or sled's own background flush, like the
    /// replicated-store mark it goes with.
    pub fn request_resync(&self) -> Result<(), StorageError> {
        let handles = self.handles();
        handles.meta.update_and_fetch(META_RESYNC, |old| {
            Some(
                (u64_value(old.map(sled::IVec::from)) + 1)
                    .to_be_bytes()
                    .to_vec(),
            )
        })?;
        Ok(())
    }

    /// The pending re-read request, if one is owed (pass it to
    /// [`Storage::resync_done`]).
    pub fn resync_requested(&self) -> Result<Option<u64>, StorageError> {
        Ok(self
            .handles()
            .meta
            .get(META_RESYNC)?
            .map(|v| u64_value(Some(v))))
    }

    /// Re-read `request` has begun (its first page is applied). A request
    /// made since stays owed.
    pub fn resync_done(&self, request: u64) -> Result<(), StorageError> {
        let _ = self.handles().meta.compare_and_swap(
            META_RESYNC,
            Some(&request.to_be_bytes()[..]),
            None as Option<&[u8]>,
        )?;
        Ok(())
    }
}
