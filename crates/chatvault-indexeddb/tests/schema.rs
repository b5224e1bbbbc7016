//! Schema versions in a browser: a database written by a newer chatvault
//! is refused clearly and left as it is; the current version reopens.

#![cfg(target_family = "wasm")]

mod common;

use chatvault_indexeddb::{IndexedDbOptions, IndexedDbStore, SCHEMA_VERSION};
use chatvault_store::StoreError;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;
use web_sys::{IdbDatabase, IdbFactory, IdbOpenDbRequest};

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn factory() -> IdbFactory {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
        .expect("indexedDB")
        .unchecked_into()
}

/// Opens `name` at `version` with the raw API (no chatvault involved).
async fn raw_open(name: &str, version: Option<u32>) -> IdbDatabase {
    let f = factory();
    let request: IdbOpenDbRequest = match version {
        Some(v) => f.open_with_u32(name, v),
        None => f.open(name),
    }
    .expect("open request");
    let done = js_sys::Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(done).await.expect("raw open");
    request.result().expect("open result").unchecked_into()
}

#[wasm_bindgen_test]
async fn a_database_from_a_newer_chatvault_is_refused_and_left_alone() {
    let dbs = common::Databases::new();
    // What a newer chatvault would leave: the next schema version.
    raw_open(&dbs.main, Some(SCHEMA_VERSION + 1)).await.close();

    let opened = IndexedDbStore::open(&dbs.main, IndexedDbOptions::default()).await;
    match opened {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let message = IndexedDbStore::open(&dbs.main, IndexedDbOptions::default())
        .await
        .expect_err("refused again")
        .to_string();
    assert!(message.contains("upgrade chatvault"), "{message}");

    let db = raw_open(&dbs.main, None).await;
    assert_eq!(db.version() as u32, SCHEMA_VERSION + 1, "never downgraded");
    db.close();
}

#[wasm_bindgen_test]
async fn a_new_database_gets_every_object_store_at_the_current_version() {
    let dbs = common::Databases::new();
    drop(dbs.open().await.expect("create"));
    let db = raw_open(&dbs.main, None).await;
    assert_eq!(db.version() as u32, SCHEMA_VERSION);
    let names = db.object_store_names();
    let names: Vec<String> = (0..names.length()).filter_map(|i| names.item(i)).collect();
    assert_eq!(
        names,
        [
            "conversations",
            "messages",
            "meta",
            "outbox",
            "tombstones",
            "totals"
        ]
    );
    db.close();
    // Opening the current version again upgrades nothing and works.
    drop(dbs.open().await.expect("reopen"));
}
