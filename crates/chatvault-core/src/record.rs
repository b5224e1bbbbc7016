//! What stores and the sync server keep: each record is a clear header
//! (ids, timestamps, version) plus an opaque [`Body`].
//!
//! The body holds the content fields (title, role, content, metadata),
//! serialized by the facade and — in an encrypted vault — sealed with the
//! vault's data key. Keeping ids and timestamps clear is what lets stores
//! query, page and apply retention without the key.

use crate::{ConversationId, EntityKind, Hlc, MessageId, RecordId, Timestamp, UserId};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Opaque record content: plaintext JSON or ciphertext, stores cannot tell.
/// Serialized as standard base64.
///
/// A body syncs only if it is at most [`Body::MAX_SYNC_BYTES`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    /// The largest body a record may have and still sync: 3 MiB less
    /// 4 KiB. A push carries a body in base64 (4 bytes for every 3) inside
    /// JSON, and the sync server's default request limit is 4 MiB, so one
    /// change of this size fits in a push with over 5 KB left for its
    /// header. Writes of a larger body are refused up front rather than
    /// parked at push time.
    pub const MAX_SYNC_BYTES: usize = 3 * 1024 * 1024 - 4 * 1024;

    /// The content as stored: JSON, or ciphertext in an encrypted vault.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Stored size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Body)
            .map_err(|e| serde::de::Error::custom(format!("body is not valid base64: {e}")))
    }
}

/// A stored conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationRecord {
    /// Record id.
    pub id: ConversationId,
    /// Owner.
    pub user_id: UserId,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last edit of the conversation record itself (synced).
    pub updated_at: Timestamp,
    /// Last-writer-wins version.
    pub version: Hlc,
    /// Title and metadata, possibly encrypted.
    pub body: Body,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    /// Record id.
    pub id: MessageId,
    /// Parent conversation.
    pub conversation_id: ConversationId,
    /// Creation time (message order within a conversation).
    pub created_at: Timestamp,
    /// Time of the last edit.
    pub updated_at: Timestamp,
    /// Last-writer-wins version.
    pub version: Hlc,
    /// Role, content and metadata, possibly encrypted.
    pub body: Body,
}

/// The mark a deletion leaves, so the delete syncs and an older update
/// arriving later cannot resurrect the record. Deleting a conversation
/// deletes its messages; one tombstone for the conversation covers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    /// Kind of the deleted record.
    pub kind: EntityKind,
    /// Id of the deleted record.
    pub id: RecordId,
    /// For a message, its conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// Version of the deletion.
    pub version: Hlc,
    /// When it was deleted (for the tombstone horizon).
    pub deleted_at: Timestamp,
}

impl ConversationRecord {
    /// Generic id of this record.
    pub fn record_id(&self) -> RecordId {
        self.id.into()
    }
}

impl MessageRecord {
    /// Generic id of this record.
    pub fn record_id(&self) -> RecordId {
        self.id.into()
    }
}

impl Tombstone {
    /// A tombstone for a conversation (covers its messages).
    pub fn conversation(id: ConversationId, version: Hlc, deleted_at: Timestamp) -> Self {
        Self {
            kind: EntityKind::Conversation,
            id: id.into(),
            conversation_id: None,
            version,
            deleted_at,
        }
    }

    /// A tombstone for one message.
    pub fn message(
        id: MessageId,
        conversation_id: ConversationId,
        version: Hlc,
        deleted_at: Timestamp,
    ) -> Self {
        Self {
            kind: EntityKind::Message,
            id: id.into(),
            conversation_id: Some(conversation_id),
            version,
            deleted_at,
        }
    }
}
