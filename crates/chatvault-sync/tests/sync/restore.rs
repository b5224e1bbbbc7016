//! Restore: the operator replaces the server's database with an older
//! backup of itself. Devices notice (their cursors name an epoch, or a
//! position, the restored database never issued), rebuild from the
//! snapshot without deleting anything, and push back what the backup
//! lacks; every device and the server end up holding everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use chatvault::{ConversationUpdate, MemoryStore, NewConversation, NewMessage, Role};
use chatvault_sync::SyncClient;

use crate::common::*;

fn say(text: &str) -> NewMessage {
    NewMessage::new(Role::User, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_server_gets_back_what_its_backup_lacks_and_nothing_is_lost() {
    let mut server = TestServer::start().await;
    let url = server.url();
    let (a, b, clock_a, clock_b) = two_devices(&server, &url, "rita").await;

    // Before the backup: two conversations, one message, on both devices.
    let kept = a
        .vault()
        .create_conversation(NewConversation::titled("kept"))
        .await
        .unwrap();
    a.vault()
        .add_message(kept.id, say("m1 before"))
        .await
        .unwrap();
    let doomed = a
        .vault()
        .create_conversation(NewConversation::titled("doomed"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    let backup = server.backup().await;

    // After the backup, all synced: messages and a conversation from A, a
    // delete from A, a message and a rename from B.
    clock_a.advance(1_000);
    a.vault()
        .add_message(kept.id, say("m2 after"))
        .await
        .unwrap();
    let later = a
        .vault()
        .create_conversation(NewConversation::titled("later"))
        .await
        .unwrap();
    a.vault()
        .add_message(later.id, say("m3 after"))
        .await
        .unwrap();
    a.vault().delete_conversation(doomed.id).await.unwrap();
    a.sync_once().await.unwrap();
    clock_b.advance(2_000);
    b.sync_once().await.unwrap();
    b.vault()
        .add_message(kept.id, say("m4 after"))
        .await
        .unwrap();
    b.vault()
        .update_conversation(
            kept.id,
            ConversationUpdate {
                title: Some("renamed by B".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    b.sync_once().await.unwrap();
    a.sync_once().await.unwrap();
    let before_restore = visible_state(a.vault()).await;
    assert_eq!(before_restore, visible_state(b.vault()).await);

    server.restore(&backup).await;

    // A write reaches the restored server before anyone pulls: it takes a
    // sequence number B's cursor already passed in the lost timeline.
    clock_a.advance(1_000);
    a.vault()
        .add_message(kept.id, say("m5 restored"))
        .await
        .unwrap();
    let pushed = a.push().await.unwrap();
    assert_eq!(pushed.applied, 1);

    let b_report = b.sync_once().await.unwrap();
    assert!(b_report.pull.resynced, "{b_report:?}");
    assert_eq!(b_report.pull.dropped, 0, "a restore deletes nothing");
    assert!(b_report.pull.requeued >= 5, "{b_report:?}");
    let a_report = a.sync_once().await.unwrap();
    assert!(a_report.pull.resynced, "{a_report:?}");
    assert_eq!(a_report.pull.dropped, 0);
    b.sync_once().await.unwrap();

    let expected: BTreeMap<String, (String, Vec<String>)> = [
        (
            kept.id.to_string(),
            (
                "renamed by B".to_owned(),
                vec!["m1 before", "m2 after", "m4 after", "m5 restored"]
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            ),
        ),
        (
            later.id.to_string(),
            ("later".to_owned(), vec!["m3 after".to_owned()]),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(visible_state(a.vault()).await, expected);
    assert_eq!(visible_state(b.vault()).await, expected);

    // The server holds it all again: a new device gets exactly that.
    let c = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_at(&server)),
        &url,
        "rita",
        PASS,
        options(),
    )
    .await
    .unwrap();
    c.sync_once().await.unwrap();
    assert_eq!(visible_state(c.vault()).await, expected);
    for device in [&a, &b, &c] {
        let (pending, parked) = device.vault().replica().outbox_counts().await.unwrap();
        assert_eq!((pending, parked), (0, 0));
    }

    // A plain restart is not a restore: nothing is rebuilt.
    server.restart_with(|_| {}).await;
    let report = b.sync_once().await.unwrap();
    assert!(!report.pull.resynced, "{report:?}");
}

/// A device that pushed after the backup but never pulled since still has
/// a pull cursor from before it, which the restored database can continue:
/// the push answer's cursor it sends along (`seen`) is what gives the
/// restore away, and what it pushed is pushed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_only_pushed_since_the_backup_pushes_again() {
    let mut server = TestServer::start().await;
    let url = server.url();
    let (a, b, clock_a, _) = two_devices(&server, &url, "pia").await;
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("notes"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    let backup = server.backup().await;

    clock_a.advance(1_000);
    a.vault()
        .add_message(conv.id, say("only pushed"))
        .await
        .unwrap();
    assert_eq!(a.push().await.unwrap().applied, 1);
    server.restore(&backup).await;

    let report = a.sync_once().await.unwrap();
    assert!(report.pull.resynced, "{report:?}");
    assert_eq!(report.pull.requeued, 1, "{report:?}");
    b.sync_once().await.unwrap();
    let on_b = visible_state(b.vault()).await;
    assert_eq!(
        on_b[&conv.id.to_string()].1,
        vec!["only pushed".to_owned()],
        "B got what A had pushed before the restore"
    );
    assert_eq!(on_b, visible_state(a.vault()).await);
}

/// A deletion the restored server lost survives a recreation that reaches
/// it first. B deleted a conversation after the backup; A, offline, never
/// saw the deletion and renamed the conversation later (a recreation, which
/// keeps none of the messages from before the deletion). After the restore
/// A pushes first: the server holds the rename with no deletion mark and
/// the old message from the backup. B's rebuild must not let the rename
/// replace its tombstone unheard — it pushes the tombstone back, the server
/// covers the message, and every device drops it (found by a 100-step
/// soak, seed 302).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_the_restore_lost_still_covers_old_messages_of_a_recreation() {
    let Recreated {
        mut server,
        url,
        a,
        b,
        conv,
        backup,
    } = deleted_then_recreated().await;

    server.restore(&backup).await;
    for device in [&a, &b, &a, &b] {
        device.sync_once().await.unwrap();
    }

    let expected = recreated_without_messages(conv.id);
    assert_eq!(visible_state(a.vault()).await, expected, "on A");
    assert_eq!(visible_state(b.vault()).await, expected, "on B");
    let c = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_at(&server)),
        &url,
        "vera",
        PASS,
        options(),
    )
    .await
    .unwrap();
    c.sync_once().await.unwrap();
    assert_eq!(visible_state(c.vault()).await, expected, "on the server");
}

/// Once every device has applied a conversation's recreation, no device
/// holds its tombstone any more; a restore from a backup taken before the
/// deletion lists the conversation's older messages again. Each device
/// keeps the conversation's deletion mark past the recreation (as the
/// server's `deletion_mark`): it does not merge the messages the mark
/// covers and pushes the mark back as a tombstone at its own stamp, so the
/// server drops them too (a new device sees the recreation alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_keeps_the_deletion_mark_every_device_saw_recreated() {
    let Recreated {
        mut server,
        url,
        a,
        b,
        conv,
        backup,
    } = deleted_then_recreated().await;
    for device in [&a, &b, &a, &b] {
        device.sync_once().await.unwrap();
    }
    let expected = recreated_without_messages(conv.id);
    assert_eq!(visible_state(a.vault()).await, expected, "A before");
    assert_eq!(visible_state(b.vault()).await, expected, "B before");
    server.restore(&backup).await;
    for device in [&a, &b, &a, &b] {
        device.sync_once().await.unwrap();
    }
    assert_eq!(visible_state(a.vault()).await, expected, "on A");
    assert_eq!(visible_state(b.vault()).await, expected, "on B");
    let c = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_at(&server)),
        &url,
        "vera",
        PASS,
        options(),
    )
    .await
    .unwrap();
    c.sync_once().await.unwrap();
    assert_eq!(visible_state(c.vault()).await, expected, "on the server");
}

/// What [`deleted_then_recreated`] leaves: A and B of one account, the
/// conversation, and a backup from before its deletion.
struct Recreated {
    server: TestServer,
    url: String,
    a: SyncClient,
    b: SyncClient,
    conv: chatvault::Conversation,
    backup: Backup,
}

/// A conversation "before" with one message "old", both synced and backed
/// up; then B deletes it (synced) and A, which never heard of the
/// deletion, renames it to "recreated" later (not synced yet).
async fn deleted_then_recreated() -> Recreated {
    let mut server = TestServer::start().await;
    let url = server.url();
    let (a, b, clock_a, clock_b) = two_devices(&server, &url, "vera").await;
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("before"))
        .await
        .unwrap();
    a.vault().add_message(conv.id, say("old")).await.unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    let backup = server.backup().await;
    clock_b.advance(1_000);
    b.vault().delete_conversation(conv.id).await.unwrap();
    b.sync_once().await.unwrap();
    clock_a.advance(10_000);
    a.vault()
        .update_conversation(
            conv.id,
            ConversationUpdate {
                title: Some("recreated".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    Recreated {
        server,
        url,
        a,
        b,
        conv,
        backup,
    }
}

/// The state every device should list after [`deleted_then_recreated`]
/// has synced: the recreation, none of the messages from before.
fn recreated_without_messages(
    conv: chatvault::ConversationId,
) -> BTreeMap<String, (String, Vec<String>)> {
    [(conv.to_string(), ("recreated".to_owned(), vec![]))]
        .into_iter()
        .collect()
}

/// A message stamped after its conversation's deletion is kept, unlisted,
/// by a device that applied the deletion (docs/protocol.md, "Deleting a
/// conversation"). It is a local record like any other: when the server
/// is restored from a backup that lacks it, the device pushes it back
/// ("Restored server", step 3), so a later recreation of the conversation
/// shows it on every device. (In the simulation, seed 977 at 100 steps:
/// only the device that wrote such a message held it after the restore;
/// once a device that never saw the deletion renamed the conversation,
/// that device listed the message and the others never would.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_kept_under_a_deletion_goes_back_to_a_restored_server() {
    let mut server = TestServer::start().await;
    let url = server.url();
    let (a, b, clock_a, clock_b) = two_devices(&server, &url, "wren").await;
    let clock_c = clock_at(&server);
    let c = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_c.clone()),
        &url,
        "wren",
        PASS,
        options(),
    )
    .await
    .unwrap();

    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("talk"))
        .await
        .unwrap();
    for device in [&a, &b, &c] {
        device.sync_once().await.unwrap();
    }
    let backup = server.backup().await;

    // B deletes the conversation; A, which has not seen that, adds a
    // message stamped after the deletion; both reach the server. A then
    // holds the conversation's tombstone and the message under it.
    clock_b.advance(1_000);
    b.vault().delete_conversation(conv.id).await.unwrap();
    b.sync_once().await.unwrap();
    clock_a.advance(2_000);
    let late = a
        .vault()
        .add_message(conv.id, say("after the delete"))
        .await
        .unwrap();
    let report = a.sync_once().await.unwrap();
    assert_eq!(report.push.applied, 1, "{report:?}");
    assert!(visible_state(a.vault()).await.is_empty());

    // The restore loses both; A and B push back what they hold.
    server.restore(&backup).await;
    for device in [&a, &b] {
        let report = device.sync_once().await.unwrap();
        assert!(report.pull.resynced, "{report:?}");
    }

    // C, which never saw the deletion, renames the conversation after it:
    // a recreation, holding the message stamped after the deletion.
    clock_c.advance(3_000);
    c.vault()
        .update_conversation(
            conv.id,
            ConversationUpdate {
                title: Some("recreated".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for device in [&c, &a, &b, &c] {
        device.sync_once().await.unwrap();
    }

    let expected: BTreeMap<String, (String, Vec<String>)> = [(
        conv.id.to_string(),
        ("recreated".to_owned(), vec![late.content.clone()]),
    )]
    .into_iter()
    .collect();
    assert_eq!(visible_state(a.vault()).await, expected, "on A");
    assert_eq!(visible_state(b.vault()).await, expected, "on B");
    assert_eq!(visible_state(c.vault()).await, expected, "on C");
}
