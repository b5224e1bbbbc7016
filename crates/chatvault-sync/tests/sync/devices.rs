//! Two devices of one account converge, and the server only ever holds
//! ciphertext.

use std::sync::Arc;

use chatvault::{
    ListMessages, MemoryStore, MessageUpdate, NewConversation, NewMessage, Role, Vault,
};
use chatvault_sync::{SyncClient, SyncState};

use crate::common::*;

async fn contents(vault: &Vault, conv: chatvault::ConversationId) -> Vec<String> {
    let mut page = vault
        .messages(conv, ListMessages::default())
        .await
        .expect("messages")
        .items;
    page.reverse();
    page.into_iter().map(|m| m.content).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_converge_on_writes_edits_and_deletes() {
    let server = TestServer::start().await;
    let a = SyncClient::register(vault().await, &server.url(), "alice", PASS, options())
        .await
        .expect("register");
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("Trip ideas"))
        .await
        .unwrap();
    let m1 = a
        .vault()
        .add_message(conv.id, NewMessage::new(Role::User, "Where to in May?"))
        .await
        .unwrap();
    let m2 = a
        .vault()
        .add_message(
            conv.id,
            NewMessage::new(Role::Assistant, "Lisbon, or Porto."),
        )
        .await
        .unwrap();
    let report = a.sync_once().await.expect("A syncs");
    assert_eq!(report.push.applied, 3);

    // Device B joins the account on an empty store and reads A's plaintext.
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(chatvault::SystemClock)),
        &server.url(),
        "alice",
        PASS,
        options(),
    )
    .await
    .expect("join");
    assert_ne!(a.vault().device_id(), b.vault().device_id());
    let report = b.sync_once().await.expect("B syncs");
    assert_eq!(report.pull.applied, 3);
    assert_eq!(
        b.vault().conversation(conv.id).await.unwrap().title,
        "Trip ideas"
    );
    assert_eq!(
        contents(b.vault(), conv.id).await,
        ["Where to in May?", "Lisbon, or Porto."]
    );

    // B edits one message and deletes the other; A converges.
    b.vault()
        .update_message(
            m1.id,
            MessageUpdate {
                content: Some("Where to in June?".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    b.vault().delete_message(m2.id).await.unwrap();
    let report = b.sync_once().await.expect("B pushes");
    assert_eq!(report.push.applied, 2);
    let report = a.sync_once().await.expect("A pulls");
    assert!(report.pull.applied >= 2, "{report:?}");
    assert_eq!(contents(a.vault(), conv.id).await, ["Where to in June?"]);
    assert!(a.vault().message(m2.id).await.is_err());

    // A deletes the conversation; B loses it too.
    a.vault().delete_conversation(conv.id).await.unwrap();
    a.sync_once().await.expect("A pushes the deletion");
    b.sync_once().await.expect("B pulls the deletion");
    assert!(b.vault().conversation(conv.id).await.is_err());
    assert!(b.vault().message(m1.id).await.is_err());

    let status = a.status().borrow().clone();
    assert_eq!(status.state, SyncState::Idle);
    assert_eq!(status.pending, 0);
    assert_eq!(status.dead_letters, 0);
    assert!(status.cursor.is_some() && status.last_synced_at.is_some());
    // The vault remembers its server (retention then keeps unsynced work).
    assert_eq!(
        b.vault().replica().sync_remote().await.unwrap().as_deref(),
        Some(format!("{}/", server.url()).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_resolve_the_same_way_on_both_devices() {
    let server = TestServer::start().await;
    let (a, b, clock_a, clock_b) = two_devices(&server, &server.url(), "carol").await;
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("plans"))
        .await
        .unwrap();
    let x = a
        .vault()
        .add_message(conv.id, NewMessage::new(Role::User, "x0"))
        .await
        .unwrap();
    let y = a
        .vault()
        .add_message(conv.id, NewMessage::new(Role::User, "y0"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();

    let edit = |content: &str| MessageUpdate {
        content: Some(content.into()),
        ..Default::default()
    };
    // Neither device has seen the other's edit. x: B's stamp is later.
    // y: A's stamp is later, but A pushes first and B second.
    clock_a.advance(100);
    clock_b.advance(200);
    a.vault()
        .update_message(x.id, edit("x by A"))
        .await
        .unwrap();
    b.vault()
        .update_message(x.id, edit("x by B"))
        .await
        .unwrap();
    clock_a.advance(200);
    a.vault()
        .update_message(y.id, edit("y by A"))
        .await
        .unwrap();
    b.vault()
        .update_message(y.id, edit("y by B"))
        .await
        .unwrap();

    let first = a.sync_once().await.unwrap();
    assert_eq!(first.push.applied, 2);
    let second = b.sync_once().await.unwrap();
    assert_eq!(
        (second.push.applied, second.push.superseded),
        (1, 1),
        "{second:?}"
    );
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();

    for device in [&a, &b] {
        let vault = device.vault();
        assert_eq!(vault.message(x.id).await.unwrap().content, "x by B");
        assert_eq!(vault.message(y.id).await.unwrap().content, "y by A");
    }
    assert_eq!(
        a.vault().message(x.id).await.unwrap().version,
        b.vault().message(x.id).await.unwrap().version
    );
    assert_eq!(a.status().borrow().pending, 0);
    assert_eq!(b.status().borrow().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_database_holds_no_plaintext() {
    let server = TestServer::start().await;
    let a = SyncClient::register(vault().await, &server.url(), "dora", PASS, options())
        .await
        .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("Operation Nightingale"))
        .await
        .unwrap();
    a.vault()
        .add_message(
            conv.id,
            NewMessage::new(Role::User, "the eagle lands at midnight"),
        )
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(chatvault::SystemClock)),
        &server.url(),
        "dora",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    assert_eq!(
        contents(b.vault(), conv.id).await,
        ["the eagle lands at midnight"]
    );

    let bytes = server.database_bytes();
    let holds = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    // The scan sees the real data: account names are stored in clear.
    assert!(holds("dora"), "the scan does not see the server's data");
    for secret in ["eagle lands", "Nightingale", PASS, "\"role\""] {
        assert!(!holds(secret), "the server's database contains {secret:?}");
    }
}

/// A change the server answers `superseded` while this device's pull cursor
/// is already past the winner (the state a local write below a pulled
/// version left behind before issue 10) makes the device fetch the winner:
/// both devices end on the newer version instead of diverging for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_change_fetches_the_winner_even_past_the_cursor() {
    use chatvault::ConversationUpdate;
    use chatvault_core::EntityKind;
    use chatvault_core::OpId;
    use chatvault_store::{OutboxItem, WriteBatch, WriteOp};

    let server = TestServer::start().await;
    let a = SyncClient::register(vault().await, &server.url(), "carol", PASS, options())
        .await
        .expect("register");
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("first"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    let older = a
        .vault()
        .store()
        .conversation(conv.id)
        .await
        .unwrap()
        .unwrap()
        .record;

    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(chatvault::SystemClock)),
        &server.url(),
        "carol",
        PASS,
        options(),
    )
    .await
    .expect("join");
    b.sync_once().await.unwrap();
    b.vault()
        .update_conversation(
            conv.id,
            ConversationUpdate {
                title: Some("newer".into()),
                metadata: None,
            },
        )
        .await
        .unwrap();
    b.sync_once().await.unwrap();
    a.sync_once().await.unwrap();
    assert_eq!(
        a.vault().conversation(conv.id).await.unwrap().title,
        "newer"
    );

    // A's store goes back to the older version with a pending change, its
    // cursor past the winner.
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::PutConversation(older.clone()));
    batch.push(WriteOp::Enqueue(OutboxItem {
        op_id: OpId::new(),
        kind: EntityKind::Conversation,
        entity_id: conv.id.into(),
        conversation_id: None,
    }));
    a.vault().store().write(batch).await.unwrap();

    let report = a.sync_once().await.unwrap();
    assert_eq!(report.push.superseded, 1, "{report:?}");
    assert_eq!(
        a.vault().conversation(conv.id).await.unwrap().title,
        "newer",
        "the winner came down"
    );
    b.sync_once().await.unwrap();
    assert_eq!(
        b.vault().conversation(conv.id).await.unwrap().title,
        "newer"
    );
}
