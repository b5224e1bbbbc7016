//! Runs the Store conformance suite against the in-memory backend. Test
//! names read `memory::<case>`.

use chatvault_store::testing::StoreBackend;
use chatvault_store::{MemoryStore, Result, Store};
use std::sync::Arc;

/// One in-memory store; "reopening" hands back the same store, which is
/// all the persistence memory has.
struct Memory(Arc<MemoryStore>);

impl StoreBackend for Memory {
    async fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(self.0.clone())
    }

    async fn open_with_quota(&self, bytes: u64) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(MemoryStore::with_quota(bytes)))
    }
}

async fn backend() -> Memory {
    Memory(Arc::new(MemoryStore::new()))
}

mod memory {
    chatvault_store::store_conformance_tests!(#[tokio::test], crate::backend);
}
