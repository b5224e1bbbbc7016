//! The database layout (object stores, their keys and indexes), its
//! version, and the migrations that bring an older database up to it.
//!
//! The IndexedDB database version **is** the schema version. Opening asks
//! for [`SCHEMA_VERSION`]; the browser then runs `onupgradeneeded` with the
//! version it found, and [`upgrade`] applies every migration after it, in
//! order, inside that one versionchange transaction — if one fails the
//! transaction aborts and the database stays at its old version, exactly
//! like SQLite's migrations in one transaction. A database at a newer
//! version than this build knows is refused (the browser's `VersionError`
//! becomes [`StoreError::NewerSchema`](chatvault_store::StoreError)), never
//! opened and never downgraded.
//!
//! To change the layout: add a migration function to [`MIGRATIONS`] (the
//! version count follows), never edit an old one, and add a test that
//! builds the previous version's layout and opens it with the new code.
//!
//! # Layout (version 3)
//! Ids are lowercase hex (their byte order), times are epoch milliseconds,
//! versions are the HLC's fixed-width text (text order is clock order).
//! - `conversations`, key `id`: the record, its `activity` time and the
//!   index `activity` on `[negActivity, descId]` — most recent activity
//!   first as an ascending range, so a page is one `getAll(range, limit)`.
//! - `messages`, key `id`: the record; indexes `latest` on
//!   `[conv, negCreated, descId]` (newest first), `conv_version` on
//!   `[conv, version]` (what a conversation's deletion covers) and
//!   `conv_updated` on `[conv, updated]` (a conversation's newest edit).
//! - `tombstones`, key `[kind, id]` (export order); index `conv_version` on
//!   `[conv, version]` (message tombstones only: a conversation tombstone
//!   has no `conv`, so it is not indexed).
//! - **The outbox** (version 3) lives on those three stores' records: a
//!   record (or tombstone) with a change waiting for sync carries it as
//!   its `outbox` property — `{seq, op, parked, attempts}` plus, once
//!   refused, `code`, `message` and `at` — and each of the three stores
//!   has the index `outbox` on `[outbox.parked, outbox.seq]`. Indexes are
//!   sparse (a record without the property is not in it), so the index
//!   holds exactly the pending (`parked` 0) and parked (1) changes, oldest
//!   first, and the outbox is the merge of three ranges in `seq` order. A
//!   record has at most one change by construction, the change is written
//!   in the record's own put, and a record replaced by its tombstone (or
//!   the reverse) carries the property across. Sequence numbers come from
//!   the counter [`SEQ_KEY`] in `meta` (the last one issued; read once and
//!   written once per write transaction): never reused, not even after
//!   `clear` or once every change was acknowledged.
//! - `totals`, key `conv`: per conversation, its messages' count and body
//!   bytes, kept by every write; the row with the empty key holds the body
//!   bytes of every live record (the quota check and `usage`).
//! - `meta`, out-of-line string keys: the vault's small key-value table,
//!   and the outbox's sequence counter ([`SEQ_KEY`]).
//! - `marks`, key `conv` (version 2): per conversation, its kept deletion
//!   mark `version` — the highest stamp it was deleted at by deletions
//!   learnt from elsewhere and by tombstones a recreation replaced. A
//!   conversation's tombstone counts as its mark while it lies there (so
//!   a local one re-stamped lower counts at its new stamp, and a version-1
//!   tombstone needs no backfill); it moves into `marks` when a recreation
//!   replaces it.
//!
//! Versions 1 and 2 kept the outbox in its own store, `outbox` (key `seq`,
//! auto-increment; indexes `entity` (unique), `conv` and `state` on
//! `[parked, seq]`): one more put and three more index entries per queued
//! change. Version 3 moves its entries onto their records and drops it.

use crate::codec::{self, key};
use crate::idb::wait;
use futures::future::LocalBoxFuture;
use js_sys::Array;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    IdbDatabase, IdbIndexParameters, IdbObjectStore, IdbObjectStoreParameters, IdbTransaction,
};

pub(crate) const CONVERSATIONS: &str = "conversations";
pub(crate) const MESSAGES: &str = "messages";
pub(crate) const TOMBSTONES: &str = "tombstones";
/// The object store of the outbox in versions 1 and 2 (see the layout).
const OUTBOX: &str = "outbox";
pub(crate) const TOTALS: &str = "totals";
pub(crate) const META: &str = "meta";
pub(crate) const MARKS: &str = "marks";

