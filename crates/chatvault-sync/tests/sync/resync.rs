//! Resync: a device whose cursor fell behind the server's tombstone
//! horizon rebuilds from the snapshot — deleted records go, its own unsent
//! changes stay and are pushed afterwards — and a server that keeps asking
//! for a resync gets an error, not a loop.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chatvault::{MessageUpdate, NewConversation, NewMessage, Role};
use chatvault_sync::{SyncClient, SyncError, SyncState};
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_behind_the_horizon_resyncs_without_losing_pending_changes() {
    let server = TestServer::start().await;
    let url = server.url();
    let (a, b, clock_a, clock_b) = two_devices(&server, &url, "mona").await;
    let doomed = a
        .vault()
        .create_conversation(NewConversation::titled("to be deleted"))
        .await
        .unwrap();
    a.vault()
        .add_message(doomed.id, NewMessage::new(Role::User, "gone soon"))
        .await
        .unwrap();
    let kept = a
        .vault()
        .create_conversation(NewConversation::titled("kept"))
        .await
        .unwrap();
    let shared = a
        .vault()
        .add_message(kept.id, NewMessage::new(Role::User, "draft"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    let old_cursor = b.status().borrow().cursor.clone();

    // While B is away: A deletes one conversation and edits a message.
    let edit = |content: &str| MessageUpdate {
        content: Some(content.into()),
        ..Default::default()
    };
    clock_a.advance(1_000);
    a.vault().delete_conversation(doomed.id).await.unwrap();
    a.vault()
        .update_message(shared.id, edit("edited by A"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    // B, offline, edits the same message later and starts a conversation.
    clock_b.advance(2_000);
    b.vault()
        .update_message(shared.id, edit("edited by B"))
        .await
        .unwrap();
    let local = b
        .vault()
        .create_conversation(NewConversation::titled("B's unsynced"))
        .await
        .unwrap();

    // 31 days later the server purges the deletion's tombstone (and every
    // session: both devices sign in again on their own).
    server.clock.advance(Duration::from_secs(31 * 86_400));
    let purged = server.server().run_maintenance().await.unwrap();
    assert!(purged.tombstones >= 1, "{purged:?}");

    // Pull alone, so B's changes are still pending during the rebuild.
    let report = b.pull().await.expect("resync");
    assert!(report.resynced, "{report:?}");
    assert_eq!(report.dropped, 1, "the deleted conversation");
    assert!(b.vault().conversation(doomed.id).await.is_err());
    assert_eq!(b.vault().conversation(kept.id).await.unwrap().title, "kept");
    assert_eq!(
        b.vault().message(shared.id).await.unwrap().content,
        "edited by B"
    );
    assert_eq!(
        b.vault().conversation(local.id).await.unwrap().title,
        "B's unsynced"
    );
    assert_eq!(b.vault().stats().await.unwrap().pending_changes, 2);
    let status = b.status().borrow().clone();
    assert_eq!(status.state, SyncState::Idle);
    assert!(status.cursor.is_some() && status.cursor != old_cursor);

    // Now B pushes; A converges on B's changes.
    let report = b.sync_once().await.unwrap();
    assert_eq!(report.push.applied, 2);
    assert!(!report.pull.resynced);
    a.sync_once().await.unwrap();
    assert_eq!(
        a.vault().message(shared.id).await.unwrap().content,
        "edited by B"
    );
    assert_eq!(
        a.vault().conversation(local.id).await.unwrap().title,
        "B's unsynced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_asking_for_resync_gets_an_error_not_a_loop() {
    let mine = vault().await;
    let conv = mine
        .create_conversation(NewConversation::titled("local"))
        .await
        .unwrap();
    // A broken server: every pull is 410, the snapshot is empty.
    let snapshots = Arc::new(AtomicU32::new(0));
    let counted = snapshots.clone();
    let routes = Router::new()
        .route(
            "/v1/sync/push",
            post(|Json(body): Json<Value>| async move { Json(all_applied(&body)) }),
        )
        .route(
            "/v1/sync/pull",
            get(|| async {
                (
                    StatusCode::GONE,
                    Json(json!({"error": {"code": "resync_required", "message": "again"}})),
                )
            }),
        )
        .route(
            "/v1/sync/snapshot",
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Json(json!({"changes": [], "hasMore": false, "cursor": "v1.0"})) }
            }),
        );
    let url = fake_server(&mine, routes).await;
    let client = SyncClient::login(mine.clone(), &url, "nina", PASS, options())
        .await
        .unwrap();

    let err = client.pull().await.unwrap_err();
    assert!(matches!(err, SyncError::ResyncLoop), "{err:?}");
    assert!(err.to_string().contains("instead of looping"), "{err}");
    assert_eq!(snapshots.load(Ordering::SeqCst), 1);
    assert!(matches!(
        client.status().borrow().state,
        SyncState::Error(_)
    ));
    // The unsynced local record survived the empty snapshot.
    assert_eq!(mine.conversation(conv.id).await.unwrap().title, "local");
    assert_eq!(mine.stats().await.unwrap().pending_changes, 1);

    // In the loop: the push goes through, the pull stops at the second
    // 410 again, and the error is retried at the backoff cap, not in a spin.
    let task = client.spawn();
    let mut status = client.status();
    wait_for(&mut status, "the loop's first attempt", |s| {
        matches!(&s.state, SyncState::Error(e) if e.contains("looping")) && s.pending == 0
    })
    .await;
    task.stop().await;
    assert!(snapshots.load(Ordering::SeqCst) <= 3);
}
