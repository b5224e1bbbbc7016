//! A fault-injecting store wrapper: passes everything through to the
//! wrapped backend until told to fail, then fails writes as a full disk
//! would — the way to prove that an operation interrupted at its write
//! leaves the old state intact (redb tests its storage the same way). It
//! also counts every call (reads and writes) and can fail exactly the Nth
//! ([`FailingStore::fail_nth`]): the fault-injection sweep of
//! `tests/faults.rs` counts a scenario's calls once, then fails each in
//! turn. It can also run a caller's step (another writer's commit) just
//! before its next message read, to prove that an operation reading in
//! pages and writing later does not lose what was committed in between.

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
    /// Calls made so far (reads and writes).
    calls: AtomicU64,
    /// The 1-based number of the one call to fail; 0: none.
    fail_call: AtomicU64,
    /// Whether that call (a write) first goes through, then fails: the
    /// write committed but its answer was lost.
    fail_after_call: std::sync::atomic::AtomicBool,
    /// The numbers of the calls that were writes.
    write_calls: Mutex<Vec<u64>>,
}

impl std::fmt::Debug for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailingStore")
            .field("allowed", &self.allowed)
            .field("calls", &self.calls)
            .field("fail_call", &self.fail_call)
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
            calls: AtomicU64::new(0),
            fail_call: AtomicU64::new(0),
            fail_after_call: std::sync::atomic::AtomicBool::new(false),
            write_calls: Mutex::new(Vec::new()),
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

    /// Fails call number `n` (1-based, counting every read and write
    /// since the wrapper was made) with [`StoreError::Backend`] and no other.
    pub fn fail_nth(&self, n: u64) {
        self.fail_after_call.store(false, Ordering::SeqCst);
        self.fail_call.store(n, Ordering::SeqCst);
    }

    /// Lets call number `n`, a write, reach the wrapped store, then
    /// answers it with [`StoreError::Backend`]: the write committed but
    /// the caller was told it failed (an acknowledgement lost on the way).
    pub fn fail_nth_after_it_commits(&self, n: u64) {
        self.fail_after_call.store(true, Ordering::SeqCst);
        self.fail_call.store(n, Ordering::SeqCst);
    }

    /// The numbers of the calls so far that were writes (`write`,
    /// `write_all`, `acknowledge`, `clear`, `compact`).
    pub fn write_calls(&self) -> Vec<u64> {
        self.write_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many calls (reads and writes) reached the wrapper so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Counts a call and fails it if it is the one [`fail_nth`](Self::fail_nth) chose.
    fn count(&self) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_call.load(Ordering::SeqCst) {
            return Err(injected(n));
        }
        Ok(())
    }

    /// Counts a write: `Err` if it is to fail before reaching the store,
    /// `Ok(Some(n))` if it is to fail after.
    fn count_write(&self) -> Result<Option<u64>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.write_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(n);
        if n != self.fail_call.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if self.fail_after_call.load(Ordering::SeqCst) {
            Ok(Some(n))
        } else {
            Err(injected(n))
        }
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

fn injected(n: u64) -> StoreError {
    StoreError::Backend {
        detail: format!("injected failure of store call {n}"),
        source: None,
    }
}

/// `result`, or the injected failure if the call was chosen to fail after
/// it went through.
fn answer<T>(result: Result<T>, lost: Option<u64>) -> Result<T> {
    match lost {
        Some(n) => result.and(Err(injected(n))),
        None => result,
    }
}

#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
impl Store for FailingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRow>> {
        self.count()?;
        self.inner.conversation(id).await
    }
    async fn conversations(&self, query: &ConversationQuery) -> Result<Vec<ConversationRow>> {
        self.count()?;
        self.inner.conversations(query).await
    }
    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>> {
        self.count()?;
        self.inner.message(id).await
    }
    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageRecord>> {
        self.count()?;
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
        self.count()?;
        self.inner.tombstone(kind, id).await
    }
    async fn deletion_mark(&self, id: ConversationId) -> Result<Option<Hlc>> {
        self.count()?;
        self.inner.deletion_mark(id).await
    }
    async fn tombstones(&self, query: &TombstoneQuery) -> Result<Vec<Tombstone>> {
        self.count()?;
        self.inner.tombstones(query).await
    }
    async fn usage(&self) -> Result<Usage> {
        self.count()?;
        self.inner.usage().await
    }
    async fn write(&self, batch: WriteBatch) -> Result<WriteOutcome> {
        let lost = self.count_write()?;
        self.admit()?;
        answer(self.inner.write(batch).await, lost)
    }
    async fn write_all(&self, source: BatchSource) -> Result<WriteOutcome> {
        let lost = self.count_write()?;
        self.admit()?;
        answer(self.inner.write_all(source).await, lost)
    }
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.count()?;
        self.inner.outbox(limit).await
    }
    async fn parked(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<chatvault_store::ParkedEntry>> {
        self.count()?;
        self.inner.parked(after, limit).await
    }
    async fn acknowledge(&self, seqs: &[u64]) -> Result<()> {
        let lost = self.count_write()?;
        self.admit()?;
        answer(self.inner.acknowledge(seqs).await, lost)
    }
    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.count()?;
        self.inner.meta(key).await
    }
    async fn meta_entries(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<chatvault_store::MetaEntry>> {
        self.count()?;
        self.inner.meta_entries(after, limit).await
    }
    async fn all_messages(
        &self,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        self.count()?;
        self.inner.all_messages(after, limit).await
    }
    async fn deletion_marks(
        &self,
        after: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<chatvault_store::DeletionMark>> {
        self.count()?;
        self.inner.deletion_marks(after, limit).await
    }
    async fn outbox_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<chatvault_store::StoredOutboxEntry>> {
        self.count()?;
        self.inner.outbox_entries(after, limit).await
    }
    async fn clear(&self) -> Result<()> {
        let lost = self.count_write()?;
        self.admit()?;
        answer(self.inner.clear().await, lost)
    }
    async fn footprint(&self) -> Result<Option<Footprint>> {
        self.count()?;
        self.inner.footprint().await
    }
    async fn compact(&self) -> Result<Option<Compaction>> {
        let lost = self.count_write()?;
        answer(self.inner.compact().await, lost)
    }
}
