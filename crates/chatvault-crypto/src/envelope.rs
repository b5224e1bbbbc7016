//! The key envelope: a vault's keyring wrapped under its passphrase, stored
//! next to the vault (and on the sync server) as JSON.
//!
//! Format version 2 (written by this build):
//!
//! ```json
//! {"formatVersion":2,
//!  "vaultId":"<base64, 16 bytes>",
//!  "generation":3,
//!  "kdf":{"mCostKib":19456,"tCost":2,"pCost":1},
//!  "salt":"<base64, 16 bytes>",
//!  "keyIds":[1,2],
//!  "wrappedKeys":"<base64: nonce (24) || encrypted keys (32 each, in keyIds order) || tag (16)>"}
//! ```
//!
//! The keys are sealed together with XChaCha20-Poly1305 under the
//! key-encryption key derived from the passphrase (see `kdf`), with
//! associated data
//!
//! ```text
//! "chatvault/key-envelope/v2" || formatVersion (u32 BE)
//!   || mCostKib (u32 BE) || tCost (u32 BE) || pCost (u32 BE) || salt (16)
//!   || vaultId (16) || generation (u64 BE) || count (u32 BE) || each key id (u32 BE)
//! ```
//!
//! so every clear field is authenticated: an edited header cannot be told
//! apart from a wrong passphrase (the KEK itself depends on the salt and
//! parameters) and reports [`CryptoError::WrongPassphrase`]. The newest key
//! id seals new records. `generation` grows by one with every passphrase
//! change or rotation, so a device can refuse to go back to an older
//! envelope.
//!
//! Format version 1 (still read; rewritten as version 2 on the next
//! passphrase change or rotation) holds one key, `wrappedKey` (72 bytes),
//! with associated data `"chatvault/key-envelope/v1" || formatVersion ||
//! mCostKib || tCost || pCost || salt`; its key is key 1, its generation 0,
//! and its vault id is derived from that key.
//!
//! Owns: [`KeyEnvelope`] — create, unlock, rewrap, rotate, JSON form.
//! Must never: run Argon2 with unvalidated header parameters, return keys
//! whose tag did not verify, or drop or change a key of the keyring on
//! rewrap or rotation (records sealed by it would become unreadable).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::kdf::{KdfParams, KdfPolicy, PassphraseKeys, Salt, KEY_LEN};
use crate::keyring::{KeyId, Keyring, VaultId};
use crate::keys::{DataKey, VaultKeys};
use crate::random::random_array;
use crate::CryptoError;

const AAD_DOMAIN_V1: &[u8] = b"chatvault/key-envelope/v1";
const AAD_DOMAIN_V2: &[u8] = b"chatvault/key-envelope/v2";

/// A vault's keyring, wrapped under its passphrase. Safe to store and send
/// anywhere: it holds only ciphertext and public parameters.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEnvelope {
    format_version: u32,
    /// `None` in a format 1 envelope (derived from key 1 when unlocked).
    vault_id: Option<VaultId>,
    generation: u64,
    kdf: KdfParams,
    salt: Salt,
    /// Ascending, never empty; `[1]` in a format 1 envelope.
    key_ids: Vec<KeyId>,
    /// `nonce || sealed keys || tag`.
    wrapped: Vec<u8>,
}

impl KeyEnvelope {
    /// The envelope format version written by this build.
    pub const FORMAT_VERSION: u32 = 2;

