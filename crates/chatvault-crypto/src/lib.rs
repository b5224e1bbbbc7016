//! chatvault's encryption: everything between a passphrase and ciphertext.
//!
//! A passphrase is stretched with Argon2id (parameters stored with the
//! vault, OWASP minimum or stronger) under a random per-vault salt into a
//! master key, which HKDF-SHA256 splits into a key-encryption key and a
//! separate server-auth key. A [`Keyring`] of random data keys encrypts
//! records with XChaCha20-Poly1305 (the newest key seals, every blob names
//! its key); the key-encryption key wraps the keyring in a [`KeyEnvelope`],
//! so changing the passphrase re-wraps the keys and never re-encrypts data,
//! and rotating adds a key that an old copy of the envelope cannot open.
//! Encrypted exports use a chunked stream format with its own per-file
//! keys.
//!
//! ```
//! use chatvault_crypto::{KdfParams, KdfPolicy, KeyEnvelope, RecordAad};
//!
//! # // Fast, insecure parameters keep the doctest quick; real vaults use
//! # // `KeyEnvelope::create(passphrase, KdfParams::default())`.
//! # let (kdf, policy) = (KdfParams::insecure_fast_for_tests(), KdfPolicy::insecure_allow_weak_for_tests());
//! let (envelope, keys) = KeyEnvelope::create_with_policy("correct horse", kdf, policy)?;
//! let aad = RecordAad::new("message", "0190f5b2-7c3e-7000-8000-000000000001")
//!     .with_conversation("0190f5b2-7c3e-7000-8000-0000000000c0")
//!     .with_version("018c2a5e1f00-00000000-0000000000000001");
//! let blob = keys.keyring.seal(&aad, b"hello")?;
//!
//! let json = envelope.to_json(); // store this next to the vault
//! let reopened = KeyEnvelope::from_json(&json)?.unlock_with_policy("correct horse", policy)?;
//! assert_eq!(reopened.keyring.open(&aad, &blob)?, b"hello");
//! # Ok::<(), chatvault_crypto::CryptoError>(())
//! ```
//!
//! This crate is pure: no files, no network, no clock; the only I/O is
//! through the `std::io::Read`/`Write` values callers hand to the stream
//! adapters. It builds for `wasm32-unknown-unknown` (randomness from
//! `crypto.getRandomValues`).
//!
//! # Layout
//! - `error` — [`CryptoError`], the one error type, and its `io::Error` bridge.
//! - `kdf` — [`KdfParams`] and their limits, [`KdfPolicy`], [`Salt`],
//!   Argon2id + HKDF ([`PassphraseKeys`], [`derive_auth_key`]).
//! - `keys` — [`DataKey`], [`AuthKey`], [`VaultKeys`]: zeroized, redacted.
//! - `keyring` — [`Keyring`], [`KeyId`], [`VaultId`]: every data key of a
//!   vault, [`Keyring::seal`] / [`Keyring::open`].
//! - `record` — [`RecordAad`] and the record blob formats.
//! - `envelope` — [`KeyEnvelope`]: the wrapped keyring and its JSON form.
//! - `stream` — [`EncryptingWriter`], [`DecryptingReader`],
//!   [`is_encrypted_stream`]: the encrypted export format.
//! - `aead`, `random` — internal: the XChaCha20-Poly1305 helpers and the
//!   platform random source.
//!
//! # Tests and speed
//! Argon2id at real parameters takes tens of milliseconds natively and more
//! in a browser. Tests elsewhere should use
//! [`KdfParams::insecure_fast_for_tests`] with
//! [`KdfPolicy::insecure_allow_weak_for_tests`] and the `*_with_policy`
//! functions; production code uses the plain functions, which enforce the
//! minimum.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aead;
mod envelope;
mod error;
mod kdf;
mod keyring;
mod keys;
mod random;
mod record;
mod stream;

pub use envelope::KeyEnvelope;
pub use error::CryptoError;
pub use kdf::{
    derive_auth_key, derive_auth_key_with_policy, KdfParams, KdfPolicy, PassphraseKeys, Salt,
};
pub use keyring::{KeyId, Keyring, VaultId};
pub use keys::{AuthKey, DataKey, VaultKeys};
pub use record::RecordAad;
pub use stream::{is_encrypted_stream, DecryptingReader, EncryptingWriter};
