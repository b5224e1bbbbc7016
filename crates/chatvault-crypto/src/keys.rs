//! The long-lived secret keys a vault holds while it is unlocked: the data
//! keys (in a [`Keyring`]) that encrypt records and the auth key that
//! proves the passphrase to the sync server.
//!
//! Owns: [`DataKey`], [`AuthKey`], [`VaultKeys`] and how they are created,
//! printed and wiped.
//! Must never: print or serialize key bytes implicitly (`Debug` is
//! redacted, there is no `Serialize`), leave a copy behind on drop, or make
//! the data key cloneable (one owner; share it with `Arc`).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::kdf::KEY_LEN;
use crate::keyring::Keyring;
use crate::random::random_array;
use crate::CryptoError;

/// One random key of a vault's [`Keyring`], which seals and opens records
/// with it.
///
/// A passphrase change re-wraps the keys
/// ([`KeyEnvelope::rewrap`](crate::KeyEnvelope::rewrap)) instead of
/// re-encrypting records; a rotation
/// ([`KeyEnvelope::rotate`](crate::KeyEnvelope::rotate)) adds a new one.
/// Wiped on drop; deliberately not `Clone`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// A fresh random data key.
    pub(crate) fn generate() -> Result<DataKey, CryptoError> {
        Ok(DataKey(random_array()?))
    }

    pub(crate) fn from_secret(bytes: &[u8; KEY_LEN]) -> DataKey {
        DataKey(*bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// The key a client presents to the sync server to prove it knows the
/// passphrase, derived from it separately from the key-encryption key, so
/// the server can never unwrap the data key with it. The server stores only
/// a slow hash of it.
///
/// Wiped on drop (clones too).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuthKey([u8; KEY_LEN]);

impl AuthKey {
    pub(crate) fn from_secret(bytes: &[u8; KEY_LEN]) -> AuthKey {
        AuthKey(*bytes)
    }

    /// Standard base64 with padding, for the login request. The returned
    /// `String` is an ordinary allocation: drop it once it is sent (or wrap
    /// it in `zeroize::Zeroizing`).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Parses [`to_base64`](Self::to_base64) output (on the server).
    pub fn from_base64(text: &str) -> Result<AuthKey, CryptoError> {
        let bytes =
            Zeroizing::new(
                BASE64
                    .decode(text.trim())
                    .map_err(|_| CryptoError::InvalidKey {
                        detail: "auth key is not valid base64".into(),
                    })?,
            );
        let bytes: &[u8; KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::InvalidKey {
                    detail: format!("auth key must be {KEY_LEN} bytes, got {}", bytes.len()),
                })?;
        Ok(AuthKey(*bytes))
    }

    /// The raw bytes, for the server to hash.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

/// What unlocking a vault yields.
#[derive(Debug)]
pub struct VaultKeys {
    /// Encrypts and decrypts records.
    pub keyring: Keyring,
    /// Logs in to the sync server.
    pub auth: AuthKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let data = DataKey::from_secret(&[0xAB; KEY_LEN]);
        let auth = AuthKey::from_secret(&[0xAB; KEY_LEN]);
        assert_eq!(format!("{data:?}"), "DataKey(<redacted>)");
        assert_eq!(format!("{auth:?}"), "AuthKey(<redacted>)");
        let keys = VaultKeys {
            keyring: Keyring::generate().unwrap(),
            auth,
        };
        let debug = format!("{keys:?}");
        assert!(debug.contains("auth: AuthKey(<redacted>)"), "{debug}");
        assert!(
            !debug.contains("ab, ab") && !debug.contains("171"),
            "{debug}"
        );
    }

    #[test]
    fn zeroize_wipes_the_bytes() {
        let mut data = DataKey::from_secret(&[0xAB; KEY_LEN]);
        data.zeroize();
        assert_eq!(data.as_bytes(), &[0; KEY_LEN]);
    }

    #[test]
    fn generated_keys_differ() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn auth_key_base64_round_trips() {
        let key = AuthKey::from_secret(&[9; KEY_LEN]);
        let text = key.to_base64();
        assert_eq!(
            AuthKey::from_base64(&text).unwrap().as_bytes(),
            &[9; KEY_LEN]
        );
    }

    #[test]
    fn auth_key_from_bad_base64_is_an_error() {
        for bad in ["", "!!!", "AAAA", &BASE64.encode([0u8; 33])] {
            assert!(
                matches!(
                    AuthKey::from_base64(bad),
                    Err(CryptoError::InvalidKey { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
