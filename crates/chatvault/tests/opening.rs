//! Opening a vault: the builder and its options, the one-line shortcuts,
//! what `probe` finds, and the errors a damaged or foreign vault opens
//! with. Each case asserts what an app can observe.

use chatvault::testing::{fast_options, PASSPHRASE, T0};
use chatvault::{
    meta_keys, Clock, Durability, ListConversations, ListMessages, ManualClock, MemoryStore,
    NewConversation, NewMessage, Role, SqliteOptions, SqliteStore, Store, StoreError, UserId,
    Vault, VaultError, VaultProbe,
};
use chatvault_store::{WriteBatch, WriteOp};
use futures::TryStreamExt;
use std::sync::Arc;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

async fn set_meta(store: &dyn Store, key: &str, value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::SetMeta(key.into(), value.to_vec()));
    store.write(batch).await.unwrap();
}

#[tokio::test]
async fn the_builder_opens_an_encrypted_sqlite_vault_with_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let clock = clock();
    let fast = fast_options(clock.clone());
    let owner = UserId::try_from("ada".to_owned()).unwrap();
    let v = Vault::builder()
        .sqlite(&path)
        .durability(Durability::Normal)
        .quota(256 * 1024)
        .passphrase(PASSPHRASE)
        .clock(clock.clone())
        .user(owner.clone())
        .kdf(fast.kdf, fast.kdf_policy)
        .open()
        .await
        .unwrap();
    assert!(v.is_encrypted());
    let c = v
        .create_conversation(NewConversation::titled("kept"))
        .await
        .unwrap();
    assert_eq!(c.user_id, owner);
    // The quota holds: writes past it fail and change nothing.
    let mut written = 0;
    let err = loop {
        match v
            .add_message(c.id, NewMessage::new(Role::User, "x".repeat(8 * 1024)))
            .await
        {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 1_000, "quota never enforced");
    };
    assert!(
        matches!(err, VaultError::Store(StoreError::Full { .. })),
        "{err:?}"
    );
    drop(v);

    // The encrypted shortcut reopens it; the plaintext one is refused.
    let v = Vault::open_encrypted_sqlite(&path, PASSPHRASE, fast_options(clock.clone()))
        .await
        .unwrap();
    assert_eq!(v.conversation(c.id).await.unwrap().title, "kept");
    drop(v);
    let err = Vault::open_sqlite(&path, fast_options(clock))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Locked), "{err:?}");
}

#[tokio::test]
async fn probe_tells_empty_plaintext_and_encrypted_apart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    assert_eq!(
        Vault::probe(store.as_ref()).await.unwrap(),
        VaultProbe::Empty
    );
    Vault::open(store.clone(), fast_options(clock()))
        .await
        .unwrap();
    assert_eq!(
        Vault::probe(store.as_ref()).await.unwrap(),
        VaultProbe::Plaintext
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    Vault::open_encrypted_sqlite(&path, PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let sqlite = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert_eq!(Vault::probe(&sqlite).await.unwrap(), VaultProbe::Encrypted);
}

#[tokio::test]
async fn the_builder_refuses_incomplete_or_contradictory_requests() {
    let no_store = Vault::builder().open().await.unwrap_err();
    assert!(matches!(no_store, VaultError::Invalid(_)), "{no_store:?}");

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sqlite_only = Vault::builder()
        .store(store.clone())
        .durability(Durability::Normal)
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(sqlite_only, VaultError::Invalid(_)),
        "{sqlite_only:?}"
    );

    let no_passphrase = Vault::builder()
        .store(store.clone())
        .account_envelope("{}")
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(no_passphrase, VaultError::Invalid(_)),
        "{no_passphrase:?}"
    );
    // Nothing was created by the refused requests.
    assert_eq!(
        Vault::probe(store.as_ref()).await.unwrap(),
        VaultProbe::Empty
    );
}

#[tokio::test]
async fn a_vault_from_a_newer_chatvault_is_refused_with_both_versions() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Vault::open(store.clone(), fast_options(clock()))
        .await
        .unwrap();
    let header = store.meta(meta_keys::HEADER).await.unwrap().unwrap();
    let mut header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["formatVersion"] = 99.into();
    set_meta(
        store.as_ref(),
        meta_keys::HEADER,
        &serde_json::to_vec(&header).unwrap(),
    )
    .await;
    let err = Vault::open(store, fast_options(clock())).await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::NewerFormat {
                found: 99,
                supported: 1
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade chatvault"), "{err}");
}

