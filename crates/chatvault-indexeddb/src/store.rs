//! The store itself: opening (and upgrading) the database, and the
//! [`Store`] trait over the `read` and `write` modules.

use crate::idb::{self, store_error, wait, DomError};
use crate::schema::{self, SCHEMA_VERSION};
use crate::{read, storage_manager, write};
use async_trait::async_trait;
use chatvault_core::{
    ConversationId, EntityKind, Hlc, MessageId, MessageRecord, RecordId, Tombstone,
};
use chatvault_store::{
    BatchSource, ConversationQuery, ConversationRow, DeletionMark, Footprint, MessageQuery,
    MetaEntry, OutboxEntry, ParkedEntry, Result, Store, StoredOutboxEntry, TombstoneQuery, Usage,
    WriteBatch, WriteOutcome,
};
use wasm_bindgen::closure::Closure;
use web_sys::{Event, IdbDatabase};

/// How hard a commit works to be durable (IndexedDB's transaction
/// `durability` hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `"strict"`: a write is reported done only once the browser has
    /// flushed it to disk.
    #[default]
    Strict,
    /// `"relaxed"`: done once the browser has it; the last commits may be
    /// lost if the machine loses power. Faster.
    Relaxed,
}

impl Durability {
    fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Relaxed => "relaxed",
        }
    }
}

/// How to open an [`IndexedDbStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexedDbOptions {
    /// Commit durability of writes.
    pub durability: Durability,
    /// A cap on the stored record bodies: a write that would grow them
    /// past this many bytes fails with
    /// [`StoreError::Full`](chatvault_store::StoreError::Full) and changes
    /// nothing. `None`: only the browser's quota limits the store.
    pub max_bytes: Option<u64>,
}

/// A chatvault store in one IndexedDB database.
pub struct IndexedDbStore {
    db: IdbDatabase,
    name: String,
    options: IndexedDbOptions,
    /// Closes this connection when another one needs a newer version, so
    /// an upgrading tab is never blocked by this one.
    _on_version_change: Closure<dyn FnMut(Event)>,
}

impl std::fmt::Debug for IndexedDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedDbStore")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish()
    }
}

