//! Stores written by older chatvault versions open, are backed up and
//! migrated without losing anything; stores from a newer chatvault are
//! refused without being touched.
//!
//! `fixtures/v1.db` is a small vault written by the code of schema 1 (see
//! `fixtures/README.md`); it is never regenerated.

// Native files in temporary directories; the browser runs tests/opfs.rs.
#![cfg(not(target_family = "wasm"))]

use chatvault_core::{
    Body, ConversationRecord, EntityKind, Hlc, Incoming, MessageId, MessageRecord, UserId,
};
use chatvault_sqlite::{SqliteOptions, SqliteStore, SCHEMA_VERSION};
use chatvault_store::{Store, StoreError, TombstoneQuery, WriteBatch, WriteOp};
use rusqlite::Connection;
use std::path::{Path, PathBuf};

fn fixture_v1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1.db")
}

/// A copy of the v1 fixture in a fresh directory.
fn copy_of_v1() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    std::fs::copy(fixture_v1(), &path).unwrap();
    (dir, path)
}

fn user_version(path: &Path) -> u32 {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

/// `(conversation id, message count, message bytes)` recomputed from the
/// messages themselves, sorted.
fn recomputed_totals(conn: &Connection) -> Vec<(Vec<u8>, i64, i64)> {
    let mut stmt = conn
        .prepare(
            "SELECT conversation_id, count(*), sum(length(body)) FROM messages \
             GROUP BY conversation_id ORDER BY conversation_id",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

fn cached_totals(conn: &Connection) -> Vec<(Vec<u8>, i64, i64)> {
    let mut stmt = conn
        .prepare(
            "SELECT conversation_id, messages, bytes FROM conversation_totals \
             ORDER BY conversation_id",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

#[test]
fn the_fixture_is_schema_1() {
    assert_eq!(user_version(&fixture_v1()), 1);
}

#[tokio::test]
async fn v1_store_is_backed_up_migrated_and_keeps_everything() {
    let (dir, path) = copy_of_v1();
    let before = {
        let conn = Connection::open(&path).unwrap();
        recomputed_totals(&conn)
    };
    assert_eq!(before.len(), 3, "messages of three conversations");

    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();

    // The backup is the untouched v1 store.
    let backup = dir.path().join("vault.db.v1.bak");
    assert!(backup.exists(), "backup written before migrating");
    assert_eq!(user_version(&backup), 1);
    assert_eq!(
        recomputed_totals(&Connection::open(&backup).unwrap()),
        before
    );

    // Everything is still there, counted by the new cached totals.
    let usage = store.usage().await.unwrap();
    assert_eq!(
        (
            usage.conversations,
            usage.messages,
            usage.tombstones,
            usage.pending_changes
        ),
        (3, 5, 2, 1)
    );
    let per: Vec<u64> = usage.per_conversation.iter().map(|c| c.messages).collect();
    assert_eq!(per, [1, 1, 3], "most recent activity first");
    assert_eq!(
        usage.per_conversation.iter().map(|c| c.bytes).sum::<u64>(),
        usage.bytes
    );
    let pending: Vec<bool> = usage.per_conversation.iter().map(|c| c.pending).collect();
    assert_eq!(pending, [true, false, false]);
    let tombstones = store
        .tombstones(&TombstoneQuery {
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(tombstones.len(), 2);
    drop(store);

    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(cached_totals(&conn), before, "backfilled from the messages");
    drop(conn);

    // Reopening finds nothing to migrate and writes no new backup.
    std::fs::remove_file(&backup).unwrap();
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert!(!backup.exists());
    assert_eq!(store.usage().await.unwrap(), usage);
}

#[tokio::test]
async fn a_store_from_a_newer_chatvault_is_refused_and_left_untouched() {
    let (dir, path) = copy_of_v1();
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(!dir.path().join("vault.db-wal").exists());
    let bytes = std::fs::read(&path).unwrap();

    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                supported: SCHEMA_VERSION
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "store schema version 99 is newer than this program supports ({SCHEMA_VERSION}); upgrade chatvault"
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "not a byte changed");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "vault.db")
        .collect();
    assert!(leftovers.is_empty(), "no backup or journal: {leftovers:?}");
}

/// A schema-2 vault kept refused changes in meta `sync.deadLetters`, out
/// of the outbox (so resync and retention took them for synced). Schema 3
/// moves each into a parked outbox row and removes the list.
#[tokio::test]
async fn v2_dead_letters_become_parked_outbox_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-dead-letters.db");
    std::fs::copy(fixture, &path).unwrap();
    assert_eq!(user_version(&path), 2);

    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(store.meta("sync.deadLetters").await.unwrap(), None);
    assert_eq!(store.outbox(10).await.unwrap(), vec![], "not pending");
    let parked = store.parked(None, 10).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    let p = &parked[0];
    assert_eq!(p.change.kind, EntityKind::Message);
    assert_eq!(p.reason.code, "payload_too_large");
    assert!(p.reason.message.contains("32768"), "{}", p.reason.message);
    assert_eq!(p.attempts, 1);
    let message = store
        .message(p.change.entity_id.message())
        .await
        .unwrap()
        .expect("the refused message is in the vault");
    assert!(message.body.len() > 64 * 1024);
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.pending_changes, usage.parked_changes), (0, 1));
    assert!(
        usage.per_conversation[0].pending,
        "retention sees it unsynced"
    );
}

/// Schema 4 keeps each conversation's deletion mark in its own table, so it
/// outlives a recreation. A conversation tombstone of an older store
/// ("Doomed" in the v1 fixture) is its mark from the first open: a message
/// merged at or below it loses as before, and a recreation moves it into
/// the table instead of losing it.
#[tokio::test]
async fn v1_conversation_tombstones_become_deletion_marks() {
    let (_dir, path) = copy_of_v1();
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let tombstones = store
        .tombstones(&TombstoneQuery {
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    let doomed: Vec<_> = tombstones
        .iter()
        .filter(|t| t.kind == EntityKind::Conversation)
        .collect();
    assert_eq!(doomed.len(), 1, "{tombstones:?}");
    let doomed = doomed[0];
    let id = doomed.id.conversation();
    assert_eq!(
        store.deletion_mark(id).await.unwrap(),
        Some(doomed.version),
        "the tombstone is the mark"
    );
    for live in store.usage().await.unwrap().per_conversation {
        assert_eq!(store.deletion_mark(live.id).await.unwrap(), None);
    }

    let late = MessageRecord {
        id: MessageId::new(),
        conversation_id: id,
        created_at: doomed.deleted_at,
        updated_at: doomed.deleted_at,
        version: doomed.version,
        body: Body(b"from before the deletion".to_vec()),
    };
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Merge(Incoming::Message(late.clone())));
    let outcome = store.write(batch).await.unwrap();
    assert_eq!(outcome.superseded, 1, "covered by the old tombstone");
    assert_eq!(store.message(late.id).await.unwrap(), None);

    let recreated = ConversationRecord {
        id,
        user_id: UserId::local(),
        created_at: doomed.deleted_at,
        updated_at: doomed.deleted_at,
        version: Hlc::new(doomed.version.wall_ms() + 1, 0, doomed.version.device()).unwrap(),
        body: Body(b"recreated".to_vec()),
    };
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Merge(Incoming::Conversation(recreated)));
    batch.push(WriteOp::Merge(Incoming::Message(late.clone())));
    let outcome = store.write(batch).await.unwrap();
    assert_eq!((outcome.merged, outcome.superseded), (1, 1));
    assert_eq!(store.deletion_mark(id).await.unwrap(), Some(doomed.version));
    drop(store);
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert!(store.conversation(id).await.unwrap().is_some(), "recreated");
    assert_eq!(
        store.deletion_mark(id).await.unwrap(),
        Some(doomed.version),
        "kept past the recreation"
    );
}
