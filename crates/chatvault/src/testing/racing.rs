//! A store wrapper that lands a write between an operation's read and its
//! write: after the next read of a record it applies a prepared batch (a
//! pulled change, another process's edit) to the wrapped store, before
//! handing the read back. The way to prove that a local write never
//! replaces a version it did not read.
//!
//! Must never change what the wrapped store answers except by that one
//! prepared write.

use async_trait::async_trait;
use chatvault_core::{
    ConversationId, EntityKind, Hlc, MessageId, MessageRecord, RecordId, Tombstone,
};
use chatvault_store::{
    BatchSource, Compaction, ConversationQuery, ConversationRow, Footprint, MessageQuery,
    OutboxEntry, Result, Store, TombstoneQuery, Usage, WriteBatch, WriteOutcome,
};
use std::sync::{Arc, Mutex};

/// Wraps a store; see the module docs.
pub struct RacingStore {
    inner: Arc<dyn Store>,
    /// Written right after the next single-record read.
    pending: Mutex<Option<WriteBatch>>,
}

impl std::fmt::Debug for RacingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RacingStore")
            .field("backend", &self.inner.backend())
            .finish_non_exhaustive()
    }
}

impl RacingStore {
    /// A wrapper that passes everything through until [`race`](Self::race)
    /// is called.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            pending: Mutex::new(None),
        }
    }

    /// Writes `batch` to the wrapped store right after the next read of a
    /// conversation or message (once).
    pub fn race(&self, batch: WriteBatch) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(batch);
    }

    /// Whether the prepared write has happened.
    pub fn raced(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    async fn land(&self) -> Result<()> {
        let batch = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(batch) = batch {
            self.inner.write(batch).await?;
        }
        Ok(())
    }
}

#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
impl Store for RacingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRow>> {
        let read = self.inner.conversation(id).await;
        self.land().await?;
        read
    }
    async fn conversations(&self, query: &ConversationQuery) -> Result<Vec<ConversationRow>> {
        self.inner.conversations(query).await
    }
    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>> {
        let read = self.inner.message(id).await;
        self.land().await?;
        read
    }
    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageRecord>> {
        self.inner.messages(query).await
    }
    async fn tombstone(&self, kind: EntityKind, id: RecordId) -> Result<Option<Tombstone>> {
        self.inner.tombstone(kind, id).await
    }
    async fn deletion_mark(&self, id: ConversationId) -> Result<Option<Hlc>> {
        self.inner.deletion_mark(id).await
    }
    async fn tombstones(&self, query: &TombstoneQuery) -> Result<Vec<Tombstone>> {
        self.inner.tombstones(query).await
    }
    async fn usage(&self) -> Result<Usage> {
        self.inner.usage().await
    }
    async fn write(&self, batch: WriteBatch) -> Result<WriteOutcome> {
        self.inner.write(batch).await
    }
    async fn write_all(&self, source: BatchSource) -> Result<WriteOutcome> {
        self.inner.write_all(source).await
    }
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.inner.outbox(limit).await
    }
    async fn parked(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<chatvault_store::ParkedEntry>> {
        self.inner.parked(after, limit).await
    }
    async fn acknowledge(&self, seqs: &[u64]) -> Result<()> {
        self.inner.acknowledge(seqs).await
    }
    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.meta(key).await
    }
    async fn meta_entries(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<chatvault_store::MetaEntry>> {
        self.inner.meta_entries(after, limit).await
    }
    async fn all_messages(
        &self,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        self.inner.all_messages(after, limit).await
    }
    async fn deletion_marks(
        &self,
        after: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<chatvault_store::DeletionMark>> {
        self.inner.deletion_marks(after, limit).await
    }
    async fn outbox_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<chatvault_store::StoredOutboxEntry>> {
        self.inner.outbox_entries(after, limit).await
    }
    async fn clear(&self) -> Result<()> {
        self.inner.clear().await
    }
    async fn footprint(&self) -> Result<Option<Footprint>> {
        self.inner.footprint().await
    }
    async fn compact(&self) -> Result<Option<Compaction>> {
        self.inner.compact().await
    }
}
