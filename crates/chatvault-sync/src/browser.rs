//! The browser [`Transport`]: `fetch` and a browser `WebSocket`, with the
//! session in the server's HttpOnly `cv_session` cookie.
//!
//! - Every request is `fetch(url, {credentials: 'include', mode: 'cors'})`:
//!   the browser attaches the cookie itself and page scripts never see it.
//!   Login asks for `client: "browser"`, so the answer carries no token;
//!   nothing token-like is ever held in Rust memory, a JS variable,
//!   localStorage or IndexedDB. (A server on another origin than the page
//!   must list the page's origin in its `--allowed-origin`.)
//! - The realtime `WebSocket` carries the cookie on its upgrade (the
//!   browser sends it; the server checks the `Origin`).
//! - `navigator.onLine` and the `online` / `offline` events of the global
//!   scope (a window or a worker) feed [`Transport::online`], so the sync
//!   loop pauses while offline and resumes when the browser is back.
//!
//! A browser reports a refused WebSocket upgrade only as a close (no
//! status), so a `401` on the socket reads as a network failure; the next
//! HTTP request renews the session instead.

use std::rc::Rc;
use std::time::Duration;

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::StreamExt as _;
use tokio::sync::watch;
use url::Url;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::error::{Result, SyncError};
use crate::rt;
use crate::transport::{
    HttpRequest, HttpResponse, Incoming, RealtimeSocket, SessionMode, Transport,
};

#[wasm_bindgen]
extern "C" {
    // The global `fetch`, so it works in a window and in a worker alike.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &web_sys::Request) -> js_sys::Promise;
}

fn js_error(what: &str, e: &JsValue) -> SyncError {
    let detail = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    SyncError::Network(format!("{what}: {detail}"))
}

/// The global scope's `navigator.onLine` (`true` if it cannot be read).
fn navigator_online() -> bool {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"navigator".into())
        .and_then(|n| js_sys::Reflect::get(&n, &"onLine".into()))
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(true)
}

/// An event name and its listener.
type Listener = (&'static str, Closure<dyn FnMut()>);

/// `fetch` + `WebSocket`, cookie sessions.
pub(crate) struct BrowserTransport {
    request_timeout: Duration,
    online: watch::Receiver<bool>,
    /// The `online` / `offline` listeners, removed on drop.
    listeners: Vec<Listener>,
}

impl std::fmt::Debug for BrowserTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserTransport")
            .field("online", &*self.online.borrow())
            .finish_non_exhaustive()
    }
}

impl BrowserTransport {
    pub(crate) fn new(request_timeout: Duration) -> Result<Self> {
        let (tx, online) = watch::channel(navigator_online());
        let tx = Rc::new(tx);
        let target: web_sys::EventTarget = js_sys::global().unchecked_into();
        let mut listeners = Vec::new();
        for (event, value) in [("online", true), ("offline", false)] {
            let tx = tx.clone();
            let listener = Closure::<dyn FnMut()>::new(move || {
                tracing::info!(online = value, "the browser's connectivity changed");
                tx.send_replace(value);
            });
            target
                .add_event_listener_with_callback(event, listener.as_ref().unchecked_ref())
                .map_err(|e| js_error("cannot watch the online state", &e))?;
            listeners.push((event, listener));
        }
        Ok(BrowserTransport {
            request_timeout,
            online,
            listeners,
        })
    }
}

impl Drop for BrowserTransport {
    fn drop(&mut self) {
        let target: web_sys::EventTarget = js_sys::global().unchecked_into();
        for (event, listener) in &self.listeners {
            let _ = target
                .remove_event_listener_with_callback(event, listener.as_ref().unchecked_ref());
        }
    }
}

#[async_trait(?Send)]
impl Transport for BrowserTransport {
    fn session_mode(&self) -> SessionMode {
        SessionMode::Cookie
    }

