//! SQLite on OPFS refuses a page's main thread (wasm-bindgen-test in
//! headless Chromium, on the page itself): OPFS sync access handles exist
//! only in dedicated workers, and the error says so and names the way out.

#![cfg(target_family = "wasm")]

use chatvault_sqlite::{SqliteOptions, SqliteStore};
use chatvault_store::StoreError;
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn opening_on_the_main_thread_fails_clearly() {
    let err = SqliteStore::open("main-thread.db", SqliteOptions::default())
        .await
        .expect_err("no OPFS sync access handles on the main thread");
    assert!(matches!(err, StoreError::Unsupported(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("dedicated Web Worker"), "{text}");
    assert!(text.contains("IndexedDB"), "{text}");
}
