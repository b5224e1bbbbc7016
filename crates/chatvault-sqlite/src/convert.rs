//! Mapping between SQLite and the store's types: error classification and
//! row decoding. Decoding never trusts the file: a malformed value is a
//! [`StoreError::Decode`], not a panic.

use chatvault_core::{ConversationId, Hlc, MessageId, RecordId, Timestamp};
use chatvault_store::{BoxError, StoreError};
use rusqlite::ErrorCode;

/// Classifies a rusqlite error so the user learns what to do about it; the
/// rusqlite error itself stays attached as the source.
pub(crate) fn sql_err(e: rusqlite::Error) -> StoreError {
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    let source: BoxError = e.into();
    match code {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            detail: "the SQLite file is damaged".into(),
            source: Some(source),
        },
        // SQLITE_FULL is also what a store opened with a size cap
        // (`max_page_count`) reports when the cap is reached.
        Some(ErrorCode::DiskFull) => StoreError::Full {
            detail: "the disk is full or the store reached its size cap".into(),
            source: Some(source),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy { source },
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure,
        ) => StoreError::Unavailable {
            detail: "the SQLite file cannot be opened or written".into(),
            source: Some(source),
        },
        _ => StoreError::Backend {
            detail: "SQLite".into(),
            source: Some(source),
        },
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
