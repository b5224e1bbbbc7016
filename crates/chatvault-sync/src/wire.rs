//! The JSON bodies of the server's `/v1` API as this client sends and reads
//! them (`docs/protocol.md` is the authority). Field names are camelCase on
//! the wire; unknown response fields are ignored.
//!
//! Deliberately the client's own types, not the server crate's: a client
//! must not link a server, and it only needs the fields it uses. Changes
//! themselves are `chatvault_core::Change`, which both sides share.

use chatvault_core::{Change, ErrorCode};
use chatvault_crypto::{KdfParams, Salt};
use serde::{Deserialize, Serialize};

/// `POST /v1/auth/prelogin`.
#[derive(Debug, Serialize)]
pub(crate) struct PreloginRequest<'a> {
    pub username: &'a str,
}

/// How to derive keys for a username.
#[derive(Debug, Deserialize)]
pub(crate) struct PreloginResponse {
    pub kdf: KdfParams,
    pub salt: Salt,
}

/// `POST /v1/auth/register`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegisterRequest<'a> {
    pub username: &'a str,
    pub kdf: &'a KdfParams,
    pub salt: &'a Salt,
    pub auth_key: &'a str,
    pub key_envelope: serde_json::Value,
}

/// `POST /v1/auth/login`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoginRequest<'a> {
    pub username: &'a str,
    pub auth_key: &'a str,
    /// `"native"` (a bearer token, no cookie) or `"browser"` (an HttpOnly
    /// cookie, no token in the answer).
    pub client: &'static str,
}

/// `POST /v1/auth/login`'s answer: the bearer token (native clients) and the
/// account's user id.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoginResponse {
    pub token: Option<String>,
    pub user_id: String,
}

/// `GET /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeysResponse {
    pub key_envelope: serde_json::Value,
}

/// `PUT /v1/keys` for a passphrase change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutKeysRequest<'a> {
    pub key_envelope: serde_json::Value,
    pub auth_key: &'a str,
    pub new_auth_key: &'a str,
    pub kdf: &'a KdfParams,
    pub salt: &'a Salt,
}

/// What happened to one pushed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PushStatus {
    Applied,
    Superseded,
    Rejected,
    #[serde(other)]
    Unknown,
}

/// Per-change push result, in request order.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushResult {
    pub op_id: Option<String>,
    pub status: PushStatus,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The server's clock (ms) on a `clock_skew` rejection.
    pub server_time: Option<i64>,
}

/// The push outcome.
#[derive(Debug, Deserialize)]
pub(crate) struct PushResponse {
    pub results: Vec<PushResult>,
    /// The account's feed head after the push (absent from very old
    /// servers).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One page of the change feed. Changes stay raw JSON until each is parsed
/// alone, so one change this build cannot read (a newer protocol) does not
/// sink its page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PullResponse {
    pub changes: Vec<serde_json::Value>,
    pub next_cursor: String,
    pub has_more: bool,
}

/// One page of the live-record snapshot.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotResponse {
    pub changes: Vec<serde_json::Value>,
    pub next_key: Option<String>,
    pub has_more: bool,
    pub cursor: Option<String>,
}

/// The realtime message: the feed grew up to `cursor`.
#[derive(Debug, Deserialize)]
pub(crate) struct Poke {
    #[serde(rename = "type")]
    pub kind: String,
    pub cursor: Option<String>,
}

/// Every error body: `{"error": {"code", "message"}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// A pulled or snapshot change (`{"seq": 42, ...change...}`; the extra
/// fields are ignored).
pub(crate) fn parse_change(value: serde_json::Value) -> Result<Change, String> {
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// `{"changes": [..]}` from changes already serialized one by one (the
/// pusher sizes batches by their bytes).
pub(crate) fn push_body(changes: &[String]) -> Vec<u8> {
    let len = changes.iter().map(|c| c.len() + 1).sum::<usize>() + 16;
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(b"{\"changes\":[");
    for (i, c) in changes.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(c.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pulled_changes_parse_with_their_seq() {
        let change = json!({
            "seq": 42,
            "opId": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "kind": "message",
            "entityId": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
            "conversationId": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d",
            "version": "00018f2a3b4c-00000000-00000000deadbeef",
            "op": "upsert",
            "payload": {"createdAt": 1, "updatedAt": 2, "body": "AAEC"},
            "futureField": true
        });
        let parsed = parse_change(change).unwrap();
        assert_eq!(
            parsed.conversation_id.unwrap().to_string(),
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d"
        );
        assert!(parse_change(json!({"kind": "note"})).is_err());
    }

    #[test]
    fn push_body_is_the_documented_shape() {
        let body = push_body(&["{\"a\":1}".into(), "{\"b\":2}".into()]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"changes": [{"a": 1}, {"b": 2}]}));
        let empty: serde_json::Value = serde_json::from_slice(&push_body(&[])).unwrap();
        assert_eq!(empty, json!({"changes": []}));
    }

    #[test]
    fn unknown_push_status_is_not_an_error_to_parse() {
        let r: PushResponse = serde_json::from_value(json!({
            "results": [{"opId": "x", "status": "deferred"}], "cursor": "v1.1"
        }))
        .unwrap();
        assert_eq!(r.results[0].status, PushStatus::Unknown);
    }
}

/// `GET /v1/auth/sessions`.
#[derive(Deserialize)]
pub(crate) struct SessionList {
    pub sessions: Vec<AccountSession>,
}

/// One of an account's sessions, as the server lists them to their owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSession {
    /// A short, stable label (a prefix of the token's hash; it
    /// authenticates nothing).
    pub id: String,
    /// `native`, `browser` or `any`, as given at login.
    pub client: String,
    /// Login time, Unix ms.
    pub created_at: i64,
    /// Last use (to within a minute), Unix ms.
    pub last_used_at: i64,
    /// Whether this is the session of the client that asked.
    pub current: bool,
}

/// `POST /v1/auth/sessions/revoke-others`.
#[derive(Deserialize)]
pub(crate) struct RevokedSessions {
    pub revoked: u64,
}
