//! The crate's one error type, [`CryptoError`], and its bridge to and from
//! `std::io::Error` for the streaming reader and writer.
//!
//! Owns: every failure this crate can report, worded so the person who sees
//! it knows what to do next.
//! Must never: put key material, passphrases or plaintext into a message —
//! errors end up in logs and bug reports.

use std::io;

/// Everything that can go wrong while deriving keys, encrypting or
/// decrypting.
///
/// Decryption failures are deliberately coarse: a wrong passphrase, a
/// truncated input and a failed authentication tag are told apart, but the
/// error never says *which* byte was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The passphrase does not open this key envelope or encrypted file.
    ///
    /// An edited envelope or stream header (salt, KDF parameters) also
    /// reports this: without the right key the two cannot be told apart.
    #[error("wrong passphrase")]
    WrongPassphrase,

    /// Authentication failed: the ciphertext, its tag, or the record it is
    /// bound to (kind, id) does not match.
    #[error("encrypted data is corrupt or was tampered with")]
    Tampered,

    /// The encrypted data is malformed before any authentication could be
    /// attempted (bad JSON, wrong field length, impossible layout).
    #[error("encrypted data is corrupt or was tampered with ({detail})")]
    Corrupt {
        /// What exactly is malformed; never contains secret data.
        detail: String,
    },

    /// The data ends early: an interrupted write, a partial copy, or an
    /// [`EncryptingWriter`](crate::EncryptingWriter) that was dropped without
    /// `finish()`.
    #[error(
        "encrypted data is truncated: it ends before its final part \
         (interrupted write or incomplete copy?)"
    )]
    Truncated,

    /// The data was written by a newer chatvault.
    #[error(
        "encrypted data is format version {found}, newest supported is {newest}: \
         upgrade chatvault to read it"
    )]
    UnsupportedVersion {
        /// The version found in the data.
        found: u32,
        /// The newest version this build can read.
        newest: u32,
    },

    /// Argon2id parameters below the minimum this crate accepts (see
    /// [`KdfParams::validate`](crate::KdfParams::validate)).
    #[error(
        "key-derivation parameters are too weak ({detail}); the minimum is Argon2id \
         with m=19456 KiB and t=2 (or more memory with fewer passes), p>=1"
    )]
    WeakKdfParams {
        /// Which parameter is too low.
        detail: String,
    },

    /// Argon2id parameters so large they could only be a mistake or an
    /// attempt to exhaust memory or CPU.
    #[error("key-derivation parameters are unreasonably large ({detail}); refusing to run them")]
    ExcessiveKdfParams {
        /// Which limit was exceeded.
        detail: String,
    },

    /// The machine could not provide the memory Argon2id asks for.
    #[error(
        "not enough memory for key derivation ({m_cost_kib} KiB needed); \
         close other programs or use a device with more memory"
    )]
    KdfOutOfMemory {
        /// Memory the parameters require, in KiB.
        m_cost_kib: u32,
    },

    /// Argon2id rejected its inputs for a reason the validation above does
    /// not cover (for example a passphrase longer than 4 GiB).
    #[error("key derivation failed: {detail}")]
    KeyDerivation {
        /// The underlying reason.
        detail: String,
    },

    /// A new passphrase was empty.
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,

    /// The input does not start with the encrypted-file magic `CVENC1\n`.
    #[error("not a chatvault encrypted file (it does not start with the CVENC header)")]
    NotEncrypted,

    /// A key given in text form is malformed.
    #[error("invalid key: {detail}")]
    InvalidKey {
        /// What is wrong with it.
        detail: String,
    },

    /// [`KeyEnvelope::unlock_with_keys`](crate::KeyEnvelope::unlock_with_keys)
    /// got keys derived for another salt or other KDF parameters.
    #[error(
        "these passphrase keys were derived with a different salt or KDF parameters \
         than the key envelope uses; derive them from the envelope's own salt and parameters"
    )]
    KeysDoNotMatchEnvelope,

    /// A record names a data key the vault's keyring does not hold: it was
    /// sealed after a key rotation this device has not adopted yet (sign in
    /// to the sync account again), or it belongs to another vault.
    #[error(
        "this record was sealed with data key {id}, which this vault does not have; \
         sign in to the sync account again to fetch the rotated key"
    )]
    UnknownKey {
        /// The key id the record names.
        id: u32,
    },

    /// The keyring already holds the most keys it can.
    #[error("the keyring is full: no more data-key rotations are possible")]
    KeyringFull,

    /// A single record is larger than one AEAD operation can protect.
    #[error("{len} bytes is too large to encrypt as one record; use the streaming writer")]
    TooLarge {
        /// The plaintext length.
        len: usize,
    },

    /// An encrypted stream reached its format's limit of 2^32 chunks of
    /// 64 KiB (256 TiB).
    #[error("the encrypted stream is too long: the format holds at most 256 TiB")]
    StreamTooLong,

    /// The operating system (or the browser) could not supply random bytes.
    #[error("the system random number generator failed: {detail}")]
    RandomSource {
        /// The platform's reason.
        detail: String,
    },

    /// An earlier write to an [`EncryptingWriter`](crate::EncryptingWriter)
    /// failed, so the output is incomplete; start the file again.
    #[error("the encrypted stream is unusable because an earlier write to it failed")]
    StreamPoisoned,
}

