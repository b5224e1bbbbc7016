//! Encrypted vaults: wrong passphrases, damaged or moved ciphertext, and
//! passphrase changes — each a clear error that leaves the vault usable.

use chatvault::testing::{fast_options, FailingStore, PASSPHRASE};
use chatvault::{
    ListMessages, ManualClock, MemoryStore, NewConversation, NewMessage, Role, SqliteOptions,
    SqliteStore, Store, StoreError, Timestamp, Vault, VaultError, VaultProbe,
};
use chatvault_core::{Body, ConversationId, EntityKind, MessageId, MessageRecord, RecordId};
use chatvault_store::{MessageQuery, WriteBatch, WriteOp};
use std::sync::Arc;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)))
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("v.db"), SqliteOptions::default())
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn wrong_passphrase_is_a_clear_error_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let c = v
        .create_conversation(NewConversation::titled("secret plans"))
        .await
        .unwrap();
    drop(v);

    let err = Vault::open_encrypted(sqlite(&dir).await, "wrong", fast_options(clock()))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::WrongPassphrase), "{err:?}");
    assert_eq!(err.to_string(), "wrong passphrase");

    let err = Vault::open(sqlite(&dir).await, fast_options(clock()))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Locked), "{err:?}");

    let v = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    assert_eq!(v.conversation(c.id).await.unwrap().title, "secret plans");
}

#[tokio::test]
async fn a_plaintext_vault_refuses_a_passphrase() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Vault::open(store.clone(), fast_options(clock()))
        .await
        .unwrap();
    let err = Vault::open_encrypted(store.clone(), "x", fast_options(clock()))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotEncrypted), "{err:?}");
    assert_eq!(
        Vault::probe(store.as_ref()).await.unwrap(),
        VaultProbe::Plaintext
    );
    assert_eq!(
        Vault::probe(&MemoryStore::new()).await.unwrap(),
        VaultProbe::Empty
    );
}

#[tokio::test]
async fn a_missing_key_envelope_is_an_error_never_plaintext() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Vault::open_encrypted(store.clone(), PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::SetMeta(
        "vault.keys".into(),
        b"{\"formatVersion\":1}".to_vec(),
    ));
    store.write(batch).await.unwrap();
    let err = Vault::open_encrypted(store.clone(), PASSPHRASE, fast_options(clock()))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Crypto(_)), "{err:?}");
    let err = Vault::open(store, fast_options(clock())).await.unwrap_err();
    assert!(matches!(err, VaultError::Locked), "{err:?}");
}

/// Writes `record` back over the stored one, bypassing the vault.
async fn overwrite(store: &Arc<dyn Store>, record: MessageRecord) {
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::PutMessage(record));
    store.write(batch).await.unwrap();
}

#[tokio::test]
async fn damaged_or_moved_ciphertext_is_detected_and_contained() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let v = Vault::open_encrypted(store.clone(), PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let c = v
        .create_conversation(NewConversation::titled("t"))
        .await
        .unwrap();
    let ids: Vec<MessageId> = v
        .add_messages(
            c.id,
            (0..4)
                .map(|i| NewMessage::new(Role::User, format!("message {i}")))
                .collect(),
        )
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    let raw = |id| {
        let store = store.clone();
        async move { store.message(id).await.unwrap().unwrap() }
    };

    // Flipped bit.
    let mut flipped = raw(ids[0]).await;
    let mid = flipped.body.0.len() / 2;
    flipped.body.0[mid] ^= 0x01;
    overwrite(&store, flipped).await;
    // Truncated.
    let mut truncated = raw(ids[1]).await;
    truncated.body.0.truncate(10);
    overwrite(&store, truncated).await;
    // Ciphertext of message 3 copied onto message 2.
    let donor = raw(ids[3]).await;
    let mut swapped = raw(ids[2]).await;
    swapped.body = donor.body.clone();
    overwrite(&store, swapped).await;

    for id in &ids[..3] {
        let err = v.message(*id).await.unwrap_err();
        match &err {
            VaultError::CorruptRecord { kind, id: rid, .. } => {
                assert_eq!(*kind, EntityKind::Message);
                assert_eq!(*rid, RecordId::from(*id));
            }
            other => panic!("expected a damaged-record error, got {other:?}"),
        }
        assert!(err.to_string().contains("damaged"), "{err}");
    }
    // The untouched message, the conversation and new writes still work.
    assert_eq!(v.message(ids[3]).await.unwrap().content, "message 3");
    assert_eq!(v.conversation(c.id).await.unwrap().title, "t");
    let fresh = v
        .add_message(c.id, NewMessage::new(Role::Assistant, "still fine"))
        .await
        .unwrap();
    assert_eq!(v.message(fresh.id).await.unwrap().content, "still fine");
    // Deleting a damaged record is possible.
    v.delete_message(ids[0]).await.unwrap();
}

