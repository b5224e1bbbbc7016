//! Record encryption: one AEAD blob per stored body, bound to the record it
//! belongs to, sealed by a [`Keyring`](crate::Keyring) key.
//!
//! Blob layout, format version 2 (written by this build):
//!
//! ```text
//! 0x02 || key id (u32 BE) || nonce (24 random bytes) || ciphertext || tag (16 bytes)
//! ```
//!
//! Associated data, never stored — rebuilt from the record by the reader:
//!
//! ```text
//! "chatvault/record" || 0x02 || vault id (16 bytes) || key id (u32 BE)
//!   || lp(kind) || lp(id) || lp(conversation) || lp(version)
//! ```
//!
//! where `lp(x)` is `len(x) (u64 BE) || x (UTF-8)`. The vault id names the
//! account (the same on every device that shares the keyring), the
//! conversation is the message's parent (empty for a conversation) and the
//! version is the record's version stamp in its canonical text form. So a
//! body moved onto another record, into another conversation, onto another
//! version of the same record (a re-dated or rolled-back row) or into
//! another account's vault fails to open.
//!
//! Format version 1 (still read, never written):
//! `0x01 || nonce (24) || ciphertext || tag`, sealed by the keyring's key 1,
//! with associated data `"chatvault/record" || 0x01 || lp(kind) || lp(id)`
//! only — it binds neither the conversation nor the version, which is why
//! rewriting a record re-seals it in format 2.
//!
//! Owns: [`RecordAad`] and the two blob formats.
//! Must never: reuse a nonce (each seal draws 24 fresh random bytes) or
//! return plaintext from a blob whose tag did not verify.

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::keyring::{KeyId, VaultId};
use crate::keys::DataKey;
use crate::CryptoError;

/// The legacy record format: binds kind and id only.
pub(crate) const FORMAT_V1: u8 = 1;
/// The record format written by this build.
pub(crate) const FORMAT_V2: u8 = 2;
const AAD_DOMAIN: &[u8] = b"chatvault/record";
const V1_HEADER_LEN: usize = 1 + NONCE_LEN;
/// Version byte, key id, nonce.
pub(crate) const V2_HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// Which record a blob belongs to; authenticated, not stored in the blob.
///
/// `kind` names the record type (e.g. `"conversation"`, `"message"`), `id`
/// the record's id as text, `conversation` a message's conversation id
/// (empty for records that have none) and `version` the record's version
/// stamp as text. Build one with [`RecordAad::new`] and the `with_*`
/// methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordAad<'a> {
    /// Record type, e.g. `"message"`.
    pub kind: &'a str,
    /// Record id, e.g. a UUIDv7 in its hyphenated form.
    pub id: &'a str,
    /// The conversation a message belongs to; empty for other records.
    pub conversation: &'a str,
    /// The record's version stamp, in its canonical text form.
    pub version: &'a str,
}

impl<'a> RecordAad<'a> {
    /// A record of `kind` with `id`, no conversation and no version.
    pub fn new(kind: &'a str, id: &'a str) -> RecordAad<'a> {
        RecordAad {
            kind,
            id,
            conversation: "",
            version: "",
        }
    }

    /// The same record, inside `conversation`.
    pub fn with_conversation(self, conversation: &'a str) -> RecordAad<'a> {
        RecordAad {
            conversation,
            ..self
        }
    }

    /// The same record, at version stamp `version`.
    pub fn with_version(self, version: &'a str) -> RecordAad<'a> {
        RecordAad { version, ..self }
    }

    /// Associated data of a format 1 blob (kind and id only).
    pub(crate) fn encode_v1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(AAD_DOMAIN.len() + 17 + self.kind.len() + self.id.len());
        out.extend_from_slice(AAD_DOMAIN);
        out.push(FORMAT_V1);
        push_lp(&mut out, self.kind);
        push_lp(&mut out, self.id);
        out
    }

    /// Associated data of a format 2 blob (layout in the module docs).
    pub(crate) fn encode_v2(&self, vault: &VaultId, key: KeyId) -> Vec<u8> {
        let fields = [self.kind, self.id, self.conversation, self.version];
        let text: usize = fields.iter().map(|f| f.len() + 8).sum();
        let mut out = Vec::with_capacity(AAD_DOMAIN.len() + 1 + VaultId::LEN + 4 + text);
        out.extend_from_slice(AAD_DOMAIN);
        out.push(FORMAT_V2);
        out.extend_from_slice(vault.as_bytes());
        out.extend_from_slice(&key.get().to_be_bytes());
        for field in fields {
            push_lp(&mut out, field);
        }
        out
    }
}

fn push_lp(out: &mut Vec<u8>, field: &str) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field.as_bytes());
}

/// What a blob says about itself before anything is decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlobHeader {
    /// Format 1: sealed by key 1.
    V1,
    /// Format 2, sealed by this key.
    V2(KeyId),
}

/// Reads the version byte (and key id), refusing unknown versions and
/// blobs too short to hold a tag.
pub(crate) fn parse_header(blob: &[u8]) -> Result<BlobHeader, CryptoError> {
    let Some(&version) = blob.first() else {
        return Err(CryptoError::Truncated);
    };
    match version {
        FORMAT_V1 if blob.len() < V1_HEADER_LEN + TAG_LEN => Err(CryptoError::Truncated),
        FORMAT_V1 => Ok(BlobHeader::V1),
        FORMAT_V2 if blob.len() < V2_HEADER_LEN + TAG_LEN => Err(CryptoError::Truncated),
        FORMAT_V2 => {
            let mut id = [0u8; 4];
            id.copy_from_slice(&blob[1..5]);
            KeyId::new(u32::from_be_bytes(id))
                .map(BlobHeader::V2)
                .ok_or_else(|| CryptoError::corrupt("record blob names key id 0"))
        }
        0 => Err(CryptoError::corrupt("record blob version 0 does not exist")),
        newer => Err(CryptoError::UnsupportedVersion {
            found: u32::from(newer),
            newest: u32::from(FORMAT_V2),
        }),
    }
}

