//! The key envelope: a vault's data key wrapped under its passphrase,
//! stored next to the vault (and on the sync server) as JSON.
//!
//! ```json
//! {"formatVersion":1,
//!  "kdf":{"mCostKib":19456,"tCost":2,"pCost":1},
//!  "salt":"<base64, 16 bytes>",
//!  "wrappedKey":"<base64, 72 bytes: nonce (24) || encrypted data key (32) || tag (16)>"}
//! ```
//!
//! The data key is sealed with XChaCha20-Poly1305 under the key-encryption
//! key derived from the passphrase (see `kdf`), with associated data
//!
//! ```text
//! "chatvault/key-envelope/v1" || formatVersion (u32 BE)
//!   || mCostKib (u32 BE) || tCost (u32 BE) || pCost (u32 BE) || salt (16 bytes)
//! ```
//!
//! so every header field is authenticated. An edited header still cannot
//! be told apart from a wrong passphrase (the KEK itself depends on the
//! salt and parameters), so it reports [`CryptoError::WrongPassphrase`].
//!
//! Owns: [`KeyEnvelope`] — create, unlock, rewrap, JSON form.
//! Must never: run Argon2 with unvalidated header parameters, return a data
//! key whose tag did not verify, or change the data key on rewrap (records
//! are never re-encrypted).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::kdf::{KdfParams, KdfPolicy, PassphraseKeys, Salt, KEY_LEN};
use crate::keys::{DataKey, VaultKeys};
use crate::random::random_array;
use crate::CryptoError;

const AAD_DOMAIN: &[u8] = b"chatvault/key-envelope/v1";
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// A vault's data key, wrapped under its passphrase. Safe to store and send
/// anywhere: it holds only ciphertext and public parameters.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEnvelope {
    format_version: u32,
    kdf: KdfParams,
    salt: Salt,
    #[serde(with = "wrapped_key_base64")]
    wrapped_key: [u8; WRAPPED_LEN],
}

impl KeyEnvelope {
    /// The envelope format version written by this build.
    pub const FORMAT_VERSION: u32 = 1;

    /// A new vault: random salt, random data key, wrapped under
    /// `passphrase` with `kdf` (strict policy: `kdf` must pass
    /// [`KdfParams::validate`]).
    pub fn create(
        passphrase: &str,
        kdf: KdfParams,
    ) -> Result<(KeyEnvelope, VaultKeys), CryptoError> {
        Self::create_with_policy(passphrase, kdf, KdfPolicy::strict())
    }

    /// [`create`](Self::create) under an explicit [`KdfPolicy`].
    pub fn create_with_policy(
        passphrase: &str,
        kdf: KdfParams,
        policy: KdfPolicy,
    ) -> Result<(KeyEnvelope, VaultKeys), CryptoError> {
        if passphrase.is_empty() {
            return Err(CryptoError::EmptyPassphrase);
        }
        let salt = Salt::generate()?;
        let keys = PassphraseKeys::derive_with_policy(passphrase, &kdf, &salt, policy)?;
        let data = DataKey::generate()?;
        let envelope = Self::wrap_data_key(&keys, &data)?;
        let auth = keys.into_auth_key();
        Ok((envelope, VaultKeys { data, auth }))
    }

    /// Opens the envelope with `passphrase` (strict policy for the stored
    /// parameters).
    ///
    /// Errors: [`CryptoError::WrongPassphrase`] (also for an edited salt or
    /// parameters), [`CryptoError::UnsupportedVersion`] for an envelope
    /// from a newer chatvault, [`CryptoError::WeakKdfParams`] /
    /// [`CryptoError::ExcessiveKdfParams`] for parameters outside the
    /// limits (checked before any work is done).
    pub fn unlock(&self, passphrase: &str) -> Result<VaultKeys, CryptoError> {
        self.unlock_with_policy(passphrase, KdfPolicy::strict())
    }

    /// [`unlock`](Self::unlock) under an explicit [`KdfPolicy`].
    pub fn unlock_with_policy(
        &self,
        passphrase: &str,
        policy: KdfPolicy,
    ) -> Result<VaultKeys, CryptoError> {
        check_version(self.format_version)?;
        let keys = PassphraseKeys::derive_with_policy(passphrase, &self.kdf, &self.salt, policy)?;
        let data = self.unwrap_data_key(&keys)?;
        Ok(VaultKeys {
            data,
            auth: keys.into_auth_key(),
        })
    }

