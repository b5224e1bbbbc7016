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
