//! Turning the content fields of a record into the opaque body a store
//! keeps, and back.
//!
//! A conversation's content (title, metadata) is compact JSON carrying its
//! payload version `v`. A message's (payload version 2) is a compact JSON
//! header — `{"v":2,"role":...,"metadata":...}` — a newline, then the
//! content as raw UTF-8: no escaping pass over what is usually the bulk of
//! the bytes. Version 1 message bodies (one JSON object, content inside;
//! compact JSON never holds a raw newline, which tells the two apart) are
//! still read. In an encrypted vault the encoded payload is
//! sealed with the newest key of the vault's keyring (XChaCha20-Poly1305,
//! fresh random nonce per write), with the vault id, the record kind and
//! id, a message's conversation id and the record's version stamp bound as
//! associated data: a ciphertext copied onto another record, moved to
//! another conversation, or put back on an older or newer version of the
//! same record fails to open ([`VaultError::CorruptRecord`]). The sealed
//! blob starts with its own format version byte and key id, so records
//! sealed before a key rotation (or in the older format 1, which bound
//! only kind and id) still open; rewriting a record re-seals it in the
//! newest format with the newest key.
//!
//! Owns: [`Codec`] and the record payload formats.
//! Must never: seal anything but a pure function of (kind, id,
//! conversation, version, body) — a caller that re-stamps a record must
//! encode it again — or hand out plaintext from a blob that did not verify.

use crate::{Result, VaultError};
use chatvault_core::{Body, ConversationId, EntityKind, Hlc, Metadata, RecordId, Role};
use chatvault_crypto::{Keyring, RecordAad};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// Newest conversation payload version this build writes and reads.
pub(crate) const PAYLOAD_VERSION: u32 = 1;
/// Newest message payload version this build writes and reads.
pub(crate) const MESSAGE_PAYLOAD_VERSION: u32 = 2;

fn payload_version() -> u32 {
    PAYLOAD_VERSION
}

/// Content of a conversation record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConversationBody {
    #[serde(default = "payload_version")]
    pub v: u32,
    pub title: String,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

impl ConversationBody {
    pub(crate) fn new(title: String, metadata: Metadata) -> Self {
        Self {
            v: PAYLOAD_VERSION,
            title,
            metadata,
        }
    }
}

/// Content of a message record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MessageBody {
    pub role: Role,
    pub content: String,
    pub metadata: Metadata,
}

impl MessageBody {
    pub(crate) fn new(role: Role, content: String, metadata: Metadata) -> Self {
        Self {
            role,
            content,
            metadata,
        }
    }
}

/// The JSON part of a version 2 message payload.
#[derive(Serialize, Deserialize)]
struct MessageHeader<'a> {
    v: u32,
    role: Role,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a serde_json::value::RawValue>,
}

/// A version 1 message payload: one JSON object.
#[derive(Deserialize)]
struct MessageBodyV1 {
    #[serde(default = "payload_version")]
    v: u32,
    role: Role,
    content: String,
    #[serde(default)]
    metadata: Metadata,
}

/// How a record's content becomes payload bytes and back.
pub(crate) trait Payload: Sized {
    fn to_bytes(&self) -> std::result::Result<Vec<u8>, String>;
    fn from_bytes(bytes: Vec<u8>) -> std::result::Result<Self, String>;
}

fn newer(found: u32, newest: u32) -> String {
    format!("written by a newer chatvault (payload version {found}, newest supported {newest})")
}

impl Payload for ConversationBody {
    fn to_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        serde_json::to_vec(self).map_err(|e| e.to_string())
    }

    fn from_bytes(bytes: Vec<u8>) -> std::result::Result<Self, String> {
        let body: ConversationBody = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if body.v > PAYLOAD_VERSION {
            return Err(newer(body.v, PAYLOAD_VERSION));
        }
        Ok(body)
    }
}

