//! Store errors: what can go wrong below the facade, phrased so a user can
//! act on it.

/// Errors from a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file is not a chatvault store or is damaged.
    #[error("store is corrupt or not a chatvault store: {0}")]
    Corrupt(String),
    /// The device is out of space or the browser quota is exhausted.
    #[error("storage is full: {0}; free space or apply a retention policy, nothing was written")]
    Full(String),
    /// The store was written by a newer chatvault.
    #[error("store schema version {found} is newer than this program supports ({supported}); upgrade chatvault")]
    NewerSchema {
        /// Version found in the store.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// The store is locked by another process for longer than the timeout.
    #[error("store is busy (locked by another process): {0}")]
    Busy(String),
    /// The store cannot be opened or read (permissions, missing directory...).
    #[error("cannot access store: {0}")]
    Unavailable(String),
    /// A value read back from the store does not decode.
    #[error("stored data does not decode: {0}")]
    Decode(String),
    /// A batch required a conversation that does not exist.
    #[error("conversation {0} not found")]
    ConversationNotFound(chatvault_core::ConversationId),
    /// A request the contract forbids (e.g. a zero page size).
    #[error("invalid store request: {0}")]
    InvalidRequest(String),
    /// The backend does not implement an optional part of the contract.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Anything else from the backend.
    #[error("storage backend error: {0}")]
    Backend(String),
}
