//! The vault's hybrid logical clock: version stamps for local writes, and
//! the persisted lease that keeps a restarted device from reissuing one.
//! Every vault write goes through [`Vault::commit`], which carries the
//! lease forward in the same atomic batch as the stamps it covers.
//!
//! Must never hand out a stamp at or below one already committed, and
//! never persist the lease in a separate write from the records it covers.

use super::records::not_found;
use super::Vault;
use crate::{meta_keys, Result, VaultError};
use chatvault_core::{EntityKind, Hlc, HlcClock, Timestamp};
use chatvault_store::{Store, StoreError, WriteBatch, WriteOp, WriteOutcome};
use std::sync::atomic::Ordering;

/// How far ahead of the last committed stamp the persisted lease reaches.
/// The lease is rewritten only when stamps catch up with it, so most
/// commits carry no clock write at all.
const CLOCK_LEASE_MS: u64 = 10_000;

/// The last stamp a previous session leased, if the vault has one.
pub(super) async fn stored_lease(store: &dyn Store) -> Result<Option<Hlc>> {
    let Some(bytes) = store.meta(meta_keys::CLOCK).await? else {
        return Ok(None);
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.parse::<Hlc>().ok())
        .map(Some)
        .ok_or_else(|| VaultError::CorruptMetadata {
            key: meta_keys::CLOCK,
            reason: "not a clock stamp".into(),
        })
}

impl Vault {
    pub(super) fn lock_clock(&self) -> std::sync::MutexGuard<'_, HlcClock> {
        // A poisoned lock still holds the highest stamp issued; going on
        // with it keeps stamps increasing, which is all that matters here.
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current time and a fresh version stamp.
    pub(super) fn stamp(&self) -> Result<(Timestamp, Hlc)> {
        let now = self.time.now();
        let version = self.lock_clock().tick(now)?;
        Ok((now, version))
    }

    /// `n` consecutive version stamps taken at one instant.
    pub(super) fn stamps(&self, n: usize) -> Result<(Timestamp, Vec<Hlc>)> {
        let now = self.time.now();
        let mut clock = self.lock_clock();
        let stamps = (0..n).map(|_| clock.tick(now)).collect::<Result<_, _>>()?;
        Ok((now, stamps))
    }

    /// Appends the clock's high-water mark, so a restart never reissues a
    /// stamp, and writes the batch.
    pub(super) async fn commit(&self, mut batch: WriteBatch) -> Result<WriteOutcome> {
        let last = self.lock_clock().last();
        let lease = self.clock_lease.load(Ordering::SeqCst);
        let new_lease = (last.wall_ms() >= lease).then(|| last.wall_ms() + CLOCK_LEASE_MS);
        if let Some(wall) = new_lease {
            let stamp = Hlc::new(wall, 0, last.device())?;
            batch.push(WriteOp::SetMeta(
                meta_keys::CLOCK.into(),
                stamp.to_string().into_bytes(),
            ));
        }
        let outcome = self.store.write(batch).await.map_err(|e| match e {
            StoreError::ConversationNotFound(id) => not_found(EntityKind::Conversation, id.into()),
            other => VaultError::Store(other),
        })?;
        if let Some(wall) = new_lease {
            self.clock_lease.fetch_max(wall, Ordering::SeqCst);
        }
        Ok(outcome)
    }
}
