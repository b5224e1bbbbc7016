//! What the browser test files share: a fresh, uniquely named database for
//! each test, deleted when the test's fixture is dropped.

// Each test file uses part of this module.
#![allow(dead_code)]

use chatvault_indexeddb::{IndexedDbOptions, IndexedDbStore};
use chatvault_store::{Result, Store};
use std::cell::Cell;
use std::sync::Arc;

/// The store as the suites take it. The store API hands out
/// `Arc<dyn Store>` on every target; in a browser the store holds JS
/// handles (not `Send`) and the one thread makes the `Arc` a plain count.
#[allow(clippy::arc_with_non_send_sync)]
pub fn shared(store: IndexedDbStore) -> Arc<dyn Store> {
    Arc::new(store)
}

thread_local! {
    static NEXT: Cell<u32> = const { Cell::new(0) };
}

/// A database name no other test (or earlier run) uses.
pub fn unique_name(what: &str) -> String {
    let n = NEXT.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let nonce = (js_sys::Math::random() * 1e9) as u64;
    format!("chatvault-test-{what}-{n}-{nonce}")
}

/// Two databases of one test: the main one (reopened by `open`) and the
/// separate capped one (`open_with_quota`). Both are deleted on drop, once
/// the test's stores have closed their connections.
pub struct Databases {
    pub main: String,
    pub capped: String,
}

impl Databases {
    pub fn new() -> Self {
        Self {
            main: unique_name("main"),
            capped: unique_name("capped"),
        }
    }

    pub async fn open(&self) -> Result<IndexedDbStore> {
        IndexedDbStore::open(&self.main, IndexedDbOptions::default()).await
    }

    pub async fn open_with_quota(&self, bytes: u64) -> Result<IndexedDbStore> {
        let options = IndexedDbOptions {
            max_bytes: Some(bytes),
            ..IndexedDbOptions::default()
        };
        IndexedDbStore::open(&self.capped, options).await
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        for name in [self.main.clone(), self.capped.clone()] {
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(e) = IndexedDbStore::delete(&name).await {
                    tracing::warn!(name, error = %e, "could not delete a test database");
                }
            });
        }
    }
}
