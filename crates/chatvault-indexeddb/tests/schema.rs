//! Schema versions in a browser: a database written by a newer chatvault
//! is refused clearly and left as it is; the current version reopens; a
//! version-1 database is upgraded and keeps what it held.

#![cfg(target_family = "wasm")]

mod common;

use chatvault_core::{
    Body, ConversationId, ConversationRecord, DeviceId, Hlc, Incoming, MessageId, MessageRecord,
    Timestamp, UserId,
};
use chatvault_indexeddb::{IndexedDbOptions, IndexedDbStore, SCHEMA_VERSION};
use chatvault_store::{Store, StoreError, WriteBatch, WriteOp};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;
use web_sys::{
    IdbDatabase, IdbFactory, IdbIndexParameters, IdbObjectStore, IdbObjectStoreParameters,
    IdbOpenDbRequest, IdbTransactionMode,
};

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
            "marks",
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

fn key_path(fields: &[&str]) -> JsValue {
    match fields {
        [one] => JsValue::from_str(one),
        _ => fields
            .iter()
            .map(|f| JsValue::from_str(f))
            .collect::<js_sys::Array>()
            .into(),
    }
}

fn create_store(db: &IdbDatabase, name: &str, key: &[&str], auto: bool) -> IdbObjectStore {
    let p = IdbObjectStoreParameters::new();
    p.set_key_path(&key_path(key));
    p.set_auto_increment(auto);
    db.create_object_store_with_optional_parameters(name, &p)
        .expect("create store")
}

fn create_index(store: &IdbObjectStore, name: &str, fields: &[&str], unique: bool) {
    let p = IdbIndexParameters::new();
    p.set_unique(unique);
    store
        .create_index_with_str_sequence_and_optional_parameters(name, &key_path(fields), &p)
        .expect("create index");
}

/// The version-1 layout, written out here as released (the crate's own
/// migration may never change, but this test must not follow it if it did).
fn create_v1_layout(db: &IdbDatabase) {
    let conversations = create_store(db, "conversations", &["id"], false);
    create_index(
        &conversations,
        "activity",
        &["negActivity", "descId"],
        false,
    );
    let messages = create_store(db, "messages", &["id"], false);
    create_index(
        &messages,
        "latest",
        &["conv", "negCreated", "descId"],
        false,
    );
    create_index(&messages, "conv_version", &["conv", "version"], false);
    create_index(&messages, "conv_updated", &["conv", "updated"], false);
    let tombstones = create_store(db, "tombstones", &["kind", "id"], false);
    create_index(&tombstones, "conv_version", &["conv", "version"], false);
    let outbox = create_store(db, "outbox", &["seq"], true);
    create_index(&outbox, "entity", &["entity"], true);
    create_index(&outbox, "conv", &["conv"], false);
    create_index(&outbox, "state", &["parked", "seq"], false);
    create_store(db, "totals", &["conv"], false);
    db.create_object_store("meta").expect("create meta");
}

fn stamp(wall: u64) -> Hlc {
    Hlc::new(wall, 0, DeviceId(7)).expect("a valid stamp")
}

/// Builds a version-1 database holding one conversation tombstone (as
/// version-1 code stored it) with the raw API.
async fn v1_with_conversation_tombstone(name: &str, id: ConversationId, version: Hlc) {
    let request = factory().open_with_u32(name, 1).expect("open request");
    let upgrade = {
        let request = request.clone();
        Closure::once(move |_: web_sys::Event| {
            let db: IdbDatabase = request.result().expect("db").unchecked_into();
            create_v1_layout(&db);
        })
    };
    request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let done = js_sys::Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(done).await.expect("v1 open");
    let db: IdbDatabase = request.result().expect("open result").unchecked_into();
    let tx = db
        .transaction_with_str_and_mode("tombstones", IdbTransactionMode::Readwrite)
        .expect("transaction");
    let row = js_sys::Object::new();
    let hex: String = id.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    for (field, value) in [
        ("kind", JsValue::from_str("conversation")),
        ("id", JsValue::from_str(&hex)),
        ("version", JsValue::from_str(&version.to_string())),
        ("deleted", JsValue::from_f64(1_000.0)),
    ] {
        js_sys::Reflect::set(&row, &JsValue::from_str(field), &value).expect("set");
    }
    tx.object_store("tombstones")
        .expect("tombstones")
        .put(&row)
        .expect("put");
    let committed = js_sys::Promise::new(&mut |resolve, reject| {
        tx.set_oncomplete(Some(&resolve));
        tx.set_onerror(Some(&reject));
    });
    JsFuture::from(committed).await.expect("commit");
    db.close();
}

/// Version 2 adds `marks` (deletion marks that outlive a recreation). A
/// version-1 conversation tombstone is not copied there: it counts as the
/// mark where it lies, and moves into `marks` when a recreation replaces
/// it, so the deletion still covers the conversation's older messages.
#[wasm_bindgen_test]
async fn a_version_1_tombstone_stays_the_deletion_mark_after_the_upgrade() {
    let dbs = common::Databases::new();
    let id = ConversationId::from_bytes([0x0c; 16]);
    v1_with_conversation_tombstone(&dbs.main, id, stamp(30)).await;

    let store = dbs.open().await.expect("upgraded");
    let raw = raw_open(&dbs.main, None).await;
    assert_eq!(raw.version() as u32, SCHEMA_VERSION);
    raw.close();
    assert_eq!(store.deletion_mark(id).await.unwrap(), Some(stamp(30)));

    let recreated = ConversationRecord {
        id,
        user_id: UserId::local(),
        created_at: Timestamp(0),
        updated_at: Timestamp(50),
        version: stamp(50),
        body: Body(b"recreated".to_vec()),
    };
    let old = MessageRecord {
        id: MessageId::from_bytes([0x0e; 16]),
        conversation_id: id,
        created_at: Timestamp(20),
        updated_at: Timestamp(20),
        version: stamp(20),
        body: Body(b"old".to_vec()),
    };
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Merge(Incoming::Conversation(recreated)));
    batch.push(WriteOp::Merge(Incoming::Message(old.clone())));
    let outcome = store.write(batch).await.unwrap();
    assert_eq!((outcome.merged, outcome.superseded), (1, 1));
    drop(store);

    let store = dbs.open().await.expect("reopen");
    assert!(store.conversation(id).await.unwrap().is_some(), "recreated");
    assert_eq!(
        store.deletion_mark(id).await.unwrap(),
        Some(stamp(30)),
        "kept past the recreation"
    );
    assert_eq!(store.message(old.id).await.unwrap(), None, "still covered");
}