    /// A new vault: random salt, random vault id, one random data key
    /// (key 1), wrapped under `passphrase` with `kdf` (strict policy:
    /// `kdf` must pass [`KdfParams::validate`]).
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
        let keyring = Keyring::generate()?;
        let envelope = Self::wrap_keyring(&keys, &keyring, 1)?;
        let auth = keys.into_auth_key();
        Ok((envelope, VaultKeys { keyring, auth }))
    }

    /// Opens the envelope with `passphrase` (strict policy for the stored
    /// parameters).
    ///
    /// Errors: [`CryptoError::WrongPassphrase`] (also for an edited salt,
    /// parameters, vault id, generation or key ids),
    /// [`CryptoError::UnsupportedVersion`] for an envelope from a newer
    /// chatvault, [`CryptoError::WeakKdfParams`] /
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
        let keyring = self.unwrap_keyring(&keys)?;
        Ok(VaultKeys {
            keyring,
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
            keyring: self.unwrap_keyring(keys)?,
            auth: keys.auth_key().clone(),
        })
    }

    /// Changes the passphrase: unlocks with `old`, then wraps the *same*
    /// keyring under `new` with a fresh salt and `kdf`, one generation
    /// later. No record needs re-encrypting — and an old copy of the
    /// envelope still opens with the old passphrase (see
    /// [`rotate`](Self::rotate)).
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
        self.rewrite(old, new, kdf, policy, Ok)
    }

    /// Rotates the data key: unlocks with `old`, adds a fresh random key
    /// (the next key id) that seals every record written from now on, and
    /// wraps the whole keyring under `new` (which may equal `old`) with a
    /// fresh salt and `kdf`, one generation later. Records sealed by older
    /// keys still open; an old copy of the envelope (with whatever
    /// passphrase it had) cannot open anything sealed by the new key.
    pub fn rotate(
        &self,
        old: &str,
        new: &str,
        kdf: KdfParams,
    ) -> Result<(KeyEnvelope, VaultKeys), CryptoError> {
        self.rotate_with_policy(old, new, kdf, KdfPolicy::strict())
    }

    /// [`rotate`](Self::rotate) under an explicit [`KdfPolicy`].
    pub fn rotate_with_policy(
        &self,
        old: &str,
        new: &str,
        kdf: KdfParams,
        policy: KdfPolicy,
    ) -> Result<(KeyEnvelope, VaultKeys), CryptoError> {
        self.rewrite(old, new, kdf, policy, |keyring| keyring.rotated())
    }

    fn rewrite(
        &self,
        old: &str,
        new: &str,
        kdf: KdfParams,
        policy: KdfPolicy,
        change: impl FnOnce(Keyring) -> Result<Keyring, CryptoError>,
    ) -> Result<(KeyEnvelope, VaultKeys), CryptoError> {
        if new.is_empty() {
            return Err(CryptoError::EmptyPassphrase);
        }
        // Refuse bad new parameters before the slow unlock.
        kdf.validate_with_policy(policy)?;
        let VaultKeys { keyring, auth: _ } = self.unlock_with_policy(old, policy)?;
        let keyring = change(keyring)?;
        let generation = self
            .generation
            .checked_add(1)
            .ok_or_else(|| CryptoError::corrupt("key envelope generation overflows"))?;
        let salt = Salt::generate()?;
        let keys = PassphraseKeys::derive_with_policy(new, &kdf, &salt, policy)?;
        let envelope = Self::wrap_keyring(&keys, &keyring, generation)?;
        Ok((
            envelope,
            VaultKeys {
                keyring,
                auth: keys.into_auth_key(),
            },
        ))
    }

    /// The envelope as compact JSON (layout in the module docs). A format 1
    /// envelope keeps its format 1 form.
    ///
    /// Written by hand rather than through `serde_json::to_string` so it is
    /// infallible; a test pins it to what [`from_json`](Self::from_json)
    /// reads.
    pub fn to_json(&self) -> String {
        let kdf = format!(
            r#"{{"mCostKib":{},"tCost":{},"pCost":{}}}"#,
            self.kdf.m_cost_kib, self.kdf.t_cost, self.kdf.p_cost
        );
        match self.vault_id {
            None => format!(
                r#"{{"formatVersion":{},"kdf":{kdf},"salt":"{}","wrappedKey":"{}"}}"#,
                self.format_version,
                self.salt.to_base64(),
                BASE64.encode(&self.wrapped),
            ),
            Some(vault_id) => {
                let ids: Vec<String> = self.key_ids.iter().map(|id| id.to_string()).collect();
                format!(
                    r#"{{"formatVersion":{},"vaultId":"{}","generation":{},"kdf":{kdf},"salt":"{}","keyIds":[{}],"wrappedKeys":"{}"}}"#,
                    self.format_version,
                    vault_id.to_base64(),
                    self.generation,
                    self.salt.to_base64(),
                    ids.join(","),
                    BASE64.encode(&self.wrapped),
                )
            }
        }
    }

    /// Parses [`to_json`](Self::to_json) output of either format version.
    /// The format version is read first, so an envelope from a newer
    /// chatvault reports [`CryptoError::UnsupportedVersion`] even if its
    /// other fields changed shape; anything malformed is
    /// [`CryptoError::Corrupt`].
    pub fn from_json(json: &str) -> Result<KeyEnvelope, CryptoError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct VersionProbe {
            format_version: u32,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct V1 {
            kdf: KdfParams,
            salt: Salt,
            wrapped_key: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct V2 {
            vault_id: String,
            generation: u64,
            kdf: KdfParams,
            salt: Salt,
            key_ids: Vec<u32>,
            wrapped_keys: String,
        }
        let corrupt = |err: serde_json::Error| CryptoError::corrupt(format!("key envelope: {err}"));
        let probe: VersionProbe = serde_json::from_str(json).map_err(corrupt)?;
        check_version(probe.format_version)?;
        if probe.format_version == 1 {
            let v1: V1 = serde_json::from_str(json).map_err(corrupt)?;
            let wrapped = decode_wrapped(&v1.wrapped_key, "wrappedKey", 1)?;
            return Ok(KeyEnvelope {
                format_version: 1,
                vault_id: None,
                generation: 0,
                kdf: v1.kdf,
                salt: v1.salt,
                key_ids: vec![KeyId::FIRST],
                wrapped,
            });
        }
        let v2: V2 = serde_json::from_str(json).map_err(corrupt)?;
        if v2.key_ids.is_empty() || v2.key_ids.len() > Keyring::MAX_KEYS {
            return Err(CryptoError::corrupt(format!(
                "key envelope holds {} keys; 1 to {} expected",
                v2.key_ids.len(),
                Keyring::MAX_KEYS
            )));
        }
        let key_ids = v2
            .key_ids
            .iter()
            .map(|&id| KeyId::new(id))
            .collect::<Option<Vec<_>>>()
            .filter(|ids| ids.windows(2).all(|w| w[0] < w[1]))
            .ok_or_else(|| CryptoError::corrupt("keyIds must be ascending and above 0"))?;
        let wrapped = decode_wrapped(&v2.wrapped_keys, "wrappedKeys", key_ids.len())?;
        Ok(KeyEnvelope {
            format_version: probe.format_version,
            vault_id: Some(VaultId::from_base64(&v2.vault_id)?),
            generation: v2.generation,
            kdf: v2.kdf,
            salt: v2.salt,
            key_ids,
            wrapped,
        })
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

    /// How many passphrase changes and rotations led to this envelope (0
    /// for a format 1 envelope): a device never adopts a lower one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The ids of the keys it wraps, oldest first; the last seals new
    /// records.
    pub fn key_ids(&self) -> &[KeyId] {
        &self.key_ids
    }

    fn wrap_keyring(
        keys: &PassphraseKeys,
        keyring: &Keyring,
        generation: u64,
    ) -> Result<KeyEnvelope, CryptoError> {
        let nonce: [u8; NONCE_LEN] = random_array()?;
        let vault_id = *keyring.vault_id();
        let key_ids = keyring.key_ids();
        let aad = associated_data_v2(keys.kdf(), keys.salt(), &vault_id, generation, &key_ids);
        let mut buf = Zeroizing::new(Vec::with_capacity(
            NONCE_LEN + KEY_LEN * key_ids.len() + TAG_LEN,
        ));
        buf.extend_from_slice(&nonce);
        for (_, key) in keyring.keys() {
            buf.extend_from_slice(key.as_bytes());
        }
        aead::seal_in_place(&aead::cipher(keys.kek()), &nonce, &aad, &mut buf, NONCE_LEN)?;
        Ok(KeyEnvelope {
            format_version: Self::FORMAT_VERSION,
            vault_id: Some(vault_id),
            generation,
            kdf: *keys.kdf(),
            salt: *keys.salt(),
            key_ids,
            wrapped: buf.to_vec(),
        })
    }

    fn unwrap_keyring(&self, keys: &PassphraseKeys) -> Result<Keyring, CryptoError> {
        let aad = match &self.vault_id {
            None => associated_data_v1(self.format_version, &self.kdf, &self.salt),
            Some(vault_id) => associated_data_v2(
                &self.kdf,
                &self.salt,
                vault_id,
                self.generation,
                &self.key_ids,
            ),
        };
        let (nonce, sealed) = self.wrapped.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let mut buf = Zeroizing::new(sealed.to_vec());
        aead::open_in_place(&aead::cipher(keys.kek()), &nonce_bytes, &aad, &mut buf)
            .map_err(|()| CryptoError::WrongPassphrase)?;
        if buf.len() != KEY_LEN * self.key_ids.len() {
            return Err(CryptoError::corrupt("unwrapped keys have the wrong length"));
        }
        let ring: Vec<(KeyId, DataKey)> = self
            .key_ids
            .iter()
            .zip(buf.chunks_exact(KEY_LEN))
            .map(|(id, bytes)| {
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                key.copy_from_slice(bytes);
                (*id, DataKey::from_secret(&key))
            })
            .collect();
        let vault_id = match self.vault_id {
            Some(id) => id,
            None => VaultId::derived_from(&ring[0].1)?,
        };
        Ok(Keyring::from_parts(vault_id, ring))
    }
}

impl fmt::Debug for KeyEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEnvelope")
            .field("format_version", &self.format_version)
            .field("vault_id", &self.vault_id)
            .field("generation", &self.generation)
            .field("kdf", &self.kdf)
            .field("salt", &self.salt)
            .field("key_ids", &self.key_ids)
            .field("wrapped", &BASE64.encode(&self.wrapped))
            .finish()
    }
}

