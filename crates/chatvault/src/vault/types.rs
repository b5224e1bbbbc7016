//! The request and answer types of the app API: what to create, change or
//! list, and what the vault reports back. Plain data: no I/O, no vault
//! state.

use chatvault_core::{
    ConversationCursor, ConversationId, MessageCursor, MessageId, Metadata, OpId, Role, Timestamp,
};
use serde::Serialize;

/// A conversation to create.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewConversation {
    /// Its id, chosen by the caller; a new time-ordered id if `None`.
    /// With an id the create can be repeated safely (a retry after a lost
    /// answer): if the vault already holds this conversation with the same
    /// title and metadata, the create returns it and writes nothing; if the
    /// id names anything else, or a deleted conversation, it fails with
    /// [`VaultError::IdTaken`](crate::VaultError::IdTaken).
    pub id: Option<ConversationId>,
    /// Its title.
    pub title: String,
    /// Application metadata.
    pub metadata: Metadata,
}

impl NewConversation {
    /// A conversation with this title and no metadata.
    pub fn titled(title: impl Into<String>) -> Self {
        Self {
            id: None,
            title: title.into(),
            metadata: Metadata::new(),
        }
    }
}

/// Fields of a conversation to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationUpdate {
    /// New title.
    pub title: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<Metadata>,
}

/// A message to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Its id, chosen by the caller; a new time-ordered id if `None`.
    /// With an id the add can be repeated safely: if the vault already
    /// holds this message in the same conversation with the same role,
    /// content and metadata, it is returned as it is stored and nothing is
    /// written; if the id names anything else, or a deleted message, the
    /// whole batch fails with [`VaultError::IdTaken`](crate::VaultError::IdTaken).
    pub id: Option<MessageId>,
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
    /// Application metadata.
    pub metadata: Metadata,
    /// Creation time; now if `None` (imports keep the original time).
    pub created_at: Option<Timestamp>,
}

impl NewMessage {
    /// A message with this role and content.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            id: None,
            role,
            content: content.into(),
            metadata: Metadata::new(),
            created_at: None,
        }
    }
}

/// Fields of a message to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageUpdate {
    /// New content.
    pub content: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<Metadata>,
}

/// Which conversations to list (most recent activity first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListConversations {
    /// Only those active at or after this time.
    pub active_from: Option<Timestamp>,
    /// Only those active at or before this time.
    pub active_to: Option<Timestamp>,
    /// Continue after a cursor from a previous page.
    pub after: Option<ConversationCursor>,
    /// Page size (at least 1).
    pub limit: usize,
}

impl Default for ListConversations {
    fn default() -> Self {
        Self {
            active_from: None,
            active_to: None,
            after: None,
            limit: 50,
        }
    }
}

/// Which messages of a conversation to list (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListMessages {
    /// Continue with older messages than a cursor from a previous page.
    pub before: Option<MessageCursor>,
    /// Page size (at least 1).
    pub limit: usize,
}

impl Default for ListMessages {
    fn default() -> Self {
        Self {
            before: None,
            limit: 50,
        }
    }
}

/// Storage use of one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationStats {
    /// The conversation.
    pub id: ConversationId,
    /// Its last activity.
    pub updated_at: Timestamp,
    /// Its message count.
    pub messages: u64,
    /// Bytes stored for it and its messages (after encryption).
    pub bytes: u64,
    /// Whether it has changes not yet acknowledged by a server.
    pub pending: bool,
}

/// What a vault holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultStats {
    /// Storage backend (`sqlite`, `memory`, ...).
    pub backend: &'static str,
    /// Whether content is encrypted.
    pub encrypted: bool,
    /// Live conversations.
    pub conversations: u64,
    /// Live messages.
    pub messages: u64,
    /// Deletion marks kept for sync.
    pub tombstones: u64,
    /// Changes waiting to sync.
    pub pending_changes: u64,
    /// Bytes of stored content (after encryption).
    pub bytes: u64,
    /// Per conversation, most recent first.
    pub per_conversation: Vec<ConversationStats>,
}

/// The stored records that cannot be read (damaged, or tampered with),
/// found by [`Vault::damaged_records`](crate::Vault::damaged_records).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DamagedRecords {
    /// Conversations whose title and metadata cannot be read (their
    /// readable messages stay listed by `messages`).
    pub conversations: Vec<ConversationId>,
    /// Messages that cannot be read.
    pub messages: Vec<MessageId>,
}

impl DamagedRecords {
    /// How many records cannot be read.
    pub fn count(&self) -> usize {
        self.conversations.len() + self.messages.len()
    }

    /// Whether every record can be read.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }
}

/// The outcome of applying changes from elsewhere (sync, import).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// Changes that won and were written.
    pub applied: u64,
    /// Changes older than what the vault holds (kept the local version).
    pub superseded: u64,
    /// Changes refused, with the reason.
    pub rejected: Vec<(OpId, String)>,
}
