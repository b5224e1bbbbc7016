//! The facade's error type: one enum an app can match on, with messages a
//! user can act on.

use chatvault_core::{CoreError, EntityKind, RecordId};
use chatvault_store::StoreError;

/// Everything a [`Vault`](crate::Vault) operation can fail with.
///
/// New situations get new variants, so match with a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A local-only passphrase change or key rotation on a vault linked to
    /// a sync account: the account would keep the old passphrase and key
    /// (still opening its envelope), and this device could no longer sign
    /// in. Change them through the sync client, which changes the account
    /// first.
    #[error(
        "this vault syncs with {server}: change its passphrase or data key through the sync \
         client (SyncClient::change_passphrase / rotate_data_key, or `chatvault passwd`), which \
         changes the account first"
    )]
    LinkedToAccount {
        /// The sync server the vault is linked to.
        server: String,
    },
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
    /// The vault was written by a newer chatvault than this one.
    #[error(
        "vault format {found} is newer than this program supports ({supported}); upgrade chatvault"
    )]
    NewerFormat {
        /// The format version the vault records.
        found: u32,
        /// The newest format this program reads.
        supported: u32,
    },
    /// The vault says it is encrypted but its key envelope (the wrapped
    /// data key) is gone: without it nothing can be decrypted, and the
    /// vault is never silently treated as plaintext.
    #[error("the vault is encrypted but its key envelope is missing")]
    MissingEnvelope,
    /// The vault's header and its key material disagree: the header says
    /// plaintext (or is missing) but a key envelope or encrypted records
    /// are there. The file was edited or damaged; it is never opened as
    /// plaintext.
    #[error(
        "the vault header does not match its keys ({detail}): the file was edited or damaged; \
         refusing to open an encrypted vault as plaintext"
    )]
    TamperedHeader {
        /// What disagrees.
        detail: &'static str,
    },
    /// A key envelope offered for adoption is older than the vault's own
    /// (a lower generation: an earlier passphrase or keyring). Nothing was
    /// changed.
    #[error(
        "the offered key envelope is older (generation {offered}) than this vault's \
         (generation {current}); refusing to go back to an earlier passphrase or keyring"
    )]
    StaleEnvelope {
        /// Generation of the envelope offered.
        offered: u64,
        /// Generation of the vault's envelope.
        current: u64,
    },
    /// A value the vault keeps about itself (header, clock, key envelope,
    /// a setting) does not decode: the store was damaged or edited.
    #[error("the stored {key} is unreadable: {reason}")]
    CorruptMetadata {
        /// The metadata key (see [`meta_keys`](crate::meta_keys)).
        key: &'static str,
        /// What failed.
        reason: String,
    },
    /// A prepared passphrase change was committed after the vault's key
    /// envelope had changed: nothing was written; prepare it again.
    #[error("the key envelope changed while the passphrase change was prepared; prepare it again")]
    EnvelopeChanged,
    /// Another process (or another open handle, or a browser tab) rotated
    /// the vault's data key since this one opened it: this handle would
    /// still seal with the old key, so nothing was written. Open the vault
    /// again (with the passphrase) and retry.
    #[error(
        "the vault's data key was rotated by another process since this one opened it; \
         nothing was written: open the vault again and retry"
    )]
    KeyRotatedElsewhere,
    /// A sync account's key envelope wraps a different data key than this
    /// vault's: the vault belongs to another account (or was created
    /// separately). Nothing was changed.
    #[error(
        "the sync account's key does not open this vault: it belongs to another account \
         (or was created separately); sync it with its own account or start a new vault"
    )]
    ForeignAccountKey,
    /// The platform gave no randomness (needed for device ids and keys).
    #[error("no randomness available from the platform: {0}")]
    NoRandomness(String),
    /// Other writers of this vault (another process, or sync applying
    /// pulled changes) kept changing what this write depends on first, for
    /// every one of its attempts. Nothing was written; try again.
    #[error("gave up after {attempts} attempts: other writers of this vault kept changing the {what} first; try again")]
    Contended {
        /// What kept changing (version stamps, or the record written).
        what: &'static str,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Content too large to store: its stored body would be `bytes`, over
    /// the vault's limit (set so every record can still sync). Nothing
    /// was written.
    #[error("{kind} {id} is too large: {bytes} bytes stored, at most {limit} sync; split it or store large files elsewhere")]
    RecordTooLarge {
        /// Kind of the record.
        kind: EntityKind,
        /// Its id.
        id: RecordId,
        /// Size of its stored body (after encryption).
        bytes: usize,
        /// The vault's limit ([`VaultOptions::max_record_bytes`](crate::VaultOptions::max_record_bytes)).
        limit: usize,
    },
    /// A create named its own id ([`NewMessage::id`](crate::NewMessage::id),
    /// [`NewConversation::id`](crate::NewConversation::id)) that the vault
    /// already uses for something else: a record with other content (or,
    /// for a message, in another conversation), or one since deleted.
    /// Nothing was written. The same create repeated is not this error:
    /// it returns what the first one created.
    #[error(
        "{kind} {id} already exists with other content, or was deleted: an id given to a \
         create names one record, and only the same create may be repeated with it"
    )]
    IdTaken {
        /// Kind of the record.
        kind: EntityKind,
        /// The id.
        id: RecordId,
    },
    /// A bug: an invariant of the vault did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
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

