//! `GET /v1/ws`: the realtime poke socket. After any commit for the
//! account the server sends `{"type":"poke","cursor":"..."}` and the client
//! pulls; nothing else travels on it.
//!
//! Credentials come from the `Authorization` header, the session cookie,
//! or — for a socket opened with neither (a browser page holding a token
//! cannot set headers on a WebSocket) — the first message,
//! `{"type":"auth","token":"..."}`, within [`AUTH_MESSAGE_TIMEOUT`] (or
//! the ping interval, if shorter), answered `{"type":"ready"}`. Never from the URL: URLs end up in proxy
//! and server logs.
//!
//! Every ping tick also re-checks the socket's session: a socket whose
//! session was logged out, revoked or has expired is closed (1008).
//!
//! The server pings every `ws_ping_interval` and drops a socket that has
//! sent nothing back (pong or otherwise) for a whole interval; a socket
//! whose poke queue overflows, or that cannot take a frame within an
//! interval, is dropped too. Server memory per socket is therefore bounded
//! whatever the client does. Must never block the hub: sends happen here,
//! on the socket's own task.

use chatvault_core::ErrorCode;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use tokio::time::{interval_at, timeout, Instant};

use super::extract::{
    authenticate_token, presented_token, trusted_origin, Authenticated, TokenSource,
};
use super::{AppError, AppState};
use crate::api::{ErrorBody, Poke, WsAuth, WsReady};
use crate::hub::Subscription;
use crate::types::SessionHash;

/// Largest frame accepted from a client (it has nothing to say but pongs).
const MAX_CLIENT_FRAME: usize = 4 * 1024;

/// Close code for a client too slow to take its pokes (RFC 6455 1013,
/// "try again later").
const CLOSE_TOO_SLOW: u16 = 1013;
/// Close code when the socket's session ended (RFC 6455 1008, "policy
/// violation").
const CLOSE_POLICY: u16 = 1008;
/// Close code when the server shuts down ("going away").
const CLOSE_GOING_AWAY: u16 = 1001;

/// How long a socket opened without credentials has to send its
/// `{"type":"auth"}` message.
pub(crate) const AUTH_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the poke socket.
#[utoipa::path(
    get, path = "/v1/ws", tag = "sync",
    responses(
        (status = 101, description = "Switching protocols; the server sends `Poke` messages"),
        (status = 400, description = "Not a WebSocket upgrade (`websocket_required`)", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Cookie-authenticated request from another origin (`cross_origin`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    // Credentials come from a header, the cookie or the first message,
    // never the URL: URLs end up in proxy and server logs.
    let auth = match presented_token(&headers) {
        Some((token, source)) => Some(authenticate_token(&state, token, source).await?),
        None => None,
    };
    // Browsers always send Origin on a WebSocket; a page elsewhere must not
    // ride the user's cookie. No Origin: not a browser, nothing to ride.
    if auth.is_some_and(|a| a.source == TokenSource::Cookie)
        && headers.contains_key(header::ORIGIN)
        && !trusted_origin(&headers, state.config())
    {
        return Err(AppError::client(
            ErrorCode::CrossOrigin,
            "cookie-authenticated WebSockets must come from this server's origin or an allowed origin",
        ));
    }
    let upgrade =
        upgrade.map_err(|e| AppError::client(ErrorCode::WebsocketRequired, e.body_text()))?;
    let task = state.hub().track_socket();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |mut socket| async move {
            let auth = match auth {
                Some(auth) => Some(auth),
                None => authenticate_first_message(&mut socket, &state).await,
            };
            if let Some(auth) = auth {
                let subscription = state.hub().subscribe(auth.account, state.config().ws_queue);
                serve_socket(socket, subscription, state, auth.session).await;
            }
            drop(task);
        }))
}

/// Reads the `{"type":"auth","token":...}` message a socket opened without
/// credentials must send first and checks its session: `ready` on
/// success; a close (1008) when it is late, malformed or not a live session.
async fn authenticate_first_message(
    socket: &mut WebSocket,
    state: &AppState,
) -> Option<Authenticated> {
    // A silent socket is dropped after a ping interval anyway.
    let limit = AUTH_MESSAGE_TIMEOUT.min(state.config().ws_ping_interval);
    let mut shutdown = state.shutdown();
    let first = tokio::select! {
        first = timeout(limit, socket.recv()) => first,
        () = async {
            // The guard wait_for returns is not Send: drop it right away.
            let _ = shutdown.wait_for(|down| *down).await;
        } => {
            let _ = timeout(limit, socket.send(Message::Close(Some(going_away())))).await;
            return None;
        }
    };
    let token = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<WsAuth>(&text)
            .ok()
            .filter(|m| m.kind == "auth")
            .map(|m| m.token),
        _ => None,
    };
    let auth = match token {
        Some(token) => authenticate_token(state, &token, TokenSource::Message)
            .await
            .ok(),
        None => None,
    };
    let reply = match auth {
        Some(_) => Message::Text(WsReady::TEXT.into()),
        None => Message::Close(Some(CloseFrame {
            code: CLOSE_POLICY,
            reason: r#"authenticate first: {"type":"auth","token":"..."}"#.into(),
        })),
    };
    let sent = matches!(timeout(limit, socket.send(reply)).await, Ok(Ok(())));
    auth.filter(|_| sent)
}

