//! Vaults written before parked changes were outbox rows: their refused
//! changes lived in one metadata value, `sync.deadLetters`. Opening one
//! moves them into parked outbox rows, so they stay unsynced (resync and
//! retention keep them) and can still be listed, retried or discarded.
//!
//! `crates/chatvault-sqlite/tests/fixtures/v2-dead-letters.db` was written by the ignored test
//! `make_v2_dead_letters_fixture` below with the code of store schema 2
//! (a real server refused one oversized message); it is never
//! regenerated.

use std::path::PathBuf;
use std::sync::Arc;

use chatvault::{
    ManualClock, NewConversation, NewMessage, Role, SqliteOptions, SqliteStore, Store, Vault,
};
use chatvault_sync::SyncClient;

use crate::common::{clock_at, options, vault_options, TestServer, PASS};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../chatvault-sqlite/tests/fixtures/v2-dead-letters.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run once with the code of schema 2"]
async fn make_v2_dead_letters_fixture() {
    let server = TestServer::start_with(|c| c.max_body_bytes = 32 * 1024).await;
    let path = fixture();
    assert!(!path.exists(), "fixtures are never regenerated");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let clock: Arc<ManualClock> = clock_at(&server);
    let vault = Arc::new(
        Vault::open_encrypted(store, PASS, vault_options(clock))
            .await
            .unwrap(),
    );
    let sync = SyncClient::register(vault.clone(), &server.url(), "legacy", PASS, options())
        .await
        .unwrap();
    let conv = vault
        .create_conversation(NewConversation::titled("legacy"))
        .await
        .unwrap();
    vault
        .add_message(conv.id, NewMessage::new(Role::Tool, "x".repeat(64 * 1024)))
        .await
        .unwrap();
    vault
        .add_message(conv.id, NewMessage::new(Role::User, "small"))
        .await
        .unwrap();
    let report = sync.sync_once().await.unwrap();
    assert_eq!(report.push.dead_lettered, 1);
    assert_eq!(sync.dead_letters().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_vaults_dead_letter_is_parked_listed_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    std::fs::copy(fixture(), &path).unwrap();
    let server = TestServer::start().await;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let vault = Arc::new(
        Vault::open_encrypted(store, PASS, vault_options(clock_at(&server)))
            .await
            .unwrap(),
    );
    assert_eq!(
        vault.replica().sync_meta("sync.deadLetters").await.unwrap(),
        None
    );
    assert_eq!(vault.replica().outbox_counts().await.unwrap(), (0, 1));
    let sync = SyncClient::register(vault.clone(), &server.url(), "legacy", PASS, options())
        .await
        .unwrap();
    let dead = sync.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].reason,
        chatvault_sync::RejectReason::PayloadTooLarge
    );
    assert_eq!(sync.status().borrow().dead_letters, 1);
    // This server takes 4 MiB: retried, it syncs.
    assert!(sync.retry_dead_letter(dead[0].op_id).await.unwrap());
    let report = sync.sync_once().await.unwrap();
    assert!(report.push.applied >= 1, "{report:?}");
    assert!(sync.dead_letters().await.unwrap().is_empty());
    let m = vault.message(dead[0].entity_id.message()).await.unwrap();
    assert_eq!(m.content.len(), 64 * 1024);
}
