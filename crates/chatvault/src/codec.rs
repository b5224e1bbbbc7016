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
//! sealed with the vault's data key (XChaCha20-Poly1305, fresh random nonce
//! per write), with the record kind and id bound as associated data, so a
//! ciphertext copied onto another record fails to open. The sealed blob
//! starts with its own format version byte.

use crate::{Result, VaultError};
use chatvault_core::{Body, EntityKind, Metadata, RecordId, Role};
use chatvault_crypto::{DataKey, RecordAad};
use serde::{Deserialize, Serialize};

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
    /// JSON sealed with the data key (zeroized when the vault is dropped).
    Sealed(DataKey),
}

impl Codec {
    pub(crate) fn is_encrypted(&self) -> bool {
        !matches!(self, Codec::Plain)
    }

    pub(crate) fn encode<T: Payload>(
        &self,
        kind: EntityKind,
        id: RecordId,
        value: &T,
    ) -> Result<Body> {
        let bytes = value
            .to_bytes()
            .map_err(|reason| VaultError::CorruptRecord {
                kind,
                id,
                reason: format!("cannot serialize: {reason}"),
            })?;
        match self {
            Codec::Plain => Ok(Body(bytes)),
            Codec::Sealed(data) => {
                let id_text = id.to_string();
                let sealed = data.seal(&RecordAad::new(kind.as_str(), &id_text), &bytes)?;
                Ok(Body(sealed))
            }
        }
    }

    pub(crate) fn decode<T: Payload>(
        &self,
        kind: EntityKind,
        id: RecordId,
        body: &Body,
    ) -> Result<T> {
        let corrupt = |reason: String| VaultError::CorruptRecord { kind, id, reason };
        let bytes = match self {
            Codec::Plain => body.as_bytes().to_vec(),
            Codec::Sealed(data) => {
                let id_text = id.to_string();
                data.open(&RecordAad::new(kind.as_str(), &id_text), body.as_bytes())
                    .map_err(|e| corrupt(e.to_string()))?
            }
        };
        T::from_bytes(bytes).map_err(corrupt)
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