impl Payload for MessageBody {
    fn to_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        let raw = if self.metadata.is_empty() {
            None
        } else {
            Some(serde_json::value::to_raw_value(&self.metadata).map_err(|e| e.to_string())?)
        };
        let header = MessageHeader {
            v: MESSAGE_PAYLOAD_VERSION,
            role: self.role,
            metadata: raw.as_deref(),
        };
        let mut out = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
        out.reserve(1 + self.content.len());
        out.push(b'\n');
        out.extend_from_slice(self.content.as_bytes());
        Ok(out)
    }

    fn from_bytes(mut bytes: Vec<u8>) -> std::result::Result<Self, String> {
        let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
            let v1: MessageBodyV1 = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if v1.v > 1 {
                return Err(newer(v1.v, MESSAGE_PAYLOAD_VERSION));
            }
            return Ok(MessageBody::new(v1.role, v1.content, v1.metadata));
        };
        let content = bytes.split_off(newline + 1);
        let header: MessageHeader<'_> =
            serde_json::from_slice(&bytes[..newline]).map_err(|e| e.to_string())?;
        if header.v > MESSAGE_PAYLOAD_VERSION {
            return Err(newer(header.v, MESSAGE_PAYLOAD_VERSION));
        }
        let metadata = match header.metadata {
            Some(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string())?,
            None => Metadata::new(),
        };
        let content =
            String::from_utf8(content).map_err(|e| format!("content is not UTF-8: {e}"))?;
        Ok(MessageBody::new(header.role, content, metadata))
    }
}

/// How bodies are protected in this vault.
pub(crate) enum Codec {
    /// Plain JSON.
    Plain,
    /// JSON sealed with the keyring's newest key. The keyring is swapped
    /// whole when a rotation or an adopted envelope adds a key (keys are
    /// zeroized when the last holder drops them).
    Sealed(RwLock<Arc<Keyring>>),
}

impl Codec {
    /// An encrypting codec over `keyring`.
    pub(crate) fn sealed(keyring: Arc<Keyring>) -> Codec {
        Codec::Sealed(RwLock::new(keyring))
    }

    pub(crate) fn is_encrypted(&self) -> bool {
        !matches!(self, Codec::Plain)
    }

    /// The keyring in use; `None` for a plaintext vault.
    pub(crate) fn keyring(&self) -> Option<Arc<Keyring>> {
        match self {
            Codec::Plain => None,
            // A poisoned lock still holds a whole keyring (it is replaced
            // in one assignment), so reading on is safe.
            Codec::Sealed(lock) => Some(lock.read().unwrap_or_else(|p| p.into_inner()).clone()),
        }
    }

    /// Seals from now on with `keyring`, which must contain the current
    /// one (checked by the caller: records need every old key).
    pub(crate) fn replace_keyring(&self, keyring: Arc<Keyring>) {
        if let Codec::Sealed(lock) = self {
            *lock.write().unwrap_or_else(|p| p.into_inner()) = keyring;
        }
    }

    /// The body of record `id` of `kind` (in `conversation`, for a
    /// message) at `version`: a pure function of these and `value`.
    pub(crate) fn encode<T: Payload>(
        &self,
        kind: EntityKind,
        id: RecordId,
        conversation: Option<ConversationId>,
        version: Hlc,
        value: &T,
    ) -> Result<Body> {
        let bytes = value
            .to_bytes()
            .map_err(|reason| VaultError::CorruptRecord {
                kind,
                id,
                reason: format!("cannot serialize: {reason}"),
            })?;
        match self.keyring() {
            None => Ok(Body(bytes)),
            Some(keyring) => {
                let texts = AadTexts::new(id, conversation, version);
                Ok(Body(keyring.seal(&texts.aad(kind), &bytes)?))
            }
        }
    }

    /// Reads a body written by [`encode`](Self::encode) for the same
    /// record header; [`VaultError::CorruptRecord`] if it does not open
    /// (damaged, or moved, re-dated or rolled back).
    pub(crate) fn decode<T: Payload>(
        &self,
        kind: EntityKind,
        id: RecordId,
        conversation: Option<ConversationId>,
        version: Hlc,
        body: &Body,
    ) -> Result<T> {
        let corrupt = |reason: String| VaultError::CorruptRecord { kind, id, reason };
        let bytes = match self.keyring() {
            None => body.as_bytes().to_vec(),
            Some(keyring) => {
                let texts = AadTexts::new(id, conversation, version);
                keyring
                    .open(&texts.aad(kind), body.as_bytes())
                    .map_err(|e| corrupt(e.to_string()))?
            }
        };
        T::from_bytes(bytes).map_err(corrupt)
    }

