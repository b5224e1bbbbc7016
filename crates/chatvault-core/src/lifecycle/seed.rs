//! Import from the export files of seed-style TypeScript chat apps (the
//! React + zustand + localStorage kind chatvault replaces), so their users
//! can move in:
//!
//! ```json
//! { "version": 1, "exportedAt": "2024-05-01T12:00:00.000Z",
//!   "conversations": [
//!     { "id": "c1", "title": "Trip", "createdAt": "…", "updatedAt": "…",
//!       "userId": "ann", "metadata": {"pinned": true},
//!       "messages": [ { "id": "m1", "role": "user", "content": "Hi",
//!                       "createdAt": "…", "metadata": {} } ] } ] }
//! ```
//!
//! Dates are ISO-8601 strings (`Date.toISOString()`) or epoch milliseconds;
//! a message's time may be called `createdAt` or `timestamp`. Unknown
//! members are ignored. A file without `version` (written before the app
//! numbered its exports) is read as version 1. The app's persisted store
//! itself — zustand `persist`'s `{"state": {"conversations": [...]},
//! "version": N}`, copied out of localStorage — is read too; its `version`
//! is the app's own store version, not an export format, and is ignored.
//!
//! chatvault needs UUIDs and version stamps, which these files lack, so the
//! conversion is **deterministic**: an id that is not a UUID becomes a
//! UUIDv8 made from the SHA-256 of the original id (a message's together
//! with its conversation's), and versions are synthesized from the
//! timestamps under the fixed device [`IMPORT_DEVICE`]. Importing the same
//! file twice therefore finds identical records the second time and
//! changes nothing, and any edit made in chatvault afterwards (a newer
//! stamp) wins over a re-import.
//!
//! Such files come from localStorage, so they are small: they are parsed
//! in memory, up to [`SEED_MAX_BYTES`].

use super::export_format::{ExportItem, ExportedConversation, ExportedMessage};
use crate::{
    ConversationId, CoreError, DeviceId, Hlc, MessageId, Metadata, Role, Timestamp, UserId,
};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The largest app export read (it is held in memory).
pub const SEED_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The device every synthesized version is stamped with (`"\0\0import"`
/// as a big-endian number: `0000696d706f7274`).
pub const IMPORT_DEVICE: DeviceId = DeviceId(u64::from_be_bytes(*b"\0\0import"));

/// The newest app export version understood.
const SEED_VERSION: u32 = 1;

/// An app export, or the app's zustand-persisted store.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedFile {
    /// The export's version; the persisted store's own version when
    /// `state` is present.
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    conversations: Option<Vec<SeedConversation>>,
    /// zustand `persist`'s wrapper around the app's state.
    #[serde(default)]
    state: Option<PersistedState>,
}

#[derive(Deserialize)]
struct PersistedState {
    conversations: Vec<SeedConversation>,
}

/// What the probe needs of zustand `persist`'s state.
#[derive(Deserialize)]
struct ProbeState {
    #[serde(default)]
    conversations: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedConversation {
    id: Value,
    #[serde(default)]
    title: String,
    created_at: Value,
    #[serde(default)]
    updated_at: Option<Value>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    messages: Vec<SeedMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedMessage {
    id: Value,
    role: String,
    content: String,
    #[serde(default)]
    created_at: Option<Value>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

/// Whether `bytes` look like an app export (a JSON object with a
/// `conversations` array, or zustand `persist`'s `state` holding one, and
/// no chatvault `format`), without judging it.
pub fn looks_like_seed(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        format: Option<Value>,
        #[serde(default)]
        conversations: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        state: Option<ProbeState>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            format: None,
            conversations,
            state,
        }) => {
            conversations.is_some() || state.is_some_and(|s: ProbeState| s.conversations.is_some())
        }
        _ => false,
    }
}