impl VaultError {
    /// A stable, machine-readable name of the situation (`"wrong_passphrase"`,
    /// `"not_found"`, `"storage_full"`...): what the TypeScript API puts in
    /// `ChatvaultError.code`, and what an app branches on. Texts never
    /// change meaning; new situations get new codes.
    pub fn code(&self) -> &'static str {
        match self {
            VaultError::NotFound { .. } => "not_found",
            VaultError::CorruptRecord { .. } => "corrupt_record",
            VaultError::WrongPassphrase => "wrong_passphrase",
            VaultError::Locked => "locked",
            VaultError::NotEncrypted => "not_encrypted",
            VaultError::LinkedToAccount { .. } => "linked_to_account",
            VaultError::Crypto(_) => "crypto",
            VaultError::ExportFile(_) => "export_file",
            VaultError::ExportLocked => "export_locked",
            VaultError::NewerFormat { .. } => "newer_format",
            VaultError::MissingEnvelope => "missing_envelope",
            VaultError::TamperedHeader { .. } => "tampered_header",
            VaultError::StaleEnvelope { .. } => "stale_envelope",
            VaultError::CorruptMetadata { .. } => "corrupt_metadata",
            VaultError::EnvelopeChanged => "envelope_changed",
            VaultError::KeyRotatedElsewhere => "key_rotated",
            VaultError::ForeignAccountKey => "foreign_account_key",
            VaultError::NoRandomness(_) => "no_randomness",
            VaultError::Contended { .. } => "contended",
            VaultError::RecordTooLarge { .. } => "record_too_large",
            VaultError::IdTaken { .. } => "id_taken",
            VaultError::Internal(_) => "internal",
            VaultError::Invalid(_) => "invalid",
            VaultError::Store(e) => e.code(),
        }
    }
}

/// Result alias for vault operations.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_snake_case_names() {
        let cases: Vec<(VaultError, &str)> = vec![
            (VaultError::WrongPassphrase, "wrong_passphrase"),
            (VaultError::Locked, "locked"),
            (VaultError::NotEncrypted, "not_encrypted"),
            (
                VaultError::Store(StoreError::Full {
                    detail: "quota".into(),
                    source: None,
                }),
                "storage_full",
            ),
            (
                VaultError::Store(StoreError::NewerSchema {
                    found: 9,
                    supported: 4,
                }),
                "newer_schema",
            ),
            (VaultError::Internal("x"), "internal"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
