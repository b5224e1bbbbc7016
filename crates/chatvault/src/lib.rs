//! chatvault: local-first, end-to-end-encrypted persistence for chat apps.
//!
//! A [`Vault`] is what an application holds: conversations and messages
//! written to a local [`Store`] first (instant,
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
//! An encrypted vault opens with its passphrase
//! (`Vault::open_encrypted_sqlite`, or [`Vault::builder`] for durability,
//! quota, clock, user and key-derivation settings). The sync client's
//! side of a vault (outbox, remote changes, key envelope) is behind
//! [`Vault::replica`], so the app API above is what `Vault` itself offers.
//!
//! # Layout
//! - `vault` — [`Vault`]: opening ([`VaultBuilder`], [`VaultProbe`]), the
//!   app API (conversations, messages, stats, settings, retention,
//!   export and import, key-value state sealed by its keys: [`SealedKv`])
//!   and, behind [`Vault::replica`], the [`Replica`]
//!   handle the sync client uses. Its own docs list its parts.
//! - [`meta_keys`] — every key a vault keeps in its store's metadata.
//! - `codec` — content fields to the opaque stored body and back.
//! - `clock` — [`Clock`]: where time comes from.
//! - `error` — [`VaultError`].
//! - `random` — the platform's random source.
//! - [`testing`] (feature `testing`) — the conformance suite every backend runs.
//!
//! The pure rules the vault applies (retention planning, the export
//! format, merge) live in `chatvault_core`; this crate gathers their
//! inputs from a store and applies their outcomes.

mod clock;
mod codec;
mod error;
pub mod meta_keys;
mod random;
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
pub use chatvault_store::kv::{
    KvError, KvLimits, KvResult, KvStore, KvUsage, MemoryKv, MemoryKvArea,
};
pub use chatvault_store::{
    CopyReport, MemoryStore, OutboxEntry, ParkReason, ParkedEntry, Store, StoreError,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Result, VaultError};
pub use vault::{
    is_encrypted_export, ApplyReport, CompactionReport, ConversationStats, ConversationUpdate,
    DamagedRecords, ExportEncryption, ExportOptions, ExportReport, ImportOptions, ImportReader,
    ImportRejection, ImportReport, ImportSource, KvSealer, ListConversations, ListMessages,
    MessageUpdate, NewConversation, NewMessage, PassphraseChange, Progress, ProgressFn,
    ProgressPhase, RekeyReport, RemoteApply, Replica, RetentionMode, RetentionReport, SealedKv,
    StorageFootprint, Vault, VaultBuilder, VaultOptions, VaultProbe, VaultStats,
};

pub use chatvault_crypto::{KdfParams, KdfPolicy};

#[cfg(feature = "sqlite")]
pub use chatvault_sqlite::{Durability, SqliteOptions, SqliteStore};
