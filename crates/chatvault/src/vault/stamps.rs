//! The vault's hybrid logical clock and its one stamped write path.
//!
//! Every write that issues version stamps goes through
//! [`Vault::commit_stamped`]: it takes the stamps while holding the clock,
//! and the batch carries a [`WriteOp::ClaimStamps`] so the store checks them
//! against the persisted clock mark and raises the mark **in the same
//! transaction** (no write of its own, no extra sync). The mark is the
//! highest stamp actually issued, so a restarted process resumes right above
//! it — at wall-clock time, however many short processes ran before. When
//! another process on the same store committed stamps first, the store
//! refuses the claim; the vault folds the stored mark into its clock,
//! re-stamps and tries again, so parallel writers never commit the same
//! stamp.
//!
//! A mark found far ahead of the wall clock on open (the device's clock ran
//! ahead and has been fixed) is not resumed from: the clock re-bases to the
//! wall clock and the first claim replaces that mark (see
//! [`StampClaim::rebases`]). Writes that replace a record stamped that far
//! ahead still beat it ([`HlcClock::tick_above`]).
//!
//! A pending change the server refused as clock skew is re-stamped at the
//! server's time ([`Replica::restamp_skewed`]), so it syncs instead of
//! being resent unchanged until the server's clock catches up with it.
//!
//! Must never hand out a clock stamp without claiming it in the batch that
//! carries it, nor persist the mark in a separate write.

use super::records::{not_found, outbox_item};
use super::{Replica, Vault};
use crate::{meta_keys, Result, VaultError};
use chatvault_core::{EntityKind, Hlc, HlcClock, RecordId, Timestamp, Tombstone};
use chatvault_store::{
    parse_clock_mark, StampClaim, Store, StoreError, WriteBatch, WriteOp, WriteOutcome,
};
use std::sync::MutexGuard;

/// How often a write is tried again when another writer of the store got
/// there first (stamps claimed, or the record changed since it was read).
/// Each retry happens only because another write committed, so running
/// out means the vault is under a write storm, not that a write is stuck.
pub(super) const MAX_ATTEMPTS: u32 = 64;

/// The clock mark a previous session persisted, if the vault has one.
/// (Older builds stored a lease a little ahead of their stamps under the
/// same key; it reads as a mark, and one far ahead is re-based from.)
pub(super) async fn stored_mark(store: &dyn Store) -> Result<Option<Hlc>> {
    let Some(bytes) = store.meta(meta_keys::CLOCK).await? else {
        return Ok(None);
    };
    parse_clock_mark(&bytes)
        .map(Some)
        .map_err(|_| VaultError::CorruptMetadata {
            key: meta_keys::CLOCK,
            reason: "not a clock stamp".into(),
        })
}

/// The clock a vault opens with, given its stored mark: resumed right
/// above the mark, or — if the mark is far ahead of `now` — started at the
/// wall clock, with the mark to replace on the first claim.
pub(super) fn resume(
    device: chatvault_core::DeviceId,
    mark: Option<Hlc>,
    now: Timestamp,
) -> (HlcClock, Option<Hlc>) {
    match mark {
        Some(m) if HlcClock::is_far_ahead(m, now) => {
            tracing::info!(
                mark = %m,
                "the clock mark is far ahead of the wall clock: re-basing to the wall clock"
            );
            (HlcClock::new(device), Some(m))
        }
        _ => (HlcClock::resume(device, mark), None),
    }
}

/// Stamps for one attempt of a write, taken while holding the clock.
pub(super) struct Stamper<'a> {
    clock: MutexGuard<'a, HlcClock>,
    now: Timestamp,
    /// The first stamp the clock issued in this attempt (the claim's start).
    first: Option<Hlc>,
}

