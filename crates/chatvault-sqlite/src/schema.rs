//! The SQLite schema, its version, and the checks made when a file is
//! opened: is it a chatvault store, is it from a version we can read, does
//! it need migrating.
//!
//! Ids are stored as 16-byte blobs, times as integer milliseconds, versions
//! as their fixed-width text form (which sorts like the stamps). Indexes
//! exist for exactly the queries the store runs.
//!
//! # Versions
//! The schema version lives in `PRAGMA user_version`. [`MIGRATIONS`] lists
//! the steps; opening an older store first copies it to `NAME.v{N}.bak`
//! (`VACUUM INTO`), then runs every missing step in **one** transaction
//! that also sets the new version, so a failure leaves the store exactly
//! at its old version. A store from a newer chatvault is refused before
//! anything is written.
//!
//! - **1** — meta, conversations, messages, tombstones, outbox.
//! - **2** — `conversation_totals`: message count and body bytes per
//!   conversation, kept by the write path, so stats and retention planning
//!   read one row per conversation instead of scanning every message.
//!   Keyed by conversation id whether or not the conversation itself has
//!   arrived yet, so messages synced ahead of their conversation are
//!   counted too. Backfilled from `messages` by the migration.
//! - **3** — parked outbox entries: `outbox.parked_at` (set while the
//!   server's refusal parks the change; `NULL` while it is pending),
//!   `parked_code`, `parked_message` and `attempts` (refusals so far).
//!   A parked change stays in the outbox, so it counts as unsynced for
//!   resync and retention. The migration also moves the sync client's old
//!   dead-letter list (the JSON array in meta `sync.deadLetters`, written
//!   by schema-2 code) into parked rows and removes it: see
//!   [`adopt_legacy_dead_letters`].
//! - **4** — `deletion_marks`: per conversation, the highest stamp it was
//!   deleted at by deletions learnt from elsewhere and by tombstones a
//!   recreation replaced, so it outlives the recreation (messages stamped
//!   at or below it stay covered, and a restored server is told of it
//!   again). A conversation's tombstone counts as its mark while it lies
//!   there, so nothing is backfilled: an older store's tombstones move
//!   into the table when a recreation replaces them.
//! - **5** — a lighter outbox. Each record and tombstone row carries the
//!   sequence number of its last queued change (`pending_seq`, a pointer
//!   into the outbox), and `outbox` becomes a plain table keyed by that
//!   sequence number, without the unique entity index and the conversation
//!   index it needed to find a record's entry: a queued write now adds one
//!   B-tree entry instead of three, and an acknowledgement deletes one.
//!   A new sequence number is one above both the highest entry and
//!   `outbox_counter` (one row), which a trigger raises to every number
//!   deleted from the outbox (acknowledged, replaced, dropped, cleared):
//!   numbers are never reused, not even after `clear`, and a write that
//!   queues changes does not write the counter. That is what makes a
//!   pointer left behind by an acknowledgement harmless: it can only point
//!   at nothing. The migration points every record at its entry, drops
//!   entries with neither record nor tombstone (they could never be sent)
//!   and carries on the old AUTOINCREMENT counter.

use crate::convert::sql_err;
use crate::{Durability, SqliteOptions};
use chatvault_core::{ConversationId, EntityKind, OpId, RecordId, Timestamp};
use chatvault_store::{Result, StoreError};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

/// Current schema version, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// `PRAGMA application_id` marking a chatvault store ("CVST").
const APPLICATION_ID: i32 = 0x4356_5354;

/// Migrations, in order: `MIGRATIONS[n]` takes a store from version `n` to
/// `n + 1`. Version 0 is an empty file.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// The index in [`MIGRATIONS`] of the step after which
/// [`adopt_legacy_dead_letters`] runs (in the same transaction).
const PARKING_STEP: usize = 2;

const V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE conversations (
    id          BLOB PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    activity_at INTEGER NOT NULL,
    version     TEXT    NOT NULL,
    body        BLOB    NOT NULL
);
CREATE INDEX conversations_by_activity ON conversations (activity_at, id);

CREATE TABLE messages (
    id              BLOB PRIMARY KEY,
    conversation_id BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         TEXT    NOT NULL,
    body            BLOB    NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at, id);

