//! chatvault's pure core: the data model every other crate speaks.
//!
//! This crate owns the shapes (conversations, messages, tombstones, changes),
//! the identifiers, the hybrid logical clock and the merge rule that decides
//! which of two versions of a record wins. It performs **no I/O**: no files,
//! no network, no clock reads (time is always a parameter), so it builds for
//! `wasm32-unknown-unknown` and every rule in it is tested with plain data.
//!
//! # Layout
//! - [`ids`] — typed UUIDv7 identifiers and the device id.
//! - [`time`] — [`Timestamp`], milliseconds since the Unix epoch.
//! - [`hlc`] — the hybrid logical clock ([`Hlc`], [`HlcClock`]).
//! - [`model`] — [`Conversation`], [`Message`], [`Role`] as apps see them.
//! - [`record`] — what stores and the server keep: clear header + opaque body.
//! - [`change`] — [`Change`], the unit of the outbox and of sync.
//! - [`merge`] — the last-writer-wins rule with tombstone cover
//!   ([`resolve_incoming`]), as pure functions.
//! - [`page`] — cursors and pages for listing.
//! - `protocol` — [`ErrorCode`], the sync protocol's error codes, shared by
//!   server and clients.
//! - [`lifecycle`] — retention planning, the export format and import
//!   validation, app-export conversion.
//! - [`error`] — [`CoreError`].

/// Implements `Serialize`/`Deserialize` for a type through its
/// `Display`/`FromStr` text form, so the JSON form is the same string apps
/// see (stamps, device ids and cursors travel as text).
macro_rules! serde_as_text {
    ($name:ty) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <String as serde::Deserialize>::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

mod change;
mod error;
mod hlc;
mod ids;
pub mod lifecycle;
mod merge;
mod model;
mod page;
mod protocol;
mod record;
mod time;

pub use change::{Change, ChangeOp, DeletePayload, EntityKind, Incoming, UpsertPayload};
pub use error::CoreError;
pub use hlc::{Hlc, HlcClock, MAX_CLOCK_DRIFT_MS, REBASE_AFTER_MS};
pub use ids::{ConversationId, DeviceId, MessageId, OpId, RecordId, UserId};
pub use merge::{
    covered_by_conversation_tombstone, merge, resolve, resolve_incoming, Cover, Resolution,
    VersionedState,
};
pub use model::{Conversation, Message, Metadata, Role};
pub use page::{ConversationCursor, MessageCursor, Page};
pub use protocol::ErrorCode;
pub use record::{Body, ConversationRecord, MessageRecord, Tombstone};
pub use time::Timestamp;

/// Result alias for fallible core operations.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
