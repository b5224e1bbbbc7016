//! The facade's error type: one enum an app can match on, with messages a
//! user can act on.

use chatvault_core::{CoreError, EntityKind, RecordId};
use chatvault_store::StoreError;

/// Everything a [`Vault`](crate::Vault) operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No live record with this id (never created, deleted, or another
    /// user's).
    #[error("{kind} {id} not found")]
    NotFound {
        /// Kind of record looked for.
        kind: EntityKind,
        /// Its id.
        id: RecordId,
    },
    /// A stored record does not decode (damaged, or tampered with).
    #[error("{kind} {id} is damaged and cannot be read: {reason}")]
    CorruptRecord {
        /// Kind of the record.
        kind: EntityKind,
        /// Its id.
        id: RecordId,
        /// What failed.
        reason: String,
    },
    /// The vault's header is missing pieces or from a newer chatvault.
    #[error("vault header: {0}")]
    Header(String),
    /// Invalid input (bad role, bad id, empty title...).
    #[error(transparent)]
    Invalid(#[from] CoreError),
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result alias for vault operations.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;