CREATE TABLE tombstones (
    kind            TEXT    NOT NULL,
    id              BLOB    NOT NULL,
    conversation_id BLOB,
    version         TEXT    NOT NULL,
    deleted_at      INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX tombstones_by_conversation ON tombstones (conversation_id)
    WHERE conversation_id IS NOT NULL;

CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id       BLOB NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    conversation_id BLOB,
    op_id           BLOB NOT NULL
);
CREATE INDEX outbox_by_conversation ON outbox (conversation_id)
    WHERE conversation_id IS NOT NULL;
";

const V2: &str = "
CREATE TABLE conversation_totals (
    conversation_id BLOB PRIMARY KEY,
    messages        INTEGER NOT NULL,
    bytes           INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO conversation_totals (conversation_id, messages, bytes)
    SELECT conversation_id, count(*), sum(length(body)) FROM messages GROUP BY conversation_id;
";

const V3: &str = "
ALTER TABLE outbox ADD COLUMN parked_at INTEGER;
ALTER TABLE outbox ADD COLUMN parked_code TEXT;
ALTER TABLE outbox ADD COLUMN parked_message TEXT;
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
";

const V4: &str = "
CREATE TABLE deletion_marks (
    conversation_id BLOB PRIMARY KEY,
    version         TEXT NOT NULL
) WITHOUT ROWID;
";

const V5: &str = "
CREATE TABLE outbox_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO outbox_counter (id, last)
    SELECT 1, coalesce((SELECT max(seq) FROM sqlite_sequence WHERE name = 'outbox'), 0);

ALTER TABLE conversations ADD COLUMN pending_seq INTEGER;
ALTER TABLE messages ADD COLUMN pending_seq INTEGER;
ALTER TABLE tombstones ADD COLUMN pending_seq INTEGER;
UPDATE conversations SET pending_seq =
        (SELECT seq FROM outbox WHERE entity_id = conversations.id AND kind = 'conversation')
    WHERE id IN (SELECT entity_id FROM outbox WHERE kind = 'conversation');
UPDATE messages SET pending_seq =
        (SELECT seq FROM outbox WHERE entity_id = messages.id AND kind = 'message')
    WHERE id IN (SELECT entity_id FROM outbox WHERE kind = 'message');
UPDATE tombstones SET pending_seq =
        (SELECT seq FROM outbox WHERE entity_id = tombstones.id AND kind = tombstones.kind)
    WHERE (kind, id) IN (SELECT kind, entity_id FROM outbox);

CREATE TABLE outbox_v5 (
    seq             INTEGER PRIMARY KEY,
    entity_id       BLOB    NOT NULL,
    kind            TEXT    NOT NULL,
    conversation_id BLOB,
    op_id           BLOB    NOT NULL,
    parked_at       INTEGER,
    parked_code     TEXT,
    parked_message  TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0
);
INSERT INTO outbox_v5 (seq, entity_id, kind, conversation_id, op_id,
                       parked_at, parked_code, parked_message, attempts)
    SELECT seq, entity_id, kind, conversation_id, op_id,
           parked_at, parked_code, parked_message, attempts
    FROM outbox o
    WHERE seq IN (SELECT pending_seq FROM conversations WHERE pending_seq IS NOT NULL
                  UNION ALL SELECT pending_seq FROM messages WHERE pending_seq IS NOT NULL
                  UNION ALL SELECT pending_seq FROM tombstones WHERE pending_seq IS NOT NULL);
DROP TABLE outbox;
ALTER TABLE outbox_v5 RENAME TO outbox;
CREATE TRIGGER outbox_counter_keeps_up AFTER DELETE ON outbox BEGIN
    UPDATE outbox_counter SET last = max(last, old.seq) WHERE id = 1;
END;
";

/// The metadata key where schema-2 sync clients kept refused changes.
const LEGACY_DEAD_LETTERS: &str = "sync.deadLetters";

/// One element of the legacy `sync.deadLetters` array (the fields the
/// parked row needs; the rest — version, delete — is read from the record
/// itself, as for every outbox entry).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyDeadLetter {
    op_id: OpId,
    kind: EntityKind,
    entity_id: RecordId,
    #[serde(default)]
    conversation_id: Option<ConversationId>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    at: Timestamp,
    #[serde(default)]
    attempts: u32,
}

