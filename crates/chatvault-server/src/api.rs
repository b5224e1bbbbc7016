//! The JSON bodies of the `/v1` HTTP API: requests, responses and the error
//! envelope, with their OpenAPI schemas. Field names are camelCase on the
//! wire.
//!
//! Pure data: validation lives in the field types (`crate::types`) so a
//! body that deserializes is well-formed. Must never carry a secret back
//! out (no auth key or hash in any response).

use chatvault_core::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::SyncedChange;
use crate::sync::PushRejectReason;
use crate::types::{
    AuthKey, ClientKind, Cursor, KeyEnvelope, Salt, SnapshotKey, Username, WireKdfParams,
};

/// Every 4xx/5xx body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code to branch on, e.g. `resync_required` (the table in
    /// `docs/protocol.md` lists them all).
    #[schema(value_type = String, example = "resync_required")]
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// `POST /v1/auth/prelogin`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PreloginRequest {
    /// Account name.
    #[schema(value_type = String, example = "alice")]
    pub username: Username,
}

/// How to derive keys for a username. Unknown usernames get stable fake
/// values, indistinguishable from real ones.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreloginResponse {
    /// Argon2id parameters.
    pub kdf: WireKdfParams,
    /// 16-byte salt, standard base64.
    #[schema(value_type = String, format = Byte)]
    pub salt: Salt,
}

/// `POST /v1/auth/register`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// 1–64 characters of `[a-zA-Z0-9_.@-]`, case-insensitive.
    #[schema(value_type = String, example = "alice")]
    pub username: Username,
    /// Argon2id parameters the client used (at least the OWASP minimum).
    pub kdf: WireKdfParams,
    /// The client's random 16-byte salt, standard base64.
    #[schema(value_type = String, format = Byte)]
    pub salt: Salt,
    /// The 32-byte server-auth key derived from the passphrase, standard
    /// base64. The server keeps only an Argon2id hash of it.
    #[schema(value_type = String, format = Byte)]
    pub auth_key: AuthKey,
    /// Opaque JSON object (at most 16 KiB) holding the client's wrapped keys.
    #[schema(value_type = Object)]
    pub key_envelope: KeyEnvelope,
}

/// The new account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    /// Account id.
    pub user_id: String,
}

/// `POST /v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// Account name.
    #[schema(value_type = String)]
    pub username: Username,
    /// The derived server-auth key, standard base64.
    #[schema(value_type = String, format = Byte)]
    pub auth_key: AuthKey,
    /// `browser`: cookie only, no token in the body. `native`: token only,
    /// no cookie. Absent: both.
    #[serde(default)]
    pub client: Option<ClientKind>,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// Bearer token (absent for `client: "browser"`, which gets the
    /// HttpOnly `cv_session` cookie instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the session expires if left unused (ms since the Unix epoch);
    /// each use extends it, up to 30 days after login.
    pub expires_at: i64,
    /// Account id.
    pub user_id: String,
}

/// `GET /v1/keys`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysResponse {
    /// The stored envelope, exactly as last put.
    #[schema(value_type = Object)]
    pub key_envelope: KeyEnvelope,
    /// Current Argon2id parameters.
    pub kdf: WireKdfParams,
    /// Current salt, standard base64.
    #[schema(value_type = String, format = Byte)]
    pub salt: Salt,
}

/// `PUT /v1/keys`: replace the envelope; with `newAuthKey`, `kdf` and
/// `salt` (all three, plus the current `authKey`) also change the
/// credentials after a passphrase change, which signs out every other
/// session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutKeysRequest {
    /// The new envelope.
    #[schema(value_type = Object)]
    pub key_envelope: KeyEnvelope,
    /// The current auth key (required with `newAuthKey`).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Byte)]
    pub auth_key: Option<AuthKey>,
    /// The auth key derived from the new passphrase.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Byte)]
    pub new_auth_key: Option<AuthKey>,
    /// KDF parameters of the new passphrase.
    #[serde(default)]
    pub kdf: Option<WireKdfParams>,
    /// Salt of the new passphrase.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Byte)]
    pub salt: Option<Salt>,
}

/// `POST /v1/sync/push`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PushRequest {
    /// At most 1000 changes. Each is judged alone: a malformed one is
    /// rejected with a reason, the rest still apply.
    #[schema(value_type = Vec<crate::http::openapi::ChangeDoc>)]
    pub changes: BoundedChanges,
}

/// Most changes one push may carry.
pub const MAX_PUSH_CHANGES: usize = 1000;

/// A push's `changes` array, read without building what the server will
/// refuse anyway: the first [`MAX_PUSH_CHANGES`] elements are kept, the
/// rest only counted (skipped by the parser, never materialized), so an
/// oversized batch costs no more memory than a full one before it is
/// refused.
#[derive(Debug, Default)]
pub struct BoundedChanges {
    /// The kept elements, at most [`MAX_PUSH_CHANGES`].
    pub kept: Vec<serde_json::Value>,
    /// How many elements the array had.
    pub total: usize,
}

