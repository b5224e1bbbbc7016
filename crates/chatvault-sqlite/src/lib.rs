//! chatvault's native store: one SQLite file in WAL mode, through rusqlite.
//!
//! [`SqliteStore`] implements [`chatvault_store::Store`]. Every
//! [`WriteBatch`](chatvault_store::WriteBatch) is one SQLite transaction, so
//! a record and its outbox entry commit together or not at all. Blocking
//! SQLite calls run on tokio's blocking pool so they never stall the async
//! runtime.
//!
//! # Durability
//! [`Durability::Full`] (the default) runs `synchronous=FULL`: when a write
//! returns `Ok`, it is on disk and survives a process crash *and* a power
//! loss. [`Durability::Normal`] (opt-in) runs `synchronous=NORMAL`: a write
//! that returned survives a process crash (`kill -9`), but the last
//! transactions may be lost on power loss or an OS crash; commits are
//! cheaper because the WAL is synced only at checkpoints.
//!
//! # Layout
//! - [`SqliteStore`], [`SqliteOptions`], [`Durability`] (this file).
//! - `schema` — the DDL, the schema version and opening checks.
//! - `ops` — queries and batch application.
//! - `convert` — rusqlite errors to [`StoreError`](chatvault_store::StoreError), row decoding.

mod convert;
mod ops;
mod schema;

pub use schema::SCHEMA_VERSION;

use async_trait::async_trait;
use chatvault_core::{ConversationId, EntityKind, MessageId, MessageRecord, RecordId, Tombstone};
use chatvault_store::{
    BatchSource, ConversationQuery, ConversationRow, MessageQuery, OutboxEntry, Result, Store,
    StoreError, Usage, WriteBatch, WriteOutcome,
};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How hard a commit works to be durable. See the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: acknowledged means on disk, even across power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives process crashes; may lose the last
    /// commits on power loss. Faster commits.
    Normal,
}

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Create the file if it does not exist (otherwise a missing file is an
    /// error).
    pub create: bool,
    /// A quota: writes that would grow the database file past this many
    /// bytes fail with [`StoreError::Full`] and change nothing.
    pub max_bytes: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            create: true,
            max_bytes: None,
        }
    }
}

/// A chatvault store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl SqliteStore {
    /// Opens (or, with `options.create`, creates) the store at `path`,
    /// checks that it is a chatvault store of a version this build supports
    /// and creates the schema of a new one.
    pub async fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let opened_path = path.clone();
        let conn = blocking(move || schema::open(&opened_path, options)).await?;
        tracing::debug!(path = %path.display(), ?options, "opened sqlite store");
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the store occupies on disk: the database file plus its WAL.
    pub fn file_size(&self) -> u64 {
        let wal = {
            let mut p = self.path.as_os_str().to_owned();
            p.push("-wal");
            PathBuf::from(p)
        };
        [self.path.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        blocking(move || {
            // A panic inside a transaction rolls it back when the
            // transaction is dropped, so a poisoned lock holds no half-write.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
    }
}

/// Runs blocking work on tokio's blocking pool when inside a runtime,
/// inline otherwise.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Backend(format!("store worker failed: {e}")))?,
        Err(_) => f(),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRow>> {
        self.with_conn(move |c| ops::conversation(c, id)).await
    }

    async fn conversations(&self, query: &ConversationQuery) -> Result<Vec<ConversationRow>> {
        let query = query.clone();
        self.with_conn(move |c| ops::conversations(c, &query)).await
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>> {
        self.with_conn(move |c| ops::message(c, id)).await
    }

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageRecord>> {
        let query = query.clone();
        self.with_conn(move |c| ops::messages(c, &query)).await
    }

    async fn tombstone(&self, kind: EntityKind, id: RecordId) -> Result<Option<Tombstone>> {
        self.with_conn(move |c| ops::tombstone(c, kind, id)).await
    }

    async fn usage(&self) -> Result<Usage> {
        self.with_conn(ops::usage).await
    }

    async fn write(&self, batch: WriteBatch) -> Result<WriteOutcome> {
        self.with_conn(move |c| ops::write(c, batch)).await
    }

    async fn write_all(&self, source: BatchSource) -> Result<WriteOutcome> {
        self.with_conn(move |c| ops::write_all(c, source)).await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.with_conn(move |c| ops::outbox(c, limit)).await
    }

    async fn acknowledge(&self, seqs: &[u64]) -> Result<()> {
        let seqs = seqs.to_vec();
        self.with_conn(move |c| ops::acknowledge(c, &seqs)).await
    }

    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.with_conn(move |c| ops::meta(c, &key)).await
    }

    async fn clear(&self) -> Result<()> {
        self.with_conn(ops::clear).await
    }
}
