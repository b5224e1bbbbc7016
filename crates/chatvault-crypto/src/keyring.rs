//! The keyring: every data key a vault has had, by key id, and the vault
//! (account) identity its records are bound to.
//!
//! A vault starts with key 1. A rotation adds a key with the next id; the
//! newest key seals every new write, and each blob names the key that
//! sealed it, so records sealed before a rotation still open. Keys are
//! never removed: a record on another device or on the server may still
//! name any of them.
//!
//! Owns: [`Keyring`], [`KeyId`], [`VaultId`]; choosing the key that seals
//! and the key that opens a blob.
//! Must never: seal with anything but the newest key, open a blob with a
//! key other than the one it names, or lose a key on rotation.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::aead::TAG_LEN;
use crate::keys::DataKey;
use crate::random::random_array;
use crate::record::{parse_header, BlobHeader, RecordAad, V2_HEADER_LEN};
use crate::CryptoError;

/// The number of a data key in a vault's keyring; the first key is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(u32);

impl KeyId {
    /// The key every vault starts with (and the one format 1 blobs used).
    pub const FIRST: KeyId = KeyId(1);

    /// `None` for 0, which no key has.
    pub fn new(id: u32) -> Option<KeyId> {
        (id != 0).then_some(KeyId(id))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }

    fn next(self) -> Result<KeyId, CryptoError> {
        self.0
            .checked_add(1)
            .map(KeyId)
            .ok_or(CryptoError::KeyringFull)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A vault's (and its sync account's) identity, bound into every record's
/// associated data so a ciphertext cannot be carried into another vault
/// that happens to share a key. The same on every device of an account:
/// it lives in the key envelope, not with the device.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VaultId([u8; VaultId::LEN]);

impl VaultId {
    /// Length in bytes.
    pub const LEN: usize = 16;

    pub(crate) fn generate() -> Result<VaultId, CryptoError> {
        Ok(VaultId(random_array()?))
    }

    /// Wraps existing bytes.
    pub fn from_bytes(bytes: [u8; VaultId::LEN]) -> VaultId {
        VaultId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; VaultId::LEN] {
        &self.0
    }

    /// Standard base64, as in the envelope JSON.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    pub(crate) fn from_base64(text: &str) -> Result<VaultId, CryptoError> {
        let bytes = BASE64
            .decode(text)
            .map_err(|_| CryptoError::corrupt("vaultId is not valid base64"))?;
        bytes
            .try_into()
            .map(VaultId)
            .map_err(|_| CryptoError::corrupt("vaultId must be 16 bytes"))
    }

    /// The identity of a vault whose envelope predates vault ids (format
    /// 1): derived from its first data key, so every device holding that
    /// key derives the same one, and upgrading the envelope keeps it.
    pub(crate) fn derived_from(first: &DataKey) -> Result<VaultId, CryptoError> {
        let hkdf = Hkdf::<Sha256>::new(None, first.as_bytes());
        let mut id = [0u8; VaultId::LEN];
        hkdf.expand(b"chatvault v2 legacy vault-id", &mut id)
            .map_err(|err| CryptoError::KeyDerivation {
                detail: err.to_string(),
            })?;
        Ok(VaultId(id))
    }
}

impl fmt::Debug for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultId({})", self.to_base64())
    }
}

/// Every data key of a vault, oldest first, and the vault's identity.
/// Seals with the newest key; opens with whichever key a blob names.
/// Wiped on drop (through its [`DataKey`]s); deliberately not `Clone`.
pub struct Keyring {
    vault: VaultId,
    /// Ascending by id, never empty; the last is the current key.
    keys: Vec<(KeyId, DataKey)>,
}

impl Keyring {
    /// Bytes a sealed blob adds to its plaintext: version, key id, nonce
    /// and tag.
    pub const SEAL_OVERHEAD: usize = V2_HEADER_LEN + TAG_LEN;
    /// Most keys a keyring holds: 255 rotations, and an envelope that
    /// still fits the sync server's 16 KiB limit (about 12.5 KiB of JSON).
    pub const MAX_KEYS: usize = 256;

    /// A keyring with one fresh random key and a fresh vault id, for a
    /// vault that is never wrapped under a passphrase (an ephemeral
    /// session). Vaults get theirs from
    /// [`KeyEnvelope::create`](crate::KeyEnvelope::create).
    pub fn generate() -> Result<Keyring, CryptoError> {
        Ok(Keyring {
            vault: VaultId::generate()?,
            keys: vec![(KeyId::FIRST, DataKey::generate()?)],
        })
    }

    /// Builds a keyring from keys in ascending id order (checked by the
    /// envelope before calling).
    pub(crate) fn from_parts(vault: VaultId, keys: Vec<(KeyId, DataKey)>) -> Keyring {
        debug_assert!(!keys.is_empty());
        debug_assert!(keys.windows(2).all(|w| w[0].0 < w[1].0));
        Keyring { vault, keys }
    }

    /// The same keys plus a fresh one with the next id, which seals from
    /// now on.
    pub(crate) fn rotated(&self) -> Result<Keyring, CryptoError> {
        if self.keys.len() >= Self::MAX_KEYS {
            return Err(CryptoError::KeyringFull);
        }
        let mut keys: Vec<(KeyId, DataKey)> = self
            .keys
            .iter()
            .map(|(id, key)| (*id, DataKey::from_secret(key.as_bytes())))
            .collect();
        keys.push((self.current_key_id().next()?, DataKey::generate()?));
        Ok(Keyring {
            vault: self.vault,
            keys,
        })
    }

    /// The vault (account) identity bound into every record.
    pub fn vault_id(&self) -> &VaultId {
        &self.vault
    }

