//! Key-value state in a real browser: the key-value conformance suite on
//! localStorage, sessionStorage and IndexedDB, plain and sealed by an
//! encrypted vault, and what only a browser can show — the raw storage
//! holds no plaintext, other items on the origin are left alone, and the
//! browser's own quota is a clear error that keeps the old value.

#![cfg(target_family = "wasm")]

mod common;

use chatvault::testing::SealedKvBackend;
use chatvault_indexeddb::kv::{IndexedDbKvArea, WebStorage, WebStorageKv};
use chatvault_store::testing::KvBackend;
use chatvault_store::{KvError, KvLimits, KvResult, KvStore};
use std::sync::Arc;
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// The key-value API hands out `Arc<dyn KvStore>`; in a browser the
/// namespaces hold JS handles and the one thread makes it a plain count.
#[allow(clippy::arc_with_non_send_sync)]
fn shared(kv: impl KvStore + 'static) -> Arc<dyn KvStore> {
    Arc::new(kv)
}

/// Namespaces of a web storage area, under a prefix of this test's own
/// (the area outlives the test and is shared by every test of the page).
struct Web {
    area: WebStorage,
    prefix: String,
}

impl KvBackend for Web {
    async fn open(&self, name: &str, limits: KvLimits) -> KvResult<Arc<dyn KvStore>> {
        let kv = WebStorageKv::open(self.area, &format!("{}{name}", self.prefix), limits)?;
        Ok(shared(kv))
    }
}

fn web(area: WebStorage) -> Web {
    Web {
        area,
        prefix: common::unique_name("kv").replace("chatvault-test-", "t-") + "-",
    }
}

async fn local() -> Web {
    web(WebStorage::Local)
}

async fn session() -> Web {
    web(WebStorage::Session)
}

/// Namespaces of an IndexedDB area in a database of this test's own.
struct Idb {
    area: IndexedDbKvArea,
    name: String,
}

impl KvBackend for Idb {
    async fn open(&self, name: &str, limits: KvLimits) -> KvResult<Arc<dyn KvStore>> {
        Ok(shared(self.area.namespace(name, limits)?))
    }
}

impl Drop for Idb {
    fn drop(&mut self) {
        let name = self.name.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = IndexedDbKvArea::delete(&name).await;
        });
    }
}

async fn indexed_db() -> Idb {
    let name = common::unique_name("kv");
    Idb {
        area: IndexedDbKvArea::open(&name)
            .await
            .expect("open the kv area"),
        name,
    }
}

async fn sealed_local() -> SealedKvBackend<Web> {
    SealedKvBackend::new(local().await).await
}

async fn sealed_indexed_db() -> SealedKvBackend<Idb> {
    SealedKvBackend::new(indexed_db().await).await
}

