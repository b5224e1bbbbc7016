//! A fault-injecting store wrapper: passes everything through to the
//! wrapped backend until told to fail, then fails writes as a full disk
//! would — the way to prove that an operation interrupted at its write
//! leaves the old state intact (redb tests its storage the same way). It
//! can also run a caller's step (another writer's commit) just before its
//! next message read, to prove that an operation reading in pages and
//! writing later does not lose what was committed in between.

use async_trait::async_trait;
use chatvault_core::{
    ConversationId, EntityKind, Hlc, MessageId, MessageRecord, RecordId, Tombstone,
};
use chatvault_store::{
    BatchSource, Compaction, ConversationQuery, ConversationRow, Footprint, MessageQuery,
    OutboxEntry, Result, Store, StoreError, TombstoneQuery, Usage, WriteBatch, WriteOutcome,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A step [`FailingStore::before_next_message_read`] runs.
#[cfg(not(target_family = "wasm"))]
pub type Interleaved = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;
/// A step [`FailingStore::before_next_message_read`] runs (no `Send` in a
/// browser, where stores hold JS handles).
#[cfg(target_family = "wasm")]
pub type Interleaved = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>>>;

/// Wraps a store and fails its writes on demand.
pub struct FailingStore {
    inner: Arc<dyn Store>,
    /// Writes still allowed before every further write fails.
    allowed: AtomicU64,
    /// Runs (once) before the next `messages` read is passed through.
    interleaved: Mutex<Option<Interleaved>>,
}

impl std::fmt::Debug for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailingStore")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl FailingStore {
    /// A wrapper that lets every write through until
    /// [`fail_after`](Self::fail_after) is called.
    pub fn new(inner: impl Store + 'static) -> Self {
        Self::shared(Arc::new(inner))
    }

    /// [`new`](Self::new) for a store that is already shared (a backend
    /// handed out as `Arc<dyn Store>`).
    pub fn shared(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            allowed: AtomicU64::new(u64::MAX),
            interleaved: Mutex::new(None),
        }
    }

    /// Runs `step` (typically a write by another vault on the same data)
    /// just before the next `messages` read reaches the wrapped store.
    pub fn before_next_message_read(&self, step: Interleaved) {
        *self.interleaved.lock().unwrap_or_else(|p| p.into_inner()) = Some(step);
    }

    /// Lets `n` more writes through, then fails every write after them.
    pub fn fail_after(&self, n: u64) {
        self.allowed.store(n, Ordering::SeqCst);
    }

    /// Lets every write through again.
    pub fn heal(&self) {
        self.allowed.store(u64::MAX, Ordering::SeqCst);
    }

    fn admit(&self) -> Result<()> {
        let allowed = self
            .allowed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match allowed {
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::full("injected failure")),
        }
    }
}

#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
impl Store for FailingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRow>> {
        self.inner.conversation(id).await
    }
    async fn conversations(&self, query: &ConversationQuery) -> Result<Vec<ConversationRow>> {
        self.inner.conversations(query).await
    }
    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>> {
        self.inner.message(id).await
    }
    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageRecord>> {
        let step = self
            .interleaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(step) = step {
            step().await;
        }
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
        self.admit()?;
        self.inner.write(batch).await
    }
    async fn write_all(&self, source: BatchSource) -> Result<WriteOutcome> {
        self.admit()?;
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
        self.admit()?;
        self.inner.acknowledge(seqs).await
    }
    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.meta(key).await
    }
    async fn clear(&self) -> Result<()> {
        self.admit()?;
        self.inner.clear().await
    }
    async fn footprint(&self) -> Result<Option<Footprint>> {
        self.inner.footprint().await
    }
    async fn compact(&self) -> Result<Option<Compaction>> {
        self.inner.compact().await
    }
}