impl IndexedDbStore {
    /// Opens (creating or upgrading as needed) the database `name`.
    pub async fn open(name: &str, options: IndexedDbOptions) -> Result<Self> {
        let (db, on_version_change) =
            idb::open_database(name, SCHEMA_VERSION, schema::upgrade).await?;
        tracing::debug!(name, version = SCHEMA_VERSION, "opened the IndexedDB store");
        Ok(Self {
            db,
            name: name.to_owned(),
            options,
            _on_version_change: on_version_change,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the database `name` and everything in it. Waits until every
    /// open connection to it has closed (dropping an [`IndexedDbStore`]
    /// closes its connection).
    pub async fn delete(name: &str) -> Result<()> {
        let request = idb::factory()?
            .delete_database(name)
            .map_err(|e| store_error("deleting the database", DomError::from_js(&e)))?;
        wait(&request)
            .await
            .map(|_| ())
            .map_err(|e| store_error("deleting the database", e))
    }
}

impl Drop for IndexedDbStore {
    fn drop(&mut self) {
        self.db.set_onversionchange(None);
        self.db.close();
    }
}

#[async_trait(?Send)]
impl Store for IndexedDbStore {
    fn backend(&self) -> &'static str {
        "indexeddb"
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRow>> {
        read::conversation(&self.db, id).await
    }

    async fn conversations(&self, query: &ConversationQuery) -> Result<Vec<ConversationRow>> {
        read::conversations(&self.db, query).await
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>> {
        read::message(&self.db, id).await
    }

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageRecord>> {
        read::messages(&self.db, query).await
    }

    async fn tombstone(&self, kind: EntityKind, id: RecordId) -> Result<Option<Tombstone>> {
        read::tombstone(&self.db, kind, id).await
    }

    async fn deletion_mark(&self, id: ConversationId) -> Result<Option<Hlc>> {
        read::deletion_mark(&self.db, id).await
    }

    async fn tombstones(&self, query: &TombstoneQuery) -> Result<Vec<Tombstone>> {
        read::tombstones(&self.db, query).await
    }

    async fn usage(&self) -> Result<Usage> {
        read::usage(&self.db).await
    }

    /// `used_bytes` is the body bytes of the vault's live records (what
    /// the store tracks in `totals`, the figure
    /// [`IndexedDbOptions::max_bytes`] caps), not what IndexedDB spends on
    /// keys, indexes and its own files: the browser reports usage only for
    /// the whole origin. That origin-wide `navigator.storage.estimate()`
    /// bounds the rest: `quota_bytes` is the smaller of `max_bytes` and
    /// the origin's quota, `available_bytes` the smaller of what is left
    /// of each. `persistent` is `navigator.storage.persisted()`.
    /// `reclaimable_bytes` is 0: IndexedDB compacts its files by itself.
    /// Works in a page and in a Web Worker; without `navigator.storage`
    /// the browser's figures are unknown (`None`, not persistent).
    async fn footprint(&self) -> Result<Option<Footprint>> {
        let used_bytes = read::stored_bytes(&self.db).await?;
        let estimate = storage_manager::estimate().await;
        let persistent = storage_manager::persisted().await;
        let cap = self.options.max_bytes;
        let origin_left = estimate
            .quota
            .zip(estimate.usage)
            .map(|(quota, usage)| quota.saturating_sub(usage));
        let cap_left = cap.map(|max| max.saturating_sub(used_bytes));
        Ok(Some(Footprint {
            used_bytes,
            reclaimable_bytes: 0,
            available_bytes: smaller(origin_left, cap_left),
            quota_bytes: smaller(estimate.quota, cap),
            persistent,
        }))
    }

    async fn write(&self, batch: WriteBatch) -> Result<WriteOutcome> {
        if batch.is_empty() {
            return Ok(WriteOutcome::default());
        }
        self.write_all(Box::new(std::iter::once(Ok(batch)))).await
    }

    async fn write_all(&self, source: BatchSource) -> Result<WriteOutcome> {
        write::write_all(
            &self.db,
            self.options.durability.as_str(),
            self.options.max_bytes,
            source,
        )
        .await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        read::outbox(&self.db, limit).await
    }

    async fn parked(&self, after: Option<u64>, limit: usize) -> Result<Vec<ParkedEntry>> {
        read::parked(&self.db, after, limit).await
    }

    async fn acknowledge(&self, seqs: &[u64]) -> Result<()> {
        write::acknowledge(&self.db, self.options.durability.as_str(), seqs).await
    }

    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        read::meta(&self.db, key).await
    }

    async fn meta_entries(&self, after: Option<&str>, limit: usize) -> Result<Vec<MetaEntry>> {
        read::meta_entries(&self.db, after, limit).await
    }

    async fn all_messages(
        &self,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        read::all_messages(&self.db, after, limit).await
    }

    async fn deletion_marks(
        &self,
        after: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<DeletionMark>> {
        read::deletion_marks(&self.db, after, limit).await
    }

    async fn outbox_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOutboxEntry>> {
        read::outbox_entries(&self.db, after, limit).await
    }

    async fn clear(&self) -> Result<()> {
        write::clear(&self.db, self.options.durability.as_str()).await
    }
}

/// The smaller of two limits, either of which may be unknown.
fn smaller(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use js_sys::Reflect;
    use wasm_bindgen::JsValue;
    use wasm_bindgen_test::wasm_bindgen_test;

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    async fn writes_open_with_the_durability_of_the_options() {
        let name = format!("chatvault-unit-durability-{}", js_sys::Math::random());
        let store = IndexedDbStore::open(&name, IndexedDbOptions::default())
            .await
            .expect("open");
        for durability in [Durability::Strict, Durability::Relaxed] {
            let tx = idb::readwrite(&store.db, &[schema::META], durability.as_str())
                .expect("a readwrite transaction");
            let asked = Reflect::get(&tx, &JsValue::from_str("durability")).expect("durability");
            assert_eq!(asked.as_string().as_deref(), Some(durability.as_str()));
            let _ = tx.abort();
        }
        drop(store);
        IndexedDbStore::delete(&name).await.expect("delete");
    }
}
