//! Turning the content fields of a record into the opaque body a store
//! keeps, and back.
//!
//! Content (title; role, content; metadata) is serialized as compact JSON
//! carrying its payload version `v`. In an encrypted vault that JSON is
//! sealed with the vault's data key (XChaCha20-Poly1305, fresh random nonce
//! per write), with the record kind and id bound as associated data, so a
//! ciphertext copied onto another record fails to open. The sealed blob
//! starts with its own format version byte.

use crate::{Result, VaultError};
use chatvault_core::{Body, EntityKind, Metadata, RecordId, Role};
use chatvault_crypto::{DataKey, RecordAad};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Newest record payload version this build writes and reads.
pub(crate) const PAYLOAD_VERSION: u32 = 1;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MessageBody {
    #[serde(default = "payload_version")]
    pub v: u32,
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

impl MessageBody {
    pub(crate) fn new(role: Role, content: String, metadata: Metadata) -> Self {
        Self {
            v: PAYLOAD_VERSION,
            role,
            content,
            metadata,
        }
    }
}

/// Payloads that carry a version.
pub(crate) trait Versioned {
    fn version(&self) -> u32;
}

impl Versioned for ConversationBody {
    fn version(&self) -> u32 {
        self.v
    }
}

impl Versioned for MessageBody {
    fn version(&self) -> u32 {
        self.v
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

    pub(crate) fn encode<T: Serialize>(
        &self,
        kind: EntityKind,
        id: RecordId,
        value: &T,
    ) -> Result<Body> {
        let json = serde_json::to_vec(value).map_err(|e| VaultError::CorruptRecord {
            kind,
            id,
            reason: format!("cannot serialize: {e}"),
        })?;
        match self {
            Codec::Plain => Ok(Body(json)),
            Codec::Sealed(data) => {
                let id_text = id.to_string();
                let sealed = data.seal(&RecordAad::new(kind.as_str(), &id_text), &json)?;
                Ok(Body(sealed))
            }
        }
    }

    pub(crate) fn decode<T: DeserializeOwned + Versioned>(
        &self,
        kind: EntityKind,
        id: RecordId,
        body: &Body,
    ) -> Result<T> {
        let corrupt = |reason: String| VaultError::CorruptRecord { kind, id, reason };
        let opened;
        let json = match self {
            Codec::Plain => body.as_bytes(),
            Codec::Sealed(data) => {
                let id_text = id.to_string();
                opened = data
                    .open(&RecordAad::new(kind.as_str(), &id_text), body.as_bytes())
                    .map_err(|e| corrupt(e.to_string()))?;
                &opened[..]
            }
        };
        let value: T = serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
        if value.version() > PAYLOAD_VERSION {
            return Err(corrupt(format!(
                "written by a newer chatvault (payload version {}, newest supported {PAYLOAD_VERSION})",
                value.version()
            )));
        }
        Ok(value)
    }
}
