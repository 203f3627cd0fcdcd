//! The open sled database and its trees, as one value. The writer replaces
//! it whole when it reopens the database after a failure (a sled instance
//! that hit an I/O error never writes again), so readers load it once per
//! operation through [`crate::Storage::handles`] and never keep it.

use crate::StorageError;
use std::path::Path;

/// sled's page cache.
const CACHE_CAPACITY: u64 = 128 * 1024 * 1024;

/// One sled instance: the database and the trees the node uses.
///
/// Load it once per operation and use that one value throughout: a
/// transaction over trees of two instances would straddle a reopen.
pub(crate) struct Handles {
    /// The database (its default tree is unused).
    pub(crate) db: sled::Db,
    /// Node metadata (`META_*` keys).
    pub(crate) meta: sled::Tree,
    /// Records waiting for the cloud, by sequence number.
    pub(crate) outbox: sled::Tree,
    /// Idempotency keys of enqueued events: `topic \0 key` -> event id.
    pub(crate) idempotency: sled::Tree,
    /// Outbox records the cloud refused for good, kept for operators.
    pub(crate) quarantine: sled::Tree,
    /// Stores ever declared replicated on this node (sticky).
    pub(crate) replicated: sled::Tree,
}

impl Handles {
    /// Opens (creating if needed) the sled database in `db_dir`.
    pub(crate) fn open(db_dir: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(db_dir)
            .cache_capacity(CACHE_CAPACITY)
            .open()?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            outbox: db.open_tree("outbox")?,
            idempotency: db.open_tree("idempotency")?,
            quarantine: db.open_tree("quarantine")?,
            replicated: db.open_tree("replicated")?,
            db,
        })
    }
}

impl crate::Storage {
    /// The database as it is now. Load it once per operation and do not
    /// keep it: after a failure the writer reopens the database and
    /// replaces these handles, and the old ones can no longer write.
    pub(crate) fn handles(&self) -> std::sync::Arc<Handles> {
        self.live.load_full()
    }
}
