//! `migrateVault`: a vault moved whole between the two browser backends —
//! IndexedDB and SQLite on OPFS — with [`Vault::migrate`] (sealed records,
//! the outbox pending and parked, every setting), verified by counts
//! before the source is deleted, and only if the caller asked for that.
//!
//! Neither backend's database may be open meanwhile (close the vault
//! first): OPFS allows one store per database in a worker, and a copy
//! whose source changes under it fails rather than lose the change.

use crate::boundary::{invalid, json, promise, Failure};
use crate::lifecycle::relayed;
use crate::vault::{open_sqlite_store, open_store};
use chatvault::{CopyReport, Store, Vault};
use chatvault_indexeddb::IndexedDbStore;
use js_sys::{Function, Promise};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::prelude::*;

/// What `migrateVault` takes besides the name.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MigrateOptions {
    /// The backend the vault is in: `"indexeddb"` or `"opfs-sqlite"`.
    from: String,
    /// The backend to move it to (the other one).
    to: String,
    /// Delete the source database once the copy is verified.
    #[serde(default)]
    delete_source: bool,
    /// The target's durability, as for `openVault`.
    durability: Option<String>,
}

/// What `migrateVault` resolves to (JSON): the copy's verified counts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MigrateAnswer {
    conversations: u64,
    messages: u64,
    tombstones: u64,
    deletion_marks: u64,
    pending_changes: u64,
    parked_changes: u64,
    meta_entries: u64,
    bytes: u64,
    batches: u64,
    /// The target held an incomplete earlier migration, started over.
    restarted: bool,
    /// The source database was deleted (`deleteSource`).
    source_deleted: bool,
}

impl MigrateAnswer {
    fn new(r: CopyReport, source_deleted: bool) -> Self {
        Self {
            conversations: r.conversations,
            messages: r.messages,
            tombstones: r.tombstones,
            deletion_marks: r.deletion_marks,
            pending_changes: r.pending_changes,
            parked_changes: r.parked_changes,
            meta_entries: r.meta_entries,
            bytes: r.bytes,
            batches: r.batches,
            restarted: r.restarted,
            source_deleted,
        }
    }
}

/// Which browser backend a vault is in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    IndexedDb,
    OpfsSqlite,
}

fn backend(name: &str) -> Result<Backend, Failure> {
    match name {
        "indexeddb" => Ok(Backend::IndexedDb),
        "opfs-sqlite" => Ok(Backend::OpfsSqlite),
        other => Err(invalid(format!(
            "backend {other:?}: expected \"indexeddb\" or \"opfs-sqlite\""
        ))),
    }
}

async fn open(
    which: Backend,
    name: &str,
    durability: Option<&str>,
) -> Result<Arc<dyn Store>, Failure> {
    Ok(match which {
        Backend::IndexedDb => open_store(name, durability).await? as Arc<dyn Store>,
        Backend::OpfsSqlite => open_sqlite_store(name, durability).await?,
    })
}

/// Deletes the database `name` of `which` (its store must be closed).
async fn delete(which: Backend, name: &str) -> Result<(), Failure> {
    match which {
        Backend::IndexedDb => IndexedDbStore::delete(name).await?,
        Backend::OpfsSqlite => delete_sqlite(name).await?,
    }
    Ok(())
}

#[cfg(feature = "opfs")]
async fn delete_sqlite(name: &str) -> Result<(), Failure> {
    Ok(chatvault_sqlite::SqliteStore::delete(name).await?)
}

#[cfg(not(feature = "opfs"))]
async fn delete_sqlite(name: &str) -> Result<(), Failure> {
    // Reached only after opening it succeeded, which this build cannot.
    Err(invalid(format!(
        "cannot delete {name:?}: no SQLite backend"
    )))
}

/// Copies the vault `name` from backend `from` to backend `to` (both
/// `"indexeddb"` or `"opfs-sqlite"`; the same name in both), exactly —
/// records stay sealed, no passphrase is needed, pending and parked
/// changes keep their numbers — and verifies the copy by its counts. Only
/// then, with `deleteSource: true`, deletes the source database; until
/// then the source is untouched and stays the vault to open. `options` is
/// JSON: `{from, to, deleteSource?, durability?}`; `onProgress({phase:
/// "migrating", done, total})` is called as rows are copied.
///
/// Resolves to the counts (JSON); rejects with `target_not_empty` (the
/// target already holds a vault: nothing was copied),
/// `incomplete_migration` (the source is itself an unfinished copy),
/// `copy_mismatch`, `unsupported` (OPFS outside a dedicated worker, or a
/// build without SQLite), `invalid`... A copy that stopped midway leaves
/// the target marked incomplete (it never opens as a vault); calling
/// `migrateVault` again starts it over.
#[wasm_bindgen(js_name = migrateVault)]
pub fn migrate_vault(name: String, options: String, on_progress: Option<Function>) -> Promise {
    promise(async move {
        let options: MigrateOptions = crate::boundary::parse("migration options", &options)?;
        let (from, to) = (backend(&options.from)?, backend(&options.to)?);
        if from == to {
            return Err(invalid(format!(
                "from and to are both {:?}: a migration moves a vault to the other backend",
                options.from
            )));
        }
        let source = open(from, &name, None).await?;
        let target = open(to, &name, options.durability.as_deref()).await?;
        let copied: Rc<RefCell<Option<CopyReport>>> = Rc::default();
        let outcome = relayed(
            on_progress,
            100,
            || {},
            |progress| {
                let (source, target, copied) = (&source, &target, Rc::clone(&copied));
                async move {
                    let report = Vault::migrate(&**source, &**target, progress).await?;
                    *copied.borrow_mut() = Some(report);
                    Ok(JsValue::UNDEFINED)
                }
            },
        )
        .await;
        // Closed before the source can be deleted (and so that the vault
        // can be opened in either backend as soon as this resolves).
        drop(target);
        drop(source);
        outcome?;
        let report = copied
            .borrow_mut()
            .take()
            .ok_or_else(|| invalid("the migration reported nothing".into()))?;
        let deleted = if options.delete_source {
            delete(from, &name).await?;
            true
        } else {
            false
        };
        tracing::info!(name, ?from, ?to, deleted, "migrated a vault");
        json(&MigrateAnswer::new(report, deleted))
    })
}
