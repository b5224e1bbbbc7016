//! [`AppError`]: every way a request can fail, and how each becomes a
//! response. 4xx answers carry a stable code and a client-safe message in
//! `{"error": {"code", "message"}}`; 5xx answers say only "internal" and
//! the detail is logged once, by [`log_server_errors`].
//!
//! Must never put internal detail (SQL, paths, hashes) into a response body.

use std::fmt::Display;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chatvault_core::ErrorCode;

use crate::api::{ErrorBody, ErrorDetail};
use crate::auth::CredentialError;
use crate::kdf_pool::KdfError;
use crate::store::ServerStoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The client's fault (or its concern, like 410 and 429): answered with
    /// the code's HTTP status ([`ErrorCode::http_status`]), the code and
    /// the message.
    #[error("{} {code}: {message}", status_of(.code))]
    Client {
        /// Stable machine-readable code; it also fixes the status.
        code: ErrorCode,
        /// Human-readable, client-safe message.
        message: String,
        /// Seconds for a `Retry-After` header (429).
        retry_after: Option<u64>,
    },
    /// The server's fault: answered 500 with no detail; `0` is logged.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The detail of a 500, carried from the handler to the logging
/// middleware in the response's extensions (never in its body).
#[derive(Debug, Clone)]
struct InternalDetail(String);

/// The status a code answers with; a code without one (never sent by this
/// server) would be a bug, answered as 500.
fn status_of(code: &ErrorCode) -> StatusCode {
    code.http_status()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl AppError {
    /// A 4xx answer with `code` (which fixes the status) and a client-safe
    /// `message`.
    pub fn client(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError::Client {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401: the session was ended by "sign out everywhere else".
    pub fn session_revoked() -> Self {
        Self::client(
            ErrorCode::SessionRevoked,
            "this session was signed out from another device: sign in with the passphrase",
        )
    }

    /// 401: no valid session.
    pub fn unauthorized() -> Self {
        Self::client(
            ErrorCode::Unauthorized,
            "sign in: no valid session token or cookie",
        )
    }

    /// 401: wrong username or auth key (deliberately the same answer for
    /// both).
    pub fn invalid_credentials() -> Self {
        Self::client(
            ErrorCode::InvalidCredentials,
            "wrong username or passphrase",
        )
    }

    /// 404: no such route.
    pub fn not_found() -> Self {
        Self::client(ErrorCode::NotFound, "no such route")
    }

    /// 429 with a `Retry-After` of `seconds`.
    pub fn too_many_attempts(seconds: u64) -> Self {
        AppError::Client {
            code: ErrorCode::TooManyAttempts,
            message: format!("too many failed attempts for this account; retry in {seconds} s"),
            retry_after: Some(seconds),
        }
    }

    /// 429 `rate_limited`: this source (or the whole server) is over its
    /// request rate; retry after `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        AppError::Client {
            code: ErrorCode::RateLimited,
            message: format!("too many requests; retry in {seconds} s"),
            retry_after: Some(seconds),
        }
    }

    /// 503 `server_busy`: the password-hashing queue is full; retry after
    /// `seconds`.
    pub fn busy(seconds: u64) -> Self {
        AppError::Client {
            code: ErrorCode::ServerBusy,
            message: format!("the server is busy; retry in {seconds} s"),
            retry_after: Some(seconds),
        }
    }

    /// 500; `detail` is logged, never sent.
    pub fn internal(detail: impl Display) -> Self {
        AppError::Internal(detail.to_string())
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Client { code, .. } => status_of(code),
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The JSON error body for `code` and `message`.
fn error_body(code: ErrorCode, message: &str) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_owned(),
        },
    })
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Client {
                code,
                message,
                retry_after,
            } => {
                let status = status_of(&code);
                let mut response = (status, error_body(code, &message)).into_response();
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                response
            }
            AppError::Internal(detail) => {
                let mut response = (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error_body(ErrorCode::Internal, "internal server error"),
                )
                    .into_response();
                response.extensions_mut().insert(InternalDetail(detail));
                response
            }
        }
    }
}

impl From<ServerStoreError> for AppError {
    fn from(e: ServerStoreError) -> Self {
        match e {
            ServerStoreError::UsernameTaken => AppError::client(
                ErrorCode::UsernameTaken,
                "that username is already registered",
            ),
            other => AppError::internal(other),
        }
    }
}

impl From<CredentialError> for AppError {
    fn from(e: CredentialError) -> Self {
        AppError::internal(e)
    }
}

impl From<KdfError> for AppError {
    fn from(e: KdfError) -> Self {
        match e {
            KdfError::Busy => AppError::busy(1),
            other => AppError::internal(other),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => AppError::client(
                ErrorCode::MalformedJson,
                format!("request body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::JsonDataError(e) => {
                AppError::client(ErrorCode::InvalidRequest, e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => AppError::client(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::client(
                ErrorCode::PayloadTooLarge,
                "request body is larger than this server accepts",
            ),
            other => AppError::client(ErrorCode::InvalidRequest, other.body_text()),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::client(ErrorCode::InvalidQuery, rejection.body_text())
    }
}

/// Middleware: logs every 5xx once, with the detail the handler attached.
/// Only the path is logged — the query string may hold a session token.
/// The most of an oversized body the server reads (and drops) before
/// answering 413, and for how long; beyond either the connection is simply
/// closed. Small, so an unauthenticated client cannot make the server read
/// 64 MiB or hold the connection open by trickling.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers a request whose declared `Content-Length` is over `limit` with
/// 413 `payload_too_large` — after reading and discarding the body. A
/// server that answers early and closes while the client is still sending
/// makes the client's socket see a reset that can swallow the 413, and the
/// client then cannot tell "too large, never retry" from "network down,
/// retry forever": it would wedge its upload queue on one oversized change.
pub(crate) async fn refuse_oversized(limit: u64, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(length) = declared.filter(|&n| n > limit) else {
        return next.run(request).await;
    };
    if length <= DRAIN_LIMIT {
        use futures::StreamExt as _;
        let mut body = request.into_body().into_data_stream();
        let drain = async {
            while let Some(chunk) = body.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        };
        // Out of time: answer anyway; `Connection: close` ends the upload.
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    let mut response = AppError::client(
        ErrorCode::PayloadTooLarge,
        format!("request body of {length} bytes is larger than this server accepts ({limit})"),
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

pub(crate) async fn log_server_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        let detail = response
            .extensions()
            .get::<InternalDetail>()
            .map_or("(no detail)", |d| d.0.as_str());
        tracing::error!(%method, %path, status = status.as_u16(), error = detail, "request failed");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), "request");
    }
    response
}

/// Turns a handler panic into a plain 500; the panic message travels to
/// [`log_server_errors`] like any other internal detail, so it is logged
/// once.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string panic)");
    AppError::internal(format!("handler panicked: {what}")).into_response()
}
