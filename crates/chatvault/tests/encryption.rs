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
    // Linked to a sync account, a local-only change is refused: the
    // account would keep the old passphrase.
    v.replica()
        .set_sync_remote(Some("https://sync.example"))
        .await
        .unwrap();
    for err in [
        v.change_passphrase(PASSPHRASE, "new pass")
            .await
            .unwrap_err(),
        v.rotate_data_key(PASSPHRASE).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, VaultError::LinkedToAccount { server } if server == "https://sync.example"),
            "{err:?}"
        );
    }
    assert_eq!(bodies(&store, c.id).await, bodies_before);
    v.replica().set_sync_remote(None).await.unwrap();
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

/// Edits the vault header stored in a SQLite vault file, as someone with
/// the file could.
fn edit_meta(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(sql, []).unwrap();
}

/// An encrypted SQLite vault with one conversation, closed.
async fn encrypted_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let v = Vault::open_encrypted(sqlite(dir).await, PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    v.create_conversation(NewConversation::titled("secret"))
        .await
        .unwrap();
    drop(v);
    dir.path().join("v.db")
}

#[tokio::test]
async fn an_edited_header_never_opens_an_encrypted_vault_as_plaintext() {
    let header_to_plaintext = "UPDATE meta SET value = CAST(replace(CAST(value AS TEXT), \
        '\"encrypted\":true', '\"encrypted\":false') AS BLOB) WHERE key = 'vault.header'";
    let cases: [(&str, &[&str]); 4] = [
        ("header says plaintext", &[header_to_plaintext]),
        (
            "header deleted",
            &["DELETE FROM meta WHERE key = 'vault.header'"],
        ),
        (
            "header says plaintext and the envelope is gone",
            &[
                header_to_plaintext,
                "DELETE FROM meta WHERE key = 'vault.keys'",
            ],
        ),
        (
            "header and envelope both gone",
            &[
                "DELETE FROM meta WHERE key = 'vault.header'",
                "DELETE FROM meta WHERE key = 'vault.keys'",
            ],
        ),
    ];
    for (what, edits) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = encrypted_file(&dir).await;
        for sql in edits {
            edit_meta(&path, sql);
        }
        let err = Vault::open(sqlite(&dir).await, fast_options(clock()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, VaultError::TamperedHeader { .. }),
            "{what}: {err:?}"
        );
        let err = Vault::probe(sqlite(&dir).await.as_ref()).await.unwrap_err();
        assert!(matches!(err, VaultError::TamperedHeader { .. }), "{what}");
        // Nothing was written: no plaintext write slipped in.
        let store = sqlite(&dir).await;
        assert_eq!(store.usage().await.unwrap().conversations, 1, "{what}");
    }

    // A header that does not parse never opens either way.
    let dir = tempfile::tempdir().unwrap();
    let path = encrypted_file(&dir).await;
    edit_meta(
        &path,
        "UPDATE meta SET value = CAST('{\"formatVersion\":1,' AS BLOB) WHERE key = 'vault.header'",
    );
    for passphrase in [None, Some(PASSPHRASE)] {
        let store = sqlite(&dir).await;
        let result = match passphrase {
            None => Vault::open(store, fast_options(clock())).await,
            Some(p) => Vault::open_encrypted(store, p, fast_options(clock())).await,
        };
        assert!(
            matches!(result, Err(VaultError::CorruptMetadata { .. })),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn after_a_rotation_new_records_do_not_open_with_the_old_envelope() {
    use chatvault_crypto::{KdfPolicy, KeyEnvelope, RecordAad};
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let v = Vault::open_encrypted(store.clone(), PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let c = v
        .create_conversation(NewConversation::titled("t"))
        .await
        .unwrap();
    let before = v
        .add_message(c.id, NewMessage::new(Role::User, "before"))
        .await
        .unwrap();
    let old_envelope = v.replica().key_envelope_json().await.unwrap().unwrap();

    v.rotate_data_key(PASSPHRASE).await.unwrap();
    let after = v
        .add_message(c.id, NewMessage::new(Role::User, "after"))
        .await
        .unwrap();
    let new_envelope = v.replica().key_envelope_json().await.unwrap().unwrap();
    assert_ne!(new_envelope, old_envelope);

    // Someone holding the pre-rotation envelope and the passphrase.
    let stale = KeyEnvelope::from_json(&old_envelope)
        .unwrap()
        .unlock_with_policy(PASSPHRASE, KdfPolicy::insecure_allow_weak_for_tests())
        .unwrap()
        .keyring;
    let open_with = |keyring: &chatvault_crypto::Keyring, record: &MessageRecord| {
        let (id, conv, version) = (
            record.id.to_string(),
            record.conversation_id.to_string(),
            record.version.to_string(),
        );
        let aad = RecordAad::new("message", &id)
            .with_conversation(&conv)
            .with_version(&version);
        keyring.open(&aad, record.body.as_bytes())
    };
    let stored_before = store.message(before.id).await.unwrap().unwrap();
    let stored_after = store.message(after.id).await.unwrap().unwrap();
    assert!(open_with(&stale, &stored_before).is_ok());
    assert_eq!(
        open_with(&stale, &stored_after),
        Err(chatvault_crypto::CryptoError::UnknownKey { id: 2 })
    );
    // After a re-key, not even the old records open with it.
    v.rekey(None).await.unwrap();
    let resealed = store.message(before.id).await.unwrap().unwrap();
    assert!(open_with(&stale, &resealed).is_err());
    assert_eq!(v.message(before.id).await.unwrap().content, "before");
}

#[tokio::test]
async fn a_device_adopts_a_rotated_envelope_but_never_an_older_or_foreign_one() {
    use chatvault_crypto::{KdfPolicy, KeyEnvelope, PassphraseKeys};
    let policy = KdfPolicy::insecure_allow_weak_for_tests();
    let keys_for = |json: &str| {
        let envelope = KeyEnvelope::from_json(json).unwrap();
        PassphraseKeys::derive_with_policy(PASSPHRASE, envelope.kdf(), envelope.salt(), policy)
            .unwrap()
    };
    let a = Vault::open_encrypted(
        Arc::new(MemoryStore::new()),
        PASSPHRASE,
        fast_options(clock()),
    )
    .await
    .unwrap();
    let c = a
        .create_conversation(NewConversation::titled("shared"))
        .await
        .unwrap();
    let first = a.replica().key_envelope_json().await.unwrap().unwrap();
    // Device B joins on the account's envelope and holds A's record.
    let b_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let b = Vault::builder()
        .store(b_store.clone())
        .options(fast_options(clock()))
        .passphrase(PASSPHRASE)
        .account_envelope(&first)
        .open()
        .await
        .unwrap();
    let pending = a.replica().pending_changes(10).await.unwrap();
    b.replica()
        .apply_changes(pending.into_iter().map(|e| e.change).collect())
        .await
        .unwrap();

    // A rotates (as its sync client would: prepare, server, commit) and
    // writes with the new key.
    let rotation = a.replica().prepare_key_rotation(PASSPHRASE).await.unwrap();
    a.replica()
        .commit_passphrase_change(&rotation)
        .await
        .unwrap();
    let m = a
        .add_message(c.id, NewMessage::new(Role::User, "new key"))
        .await
        .unwrap();
    let rotated = rotation.envelope_json();

    // B cannot read it yet, adopts the rotated envelope, then can.
    let change = a
        .replica()
        .pending_changes(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.change)
        .filter(|ch| ch.entity_id == m.id.into())
        .collect();
    b.replica().apply_changes(change).await.unwrap();
    assert!(matches!(
        b.message(m.id).await,
        Err(VaultError::CorruptRecord { .. })
    ));
    assert!(b
        .replica()
        .adopt_key_envelope(&rotated, &keys_for(&rotated))
        .await
        .unwrap());
    assert_eq!(b.message(m.id).await.unwrap().content, "new key");
    assert_eq!(b.conversation(c.id).await.unwrap().title, "shared");
    // B now writes with key 2, which A reads.
    let n = b
        .add_message(c.id, NewMessage::new(Role::Assistant, "from b"))
        .await
        .unwrap();
    let stored = b_store.message(n.id).await.unwrap().unwrap();
    assert_eq!(&stored.body.as_bytes()[..5], &[2, 0, 0, 0, 2]);

    // Going back to the pre-rotation envelope is refused, and so is another
    // vault's envelope; nothing changes.
    let err = b
        .replica()
        .adopt_key_envelope(&first, &keys_for(&first))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::StaleEnvelope {
                offered: 1,
                current: 2
            }
        ),
        "{err:?}"
    );
    let stranger = Vault::open_encrypted(
        Arc::new(MemoryStore::new()),
        PASSPHRASE,
        fast_options(clock()),
    )
    .await
    .unwrap();
    let (foreign, _) = {
        let json = stranger
            .replica()
            .key_envelope_json()
            .await
            .unwrap()
            .unwrap();
        let rotated = KeyEnvelope::from_json(&json)
            .unwrap()
            .rotate_with_policy(
                PASSPHRASE,
                PASSPHRASE,
                chatvault_crypto::KdfParams::insecure_fast_for_tests(),
                policy,
            )
            .unwrap();
        let rotated = rotated
            .0
            .rotate_with_policy(
                PASSPHRASE,
                PASSPHRASE,
                chatvault_crypto::KdfParams::insecure_fast_for_tests(),
                policy,
            )
            .unwrap();
        (rotated.0.to_json(), ())
    };
    let err = b
        .replica()
        .adopt_key_envelope(&foreign, &keys_for(&foreign))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::ForeignAccountKey), "{err:?}");
    assert_eq!(
        b.replica().key_envelope_json().await.unwrap().unwrap(),
        rotated
    );
}

