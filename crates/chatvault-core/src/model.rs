//! The data model as applications see it: decrypted, typed, serializable to
//! the camelCase JSON the web side speaks.

use crate::{ConversationId, CoreError, Hlc, MessageId, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Free-form application metadata attached to a record (a JSON object).
/// Encrypted with the record's content.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A conversation: a titled thread of messages owned by one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    /// Stable id (UUIDv7).
    pub id: ConversationId,
    /// The owner.
    pub user_id: UserId,
    /// Title shown in a conversation list.
    pub title: String,
    /// When the conversation was created.
    pub created_at: Timestamp,
    /// Last activity: the later of the conversation's own last edit and its
    /// newest message. Lists and retention order by it.
    pub updated_at: Timestamp,
    /// Version stamp of the conversation record (last-writer-wins).
    pub version: Hlc,
    /// Application metadata (e.g. `{"pinned": true}`, model settings).
    #[serde(default)]
    pub metadata: Metadata,
}

impl Conversation {
    /// Whether the app pinned this conversation (`metadata.pinned == true`);
    /// retention never deletes a pinned conversation.
    pub fn is_pinned(&self) -> bool {
        is_pinned(&self.metadata)
    }
}

/// Whether metadata marks a record as pinned.
pub(crate) fn is_pinned(metadata: &Metadata) -> bool {
    matches!(metadata.get("pinned"), Some(serde_json::Value::Bool(true)))
}

/// One turn in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Stable id (UUIDv7).
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Who spoke.
    pub role: Role,
    /// The text of the turn.
    pub content: String,
    /// When the message was created.
    pub created_at: Timestamp,
    /// When it was last edited.
    pub updated_at: Timestamp,
    /// Version stamp (last-writer-wins).
    pub version: Hlc,
    /// Application metadata (tool call ids, token counts, ...).
    #[serde(default)]
    pub metadata: Metadata,
}

/// Who authored a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String", into = "&'static str")]
pub enum Role {
    /// The human.
    User,
    /// The model.
    Assistant,
    /// System or developer instructions.
    System,
    /// A tool call result.
    Tool,
}

impl Role {
    /// All roles, in display order.
    pub const ALL: [Role; 4] = [Role::User, Role::Assistant, Role::System, Role::Tool];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| CoreError::InvalidRole(s.to_owned()))
    }
}

impl TryFrom<String> for Role {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        s.parse()
    }
}

impl From<Role> for &'static str {
    fn from(r: Role) -> &'static str {
        r.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_reject() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert_eq!(
            "robot".parse::<Role>().unwrap_err().to_string(),
            "invalid role \"robot\": expected one of user, assistant, system, tool"
        );
        assert!(serde_json::from_str::<Role>("\"Admin\"").is_err());
    }

    #[test]
    fn message_json_is_camel_case() {
        let m = Message {
            id: MessageId::new(),
            conversation_id: ConversationId::new(),
            role: Role::Assistant,
            content: "héllo 👋".into(),
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
            version: Hlc::default(),
            metadata: Metadata::new(),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["role"], "assistant");
        assert!(v.get("conversationId").is_some());
        assert!(v.get("createdAt").is_some());
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
