//! chatvault's storage contract.
//!
//! A [`Store`] keeps records exactly as it is handed them: a clear header
//! (ids, timestamps, version) and an opaque body it never interprets — in an
//! encrypted vault the body is ciphertext, and the store cannot tell. It also
//! keeps the **outbox**: every local write names the records it changed, in
//! the same atomic [`WriteBatch`], so a change is never lost between the
//! write and its sync.
//!
//! The trait is deliberately small (a handful of reads, one atomic write) so
//! every backend — memory, SQLite, IndexedDB — implements the same contract
//! and one conformance suite proves it, and so a test can wrap any backend
//! with fault injection.
//!
//! Decisions (which version wins, what to encrypt) are not made here: the
//! `chatvault` facade makes them with `chatvault-core`'s rules and hands the
//! store the outcome.
//!
//! # Layout
//! - [`Store`] and its request/response types (this file and `types`).
//! - [`MemoryStore`] — the in-memory backend (tests, ephemeral sessions).
//! - [`copy_store`] — a vault's store copied, exactly and in batches, into
//!   another (a migration between backends).
//! - [`kv`] — key-value state beside the records ([`KvStore`], the
//!   in-memory [`MemoryKv`]), for settings and UI state.
//! - [`StoreError`].
//! - [`testing`] (feature `testing`) — the conformance suites every backend
//!   runs (Store, and key-value).
//!
//! # Proving a new backend
//! A backend crate runs the Store conformance suite from its tests: enable
//! this crate's `testing` feature in its dev-dependencies, implement
//! [`testing::StoreBackend`] (open the same data again; open fresh storage
//! with a quota) and instantiate one test per case:
//!
//! ```ignore
//! async fn backend() -> MyBackend { MyBackend::new() }
//! mod my_backend {
//!     chatvault_store::store_conformance_tests!(#[tokio::test], crate::backend);
//! }
//! ```
//!
//! In a browser the attribute is `#[wasm_bindgen_test::wasm_bindgen_test]`;
//! the cases themselves need no runtime.

mod copy;
mod error;
pub mod kv;
mod memory;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use copy::{
    copy_store, CopyOptions, CopyPhase, CopyProgress, CopyProgressSink, CopyReport,
    MIGRATION_MARK_KEY,
};
pub use error::{BoxError, StoreError};
pub use kv::{KvError, KvLimits, KvResult, KvStore, KvUsage, MemoryKv, MemoryKvArea};
pub use memory::MemoryStore;
pub use types::{
    check_limit, import_wins, incoming_key, incoming_outbox_item, incoming_parent, incoming_wins,
    merged_op, parse_clock_mark, version_matches, Compaction, ConversationQuery, ConversationRow,
    ConversationUsage, DeletionMark, Footprint, LocalVersion, MessageQuery, MetaEntry, OutboxEntry,
    OutboxItem, ParkReason, ParkedEntry, StampClaim, StoredOutboxEntry, TombstoneQuery, Usage,
    WriteBatch, WriteOp, WriteOutcome, CLOCK_MARK_KEY,
};

use async_trait::async_trait;
use chatvault_core::{
    ConversationId, EntityKind, Hlc, MessageId, MessageRecord, RecordId, Tombstone,
};

/// What every [`Store`] method returns: errors are [`StoreError`]s.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage contract every backend implements.
///
/// Reads see every batch whose [`Store::write`] returned `Ok`. A batch is
/// atomic: after a crash, either all of it is visible or none of it is.
#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
pub trait Store: MaybeSendSync {
    /// A short name for logs and test output (`"memory"`, `"sqlite"`).
    fn backend(&self) -> &'static str;

    /// One conversation, if it exists (tombstoned ones do not).
    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRow>>;

    /// Conversations, most recent activity first, filtered and paged by
    /// `query`.
    async fn conversations(&self, query: &ConversationQuery) -> Result<Vec<ConversationRow>>;

    /// One message, if it exists.
    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>>;

    /// Messages of one conversation, newest first, paged back in time.
    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageRecord>>;

    /// [`messages`](Self::messages) of a conversation that exists, or
    /// `None` if it does not (never created, or deleted) — what a page
    /// read needs, in one call: a backend that runs its reads on another
    /// thread answers both in one trip (each trip was a third of a page
    /// read's time on the native store).
    async fn conversation_messages(
        &self,
        query: &MessageQuery,
    ) -> Result<Option<Vec<MessageRecord>>> {
        if self.conversation(query.conversation_id).await?.is_none() {
            return Ok(None);
        }
        self.messages(query).await.map(Some)
    }

    /// The tombstone left by deleting a record, if any.
    async fn tombstone(&self, kind: EntityKind, id: RecordId) -> Result<Option<Tombstone>>;

    /// The conversation's **deletion mark**: the highest stamp it was
    /// deleted at here — the later of its conversation tombstone, while it
    /// has one, and every deletion applied as [`WriteOp::CoverMessages`]
    /// or tombstone a recreation ([`WriteOp::PutConversation`]) replaced —
    /// and `None` if it never was deleted. Unlike the tombstone, the mark
    /// outlives the recreation; merged messages stamped at or below it
    /// lose (core's deletion rule, `chatvault_core::resolve_incoming`). It
    /// never goes down, except that a tombstone replaced by a lower one (a
    /// local deletion re-stamped after a `clock_skew` refusal, which never
    /// reached the server at its first stamp) counts at its new stamp.
    /// [`Store::clear`] forgets it.
    async fn deletion_mark(&self, id: ConversationId) -> Result<Option<Hlc>>;