/// Moves the schema-2 dead-letter list into parked outbox rows, inside the
/// migration's transaction, and removes the list. A letter whose record
/// (and tombstone) is gone, or whose record has a newer pending change,
/// adds nothing. An unreadable list is left where it is (logged), so a
/// person can still recover it; it never stops the vault from opening.
fn adopt_legacy_dead_letters(tx: &Connection) -> Result<()> {
    let value: Option<Vec<u8>> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [LEGACY_DEAD_LETTERS],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?;
    let Some(bytes) = value else {
        return Ok(());
    };
    let letters: Vec<serde_json::Value> = match serde_json::from_slice(&bytes) {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "the old dead-letter list is unreadable; left in meta sync.deadLetters");
            return Ok(());
        }
    };
    let mut adopted = 0usize;
    for raw in letters {
        let letter: LegacyDeadLetter = match serde_json::from_value(raw) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable old dead letter");
                continue;
            }
        };
        let id = &letter.entity_id.as_bytes()[..];
        let table = match letter.kind {
            EntityKind::Conversation => "conversations",
            EntityKind::Message => "messages",
        };
        let exists: bool = tx
            .query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1) \
                     OR EXISTS (SELECT 1 FROM tombstones WHERE kind = ?2 AND id = ?1)"
                ),
                params![id, letter.kind.as_str()],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        if !exists {
            continue;
        }
        // A record written again after its refusal is pending already:
        // that newer change wins (OR IGNORE on the unique entity id).
        adopted += tx
            .execute(
                "INSERT OR IGNORE INTO outbox (entity_id, kind, conversation_id, op_id, \
                 parked_at, parked_code, parked_message, attempts) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id,
                    letter.kind.as_str(),
                    letter.conversation_id.map(|c| c.as_bytes().to_vec()),
                    &letter.op_id.as_bytes()[..],
                    letter.at.as_millis(),
                    letter.reason,
                    letter.message,
                    letter.attempts.max(1),
                ],
            )
            .map_err(sql_err)?;
    }
    tx.execute("DELETE FROM meta WHERE key = ?1", [LEGACY_DEAD_LETTERS])
        .map_err(sql_err)?;
    tracing::info!(
        adopted,
        "moved the old dead-letter list into parked outbox entries"
    );
    Ok(())
}

/// The page size of a new database on OPFS (see `open`).
#[cfg(target_family = "wasm")]
const OPFS_PAGE_SIZE: i64 = 16 * 1024;

/// The smallest cap (`SqliteOptions::max_bytes`) a new OPFS database takes
/// [`OPFS_PAGE_SIZE`] pages with.
#[cfg(target_family = "wasm")]
const OPFS_BIG_PAGES_FROM: u64 = 16 << 20;

/// Opens `path`, verifies it, applies pragmas and brings the schema up to
/// [`SCHEMA_VERSION`]. On OPFS (`opfs` feature, wasm32) `path` is the
/// database's name in the worker's pool, and the pool must be installed
/// (`opfs::install`) first.
pub(crate) fn open(path: &Path, options: SqliteOptions) -> Result<Connection> {
    let mut conn = connect(path, options)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
    // Plans that never depend on bound values: without this, SQLite
    // re-parses and re-plans a statement whenever a value bound to an
    // indexed comparison changes — every page read, since each names
    // another conversation (a tenth of a page read's time, measured).
    // The store's queries are all plain index lookups and range scans.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(sql_err)?;

    let not_chatvault = |source: rusqlite::Error| StoreError::Corrupt {
        detail: format!("{} is not a readable chatvault store", path.display()),
        source: Some(source.into()),
    };
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(not_chatvault)?;
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(not_chatvault)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(not_chatvault)?;
    if app_id != APPLICATION_ID && (app_id != 0 || objects > 0) {
        return Err(StoreError::corrupt(format!(
            "{} is not a chatvault store: it belongs to another application",
            path.display()
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }

    // OPFS: every WAL frame is two calls out to the sync access handle
    // (its header, its page), so bigger pages mean fewer calls per write
    // (a 10,000-message write: 460 → 380 ms, BENCHMARKS.md). Only a new
    // database takes it: the page size is fixed once it holds anything,
    // and in WAL mode. A store capped under `OPFS_BIG_PAGES_FROM` keeps
    // SQLite's 4 KiB pages: its cap counts in pages, and its schema alone
    // would take a few hundred KiB of big ones. The automatic checkpoint
    // stays at SQLite's 4 MiB of log (1,000 pages of 4 KiB) either way.
    #[cfg(target_family = "wasm")]
    if objects == 0
        && options
            .max_bytes
            .is_none_or(|max| max >= OPFS_BIG_PAGES_FROM)
    {
        conn.pragma_update(None, "page_size", OPFS_PAGE_SIZE)
            .map_err(sql_err)?;
    }
    write_ahead_log(&conn, path)?;
    #[cfg(target_family = "wasm")]
    {
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(sql_err)?;
        conn.pragma_update(None, "wal_autocheckpoint", (4 << 20) / page_size.max(512))
            .map_err(sql_err)?;
    }
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(sql_err)?;
    // Keep the WAL from growing without bound between checkpoints.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(sql_err)?;
    // OPFS: `VACUUM`'s scratch copy in memory, not in a slot of the
    // worker's file pool (a fixed number of files).
    #[cfg(target_family = "wasm")]
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sql_err)?;

    if let Some(max) = options.max_bytes {
        let page_size: u64 = conn
            .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
            .map_err(sql_err)? as u64;
        conn.pragma_update(
            None,
            "max_page_count",
            (max / page_size.max(1)).max(1) as i64,
        )
        .map_err(sql_err)?;
    }

    if version < SCHEMA_VERSION {
        if version > 0 {
            backup_before_migration(&conn, path, version)?;
        }
        migrate(&mut conn, version, MIGRATIONS)?;
    }
    #[cfg(not(target_family = "wasm"))]
    make_sidecars_private(path);
    Ok(conn)
}

/// Puts the store in WAL mode and checks that SQLite really did: a
/// journal mode SQLite could not switch to is reported back, not raised,
/// and a store silently left in another mode would lose WAL's crash
/// behaviour and concurrency without anyone noticing.
///
/// On OPFS the WAL's index cannot live in shared memory (the VFS has
/// none), so the connection is put in `locking_mode=EXCLUSIVE` as soon as
/// it is opened (`opfs::connect`), which keeps the index on the heap;
/// without it SQLite stays in `DELETE` mode, and a WAL database written
/// earlier would not even open.
fn write_ahead_log(conn: &Connection, path: &Path) -> Result<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend {
            detail: format!(
                "{} cannot use write-ahead logging: SQLite kept journal_mode={mode}",
                path.display()
            ),
            source: None,
        });
    }
    Ok(())
}

