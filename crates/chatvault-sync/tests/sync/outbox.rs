//! The outbox under failure: writes made while the server is down are all
//! pushed once it is back; changes the server refuses are dead-lettered
//! without holding back the rest, and go through when retried.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::RETRY_AFTER;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chatvault::{MemoryStore, NewConversation, NewMessage, Role, SystemClock};
use chatvault_sync::{RejectReason, SyncClient, SyncError, SyncOptions, SyncState};
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_the_server_is_down_are_pushed_when_it_is_back() {
    let mut server = TestServer::start().await;
    let url = server.url();
    let a = SyncClient::register(vault().await, &url, "hank", PASS, options())
        .await
        .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("offline notes"))
        .await
        .unwrap();
    let task = a.spawn();
    let mut status = a.status();
    wait_for(&mut status, "the first sync", |s| {
        s.state == SyncState::Idle && s.last_synced_at.is_some() && s.pending == 0
    })
    .await;
    wait_for(&mut status, "the realtime socket", |s| s.realtime).await;

    server.stop().await;
    let mut written = Vec::new();
    for i in 0..5 {
        let m = a
            .vault()
            .add_message(conv.id, NewMessage::new(Role::User, format!("offline {i}")))
            .await
            .unwrap();
        written.push(m.id);
        a.notify();
    }
    let offline = wait_for(&mut status, "offline with the writes pending", |s| {
        s.state == SyncState::Offline && s.pending == 5
    })
    .await;
    assert!(!offline.realtime);
    let err = a.sync_once().await.unwrap_err();
    assert!(
        matches!(err, SyncError::Network(_)) && err.is_transient(),
        "{err:?}"
    );

    // Same database, new process: the loop's backoff finds it.
    server.restart_with(|_| {}).await;
    wait_for(&mut status, "everything pushed after the restart", |s| {
        s.state == SyncState::Idle && s.pending == 0
    })
    .await;
    wait_for(&mut status, "the socket reconnected", |s| s.realtime).await;
    task.stop().await;
    assert!(!a.status().borrow().realtime);

    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(SystemClock)),
        &url,
        "hank",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    for (i, id) in written.iter().enumerate() {
        assert_eq!(
            b.vault().message(*id).await.unwrap().content,
            format!("offline {i}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_writes_racing_a_running_loop_all_arrive() {
    let server = TestServer::start().await;
    let url = server.url();
    let clock = clock_at(&server);
    // Small push batches, so writes land between and during pushes.
    let small_batches = SyncOptions {
        push_batch: 16,
        ..options()
    };
    let a = SyncClient::register(
        vault_with(clock.clone()).await,
        &url,
        "pete",
        PASS,
        small_batches,
    )
    .await
    .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("chatty"))
        .await
        .unwrap();
    let task = a.spawn();
    let mut ids = Vec::new();
    for i in 0..200 {
        let m = a
            .vault()
            .add_message(conv.id, NewMessage::new(Role::User, format!("draft {i}")))
            .await
            .unwrap();
        ids.push(m.id);
        a.notify();
        if i % 3 == 0 {
            // Rewrite an earlier message while its first version may be in flight.
            let target = ids[i / 2];
            a.vault()
                .update_message(
                    target,
                    chatvault::MessageUpdate {
                        content: Some(format!("final {}", i / 2)),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            a.notify();
        }
        tokio::task::yield_now().await;
    }
    // Every sync that completes after this instant saw all the writes.
    clock.advance(1_000);
    let written = a.vault().replica().now();
    a.notify();
    let mut status = a.status();
    wait_for(
        &mut status,
        "the outbox drained after the last write",
        |s| s.state == SyncState::Idle && s.pending == 0 && s.last_synced_at >= Some(written),
    )
    .await;
    task.stop().await;

    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_at(&server)),
        &url,
        "pete",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    for id in &ids {
        assert_eq!(
            b.vault().message(*id).await.unwrap().content,
            a.vault().message(*id).await.unwrap().content
        );
    }
    assert!(b
        .vault()
        .message(ids[10])
        .await
        .unwrap()
        .content
        .starts_with("final"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_change_is_dead_lettered_without_blocking_and_retried() {
    let mut server = TestServer::start_with(|c| c.max_body_bytes = 32 * 1024).await;
    let url = server.url();
    let a = SyncClient::register(vault().await, &url, "iris", PASS, options())
        .await
        .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("big paste"))
        .await
        .unwrap();
    // Oldest in the outbox, ahead of everything else.
    let big = a
        .vault()
        .add_message(conv.id, NewMessage::new(Role::Tool, "x".repeat(64 * 1024)))
        .await
        .unwrap();
    let mut small = Vec::new();
    for i in 0..3 {
        small.push(
            a.vault()
                .add_message(conv.id, NewMessage::new(Role::User, format!("small {i}")))
                .await
                .unwrap()
                .id,
        );
    }

    let report = a
        .sync_once()
        .await
        .expect("sync does not fail on one refusal");
    assert_eq!(
        (report.push.applied, report.push.dead_lettered),
        (4, 1),
        "{report:?}"
    );
    let dead = a.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].entity_id, big.id.into());
    assert_eq!(dead[0].reason, RejectReason::PayloadTooLarge);
    assert!(dead[0].next_retry_at().is_none());
    let status = a.status().borrow().clone();
    assert_eq!(
        (status.state, status.pending, status.dead_letters),
        (SyncState::Idle, 0, 1)
    );
    // Parked, not lost: the record is still in the vault, and the list
    // survives a restart of the client.
    assert_eq!(
        a.vault().message(big.id).await.unwrap().content.len(),
        64 * 1024
    );
    let again = SyncClient::login(a.vault().clone(), &url, "iris", PASS, options())
        .await
        .unwrap();
    assert_eq!(again.dead_letters().await.unwrap(), dead);
    assert_eq!(again.status().borrow().dead_letters, 1);

    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(SystemClock)),
        &url,
        "iris",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    for id in &small {
        b.vault()
            .message(*id)
            .await
            .expect("small messages got through");
    }
    assert!(b.vault().message(big.id).await.is_err());

    // The operator raises the limit; the app retries the dead letter.
    server
        .restart_with(|c| c.max_body_bytes = 1024 * 1024)
        .await;
    assert!(!a
        .retry_dead_letter(chatvault_core::OpId::new())
        .await
        .unwrap());
    assert!(a.retry_dead_letter(dead[0].op_id).await.unwrap());
    assert_eq!(a.status().borrow().dead_letters, 0);
    let report = a.sync_once().await.unwrap();
    assert_eq!(report.push.applied, 1);
    assert!(a.dead_letters().await.unwrap().is_empty());
    b.sync_once().await.unwrap();
    assert_eq!(
        b.vault().message(big.id).await.unwrap().content.len(),
        64 * 1024
    );
}

/// The vault's default record limit and the server's default request limit
/// agree: a message whose stored body is exactly at the limit syncs through
/// a default server, and one byte more is refused when it is written — not
/// parked at push time on the only device that has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_the_record_limit_syncs_and_one_over_is_refused_at_write_time() {
    let server = TestServer::start().await;
    let url = server.url();
    let a = SyncClient::register(vault().await, &url, "ruth", PASS, options())
        .await
        .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("limits"))
        .await
        .unwrap();
    // What sealing adds to the content (payload header, nonce, tag).
    let probe = a
        .vault()
        .add_message(conv.id, NewMessage::new(Role::User, "x"))
        .await
        .unwrap();
    let stored = a.vault().store().message(probe.id).await.unwrap().unwrap();
    let overhead = stored.body.0.len() - 1;
    let limit = chatvault_core::Body::MAX_SYNC_BYTES;

    let over = a
        .vault()
        .add_message(
            conv.id,
            NewMessage::new(Role::Tool, "y".repeat(limit - overhead + 1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(over, chatvault::VaultError::RecordTooLarge { bytes, .. } if bytes == limit + 1),
        "{over:?}"
    );
    let at = a
        .vault()
        .add_message(
            conv.id,
            NewMessage::new(Role::Tool, "y".repeat(limit - overhead)),
        )
        .await
        .unwrap();
    let stored = a.vault().store().message(at.id).await.unwrap().unwrap();
    assert_eq!(stored.body.0.len(), limit);
    // An edit that would grow it past the limit is refused; the message
    // keeps its content.
    let grown = a
        .vault()
        .update_message(
            at.id,
            chatvault::MessageUpdate {
                content: Some("y".repeat(limit)),
                metadata: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(grown, chatvault::VaultError::RecordTooLarge { .. }),
        "{grown:?}"
    );

    let report = a.sync_once().await.unwrap();
    assert_eq!(
        (report.push.applied, report.push.dead_lettered),
        (3, 0),
        "{report:?}"
    );
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(SystemClock)),
        &url,
        "ruth",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    assert_eq!(
        b.vault().message(at.id).await.unwrap().content.len(),
        limit - overhead
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_skewed_change_is_restamped_at_the_server_time_and_syncs() {
    let server = TestServer::start().await;
    let url = server.url();
    let clock = clock_at(&server);
    let a = SyncClient::register(
        vault_with(clock.clone()).await,
        &url,
        "jack",
        PASS,
        options(),
    )
    .await
    .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("timely"))
        .await
        .unwrap();
    let on_time = a
        .vault()
        .add_message(conv.id, NewMessage::new(Role::User, "on time"))
        .await
        .unwrap();
    // The device clock jumps three hours ahead before the next write.
    clock.advance(3 * 3_600_000);
    let early = a
        .vault()
        .add_message(conv.id, NewMessage::new(Role::User, "from the future"))
        .await
        .unwrap();

    // Refused as clock skew, re-stamped at the server's time, sent again
    // in the same run and stored: transient, never dead-lettered.
    let report = a
        .sync_once()
        .await
        .expect("a refusal does not fail the sync");
    assert_eq!(
        (
            report.push.applied,
            report.push.restamped,
            report.push.dead_lettered
        ),
        (3, 1, 0),
        "{report:?}"
    );
    assert!(a.dead_letters().await.unwrap().is_empty());
    assert_eq!(a.vault().stats().await.unwrap().pending_changes, 0);
    let restamped = a.vault().message(early.id).await.unwrap();
    assert_eq!(restamped.content, "from the future");
    assert!(restamped.version < early.version);
    assert_eq!(restamped.version.wall_ms(), server.now().as_millis() as u64);
    assert!(
        restamped.version > on_time.version,
        "still after what the server accepted"
    );

    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_at(&server)),
        &url,
        "jack",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    b.vault()
        .message(on_time.id)
        .await
        .expect("the timely message got through");
    assert_eq!(
        b.vault().message(early.id).await.unwrap().version,
        restamped.version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff_honouring_retry_after() {
    let mine = vault().await;
    mine.create_conversation(NewConversation::titled("persistent"))
        .await
        .unwrap();
    // Two 503s, then a 429 asking for one second, then success.
    let attempts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let seen = attempts.clone();
    let routes = Router::new()
        .route(
            "/v1/sync/push",
            post(move |Json(body): Json<Value>| {
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(Instant::now());
                    seen.len()
                };
                async move {
                    let error = |code: &str| json!({"error": {"code": code, "message": "not now"}});
                    match n {
                        1 | 2 => (StatusCode::SERVICE_UNAVAILABLE, Json(error("internal")))
                            .into_response(),
                        3 => (
                            StatusCode::TOO_MANY_REQUESTS,
                            [(RETRY_AFTER, "1")],
                            Json(error("slow_down")),
                        )
                            .into_response(),
                        _ => Json(all_applied(&body)).into_response(),
                    }
                }
            }),
        )
        .route(
            "/v1/sync/pull",
            get(|| async { Json(json!({"changes": [], "nextCursor": "v1.1", "hasMore": false})) }),
        );
    let url = fake_server(&mine, routes).await;
    let client = SyncClient::login(
        mine.clone(),
        &url,
        "olga",
        PASS,
        SyncOptions {
            realtime: false,
            ..options()
        },
    )
    .await
    .unwrap();
    let task = client.spawn();
    let mut status = client.status();
    let failing = wait_for(
        &mut status,
        "the first failures",
        |s| matches!(&s.state, SyncState::Error(e) if e.contains("503")),
    )
    .await;
    assert_eq!(failing.pending, 1);
    wait_for(&mut status, "the push after the retries", |s| {
        s.state == SyncState::Idle && s.pending == 0
    })
    .await;
    task.stop().await;

    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    // Backoff: at least half the first delay (20 ms) between tries...
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(10)),
        "{gaps:?}"
    );
    // ...and the server's Retry-After is honoured.
    assert!(gaps[2] >= Duration::from_secs(1), "{gaps:?}");
}
