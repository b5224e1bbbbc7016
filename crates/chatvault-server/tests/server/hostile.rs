//! Hostile WebSocket clients: frames over the 4 KiB limit, binary or
//! garbage first frames, and a socket that outlives its session. (Replayed
//! push batches are in `http_api.rs`, expired sessions over HTTP too;
//! malformed push/pull input is fuzzed by chatvault-fuzz.)

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::backend_tests;
use crate::common::{Backend, TestServer};
use crate::websocket::{closed_with, open_socket};

async fn oversized_binary_and_garbage_frames_close_the_socket(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let ws = format!("{}/v1/ws", srv.base.replacen("http://", "ws://", 1));

    // An authenticated socket sent a frame over 4 KiB: tungstenite refuses
    // it (1009 "message too big") or the connection drops; either way the
    // socket is gone and the server goes on.
    let mut socket = open_socket(&srv.base, &api).await;
    let _ = socket.send(Message::text("x".repeat(64 * 1024))).await;
    let code = closed_with(&mut socket).await;
    assert!(matches!(code, None | Some(1009)), "closed with {code:?}");

    // Before authentication: an oversized, a binary, a non-UTF-8-looking
    // and a deeply nested first frame are all refused with 1008 (or, when
    // too big, 1009 / a dropped connection).
    let firsts = [
        Message::binary(vec![0xff; 64]),
        Message::text("[".repeat(3000)),
        Message::text(r#"{"type":"auth","token":["not","a","string"]}"#),
        Message::text("x".repeat(64 * 1024)),
    ];
    for first in firsts {
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws)
            .await
            .expect("upgraded without credentials");
        let _ = socket.send(first.clone()).await;
        let code = closed_with(&mut socket).await;
        assert!(
            matches!(code, None | Some(1008) | Some(1009)),
            "{} byte first frame: closed with {code:?}",
            first.len()
        );
    }

    // None of it hurt the server: sockets are gone, HTTP still answers.
    let ok =
        crate::common::eventually(Duration::from_secs(5), || srv.server.open_sockets() == 0).await;
    assert!(ok, "{} sockets still open", srv.server.open_sockets());
    assert!(api.get("/v1/keys").await.status.is_success());
}

async fn a_socket_is_closed_once_its_session_expires(backend: Backend) {
    let Some(srv) =
        TestServer::start_with(backend, |c| c.ws_ping_interval = Duration::from_millis(200)).await
    else {
        return;
    };
    let api = srv.user("alice").await;
    let mut socket = open_socket(&srv.base, &api).await;
    // Alive across a few pings while the session is valid (reading the
    // socket is what answers them).
    let alive = tokio::time::timeout(Duration::from_millis(700), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => break other,
            }
        }
    })
    .await;
    assert!(alive.is_err(), "the socket ended early: {alive:?}");
    // Past the idle expiry (7 days without use) and any absolute limit.
    srv.clock.advance(Duration::from_secs(400 * 86_400));
    assert_eq!(closed_with(&mut socket).await, Some(1008));
    assert_eq!(
        api.get("/v1/keys").await.status,
        reqwest::StatusCode::UNAUTHORIZED
    );
}

backend_tests!(
    oversized_binary_and_garbage_frames_close_the_socket,
    a_socket_is_closed_once_its_session_expires,
);
