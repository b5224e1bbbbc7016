//! Runs the Store conformance suite against the SQLite backend. Test names
//! read `sqlite::<case>`.

// Native files in temporary directories; the browser runs tests/opfs.rs.
#![cfg(not(target_family = "wasm"))]

use chatvault_sqlite::{SqliteOptions, SqliteStore};
use chatvault_store::testing::StoreBackend;
use chatvault_store::{Result, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// A SQLite file in a temporary directory; reopening opens a new
/// connection to the same file.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn path(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }
}

impl StoreBackend for Sqlite {
    async fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(
            SqliteStore::open(self.path(), SqliteOptions::default()).await?,
        ))
    }

    async fn open_with_quota(&self, bytes: u64) -> Result<Arc<dyn Store>> {
        let options = SqliteOptions {
            max_bytes: Some(bytes),
            ..SqliteOptions::default()
        };
        Ok(Arc::new(
            SqliteStore::open(self.dir.path().join("quota.db"), options).await?,
        ))
    }
}

async fn backend() -> Sqlite {
    // The fixture cannot return an error; a missing temp dir is a broken
    // test machine, not a finding about the store.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    Sqlite { dir }
}

mod sqlite {
    chatvault_store::store_conformance_tests!(#[tokio::test], crate::backend);
}