impl Stamper<'_> {
    /// The wall time the stamps are taken at.
    pub(super) fn now(&self) -> Timestamp {
        self.now
    }

    /// A fresh stamp.
    pub(super) fn next(&mut self) -> Result<Hlc> {
        let stamp = self.clock.tick(self.now)?;
        self.first.get_or_insert(stamp);
        Ok(stamp)
    }

    /// A fresh stamp above `floor`, the version of the record the write
    /// replaces (so the write wins over what it replaces, wherever that
    /// version came from).
    pub(super) fn above(&mut self, floor: Hlc) -> Result<Hlc> {
        let stamp = self.clock.tick_above(self.now, floor)?;
        // A one-off stamp above a far-ahead record does not come from the
        // clock's sequence: it is distinct because it beats that record's
        // version, which the batch requires unchanged.
        if stamp == self.clock.last() {
            self.first.get_or_insert(stamp);
        }
        Ok(stamp)
    }
}

impl Vault {
    pub(super) fn lock_clock(&self) -> MutexGuard<'_, HlcClock> {
        // A poisoned lock still holds the highest stamp issued; going on
        // with it keeps stamps increasing, which is all that matters here.
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rebase_from(&self) -> MutexGuard<'_, Option<Hlc>> {
        self.rebase_from.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stamps and writes one batch: `build` takes its stamps from the
    /// [`Stamper`] and returns the batch with a value to hand back; the
    /// claim of those stamps is appended. If another process of this device
    /// committed stamps first, the stored mark is folded into the clock and
    /// `build` runs again with fresh stamps (at most [`MAX_ATTEMPTS`] times).
    ///
    /// Writes of this process take their turn one at a time, so they never
    /// refuse each other's claims.
    pub(super) async fn commit_stamped<T>(
        &self,
        mut build: impl FnMut(&mut Stamper<'_>) -> Result<(WriteBatch, T)>,
    ) -> Result<(T, WriteOutcome)> {
        let _turn = self.writing.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let (batch, value) = {
                let mut stamper = Stamper {
                    clock: self.lock_clock(),
                    now: self.time.now(),
                    first: None,
                };
                let (mut batch, value) = build(&mut stamper)?;
                if self.codec.is_encrypted() {
                    batch.push(self.key_fence_op());
                }
                if let Some(from) = stamper.first {
                    batch.push(WriteOp::ClaimStamps(StampClaim {
                        from,
                        through: stamper.clock.last(),
                        rebases: *self.rebase_from(),
                    }));
                }
                (batch, value)
            };
            match self.commit(batch).await {
                Ok(outcome) => {
                    *self.rebase_from() = None;
                    return Ok((value, outcome));
                }
                Err(VaultError::Store(StoreError::StampsTaken { mark })) => {
                    tracing::debug!(%mark, "another writer claimed these stamps; re-stamping");
                    self.lock_clock().fold(mark);
                    *self.rebase_from() = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(VaultError::Contended {
            what: "version stamps",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The requirement that the store still names the data key this
    /// handle seals with (see [`meta_keys::DATA_KEY`](crate::meta_keys::DATA_KEY)).
    pub(super) fn key_fence_op(&self) -> WriteOp {
        let fence = self
            .key_fence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        WriteOp::RequireMeta(crate::meta_keys::DATA_KEY.into(), fence)
    }

    /// After this handle stored a new envelope: its writes require its key.
    pub(super) fn set_key_fence(&self, fence: Option<Vec<u8>>) {
        *self.key_fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// Writes a batch that issues no stamps of its own (changes from
    /// elsewhere, outbox and metadata bookkeeping).
    pub(super) async fn commit(&self, batch: WriteBatch) -> Result<WriteOutcome> {
        self.store.write(batch).await.map_err(|e| match e {
            StoreError::ConversationNotFound(id) => not_found(EntityKind::Conversation, id.into()),
            other => fenced(other),
        })
    }
}

impl Replica<'_> {
    /// Re-stamps a pending change the sync server refused as clock skew
    /// (stamped more than the allowed drift ahead of the server's clock, by
    /// a device clock that ran ahead): if the vault still holds the record
    /// (or its tombstone) at exactly the `refused` version, it is written
    /// again at a version on the server's clock, `server_now` (this
    /// device's id, so it stays distinct from other devices' stamps) — but
    /// above `accepted`, the highest version of this device the server has
    /// accepted, so it never goes below one of its own earlier writes — and
    /// queued again under a fresh op id. Returns the new version, or `None`
    /// if the record changed or went since it was read (its newer state is
    /// what gets pushed) or cannot be stamped lower.
    ///
    /// A version another device got accepted above the new one (its clock
    /// runs ahead, within the drift) wins and comes down in a pull, as any
    /// concurrent edit would.
    pub async fn restamp_skewed(
        &self,
        kind: EntityKind,
        id: RecordId,
        refused: Hlc,
        server_now: Timestamp,
        accepted: Option<Hlc>,
    ) -> Result<Option<Hlc>> {
        let vault = self.vault;
        let device = vault.device_id();
        let wall = u64::try_from(server_now.as_millis()).unwrap_or(0);
        let mut version = Hlc::new(wall, 0, device)?;
        if let Some(floor) = accepted.filter(|a| *a >= version) {
            let counter = floor
                .counter()
                .checked_add(1)
                .ok_or(chatvault_core::CoreError::ClockExhausted)?;
            version = Hlc::new(floor.wall_ms(), counter, device)?;
        }
        if version >= refused {
            // Not ahead of the server at all: nothing to fix by re-stamping.
            return Ok(None);
        }
        let mut batch = WriteBatch::new();
        let conversation_id = match kind {
            EntityKind::Conversation => match vault.store.conversation(id.conversation()).await? {
                Some(row) if row.record.version == refused => {
                    batch.push(WriteOp::RequireVersion(kind, id, refused));
                    let body =
                        vault
                            .codec
                            .reseal(kind, id, None, (refused, version), &row.record.body)?;
                    batch.push(WriteOp::PutConversation(
                        chatvault_core::ConversationRecord {
                            version,
                            body,
                            ..row.record
                        },
                    ));
                    None
                }
                Some(_) => return Ok(None),
                None => match vault.store.tombstone(kind, id).await? {
                    Some(t) if t.version == refused => {
                        batch.push(WriteOp::Delete(Tombstone { version, ..t }));
                        None
                    }
                    _ => return Ok(None),
                },
            },
            EntityKind::Message => match vault.store.message(id.message()).await? {
                Some(m) if m.version == refused => {
                    let conversation = m.conversation_id;
                    batch.push(WriteOp::RequireVersion(kind, id, refused));
                    let body = vault.codec.reseal(
                        kind,
                        id,
                        Some(conversation),
                        (refused, version),
                        &m.body,
                    )?;
                    batch.push(WriteOp::PutMessage(chatvault_core::MessageRecord {
                        version,
                        body,
                        ..m
                    }));
                    Some(conversation)
                }
                Some(_) => return Ok(None),
                None => match vault.store.tombstone(kind, id).await? {
                    Some(t) if t.version == refused => {
                        let conversation = t.conversation_id;
                        batch.push(WriteOp::Delete(Tombstone { version, ..t }));
                        conversation
                    }
                    _ => return Ok(None),
                },
            },
        };
        batch.push(WriteOp::Enqueue(outbox_item(kind, id, conversation_id)));
        match vault.commit(batch).await {
            Ok(_) => {
                tracing::info!(%kind, %id, %refused, %version, "re-stamped a change refused as clock skew");
                Ok(Some(version))
            }
            Err(VaultError::Store(StoreError::VersionChanged { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A store error as the vault reports it: the data-key fence refusing a
/// write means another process rotated the key
/// ([`VaultError::KeyRotatedElsewhere`]).
pub(super) fn fenced(e: StoreError) -> VaultError {
    match e {
        StoreError::MetaChanged { key } if key == crate::meta_keys::DATA_KEY => {
            VaultError::KeyRotatedElsewhere
        }
        other => VaultError::Store(other),
    }
}
