//! The replica handle: what keeping this device's copy in step with a
//! sync server needs from a [`Vault`] beyond the app API — the outbox
//! (pending changes, acknowledging them), applying changes from elsewhere
//! by last-writer-wins (a pulled page together with its cursor in one
//! atomic write), re-queueing a record, pruning records a server snapshot
//! no longer lists, the sync-owned metadata (`sync.*` keys) and the sync
//! server setting. The key-envelope operations of the handle live with
//! the other key code, in `vault::keys`.
//!
//! Reached through [`Vault::replica`], so an app author reads the app API
//! first, as matrix-sdk scopes `client.encryption()`.
//!
//! Parked changes (refused by the server) stay in the outbox, marked
//! parked: not pushed until retried, but unsynced for resync and retention
//! alike, until the user retries or discards them.
//!
//! Must never push, pull or talk to a network: the sync client moves
//! bytes, this module only reads and writes the local store. Must never
//! drop a record that has a change waiting to be pushed or parked.

use super::records::outbox_item;
use super::types::ApplyReport;
use super::Vault;
use crate::{meta_keys, Result, VaultError};
use chatvault_core::{
    Change, ChangeOp, ConversationId, CoreError, EntityKind, Hlc, OpId, RecordId, Timestamp,
    Tombstone,
};
use chatvault_crypto::{KdfParams, KdfPolicy, RecordAad};
use chatvault_store::{OutboxEntry, ParkReason, ParkedEntry, TombstoneQuery, WriteBatch, WriteOp};
use futures::TryStreamExt;
use std::collections::{HashMap, HashSet};
use zeroize::Zeroizing;

/// The part of a [`Vault`] only a sync client needs; see the module docs.
/// Borrow one with [`Vault::replica`]: it is a view, cheap to make and to
/// drop.
#[derive(Debug, Clone, Copy)]
pub struct Replica<'v> {
    pub(super) vault: &'v Vault,
}

/// What [`Replica::apply_remote_changes`] did with a page of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteApply {
    /// Changes that won by last-writer-wins and were written.
    pub applied: u64,
    /// Changes older than what the vault holds.
    pub superseded: u64,
    /// Changes stamped implausibly far ahead of this device's clock. They
    /// were not applied and the metadata was **not** written, so the same
    /// page is fetched again once the clock is right.
    pub skewed: Vec<(OpId, String)>,
    /// Changes that are not valid records (they cannot apply, ever).
    pub invalid: Vec<(OpId, String)>,
}

/// A change from elsewhere that [`Replica::admit_remote`] refused.
enum Refused {
    /// Stamped too far ahead of this device's clock (retry once it caught up).
    ClockSkew(OpId, String),
    /// Malformed: will never apply.
    Invalid(OpId, String),
}

impl Vault {
    /// The replica handle: outbox, remote changes, sync metadata and key
    /// envelope operations, for the sync client.
    pub fn replica(&self) -> Replica<'_> {
        Replica { vault: self }
    }
}

