//! Runs the key-value conformance suite against the in-memory area. Test
//! names read `memory::kv_<case>`.

use chatvault_store::testing::KvBackend;
use chatvault_store::{KvLimits, KvResult, KvStore, MemoryKvArea};
use std::sync::Arc;

/// One fresh area per test: its namespaces share it as a browser origin's
/// storage is shared.
struct Memory(MemoryKvArea);

impl KvBackend for Memory {
    async fn open(&self, name: &str, limits: KvLimits) -> KvResult<Arc<dyn KvStore>> {
        Ok(Arc::new(self.0.namespace(name, limits)?))
    }
}

async fn backend() -> Memory {
    Memory(MemoryKvArea::new())
}

mod memory {
    chatvault_store::kv_conformance_tests!(#[tokio::test], crate::backend);
}
