//! An encrypted store of the current schema, committed as a fixture, keeps
//! opening: a future change to the record format, the key envelope or the
//! schema that would lock users out of their encrypted history fails here.
//!
//! The fixture (`crates/chatvault-sqlite/tests/fixtures/v2-encrypted.db`)
//! was made once by [`make_v2_encrypted_fixture`] with the code of schema 2
//! and the default (OWASP) key-derivation parameters; never regenerate it.

use chatvault::{
    ListConversations, ListMessages, ManualClock, Metadata, NewConversation, NewMessage, Role,
    SqliteOptions, SqliteStore, Timestamp, Vault, VaultError, VaultOptions,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PASSPHRASE: &str = "fixture passphrase, not a secret";
const T0: Timestamp = Timestamp(1_700_000_000_000);

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../chatvault-sqlite/tests/fixtures/v2-encrypted.db")
}

fn options() -> VaultOptions {
    VaultOptions {
        clock: Arc::new(ManualClock::new(T0)),
        ..VaultOptions::default()
    }
}

async fn open(path: &Path, passphrase: &str) -> chatvault::Result<Vault> {
    let store = SqliteStore::open(path, SqliteOptions::default()).await?;
    Vault::open_encrypted(Arc::new(store), passphrase, options()).await
}

/// `cargo test -p chatvault --test encrypted_fixture -- --ignored make_v2_encrypted_fixture`
#[tokio::test]
#[ignore = "documents how tests/fixtures/v2-encrypted.db was made; never regenerate"]
async fn make_v2_encrypted_fixture() {
    assert_eq!(
        chatvault_sqlite::SCHEMA_VERSION,
        2,
        "made by the code of schema 2"
    );
    let path = fixture();
    assert!(!path.exists(), "the fixture exists: never regenerate it");
    let v = open(&path, PASSPHRASE).await.unwrap();
    let mut md = Metadata::new();
    md.insert("pinned".into(), true.into());
    let c = v
        .create_conversation(NewConversation {
            id: None,
            title: "Secret plans ✈️".into(),
            metadata: md,
        })
        .await
        .unwrap();
    v.add_message(c.id, NewMessage::new(Role::User, "Where to in May?"))
        .await
        .unwrap();
    v.add_message(c.id, NewMessage::new(Role::Assistant, "Lisbon, quietly."))
        .await
        .unwrap();
    let other = v
        .create_conversation(NewConversation::titled("Doomed"))
        .await
        .unwrap();
    v.delete_conversation(other.id).await.unwrap();
    drop(v);
    // Fold the WAL into the file so the fixture is one self-contained file.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
}

#[tokio::test]
async fn the_v2_encrypted_fixture_opens_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("v2-encrypted.db");
    std::fs::copy(fixture(), &copy).unwrap();

    let err = open(&copy, "not the passphrase").await.unwrap_err();
    assert!(matches!(err, VaultError::WrongPassphrase), "{err:?}");

    let v = open(&copy, PASSPHRASE).await.unwrap();
    assert!(v.is_encrypted());
    let convs = v.conversations(ListConversations::default()).await.unwrap();
    assert_eq!(convs.items.len(), 1);
    let c = &convs.items[0];
    assert_eq!(c.title, "Secret plans ✈️");
    assert!(c.is_pinned());
    let msgs = v.messages(c.id, ListMessages::default()).await.unwrap();
    let texts: Vec<(&str, Role)> = msgs
        .items
        .iter()
        .rev()
        .map(|m| (m.content.as_str(), m.role))
        .collect();
    assert_eq!(
        texts,
        [
            ("Where to in May?", Role::User),
            ("Lisbon, quietly.", Role::Assistant)
        ]
    );
    let stats = v.stats().await.unwrap();
    assert_eq!(
        (stats.conversations, stats.messages, stats.tombstones),
        (1, 2, 1)
    );

    // Nothing readable in the committed file.
    let raw = std::fs::read(fixture()).unwrap();
    for secret in ["Secret plans", "Lisbon", "Where to"] {
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

/// The fixture's records are record format 1 (kind and id bound only) under
/// a format 1 envelope. Rewriting one re-seals it in format 2 (key 1, vault
/// id derived from that key); a re-key converts the rest; everything keeps
/// opening, also after a reopen.
#[tokio::test]
async fn old_format_records_are_resealed_in_the_new_format_when_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("v2-encrypted.db");
    std::fs::copy(fixture(), &copy).unwrap();
    let v = open(&copy, PASSPHRASE).await.unwrap();
    let c = v
        .conversations(ListConversations::default())
        .await
        .unwrap()
        .items[0]
        .clone();
    let msgs = v
        .messages(c.id, ListMessages::default())
        .await
        .unwrap()
        .items;
    let stored = |id: chatvault::MessageId| {
        let store = v.store().clone();
        async move { store.message(id).await.unwrap().unwrap().body }
    };
    assert_eq!(
        stored(msgs[0].id).await.as_bytes()[0],
        1,
        "format 1 on disk"
    );

    let edited = v
        .update_message(
            msgs[0].id,
            chatvault::MessageUpdate {
                content: Some("Lisbon, loudly.".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(&stored(msgs[0].id).await.as_bytes()[..5], &[2, 0, 0, 0, 1]);
    assert_eq!(stored(msgs[1].id).await.as_bytes()[0], 1, "untouched");

    let report = v.rekey(None).await.unwrap();
    assert_eq!((report.seen, report.resealed), (3, 2));
    assert_eq!(stored(msgs[1].id).await.as_bytes()[0], 2);
    drop(v);

    let v = open(&copy, PASSPHRASE).await.unwrap();
    assert_eq!(v.conversation(c.id).await.unwrap().title, "Secret plans ✈️");
    assert_eq!(
        v.message(edited.id).await.unwrap().content,
        "Lisbon, loudly."
    );
    assert_eq!(
        v.message(msgs[1].id).await.unwrap().content,
        "Where to in May?"
    );
}
