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
    /// The passphrase does not unlock this vault.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The vault is encrypted and was opened without a passphrase.
    #[error("the vault is encrypted: unlock it with its passphrase")]
    Locked,
    /// A passphrase was given for a vault that is not encrypted.
    #[error("the vault is not encrypted")]
    NotEncrypted,
    /// Key derivation or encryption failed (weak or hostile parameters,
    /// damaged key envelope, no randomness).
    #[error("encryption: {0}")]
    Crypto(chatvault_crypto::CryptoError),
    /// An export file cannot be read or written (missing, unreadable, disk
    /// full); an import that fails this way changed nothing.
    #[error("export file: {0}")]
    ExportFile(std::io::Error),
    /// An encrypted export file was given without its passphrase.
    #[error("the export file is encrypted: give its passphrase")]
    ExportLocked,
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

impl From<chatvault_crypto::CryptoError> for VaultError {
    fn from(e: chatvault_crypto::CryptoError) -> Self {
        match e {
            chatvault_crypto::CryptoError::WrongPassphrase => VaultError::WrongPassphrase,
            other => VaultError::Crypto(other),
        }
    }
}

/// Result alias for vault operations.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;