/// Opens the connection to the file at `path`, creating it (private to its
/// owner) when `options.create` allows.
#[cfg(not(target_family = "wasm"))]
fn connect(path: &Path, options: SqliteOptions) -> Result<Connection> {
    let exists = path.exists();
    if !exists && !options.create {
        return Err(StoreError::Unavailable {
            detail: format!("no store at {}", path.display()),
            source: None,
        });
    }
    if !exists {
        // SQLite would create the file 0644 (less the umask): make it
        // private before any byte of the vault is in it.
        create_private(path, true)?;
    }
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::unavailable(path.display().to_string(), e))
}

/// Opens the connection to the database named `path` in the worker's OPFS
/// pool.
#[cfg(target_family = "wasm")]
fn connect(path: &Path, options: SqliteOptions) -> Result<Connection> {
    crate::opfs::connect(path, options.create)
}

/// SQLite gives the WAL and shared-memory files the database file's mode,
/// so they are private for a vault made private; one left 0644 by an older
/// build at least keeps its sidecars private from now on.
#[cfg(not(target_family = "wasm"))]
fn make_sidecars_private(path: &Path) {
    for suffix in ["-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = std::path::PathBuf::from(file);
        if let Err(e) = make_private(&file) {
            // Not fatal: a vault the user can write but not chmod (another
            // owner's directory) still opens, as it did before.
            tracing::warn!(file = %file.display(), error = %e, "cannot make a vault file private");
        }
    }
}

/// Creates an empty file that only its owner can read and write (on Unix;
/// elsewhere the directory's ACL decides). With `racing`, a file another
/// process created in the meantime is left as it is.
#[cfg(not(target_family = "wasm"))]
fn create_private(path: &Path, racing: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => {}
        Err(e) if racing && e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(StoreError::unavailable(path.display().to_string(), e)),
    }
    // The mode given to `open` is reduced by the umask, never widened;
    // setting it again makes it exact.
    make_private(path)
}

/// Sets an existing file to 0600 (Unix only); a missing file is fine.
#[cfg(not(target_family = "wasm"))]
fn make_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::unavailable(path.display().to_string(), e));
            }
            _ => {}
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Copies the store next to itself (`NAME.v{version}.bak`) before a
/// migration touches it: natively a file beside the database, on OPFS a
/// database of that name in the same pool. Either way `VACUUM INTO` makes
/// it, through the same VFS as the store.
fn backup_before_migration(conn: &Connection, path: &Path, version: u32) -> Result<()> {
    let mut backup = path.as_os_str().to_owned();
    backup.push(format!(".v{version}.bak"));
    let backup = std::path::PathBuf::from(backup);
    prepare_backup_target(&backup)?;
    let target = backup.to_string_lossy().into_owned();
    conn.execute("VACUUM INTO ?1", [&target]).map_err(sql_err)?;
    tracing::info!(backup = %backup.display(), from = version, to = SCHEMA_VERSION, "backed up store before migration");
    Ok(())
}

