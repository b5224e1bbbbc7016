//! A long `write_all` in a browser: many more writes than the writer
//! issues before it waits for the browser, still one transaction — a
//! source that fails at the very end leaves nothing, one that does not
//! lands whole.

#![cfg(target_family = "wasm")]

mod common;

use chatvault_core::{
    Body, ConversationId, ConversationRecord, DeviceId, Hlc, MessageId, MessageRecord, Timestamp,
    UserId,
};
use chatvault_store::{Result, Store, StoreError, WriteBatch, WriteOp};
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const T0: u64 = 1_700_000_000_000;
const BATCHES: u32 = 20;
const PER_BATCH: u32 = 100;
const BODY: usize = 1024;

fn conversation() -> ConversationRecord {
    ConversationRecord {
        id: ConversationId::from_bytes([1; 16]),
        user_id: UserId::local(),
        created_at: Timestamp(T0 as i64),
        updated_at: Timestamp(T0 as i64),
        version: Hlc::new(T0, 0, DeviceId(1)).expect("a stamp"),
        body: Body(vec![b'c'; 8]),
    }
}

/// Batch `b` of the import: `PER_BATCH` new messages of 1 KiB.
fn batch(b: u32) -> Result<WriteBatch> {
    let ops = (0..PER_BATCH)
        .map(|i| {
            let n = b * PER_BATCH + i;
            let mut id = [2u8; 16];
            id[12..].copy_from_slice(&n.to_be_bytes());
            let at = T0 + 1 + u64::from(n);
            WriteOp::InsertMessage(MessageRecord {
                id: MessageId::from_bytes(id),
                conversation_id: conversation().id,
                created_at: Timestamp(at as i64),
                updated_at: Timestamp(at as i64),
                version: Hlc::new(at, 0, DeviceId(1)).expect("a stamp"),
                body: Body(vec![b'm'; BODY]),
            })
        })
        .collect();
    Ok(WriteBatch { ops })
}

#[wasm_bindgen_test]
async fn a_long_write_all_is_one_transaction() {
    let dbs = common::Databases::new();
    let store = dbs.open().await.expect("open");
    store
        .write(WriteBatch {
            ops: vec![WriteOp::PutConversation(conversation())],
        })
        .await
        .expect("the conversation");

    // The source fails after every batch was applied: nothing stays.
    let failing = (0..BATCHES)
        .map(batch)
        .chain(std::iter::once(Err(StoreError::InvalidRequest(
            "the file ends early".into(),
        ))));
    let result = store.write_all(Box::new(failing)).await;
    assert!(
        matches!(result, Err(StoreError::InvalidRequest(_))),
        "{result:?}"
    );
    let usage = store.usage().await.expect("usage");
    assert_eq!(
        (usage.conversations, usage.messages),
        (1, 0),
        "nothing of it"
    );

    store
        .write_all(Box::new((0..BATCHES).map(batch)))
        .await
        .expect("the whole import");
    let usage = store.usage().await.expect("usage");
    let messages = u64::from(BATCHES * PER_BATCH);
    assert_eq!(usage.messages, messages);
    assert_eq!(usage.bytes, 8 + messages * BODY as u64);
    drop(store);

    // And it is on disk, not only in this connection.
    let reopened = dbs.open().await.expect("reopen");
    assert_eq!(reopened.usage().await.expect("usage").messages, messages);
}