/// A handle opened before another process (here: a second handle on the
/// same file) rotated the data key never seals with the old key: its next
/// write is refused with `key_rotated` and writes nothing; opened again it
/// writes under the new key. A passphrase change elsewhere (same key) does
/// not stop it. Vaults whose envelope predates the stored key id are
/// fenced the same way.
#[tokio::test]
async fn a_key_rotated_by_another_handle_fences_the_stale_one() {
    for legacy in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let first = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
            .await
            .unwrap();
        let conv = first
            .create_conversation(NewConversation::titled("before"))
            .await
            .unwrap();
        if legacy {
            // As written by a chatvault from before the stored key id.
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::DeleteMeta("vault.dataKey".into()));
            first.store().write(batch).await.unwrap();
        }
        let stale = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
            .await
            .unwrap();
        let other = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
            .await
            .unwrap();

        // A passphrase change elsewhere keeps the key: the handle writes on.
        other.change_passphrase(PASSPHRASE, "second").await.unwrap();
        stale
            .add_message(conv.id, NewMessage::new(Role::User, "same key"))
            .await
            .expect("a passphrase change does not fence");

        other.rotate_data_key("second").await.unwrap();
        let before = stale.store().usage().await.unwrap().messages;
        let err = stale
            .add_message(conv.id, NewMessage::new(Role::User, "old key"))
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::KeyRotatedElsewhere), "{err:?}");
        assert_eq!(err.code(), "key_rotated");
        let err = stale
            .create_conversation(NewConversation::titled("old key"))
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::KeyRotatedElsewhere), "{err:?}");
        assert_eq!(
            stale.store().usage().await.unwrap().messages,
            before,
            "nothing written under the old key"
        );
        // The rotating handle writes on; reopened, the stale one does too.
        other
            .add_message(conv.id, NewMessage::new(Role::User, "new key"))
            .await
            .unwrap();
        drop(stale);
        let reopened = Vault::open_encrypted(sqlite(&dir).await, "second", fast_options(clock()))
            .await
            .unwrap();
        reopened
            .add_message(conv.id, NewMessage::new(Role::User, "reopened"))
            .await
            .unwrap();
        let page = other
            .messages(
                conv.id,
                ListMessages {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut contents: Vec<_> = page.items.into_iter().map(|m| m.content).collect();
        contents.sort();
        assert_eq!(
            contents,
            ["new key", "reopened", "same key"],
            "legacy: {legacy}"
        );
        assert!(reopened.damaged_records().await.unwrap().is_empty());
    }
}

/// The fence covers imports too: a handle that missed another's rotation
/// cannot seal a whole file's records under the old key; nothing is
/// imported.
#[tokio::test]
async fn an_import_by_a_stale_handle_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let stale = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    let conv = stale
        .create_conversation(NewConversation::titled("kept"))
        .await
        .unwrap();
    let (file, _) = stale
        .export(Vec::new(), chatvault::ExportOptions::default())
        .await
        .unwrap();
    let other = Vault::open_encrypted(sqlite(&dir).await, PASSPHRASE, fast_options(clock()))
        .await
        .unwrap();
    other.rotate_data_key(PASSPHRASE).await.unwrap();
    other.delete_conversation(conv.id).await.unwrap();

    let err = stale
        .import(file, chatvault::ImportOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::KeyRotatedElsewhere), "{err:?}");
    assert_eq!(
        other.store().usage().await.unwrap().conversations,
        0,
        "nothing imported"
    );
}
