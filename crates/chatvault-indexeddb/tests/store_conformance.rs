//! Runs the Store conformance suite against IndexedDB in a browser
//! (`wasm-bindgen-test`, headless Chromium). Test names read
//! `indexeddb::<case>`; every test has its own database, deleted after.

#![cfg(target_family = "wasm")]

mod common;

use chatvault_store::testing::StoreBackend;
use chatvault_store::{Result, Store};
use std::sync::Arc;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// One test's databases; reopening opens a new connection to the same one.
struct Idb(common::Databases);

impl StoreBackend for Idb {
    async fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(common::shared(self.0.open().await?))
    }

    async fn open_with_quota(&self, bytes: u64) -> Result<Arc<dyn Store>> {
        Ok(common::shared(self.0.open_with_quota(bytes).await?))
    }
}

async fn backend() -> Idb {
    Idb(common::Databases::new())
}

mod indexeddb {
    chatvault_store::store_conformance_tests!(
        #[wasm_bindgen_test::wasm_bindgen_test],
        crate::backend
    );
}
