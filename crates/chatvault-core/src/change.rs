//! [`Change`]: one write, as queued in the outbox and exchanged with the
//! sync server. A change carries everything another device needs to apply
//! it — the record's clear header and its opaque body — and nothing the
//! server could read.

use crate::{
    Body, ConversationId, ConversationRecord, CoreError, Hlc, MessageRecord, OpId, RecordId,
    Timestamp, Tombstone, UserId,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of record that sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    /// A [`ConversationRecord`].
    Conversation,
    /// A [`MessageRecord`].
    Message,
}

impl EntityKind {
    /// The lowercase name (also used as encryption associated data).
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Conversation => "conversation",
            EntityKind::Message => "message",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EntityKind {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "conversation" => Ok(EntityKind::Conversation),
            "message" => Ok(EntityKind::Message),
            other => Err(CoreError::Invalid {
                field: "kind",
                reason: format!("{other:?} is not conversation or message"),
            }),
        }
    }
}

/// What a change does to its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "payload", rename_all = "lowercase")]
pub enum ChangeOp {
    /// Create or replace the record with this content.
    Upsert(UpsertPayload),
    /// Delete the record (and, for a conversation, its messages).
    Delete(DeletePayload),
}

/// The record content an upsert carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpsertPayload {
    /// Record creation time.
    pub created_at: Timestamp,
    /// Record edit time.
    pub updated_at: Timestamp,
    /// Owner, for conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// Opaque (in an encrypted vault: encrypted) content.
    pub body: Body,
    /// Set by the sync server on a conversation it serves that was deleted
    /// and recreated since: the highest stamp it was deleted at. Every
    /// message of the conversation stamped at or before it is deleted
    /// (see [`crate::merge`]), which a device that never saw the deletion
    /// learns only from here. Clients never set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_through: Option<Hlc>,
}

/// What a delete carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletePayload {
    /// When the record was deleted.
    pub deleted_at: Timestamp,
}

/// One write to one record: the unit of the outbox and of sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Unique per change; makes a replayed push idempotent.
    pub op_id: OpId,
    /// Kind of the record changed.
    pub kind: EntityKind,
    /// Id of the record changed.
    pub entity_id: RecordId,
    /// For messages, the conversation they belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// Version of the record after this change.
    pub version: Hlc,
    /// Upsert or delete, with its payload.
    #[serde(flatten)]
    pub op: ChangeOp,
}

/// A change turned back into what a store applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Upsert a conversation.
    Conversation(ConversationRecord),
    /// Upsert a message.
    Message(MessageRecord),
    /// Apply a deletion.
    Tombstone(Tombstone),
}

impl Change {
    /// The change that upserts `record`.
    pub fn upsert_conversation(op_id: OpId, record: &ConversationRecord) -> Self {
        Self {
            op_id,
            kind: EntityKind::Conversation,
            entity_id: record.id.into(),
            conversation_id: None,
            version: record.version,
            op: ChangeOp::Upsert(UpsertPayload {
                created_at: record.created_at,
                updated_at: record.updated_at,
                user_id: Some(record.user_id.clone()),
                body: record.body.clone(),
                deleted_through: None,
            }),
        }
    }

    /// The change that upserts `record`.
    pub fn upsert_message(op_id: OpId, record: &MessageRecord) -> Self {
        Self {
            op_id,
            kind: EntityKind::Message,
            entity_id: record.id.into(),
            conversation_id: Some(record.conversation_id),
            version: record.version,
            op: ChangeOp::Upsert(UpsertPayload {
                created_at: record.created_at,
                updated_at: record.updated_at,
                user_id: None,
                body: record.body.clone(),
                deleted_through: None,
            }),
        }
    }

    /// The change that applies `tombstone`.
    pub fn delete(op_id: OpId, tombstone: &Tombstone) -> Self {
        Self {
            op_id,
            kind: tombstone.kind,
            entity_id: tombstone.id,
            conversation_id: tombstone.conversation_id,
            version: tombstone.version,
            op: ChangeOp::Delete(DeletePayload {
                deleted_at: tombstone.deleted_at,
            }),
        }
    }

    /// Whether this change deletes its record.
    pub fn is_delete(&self) -> bool {
        matches!(self.op, ChangeOp::Delete(_))
    }

    /// Checks the change without consuming it: a message change must name
    /// its conversation; a conversation upsert must name its owner.
    pub fn validate(&self) -> Result<(), CoreError> {
        match (&self.kind, &self.op) {
            (EntityKind::Conversation, ChangeOp::Upsert(p)) if p.user_id.is_none() => {
                Err(CoreError::Invalid {
                    field: "userId",
                    reason: "a conversation upsert must carry its owner".into(),
                })
            }
            (EntityKind::Message, _) if self.conversation_id.is_none() => {
                Err(missing_conversation())
            }
            _ => Ok(()),
        }
    }

    /// Validates the change (see [`validate`](Self::validate)) and converts
    /// it into the record it writes.
    pub fn into_incoming(self) -> Result<Incoming, CoreError> {
        self.validate()?;
        match (self.kind, self.op) {
            (EntityKind::Conversation, ChangeOp::Upsert(p)) => {
                Ok(Incoming::Conversation(ConversationRecord {
                    id: self.entity_id.conversation(),
                    user_id: p.user_id.ok_or(CoreError::Invalid {
                        field: "userId",
                        reason: "a conversation upsert must carry its owner".into(),
                    })?,
                    created_at: p.created_at,
                    updated_at: p.updated_at,
                    version: self.version,
                    body: p.body,
                }))
            }
            (EntityKind::Message, ChangeOp::Upsert(p)) => Ok(Incoming::Message(MessageRecord {
                id: self.entity_id.message(),
                conversation_id: self.conversation_id.ok_or(missing_conversation())?,
                created_at: p.created_at,
                updated_at: p.updated_at,
                version: self.version,
                body: p.body,
            })),
            (kind, ChangeOp::Delete(d)) => {
                if kind == EntityKind::Message && self.conversation_id.is_none() {
                    return Err(missing_conversation());
                }
                Ok(Incoming::Tombstone(Tombstone {
                    kind,
                    id: self.entity_id,
                    conversation_id: match kind {
                        EntityKind::Message => self.conversation_id,
                        EntityKind::Conversation => None,
                    },
                    version: self.version,
                    deleted_at: d.deleted_at,
                }))
            }
        }
    }
}

fn missing_conversation() -> CoreError {
    CoreError::Invalid {
        field: "conversationId",
        reason: "a message change must name its conversation".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceId, MessageId};

    #[test]
    fn change_json_round_trips_and_reads_well() {
        let rec = MessageRecord {
            id: MessageId::new(),
            conversation_id: ConversationId::new(),
            created_at: Timestamp(10),
            updated_at: Timestamp(11),
            version: Hlc::new(11, 0, DeviceId(9)).unwrap(),
            body: Body(b"\x00\xffsecret".to_vec()),
        };
        let change = Change::upsert_message(OpId::new(), &rec);
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(json["op"], "upsert");
        assert_eq!(json["kind"], "message");
        assert_eq!(json["payload"]["createdAt"], 10);
        let back: Change = serde_json::from_value(json).unwrap();
        assert_eq!(back, change);
        assert_eq!(back.into_incoming().unwrap(), Incoming::Message(rec));
    }

    #[test]
    fn message_change_without_conversation_is_invalid() {
        let t = Tombstone::message(
            MessageId::new(),
            ConversationId::new(),
            Hlc::default(),
            Timestamp(0),
        );
        let mut c = Change::delete(OpId::new(), &t);
        c.conversation_id = None;
        assert!(c.into_incoming().is_err());
    }
}