/// Removes an older backup of the same name and creates the empty, private
/// file `VACUUM INTO` fills (it accepts an empty file; one made private
/// first keeps the copy as private as the vault).
#[cfg(not(target_family = "wasm"))]
fn prepare_backup_target(backup: &Path) -> Result<()> {
    if backup.exists() {
        std::fs::remove_file(backup)
            .map_err(|e| StoreError::unavailable(backup.display().to_string(), e))?;
    }
    create_private(backup, false)
}

/// Removes an older backup of the same name from the pool (`VACUUM INTO`
/// refuses a non-empty target).
#[cfg(target_family = "wasm")]
fn prepare_backup_target(backup: &Path) -> Result<()> {
    crate::opfs::remove(backup)
}

/// Runs every step of `migrations` from `from` on in one transaction that
/// also sets the new version: a failure leaves the store at its old
/// version, untouched.
fn migrate(conn: &mut Connection, from: u32, migrations: &[&str]) -> Result<()> {
    let to = migrations.len() as u32;
    let tx = conn.transaction().map_err(sql_err)?;
    for (step, sql) in migrations.iter().enumerate().skip(from as usize) {
        tx.execute_batch(sql).map_err(|e| {
            StoreError::backend(
                format!(
                    "migration of the store from schema {} to {} failed, the store was left at schema {from}",
                    step,
                    step + 1
                ),
                e,
            )
        })?;
        if step == PARKING_STEP {
            adopt_legacy_dead_letters(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", to)
        .map_err(sql_err)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    if from > 0 {
        tracing::info!(from, to, "migrated store schema");
    }
    Ok(())
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> u32 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let names = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<Vec<String>>>()
            .unwrap();
        names
    }

    #[test]
    fn a_failing_migration_leaves_the_old_version_intact() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, 0, &[V1]).unwrap();
        conn.execute("INSERT INTO meta (key, value) VALUES ('kept', x'01')", [])
            .unwrap();
        let before = tables(&conn);

        // The second step creates a table, then fails half-way.
        let broken = "CREATE TABLE half_done (x); UPDATE no_such_table SET x = 1;";
        let err = migrate(&mut conn, 1, &[V1, V2, broken]).unwrap_err();
        assert!(err.to_string().contains("left at schema 1"), "{err}");
        assert_eq!(version(&conn), 1);
        assert_eq!(tables(&conn), before, "no step of the failed run stays");
        let kept: Vec<u8> = conn
            .query_row("SELECT value FROM meta WHERE key = 'kept'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kept, [1]);

        // The real migrations still run afterwards.
        migrate(&mut conn, 1, MIGRATIONS).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        assert!(tables(&conn).contains(&"conversation_totals".to_owned()));
    }

    /// Schema 5 points each record and tombstone at its outbox entry and
    /// rebuilds the outbox keyed by sequence number: what was pending stays
    /// pending in the same order with the same op ids, what was parked
    /// stays parked with its reason and count, an entry of a record that is
    /// gone is dropped, new sequence numbers continue above every number
    /// the old outbox ever gave (acknowledged ones too), and coalescing,
    /// dequeueing and unparking find the migrated entries.
    #[test]
    fn schema_4_outbox_entries_move_onto_their_records() {
        use chatvault_core::{ChangeOp, DeviceId, Hlc, MessageId, MessageRecord};
        use chatvault_store::{OutboxItem, WriteBatch, WriteOp};

        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, 0, &MIGRATIONS[..4]).unwrap();
        let hlc = |t: u64| Hlc::new(t, 0, DeviceId(7)).unwrap().to_string();
        let (c1, c3) = ([1u8; 16], [3u8; 16]);
        let (m1, m2, m9) = ([0x11u8; 16], [0x12u8; 16], [0x19u8; 16]);
        conn.execute_batch(&format!(
            "INSERT INTO conversations (id, user_id, created_at, updated_at, activity_at, version, body)
                 VALUES (x'{c1}', 'local', 10, 10, 10, '{v10}', x'00');
             INSERT INTO messages (id, conversation_id, created_at, updated_at, version, body)
                 VALUES (x'{m1}', x'{c1}', 20, 20, '{v20}', x'6869');
             INSERT INTO tombstones (kind, id, conversation_id, version, deleted_at)
                 VALUES ('message', x'{m2}', x'{c1}', '{v30}', 30),
                        ('conversation', x'{c3}', NULL, '{v40}', 40);
             INSERT INTO outbox (seq, entity_id, kind, conversation_id, op_id)
                 VALUES (3, x'{m1}', 'message', x'{c1}', x'{a}');
             INSERT INTO outbox (seq, entity_id, kind, conversation_id, op_id,
                                 parked_at, parked_code, parked_message, attempts)
                 VALUES (5, x'{m2}', 'message', x'{c1}', x'{b}', 99, 'too_big', 'no', 2);
             INSERT INTO outbox (seq, entity_id, kind, conversation_id, op_id)
                 VALUES (7, x'{c3}', 'conversation', NULL, x'{c}'),
                        (8, x'{m9}', 'message', x'{c1}', x'{d}');
             UPDATE sqlite_sequence SET seq = 12 WHERE name = 'outbox';",
            c1 = hex(&c1),
            c3 = hex(&c3),
            m1 = hex(&m1),
            m2 = hex(&m2),
            m9 = hex(&m9),
            a = hex(&[0xa; 16]),
            b = hex(&[0xb; 16]),
            c = hex(&[0xc; 16]),
            d = hex(&[0xd; 16]),
            v10 = hlc(10),
            v20 = hlc(20),
            v30 = hlc(30),
            v40 = hlc(40),
        ))
        .unwrap();

        migrate(&mut conn, 4, MIGRATIONS).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let seqs = |conn: &mut Connection| -> Vec<(u64, OpId)> {
            crate::ops::outbox(conn, 10)
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.change.op_id))
                .collect()
        };
        let op = |b: u8| OpId::from_bytes([b; 16]);
        assert_eq!(seqs(&mut conn), vec![(3, op(0xa)), (7, op(0xc))]);
        let pending = crate::ops::outbox(&mut conn, 10).unwrap();
        assert!(matches!(pending[1].change.op, ChangeOp::Delete(_)));
        let parked = crate::ops::parked(&mut conn, None, 10).unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(
            (
                parked[0].seq,
                parked[0].reason.code.as_str(),
                parked[0].attempts
            ),
            (5, "too_big", 2)
        );
        let entries: i64 = conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(entries, 3, "the entry of a record that is gone is dropped");

        // A new change of m1 replaces its migrated entry, above every old
        // number (12 was given and acknowledged before the migration).
        let message = MessageRecord {
            id: MessageId::from_bytes(m1),
            conversation_id: ConversationId::from_bytes(c1),
            created_at: Timestamp(20),
            updated_at: Timestamp(50),
            version: Hlc::new(50, 0, DeviceId(7)).unwrap(),
            body: chatvault_core::Body(b"edited".to_vec()),
        };
        let item = |entity: RecordId, kind, op_id| OutboxItem {
            op_id,
            kind,
            entity_id: entity,
            conversation_id: None,
        };
        let write = |conn: &mut Connection, ops: Vec<WriteOp>| {
            crate::ops::write(conn, WriteBatch { ops }).unwrap();
        };
        write(
            &mut conn,
            vec![
                WriteOp::PutMessage(message),
                WriteOp::Enqueue(item(
                    MessageId::from_bytes(m1).into(),
                    EntityKind::Message,
                    op(0xe),
                )),
            ],
        );
        assert_eq!(seqs(&mut conn), vec![(7, op(0xc)), (13, op(0xe))]);
        write(
            &mut conn,
            vec![
                WriteOp::Dequeue(ConversationId::from_bytes(c3).into()),
                WriteOp::Unpark(MessageId::from_bytes(m2).into()),
            ],
        );
        assert_eq!(seqs(&mut conn), vec![(5, op(0xb)), (13, op(0xe))]);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn fresh_stores_get_every_step() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, 0, MIGRATIONS).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 5);
    }

    /// A database that cannot switch to WAL (an in-memory one keeps
    /// `memory`; on OPFS, one not locked exclusively keeps `delete`) is
    /// refused when opening, never used in another journal mode.
    #[test]
    fn a_journal_mode_other_than_wal_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        let err = write_ahead_log(&conn, Path::new("in-memory")).unwrap_err();
        assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("cannot use write-ahead logging: SQLite kept journal_mode=memory"),
            "{err}"
        );
    }
}
