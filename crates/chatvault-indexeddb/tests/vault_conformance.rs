//! Runs the Vault conformance suite on IndexedDB in a browser, plain and
//! encrypted (the suite's fast test KDF parameters). Test names read
//! `indexeddb::plaintext::<case>` and `indexeddb::encrypted::<case>`.

#![cfg(target_family = "wasm")]

mod common;

use chatvault::testing::TestBackend;
use chatvault_store::Store;
use std::sync::Arc;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// One test's databases; reopening opens a new connection to the same one.
struct Idb(common::Databases);

impl TestBackend for Idb {
    async fn open(&self) -> Arc<dyn Store> {
        common::shared(self.0.open().await.expect("open the IndexedDB store"))
    }
    async fn open_with_quota(&self, bytes: u64) -> Arc<dyn Store> {
        common::shared(
            self.0
                .open_with_quota(bytes)
                .await
                .expect("open the capped IndexedDB store"),
        )
    }
}

async fn backend() -> Idb {
    Idb(common::Databases::new())
}

mod indexeddb {
    chatvault::vault_conformance_tests!(#[wasm_bindgen_test::wasm_bindgen_test], crate::backend);
}