    /// The id of the key that seals new records.
    pub fn current_key_id(&self) -> KeyId {
        self.current().0
    }

    /// Every key id, oldest first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    pub(crate) fn keys(&self) -> &[(KeyId, DataKey)] {
        &self.keys
    }

    fn current(&self) -> &(KeyId, DataKey) {
        // Never empty: every constructor puts at least one key in.
        &self.keys[self.keys.len() - 1]
    }

    fn key(&self, id: KeyId) -> Option<&DataKey> {
        self.keys
            .binary_search_by_key(&id, |(k, _)| *k)
            .ok()
            .map(|i| &self.keys[i].1)
    }

    /// Whether this keyring holds every key of `other` (same ids, same
    /// bytes) and the same vault id: what a device checks before adopting
    /// an envelope from elsewhere, so it can never lose a key its records
    /// need.
    pub fn contains(&self, other: &Keyring) -> bool {
        self.vault == other.vault
            && other.keys.iter().all(|(id, theirs)| {
                self.key(*id)
                    .is_some_and(|ours| ours.as_bytes() == theirs.as_bytes())
            })
    }

    /// Encrypts `plaintext` for the record `aad` with the current key and a
    /// fresh random nonce, in the newest blob format.
    ///
    /// Fails only if the platform random source fails or the plaintext is
    /// over 256 GiB.
    pub fn seal(&self, aad: &RecordAad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (id, key) = self.current();
        key.seal_v2(&self.vault, *id, aad, &random_array()?, plaintext)
    }

    /// Decrypts a blob made by [`seal`](Self::seal) (with this keyring or
    /// an older one of the same vault) for the same record, or a format 1
    /// blob sealed by key 1.
    ///
    /// Errors: [`CryptoError::Truncated`] if it is too short,
    /// [`CryptoError::UnsupportedVersion`] if a newer chatvault wrote it,
    /// [`CryptoError::UnknownKey`] if it names a key this keyring lacks,
    /// [`CryptoError::Tampered`] if any byte changed or it belongs to
    /// another record, conversation, version or vault.
    pub fn open(&self, aad: &RecordAad<'_>, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let header = parse_header(blob)?;
        let id = match header {
            BlobHeader::V1 => KeyId::FIRST,
            BlobHeader::V2(id) => id,
        };
        let key = self
            .key(id)
            .ok_or(CryptoError::UnknownKey { id: id.get() })?;
        key.open_parsed(&self.vault, header, aad, blob)
    }

    /// Whether `blob` is already sealed by the current key in the newest
    /// format (so a re-key can skip it). Reads only the blob's header.
    pub fn is_current(&self, blob: &[u8]) -> bool {
        matches!(parse_header(blob), Ok(BlobHeader::V2(id)) if id == self.current_key_id())
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("vault", &self.vault)
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad() -> RecordAad<'static> {
        RecordAad::new("message", "m1")
            .with_conversation("c1")
            .with_version("v1")
    }

    #[test]
    fn rotation_keeps_old_keys_and_seals_with_the_new_one() {
        let ring = Keyring::generate().unwrap();
        let old_blob = ring.seal(&aad(), b"old").unwrap();
        let rotated = ring.rotated().unwrap();
        assert_eq!(rotated.key_ids(), [KeyId(1), KeyId(2)]);
        assert_eq!(rotated.open(&aad(), &old_blob).unwrap(), b"old");
        let new_blob = rotated.seal(&aad(), b"new").unwrap();
        assert_eq!(&new_blob[1..5], &[0, 0, 0, 2]);
        assert_eq!(
            ring.open(&aad(), &new_blob),
            Err(CryptoError::UnknownKey { id: 2 })
        );
        assert!(rotated.contains(&ring));
        assert!(!ring.contains(&rotated));
        assert!(!rotated.is_current(&old_blob));
        assert!(rotated.is_current(&new_blob));
    }

    #[test]
    fn a_blob_names_its_key_and_a_forged_key_id_is_tampering() {
        let ring = Keyring::generate().unwrap().rotated().unwrap();
        let mut blob = ring.seal(&aad(), b"x").unwrap();
        blob[4] = 1; // claim key 1 sealed it
        assert_eq!(ring.open(&aad(), &blob), Err(CryptoError::Tampered));
    }

    #[test]
    fn legacy_v1_blobs_open_with_key_one_and_bind_only_kind_and_id() {
        let ring = Keyring::generate().unwrap().rotated().unwrap();
        let legacy =
            ring.keys()[0]
                .1
                .seal_v1_for_tests(&RecordAad::new("message", "m1"), &[7; 24], b"v1");
        assert_eq!(ring.open(&aad(), &legacy).unwrap(), b"v1");
        assert_eq!(
            ring.open(&RecordAad::new("message", "m2"), &legacy),
            Err(CryptoError::Tampered)
        );
        assert!(!ring.is_current(&legacy));
    }

    #[test]
    fn another_vault_with_the_same_key_cannot_open_it() {
        let ring = Keyring::generate().unwrap();
        let blob = ring.seal(&aad(), b"x").unwrap();
        let twin = Keyring::from_parts(
            VaultId::from_bytes([1; 16]),
            vec![(
                KeyId::FIRST,
                DataKey::from_secret(ring.keys()[0].1.as_bytes()),
            )],
        );
        assert_eq!(twin.open(&aad(), &blob), Err(CryptoError::Tampered));
        assert!(!twin.contains(&ring));
    }

    #[test]
    fn debug_is_redacted() {
        let ring = Keyring::generate().unwrap();
        let debug = format!("{ring:?}");
        assert!(debug.contains("key_ids: [KeyId(1)]"), "{debug}");
    }
}