impl DataKey {
    /// Seals `plaintext` in format 2 as key `key_id` of vault `vault`.
    pub(crate) fn seal_v2(
        &self,
        vault: &VaultId,
        key_id: KeyId,
        aad: &RecordAad<'_>,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut blob = Vec::with_capacity(V2_HEADER_LEN + TAG_LEN + plaintext.len());
        blob.push(FORMAT_V2);
        blob.extend_from_slice(&key_id.get().to_be_bytes());
        blob.extend_from_slice(nonce);
        blob.extend_from_slice(plaintext);
        aead::seal_in_place(
            &aead::cipher(self.as_bytes()),
            nonce,
            &aad.encode_v2(vault, key_id),
            &mut blob,
            V2_HEADER_LEN,
        )?;
        Ok(blob)
    }

    /// Opens a blob whose header [`parse_header`] already checked.
    pub(crate) fn open_parsed(
        &self,
        vault: &VaultId,
        header: BlobHeader,
        aad: &RecordAad<'_>,
        blob: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let (header_len, aad_bytes) = match header {
            BlobHeader::V1 => (V1_HEADER_LEN, aad.encode_v1()),
            BlobHeader::V2(key_id) => (V2_HEADER_LEN, aad.encode_v2(vault, key_id)),
        };
        let (head, sealed) = blob.split_at(header_len);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&head[header_len - NONCE_LEN..]);
        let mut buf = sealed.to_vec();
        aead::open_in_place(&aead::cipher(self.as_bytes()), &nonce, &aad_bytes, &mut buf)
            .map_err(|()| CryptoError::Tampered)?;
        Ok(buf)
    }

    /// Seals in the legacy format 1, for known-answer tests of the reader.
    #[cfg(test)]
    pub(crate) fn seal_v1_for_tests(
        &self,
        aad: &RecordAad<'_>,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut blob = vec![FORMAT_V1];
        blob.extend_from_slice(nonce);
        blob.extend_from_slice(plaintext);
        aead::seal_in_place(
            &aead::cipher(self.as_bytes()),
            nonce,
            &aad.encode_v1(),
            &mut blob,
            V1_HEADER_LEN,
        )
        .unwrap();
        blob
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x42; 32];

    #[test]
    fn v1_aad_encoding_is_length_prefixed() {
        let aad = RecordAad::new("message", "id-1").encode_v1();
        let mut expected = b"chatvault/record\x01".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend_from_slice(b"message");
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4]);
        expected.extend_from_slice(b"id-1");
        assert_eq!(aad, expected);
        assert_ne!(
            RecordAad::new("a", "bc").encode_v1(),
            RecordAad::new("ab", "c").encode_v1()
        );
    }

    #[test]
    fn v2_aad_binds_every_field_unambiguously() {
        let vault = VaultId::from_bytes([9; 16]);
        let k1 = KeyId::new(1).unwrap();
        let base = RecordAad::new("message", "m")
            .with_conversation("c")
            .with_version("v");
        let encoded = base.encode_v2(&vault, k1);
        let mut expected = b"chatvault/record\x02".to_vec();
        expected.extend_from_slice(&[9; 16]);
        expected.extend_from_slice(&[0, 0, 0, 1]);
        for field in ["message", "m", "c", "v"] {
            expected.extend_from_slice(&(field.len() as u64).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        assert_eq!(encoded, expected);
        let variants = [
            base.with_conversation("d"),
            base.with_version("w"),
            base.with_conversation("").with_version("cv"),
            RecordAad::new("message", "mc").with_version("v"),
        ];
        for other in variants {
            assert_ne!(other.encode_v2(&vault, k1), encoded, "{other:?}");
        }
        assert_ne!(base.encode_v2(&VaultId::from_bytes([8; 16]), k1), encoded);
        assert_ne!(base.encode_v2(&vault, KeyId::new(2).unwrap()), encoded);
    }

    /// Byte-exact: guards the v1 layout the reader still accepts. Expected
    /// bytes were produced once by the format 1 writer; the AEAD itself is
    /// pinned by the published vector in tests/vectors.rs.
    #[test]
    fn v1_seal_with_fixed_nonce_is_stable() {
        let key = DataKey::from_secret(&KEY);
        let blob = key.seal_v1_for_tests(&RecordAad::new("message", "id-1"), &[0x24; 24], b"hello");
        assert_eq!(blob[0], 1);
        assert_eq!(&blob[1..25], &[0x24; 24]);
        assert_eq!(hex::encode(&blob[25..]), SEALED_HELLO_HEX);
    }

    /// ciphertext || tag of "hello" under key 0x42.., nonce 0x24..,
    /// kind "message", id "id-1", format 1.
    const SEALED_HELLO_HEX: &str = "cd3bbb09011ac833a0a9b8aabdafe86ea7a8297136";

    #[test]
    fn version_zero_is_corrupt_and_newer_is_unsupported() {
        let mut blob = vec![0u8; 64];
        assert!(matches!(
            parse_header(&blob),
            Err(CryptoError::Corrupt { .. })
        ));
        blob[0] = 3;
        assert_eq!(
            parse_header(&blob),
            Err(CryptoError::UnsupportedVersion {
                found: 3,
                newest: 2
            })
        );
        blob[0] = 2;
        assert!(matches!(
            parse_header(&blob),
            Err(CryptoError::Corrupt { .. })
        ));
    }
}
