//! Realtime: with periodic sync out of the picture (one hour), a poke over
//! the WebSocket is what makes the other device pull.

use std::sync::Arc;

use chatvault::{MemoryStore, NewConversation, NewMessage, Role, SystemClock};
use chatvault_sync::{SyncClient, SyncState};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poke_makes_the_other_device_pull() {
    let server = TestServer::start().await;
    let url = server.url();
    let a = SyncClient::register(vault().await, &url, "kate", PASS, options())
        .await
        .unwrap();
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(SystemClock)),
        &url,
        "kate",
        PASS,
        options(),
    )
    .await
    .unwrap();
    let task = b.spawn();
    let mut status = b.status();
    wait_for(&mut status, "B connected and idle", |s| {
        s.realtime && s.state == SyncState::Idle && s.last_synced_at.is_some()
    })
    .await;

    for round in 0..3 {
        let before = status.borrow().cursor.clone();
        let conv = a
            .vault()
            .create_conversation(NewConversation::titled(format!("round {round}")))
            .await
            .unwrap();
        let m = a
            .vault()
            .add_message(
                conv.id,
                NewMessage::new(Role::User, format!("hello {round}")),
            )
            .await
            .unwrap();
        a.sync_once().await.unwrap();
        wait_for(&mut status, "B pulled after the poke", |s| {
            s.cursor != before && s.state == SyncState::Idle
        })
        .await;
        assert_eq!(
            b.vault().message(m.id).await.unwrap().content,
            format!("hello {round}")
        );
    }
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poke_missed_while_disconnected_costs_latency_not_data() {
    let server = TestServer::start().await;
    // A talks to the server directly; B through the proxy, which we cut.
    let a = SyncClient::register(vault().await, &server.direct_url(), "liam", PASS, options())
        .await
        .unwrap();
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(SystemClock)),
        &server.url(),
        "liam",
        PASS,
        options(),
    )
    .await
    .unwrap();
    let task = b.spawn();
    let mut status = b.status();
    wait_for(&mut status, "B connected", |s| {
        s.realtime && s.state == SyncState::Idle && s.last_synced_at.is_some()
    })
    .await;

    server.proxy.set_down(true);
    wait_for(&mut status, "B's socket dropped", |s| !s.realtime).await;
    let before = status.borrow().cursor.clone();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("while you were away"))
        .await
        .unwrap();
    a.sync_once().await.unwrap(); // its poke finds no socket of B's

    server.proxy.set_down(false);
    // Reconnecting pulls once: B catches up without a poke or a timer.
    wait_for(&mut status, "B reconnected and pulled", |s| {
        s.realtime && s.cursor != before && s.state == SyncState::Idle
    })
    .await;
    assert_eq!(
        b.vault().conversation(conv.id).await.unwrap().title,
        "while you were away"
    );
    task.stop().await;
}
