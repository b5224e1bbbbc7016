//! One owner per origin (wasm-bindgen-test in a dedicated worker of
//! headless Chromium): while another worker — another tab — holds the OPFS
//! pool, opening a store fails with `StoreError::Busy` and says what to do,
//! instead of opening a second, unsynchronised copy of the databases.
//!
//! A binary of its own: the rule is about the worker's first open, which
//! in a shared binary another test would already have made.

#![cfg(target_family = "wasm")]

use chatvault_sqlite::{SqliteOptions, SqliteStore};
use chatvault_store::StoreError;
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// Starts a plain-JS worker that takes the pool's lock file (as the pool
/// of another tab does) and resolves once it holds it.
async fn another_tab_holds_the_pool() {
    let start = js_sys::Function::new_no_args(
        r#"
        const source = `
            (async () => {
                const root = await navigator.storage.getDirectory();
                const pool = await root.getDirectoryHandle(".chatvault-sqlite", { create: true });
                const lock = await pool.getFileHandle(".lock", { create: true });
                self.held = await lock.createSyncAccessHandle();
                postMessage("held");
            })().catch((e) => postMessage("failed: " + e));
        `;
        const worker = new Worker(URL.createObjectURL(new Blob([source])));
        self.otherTab = worker;
        return new Promise((resolve, reject) => {
            worker.onmessage = (e) => (e.data === "held" ? resolve() : reject(new Error(e.data)));
            worker.onerror = (e) => reject(new Error(e.message));
        });
        "#,
    );
    let promise: js_sys::Promise = start
        .call0(&wasm_bindgen::JsValue::UNDEFINED)
        .expect("start the other worker")
        .into();
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .expect("the other worker holds the pool's lock");
}

#[wasm_bindgen_test]
async fn a_pool_held_by_another_worker_makes_opening_busy() {
    another_tab_holds_the_pool().await;
    let err = SqliteStore::open("owned-elsewhere.db", SqliteOptions::default())
        .await
        .expect_err("the pool belongs to the other worker");
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    let source = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    assert!(
        source.contains("another tab or worker of this site has the SQLite store open"),
        "{source}"
    );
    assert!(source.contains("NoModificationAllowedError"), "{source}");
}