fn check_version(found: u32) -> Result<(), CryptoError> {
    match found {
        1 | KeyEnvelope::FORMAT_VERSION => Ok(()),
        0 => Err(CryptoError::corrupt(
            "key envelope version 0 does not exist",
        )),
        _ => Err(CryptoError::UnsupportedVersion {
            found,
            newest: KeyEnvelope::FORMAT_VERSION,
        }),
    }
}

/// Base64 of `nonce || keys × 32 || tag`, checked for length.
fn decode_wrapped(text: &str, field: &str, keys: usize) -> Result<Vec<u8>, CryptoError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|_| CryptoError::corrupt(format!("{field} is not valid base64")))?;
    let expected = NONCE_LEN + KEY_LEN * keys + TAG_LEN;
    if bytes.len() != expected {
        return Err(CryptoError::corrupt(format!(
            "{field} must be {expected} bytes"
        )));
    }
    Ok(bytes)
}

fn associated_data_v1(format_version: u32, kdf: &KdfParams, salt: &Salt) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN_V1.len() + 16 + Salt::LEN);
    aad.extend_from_slice(AAD_DOMAIN_V1);
    for field in [format_version, kdf.m_cost_kib, kdf.t_cost, kdf.p_cost] {
        aad.extend_from_slice(&field.to_be_bytes());
    }
    aad.extend_from_slice(salt.as_bytes());
    aad
}