impl<'de> Deserialize<'de> for BoundedChanges {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements;
        impl<'de> serde::de::Visitor<'de> for Elements {
            type Value = BoundedChanges;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of changes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BoundedChanges, A::Error> {
                let mut out = BoundedChanges::default();
                loop {
                    if out.kept.len() < MAX_PUSH_CHANGES {
                        match seq.next_element::<serde_json::Value>()? {
                            Some(v) => out.kept.push(v),
                            None => break,
                        }
                    } else if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                        break;
                    }
                    out.total += 1;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Elements)
    }
}

/// What happened to one pushed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushStatus {
    /// Written; `seq` is its place in the feed.
    Applied,
    /// Accepted, not written: the server holds a newer version (LWW).
    /// Final: do not retry.
    Superseded,
    /// Refused; see `reason`. Fix and resend, or dead-letter it.
    Rejected,
}

/// Per-change push result, in request order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushResult {
    /// The change's op id (absent if it could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
    /// Outcome.
    pub status: PushStatus,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<PushRejectReason>,
    /// Details of a rejection, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Feed position of an applied change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// For a `clock_skew` rejection: the server's clock (ms since the
    /// epoch) when it judged the change, so the device can re-stamp the
    /// change at the right time instead of resending it unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_time: Option<i64>,
}

/// The push outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushResponse {
    /// One result per change, in order.
    pub results: Vec<PushResult>,
    /// The account's feed head after this push (do not skip your pull
    /// cursor to it: other devices' changes may lie before it).
    #[schema(value_type = String)]
    pub cursor: Cursor,
}

/// `GET /v1/sync/pull` query.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PullQuery {
    /// Cursor from the previous pull (or the snapshot); absent = from the
    /// beginning.
    pub after: Option<String>,
    /// Page size, 1–1000 (default 500).
    pub limit: Option<u32>,
    /// The newest push answer's `cursor` the client has not pulled past
    /// yet, if any: answered `410 server_restored` when this database did
    /// not issue it (restored from a backup that lacks that push).
    pub seen: Option<String>,
}

/// One page of the change feed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullResponse {
    /// The latest change of each record written after the cursor, in feed
    /// order, tombstones included.
    #[schema(value_type = Vec<crate::http::openapi::SyncedChangeDoc>)]
    pub changes: Vec<SyncedChange>,
    /// Pass as `after` next time.
    #[schema(value_type = String)]
    pub next_cursor: Cursor,
    /// Whether to pull again right away.
    pub has_more: bool,
}

/// `GET /v1/sync/snapshot` query.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// `nextKey` of the previous page; absent for the first page.
    pub after: Option<String>,
    /// Page size, 1–1000 (default 500).
    pub limit: Option<u32>,
}

/// One page of live records.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotResponse {
    /// Live records (no tombstones), conversations before messages.
    #[schema(value_type = Vec<crate::http::openapi::SyncedChangeDoc>)]
    pub changes: Vec<SyncedChange>,
    /// Pass as `after` for the next page (present while `hasMore`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub next_key: Option<SnapshotKey>,
    /// Whether more pages follow.
    pub has_more: bool,
    /// First page only: the cursor to pull from once the snapshot is
    /// applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cursor: Option<Cursor>,
}

/// The one message the server sends on `/v1/ws`: new changes up to
/// `cursor` exist, pull.
#[derive(Debug, Serialize, ToSchema)]
pub struct Poke {
    /// Always `"poke"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The feed head.
    #[schema(value_type = String)]
    pub cursor: Cursor,
}

/// What a WebSocket opened without credentials must send first (within
/// a few seconds): `{"type":"auth","token":"..."}`.
#[derive(Deserialize, ToSchema)]
pub struct WsAuth {
    /// Must be `"auth"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A session token from login.
    pub token: String,
}

impl std::fmt::Debug for WsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsAuth")
            .field("kind", &self.kind)
            .field("token", &"***")
            .finish()
    }
}

/// The server's answer to a [`WsAuth`] it accepted: `{"type":"ready"}`;
/// pokes follow. A refused one is answered by closing with 1008.
#[derive(Debug, Serialize, ToSchema)]
pub struct WsReady {
    /// Always `"ready"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl WsReady {
    /// The message as sent.
    pub const TEXT: &'static str = r#"{"type":"ready"}"#;
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    #[test]
    fn oversized_batches_are_counted_not_kept() {
        let body = format!(
            r#"{{"changes": [{}]}}"#,
            vec![r#"{"opId": "x", "big": [1, 2, 3]}"#; MAX_PUSH_CHANGES + 500].join(",")
        );
        let req: PushRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(req.changes.total, MAX_PUSH_CHANGES + 500);
        assert_eq!(req.changes.kept.len(), MAX_PUSH_CHANGES);
        let small: PushRequest = serde_json::from_str(r#"{"changes": [{}, 2]}"#).unwrap();
        assert_eq!((small.changes.total, small.changes.kept.len()), (2, 2));
        assert!(serde_json::from_str::<PushRequest>(r#"{"changes": {}}"#).is_err());
        // Malformed JSON past the limit is still malformed.
        let broken = format!(
            r#"{{"changes": [{}, {{"x": }}]}}"#,
            vec!["{}"; MAX_PUSH_CHANGES].join(",")
        );
        assert!(serde_json::from_str::<PushRequest>(&broken).is_err());
    }
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `"ok"`.
    pub status: &'static str,
}