    /// Every tombstone, a page at a time in `(kind, id)` order (export).
    /// Every backend should list them; the default, for wrappers and
    /// partial backends, refuses rather than pretend there are none (an
    /// export without its deletions would resurrect records).
    async fn tombstones(&self, query: &TombstoneQuery) -> Result<Vec<Tombstone>> {
        let _ = query;
        Err(StoreError::Unsupported(format!(
            "the {} store cannot list its tombstones",
            self.backend()
        )))
    }

    /// Record counts and stored sizes.
    async fn usage(&self) -> Result<Usage>;

    /// The room the store takes and has left (files, free disk or quota,
    /// persistence). `None` when the backend cannot tell.
    async fn footprint(&self) -> Result<Option<Footprint>> {
        Ok(None)
    }

    /// Gives free space inside the store back to the system (SQLite:
    /// checkpoint the WAL, `VACUUM`), so the files shrink after large
    /// deletions. `None` when the backend has nothing to compact.
    async fn compact(&self) -> Result<Option<Compaction>> {
        Ok(None)
    }

    /// Applies a batch atomically.
    async fn write(&self, batch: WriteBatch) -> Result<WriteOutcome>;

    /// Applies every batch `source` yields as **one** atomic write (bulk
    /// import: the source streams from a file so memory stays flat). If the
    /// source yields an error, nothing is written and that error returned.
    async fn write_all(&self, source: BatchSource) -> Result<WriteOutcome>;

    /// Pending outbox changes, oldest first, at most `limit`. Each is built
    /// from the record's current state, so a record has at most one.
    /// Parked changes ([`WriteOp::Park`]) are not listed.
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>>;

    /// Parked outbox changes in sequence order, after `after` (exclusive),
    /// at most `limit`. Built from the records' current state, like
    /// [`Store::outbox`].
    async fn parked(&self, after: Option<u64>, limit: usize) -> Result<Vec<ParkedEntry>>;

    /// Removes delivered outbox entries by sequence number. An entry that
    /// was replaced by a newer change since it was read has a new sequence
    /// number and stays pending.
    async fn acknowledge(&self, seqs: &[u64]) -> Result<()>;

    /// A value from the store's small key-value metadata table.
    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Every metadata entry, a page at a time in key order, after `after`
    /// (exclusive): what a migration copies. A backend's own bookkeeping
    /// kept beside the vault's entries (a sequence counter) is not listed.
    /// The default refuses rather than pretend there are none.
    async fn meta_entries(&self, after: Option<&str>, limit: usize) -> Result<Vec<MetaEntry>> {
        let _ = (after, limit);
        Err(cannot_list(self.backend(), "metadata"))
    }

    /// Every message, a page at a time in id order, after `after`
    /// (exclusive) — including messages whose conversation is deleted or
    /// has not arrived, which no conversation's listing reaches. The
    /// default refuses.
    async fn all_messages(
        &self,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        let _ = (after, limit);
        Err(cannot_list(self.backend(), "messages by id"))
    }

    /// Every kept deletion mark ([`DeletionMark`]), a page at a time in
    /// conversation id order, after `after` (exclusive). The default
    /// refuses.
    async fn deletion_marks(
        &self,
        after: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<DeletionMark>> {
        let _ = (after, limit);
        Err(cannot_list(self.backend(), "deletion marks"))
    }

    /// Every outbox entry, pending and parked, as kept
    /// ([`StoredOutboxEntry`]), in sequence order after `after`
    /// (exclusive), at most `limit`. The default refuses.
    async fn outbox_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOutboxEntry>> {
        let _ = (after, limit);
        Err(cannot_list(self.backend(), "outbox entries"))
    }

    /// Deletes every record, tombstone, deletion mark and outbox entry;
    /// keeps metadata (the vault header and keys). Nothing is synced: this is a local wipe.
    async fn clear(&self) -> Result<()>;
}

/// The error of a listing a backend does not implement (the migration
/// listings' defaults).
fn cannot_list(backend: &str, what: &str) -> StoreError {
    StoreError::Unsupported(format!("the {backend} store cannot list its {what}"))
}

/// A stream of batches for [`Store::write_all`], produced synchronously
/// (it runs on the store's own thread).
#[cfg(not(target_family = "wasm"))]
pub type BatchSource = Box<dyn Iterator<Item = Result<WriteBatch>> + Send>;
/// A stream of batches for [`Store::write_all`], produced synchronously.
#[cfg(target_family = "wasm")]
pub type BatchSource = Box<dyn Iterator<Item = Result<WriteBatch>>>;

/// `Send + Sync` natively; nothing on wasm, where stores hold JS handles.
#[cfg(not(target_family = "wasm"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_family = "wasm"))]
impl<T: Send + Sync + ?Sized> MaybeSendSync for T {}
/// `Send + Sync` natively; nothing on wasm, where stores hold JS handles.
#[cfg(target_family = "wasm")]
pub trait MaybeSendSync {}
#[cfg(target_family = "wasm")]
impl<T: ?Sized> MaybeSendSync for T {}