/// Converts an app export into chatvault records (conversations first,
/// then messages). Conversations without `userId` get `default_user`.
pub fn parse_seed(bytes: &[u8], default_user: &UserId) -> Result<Vec<ExportItem>, CoreError> {
    if bytes.len() as u64 > SEED_MAX_BYTES {
        return Err(CoreError::ExportInvalid {
            at: "the whole file".into(),
            reason: format!(
                "an app export of {} bytes is larger than the {} MiB such files can have",
                bytes.len(),
                SEED_MAX_BYTES >> 20
            ),
        });
    }
    let file: SeedFile = serde_json::from_slice(bytes).map_err(|e| CoreError::ExportInvalid {
        at: format!("line {} column {}", e.line(), e.column()),
        reason: e.to_string(),
    })?;
    let (list, prefix) = match (file.conversations, file.state) {
        // An export: numbered from version 1 on; none means 1.
        (Some(list), _) => {
            let version = file.version.unwrap_or(SEED_VERSION);
            if version != SEED_VERSION {
                return Err(CoreError::UnsupportedExportVersion {
                    found: version,
                    newest: SEED_VERSION,
                });
            }
            (list, "")
        }
        // The persisted store: its version is the app's, not a format's.
        (None, Some(state)) => (state.conversations, "state."),
        (None, None) => {
            return Err(invalid(
                "the whole file",
                "it has no \"conversations\" array (nor \"state.conversations\")",
            ))
        }
    };
    let mut conversations = Vec::with_capacity(list.len());
    let mut messages = Vec::new();
    for (i, c) in list.into_iter().enumerate() {
        let at = format!("{prefix}conversations[{i}]");
        let original = id_text(&c.id, &at)?;
        let id = ConversationId::from_uuid(derived_id(&["conversation", &original]));
        let created_at = time(&c.created_at, &at, "createdAt")?;
        let updated_at = match &c.updated_at {
            Some(v) => time(v, &at, "updatedAt")?,
            None => created_at,
        };
        let user_id = match c.user_id {
            Some(u) => UserId::try_from(u).map_err(|e| invalid(&at, e.to_string()))?,
            None => default_user.clone(),
        };
        conversations.push(ExportItem::Conversation(ExportedConversation {
            id,
            user_id,
            title: c.title,
            created_at,
            updated_at,
            activity_at: None,
            version: version(updated_at, &at)?,
            metadata: c.metadata.unwrap_or_default(),
        }));
        for (j, m) in c.messages.into_iter().enumerate() {
            let at = format!("{prefix}conversations[{i}].messages[{j}]");
            let message_original = id_text(&m.id, &at)?;
            let role: Role = m
                .role
                .parse()
                .map_err(|e: CoreError| invalid(&at, e.to_string()))?;
            let created_at = match (&m.created_at, &m.timestamp) {
                (Some(v), _) => time(v, &at, "createdAt")?,
                (None, Some(v)) => time(v, &at, "timestamp")?,
                (None, None) => return Err(invalid(&at, "it has neither createdAt nor timestamp")),
            };
            messages.push(ExportItem::Message(ExportedMessage {
                id: MessageId::from_uuid(derived_id(&["message", &original, &message_original])),
                conversation_id: id,
                role,
                content: m.content,
                created_at,
                updated_at: created_at,
                version: version(created_at, &at)?,
                metadata: m.metadata.unwrap_or_default(),
            }));
        }
    }
    conversations.append(&mut messages);
    Ok(conversations)
}

fn invalid(at: &str, reason: impl Into<String>) -> CoreError {
    CoreError::ExportInvalid {
        at: at.to_owned(),
        reason: reason.into(),
    }
}

/// An app's id as text (apps use strings or numbers).
fn id_text(v: &Value, at: &str) -> Result<String, CoreError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(invalid(
            at,
            format!("id {other} is not a string or a number"),
        )),
    }
}

/// The id itself if it is a UUID; otherwise a UUIDv8 from the SHA-256 of
/// the `parts` (kind, then the original ids that make it unique).
fn derived_id(parts: &[&str]) -> Uuid {
    let original = parts[parts.len() - 1];
    if let Ok(uuid) = Uuid::parse_str(original) {
        return uuid;
    }
    let mut hash = Sha256::new();
    hash.update(b"chatvault seed import v1");
    for part in parts {
        hash.update([0]);
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// An ISO-8601 date string or epoch milliseconds.
fn time(v: &Value, at: &str, field: &str) -> Result<Timestamp, CoreError> {
    let ms = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|d| (d.unix_timestamp_nanos() / 1_000_000) as i64)
        }
        _ => None,
    };
    match ms {
        Some(ms) if ms >= 0 => Ok(Timestamp(ms)),
        _ => Err(invalid(
            at,
            format!(
                "{field} {v} is not a date (expected ISO-8601 like \"2024-05-01T12:00:00.000Z\" or epoch milliseconds, from 1970 on)"
            ),
        )),
    }
}

