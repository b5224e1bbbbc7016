//! A vault moved to another store (`Vault::migrate`) syncs as if it had
//! never moved: its first push sends exactly what the original's would
//! have — the same changes under the same op ids, in the same order —
//! and its parked changes stay parked.

use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::{Json, Router};
use chatvault::{
    MemoryStore, NewConversation, NewMessage, ParkReason, Role, SqliteOptions, SqliteStore, Store,
    SystemClock, Timestamp, Vault,
};
use chatvault_sync::{SyncClient, SyncOptions};
use serde_json::{json, Value};

use crate::common::*;

/// A server that applies every push and keeps each pushed change, in order.
fn recording_server(log: Arc<Mutex<Vec<Value>>>) -> Router {
    Router::new()
        .route(
            "/v1/sync/push",
            post(move |Json(body): Json<Value>| {
                let log = Arc::clone(&log);
                async move {
                    let changes = body["changes"].as_array().cloned().unwrap_or_default();
                    log.lock().unwrap().extend(changes);
                    Json(all_applied(&body))
                }
            }),
        )
        .route(
            "/v1/sync/pull",
            get(|| async { Json(json!({"changes": [], "nextCursor": "v1.1", "hasMore": false})) }),
        )
}

/// Everything `vault`'s first push sends.
async fn first_push(vault: Arc<Vault>) -> Vec<Value> {
    let log: Arc<Mutex<Vec<Value>>> = Arc::default();
    let url = fake_server(&vault, recording_server(Arc::clone(&log))).await;
    let options = SyncOptions {
        realtime: false,
        ..options()
    };
    let client = SyncClient::login(vault, &url, "olga", PASS, options)
        .await
        .unwrap();
    client.push().await.unwrap();
    let pushed = log.lock().unwrap().clone();
    pushed
}

async fn open(store: Arc<dyn Store>) -> Arc<Vault> {
    Arc::new(
        Vault::open_encrypted(store, PASS, vault_options(Arc::new(SystemClock)))
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn a_migrated_vault_pushes_exactly_what_the_original_would_have() {
    let original: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let vault = open(Arc::clone(&original)).await;
    let mut ids = Vec::new();
    for c in 0..3 {
        let conv = vault
            .create_conversation(NewConversation::titled(format!("c{c}")))
            .await
            .unwrap();
        let batch = (0..40)
            .map(|m| NewMessage::new(Role::User, format!("m{m} of c{c}")))
            .collect();
        ids.extend(vault.add_messages(conv.id, batch).await.unwrap());
    }
    vault.delete_message(ids[5].id).await.unwrap();
    let refused = vault.replica().pending_changes(1).await.unwrap()[0].seq;
    let reason = ParkReason {
        code: "payload_too_large".into(),
        message: "too big".into(),
        at: Timestamp(1_700_000_000_000),
    };
    vault.replica().park(vec![(refused, reason)]).await.unwrap();
    drop(vault);

    let dir = tempfile::tempdir().unwrap();
    let moved: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("moved.db"), SqliteOptions::default())
            .await
            .unwrap(),
    );
    Vault::migrate(&*original, &*moved, None).await.unwrap();

    let from_moved = open(moved).await;
    let pushed_after_the_move = first_push(Arc::clone(&from_moved)).await;
    let pushed_without_it = first_push(open(original).await).await;
    assert_eq!(
        pushed_after_the_move.len(),
        3 + 120 - 1,
        "every pending change once (the parked one stays)"
    );
    assert_eq!(pushed_after_the_move, pushed_without_it);
    assert_eq!(
        from_moved
            .replica()
            .all_parked_changes()
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(from_moved
        .replica()
        .pending_changes(10)
        .await
        .unwrap()
        .is_empty());
}
