//! `Store::footprint` inside a dedicated Web Worker: `navigator.storage` is
//! read from the worker's global scope (there is no `window`).

#![cfg(target_family = "wasm")]

mod common;

use chatvault_store::Store;
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

#[wasm_bindgen_test]
async fn the_footprint_works_in_a_worker() {
    assert!(
        js_sys::Reflect::has(&js_sys::global(), &"window".into()) == Ok(false),
        "this test must run in a worker"
    );
    let dbs = common::Databases::new();
    let store = dbs.open().await.expect("open");
    let f = store.footprint().await.expect("footprint").expect("known");
    assert_eq!(f.used_bytes, 0);
    let quota = f
        .quota_bytes
        .expect("the browser's quota, read in the worker");
    assert!(f.available_bytes.is_some_and(|a| a <= quota), "{f:?}");
}