fn associated_data_v2(
    kdf: &KdfParams,
    salt: &Salt,
    vault_id: &VaultId,
    generation: u64,
    key_ids: &[KeyId],
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN_V2.len() + 48 + 12 + 4 * key_ids.len());
    aad.extend_from_slice(AAD_DOMAIN_V2);
    for field in [
        KeyEnvelope::FORMAT_VERSION,
        kdf.m_cost_kib,
        kdf.t_cost,
        kdf.p_cost,
    ] {
        aad.extend_from_slice(&field.to_be_bytes());
    }
    aad.extend_from_slice(salt.as_bytes());
    aad.extend_from_slice(vault_id.as_bytes());
    aad.extend_from_slice(&generation.to_be_bytes());
    // At most MAX_KEYS ids (checked on parse), so the count fits a u32.
    aad.extend_from_slice(&(key_ids.len() as u32).to_be_bytes());
    for id in key_ids {
        aad.extend_from_slice(&id.get().to_be_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRAPPED_V1_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

    fn fast() -> (KdfParams, KdfPolicy) {
        (
            KdfParams::insecure_fast_for_tests(),
            KdfPolicy::insecure_allow_weak_for_tests(),
        )
    }

    #[test]
    fn v1_associated_data_binds_every_header_field() {
        let kdf = KdfParams::default();
        let salt = Salt::from_bytes([5; 16]);
        let base = associated_data_v1(1, &kdf, &salt);
        assert!(base.starts_with(b"chatvault/key-envelope/v1"));
        assert_eq!(base.len(), 25 + 16 + 16);
        let mut other = kdf;
        other.t_cost += 1;
        assert_ne!(base, associated_data_v1(1, &other, &salt));
        assert_ne!(base, associated_data_v1(2, &kdf, &salt));
        assert_ne!(
            base,
            associated_data_v1(1, &kdf, &Salt::from_bytes([6; 16]))
        );
    }

    #[test]
    fn v2_associated_data_binds_every_header_field() {
        let kdf = KdfParams::default();
        let salt = Salt::from_bytes([5; 16]);
        let vault = VaultId::from_bytes([1; 16]);
        let ids = [KeyId::FIRST, KeyId::new(2).unwrap()];
        let base = associated_data_v2(&kdf, &salt, &vault, 3, &ids);
        assert!(base.starts_with(b"chatvault/key-envelope/v2"));
        assert_ne!(base, associated_data_v2(&kdf, &salt, &vault, 4, &ids));
        assert_ne!(
            base,
            associated_data_v2(&kdf, &salt, &VaultId::from_bytes([2; 16]), 3, &ids)
        );
        assert_ne!(base, associated_data_v2(&kdf, &salt, &vault, 3, &ids[..1]));
        assert_ne!(
            base,
            associated_data_v2(&kdf, &Salt::from_bytes([6; 16]), &vault, 3, &ids)
        );
    }

    #[test]
    fn to_json_round_trips_in_both_formats() {
        let (kdf, policy) = fast();
        let (envelope, _) = KeyEnvelope::create_with_policy("pw", kdf, policy).unwrap();
        let (rotated, _) = envelope
            .rotate_with_policy("pw", "pw", kdf, policy)
            .unwrap();
        for envelope in [envelope, rotated] {
            let json = envelope.to_json();
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["formatVersion"], 2);
            assert_eq!(KeyEnvelope::from_json(&json), Ok(envelope));
        }
        let v1 = KeyEnvelope {
            format_version: 1,
            vault_id: None,
            generation: 0,
            kdf: KdfParams::default(),
            salt: Salt::from_bytes([5; 16]),
            key_ids: vec![KeyId::FIRST],
            wrapped: vec![7; WRAPPED_V1_LEN],
        };
        let json = v1.to_json();
        assert!(json.contains(r#""wrappedKey":"#), "{json}");
        assert_eq!(KeyEnvelope::from_json(&json), Ok(v1));
    }

    #[test]
    fn version_check() {
        assert_eq!(check_version(1), Ok(()));
        assert_eq!(check_version(2), Ok(()));
        assert_eq!(
            check_version(9),
            Err(CryptoError::UnsupportedVersion {
                found: 9,
                newest: 2
            })
        );
        assert!(matches!(check_version(0), Err(CryptoError::Corrupt { .. })));
    }
}
