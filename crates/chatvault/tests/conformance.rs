//! Runs the shared conformance suite against every native backend.

use chatvault::testing::TestBackend;
use chatvault::{MemoryStore, SqliteOptions, SqliteStore, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// One in-memory store; "reopening" returns the same store.
struct Memory(Arc<MemoryStore>);

impl TestBackend for Memory {
    async fn open(&self) -> Arc<dyn Store> {
        self.0.clone()
    }
    async fn open_with_quota(&self, bytes: u64) -> Arc<dyn Store> {
        Arc::new(MemoryStore::with_quota(bytes))
    }
}

async fn memory_backend() -> Memory {
    Memory(Arc::new(MemoryStore::new()))
}

/// A SQLite file in a temporary directory; reopening opens a new
/// connection to the same file.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn path(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }
}

impl TestBackend for Sqlite {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(self.path(), SqliteOptions::default())
                .await
                .expect("open sqlite store"),
        )
    }
    async fn open_with_quota(&self, bytes: u64) -> Arc<dyn Store> {
        let options = SqliteOptions {
            max_bytes: Some(bytes),
            ..SqliteOptions::default()
        };
        Arc::new(
            SqliteStore::open(self.dir.path().join("quota.db"), options)
                .await
                .expect("open sqlite store"),
        )
    }
}

async fn sqlite_backend() -> Sqlite {
    Sqlite {
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

mod memory {
    chatvault::vault_conformance_tests!(crate::memory_backend);
}

mod sqlite {
    chatvault::vault_conformance_tests!(crate::sqlite_backend);
}