#[tokio::test]
async fn damaged_metadata_names_its_key() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let v = Vault::open(store.clone(), fast_options(clock()))
        .await
        .unwrap();
    v.create_conversation(NewConversation::titled("x"))
        .await
        .unwrap();
    drop(v);
    set_meta(store.as_ref(), meta_keys::CLOCK, b"not a stamp").await;
    let err = Vault::open(store.clone(), fast_options(clock()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::CorruptMetadata { key, .. } if key == meta_keys::CLOCK),
        "{err:?}"
    );

    set_meta(store.as_ref(), meta_keys::HEADER, b"{").await;
    let err = Vault::probe(store.as_ref()).await.unwrap_err();
    assert!(
        matches!(err, VaultError::CorruptMetadata { key, .. } if key == meta_keys::HEADER),
        "{err:?}"
    );

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let v = Vault::open(store.clone(), fast_options(clock()))
        .await
        .unwrap();
    set_meta(store.as_ref(), meta_keys::RETENTION_POLICY, b"not json").await;
    set_meta(store.as_ref(), meta_keys::SYNC_REMOTE, &[0xff, 0xfe]).await;
    let err = v.retention_policy().await.unwrap_err();
    assert!(
        matches!(err, VaultError::CorruptMetadata { key, .. } if key == meta_keys::RETENTION_POLICY),
        "{err:?}"
    );
    let err = v.replica().sync_remote().await.unwrap_err();
    assert!(
        matches!(err, VaultError::CorruptMetadata { key, .. } if key == meta_keys::SYNC_REMOTE),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_encrypted_vault_without_its_envelope_says_so() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Vault::open_encrypted(store.clone(), PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::DeleteMeta(meta_keys::KEYS.into()));
    store.write(batch).await.unwrap();
    let err = Vault::open_encrypted(store.clone(), PASSPHRASE, fast_options(clock()))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::MissingEnvelope), "{err:?}");
    // Never opened as plaintext either.
    let err = Vault::open(store, fast_options(clock())).await.unwrap_err();
    assert!(matches!(err, VaultError::Locked), "{err:?}");
}

#[tokio::test]
async fn the_replica_handle_serves_the_sync_side() {
    let clock = clock();
    let v = Vault::open(Arc::new(MemoryStore::new()), fast_options(clock.clone()))
        .await
        .unwrap();
    let replica = v.replica();
    assert_eq!(replica.now(), clock.now());
    assert_eq!(replica.key_envelope_json().await.unwrap(), None);
    let c = v
        .create_conversation(NewConversation::titled("queued"))
        .await
        .unwrap();
    let pending = replica.pending_changes(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].change.entity_id, c.id.into());
    replica.acknowledge(&[pending[0].seq]).await.unwrap();
    assert!(replica.pending_changes(10).await.unwrap().is_empty());
    replica
        .set_sync_meta(meta_keys::SYNC_CURSOR, Some(b"c1".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        replica.sync_meta(meta_keys::SYNC_CURSOR).await.unwrap(),
        Some(b"c1".to_vec())
    );
    // The server setting has its own validating method.
    assert!(replica
        .set_sync_meta(meta_keys::SYNC_REMOTE, None)
        .await
        .is_err());
    replica
        .set_sync_remote(Some("https://s.example"))
        .await
        .unwrap();
    assert_eq!(
        replica.sync_remote().await.unwrap().as_deref(),
        Some("https://s.example")
    );
}

#[tokio::test]
async fn streams_page_through_every_conversation_and_message() {
    let clock = clock();
    let v = Vault::open(Arc::new(MemoryStore::new()), fast_options(clock.clone()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            v.create_conversation(NewConversation::titled(format!("c{i}")))
                .await
                .unwrap()
                .id,
        );
        clock.advance(1);
    }
    let all: Vec<_> = v
        .conversations_stream(ListConversations {
            limit: 3,
            ..Default::default()
        })
        .map_ok(|c| c.id)
        .try_collect()
        .await
        .unwrap();
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(all, newest_first);

    let texts: Vec<_> = (0..5)
        .map(|i| NewMessage::new(Role::User, format!("m{i}")))
        .collect();
    v.add_messages(ids[0], texts).await.unwrap();
    let messages: Vec<_> = v
        .messages_stream(
            ids[0],
            ListMessages {
                limit: 2,
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(messages.len(), 5);
}