/// The index of pending and parked changes on each store that holds
/// records (see the layout).
pub(crate) const OUTBOX_INDEX: &str = "outbox";

/// The stores whose records carry outbox entries.
pub(crate) const RECORD_STORES: [&str; 3] = [CONVERSATIONS, MESSAGES, TOMBSTONES];

/// The `meta` key of the outbox's sequence counter: the last sequence
/// number issued (decimal text).
pub(crate) const SEQ_KEY: &str = "indexeddb.outbox.seq";

/// Every object store, for transactions that span them all.
pub(crate) const ALL_STORES: [&str; 6] = [CONVERSATIONS, MESSAGES, TOMBSTONES, TOTALS, META, MARKS];

/// One migration: from the version before it to its own. Runs inside the
/// versionchange transaction and may read and write in it (awaiting only
/// that transaction's requests, which keeps it alive).
type Migration = fn(IdbDatabase, IdbTransaction) -> LocalBoxFuture<'static, Result<(), JsValue>>;

/// Migration `i` brings the database from version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[
    |db, tx| Box::pin(std::future::ready(create_v1(&db, &tx))),
    |db, tx| Box::pin(std::future::ready(add_marks_v2(&db, &tx))),
    |db, tx| Box::pin(outbox_onto_records_v3(db, tx)),
];

/// The schema version this build writes (the IndexedDB database version).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies every migration after `old` (0 for a database that did not
/// exist), in order, inside the versionchange transaction `tx`.
pub(crate) fn upgrade(
    db: &IdbDatabase,
    tx: &IdbTransaction,
    old: u32,
) -> LocalBoxFuture<'static, Result<(), JsValue>> {
    let (db, tx) = (db.clone(), tx.clone());
    Box::pin(async move {
        for (from, migrate) in MIGRATIONS.iter().enumerate().skip(old as usize) {
            tracing::info!(from, to = from + 1, "migrating the IndexedDB store");
            migrate(db.clone(), tx.clone()).await?;
        }
        Ok(())
    })
}

fn key_path(fields: &[&str]) -> JsValue {
    if let [one] = fields {
        return JsValue::from_str(one);
    }
    fields
        .iter()
        .map(|f| JsValue::from_str(f))
        .collect::<js_sys::Array>()
        .into()
}

fn store_params(key: &[&str], auto_increment: bool) -> IdbObjectStoreParameters {
    let p = IdbObjectStoreParameters::new();
    p.set_key_path(&key_path(key));
    p.set_auto_increment(auto_increment);
    p
}

fn index(
    store: &web_sys::IdbObjectStore,
    name: &str,
    fields: &[&str],
    unique: bool,
) -> Result<(), JsValue> {
    let p = IdbIndexParameters::new();
    p.set_unique(unique);
    store.create_index_with_str_sequence_and_optional_parameters(name, &key_path(fields), &p)?;
    Ok(())
}

/// Version 1: the layout in the module docs.
fn create_v1(db: &IdbDatabase, _tx: &IdbTransaction) -> Result<(), JsValue> {
    let conversations = db.create_object_store_with_optional_parameters(
        CONVERSATIONS,
        &store_params(&["id"], false),
    )?;
    index(
        &conversations,
        "activity",
        &["negActivity", "descId"],
        false,
    )?;

    let messages =
        db.create_object_store_with_optional_parameters(MESSAGES, &store_params(&["id"], false))?;
    index(
        &messages,
        "latest",
        &["conv", "negCreated", "descId"],
        false,
    )?;
    index(&messages, "conv_version", &["conv", "version"], false)?;
    index(&messages, "conv_updated", &["conv", "updated"], false)?;

    let tombstones = db.create_object_store_with_optional_parameters(
        TOMBSTONES,
        &store_params(&["kind", "id"], false),
    )?;
    index(&tombstones, "conv_version", &["conv", "version"], false)?;

    let outbox =
        db.create_object_store_with_optional_parameters(OUTBOX, &store_params(&["seq"], true))?;
    index(&outbox, "entity", &["entity"], true)?;
    index(&outbox, "conv", &["conv"], false)?;
    index(&outbox, "state", &["parked", "seq"], false)?;

    db.create_object_store_with_optional_parameters(TOTALS, &store_params(&["conv"], false))?;
    db.create_object_store(META)?;
    Ok(())
}

