//! `Store::footprint` on IndexedDB in a page: the vault's own stored bytes
//! (kept in `totals`) under the browser's quota and the store's cap, and
//! the Vault facade's `storage()` reporting it.

#![cfg(target_family = "wasm")]

mod common;

use chatvault::testing::fast_options;
use chatvault::{ManualClock, NewConversation, NewMessage, Role, Vault};
use chatvault_core::{
    Body, ConversationId, ConversationRecord, DeviceId, Hlc, MessageId, MessageRecord, Timestamp,
    UserId,
};
use chatvault_store::{Store, WriteBatch, WriteOp};
use std::sync::Arc;
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const T0: u64 = 1_700_000_000_000;

/// A conversation with an 8-byte body and two messages of 1 KiB.
fn history() -> WriteBatch {
    let conversation = ConversationId::from_bytes([1; 16]);
    let stamp = |n: u64| Hlc::new(T0 + n, 0, DeviceId(1)).expect("a stamp");
    let mut ops = vec![WriteOp::PutConversation(ConversationRecord {
        id: conversation,
        user_id: UserId::local(),
        created_at: Timestamp(T0 as i64),
        updated_at: Timestamp(T0 as i64),
        version: stamp(0),
        body: Body(vec![b'c'; 8]),
    })];
    for n in 1..=2u8 {
        ops.push(WriteOp::InsertMessage(MessageRecord {
            id: MessageId::from_bytes([n + 1; 16]),
            conversation_id: conversation,
            created_at: Timestamp((T0 + u64::from(n)) as i64),
            updated_at: Timestamp((T0 + u64::from(n)) as i64),
            version: stamp(u64::from(n)),
            body: Body(vec![b'm'; 1024]),
        }));
    }
    WriteBatch { ops }
}

#[wasm_bindgen_test]
async fn the_footprint_is_the_stored_bytes_under_the_browsers_quota() {
    let dbs = common::Databases::new();
    let store = dbs.open().await.expect("open");
    let empty = store.footprint().await.expect("footprint").expect("known");
    assert_eq!(empty.used_bytes, 0);

    store.write(history()).await.expect("write");
    let f = store.footprint().await.expect("footprint").expect("known");
    assert_eq!(f.used_bytes, 8 + 2 * 1024);
    assert_eq!(f.used_bytes, store.usage().await.expect("usage").bytes);
    assert_eq!(f.reclaimable_bytes, 0);
    // The test page is served from loopback, a secure context: Chromium
    // reports the origin's quota there.
    let quota = f.quota_bytes.expect("the browser's quota");
    let available = f.available_bytes.expect("room left");
    assert!(quota > 0 && available <= quota, "{f:?}");
}

#[wasm_bindgen_test]
async fn a_capped_store_reports_its_cap_and_the_room_left_under_it() {
    let dbs = common::Databases::new();
    let store = dbs.open_with_quota(10_000).await.expect("open");
    store.write(history()).await.expect("write");
    let f = store.footprint().await.expect("footprint").expect("known");
    assert_eq!(f.quota_bytes, Some(10_000));
    assert_eq!(f.available_bytes, Some(10_000 - (8 + 2 * 1024)));
}

#[wasm_bindgen_test]
async fn the_vault_reports_its_storage_on_indexeddb() {
    let dbs = common::Databases::new();
    let store = common::shared(dbs.open().await.expect("open"));
    let clock = Arc::new(ManualClock::new(chatvault::testing::T0));
    let vault = Vault::open(store, fast_options(clock))
        .await
        .expect("vault");
    let c = vault
        .create_conversation(NewConversation::titled("storage"))
        .await
        .expect("conversation");
    vault
        .add_message(c.id, NewMessage::new(Role::User, "hello"))
        .await
        .expect("message");
    let storage = vault.storage().await.expect("storage").expect("known");
    assert_eq!(
        storage.used_bytes,
        vault.stats().await.expect("stats").bytes,
        "{storage:?}"
    );
    assert!(storage.used_bytes > 0);
}