fn version(at_time: Timestamp, at: &str) -> Result<Hlc, CoreError> {
    Hlc::new(at_time.as_millis() as u64, 0, IMPORT_DEVICE).map_err(|e| invalid(at, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
      "version": 1,
      "exportedAt": "2024-05-01T12:00:00.000Z",
      "conversations": [
        { "id": "conv-1", "title": "Trip", "createdAt": "2024-04-01T10:00:00.000Z",
          "updatedAt": "2024-04-02T10:00:00.000Z", "userId": "ann", "metadata": {"pinned": true},
          "extra": "ignored",
          "messages": [
            { "id": "1", "role": "user", "content": "Hi", "createdAt": "2024-04-01T10:00:01.000Z" },
            { "id": 2, "role": "assistant", "content": "Hello", "timestamp": 1711965602000 }
          ] },
        { "id": "0190f5b2-7c3e-7000-8000-000000000001", "title": "Keeps its UUID",
          "createdAt": "2024-04-03T00:00:00Z", "updatedAt": "2024-04-03T00:00:00Z",
          "messages": [ { "id": "1", "role": "system", "content": "Be brief", "createdAt": "2024-04-03T00:00:00Z" } ] }
      ]
    }"#;

    #[test]
    fn converts_deterministically() {
        assert!(looks_like_seed(FILE.as_bytes()));
        let user = UserId::local();
        let a = parse_seed(FILE.as_bytes(), &user).unwrap();
        let b = parse_seed(FILE.as_bytes(), &user).unwrap();
        assert_eq!(a, b, "same file, same records");
        assert_eq!(a.len(), 5);
        let ExportItem::Conversation(trip) = &a[0] else {
            panic!()
        };
        assert_eq!(trip.title, "Trip");
        assert_eq!(trip.user_id.as_str(), "ann");
        assert_eq!(trip.id.as_uuid().get_version_num(), 8);
        assert_eq!(trip.created_at, Timestamp(1_711_965_600_000));
        assert_eq!(
            trip.version,
            Hlc::new(1_712_052_000_000, 0, IMPORT_DEVICE).unwrap()
        );
        assert!(trip.metadata["pinned"].as_bool().unwrap());
        let ExportItem::Conversation(kept) = &a[1] else {
            panic!()
        };
        assert_eq!(kept.id.to_string(), "0190f5b2-7c3e-7000-8000-000000000001");
        assert_eq!(kept.user_id, user);
        let ExportItem::Message(second) = &a[3] else {
            panic!()
        };
        assert_eq!(second.role, Role::Assistant);
        assert_eq!(second.created_at, Timestamp(1_711_965_602_000));
        assert_eq!(second.conversation_id, trip.id);
        // Message "1" of two conversations: two different ids.
        let (ExportItem::Message(m1), ExportItem::Message(m3)) = (&a[2], &a[4]) else {
            panic!()
        };
        assert_ne!(m1.id, m3.id);
        assert_eq!(IMPORT_DEVICE.to_string(), "0000696d706f7274");
    }

    #[test]
    fn bad_files_say_where() {
        let user = UserId::local();
        let bad_role = FILE.replace("\"role\": \"assistant\"", "\"role\": \"robot\"");
        let err = parse_seed(bad_role.as_bytes(), &user)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "export file is invalid at conversations[0].messages[1]: invalid role \"robot\": expected one of user, assistant, system, tool"
        );
        let bad_date = FILE.replace("2024-04-01T10:00:01.000Z", "yesterday");
        let err = parse_seed(bad_date.as_bytes(), &user)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("createdAt \"yesterday\" is not a date"),
            "{err}"
        );
        let v2 = FILE.replacen("\"version\": 1", "\"version\": 2", 1);
        assert!(matches!(
            parse_seed(v2.as_bytes(), &user),
            Err(CoreError::UnsupportedExportVersion { found: 2, .. })
        ));
        assert!(!looks_like_seed(
            br#"{"format":"chatvault-export","conversations":[]}"#
        ));
        assert!(!looks_like_seed(b"[1,2]"));
        assert!(!looks_like_seed(
            br#"{"state":{"theme":"dark"},"version":0}"#
        ));
    }

    #[test]
    fn reads_files_without_version_and_the_zustand_persist_shape() {
        let user = UserId::local();
        let expected = parse_seed(FILE.as_bytes(), &user).unwrap();
        let unversioned = FILE.replacen("\"version\": 1,", "", 1);
        assert!(!unversioned.contains("\"version\""));
        assert!(looks_like_seed(unversioned.as_bytes()));
        assert_eq!(parse_seed(unversioned.as_bytes(), &user).unwrap(), expected);

        // localStorage's copy of the app's store: the records are the same
        // whatever the store's own version.
        let body = &FILE[FILE.find("\"conversations\"").unwrap()..FILE.rfind('}').unwrap()];
        let persisted = format!(r#"{{"state": {{"activeId": "conv-1", {body}}}, "version": 3}}"#);
        assert!(looks_like_seed(persisted.as_bytes()));
        assert_eq!(parse_seed(persisted.as_bytes(), &user).unwrap(), expected);
        let bad = persisted.replace("\"role\": \"assistant\"", "\"role\": \"robot\"");
        let err = parse_seed(bad.as_bytes(), &user).unwrap_err().to_string();
        assert!(err.contains("state.conversations[0].messages[1]"), "{err}");
    }
}
