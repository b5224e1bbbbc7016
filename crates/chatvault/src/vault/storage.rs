//! Storage stats beyond record counts (what the store occupies, the room
//! left, persistence) and compaction.

use crate::{Result, Vault};
use serde::Serialize;

/// The room a vault's store takes and has, as far as its backend can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageFootprint {
    /// Bytes the store occupies (SQLite: database file plus WAL;
    /// IndexedDB: the stored bodies of the live records, since the browser
    /// reports usage only for a whole site).
    pub used_bytes: u64,
    /// Of those, free space compaction would give back.
    pub reclaimable_bytes: u64,
    /// Room left to grow: free disk space natively, or what is left of a
    /// quota, whichever is smaller. `None` if unknown.
    pub available_bytes: Option<u64>,
    /// A cap on the store's size, if it has one.
    pub quota_bytes: Option<u64>,
    /// Whether the data survives restarts and storage eviction.
    pub persistent: bool,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactionReport {
    /// Bytes the store occupied before.
    pub before_bytes: u64,
    /// Bytes it occupies after.
    pub after_bytes: u64,
}

impl Vault {
    /// What the store occupies and has left; `None` when the backend cannot
    /// tell.
    pub async fn storage(&self) -> Result<Option<StorageFootprint>> {
        Ok(self.store.footprint().await?.map(|f| StorageFootprint {
            used_bytes: f.used_bytes,
            reclaimable_bytes: f.reclaimable_bytes,
            available_bytes: f.available_bytes,
            quota_bytes: f.quota_bytes,
            persistent: f.persistent,
        }))
    }

    /// Gives the store's free space back to the system so its files shrink
    /// (SQLite: WAL checkpoint, `VACUUM`). `None` when the backend has
    /// nothing to compact.
    pub async fn compact(&self) -> Result<Option<CompactionReport>> {
        let done = self.store.compact().await?;
        if let Some(c) = &done {
            tracing::info!(
                before = c.before_bytes,
                after = c.after_bytes,
                "compacted the store"
            );
        }
        Ok(done.map(|c| CompactionReport {
            before_bytes: c.before_bytes,
            after_bytes: c.after_bytes,
        }))
    }
}
