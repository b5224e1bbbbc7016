//! Moving a vault between stores (`Vault::migrate`): an encrypted vault
//! goes SQLite → memory → SQLite and opens at the end with its passphrase,
//! every message readable, its outbox — pending and parked — exactly what
//! the sync client would have pushed before the move. A copy that fails
//! midway never opens as a vault and is started over by the next
//! migration; a target holding a vault is refused.

use chatvault::testing::{fast_options, FailingStore, Snapshot, PASSPHRASE, T0};
use chatvault::{
    ManualClock, MemoryStore, NewConversation, NewMessage, ParkReason, Progress, ProgressPhase,
    Role, SqliteOptions, SqliteStore, Store, StoreError, Vault, VaultError,
};
use std::sync::{Arc, Mutex};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

async fn open(store: Arc<dyn Store>, passphrase: &str) -> chatvault::Result<Vault> {
    let fast = fast_options(clock());
    Vault::builder()
        .store(store)
        .passphrase(passphrase)
        .kdf(fast.kdf, fast.kdf_policy)
        .clock(clock())
        .open()
        .await
}

/// Everything the vault shows — conversations and messages by id, with
/// their versions, and the pending outbox — which an exact copy keeps.
async fn contents(vault: &Vault) -> Snapshot {
    Snapshot::of(vault).await.expect("read the whole vault")
}

/// A vault with 5 conversations of 150 messages (more than one copy
/// batch), a deleted conversation and message, pending changes, two
/// parked ones and sync state.
async fn filled(store: Arc<dyn Store>) -> Vault {
    let vault = open(store, PASSPHRASE).await.unwrap();
    let mut ids = Vec::new();
    for c in 0..5 {
        let conv = vault
            .create_conversation(NewConversation::titled(format!("conversation {c}")))
            .await
            .unwrap();
        let batch = (0..150)
            .map(|m| NewMessage::new(Role::User, format!("message {m} of {c}")))
            .collect();
        ids.extend(vault.add_messages(conv.id, batch).await.unwrap());
        if c == 4 {
            vault.delete_conversation(conv.id).await.unwrap();
        }
    }
    vault.delete_message(ids[3].id).await.unwrap();
    let replica = vault.replica();
    let pending = replica.pending_changes(3).await.unwrap();
    let refused = pending
        .iter()
        .map(|e| {
            let reason = ParkReason {
                code: "payload_too_large".into(),
                message: "too big".into(),
                at: T0,
            };
            (e.seq, reason)
        })
        .take(2)
        .collect();
    replica.park(refused).await.unwrap();
    replica
        .set_sync_meta(
            chatvault::meta_keys::SYNC_CURSOR,
            Some(b"cursor-7".to_vec()),
        )
        .await
        .unwrap();
    vault
}

#[tokio::test]
async fn an_encrypted_vault_moves_sqlite_to_memory_to_sqlite_with_its_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let first: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("first.db"), SqliteOptions::default())
            .await
            .unwrap(),
    );
    let vault = filled(Arc::clone(&first)).await;
    let expected = contents(&vault).await;
    let pending = vault.replica().pending_changes(10_000).await.unwrap();
    let parked = vault.replica().all_parked_changes().await.unwrap();
    assert_eq!(parked.len(), 2);
    assert!(pending.len() > 500, "{} pending", pending.len());
    drop(vault);

    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let progress = {
        let seen = Arc::clone(&seen);
        Arc::new(move |p: Progress| seen.lock().unwrap().push(p))
    };
    let report = Vault::migrate(&*first, &*memory, Some(progress))
        .await
        .unwrap();
    assert_eq!(report.conversations, 4);
    assert_eq!(report.parked_changes, 2);
    assert_eq!(
        report.pending_changes + report.parked_changes,
        pending.len() as u64 + 2
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|p| p.phase == ProgressPhase::Migrating));
    assert!(seen.len() > 3, "reported per batch: {}", seen.len());

    let last: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("last.db"), SqliteOptions::default())
            .await
            .unwrap(),
    );
    Vault::migrate(&*memory, &*last, None).await.unwrap();

    // The copy is still sealed: the wrong passphrase opens nothing.
    let wrong = open(Arc::clone(&last), "not the passphrase").await;
    assert!(
        matches!(wrong, Err(VaultError::WrongPassphrase)),
        "{wrong:?}"
    );
    let moved = open(Arc::clone(&last), PASSPHRASE).await.unwrap();
    assert_eq!(contents(&moved).await, expected, "every message reads back");
    assert_eq!(
        moved.replica().pending_changes(10_000).await.unwrap(),
        pending,
        "the push sends the same changes (op ids, sealed bodies, order, numbers)"
    );
    assert_eq!(moved.replica().all_parked_changes().await.unwrap(), parked);
    assert_eq!(
        moved
            .replica()
            .sync_meta(chatvault::meta_keys::SYNC_CURSOR)
            .await
            .unwrap(),
        Some(b"cursor-7".to_vec())
    );
    // It goes on working: a new change is queued after the moved ones.
    let conv = moved
        .create_conversation(NewConversation::titled("after the move"))
        .await
        .unwrap();
    let after = moved.replica().pending_changes(10_000).await.unwrap();
    let last_entry = after.last().unwrap();
    assert_eq!(last_entry.change.entity_id, conv.id.into());
    assert!(last_entry.seq > pending.iter().map(|e| e.seq).max().unwrap());
    // The source was only read.
    let source = open(first, PASSPHRASE).await.unwrap();
    assert_eq!(contents(&source).await, expected);
}

#[tokio::test]
async fn a_migration_that_stops_midway_never_opens_and_starts_over() {
    let source: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let vault = filled(Arc::clone(&source)).await;
    let expected = contents(&vault).await;
    drop(vault);
    let target: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let failing = FailingStore::shared(Arc::clone(&target));
    failing.fail_after(2);
    let err = Vault::migrate(&*source, &failing, None).await.unwrap_err();
    assert!(
        !matches!(err, VaultError::Store(StoreError::IncompleteMigration)),
        "{err:?}"
    );

    let half = open(Arc::clone(&target), PASSPHRASE).await;
    assert!(
        matches!(
            half,
            Err(VaultError::Store(StoreError::IncompleteMigration))
        ),
        "{half:?}"
    );
    let probe = Vault::probe(&*target).await;
    assert!(probe.is_err(), "{probe:?}");

    let report = Vault::migrate(&*source, &*target, None).await.unwrap();
    assert!(report.restarted);
    let moved = open(target, PASSPHRASE).await.unwrap();
    assert_eq!(contents(&moved).await, expected);
}

#[tokio::test]
async fn a_target_holding_a_vault_or_a_source_without_one_is_refused() {
    let source: Arc<dyn Store> = Arc::new(MemoryStore::new());
    drop(filled(Arc::clone(&source)).await);
    let occupied: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let other = open(Arc::clone(&occupied), "another vault").await.unwrap();
    drop(other);
    let err = Vault::migrate(&*source, &*occupied, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::Store(StoreError::NotEmpty(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("not empty"), "{err}");
    // The other vault is intact.
    open(occupied, "another vault").await.unwrap();

    let empty = MemoryStore::new();
    let err = Vault::migrate(&empty, &MemoryStore::new(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("holds no vault"), "{err}");
}