    /// `body`, sealed for the record at version `from`, sealed again for
    /// the same record at version `to` (the version is bound into the
    /// associated data, so a re-stamped record needs a new seal). A
    /// plaintext body is returned as it is.
    pub(crate) fn reseal(
        &self,
        kind: EntityKind,
        id: RecordId,
        conversation: Option<ConversationId>,
        (from, to): (Hlc, Hlc),
        body: &Body,
    ) -> Result<Body> {
        match self.keyring() {
            None => Ok(body.clone()),
            Some(keyring) => {
                let opened = keyring
                    .open(
                        &AadTexts::new(id, conversation, from).aad(kind),
                        body.as_bytes(),
                    )
                    .map_err(|e| VaultError::CorruptRecord {
                        kind,
                        id,
                        reason: e.to_string(),
                    })?;
                let texts = AadTexts::new(id, conversation, to);
                Ok(Body(keyring.seal(&texts.aad(kind), &opened)?))
            }
        }
    }

    /// Whether `body` is already sealed by the newest key in the newest
    /// format (always true for a plaintext vault): what a re-key skips.
    pub(crate) fn is_current(&self, body: &Body) -> bool {
        self.keyring()
            .is_none_or(|keyring| keyring.is_current(body.as_bytes()))
    }
}

/// The text forms the associated data borrows.
struct AadTexts {
    id: String,
    conversation: String,
    version: String,
}

impl AadTexts {
    fn new(id: RecordId, conversation: Option<ConversationId>, version: Hlc) -> AadTexts {
        AadTexts {
            id: id.to_string(),
            conversation: conversation.map(|c| c.to_string()).unwrap_or_default(),
            version: version.to_string(),
        }
    }

    fn aad(&self, kind: EntityKind) -> RecordAad<'_> {
        RecordAad::new(kind.as_str(), &self.id)
            .with_conversation(&self.conversation)
            .with_version(&self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_payloads_round_trip_and_version_1_still_reads() {
        let mut metadata = Metadata::new();
        metadata.insert("tokens".into(), 12.into());
        for content in [
            "",
            "plain",
            "multi\nline\n",
            "quote \" and {json}",
            "🙂 \u{0}",
        ] {
            let body = MessageBody::new(Role::Tool, content.into(), metadata.clone());
            let bytes = body.to_bytes().unwrap();
            assert_eq!(MessageBody::from_bytes(bytes).unwrap(), body);
            let bare = MessageBody::new(Role::User, content.into(), Metadata::new());
            assert_eq!(
                MessageBody::from_bytes(bare.to_bytes().unwrap()).unwrap(),
                bare
            );
        }
        let v1 = br#"{"v":1,"role":"assistant","content":"old\nstyle","metadata":{"a":1}}"#;
        let read = MessageBody::from_bytes(v1.to_vec()).unwrap();
        assert_eq!(
            (read.role, read.content.as_str()),
            (Role::Assistant, "old\nstyle")
        );
        assert_eq!(read.metadata["a"], 1);
    }

    #[test]
    fn newer_or_damaged_message_payloads_are_refused() {
        let newer = b"{\"v\":3,\"role\":\"user\"}\nhi".to_vec();
        assert!(MessageBody::from_bytes(newer)
            .unwrap_err()
            .contains("newer"));
        let newer_v1 = br#"{"v":2,"role":"user","content":"x"}"#.to_vec();
        assert!(MessageBody::from_bytes(newer_v1)
            .unwrap_err()
            .contains("newer"));
        assert!(MessageBody::from_bytes(b"{\"v\":2,\"role\":\"robot\"}\nx".to_vec()).is_err());
        assert!(MessageBody::from_bytes(b"{\"v\":2,\"role\":\"user\"}\n\xff".to_vec()).is_err());
        assert!(MessageBody::from_bytes(b"not json".to_vec()).is_err());
    }
}