/// Version 2: the `marks` store (conversations' deletion marks).
fn add_marks_v2(db: &IdbDatabase, _tx: &IdbTransaction) -> Result<(), JsValue> {
    db.create_object_store_with_optional_parameters(MARKS, &store_params(&["conv"], false))?;
    Ok(())
}

/// Outbox rows moved per round of the version-3 migration.
const MOVE_PAGE: u32 = 500;

/// Version 3: the outbox moves onto its records (see the layout). Each
/// `outbox` row becomes the `outbox` property of its record — the live
/// one, else its tombstone — keeping its sequence number, op id, parking
/// and refusal count. A row whose record is gone (neither live nor a
/// tombstone) yielded no change and is dropped. The counter starts at the
/// last number the old store's key generator issued (learnt by adding one
/// more row: it gets the next), so no number is ever issued twice, not
/// even one already acknowledged; then `outbox` is deleted.
async fn outbox_onto_records_v3(db: IdbDatabase, tx: IdbTransaction) -> Result<(), JsValue> {
    let store = |name: &str| tx.object_store(name);
    let (conversations, messages, tombstones) =
        (store(CONVERSATIONS)?, store(MESSAGES)?, store(TOMBSTONES)?);
    for records in [&conversations, &messages, &tombstones] {
        index(
            records,
            OUTBOX_INDEX,
            &["outbox.parked", "outbox.seq"],
            false,
        )?;
    }
    let outbox = store(OUTBOX)?;
    // The generator's next number is one above the last it issued (the
    // probe row itself goes with the store).
    let probe = wait(&outbox.add(&js_sys::Object::new())?).await?;
    let last_issued = probe.as_f64().unwrap_or(1.0) - 1.0;

    let (mut moved, mut dropped) = (0u64, 0u64);
    let mut after: Option<f64> = None;
    loop {
        let range = match after {
            Some(seq) => web_sys::IdbKeyRange::lower_bound_with_open(&seq.into(), true)?.into(),
            None => JsValue::UNDEFINED,
        };
        let rows: Array = wait(&outbox.get_all_with_key_and_limit(&range, MOVE_PAGE)?)
            .await?
            .unchecked_into();
        // Every lookup of the page is issued before the first is awaited.
        let mut lookups = Vec::new();
        for row in rows.iter() {
            after = Some(codec::get_f64(&row, "seq").map_err(store_error)?);
            let Ok(entity) = codec::get_str(&row, "entity") else {
                // The probe row.
                continue;
            };
            let kind = codec::get_str(&row, "kind").map_err(store_error)?;
            let live: &IdbObjectStore = if kind == "conversation" {
                &conversations
            } else {
                &messages
            };
            let id = JsValue::from_str(&entity);
            let tombstone = key(&[JsValue::from_str(&kind), id.clone()]);
            lookups.push((row, live.get(&id)?, tombstones.get(&tombstone)?, live));
        }
        for (row, live_request, tombstone_request, live) in lookups {
            let found = wait(&live_request).await?;
            let (record, home) = if found.is_undefined() {
                (wait(&tombstone_request).await?, &tombstones)
            } else {
                (found, live)
            };
            if record.is_undefined() {
                dropped += 1;
                continue;
            }
            codec::set_entry(
                &record,
                Some(&codec::entry_from_v2(&row).map_err(store_error)?),
            );
            home.put(&record)?;
            moved += 1;
        }
        if rows.length() < MOVE_PAGE {
            break;
        }
    }
    store(META)?.put_with_key(
        &codec::last_seq_value(last_issued),
        &JsValue::from_str(SEQ_KEY),
    )?;
    db.delete_object_store(OUTBOX)?;
    tracing::info!(
        moved,
        dropped,
        last_issued,
        "moved the outbox onto its records"
    );
    Ok(())
}

/// A decoding failure inside a migration, as the JS error that aborts it.
fn store_error(e: chatvault_store::StoreError) -> JsValue {
    js_sys::Error::new(&format!("migrating the outbox: {e}")).into()
}
