//! Old SQLite stores keep opening: the committed schema-v1 fixture
//! (`crates/chatvault-sqlite/tests/fixtures/v1.db`, made by
//! [`make_v1_fixture`] with the code of schema 1) is migrated on open and
//! reads back exactly what was written into it.
//!
//! The store-level checks (backup file, counts, newer-schema refusal) live
//! in `chatvault-sqlite/tests/migrations.rs`; this file checks what an app
//! sees through the [`Vault`].

use chatvault::{
    ConversationUpdate, ListConversations, ListMessages, ManualClock, Metadata, NewConversation,
    NewMessage, Role, Timestamp, Vault, VaultOptions,
};
use std::path::PathBuf;
use std::sync::Arc;

/// The fixed clock the fixture was written with.
const T0: Timestamp = Timestamp(1_700_000_000_000);

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chatvault-sqlite/tests/fixtures/v1.db")
}

fn options(clock: Arc<ManualClock>) -> VaultOptions {
    VaultOptions {
        clock,
        ..VaultOptions::default()
    }
}

/// Writes the schema-v1 fixture. It documents how the committed file was
/// made (with the code at schema 1) and is kept for that reason only: it
/// refuses to run once the schema moved on, because the file stands for
/// stores already out in the world and must never be regenerated.
///
/// `cargo test -p chatvault --test sqlite_migration -- --ignored make_v1_fixture`
#[tokio::test]
#[ignore = "documents how tests/fixtures/v1.db was made; never regenerate"]
async fn make_v1_fixture() {
    assert_eq!(
        chatvault_sqlite::SCHEMA_VERSION,
        1,
        "the v1 fixture can only be made by the code of schema 1"
    );
    let path = fixture();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    let clock = Arc::new(ManualClock::new(T0));
    let v = Vault::open_sqlite(&path, options(clock.clone()))
        .await
        .unwrap();

    let mut pinned_meta = Metadata::new();
    pinned_meta.insert("pinned".into(), true.into());
    pinned_meta.insert("model".into(), "gpt-x".into());
    let pinned = v
        .create_conversation(NewConversation {
            id: None,
            title: "Pinned plans".into(),
            metadata: pinned_meta,
        })
        .await
        .unwrap();
    clock.advance(1000);
    for (role, text) in [
        (Role::System, "You are terse."),
        (Role::User, "Where to in May?"),
        (Role::Assistant, "Lisbon."),
    ] {
        clock.advance(10);
        v.add_message(pinned.id, NewMessage::new(role, text))
            .await
            .unwrap();
    }

    clock.advance(1000);
    let old = v
        .create_conversation(NewConversation::titled("Old chat"))
        .await
        .unwrap();
    clock.advance(10);
    v.add_message(old.id, NewMessage::new(Role::User, "keep me"))
        .await
        .unwrap();
    clock.advance(10);
    let gone = v
        .add_message(old.id, NewMessage::new(Role::Assistant, "delete me"))
        .await
        .unwrap();
    clock.advance(10);
    v.delete_message(gone.id).await.unwrap();

    clock.advance(1000);
    let doomed = v
        .create_conversation(NewConversation::titled("Doomed"))
        .await
        .unwrap();
    v.add_message(doomed.id, NewMessage::new(Role::User, "bye"))
        .await
        .unwrap();
    clock.advance(10);
    v.delete_conversation(doomed.id).await.unwrap();

    clock.advance(1000);
    let unicode = v
        .create_conversation(NewConversation::titled("Ünïcødé ✈️ 日本"))
        .await
        .unwrap();
    v.add_message(unicode.id, NewMessage::new(Role::Tool, "{\"ok\":true} 🙂"))
        .await
        .unwrap();

    // Everything so far was synced; one later rename is still pending.
    let all: Vec<u64> = v
        .replica()
        .pending_changes(1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    v.replica().acknowledge(&all).await.unwrap();
    clock.advance(1000);
    v.update_conversation(
        old.id,
        ConversationUpdate {
            title: Some("Old chat (renamed)".into()),
            metadata: None,
        },
    )
    .await
    .unwrap();
    drop(v);
    // The last connection closed: SQLite folded the WAL into the file.
    assert!(!PathBuf::from(format!("{}-wal", path.display())).exists());
}

/// The fixture, copied to a temporary directory, opens through the vault
/// (migrating it) and holds exactly what `make_v1_fixture` wrote.
#[tokio::test]
async fn v1_fixture_opens_migrated_with_all_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    std::fs::copy(fixture(), &path).unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0.0 + 100_000)));
    let v = Vault::open_sqlite(&path, options(clock.clone()))
        .await
        .unwrap();
    assert!(dir.path().join("vault.db.v1.bak").exists());

    let convs = v
        .conversations(ListConversations::default())
        .await
        .unwrap()
        .items;
    let titles: Vec<&str> = convs.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(
        titles,
        ["Old chat (renamed)", "Ünïcødé ✈️ 日本", "Pinned plans"]
    );
    let pinned = &convs[2];
    assert!(pinned.is_pinned());
    assert_eq!(pinned.metadata["model"], "gpt-x");
    let msgs = v
        .messages(pinned.id, ListMessages::default())
        .await
        .unwrap()
        .items;
    let texts: Vec<(Role, &str)> = msgs
        .iter()
        .rev()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (Role::System, "You are terse."),
            (Role::User, "Where to in May?"),
            (Role::Assistant, "Lisbon.")
        ]
    );
    let old = v
        .messages(convs[0].id, ListMessages::default())
        .await
        .unwrap()
        .items;
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].content, "keep me");

    let stats = v.stats().await.unwrap();
    assert_eq!(
        (
            stats.conversations,
            stats.messages,
            stats.tombstones,
            stats.pending_changes
        ),
        (3, 5, 2, 1)
    );
    let per: Vec<u64> = stats.per_conversation.iter().map(|c| c.messages).collect();
    assert_eq!(per, [1, 1, 3]);
    let pending = v.replica().pending_changes(10).await.unwrap();
    assert_eq!(pending[0].change.entity_id, convs[0].id.into());

    // The migrated vault keeps working and its clock resumed past the
    // fixture's stamps.
    let added = v
        .add_message(pinned.id, NewMessage::new(Role::User, "after migration"))
        .await
        .unwrap();
    assert!(added.version > msgs[0].version);
    drop(v);
    let v = Vault::open_sqlite(&path, options(clock)).await.unwrap();
    assert_eq!(v.stats().await.unwrap().messages, 6);
}
