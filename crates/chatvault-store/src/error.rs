//! Store errors: what can go wrong below the facade, one variant per
//! situation a caller must tell apart, phrased so a user can act on it.
//! A backend's own error travels as the [`source`](std::error::Error::source)
//! of the variant it was classified into, never flattened to text; this
//! module must never depend on a particular backend's error type.

/// A backend's own error, carried as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors from a storage backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store file is not a chatvault store or is damaged.
    #[error("store is corrupt or not a chatvault store: {detail}")]
    Corrupt {
        /// What was found wrong.
        detail: String,
        /// The backend's error, if one reported it.
        #[source]
        source: Option<BoxError>,
    },
    /// The device is out of space, the browser quota is exhausted, or the
    /// store reached the size cap it was opened with. Nothing was written.
    /// Deleting still works on a full store (a deletion frees more than it
    /// writes), so the message points there.
    #[error(
        "storage is full ({detail}); nothing was written: delete conversations or messages to \
         make room (a deletion writes only a few KiB), or free space on the device"
    )]
    Full {
        /// Which limit was reached.
        detail: String,
        /// The backend's error, if one reported it.
        #[source]
        source: Option<BoxError>,
    },
    /// The store was written by a newer chatvault.
    #[error("store schema version {found} is newer than this program supports ({supported}); upgrade chatvault")]
    NewerSchema {
        /// Version found in the store.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// Another process held the store locked for longer than the timeout.
    #[error(
        "store is busy (locked by another process); retry, or close the other program using it"
    )]
    Busy {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The store cannot be opened or written (permissions, a missing
    /// directory, a read-only file, an I/O failure).
    #[error("cannot access store: {detail}")]
    Unavailable {
        /// What could not be accessed (usually with its path).
        detail: String,
        /// The backend's or the OS's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// A value read back from the store does not decode.
    #[error("stored data does not decode: {0}")]
    Decode(String),
    /// A batch required a conversation that does not exist.
    #[error("conversation {0} not found")]
    ConversationNotFound(chatvault_core::ConversationId),
    /// A batch required a record at a version the store no longer holds
    /// (it changed since the writer read it): re-read and write again.
    #[error("{kind} {id} changed since it was read; read it again and retry")]
    VersionChanged {
        /// The record's kind.
        kind: chatvault_core::EntityKind,
        /// The record.
        id: chatvault_core::RecordId,
    },
    /// A batch claimed version stamps another writer of the same store
    /// (another process of this device) already committed at or above:
    /// fold `mark` into the clock, re-stamp and retry.
    #[error("version stamps already taken by another writer of this store (mark {mark}); re-stamp and retry")]
    StampsTaken {
        /// The store's clock mark: the highest stamp committed so far.
        mark: chatvault_core::Hlc,
    },
    /// A [`WriteOp::RequireMeta`](crate::WriteOp::RequireMeta) found the
    /// metadata value changed (another writer of this store changed it):
    /// nothing of the batch was written.
    #[error("the store's metadata {key:?} changed under this writer; nothing was written")]
    MetaChanged {
        /// The metadata key.
        key: String,
    },
    /// A request the contract forbids (e.g. a zero page size).
    #[error("invalid store request: {0}")]
    InvalidRequest(String),
    /// The backend does not implement an optional part of the contract.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A migration ([`copy_store`](crate::copy_store)) was asked to copy
    /// into a store that already holds a vault (or anything else).
    #[error(
        "the target store is not empty ({0}); nothing was copied: migrate into a new, empty store, \
         or delete the target first"
    )]
    NotEmpty(String),
    /// The store was being written by a migration that did not finish:
    /// it holds part of a vault and must not be used as one.
    #[error(
        "this store holds an incomplete migration (the copy into it stopped before it was \
         verified); run the migration again, which starts the copy over, or delete this store"
    )]
    IncompleteMigration,
    /// A migration's copy did not match its source when counted: the
    /// target stays marked incomplete, the source is untouched.
    #[error("the migrated copy does not match its source ({0}); the source is untouched")]
    CopyMismatch(String),
    /// Any other failure of the backend.
    #[error("storage backend error: {detail}")]
    Backend {
        /// What the store was doing.
        detail: String,
        /// The backend's error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// A stable, machine-readable name of the situation (see
    /// `VaultError::code` in the `chatvault` crate).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Corrupt { .. } => "corrupt_store",
            StoreError::Full { .. } => "storage_full",
            StoreError::NewerSchema { .. } => "newer_schema",
            StoreError::Busy { .. } => "busy",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Decode(_) => "corrupt_record",
            StoreError::ConversationNotFound(_) => "not_found",
            StoreError::VersionChanged { .. } => "version_changed",
            StoreError::StampsTaken { .. } => "contended",
            StoreError::MetaChanged { .. } => "meta_changed",
            StoreError::InvalidRequest(_) => "invalid",
            StoreError::Unsupported(_) => "unsupported",
            StoreError::NotEmpty(_) => "target_not_empty",
            StoreError::IncompleteMigration => "incomplete_migration",
            StoreError::CopyMismatch(_) => "copy_mismatch",
            StoreError::Backend { .. } => "storage_failed",
        }
    }
}

impl StoreError {
    /// [`StoreError::Corrupt`] found by the store itself (no backend error).
    pub fn corrupt(detail: impl Into<String>) -> Self {
        Self::Corrupt {
            detail: detail.into(),
            source: None,
        }
    }

    /// [`StoreError::Full`] found by the store itself (e.g. its own quota).
    pub fn full(detail: impl Into<String>) -> Self {
        Self::Full {
            detail: detail.into(),
            source: None,
        }
    }

    /// [`StoreError::Unavailable`] caused by `source`.
    pub fn unavailable(detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            source: Some(source.into()),
        }
    }

    /// [`StoreError::Backend`] caused by `source`.
    pub fn backend(detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            detail: detail.into(),
            source: Some(source.into()),
        }
    }
}