impl Replica<'_> {
    /// The current time of the vault's clock (the one its writes are
    /// stamped with).
    pub fn now(&self) -> Timestamp {
        self.vault.time.now()
    }

    /// The KDF parameters new passphrases get and the policy unlocking
    /// accepts, as the vault was opened with.
    pub fn kdf_settings(&self) -> (KdfParams, KdfPolicy) {
        (self.vault.kdf, self.vault.kdf_policy)
    }

    /// Up to `limit` pending changes, oldest first, ready to push.
    pub async fn pending_changes(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        Ok(self.vault.store.outbox(limit.max(1)).await?)
    }

    /// Marks pushed changes as delivered.
    pub async fn acknowledge(&self, seqs: &[u64]) -> Result<()> {
        Ok(self.vault.store.acknowledge(seqs).await?)
    }

    /// Parks outbox entries the server refused (by sequence number, as
    /// read from [`Replica::pending_changes`]), in one atomic write. A
    /// parked change stays in the outbox — unsynced for resync and
    /// retention — but is not pushed until [`Replica::unpark`]. An entry
    /// replaced by a newer local write since it was read is not parked
    /// (the newer change is pending).
    pub async fn park(&self, refused: Vec<(u64, ParkReason)>) -> Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (seq, reason) in refused {
            batch.push(WriteOp::Park(seq, reason));
        }
        self.vault.store.write(batch).await?;
        Ok(())
    }

    /// Parked changes in outbox order after `after` (a
    /// [`ParkedEntry::seq`]), at most `limit`.
    pub async fn parked_changes(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ParkedEntry>> {
        Ok(self.vault.store.parked(after, limit.max(1)).await?)
    }

    /// Every parked change, in outbox order.
    pub async fn all_parked_changes(&self) -> Result<Vec<ParkedEntry>> {
        let mut all = Vec::new();
        loop {
            let page = self
                .parked_changes(all.last().map(|p: &ParkedEntry| p.seq), 500)
                .await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// Makes a record's parked change pending again (a retry), writing
    /// `meta` in the same batch. Nothing happens if it has none.
    pub async fn unpark(&self, id: RecordId, meta: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Unpark(id));
        for (key, value) in meta {
            batch.push(meta_op(&key, value)?);
        }
        self.vault.store.write(batch).await?;
        Ok(())
    }

    /// Drops a parked change for good (the user discarded it): the record
    /// stays in this vault, unsynced. Takes the entry's sequence number, so
    /// a newer local write of the record made since it was listed stays
    /// pending.
    pub async fn discard_parked(&self, seq: u64) -> Result<()> {
        Ok(self.vault.store.acknowledge(&[seq]).await?)
    }

    /// How many changes are pending (to be pushed) and parked (refused,
    /// waiting for the user).
    pub async fn outbox_counts(&self) -> Result<(u64, u64)> {
        let usage = self.vault.store.usage().await?;
        Ok((usage.pending_changes, usage.parked_changes))
    }

    /// Applies changes that came from elsewhere (another device through the
    /// server, or an import) by last-writer-wins on their versions, in one
    /// atomic write. A change that loses to what the vault holds is counted
    /// as superseded; one that is malformed or stamped implausibly far in
    /// the future is rejected with a reason; neither stops the others.
    pub async fn apply_changes(&self, changes: Vec<Change>) -> Result<ApplyReport> {
        let (batch, refused) = self.admit_remote(changes, None);
        let outcome = if batch.is_empty() {
            Default::default()
        } else {
            self.vault.commit(batch).await?
        };
        Ok(ApplyReport {
            applied: outcome.merged,
            superseded: outcome.superseded,
            rejected: refused
                .into_iter()
                .map(|r| match r {
                    Refused::ClockSkew(op, why) | Refused::Invalid(op, why) => (op, why),
                })
                .collect(),
        })
    }

    /// Turns changes from elsewhere into [`WriteOp::Merge`] operations,
    /// folding their stamps into this device's clock. Changes stamped
    /// implausibly far ahead, or malformed, are refused (in input order)
    /// and never reach the batch.
    ///
    /// The bound is measured against `reference` when given (the server's
    /// time, for pulled changes: the server admitted them against its own
    /// clock, so a device whose clock runs slow must not refuse them), and
    /// against this device's clock otherwise — whichever is later.
    fn admit_remote(
        &self,
        changes: Vec<Change>,
        reference: Option<Timestamp>,
    ) -> (WriteBatch, Vec<Refused>) {
        let mut refused = Vec::new();
        let mut batch = WriteBatch::new();
        let device_now = self.vault.time.now();
        let now = reference.map_or(device_now, |r| r.max(device_now));
        for change in changes {
            let op_id = change.op_id;
            let observed = self.vault.lock_clock().observe(change.version, now);
            if let Err(e) = observed {
                refused.push(match e {
                    CoreError::ClockSkew { .. } => Refused::ClockSkew(op_id, e.to_string()),
                    other => Refused::Invalid(op_id, other.to_string()),
                });
                continue;
            }
            // A conversation's deletion covers its messages stamped at or
            // below it even if a newer version of the conversation wins
            // (core's rule); a recreated conversation names the deletion
            // this device may never have seen. What is covered goes first.
            let covered = match (&change.kind, &change.op) {
                (EntityKind::Conversation, ChangeOp::Upsert(p)) => p
                    .deleted_through
                    .map(|through| (change.entity_id.conversation(), through)),
                (EntityKind::Conversation, ChangeOp::Delete(_)) => {
                    Some((change.entity_id.conversation(), change.version))
                }
                _ => None,
            };
            match change.into_incoming() {
                Ok(incoming) => {
                    if let Some((conversation, through)) = covered {
                        batch.push(WriteOp::CoverMessages(conversation, through));
                    }
                    batch.push(WriteOp::Merge(incoming));
                }
                Err(e) => refused.push(Refused::Invalid(op_id, e.to_string())),
            }
        }
        (batch, refused)
    }

    /// A sync-owned metadata value (`key` starts with `sync.`).
    pub async fn sync_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_sync_key(key)?;
        Ok(self.vault.store.meta(key).await?)
    }

    /// Sets (or with `None` removes) a sync-owned metadata value.
    pub async fn set_sync_meta(&self, key: &str, value: Option<Vec<u8>>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.push(meta_op(key, value)?);
        self.vault.store.write(batch).await?;
        Ok(())
    }

    /// A sync-owned secret stored with [`set_sealed_sync_meta`]: opened with
    /// the vault's keyring. `None` when absent; an error when it does not
    /// open (moved from another key or vault, or damaged).
    ///
    /// [`set_sealed_sync_meta`]: Replica::set_sealed_sync_meta
    pub async fn sealed_sync_meta(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let keyring = self.keyring()?;
        match self.sync_meta(key).await? {
            None => Ok(None),
            Some(blob) => Ok(Some(Zeroizing::new(
                keyring.open(&RecordAad::new(SEALED_META_KIND, key), &blob)?,
            ))),
        }
    }

    /// Sets (or with `None` removes) a sync-owned secret — a session token,
    /// say — sealed under the vault's current data key and bound to `key`
    /// (a value moved to another key or vault does not open). Only an
    /// encrypted vault keeps secrets: a plaintext one answers
    /// [`VaultError::NotEncrypted`].
    pub async fn set_sealed_sync_meta(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        let keyring = self.keyring()?;
        let sealed = value
            .map(|v| keyring.seal(&RecordAad::new(SEALED_META_KIND, key), v))
            .transpose()?;
        self.set_sync_meta(key, sealed).await
    }

    fn keyring(&self) -> Result<std::sync::Arc<chatvault_crypto::Keyring>> {
        self.vault.codec.keyring().ok_or(VaultError::NotEncrypted)
    }

    /// Applies changes pulled from the server by last-writer-wins (as
    /// [`Replica::apply_changes`]) and writes `meta` (typically the new pull
    /// cursor) **in the same atomic write**, so a crash never leaves a
    /// cursor ahead of the changes it covers.
    ///
    /// If any change is stamped too far ahead of this device's clock, it is
    /// reported in [`RemoteApply::skewed`], the others still apply, and
    /// `meta` is not written: the caller fetches the page again once the
    /// clock is right (applying twice is harmless). Invalid changes never
    /// hold `meta` back (they cannot apply, ever).
    pub async fn apply_remote_changes(
        &self,
        changes: Vec<Change>,
        meta: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<RemoteApply> {
        self.apply_pulled_changes(changes, meta, None).await
    }

    /// [`Replica::apply_remote_changes`] for changes pulled from a server
    /// whose time (`server_now`, from its answer) is known: a change counts
    /// as stamped too far ahead only if it is too far ahead of the later of
    /// the server's time and this device's clock.
    pub async fn apply_pulled_changes(
        &self,
        changes: Vec<Change>,
        meta: Vec<(String, Option<Vec<u8>>)>,
        server_now: Option<Timestamp>,
    ) -> Result<RemoteApply> {
        let mut report = RemoteApply::default();
        let (mut batch, refused) = self.admit_remote(changes, server_now);
        for r in refused {
            match r {
                Refused::ClockSkew(op, why) => report.skewed.push((op, why)),
                Refused::Invalid(op, why) => report.invalid.push((op, why)),
            }
        }
        if report.skewed.is_empty() {
            for (key, value) in meta {
                batch.push(meta_op(&key, value)?);
            }
        }
        if !batch.is_empty() {
            let outcome = self.vault.commit(batch).await?;
            report.applied = outcome.merged;
            report.superseded = outcome.superseded;
        }
        Ok(report)
    }

    /// Queues a record's current state (its upsert, or its tombstone) for
    /// sync again under a fresh op id, writing `meta` in the same batch.
    /// `false` (and nothing written) if the vault holds neither the record
    /// nor its tombstone any more.
    pub async fn requeue_record(
        &self,
        kind: EntityKind,
        id: RecordId,
        meta: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<bool> {
        let conversation_id = match kind {
            EntityKind::Conversation => {
                let live = self
                    .vault
                    .store
                    .conversation(id.conversation())
                    .await?
                    .is_some();
                if !live && self.vault.store.tombstone(kind, id).await?.is_none() {
                    return Ok(false);
                }
                None
            }
            EntityKind::Message => match self.vault.store.message(id.message()).await? {
                Some(m) => Some(m.conversation_id),
                None => match self.vault.store.tombstone(kind, id).await? {
                    Some(t) => t.conversation_id,
                    None => return Ok(false),
                },
            },
        };
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Enqueue(outbox_item(kind, id, conversation_id)));
        for (key, value) in meta {
            batch.push(meta_op(&key, value)?);
        }
        self.vault.commit(batch).await?;
        Ok(true)
    }

    /// After a resync from a server snapshot: drops every local record the
    /// snapshot did not list (`listed`), unless it — or, for a
    /// conversation, one of its messages — has a pending or parked change,
    /// or changed since it was read. The server listed only live records,
    /// so the dropped ones were deleted elsewhere while this device was
    /// behind. Returns how many records were dropped. Nothing is queued
    /// for sync.
    ///
    /// The records are read a page at a time, but whether each may go is
    /// decided inside the one write that deletes them
    /// ([`WriteOp::ForgetUnlessPending`]): a local write committed while
    /// the walk ran is never deleted.
    ///
    /// Each dropped record keeps a local tombstone at its own version, so a
    /// stale copy of that version arriving later cannot bring it back.
    pub async fn forget_records_missing_from(
        &self,
        listed: &HashSet<(EntityKind, RecordId)>,
    ) -> Result<u64> {
        let now = self.vault.time.now();
        let mut batch = WriteBatch::new();
        let mut pages = std::pin::pin!(self.vault.conversation_row_pages());
        while let Some(rows) = pages.try_next().await? {
            for row in rows {
                let id = row.record.id;
                let key = (EntityKind::Conversation, RecordId::from(id));
                if !listed.contains(&key) {
                    // Its messages go with it (unless the store finds
                    // unsynced work in it, and then they all stay).
                    batch.push(WriteOp::ForgetUnlessPending(Tombstone::conversation(
                        id,
                        row.record.version,
                        now,
                    )));
                }
                // Unlisted messages go one by one, so those of a kept
                // conversation go too.
                self.forget_messages_missing_from(id, listed, now, &mut batch)
                    .await?;
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        // Conversations first: one forgotten takes its messages along, and
        // their own operations then find nothing, so the count is of
        // conversations and of messages dropped on their own.
        batch.ops.sort_by_key(|op| match op {
            WriteOp::ForgetUnlessPending(t) => t.kind != EntityKind::Conversation,
            _ => true,
        });
        Ok(self.vault.commit(batch).await?.forgotten)
    }

    async fn forget_messages_missing_from(
        &self,
        conversation: ConversationId,
        listed: &HashSet<(EntityKind, RecordId)>,
        now: Timestamp,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let mut pages = std::pin::pin!(self.vault.message_record_pages(conversation));
        while let Some(messages) = pages.try_next().await? {
            for m in messages {
                let key = (EntityKind::Message, RecordId::from(m.id));
                if !listed.contains(&key) {
                    batch.push(WriteOp::ForgetUnlessPending(Tombstone::message(
                        m.id,
                        conversation,
                        m.version,
                        now,
                    )));
                }
            }
        }
        Ok(())
    }

    /// During a rebuild from the snapshot of a server whose database was
    /// restored from a backup: drops from `changes` (a snapshot page) every
    /// conversation version that would replace a tombstone of it this
    /// vault holds without naming that deletion (`deletedThrough` below
    /// it). The server lost the deletion with the restore, and the
    /// recreation reached it first: merged now, the tombstone would be gone
    /// before [`Replica::requeue_records_missing_from`] could push it back,
    /// and with it the only cover of the conversation's messages stamped
    /// before it (core's deletion rule). Withheld, the tombstone stays,
    /// is pushed back (the snapshot does not list it), and the server
    /// answers with the recreation carrying its mark.
    pub async fn withhold_recreations_hiding_deletions(
        &self,
        changes: Vec<Change>,
    ) -> Result<Vec<Change>> {
        let mut kept = Vec::with_capacity(changes.len());
        for change in changes {
            let ChangeOp::Upsert(payload) = &change.op else {
                kept.push(change);
                continue;
            };
            if change.kind == EntityKind::Conversation {
                let tombstone = self
                    .vault
                    .store
                    .tombstone(EntityKind::Conversation, change.entity_id)
                    .await?;
                if let Some(t) = tombstone {
                    if t.version < change.version
                        && payload.deleted_through.is_none_or(|d| d < t.version)
                    {
                        tracing::debug!(
                            id = %change.entity_id,
                            deleted = %t.version,
                            "the restored server lacks this deletion; pushing it back first"
                        );
                        continue;
                    }
                }
            }
            kept.push(change);
        }
        Ok(kept)
    }

    /// After a rebuild from the snapshot of a server whose database was
    /// restored from a backup: the deletion marks of live conversations
    /// ([`Store::deletion_mark`](chatvault_store::Store::deletion_mark))
    /// that the snapshot does not name (`named`: each listed
    /// conversation's `deletedThrough`), as conversation tombstones at the
    /// marks' own stamps (nothing is re-stamped) under fresh op ids, to be
    /// pushed back. Once every device applied a recreation, a mark is the
    /// only record of the deletion; a server restored from before it lost
    /// it and lists the messages it covers again. Pushed, each tombstone
    /// is `superseded` by the recreation, but the server drops the
    /// messages it covers and serves the recreation again with the mark.
    /// Conversations held as tombstones are not included: their tombstones
    /// are queued by [`Replica::requeue_records_missing_from`].
    pub async fn deletion_marks_missing_from(
        &self,
        named: &HashMap<ConversationId, Hlc>,
    ) -> Result<Vec<Change>> {
        let mut marks = Vec::new();
        let mut pages = std::pin::pin!(self.vault.conversation_row_pages());
        while let Some(rows) = pages.try_next().await? {
            for row in rows {
                let id = row.record.id;
                let Some(mark) = self.vault.store.deletion_mark(id).await? else {
                    continue;
                };
                if named.get(&id).is_none_or(|through| *through < mark) {
                    tracing::debug!(%id, %mark, "the restored server lacks this deletion mark; pushing it back");
                    // The mark keeps no deletion time: its stamp's wall time
                    // is when it was made.
                    let deleted_at = Timestamp(i64::try_from(mark.wall_ms()).unwrap_or(i64::MAX));
                    marks.push(Change::delete(
                        OpId::new(),
                        &Tombstone::conversation(id, mark, deleted_at),
                    ));
                }
            }
        }
        Ok(marks)
    }

    /// After a rebuild from the snapshot of a server whose database was
    /// restored from a backup: queues for sync again (under fresh op ids,
    /// at their own versions — nothing is re-stamped) every record and
    /// tombstone this vault holds — messages kept under a conversation
    /// tombstone (stamped after the deletion) included — that the
    /// snapshot (`listed`: each live
    /// record's version on the server) lacks or holds at an older version.
    /// The server then takes back, by its usual newer-wins rule, what it
    /// lost with the restore; nothing is deleted here. Records with a
    /// parked change are left to the user (the parked change already holds
    /// them; re-queueing would quietly retry it). Returns how many records
    /// were queued.
    pub async fn requeue_records_missing_from(
        &self,
        listed: &HashMap<(EntityKind, RecordId), Hlc>,
    ) -> Result<u64> {
        let parked: HashSet<RecordId> = self
            .all_parked_changes()
            .await?
            .into_iter()
            .map(|p| p.change.entity_id)
            .collect();
        let lacks = |kind: EntityKind, id: RecordId, version: Hlc| {
            !parked.contains(&id) && listed.get(&(kind, id)).is_none_or(|v| *v < version)
        };
        let mut queued = 0u64;
        let mut pages = std::pin::pin!(self.vault.conversation_row_pages());
        while let Some(rows) = pages.try_next().await? {
            let mut batch = WriteBatch::new();
            for row in rows {
                let id = row.record.id;
                if lacks(EntityKind::Conversation, id.into(), row.record.version) {
                    batch.push(WriteOp::Enqueue(outbox_item(
                        EntityKind::Conversation,
                        id.into(),
                        None,
                    )));
                }
                let mut messages = std::pin::pin!(self.vault.message_record_pages(id));
                while let Some(page) = messages.try_next().await? {
                    for m in page {
                        if lacks(EntityKind::Message, m.id.into(), m.version) {
                            batch.push(WriteOp::Enqueue(outbox_item(
                                EntityKind::Message,
                                m.id.into(),
                                Some(id),
                            )));
                        }
                    }
                }
            }
            queued += self.commit_enqueues(batch).await?;
        }
        // Deletions made after the backup are gone from the server too;
        // the snapshot lists no tombstones, so every one is sent (the
        // server keeps whichever version is newer).
        let mut after = None;
        loop {
            let page = self
                .vault
                .store
                .tombstones(&TombstoneQuery { after, limit: 500 })
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some((last.kind, last.id));
            let mut batch = WriteBatch::new();
            for t in page {
                if lacks(t.kind, t.id, t.version) {
                    batch.push(WriteOp::Enqueue(outbox_item(
                        t.kind,
                        t.id,
                        t.conversation_id,
                    )));
                }
                // A deleted conversation keeps its messages stamped after
                // the deletion (unlisted until a recreation; core's
                // deletion rule): records too, which the walk through live
                // conversations above never reaches, and which the server
                // may have lost with the restore.
                if t.kind == EntityKind::Conversation {
                    let id = t.id.conversation();
                    let mut messages = std::pin::pin!(self.vault.message_record_pages(id));
                    while let Some(page) = messages.try_next().await? {
                        for m in page {
                            if lacks(EntityKind::Message, m.id.into(), m.version) {
                                batch.push(WriteOp::Enqueue(outbox_item(
                                    EntityKind::Message,
                                    m.id.into(),
                                    Some(id),
                                )));
                            }
                        }
                    }
                }
            }
            queued += self.commit_enqueues(batch).await?;
        }
        Ok(queued)
    }

    /// Commits a batch of enqueues; how many it held.
    async fn commit_enqueues(&self, batch: WriteBatch) -> Result<u64> {
        let n = batch.ops.len() as u64;
        if n > 0 {
            self.vault.commit(batch).await?;
        }
        Ok(n)
    }

    /// Queues every live record for sync again (under fresh op ids), a
    /// page at a time (parked changes become pending: the new account gets
    /// its own first try). After unlinking from
    /// one account, the next account receives the whole vault, not only
    /// what was never acknowledged. Returns how many records were queued.
    pub async fn requeue_everything(&self) -> Result<u64> {
        let mut queued = 0u64;
        let mut pages = std::pin::pin!(self.vault.conversation_row_pages());
        while let Some(rows) = pages.try_next().await? {
            for row in rows {
                let id = row.record.id;
                let mut batch = WriteBatch::new();
                batch.push(WriteOp::Enqueue(outbox_item(
                    EntityKind::Conversation,
                    id.into(),
                    None,
                )));
                let mut messages = std::pin::pin!(self.vault.message_record_pages(id));
                while let Some(page) = messages.try_next().await? {
                    for m in page {
                        batch.push(WriteOp::Enqueue(outbox_item(
                            EntityKind::Message,
                            m.id.into(),
                            Some(id),
                        )));
                    }
                }
                queued += batch.ops.len() as u64;
                self.vault.commit(batch).await?;
            }
        }
        Ok(queued)
    }

    /// The sync server this vault syncs with, if one is configured.
    pub async fn sync_remote(&self) -> Result<Option<String>> {
        match self.vault.store.meta(meta_keys::SYNC_REMOTE).await? {
            None => Ok(None),
            Some(bytes) => {
                String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| VaultError::CorruptMetadata {
                        key: meta_keys::SYNC_REMOTE,
                        reason: "not text".into(),
                    })
            }
        }
    }

    /// Configures (or, with `None`, forgets) the sync server. While one is
    /// configured, retention keeps every conversation with changes it has
    /// not acknowledged.
    pub async fn set_sync_remote(&self, remote: Option<&str>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.push(match remote {
            Some(url) if url.trim().is_empty() => {
                return Err(VaultError::Invalid(CoreError::Invalid {
                    field: "sync remote",
                    reason: "must not be empty".into(),
                }))
            }
            Some(url) => WriteOp::SetMeta(meta_keys::SYNC_REMOTE.into(), url.as_bytes().to_vec()),
            None => WriteOp::DeleteMeta(meta_keys::SYNC_REMOTE.into()),
        });
        self.vault.store.write(batch).await?;
        Ok(())
    }
}

/// The record kind in the associated data of sealed metadata values.
const SEALED_META_KIND: &str = "meta";

fn check_sync_key(key: &str) -> Result<()> {
    let prefix = meta_keys::SYNC_PREFIX;
    if !key.starts_with(prefix) || key.len() == prefix.len() || key == meta_keys::SYNC_REMOTE {
        return Err(VaultError::Invalid(CoreError::Invalid {
            field: "sync metadata key",
            reason: format!("{key:?} is not a sync-owned key (sync.*, other than sync.remote)"),
        }));
    }
    Ok(())
}

fn meta_op(key: &str, value: Option<Vec<u8>>) -> Result<WriteOp> {
    check_sync_key(key)?;
    Ok(match value {
        Some(v) => WriteOp::SetMeta(key.to_owned(), v),
        None => WriteOp::DeleteMeta(key.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, MemoryStore, NewConversation, NewMessage, Role, VaultOptions};
    use chatvault_crypto::{KeyEnvelope, PassphraseKeys};
    use chatvault_store::Store;
    use std::sync::Arc;

    const PASS: &str = "correct horse";

    fn options() -> VaultOptions {
        VaultOptions {
            clock: Arc::new(ManualClock::new(Timestamp(1_700_000_000_000))),
            kdf: KdfParams::insecure_fast_for_tests(),
            kdf_policy: KdfPolicy::insecure_allow_weak_for_tests(),
            ..VaultOptions::default()
        }
    }

    /// Opens `store` on an account's key envelope, as a joining device does.
    async fn join(store: Arc<dyn Store>, envelope: &str, passphrase: &str) -> Result<Vault> {
        Vault::builder()
            .store(store)
            .options(options())
            .account_envelope(envelope)
            .passphrase(passphrase)
            .open()
            .await
    }

    async fn encrypted() -> (Arc<dyn Store>, Vault) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let vault = Vault::open_encrypted(store.clone(), PASS, options())
            .await
            .unwrap();
        (store, vault)
    }

    #[tokio::test]
    async fn keys_key_is_where_the_vault_keeps_its_envelope() {
        let (store, vault) = encrypted().await;
        let json = vault.replica().key_envelope_json().await.unwrap().unwrap();
        assert_eq!(
            store.meta(meta_keys::KEYS).await.unwrap().unwrap(),
            json.as_bytes()
        );
        assert!(KeyEnvelope::from_json(&json).is_ok());
    }

    #[tokio::test]
    async fn sync_meta_is_confined_to_sync_keys() {
        let (_, vault) = encrypted().await;
        vault
            .replica()
            .set_sync_meta("sync.cursor", Some(b"v1.3".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            vault
                .replica()
                .sync_meta("sync.cursor")
                .await
                .unwrap()
                .unwrap(),
            b"v1.3"
        );
        for bad in ["vault.keys", "sync.", "sync.remote", "cursor"] {
            assert!(vault.replica().sync_meta(bad).await.is_err(), "{bad}");
            assert!(
                vault.replica().set_sync_meta(bad, None).await.is_err(),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn sealed_sync_meta_opens_only_under_its_key_and_vault() {
        let (store, vault) = encrypted().await;
        let replica = vault.replica();
        replica
            .set_sealed_sync_meta("sync.session", Some(b"token-123"))
            .await
            .unwrap();
        let raw = store.meta("sync.session").await.unwrap().unwrap();
        assert!(!raw.windows(9).any(|w| w == b"token-123"), "stored sealed");
        assert_eq!(
            replica
                .sealed_sync_meta("sync.session")
                .await
                .unwrap()
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"token-123"[..])
        );
        // Moved to another key: refused, not misread.
        replica
            .set_sync_meta("sync.other", Some(raw.clone()))
            .await
            .unwrap();
        assert!(replica.sealed_sync_meta("sync.other").await.is_err());
        // Another vault's data key cannot open it.
        let (_, other) = encrypted().await;
        other
            .replica()
            .set_sync_meta("sync.session", Some(raw))
            .await
            .unwrap();
        assert!(other
            .replica()
            .sealed_sync_meta("sync.session")
            .await
            .is_err());
        // Removed, and a plaintext vault keeps no secrets.
        replica
            .set_sealed_sync_meta("sync.session", None)
            .await
            .unwrap();
        assert!(replica
            .sealed_sync_meta("sync.session")
            .await
            .unwrap()
            .is_none());
        let plain = Vault::open(Arc::new(MemoryStore::new()), options())
            .await
            .unwrap();
        assert!(matches!(
            plain
                .replica()
                .set_sealed_sync_meta("sync.session", Some(b"x"))
                .await,
            Err(VaultError::NotEncrypted)
        ));
        assert!(
            replica.sealed_sync_meta("vault.keys").await.is_err(),
            "sync keys only"
        );
    }

    #[tokio::test]
    async fn a_second_device_opens_on_the_same_data_key() {
        let (_, a) = encrypted().await;
        let conv = a
            .create_conversation(NewConversation::titled("shared"))
            .await
            .unwrap();
        a.add_message(conv.id, NewMessage::new(Role::User, "hi"))
            .await
            .unwrap();
        let envelope = a.replica().key_envelope_json().await.unwrap().unwrap();

        let store_b: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let b = join(store_b.clone(), &envelope, PASS).await.unwrap();
        assert_ne!(a.device_id(), b.device_id());
        let changes = a
            .replica()
            .pending_changes(10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.change)
            .collect();
        let report = b
            .replica()
            .apply_remote_changes(changes, vec![("sync.cursor".into(), Some(b"c".to_vec()))])
            .await
            .unwrap();
        assert_eq!(report.applied, 2);
        assert_eq!(b.conversation(conv.id).await.unwrap().title, "shared");
        assert_eq!(
            b.replica().sync_meta("sync.cursor").await.unwrap().unwrap(),
            b"c"
        );

        // Reopened with the passphrase alone, it is an ordinary vault.
        drop(b);
        let b = Vault::open_encrypted(store_b, PASS, options())
            .await
            .unwrap();
        assert_eq!(b.conversation(conv.id).await.unwrap().title, "shared");

        // A wrong passphrase opens nothing.
        let err = join(Arc::new(MemoryStore::new()), &envelope, "nope")
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::WrongPassphrase), "{err:?}");
    }

    #[tokio::test]
    async fn another_accounts_envelope_is_refused() {
        let (store, a) = encrypted().await;
        a.create_conversation(NewConversation::titled("mine"))
            .await
            .unwrap();
        let (_, other) = encrypted().await;
        let foreign = other.replica().key_envelope_json().await.unwrap().unwrap();
        drop(a);
        let err = join(store.clone(), &foreign, PASS).await.unwrap_err();
        assert!(err.to_string().contains("another account"), "{err}");
        assert!(matches!(err, VaultError::ForeignAccountKey), "{err:?}");
        // The vault still opens as before.
        Vault::open_encrypted(store, PASS, options()).await.unwrap();
    }

    #[tokio::test]
    async fn a_prepared_passphrase_change_commits_and_can_be_adopted_elsewhere() {
        let (store, a) = encrypted().await;
        a.create_conversation(NewConversation::titled("kept"))
            .await
            .unwrap();
        let envelope = a.replica().key_envelope_json().await.unwrap().unwrap();
        let store_b: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let b = join(store_b.clone(), &envelope, PASS).await.unwrap();

        assert!(matches!(
            a.replica()
                .prepare_passphrase_change("wrong", "new pass")
                .await,
            Err(VaultError::WrongPassphrase)
        ));
        let change = a
            .replica()
            .prepare_passphrase_change(PASS, "new pass")
            .await
            .unwrap();
        // Nothing is stored until committed.
        assert_eq!(
            a.replica().key_envelope_json().await.unwrap().unwrap(),
            envelope
        );
        a.replica().commit_passphrase_change(&change).await.unwrap();
        assert!(matches!(
            a.replica().commit_passphrase_change(&change).await,
            Err(VaultError::EnvelopeChanged)
        ));
        drop(a);
        assert!(Vault::open_encrypted(store.clone(), PASS, options())
            .await
            .is_err());
        Vault::open_encrypted(store, "new pass", options())
            .await
            .unwrap();

        // Device B adopts the new envelope with keys for its salt.
        let keys = PassphraseKeys::derive_with_policy(
            "new pass",
            change.kdf(),
            change.salt(),
            KdfPolicy::insecure_allow_weak_for_tests(),
        )
        .unwrap();
        assert!(b
            .replica()
            .adopt_key_envelope(&change.envelope_json(), &keys)
            .await
            .unwrap());
        assert!(!b
            .replica()
            .adopt_key_envelope(&change.envelope_json(), &keys)
            .await
            .unwrap());
        drop(b);
        Vault::open_encrypted(store_b, "new pass", options())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn skewed_remote_changes_hold_the_cursor_back() {
        let (_, a) = encrypted().await;
        let conv = a
            .create_conversation(NewConversation::titled("x"))
            .await
            .unwrap();
        let mut change = a
            .replica()
            .pending_changes(1)
            .await
            .unwrap()
            .remove(0)
            .change;
        let far = a.replica().now().as_millis() as u64 + 3 * 3_600_000;
        change.version = chatvault_core::Hlc::new(far, 0, a.device_id()).unwrap();
        let (_, b) = encrypted().await;
        let report = b
            .replica()
            .apply_remote_changes(
                vec![change],
                vec![("sync.cursor".into(), Some(b"c".to_vec()))],
            )
            .await
            .unwrap();
        assert_eq!(report.skewed.len(), 1);
        assert_eq!(b.replica().sync_meta("sync.cursor").await.unwrap(), None);
        assert!(b.conversation(conv.id).await.is_err());
    }

    #[tokio::test]
    async fn requeue_and_forget_respect_pending_changes() {
        let (_, v) = encrypted().await;
        let kept = v
            .create_conversation(NewConversation::titled("listed"))
            .await
            .unwrap();
        let m = v
            .add_message(kept.id, NewMessage::new(Role::User, "unlisted"))
            .await
            .unwrap();
        let gone = v
            .create_conversation(NewConversation::titled("deleted elsewhere"))
            .await
            .unwrap();
        let pending_only = v
            .create_conversation(NewConversation::titled("not pushed yet"))
            .await
            .unwrap();
        let orphaned = v
            .add_message(
                pending_only.id,
                NewMessage::new(Role::User, "deleted elsewhere"),
            )
            .await
            .unwrap();
        // Everything but the last conversation was pushed.
        let seqs: Vec<u64> = v
            .replica()
            .pending_changes(10)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.change.entity_id != RecordId::from(pending_only.id))
            .map(|e| e.seq)
            .collect();
        v.replica().acknowledge(&seqs).await.unwrap();

        let listed: HashSet<_> = [(EntityKind::Conversation, RecordId::from(kept.id))].into();
        assert_eq!(
            v.replica()
                .forget_records_missing_from(&listed)
                .await
                .unwrap(),
            3
        );
        assert!(v.message(orphaned.id).await.is_err());
        assert!(v.conversation(kept.id).await.is_ok());
        assert!(v.message(m.id).await.is_err());
        assert!(v.conversation(gone.id).await.is_err());
        assert!(v.conversation(pending_only.id).await.is_ok());
        assert_eq!(v.replica().pending_changes(10).await.unwrap().len(), 1);

        assert!(v
            .replica()
            .requeue_record(EntityKind::Conversation, kept.id.into(), vec![])
            .await
            .unwrap());
        // A dropped record's tombstone can be queued; an unknown id cannot.
        assert!(v
            .replica()
            .requeue_record(EntityKind::Message, m.id.into(), vec![])
            .await
            .unwrap());
        assert!(!v
            .replica()
            .requeue_record(
                EntityKind::Message,
                RecordId::from(chatvault_core::MessageId::new()),
                vec![]
            )
            .await
            .unwrap());
        assert_eq!(v.replica().pending_changes(10).await.unwrap().len(), 3);
        assert!(v
            .replica()
            .requeue_record(EntityKind::Message, orphaned.id.into(), vec![])
            .await
            .unwrap());
    }
}
