//! `GET /v1/ws`: the realtime poke socket. After any commit for the
//! account the server sends `{"type":"poke","cursor":"..."}` and the client
//! pulls; nothing else travels on it.
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
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::{interval_at, timeout, Instant};

use super::extract::{authenticate, ApiQuery, TokenSource};
use super::{AppError, AppState};
use crate::api::{ErrorBody, Poke};
use crate::hub::Subscription;
use crate::types::Cursor;

/// Largest frame accepted from a client (it has nothing to say but pongs).
const MAX_CLIENT_FRAME: usize = 4 * 1024;

/// Close code for a client too slow to take its pokes (RFC 6455 1013,
/// "try again later").
const CLOSE_TOO_SLOW: u16 = 1013;
/// Close code when the server shuts down ("going away").
const CLOSE_GOING_AWAY: u16 = 1001;

/// `?token=` for clients that cannot set headers on a WebSocket request.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WsQuery {
    /// Session token (alternative to the bearer header and the cookie).
    token: Option<String>,
}

/// Whether a browser request comes from the page this server serves. Only
/// checked for cookie-authenticated sockets: a bearer or query token proves
/// the caller holds the token, whatever page it runs on.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Opens the poke socket.
#[utoipa::path(
    get, path = "/v1/ws", tag = "sync",
    params(WsQuery),
    responses(
        (status = 101, description = "Switching protocols; the server sends `Poke` messages"),
        (status = 400, description = "Not a WebSocket upgrade (`websocket_required`)", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Cookie-authenticated request from another origin (`cross_origin`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []), ("query_token" = []))
)]
pub(crate) async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<WsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let auth = authenticate(&state, &headers, query.token.as_deref()).await?;
    if auth.source == TokenSource::Cookie && !same_origin(&headers) {
        return Err(AppError::client(
            ErrorCode::CrossOrigin,
            "cookie-authenticated WebSockets must come from this server's origin",
        ));
    }
    let upgrade =
        upgrade.map_err(|e| AppError::client(ErrorCode::WebsocketRequired, e.body_text()))?;
    let subscription = state.hub().subscribe(auth.account, state.config().ws_queue);
    let ping_every = state.config().ws_ping_interval;
    let shutdown = state.shutdown();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| serve_socket(socket, subscription, ping_every, shutdown)))
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

async fn serve_socket(
    socket: WebSocket,
    mut subscription: Subscription,
    ping_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    let mut ticker = interval_at(Instant::now() + ping_every, ping_every);
    let mut awaiting_pong = false;
    if *shutdown.borrow() {
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
                let Ok(text) = serde_json::to_string(&Poke { kind: "poke", cursor: Cursor(head) }) else {
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
                let frame = CloseFrame { code: CLOSE_GOING_AWAY, reason: "server shutting down".into() };
                send_within(&mut sink, Message::Close(Some(frame)), ping_every).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_must_match_host_when_present() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8787"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8787"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
    }
}
