//! chatvault: local-first, end-to-end-encrypted persistence for chat apps.
//!
//! A [`Vault`] is what an application holds: conversations and messages
//! written to a local [`Store`](chatvault_store::Store) first (instant,
//! offline), each write recorded in a durable outbox in the same atomic
//! batch so it can sync later, with every version stamped by a hybrid
//! logical clock so devices converge by last-writer-wins.
//!
//! ```no_run
//! # async fn demo() -> chatvault::Result<()> {
//! use chatvault::{NewConversation, NewMessage, Role, Vault, VaultOptions, ListMessages};
//! let vault = Vault::open_sqlite("chats.db", VaultOptions::default()).await?;
//! let conv = vault.create_conversation(NewConversation::titled("Trip ideas")).await?;
//! vault.add_message(conv.id, NewMessage::new(Role::User, "Where to in May?")).await?;
//! let page = vault.messages(conv.id, ListMessages::default()).await?;
//! assert_eq!(page.items.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `vault` — [`Vault`] and its request/answer types.
//! - `codec` — content fields to the opaque stored body and back.
//! - `clock` — [`Clock`]: where time comes from.
//! - `error` — [`VaultError`].
//! - `random` — the platform's random source.
//! - `lifecycle` — retention, storage stats and compaction, export and
//!   import, and the settings they use (`docs/lifecycle.md`).
//! - `sync_support` — what the `chatvault-sync` client needs from a vault:
//!   sync metadata, adopting the account's key envelope, applying a pulled
//!   page and its cursor in one write, re-queueing records.
//! - [`testing`] (feature `testing`) — the conformance suite every backend runs.

mod clock;
mod codec;
mod error;
mod lifecycle;
mod random;
mod sync_support;
#[cfg(feature = "testing")]
pub mod testing;
mod vault;

pub use chatvault_core::lifecycle::{
    ExportCounts, Kept, Protection, RetentionPlan, RetentionPolicy, RetentionReason,
};
pub use chatvault_core::{
    Change, Conversation, ConversationCursor, ConversationId, Hlc, Message, MessageCursor,
    MessageId, Metadata, Page, Role, Timestamp, UserId,
};
pub use chatvault_store::{MemoryStore, OutboxEntry, Store, StoreError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Result, VaultError};
pub use lifecycle::{
    is_encrypted_export, CompactionReport, ExportEncryption, ExportOptions, ExportReport,
    ImportOptions, ImportReport, ImportSource, Progress, ProgressFn, ProgressPhase, Rejection,
    RetentionMode, RetentionReport, StorageFootprint,
};
pub use sync_support::{PassphraseChange, RemoteApply};
pub use vault::{
    ApplyReport, ConversationStats, ConversationUpdate, ListConversations, ListMessages,
    MessageUpdate, NewConversation, NewMessage, Vault, VaultOptions, VaultStats,
};

pub use chatvault_crypto::{KdfParams, KdfPolicy};

#[cfg(feature = "sqlite")]
pub use chatvault_sqlite::{Durability, SqliteOptions, SqliteStore};