impl CryptoError {
    /// Gets the `CryptoError` back out of an `io::Error` produced by
    /// [`DecryptingReader`](crate::DecryptingReader) or
    /// [`EncryptingWriter`](crate::EncryptingWriter); `None` for a plain I/O
    /// error of the underlying reader or writer.
    pub fn from_io(err: &io::Error) -> Option<&CryptoError> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<CryptoError>())
    }

    pub(crate) fn corrupt(detail: impl Into<String>) -> Self {
        CryptoError::Corrupt {
            detail: detail.into(),
        }
    }
}

/// Wraps the error so it can travel through `Read`/`Write`; the kind is the
/// closest std match (truncation is `UnexpectedEof`, tampering
/// `InvalidData`, a wrong passphrase `PermissionDenied`).
impl From<CryptoError> for io::Error {
    fn from(err: CryptoError) -> io::Error {
        let kind = match &err {
            CryptoError::Truncated => io::ErrorKind::UnexpectedEof,
            CryptoError::WrongPassphrase => io::ErrorKind::PermissionDenied,
            CryptoError::Tampered
            | CryptoError::Corrupt { .. }
            | CryptoError::UnknownKey { .. }
            | CryptoError::NotEncrypted
            | CryptoError::UnsupportedVersion { .. } => io::ErrorKind::InvalidData,
            CryptoError::WeakKdfParams { .. }
            | CryptoError::ExcessiveKdfParams { .. }
            | CryptoError::EmptyPassphrase
            | CryptoError::InvalidKey { .. }
            | CryptoError::KeysDoNotMatchEnvelope
            | CryptoError::TooLarge { .. }
            | CryptoError::KeyringFull
            | CryptoError::StreamTooLong => io::ErrorKind::InvalidInput,
            CryptoError::KdfOutOfMemory { .. } => io::ErrorKind::OutOfMemory,
            CryptoError::KeyDerivation { .. }
            | CryptoError::RandomSource { .. }
            | CryptoError::StreamPoisoned => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_round_trip_through_io_error() {
        let io_err: io::Error = CryptoError::Truncated.into();
        assert_eq!(io_err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(CryptoError::from_io(&io_err), Some(&CryptoError::Truncated));

        let plain = io::Error::new(io::ErrorKind::BrokenPipe, "pipe");
        assert_eq!(CryptoError::from_io(&plain), None);
    }

    #[test]
    fn messages_are_actionable() {
        assert_eq!(CryptoError::WrongPassphrase.to_string(), "wrong passphrase");
        assert_eq!(
            CryptoError::Tampered.to_string(),
            "encrypted data is corrupt or was tampered with"
        );
        assert_eq!(
            CryptoError::UnsupportedVersion { found: 7, newest: 1 }.to_string(),
            "encrypted data is format version 7, newest supported is 1: upgrade chatvault to read it"
        );
    }
}