    async fn send(&self, request: HttpRequest<'_>) -> Result<HttpResponse> {
        let init = web_sys::RequestInit::new();
        init.set_method(request.method.as_str());
        // The cookie goes along cross-origin too (the server's CORS answer
        // must allow credentials for this page's origin).
        init.set_credentials(web_sys::RequestCredentials::Include);
        init.set_mode(web_sys::RequestMode::Cors);
        let headers = web_sys::Headers::new().map_err(|e| js_error("cannot build headers", &e))?;
        if let Some(token) = request.bearer {
            headers
                .set("authorization", &format!("Bearer {token}"))
                .map_err(|e| js_error("cannot build headers", &e))?;
        }
        if let Some(body) = &request.body {
            headers
                .set("content-type", "application/json")
                .map_err(|e| js_error("cannot build headers", &e))?;
            init.set_body(&js_sys::Uint8Array::from(body.as_slice()));
        }
        init.set_headers(&headers);
        let abort = web_sys::AbortController::new().ok();
        if let Some(abort) = &abort {
            init.set_signal(Some(&abort.signal()));
        }
        let req = web_sys::Request::new_with_str_and_init(request.url.as_str(), &init)
            .map_err(|e| js_error("cannot build the request", &e))?;
        let exchange = async {
            let response: web_sys::Response = JsFuture::from(global_fetch(&req))
                .await
                .map_err(|e| js_error("fetch failed", &e))?
                .unchecked_into();
            let status = response.status();
            let headers = response.headers();
            let header = |name: &str| headers.get(name).ok().flatten();
            let retry_after = header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let date = header("date");
            let buffer = response
                .array_buffer()
                .map_err(|e| js_error("cannot read the answer", &e))?;
            let buffer = JsFuture::from(buffer)
                .await
                .map_err(|e| js_error("cannot read the answer", &e))?;
            Ok(HttpResponse {
                status,
                retry_after,
                date,
                body: js_sys::Uint8Array::new(&buffer).to_vec(),
            })
        };
        match rt::timeout(self.request_timeout, exchange).await {
            Some(result) => result,
            None => {
                if let Some(abort) = abort {
                    abort.abort();
                }
                Err(SyncError::Network(format!(
                    "no answer within {:?}",
                    self.request_timeout
                )))
            }
        }
    }

    async fn connect(&self, url: &Url, _bearer: Option<&str>) -> Result<Box<dyn RealtimeSocket>> {
        let socket = web_sys::WebSocket::new(url.as_str())
            .map_err(|e| js_error("cannot open the WebSocket", &e))?;
        let (tx, events) = mpsc::unbounded::<SocketEvent>();
        let on_open = {
            let tx = tx.clone();
            Closure::<dyn FnMut()>::new(move || {
                let _ = tx.unbounded_send(SocketEvent::Open);
            })
        };
        let on_message = {
            let tx = tx.clone();
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                if let Some(text) = e.data().as_string() {
                    let _ = tx.unbounded_send(SocketEvent::Text(text));
                }
            })
        };
        let on_close = {
            let tx = tx.clone();
            Closure::<dyn FnMut(web_sys::CloseEvent)>::new(move |e: web_sys::CloseEvent| {
                let _ = tx.unbounded_send(SocketEvent::Closed(e.code()));
            })
        };
        let on_error = Closure::<dyn FnMut()>::new(move || {
            let _ = tx.unbounded_send(SocketEvent::Error);
        });
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        socket.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        // Dropped (handlers cleared, socket closed) if it never opens.
        let mut opened = BrowserSocket {
            socket,
            events,
            _handlers: (on_open, on_message, on_close, on_error),
        };
        // An error is always followed by a close; wait for one or the other.
        loop {
            match opened.events.next().await {
                Some(SocketEvent::Open) => break,
                Some(SocketEvent::Text(_)) => {}
                Some(SocketEvent::Error) => {}
                Some(SocketEvent::Closed(code)) => {
                    return Err(SyncError::Network(format!(
                        "the WebSocket did not open (close code {code})"
                    )))
                }
                None => return Err(SyncError::Network("the WebSocket did not open".into())),
            }
        }
        Ok(Box::new(opened))
    }

    fn online(&self) -> Option<watch::Receiver<bool>> {
        Some(self.online.clone())
    }
}

enum SocketEvent {
    Open,
    Text(String),
    Closed(u16),
    Error,
}

type Handlers = (
    Closure<dyn FnMut()>,
    Closure<dyn FnMut(web_sys::MessageEvent)>,
    Closure<dyn FnMut(web_sys::CloseEvent)>,
    Closure<dyn FnMut()>,
);

struct BrowserSocket {
    socket: web_sys::WebSocket,
    events: mpsc::UnboundedReceiver<SocketEvent>,
    /// Kept alive as long as the socket may call them.
    _handlers: Handlers,
}

#[async_trait(?Send)]
impl RealtimeSocket for BrowserSocket {
    async fn next(&mut self) -> Option<Result<Incoming>> {
        // Cancel-safe: an event is only taken when it is returned.
        loop {
            match self.events.next().await {
                Some(SocketEvent::Text(text)) => return Some(Ok(Incoming::Text(text))),
                Some(SocketEvent::Open) => {}
                Some(SocketEvent::Error) => {
                    return Some(Err(SyncError::Network("the WebSocket broke".into())))
                }
                Some(SocketEvent::Closed(_)) | None => return None,
            }
        }
    }

    fn sees_pings(&self) -> bool {
        false
    }

    async fn close(&mut self) {
        let _ = self.socket.close();
    }
}

impl Drop for BrowserSocket {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        self.socket.set_onerror(None);
        let _ = self.socket.close();
    }
}
