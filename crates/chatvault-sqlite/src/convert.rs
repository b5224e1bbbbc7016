//! Mapping between SQLite and the store's types: error classification and
//! row decoding. Decoding never trusts the file: a malformed value is a
//! [`StoreError::Decode`], not a panic.

use chatvault_core::{ConversationId, Hlc, MessageId, RecordId, Timestamp};
use chatvault_store::StoreError;
use rusqlite::ErrorCode;

/// Classifies a rusqlite error so the user learns what to do about it.
pub(crate) fn sql_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(e.to_string())
            }
            ErrorCode::DiskFull => StoreError::Full(e.to_string()),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy(e.to_string()),
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        },
        _ => StoreError::Backend(e.to_string()),
    }
}

fn bytes16(v: Vec<u8>, what: &str) -> Result<[u8; 16], StoreError> {
    v.try_into().map_err(|v: Vec<u8>| {
        StoreError::Decode(format!("{what} id has {} bytes, expected 16", v.len()))
    })
}

pub(crate) fn conversation_id(v: Vec<u8>) -> Result<ConversationId, StoreError> {
    bytes16(v, "conversation").map(ConversationId::from_bytes)
}

pub(crate) fn message_id(v: Vec<u8>) -> Result<MessageId, StoreError> {
    bytes16(v, "message").map(MessageId::from_bytes)
}

pub(crate) fn record_id(v: Vec<u8>) -> Result<RecordId, StoreError> {
    bytes16(v, "record").map(RecordId::from_bytes)
}

pub(crate) fn hlc(s: String) -> Result<Hlc, StoreError> {
    s.parse()
        .map_err(|e: chatvault_core::CoreError| StoreError::Decode(e.to_string()))
}

pub(crate) fn ts(v: i64) -> Timestamp {
    Timestamp(v)
}