mod local_storage {
    chatvault_store::kv_conformance_tests!(#[wasm_bindgen_test::wasm_bindgen_test], crate::local);
}

mod session_storage {
    chatvault_store::kv_conformance_tests!(#[wasm_bindgen_test::wasm_bindgen_test], crate::session);
}

mod indexeddb {
    chatvault_store::kv_conformance_tests!(
        #[wasm_bindgen_test::wasm_bindgen_test],
        crate::indexed_db
    );
}

mod sealed_local_storage {
    chatvault_store::kv_conformance_tests!(
        #[wasm_bindgen_test::wasm_bindgen_test],
        crate::sealed_local
    );
}

mod sealed_indexeddb {
    chatvault_store::kv_conformance_tests!(
        #[wasm_bindgen_test::wasm_bindgen_test],
        crate::sealed_indexed_db
    );
}

fn raw_local() -> web_sys::Storage {
    web_sys::window().unwrap().local_storage().unwrap().unwrap()
}

/// Every item of localStorage as one text, as a curious extension or an
/// attacker with the profile's files would read it.
fn everything_in_local_storage() -> String {
    let storage = raw_local();
    let mut all = String::new();
    for i in 0..storage.length().unwrap() {
        let name = storage.key(i).unwrap().unwrap();
        all.push_str(&name);
        all.push('=');
        all.push_str(&storage.get_item(&name).unwrap().unwrap_or_default());
        all.push('\n');
    }
    all
}

#[wasm_bindgen_test]
async fn sealed_state_leaves_no_plaintext_in_local_storage_or_indexeddb() {
    let secret = "the-draft-nobody-may-read";
    let b = sealed_local().await;
    let kv = b.open("secrets", KvLimits::web_storage()).await.unwrap();
    kv.set("draft", secret).await.unwrap();
    assert_eq!(kv.get("draft").await.unwrap().as_deref(), Some(secret));
    let all = everything_in_local_storage();
    assert!(all.contains(":draft=cv1:"), "{all}");
    assert!(!all.contains(secret), "{all}");

    let b = sealed_indexed_db().await;
    let kv = b.open("secrets", KvLimits::indexed_db()).await.unwrap();
    kv.set("draft", secret).await.unwrap();
    let raw = b
        .inner()
        .area
        .namespace("secrets", KvLimits::indexed_db())
        .unwrap();
    let stored = raw.get("draft").await.unwrap().unwrap();
    assert!(
        stored.starts_with("cv1:") && !stored.contains(secret),
        "{stored}"
    );
}

#[wasm_bindgen_test]
async fn items_of_others_on_the_origin_are_never_listed_or_cleared() {
    let storage = raw_local();
    storage.set_item("someone-else", "theirs").unwrap();
    storage
        .set_item("chatvault:x", "not a namespaced item")
        .unwrap();
    let b = local().await;
    let kv = b.open("mine", KvLimits::web_storage()).await.unwrap();
    kv.set("a", "1").await.unwrap();
    assert_eq!(kv.keys().await.unwrap(), vec!["a"]);
    kv.clear().await.unwrap();
    assert_eq!(
        storage.get_item("someone-else").unwrap().as_deref(),
        Some("theirs")
    );
    assert_eq!(
        storage.get_item("chatvault:x").unwrap().as_deref(),
        Some("not a namespaced item")
    );
    storage.remove_item("someone-else").unwrap();
    storage.remove_item("chatvault:x").unwrap();
}

#[wasm_bindgen_test]
async fn the_default_web_storage_guard_refuses_a_megabyte_with_a_clear_error() {
    let b = session().await;
    let kv = b.open("guarded", KvLimits::web_storage()).await.unwrap();
    kv.set("state", "small").await.unwrap();
    let err = kv.set("state", &"x".repeat(600 * 1024)).await.unwrap_err();
    assert!(
        matches!(
            err,
            KvError::TooLarge {
                what: "one value",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("IndexedDB kv"), "{err}");
    assert_eq!(kv.get("state").await.unwrap().as_deref(), Some("small"));
}

/// With the guard off, the browser's own quota (about 5 M characters per
/// origin in Chromium) refuses the write: `Full`, and the old value stays.
#[wasm_bindgen_test]
async fn the_browsers_quota_is_full_and_keeps_the_old_value() {
    let b = session().await;
    let kv = b.open("quota", KvLimits::unbounded()).await.unwrap();
    kv.set("state", "before").await.unwrap();
    let huge = "q".repeat(6 * 1024 * 1024);
    let err = kv.set("state", &huge).await.unwrap_err();
    let kept = kv.get("state").await.unwrap();
    kv.clear().await.unwrap();
    assert!(matches!(err, KvError::Full { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(kept.as_deref(), Some("before"));
}

#[wasm_bindgen_test]
async fn two_handles_on_one_indexeddb_namespace_see_each_others_writes() {
    let b = indexed_db().await;
    let one = b.open("shared", KvLimits::indexed_db()).await.unwrap();
    let other_area = IndexedDbKvArea::open(&b.name).await.unwrap();
    let two = other_area
        .namespace("shared", KvLimits::indexed_db())
        .unwrap();
    one.set("k", "from one").await.unwrap();
    assert_eq!(two.get("k").await.unwrap().as_deref(), Some("from one"));
    two.remove("k").await.unwrap();
    assert_eq!(one.get("k").await.unwrap(), None);
}
