//! Nothing is lost or stopped silently: a refused (parked) change stays
//! unsynced through a resync and a retention run until retried; a pulled
//! change this build cannot read holds the cursor; a slow device clock
//! still receives changes the server admitted; one sync drains an outbox
//! of any size.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chatvault::{MemoryStore, NewConversation, NewMessage, RetentionMode, RetentionPolicy, Role};
use chatvault_sync::{RejectReason, SyncClient, SyncError, SyncOptions};
use serde_json::{json, Value};

use crate::common::*;

/// Refuses every pushed change; answers the first pull with 410 and an
/// empty snapshot (everything was deleted elsewhere, as far as it knows).
fn refusing_server_that_asks_for_a_resync() -> Router {
    let pulls = Arc::new(AtomicU32::new(0));
    Router::new()
        .route(
            "/v1/sync/push",
            post(|Json(body): Json<Value>| async move {
                let results: Vec<Value> = body["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        json!({"opId": c["opId"], "status": "rejected",
                               "reason": "invalid_change", "message": "refused for the test"})
                    })
                    .collect();
                Json(json!({"results": results, "cursor": "v1.0"}))
            }),
        )
        .route(
            "/v1/sync/pull",
            get(move || {
                let first = pulls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        (
                            StatusCode::GONE,
                            Json(
                                json!({"error": {"code": "resync_required", "message": "behind"}}),
                            ),
                        )
                    } else {
                        (
                            StatusCode::OK,
                            Json(json!({"changes": [], "nextCursor": "v1.0", "hasMore": false})),
                        )
                    }
                }
            }),
        )
        .route(
            "/v1/sync/snapshot",
            get(|| async { Json(json!({"changes": [], "hasMore": false, "cursor": "v1.0"})) }),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_change_survives_a_resync_and_retention_until_discarded() {
    let mine = vault().await;
    let conv = mine
        .create_conversation(NewConversation::titled("only here"))
        .await
        .unwrap();
    let msg = mine
        .add_message(conv.id, NewMessage::new(Role::User, "refused"))
        .await
        .unwrap();
    let url = fake_server(&mine, refusing_server_that_asks_for_a_resync()).await;
    let client = SyncClient::login(mine.clone(), &url, "olga", PASS, options())
        .await
        .unwrap();

    let report = client.sync_once().await.unwrap();
    assert_eq!(report.push.dead_lettered, 2, "{report:?}");
    assert!(report.pull.resynced, "{report:?}");
    assert_eq!(
        report.pull.dropped, 0,
        "parked records are unsynced, never dropped"
    );
    assert_eq!(mine.message(msg.id).await.unwrap().content, "refused");
    assert_eq!(mine.conversation(conv.id).await.unwrap().title, "only here");
    let dead = client.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.reason == RejectReason::InvalidChange));
    let status = client.status().borrow().clone();
    assert_eq!((status.pending, status.dead_letters), (0, 2));

    // Retention with a sync server configured keeps unsynced conversations.
    let policy = RetentionPolicy {
        max_conversations: Some(0),
        ..RetentionPolicy::default()
    };
    let run = mine
        .run_retention(&policy, RetentionMode::Apply)
        .await
        .unwrap();
    assert!(run.plan.delete.is_empty(), "{:?}", run.plan);
    assert_eq!(mine.message(msg.id).await.unwrap().content, "refused");

    // Not pushed again until retried; a retry makes it pending again.
    let report = client.sync_once().await.unwrap();
    assert_eq!(report.push.requests, 0, "{report:?}");
    assert!(client.retry_dead_letter(dead[1].op_id).await.unwrap());
    assert_eq!(client.status().borrow().pending, 1);
    let report = client.push().await.unwrap();
    assert_eq!(report.dead_lettered, 1, "refused again");
    let again = client.dead_letters().await.unwrap();
    assert_eq!(again.iter().map(|d| d.attempts).max(), Some(2));

    // Discarding drops the change for good; the record stays local.
    let gone = client.discard_dead_letter(dead[0].op_id).await.unwrap();
    assert_eq!(gone.map(|d| d.entity_id), Some(dead[0].entity_id));
    assert_eq!(client.dead_letters().await.unwrap().len(), 1);
    assert_eq!(client.retry_all_dead_letters().await.unwrap(), 1);
    assert!(client.dead_letters().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_pulled_change_holds_the_cursor() {
    let mine = vault().await;
    let pulls = Arc::new(AtomicU32::new(0));
    let counted = pulls.clone();
    let routes = Router::new().route(
        "/v1/sync/pull",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                Json(json!({
                    "changes": [{"opId": "not a change from this version", "kind": "reaction"}],
                    "nextCursor": "v1.9",
                    "hasMore": false
                }))
            }
        }),
    );
    let url = fake_server(&mine, routes).await;
    let client = SyncClient::login(mine.clone(), &url, "pia", PASS, options())
        .await
        .unwrap();
    let err = client.pull().await.unwrap_err();
    assert!(
        matches!(err, SyncError::UnreadableChange { count: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade"), "{err}");
    assert_eq!(
        client.status().borrow().cursor,
        None,
        "the cursor did not move"
    );
    assert_eq!(mine.replica().sync_meta("sync.cursor").await.unwrap(), None);
    let status = client.status().borrow().clone();
    assert!(status.last_error.unwrap().contains("cannot read"));
    // The next pull asks for the same page again.
    let _ = client.pull().await.unwrap_err();
    assert_eq!(pulls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_a_slow_clock_still_receives_what_the_server_admitted() {
    let server = TestServer::start().await;
    let url = server.url();
    let a = SyncClient::register(
        vault_with(clock_at(&server)).await,
        &url,
        "quin",
        PASS,
        options(),
    )
    .await
    .unwrap();
    // B's clock is two hours slow: A's stamps are "from the future" to it.
    let slow = clock_at(&server);
    slow.set(chatvault::Timestamp(
        server.now().as_millis() - 2 * 3_600_000,
    ));
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(slow),
        &url,
        "quin",
        PASS,
        options(),
    )
    .await
    .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("now"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    let report = b.sync_once().await.expect("not ClockBehind");
    assert_eq!(report.pull.applied, 1, "{report:?}");
    assert_eq!(b.vault().conversation(conv.id).await.unwrap().title, "now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_drains_an_outbox_of_any_size() {
    let server = TestServer::start().await;
    let url = server.url();
    // 2 per round: the old cap of 64 rounds would stop at 128 changes.
    let small = SyncOptions {
        push_batch: 2,
        ..options()
    };
    let a = SyncClient::register(vault().await, &url, "rosa", PASS, small)
        .await
        .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("many"))
        .await
        .unwrap();
    for i in 0..200 {
        a.vault()
            .add_message(conv.id, NewMessage::new(Role::User, format!("{i}")))
            .await
            .unwrap();
    }
    let report = a.sync_once().await.unwrap();
    assert_eq!(report.push.applied, 201, "{report:?}");
    assert_eq!(a.status().borrow().pending, 0);
    assert_eq!(a.vault().stats().await.unwrap().pending_changes, 0);
}
