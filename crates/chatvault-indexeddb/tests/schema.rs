//! Schema versions in a browser: a database written by a newer chatvault
//! is refused clearly and left as it is; the current version reopens; a
//! version-1 database is upgraded and keeps what it held; a version-2
//! outbox moves onto its records.

#![cfg(target_family = "wasm")]

mod common;

use chatvault_core::{
    Body, ChangeOp, ConversationId, ConversationRecord, DeviceId, EntityKind, Hlc, Incoming,
    MessageId, MessageRecord, OpId, RecordId, Timestamp, UserId,
};
use chatvault_indexeddb::{IndexedDbOptions, IndexedDbStore, SCHEMA_VERSION};
use chatvault_store::{OutboxItem, ParkReason, Store, StoreError, WriteBatch, WriteOp};
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

fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A plain object of `fields`.
fn row(fields: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (field, value) in fields {
        js_sys::Reflect::set(&o, &JsValue::from_str(field), value).expect("set");
    }
    o.into()
}

fn text(s: &str) -> JsValue {
    JsValue::from_str(s)
}

fn number(n: f64) -> JsValue {
    JsValue::from_f64(n)
}

fn bytes(b: &[u8]) -> JsValue {
    js_sys::Uint8Array::from(b).into()
}

/// Builds a version-2 database (the version-1 layout plus `marks`) with
/// the raw API and fills it with `rows`, `(store, value)` each, in one
/// transaction; then deletes the outbox row with sequence number
/// `acknowledged` (the key generator stays past it, as after a push).
async fn v2_with(name: &str, rows: Vec<(&'static str, JsValue)>, acknowledged: f64) {
    let request = factory().open_with_u32(name, 2).expect("open request");
    let upgrade = {
        let request = request.clone();
        Closure::once(move |_: web_sys::Event| {
            let db: IdbDatabase = request.result().expect("db").unchecked_into();
            create_v1_layout(&db);
            create_store(&db, "marks", &["conv"], false);
        })
    };
    request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let done = js_sys::Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(done).await.expect("v2 open");
    let db: IdbDatabase = request.result().expect("open result").unchecked_into();
    let names: js_sys::Array = ["conversations", "messages", "tombstones", "outbox"]
        .iter()
        .map(|n| JsValue::from_str(n))
        .collect();
    let tx = db
        .transaction_with_str_sequence_and_mode(&names, IdbTransactionMode::Readwrite)
        .expect("transaction");
    for (store, value) in rows {
        tx.object_store(store)
            .expect(store)
            .put(&value)
            .expect("put");
    }
    tx.object_store("outbox")
        .expect("outbox")
        .delete(&number(acknowledged))
        .expect("delete");
    let committed = js_sys::Promise::new(&mut |resolve, reject| {
        tx.set_oncomplete(Some(&resolve));
        tx.set_onerror(Some(&reject));
    });
    JsFuture::from(committed).await.expect("commit");
    db.close();
}

/// A version-2 outbox row, as version-2 code stored it.
fn v2_entry(
    seq: f64,
    kind: &str,
    entity: &str,
    conv: Option<&str>,
    op: OpId,
) -> Vec<(&'static str, JsValue)> {
    let mut fields = vec![
        ("seq", number(seq)),
        ("entity", text(entity)),
        ("kind", text(kind)),
        ("op", text(&hex(op.as_bytes()))),
        ("parked", number(0.0)),
        ("attempts", number(0.0)),
    ];
    if let Some(conv) = conv {
        fields.push(("conv", text(conv)));
    }
    fields
}

/// Version 3 moves the outbox onto its records: a version-2 database's
/// pending and parked changes (on a live record and on a tombstone) are
/// listed as before — same sequence numbers, op ids, refusal and count —
/// an entry whose record is gone is dropped, and new numbers continue
/// above every number the old outbox ever issued (even an acknowledged
/// one).
#[wasm_bindgen_test]
async fn a_version_2_outbox_moves_onto_its_records() {
    let dbs = common::Databases::new();
    let conv = ConversationId::from_bytes([0x0c; 16]);
    let (live, deleted, gone) = (
        MessageId::from_bytes([0x0e; 16]),
        MessageId::from_bytes([0x0f; 16]),
        MessageId::from_bytes([0x0d; 16]),
    );
    let op = |n: u8| OpId::from_bytes([n; 16]);
    let (c, m1, m2, m9) = (
        hex(conv.as_bytes()),
        hex(live.as_bytes()),
        hex(deleted.as_bytes()),
        hex(gone.as_bytes()),
    );
    let desc = |h: &str| -> String {
        h.as_bytes()
            .chunks(2)
            .map(|p| {
                let b = u8::from_str_radix(std::str::from_utf8(p).expect("hex"), 16).expect("hex");
                format!("{:02x}", !b)
            })
            .collect()
    };
    let mut parked = v2_entry(5.0, "message", &m1, Some(&c), op(2));
    parked.extend([
        ("parked", number(1.0)),
        ("attempts", number(2.0)),
        ("code", text("too_big")),
        ("message", text("refused")),
        ("at", number(99.0)),
    ]);
    let rows = vec![
        (
            "conversations",
            row(&[
                ("id", text(&c)),
                ("descId", text(&desc(&c))),
                ("user", text(UserId::local().as_str())),
                ("created", number(10.0)),
                ("updated", number(10.0)),
                ("version", text(&stamp(10).to_string())),
                ("body", bytes(b"conversation")),
                ("activity", number(20.0)),
                ("negActivity", number(-20.0)),
            ]),
        ),
        (
            "messages",
            row(&[
                ("id", text(&m1)),
                ("descId", text(&desc(&m1))),
                ("conv", text(&c)),
                ("created", number(20.0)),
                ("negCreated", number(-20.0)),
                ("updated", number(20.0)),
                ("version", text(&stamp(20).to_string())),
                ("body", bytes(b"message")),
            ]),
        ),
        (
            "tombstones",
            row(&[
                ("kind", text("message")),
                ("id", text(&m2)),
                ("conv", text(&c)),
                ("version", text(&stamp(30).to_string())),
                ("deleted", number(30.0)),
            ]),
        ),
        (
            "outbox",
            row(&v2_entry(3.0, "conversation", &c, None, op(1))),
        ),
        ("outbox", row(&parked)),
        (
            "outbox",
            row(&v2_entry(8.0, "message", &m2, Some(&c), op(3))),
        ),
        (
            "outbox",
            row(&v2_entry(9.0, "message", &m9, Some(&c), op(4))),
        ),
        (
            "outbox",
            // Another record: `entity` is unique (one entry per record).
            row(&v2_entry(
                40.0,
                "message",
                &hex(&[0x0b; 16]),
                Some(&c),
                op(5),
            )),
        ),
    ];
    // Entry 40 was pushed and acknowledged: only the key generator
    // remembers it.
    v2_with(&dbs.main, rows, 40.0).await;

    let store = dbs.open().await.expect("upgraded");
    let raw = raw_open(&dbs.main, None).await;
    assert_eq!(raw.version() as u32, SCHEMA_VERSION);
    let names = raw.object_store_names();
    assert!(!(0..names.length()).any(|i| names.item(i).as_deref() == Some("outbox")));
    raw.close();

    let pending = store.outbox(10).await.expect("outbox");
    let listed: Vec<(u64, RecordId, OpId, bool)> = pending
        .iter()
        .map(|e| {
            let deletes = matches!(e.change.op, ChangeOp::Delete(_));
            (e.seq, e.change.entity_id, e.change.op_id, deletes)
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (3, conv.into(), op(1), false),
            (8, deleted.into(), op(3), true),
        ],
        "the entry of a record gone without a tombstone is dropped"
    );
    let parked = store.parked(None, 10).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (
            parked[0].seq,
            parked[0].change.entity_id,
            parked[0].change.op_id
        ),
        (5, live.into(), op(2))
    );
    assert_eq!(
        (parked[0].reason.clone(), parked[0].attempts),
        (
            ParkReason {
                code: "too_big".into(),
                message: "refused".into(),
                at: Timestamp(99),
            },
            2
        )
    );
    let usage = store.usage().await.expect("usage");
    assert_eq!((usage.pending_changes, usage.parked_changes), (2, 1));
    assert!(usage.per_conversation[0].pending);

    // A new change gets a number above every one issued before.
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Enqueue(OutboxItem {
        op_id: op(6),
        kind: EntityKind::Message,
        entity_id: live.into(),
        conversation_id: Some(conv),
    }));
    store.write(batch).await.expect("enqueue");
    let last = store.outbox(10).await.expect("outbox");
    assert_eq!(last.len(), 3, "{last:?}");
    assert_eq!(last[2].change.entity_id, live.into());
    assert!(last[2].seq > 40, "{}", last[2].seq);
    drop(store);
    let reopened = dbs.open().await.expect("reopen");
    assert_eq!(reopened.outbox(10).await.expect("outbox"), last);
}
