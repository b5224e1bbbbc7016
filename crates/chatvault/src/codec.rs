//! Turning the content fields of a record into the opaque body a store
//! keeps, and back.
//!
//! Content (title; role, content; metadata) is serialized as compact JSON.
//! In an encrypted vault that JSON is then sealed with the vault's data key,
//! with the record kind and id bound as associated data.

use crate::{Result, VaultError};
use chatvault_core::{Body, EntityKind, Metadata, RecordId, Role};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Content of a conversation record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConversationBody {
    pub title: String,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// Content of a message record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MessageBody {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// How bodies are protected in this vault.
pub(crate) enum Codec {
    /// Plain JSON.
    Plain,
}

impl Codec {
    pub(crate) fn is_encrypted(&self) -> bool {
        !matches!(self, Codec::Plain)
    }

    pub(crate) fn encode<T: Serialize>(
        &self,
        _kind: EntityKind,
        _id: RecordId,
        value: &T,
    ) -> Result<Body> {
        let json = serde_json::to_vec(value)
            .map_err(|e| VaultError::Header(format!("cannot serialize record: {e}")))?;
        match self {
            Codec::Plain => Ok(Body(json)),
        }
    }

    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        kind: EntityKind,
        id: RecordId,
        body: &Body,
    ) -> Result<T> {
        let corrupt = |reason: String| VaultError::CorruptRecord { kind, id, reason };
        let json = match self {
            Codec::Plain => body.as_bytes(),
        };
        serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))
    }
}