    /// Opens the envelope with keys derived earlier from this envelope's
    /// salt and parameters (at login), without running Argon2id again.
    pub fn unlock_with_keys(&self, keys: &PassphraseKeys) -> Result<VaultKeys, CryptoError> {
        check_version(self.format_version)?;
        if keys.kdf() != &self.kdf || keys.salt() != &self.salt {
            return Err(CryptoError::KeysDoNotMatchEnvelope);
        }
        Ok(VaultKeys {
            data: self.unwrap_data_key(keys)?,
            auth: keys.auth_key().clone(),
        })
    }

    /// Changes the passphrase: unlocks with `old`, then wraps the *same*
    /// data key under `new` with a fresh salt and `kdf`. No record needs
    /// re-encrypting.
    ///
    /// Returns the new envelope and the keys it yields; the auth key
    /// changes (new salt), so the server must be given the new one.
    pub fn rewrap(
        &self,
        old: &str,
        new: &str,
        kdf: KdfParams,
    ) -> Result<(KeyEnvelope, VaultKeys), CryptoError> {
        self.rewrap_with_policy(old, new, kdf, KdfPolicy::strict())
    }

    /// [`rewrap`](Self::rewrap) under an explicit [`KdfPolicy`] (applied to
    /// both the old and the new parameters).
    pub fn rewrap_with_policy(
        &self,
        old: &str,
        new: &str,
        kdf: KdfParams,
        policy: KdfPolicy,
    ) -> Result<(KeyEnvelope, VaultKeys), CryptoError> {
        if new.is_empty() {
            return Err(CryptoError::EmptyPassphrase);
        }
        // Refuse bad new parameters before the slow unlock.
        kdf.validate_with_policy(policy)?;
        let VaultKeys { data, auth: _ } = self.unlock_with_policy(old, policy)?;
        let salt = Salt::generate()?;
        let keys = PassphraseKeys::derive_with_policy(new, &kdf, &salt, policy)?;
        let envelope = Self::wrap_data_key(&keys, &data)?;
        Ok((
            envelope,
            VaultKeys {
                data,
                auth: keys.into_auth_key(),
            },
        ))
    }

    /// The envelope as compact JSON (layout in the module docs).
    ///
    /// Written by hand rather than through `serde_json::to_string` so it is
    /// infallible; a test pins it to the serde form.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"formatVersion":{},"kdf":{{"mCostKib":{},"tCost":{},"pCost":{}}},"salt":"{}","wrappedKey":"{}"}}"#,
            self.format_version,
            self.kdf.m_cost_kib,
            self.kdf.t_cost,
            self.kdf.p_cost,
            self.salt.to_base64(),
            BASE64.encode(self.wrapped_key),
        )
    }

    /// Parses [`to_json`](Self::to_json) output. The format version is read
    /// first, so an envelope from a newer chatvault reports
    /// [`CryptoError::UnsupportedVersion`] even if its other fields changed
    /// shape; anything malformed is [`CryptoError::Corrupt`].
    pub fn from_json(json: &str) -> Result<KeyEnvelope, CryptoError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct VersionProbe {
            format_version: u32,
        }
        let probe: VersionProbe = serde_json::from_str(json)
            .map_err(|err| CryptoError::corrupt(format!("key envelope: {err}")))?;
        check_version(probe.format_version)?;
        serde_json::from_str(json)
            .map_err(|err| CryptoError::corrupt(format!("key envelope: {err}")))
    }

    /// The envelope format version.
    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// The Argon2id parameters the passphrase is stretched with.
    pub fn kdf(&self) -> &KdfParams {
        &self.kdf
    }

    /// The vault's public salt (what the server hands out at prelogin).
    pub fn salt(&self) -> &Salt {
        &self.salt
    }

    fn wrap_data_key(keys: &PassphraseKeys, data: &DataKey) -> Result<KeyEnvelope, CryptoError> {
        let nonce: [u8; NONCE_LEN] = random_array()?;
        let aad = associated_data(Self::FORMAT_VERSION, keys.kdf(), keys.salt());
        let mut buf = Zeroizing::new(Vec::with_capacity(WRAPPED_LEN));
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(data.as_bytes());
        aead::seal_in_place(&aead::cipher(keys.kek()), &nonce, &aad, &mut buf, NONCE_LEN)?;
        let wrapped_key: [u8; WRAPPED_LEN] = buf
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::corrupt("wrapped key has the wrong length"))?;
        Ok(KeyEnvelope {
            format_version: Self::FORMAT_VERSION,
            kdf: *keys.kdf(),
            salt: *keys.salt(),
            wrapped_key,
        })
    }

    fn unwrap_data_key(&self, keys: &PassphraseKeys) -> Result<DataKey, CryptoError> {
        let (nonce, sealed) = self.wrapped_key.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let aad = associated_data(self.format_version, &self.kdf, &self.salt);
        let mut buf = Zeroizing::new(sealed.to_vec());
        aead::open_in_place(&aead::cipher(keys.kek()), &nonce_bytes, &aad, &mut buf)
            .map_err(|()| CryptoError::WrongPassphrase)?;
        let key: &[u8; KEY_LEN] = buf
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::corrupt("unwrapped data key has the wrong length"))?;
        Ok(DataKey::from_secret(key))
    }
}