/// The close frame of a server shutdown.
fn going_away() -> CloseFrame {
    CloseFrame {
        code: CLOSE_GOING_AWAY,
        reason: "server shutting down".into(),
    }
}

/// Sends a frame; `false` if it failed or the client could not take it
/// within `limit` (gone or not reading: either way the socket goes).
async fn send_within(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    message: Message,
    limit: Duration,
) -> bool {
    matches!(timeout(limit, sink.send(message)).await, Ok(Ok(())))
}

/// Whether the socket's session still exists and has not expired.
async fn session_alive(state: &AppState, session: &SessionHash) -> bool {
    match state.store().session(session).await {
        Ok(Some(info)) => {
            state
                .config()
                .sessions
                .expires_at(info.created_at, info.last_used_at)
                > state.now()
        }
        Ok(None) => false,
        // A database hiccup is no reason to drop a live client.
        Err(e) => {
            tracing::warn!(error = %e, "cannot re-check a WebSocket's session");
            true
        }
    }
}

async fn serve_socket(
    socket: WebSocket,
    mut subscription: Subscription,
    state: AppState,
    session: SessionHash,
) {
    let ping_every = state.config().ws_ping_interval;
    let mut shutdown = state.shutdown();
    let (mut sink, mut stream) = socket.split();
    let mut ticker = interval_at(Instant::now() + ping_every, ping_every);
    let mut awaiting_pong = false;
    // Shutdown may have begun while the upgrade was in flight.
    if *shutdown.borrow_and_update() {
        send_within(&mut sink, Message::Close(Some(going_away())), ping_every).await;
        return;
    }
    loop {
        tokio::select! {
            poke = subscription.pokes.recv() => {
                let Some(head) = poke else {
                    let frame = CloseFrame {
                        code: CLOSE_TOO_SLOW,
                        reason: "too slow to take pokes; reconnect".into(),
                    };
                    send_within(&mut sink, Message::Close(Some(frame)), ping_every).await;
                    break;
                };
                let Ok(text) = serde_json::to_string(&Poke { kind: "poke", cursor: head }) else {
                    break;
                };
                if !send_within(&mut sink, Message::Text(text.into()), ping_every).await {
                    break;
                }
            }
            _ = ticker.tick() => {
                if awaiting_pong {
                    tracing::debug!("dropping a WebSocket that did not answer a ping");
                    break;
                }
                // Logged out, revoked or expired since the upgrade: the socket
                // must not keep receiving pokes on a dead session.
                if !session_alive(&state, &session).await {
                    let frame = CloseFrame { code: CLOSE_POLICY, reason: "session ended; sign in again".into() };
                    send_within(&mut sink, Message::Close(Some(frame)), ping_every).await;
                    break;
                }
                awaiting_pong = true;
                if !send_within(&mut sink, Message::Ping(Default::default()), ping_every).await {
                    break;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // Any frame proves the client is alive and reading.
                Some(Ok(_)) => awaiting_pong = false,
            },
            _ = shutdown.changed() => {
                send_within(&mut sink, Message::Close(Some(going_away())), ping_every).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DatabaseUrl};
    use crate::http::extract::same_origin;
    use axum::http::HeaderValue;

    fn with(host: &'static str, origin: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        h.insert(header::ORIGIN, HeaderValue::from_static(origin));
        h
    }

    #[test]
    fn origin_must_match_scheme_and_host() {
        let mut config = Config::new(DatabaseUrl::Sqlite("x.db".into()));
        assert!(same_origin(
            &with("a.example", "https://a.example"),
            &config
        ));
        assert!(!same_origin(
            &with("a.example", "http://a.example"),
            &config
        ));
        assert!(!same_origin(
            &with("a.example", "https://evil.example"),
            &config
        ));
        assert!(!same_origin(&HeaderMap::new(), &config), "no Origin");
        config.insecure_cookies = true;
        assert!(same_origin(
            &with("127.0.0.1:8787", "http://127.0.0.1:8787"),
            &config
        ));
        config.public_origin = Some("https://chat.example/".into());
        assert!(same_origin(
            &with("internal:8787", "https://chat.example"),
            &config
        ));
        assert!(!same_origin(
            &with("internal:8787", "http://internal:8787"),
            &config
        ));
        config.allow_origin("http://127.0.0.1:9000").unwrap();
        let page = with("internal:8787", "http://127.0.0.1:9000");
        assert!(!same_origin(&page, &config));
        assert!(trusted_origin(&page, &config));
        assert!(!trusted_origin(
            &with("internal:8787", "http://127.0.0.1:9001"),
            &config
        ));
    }
}