#[tokio::test]
async fn changing_the_passphrase_rewraps_one_key_and_rewrites_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let v = Vault::open_encrypted(store.clone(), PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let c = v
        .create_conversation(NewConversation::titled("kept"))
        .await
        .unwrap();
    v.add_message(c.id, NewMessage::new(Role::User, "intact"))
        .await
        .unwrap();
    let bodies_before = bodies(&store, c.id).await;

    let err = v.change_passphrase("not it", "new pass").await.unwrap_err();
    assert!(matches!(err, VaultError::WrongPassphrase), "{err:?}");
    v.change_passphrase(PASSPHRASE, "new pass").await.unwrap();
    assert_eq!(
        bodies(&store, c.id).await,
        bodies_before,
        "no record rewritten"
    );
    drop(v);

    let err = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::WrongPassphrase));
    let v = Vault::open_encrypted(sqlite(&dir).await, "new pass", fast_options(clock()))
        .await
        .unwrap();
    let msgs = v.messages(c.id, ListMessages::default()).await.unwrap();
    assert_eq!(msgs.items[0].content, "intact");
}

async fn bodies(store: &Arc<dyn Store>, c: ConversationId) -> Vec<Body> {
    let mut out = vec![store.conversation(c).await.unwrap().unwrap().record.body];
    out.extend(
        store
            .messages(&MessageQuery {
                conversation_id: c,
                before: None,
                limit: 100,
            })
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body),
    );
    out
}

#[tokio::test]
async fn an_interrupted_passphrase_change_leaves_the_old_one_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let inner = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let failing = Arc::new(FailingStore::new(inner));
    let v = Vault::open_encrypted(failing.clone(), PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    v.create_conversation(NewConversation::titled("x"))
        .await
        .unwrap();
    failing.fail_after(0);
    let err = v.change_passphrase(PASSPHRASE, "next").await.unwrap_err();
    assert!(
        matches!(err, VaultError::Store(StoreError::Full { .. })),
        "{err:?}"
    );
    drop(v);
    let reopened = || async {
        Arc::new(
            SqliteStore::open(&path, SqliteOptions::default())
                .await
                .unwrap(),
        ) as Arc<dyn Store>
    };
    assert!(
        Vault::open_encrypted(reopened().await, PASSPHRASE, fast_options(clock()))
            .await
            .is_ok()
    );
    assert!(matches!(
        Vault::open_encrypted(reopened().await, "next", fast_options(clock())).await,
        Err(VaultError::WrongPassphrase)
    ));
}

#[tokio::test]
async fn nothing_readable_reaches_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let c = v
        .create_conversation(NewConversation::titled("TITLE-MARKER-7731"))
        .await
        .unwrap();
    v.add_message(c.id, NewMessage::new(Role::User, "CONTENT-MARKER-9157"))
        .await
        .unwrap();
    drop(v);
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        raw.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    for marker in ["TITLE-MARKER-7731", "CONTENT-MARKER-9157", "\"user\""] {
        assert!(
            !raw.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{marker} found in plaintext on disk"
        );
    }
}
