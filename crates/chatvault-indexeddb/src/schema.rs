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
//! # Layout (version 2)
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
//! - `outbox`, key `seq` (auto-increment: never reused, not even after
//!   `clear`); indexes `entity` (unique: one change per record), `conv`
//!   and `state` on `[parked, seq]` (pending or parked, oldest first).
//! - `totals`, key `conv`: per conversation, its messages' count and body
//!   bytes, kept by every write; the row with the empty key holds the body
//!   bytes of every live record (the quota check and `usage`).
//! - `meta`, out-of-line string keys: the vault's small key-value table.
//! - `marks`, key `conv` (version 2): per conversation, its kept deletion
//!   mark `version` — the highest stamp it was deleted at by deletions
//!   learnt from elsewhere and by tombstones a recreation replaced. A
//!   conversation's tombstone counts as its mark while it lies there (so
//!   a local one re-stamped lower counts at its new stamp, and a version-1
//!   tombstone needs no backfill); it moves into `marks` when a recreation
//!   replaces it.

use wasm_bindgen::JsValue;
use web_sys::{IdbDatabase, IdbIndexParameters, IdbObjectStoreParameters, IdbTransaction};

pub(crate) const CONVERSATIONS: &str = "conversations";
pub(crate) const MESSAGES: &str = "messages";
pub(crate) const TOMBSTONES: &str = "tombstones";
pub(crate) const OUTBOX: &str = "outbox";
pub(crate) const TOTALS: &str = "totals";
pub(crate) const META: &str = "meta";
pub(crate) const MARKS: &str = "marks";

/// Every object store, for transactions that span them all.
pub(crate) const ALL_STORES: [&str; 7] = [
    CONVERSATIONS,
    MESSAGES,
    TOMBSTONES,
    OUTBOX,
    TOTALS,
    META,
    MARKS,
];

/// One migration: from the version before it to its own.
type Migration = fn(&IdbDatabase, &IdbTransaction) -> Result<(), JsValue>;

/// Migration `i` brings the database from version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[create_v1, add_marks_v2];

/// The schema version this build writes (the IndexedDB database version).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies every migration after `old` (0 for a database that did not
/// exist), in order, inside the versionchange transaction `tx`.
pub(crate) fn upgrade(db: &IdbDatabase, tx: &IdbTransaction, old: u32) -> Result<(), JsValue> {
    for (from, migrate) in MIGRATIONS.iter().enumerate().skip(old as usize) {
        tracing::info!(from, to = from + 1, "migrating the IndexedDB store");
        migrate(db, tx)?;
    }
    Ok(())
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
