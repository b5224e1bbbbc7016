//! The native [`Transport`]: one reqwest client (connect and request
//! timeouts, rustls with the `tls` feature) and tokio-tungstenite for the
//! realtime socket; sessions are bearer tokens.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, DATE, RETRY_AFTER};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::{Result, SyncError};
use crate::transport::{
    HttpRequest, HttpResponse, Incoming, Method, RealtimeSocket, SessionMode, Transport,
};

/// reqwest + tokio-tungstenite.
#[derive(Debug, Clone)]
pub(crate) struct NativeTransport {
    http: reqwest::Client,
}

impl NativeTransport {
    pub(crate) fn new(connect_timeout: Duration, request_timeout: Duration) -> Result<Self> {
        #[cfg(feature = "tls")]
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .build()
            .map_err(|e| SyncError::Network(error_chain(&e)))?;
        Ok(NativeTransport { http })
    }
}

fn bearer_header(token: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| SyncError::Protocol("the session token is not a header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

#[async_trait]
impl Transport for NativeTransport {
    fn session_mode(&self) -> SessionMode {
        SessionMode::Bearer
    }

    async fn send(&self, request: HttpRequest<'_>) -> Result<HttpResponse> {
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
        };
        let mut builder = self.http.request(method, request.url);
        if let Some(token) = request.bearer {
            builder = builder.header(AUTHORIZATION, bearer_header(token)?);
        }
        if let Some(body) = request.body {
            builder = builder.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| SyncError::Network(error_chain(&e)))?;
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header(RETRY_AFTER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let date = header(DATE);
        let body = response
            .bytes()
            .await
            .map_err(|e| SyncError::Network(error_chain(&e)))?
            .to_vec();
        Ok(HttpResponse {
            status,
            retry_after,
            date,
            body,
        })
    }

    async fn connect(&self, url: &Url, bearer: Option<&str>) -> Result<Box<dyn RealtimeSocket>> {
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| SyncError::Protocol(error_chain(&e)))?;
        if let Some(token) = bearer {
            request
                .headers_mut()
                .insert(AUTHORIZATION, bearer_header(token)?);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Box::new(NativeSocket(socket))),
            Err(tungstenite::Error::Http(response)) if response.status().as_u16() == 401 => {
                Err(SyncError::Server {
                    status: 401,
                    code: chatvault_core::ErrorCode::Unauthorized,
                    message: "the WebSocket upgrade was refused".into(),
                    retry_after: None,
                })
            }
            Err(e) => Err(SyncError::Network(error_chain(&e))),
        }
    }
}

struct NativeSocket(WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>);

#[async_trait]
impl RealtimeSocket for NativeSocket {
    async fn next(&mut self) -> Option<Result<Incoming>> {
        // Pings are answered by tungstenite as the socket is read.
        match self.0.next().await {
            None | Some(Ok(Message::Close(_))) => None,
            Some(Err(e)) => Some(Err(SyncError::Network(error_chain(&e)))),
            Some(Ok(Message::Text(text))) => Some(Ok(Incoming::Text(text.as_str().to_owned()))),
            Some(Ok(_)) => Some(Ok(Incoming::Alive)),
        }
    }

    async fn close(&mut self) {
        let _ = self.0.close(None).await;
    }
}

/// An error with its sources (reqwest's and tungstenite's own messages
/// are terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
