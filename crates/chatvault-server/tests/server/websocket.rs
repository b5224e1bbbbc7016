//! `/v1/ws` end to end, per backend: pokes after commits (only to the
//! committing account), socket authentication, and the ping policy (an
//! unresponsive socket is dropped, a responsive one stays). Every wait is a
//! bounded poll, never a bare sleep.

use std::time::Duration;

use chatvault_core::ConversationId;
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::backend_tests;
use crate::common::{conversation, eventually, seq_of, Api, Backend, TestServer};

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/v1/ws` on `base` with the session's bearer token.
pub async fn open_socket(base: &str, api: &Api) -> Socket {
    let url = format!("{}/v1/ws", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("ws request");
    let token = api.token.as_deref().expect("signed-in client");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket opens");
    socket
}

/// The next poke on `socket` (skipping pings), within `limit`.
pub async fn next_poke(socket: &mut Socket, limit: Duration) -> Value {
    let wait = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str::<Value>(text.as_str()).expect("poke is JSON")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("socket ended while waiting for a poke: {other:?}"),
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .expect("a poke arrives in time")
}

async fn connect_status(url: String, header: Option<(&'static str, String)>) -> Option<u16> {
    let mut request = url.into_client_request().expect("ws request");
    if let Some((name, value)) = header {
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Some(response.status().as_u16())
        }
        Err(e) => panic!("unexpected WebSocket error: {e}"),
    }
}

async fn a_push_pokes_the_accounts_sockets(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let mut first = open_socket(&srv.base, &api).await;
    let mut second = open_socket(&srv.base, &api).await;
    assert!(eventually(Duration::from_secs(5), || srv.server.open_sockets() == 2).await);

    let pushed = api
        .push(&[conversation(ConversationId::new(), srv.now_ms(), b"x")])
        .await;
    for socket in [&mut first, &mut second] {
        let poke = next_poke(socket, Duration::from_secs(5)).await;
        assert_eq!(poke["type"], "poke");
        assert_eq!(poke["cursor"], pushed["cursor"]);
    }
    // A push that applies nothing (a replay) pokes nobody; the next real
    // one does, with its own cursor.
    let replay = api.push(&[]).await;
    assert_eq!(replay["cursor"], pushed["cursor"]);
    let again = api
        .push(&[conversation(ConversationId::new(), srv.now_ms(), b"y")])
        .await;
    let poke = next_poke(&mut first, Duration::from_secs(5)).await;
    assert_eq!(poke["cursor"], again["cursor"]);
}

async fn pokes_reach_only_the_committing_account(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let mut bobs_socket = open_socket(&srv.base, &bob).await;
    assert!(eventually(Duration::from_secs(5), || srv.server.open_sockets() == 1).await);
    // Alice's push ends at 3, Bob's at 1: had Alice's poke leaked to
    // Bob's socket, it would arrive first and carry 3.
    let now = srv.now_ms();
    let alices = alice
        .push(&[
            conversation(ConversationId::new(), now, b"a"),
            conversation(ConversationId::new(), now, b"b"),
            conversation(ConversationId::new(), now, b"c"),
        ])
        .await;
    assert_eq!(seq_of(&alices["cursor"]), 3);
    let bobs = bob
        .push(&[conversation(ConversationId::new(), now, b"d")])
        .await;
    assert_eq!(seq_of(&bobs["cursor"]), 1);
    let poke = next_poke(&mut bobs_socket, Duration::from_secs(5)).await;
    assert_eq!(poke["cursor"], bobs["cursor"]);
}

async fn sockets_need_a_valid_session(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let ws = format!("{}/v1/ws", srv.base.replacen("http://", "ws://", 1));
    assert_eq!(
        connect_status(
            ws.clone(),
            Some(("authorization", format!("Bearer {}", "x".repeat(43))))
        )
        .await,
        Some(401)
    );
    let token = api.token.clone().expect("token");
    assert_eq!(
        connect_status(ws.clone(), Some(("cookie", format!("cv_session={token}")))).await,
        None
    );
    // A cookie from another origin's page is refused.
    let mut request = ws.clone().into_client_request().expect("ws request");
    request.headers_mut().insert(
        "cookie",
        HeaderValue::from_str(&format!("cv_session={token}")).unwrap(),
    );
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_static("https://evil.example"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    // A plain GET is not an upgrade.
    let plain = api.get("/v1/ws").await;
    assert_eq!(plain.status, StatusCode::BAD_REQUEST);
}

/// How the server ends `socket` within 5 s: its close code, or `None` if
/// the connection just drops.
pub async fn closed_with(socket: &mut Socket) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => break None,
            }
        }
    })
    .await
    .expect("the server ends the socket within 5 s")
}

/// Opens `url` without credentials, sends `first` (if any) and returns
/// what the server answers first: its text, or the close code.
async fn first_answer(url: &str, first: Option<String>) -> Result<Value, Option<u16>> {
    use futures::SinkExt as _;
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("a socket without credentials is upgraded (it may authenticate in-band)");
    if let Some(text) = first {
        socket.send(Message::text(text)).await.expect("send");
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    break Ok(serde_json::from_str(text.as_str()).expect("JSON"))
                }
                Some(Ok(Message::Close(frame))) => break Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                _ => break Err(None),
            }
        }
    })
    .await
    .expect("the server answers within 5 s")
}

async fn a_socket_without_credentials_authenticates_with_its_first_message(backend: Backend) {
    let Some(srv) =
        TestServer::start_with(backend, |c| c.ws_ping_interval = Duration::from_millis(500)).await
    else {
        return;
    };
    let api = srv.user("alice").await;
    let token = api.token.clone().expect("token");
    let ws = format!("{}/v1/ws", srv.base.replacen("http://", "ws://", 1));
    let auth = |token: &str| Some(format!(r#"{{"type":"auth","token":"{token}"}}"#));

    assert_eq!(
        first_answer(&ws, auth(&token)).await,
        Ok(serde_json::json!({"type": "ready"}))
    );
    // Refused with 1008: a wrong token, another message type, junk, and a
    // token in the URL with no message (the URL is never read).
    assert_eq!(
        first_answer(&ws, auth(&"x".repeat(43))).await,
        Err(Some(1008))
    );
    assert_eq!(
        first_answer(&ws, Some(format!(r#"{{"type":"poke","token":"{token}"}}"#))).await,
        Err(Some(1008))
    );
    assert_eq!(first_answer(&ws, Some("{".into())).await, Err(Some(1008)));
    assert_eq!(
        first_answer(&format!("{ws}?token={token}"), None).await,
        Err(Some(1008)),
        "a silent socket is closed after the ping interval, URL token or not"
    );
    assert_eq!(srv.server.open_sockets(), 0);

    // Authenticated in-band, the socket gets its account's pokes.
    use futures::SinkExt as _;
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.expect("open");
    socket
        .send(Message::text(auth(&token).unwrap()))
        .await
        .expect("send");
    let ready = next_poke(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(ready["type"], "ready");
    let pushed = api
        .push(&[conversation(ConversationId::new(), srv.now_ms(), b"x")])
        .await;
    let poke = next_poke(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(poke["cursor"], pushed["cursor"]);
    // Logging the session out closes it like any other socket.
    api.post("/v1/auth/logout", &serde_json::json!({})).await;
    assert_eq!(closed_with(&mut socket).await, Some(1008));
}

async fn an_unresponsive_socket_is_dropped(backend: Backend) {
    let Some(srv) =
        TestServer::start_with(backend, |c| c.ws_ping_interval = Duration::from_millis(100)).await
    else {
        return;
    };
    let api = srv.user("alice").await;
    // Never read: the client library answers pings only while reading.
    let _silent = open_socket(&srv.base, &api).await;
    assert!(eventually(Duration::from_secs(5), || srv.server.open_sockets() == 1).await);
    assert!(
        eventually(Duration::from_secs(10), || srv.server.open_sockets() == 0).await,
        "a socket that never answers pings is dropped"
    );
}

async fn a_responsive_socket_survives_pings(backend: Backend) {
    let Some(srv) =
        TestServer::start_with(backend, |c| c.ws_ping_interval = Duration::from_millis(100)).await
    else {
        return;
    };
    let api = srv.user("alice").await;
    let mut socket = open_socket(&srv.base, &api).await;
    let mut pings = 0;
    while pings < 4 {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    assert_eq!(srv.server.open_sockets(), 1);
    let pushed = api
        .push(&[conversation(ConversationId::new(), srv.now_ms(), b"x")])
        .await;
    let poke = next_poke(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(poke["cursor"], pushed["cursor"]);
}

/// Pokes cross between servers sharing a PostgreSQL database, and keep
/// crossing after the LISTEN connection is killed (the listener reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_listener_reconnects_after_its_connection_dies() {
    let Some(a) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    let b = a.start_sharing().await;
    let writer = a.user("alice").await;
    let mut reader = b.anonymous();
    reader.token = writer.token.clone();
    let mut socket = open_socket(&b.base, &reader).await;

    let first = writer
        .push(&[conversation(ConversationId::new(), a.now_ms(), b"1")])
        .await;
    assert_eq!(
        next_poke(&mut socket, Duration::from_secs(10)).await["cursor"],
        first["cursor"]
    );

    let url = &a
        .db
        .as_ref()
        .and_then(|d| d.pg.as_ref())
        .expect("PostgreSQL")
        .url;
    let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
            &[&chatvault_server::store::LISTENER_APPLICATION_NAME],
        )
        .await
        .expect("terminate listeners");
    assert_eq!(killed.len(), 2, "one LISTEN connection per server");

    // Pokes sent while B is reconnecting are lost (by design: a missed poke
    // costs latency, not data), so push until one arrives, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        writer
            .push(&[conversation(ConversationId::new(), a.now_ms(), b"n")])
            .await;
        let wait = tokio::time::timeout(
            Duration::from_millis(500),
            next_poke(&mut socket, Duration::from_secs(30)),
        );
        if let Ok(poke) = wait.await {
            assert_eq!(poke["type"], "poke");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no poke after the listener reconnected"
        );
    }
}

backend_tests!(
    a_push_pokes_the_accounts_sockets,
    pokes_reach_only_the_committing_account,
    sockets_need_a_valid_session,
    a_socket_without_credentials_authenticates_with_its_first_message,
    an_unresponsive_socket_is_dropped,
    a_responsive_socket_survives_pings,
);
