//! The sync protocol's error codes: the `code` of every error answer
//! (`{"error": {"code", "message"}}`), one enum for the server that sends
//! them and every client that branches on them.
//!
//! The codes are a stable, public contract (the TypeScript API exposes
//! them; `docs/protocol.md` tables what each means, its HTTP status and
//! whether a client retries): a code's text must never change, only new
//! codes may be added. A code this build does not know — sent by a newer
//! server — reads as [`ErrorCode::Unknown`] instead of failing. Must never
//! hold a message or any detail beyond the code.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines [`ErrorCode`] from one list of `Variant = "text" => status`, so
/// the enum, its text and its HTTP status cannot drift apart.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $text:literal => $status:literal, )*) => {
        /// The machine-readable code of an error answer, serialized as its
        /// snake_case text (`"invalid_cursor"`, `"payload_too_large"`, ...).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
            /// A code this build does not know (from a newer server), or
            /// `"unknown"` for an answer that is not a protocol error body
            /// (a proxy's HTML page, say). Branch on the HTTP status.
            Unknown(String),
        }

        impl ErrorCode {
            /// Every code this build knows, in documentation order.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code's wire text.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                    ErrorCode::Unknown(text) => text,
                }
            }

            /// Reads a code's wire text; never fails (see [`ErrorCode::Unknown`]).
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => ErrorCode::$variant,)*
                    other => ErrorCode::Unknown(other.to_owned()),
                }
            }

            /// The HTTP status a server answers this code with (`None` for
            /// [`ErrorCode::Unknown`]).
            pub fn http_status(&self) -> Option<u16> {
                match self {
                    $(ErrorCode::$variant => Some($status),)*
                    ErrorCode::Unknown(_) => None,
                }
            }
        }
    };
}

error_codes! {
    /// The request body is not valid JSON.
    MalformedJson = "malformed_json" => 400,
    /// The body is JSON of the wrong shape (a missing or invalid field).
    InvalidRequest = "invalid_request" => 400,
    /// The query string is malformed.
    InvalidQuery = "invalid_query" => 400,
    /// `limit` is outside 1..=1000.
    InvalidLimit = "invalid_limit" => 400,
    /// A cursor or snapshot key that this server did not issue (or that
    /// does not parse). A client holding a stored cursor rebuilds from a
    /// snapshot.
    InvalidCursor = "invalid_cursor" => 400,
    /// KDF parameters below the minimum this server accepts.
    InvalidKdf = "invalid_kdf" => 400,
    /// Changing credentials without the current auth key.
    AuthKeyRequired = "auth_key_required" => 400,
    /// Only some of `newAuthKey`, `kdf`, `salt` were sent.
    IncompleteCredentials = "incomplete_credentials" => 400,
    /// `/v1/ws` was requested without a WebSocket upgrade.
    WebsocketRequired = "websocket_required" => 400,
    /// No valid session token or cookie.
    Unauthorized = "unauthorized" => 401,
    /// This session was signed out from another session of the account
    /// ("sign out everywhere else"): a client asks its user for the
    /// passphrase instead of signing in again with a stored key.
    SessionRevoked = "session_revoked" => 401,
    /// Wrong username or auth key (one answer for both).
    InvalidCredentials = "invalid_credentials" => 401,
    /// The current auth key sent to change credentials is wrong.
    WrongAuthKey = "wrong_auth_key" => 403,
    /// A cookie-authenticated WebSocket from another origin.
    CrossOrigin = "cross_origin" => 403,
    /// No such route.
    NotFound = "not_found" => 404,
    /// The route exists but does not take this HTTP method.
    MethodNotAllowed = "method_not_allowed" => 405,
    /// Registering a username that exists.
    UsernameTaken = "username_taken" => 409,
    /// The cursor predates purged tombstones: rebuild from a snapshot (a
    /// record it does not list was deleted).
    ResyncRequired = "resync_required" => 410,
    /// The cursor (or snapshot key) was issued by another copy of the
    /// server's database — it was restored from a backup, so it lacks
    /// what was written after the backup. Rebuild from a snapshot and push
    /// back every record the snapshot lacks or holds older; delete
    /// nothing. Sent with 410 so that a client that does not know this
    /// code still resyncs.
    ServerRestored = "server_restored" => 410,
    /// A push with more changes than one batch may carry.
    BatchTooLarge = "batch_too_large" => 413,
    /// A request body over the server's size limit.
    PayloadTooLarge = "payload_too_large" => 413,
    /// The body is not sent as `application/json`.
    UnsupportedMediaType = "unsupported_media_type" => 415,
    /// Too many failed sign-ins for this account; `Retry-After` says when
    /// to try again.
    TooManyAttempts = "too_many_attempts" => 429,
    /// This source address (or the whole server) is over its request rate
    /// on the sign-in routes; `Retry-After` says when to try again.
    RateLimited = "rate_limited" => 429,
    /// The server failed; the detail is in its log, never in the answer.
    Internal = "internal" => 500,
    /// The password-hashing queue is full; `Retry-After` says when to try
    /// again. Nothing was changed.
    ServerBusy = "server_busy" => 503,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ErrorCode::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips_through_its_text() {
        for code in ErrorCode::KNOWN {
            assert_eq!(&ErrorCode::parse(code.as_str()), code);
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(&serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!(code.http_status().is_some_and(|s| (400..600).contains(&s)));
        }
    }

    #[test]
    fn the_wire_text_is_todays() {
        assert_eq!(ErrorCode::InvalidCursor.as_str(), "invalid_cursor");
        assert_eq!(ErrorCode::PayloadTooLarge.as_str(), "payload_too_large");
        assert_eq!(ErrorCode::ResyncRequired.http_status(), Some(410));
    }

    #[test]
    fn codes_from_a_newer_server_are_kept_not_refused() {
        let code: ErrorCode = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(code, ErrorCode::Unknown("quota_exceeded".into()));
        assert_eq!(code.as_str(), "quota_exceeded");
        assert_eq!(code.http_status(), None);
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"quota_exceeded\"");
    }

    #[test]
    fn every_code_text_is_distinct() {
        let mut texts: Vec<&str> = ErrorCode::KNOWN.iter().map(ErrorCode::as_str).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), ErrorCode::KNOWN.len());
    }
}
