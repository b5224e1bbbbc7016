//! The API of one server over a [`Transport`]: URLs under the configured
//! base, JSON in and out, and the decoding of error answers into
//! [`SyncError`] values.
//!
//! Knows nothing of sessions or retries (that is `client`); must never log
//! a request body, a token or an auth key.

use std::sync::Arc;
use std::time::Duration;

use chatvault::Timestamp;
use chatvault_core::ErrorCode;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{Result, SyncError};
use crate::transport::{HttpRequest, Method, SessionMode, Transport};
use crate::wire::ErrorBody;

/// A request body: JSON bytes.
pub(crate) type Body = Vec<u8>;

/// One server, reached through one transport.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    transport: Arc<dyn Transport>,
    base: Url,
}

impl Api {
    /// A client for `server` (`http://` or `https://`, optionally with a
    /// path prefix the API lives under) over `transport`.
    pub(crate) fn new(server: &str, transport: Arc<dyn Transport>) -> Result<Api> {
        let invalid = |reason: &str| SyncError::InvalidUrl {
            url: server.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(server.trim()).map_err(|e| invalid(&e.to_string()))?;
        match base.scheme() {
            "http" | "https" => {}
            _ => return Err(invalid("the scheme must be http or https")),
        }
        if base.host_str().is_none() {
            return Err(invalid("no host"));
        }
        // A browser brings its own TLS.
        if !cfg!(any(feature = "tls", target_family = "wasm")) && base.scheme() == "https" {
            return Err(invalid(
                "this build has no TLS support (enable chatvault-sync's `tls` feature)",
            ));
        }
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Api { transport, base })
    }

    /// The server URL as configured (normalized, with a trailing `/`).
    pub(crate) fn base(&self) -> &str {
        self.base.as_str()
    }

    /// The transport requests go through.
    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// How sessions travel to this server.
    pub(crate) fn session_mode(&self) -> SessionMode {
        self.transport.session_mode()
    }

    /// The URL of `path` (relative, e.g. `v1/sync/pull`) with `query`.
    pub(crate) fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self.base.join(path).map_err(|e| SyncError::InvalidUrl {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// The WebSocket URL of `path` (`ws://` or `wss://`).
    pub(crate) fn ws_url(&self, path: &str) -> Result<Url> {
        let mut url = self.url(path, &[])?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| SyncError::InvalidUrl {
            url: url.to_string(),
            reason: "cannot be turned into a WebSocket URL".into(),
        })?;
        Ok(url)
    }

    /// Sends a request and decodes a 2xx JSON answer into `T` (an empty
    /// body reads as JSON `null`, so `T = ()` fits `204`). Other answers
    /// become [`SyncError::Server`]; transport failures
    /// [`SyncError::Network`].
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        token: Option<&str>,
        body: Option<Body>,
    ) -> Result<T> {
        Ok(self.send_dated(method, path, query, token, body).await?.0)
    }

    /// [`send`](Self::send), also returning the server's time from its
    /// `Date` header (whole seconds; `None` if absent or unreadable).
    pub(crate) async fn send_dated<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        token: Option<&str>,
        body: Option<Body>,
    ) -> Result<(T, Option<Timestamp>)> {
        let url = self.url(path, query)?;
        let response = self
            .transport
            .send(HttpRequest {
                method,
                url,
                bearer: token,
                body,
            })
            .await?;
        let date = response.date.as_deref().and_then(server_time);
        if (200..300).contains(&response.status) {
            let json: &[u8] = if response.body.is_empty() {
                b"null"
            } else {
                &response.body
            };
            let value = serde_json::from_slice(json).map_err(|e| {
                SyncError::Protocol(format!(
                    "{method} /{path} answered {} with {e}",
                    response.status
                ))
            })?;
            return Ok((value, date));
        }
        Err(server_error(
            response.status,
            &response.body,
            response.retry_after,
        ))
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) as a [`Timestamp`].
fn server_time(header: &str) -> Option<Timestamp> {
    let at = httpdate::parse_http_date(header).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    Some(Timestamp(i64::try_from(ms).ok()?))
}

fn server_error(status: u16, bytes: &[u8], retry_after: Option<Duration>) -> SyncError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let text: String = text.chars().take(200).collect();
            (ErrorCode::Unknown("unknown".to_owned()), text)
        }
    };
    SyncError::Server {
        status,
        code,
        message,
        retry_after,
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;

    fn api(url: &str) -> Result<Api> {
        let transport =
            crate::native::NativeTransport::new(Duration::from_secs(1), Duration::from_secs(1))?;
        Api::new(url, Arc::new(transport))
    }

    #[test]
    fn urls_are_built_under_the_base() {
        let a = api("http://127.0.0.1:8787").unwrap();
        assert_eq!(a.base(), "http://127.0.0.1:8787/");
        assert_eq!(
            a.url("v1/sync/pull", &[("after", "v1.2"), ("limit", "5")])
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8787/v1/sync/pull?after=v1.2&limit=5"
        );
        let prefixed = api("https://example.invalid/chatvault").unwrap_or_else(|_| {
            // Without the `tls` feature https is refused; the prefix rule
            // is the same over http.
            api("http://example.invalid/chatvault").unwrap()
        });
        assert!(prefixed
            .url("v1/keys", &[])
            .unwrap()
            .as_str()
            .ends_with("/chatvault/v1/keys"));
        assert_eq!(
            a.ws_url("v1/ws").unwrap().as_str(),
            "ws://127.0.0.1:8787/v1/ws"
        );
    }

    #[test]
    fn unusable_urls_are_refused() {
        for bad in ["", "ftp://x", "not a url", "http://"] {
            assert!(
                matches!(api(bad), Err(SyncError::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn date_headers_read_as_server_time() {
        assert_eq!(
            server_time("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Timestamp(784_111_777_000))
        );
        assert_eq!(server_time("yesterday"), None);
    }

    #[test]
    fn error_bodies_decode_to_codes() {
        let e = server_error(
            410,
            br#"{"error":{"code":"resync_required","message":"rebuild"}}"#,
            None,
        );
        assert_eq!(e.server_code(), Some(&ErrorCode::ResyncRequired));
        assert!(e.is_status(410));
        assert!(!e.is_transient());
        let e = server_error(502, b"<html>proxy</html>", Some(Duration::from_secs(3)));
        assert_eq!(e.server_code().map(ErrorCode::as_str), Some("unknown"));
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }
}
