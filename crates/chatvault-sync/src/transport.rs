//! The seam between the sync client and the network: [`Transport`] sends
//! one HTTP request and opens the realtime WebSocket; everything above it
//! (sessions, retries, push, pull, the loop) is the same on every platform.
//!
//! Two implementations: `native` (reqwest + tokio-tungstenite, bearer
//! tokens) and, in a browser, `browser` (`fetch` with
//! `credentials: 'include'` and a browser `WebSocket`, the session in an
//! HttpOnly cookie). A transport only moves bytes: it must never retry,
//! log a body or a token, or decide what an answer means — that is
//! `http` and `client`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use url::Url;

use crate::error::Result;

/// `Send + Sync` natively; nothing in a browser, where a transport holds
/// JS handles and everything runs on the one thread.
#[cfg(not(target_family = "wasm"))]
pub(crate) trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_family = "wasm"))]
impl<T: Send + Sync + ?Sized> MaybeSendSync for T {}
/// `Send + Sync` natively; nothing in a browser, where a transport holds
/// JS handles and everything runs on the one thread.
#[cfg(target_family = "wasm")]
pub(crate) trait MaybeSendSync {}
#[cfg(target_family = "wasm")]
impl<T: ?Sized> MaybeSendSync for T {}

/// The HTTP methods the protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the server hands out, and the client presents, a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionMode {
    /// A token in the login answer, sent as `Authorization: Bearer`
    /// (login with `client: "native"`).
    #[cfg_attr(target_family = "wasm", allow(dead_code))] // the native one's
    Bearer,
    /// An HttpOnly `cv_session` cookie the browser keeps and sends by
    /// itself; no token ever reaches the client's code (login with
    /// `client: "browser"`).
    #[cfg_attr(not(target_family = "wasm"), allow(dead_code))] // the browser's
    Cookie,
}

/// One request, fully built (URL with query; JSON body, if any).
pub(crate) struct HttpRequest<'a> {
    pub method: Method,
    pub url: Url,
    /// `Authorization: Bearer` (only in [`SessionMode::Bearer`]).
    pub bearer: Option<&'a str>,
    /// A JSON body (`Content-Type: application/json`).
    pub body: Option<Vec<u8>>,
}

/// What came back, whatever the status.
pub(crate) struct HttpResponse {
    pub status: u16,
    /// `Retry-After` in seconds, if sent and readable.
    pub retry_after: Option<Duration>,
    /// The `Date` header, if sent.
    pub date: Option<String>,
    pub body: Vec<u8>,
}

/// The network, as the sync client needs it.
#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
pub(crate) trait Transport: MaybeSendSync + fmt::Debug {
    /// How sessions travel on this transport.
    fn session_mode(&self) -> SessionMode;

    /// Sends one request. Any answer (4xx and 5xx too) is `Ok`; failing to
    /// get one is [`SyncError::Network`](crate::SyncError::Network).
    async fn send(&self, request: HttpRequest<'_>) -> Result<HttpResponse>;

    /// Opens the realtime WebSocket at `url`. A `401` refusal of the
    /// upgrade is a [`SyncError::Server`](crate::SyncError::Server) with
    /// status 401 (the session needs renewing); anything else that stops
    /// it is [`SyncError::Network`](crate::SyncError::Network).
    async fn connect(&self, url: &Url, bearer: Option<&str>) -> Result<Box<dyn RealtimeSocket>>;

    /// Whether the platform believes it is online, as it changes (a
    /// browser's `navigator.onLine` and its `online` / `offline` events).
    /// `None`: the platform cannot tell; every attempt is made.
    fn online(&self) -> Option<watch::Receiver<bool>> {
        None
    }
}

/// An open realtime socket: the server's text messages, in order.
#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
pub(crate) trait RealtimeSocket: MaybeSendSync {
    /// The next sign of life: a text message, or any other frame (a ping,
    /// answered underneath); `None` once the socket closed cleanly, an
    /// error if it broke.
    async fn next(&mut self) -> Option<Result<Incoming>>;

    /// Whether the server's pings show up in [`next`](Self::next), so
    /// silence means a dead connection. A browser answers pings without
    /// telling the page: its sockets are not timed out for silence.
    fn sees_pings(&self) -> bool {
        true
    }

    /// Closes the socket (best effort).
    async fn close(&mut self);
}

/// What a realtime socket received.
pub(crate) enum Incoming {
    /// A text message (a poke).
    Text(String),
    /// Any other frame: only proves the connection is alive.
    #[cfg_attr(target_family = "wasm", allow(dead_code))] // the native one's
    Alive,
}