impl fmt::Debug for KeyEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEnvelope")
            .field("format_version", &self.format_version)
            .field("kdf", &self.kdf)
            .field("salt", &self.salt)
            .field("wrapped_key", &BASE64.encode(self.wrapped_key))
            .finish()
    }
}

fn check_version(found: u32) -> Result<(), CryptoError> {
    match found {
        KeyEnvelope::FORMAT_VERSION => Ok(()),
        0 => Err(CryptoError::corrupt(
            "key envelope version 0 does not exist",
        )),
        _ => Err(CryptoError::UnsupportedVersion {
            found,
            newest: KeyEnvelope::FORMAT_VERSION,
        }),
    }
}

fn associated_data(format_version: u32, kdf: &KdfParams, salt: &Salt) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 16 + Salt::LEN);
    aad.extend_from_slice(AAD_DOMAIN);
    for field in [format_version, kdf.m_cost_kib, kdf.t_cost, kdf.p_cost] {
        aad.extend_from_slice(&field.to_be_bytes());
    }
    aad.extend_from_slice(salt.as_bytes());
    aad
}

/// `wrappedKey` as standard base64 of exactly 72 bytes.
mod wrapped_key_base64 {
    use super::{BASE64, WRAPPED_LEN};
    use base64::Engine as _;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &[u8; WRAPPED_LEN],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; WRAPPED_LEN], D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = BASE64
            .decode(text)
            .map_err(|_| de::Error::custom("wrappedKey is not valid base64"))?;
        bytes
            .try_into()
            .map_err(|_| de::Error::custom("wrappedKey must be 72 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_binds_every_header_field() {
        let kdf = KdfParams::default();
        let salt = Salt::from_bytes([5; 16]);
        let base = associated_data(1, &kdf, &salt);
        assert!(base.starts_with(b"chatvault/key-envelope/v1"));
        assert_eq!(base.len(), 25 + 16 + 16);
        let mut other = kdf;
        other.t_cost += 1;
        assert_ne!(base, associated_data(1, &other, &salt));
        assert_ne!(base, associated_data(2, &kdf, &salt));
        assert_ne!(base, associated_data(1, &kdf, &Salt::from_bytes([6; 16])));
    }

    #[test]
    fn to_json_matches_the_serde_form() {
        let envelope = KeyEnvelope {
            format_version: 1,
            kdf: KdfParams::default(),
            salt: Salt::from_bytes([5; 16]),
            wrapped_key: [7; WRAPPED_LEN],
        };
        let json = envelope.to_json();
        assert_eq!(json, serde_json::to_string(&envelope).unwrap());
        assert_eq!(KeyEnvelope::from_json(&json), Ok(envelope));
    }

    #[test]
    fn version_check() {
        assert_eq!(check_version(1), Ok(()));
        assert_eq!(
            check_version(9),
            Err(CryptoError::UnsupportedVersion {
                found: 9,
                newest: 1
            })
        );
        assert!(matches!(check_version(0), Err(CryptoError::Corrupt { .. })));
    }
}
