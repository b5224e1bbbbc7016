//! The core error type: problems with data itself (parsing, validation),
//! never with a disk or a network, which belong to the crates that own them.

/// Everything that can be wrong with data the core is handed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A string that should be an identifier is not one.
    #[error("invalid {kind} id {value:?}: expected a UUID")]
    InvalidId {
        /// Which kind of id was expected (e.g. "conversation").
        kind: &'static str,
        /// The offending input.
        value: String,
    },
    /// A role that is not one of user, assistant, system, tool.
    #[error("invalid role {0:?}: expected one of user, assistant, system, tool")]
    InvalidRole(String),
    /// A clock stamp that does not parse.
    #[error("invalid version stamp {0:?}: expected WALL-COUNTER-DEVICE in hex")]
    InvalidHlc(String),
    /// A paging cursor that does not parse (or came from another query).
    #[error("invalid cursor {0:?}: pass back a cursor exactly as a listing returned it")]
    InvalidCursor(String),
    /// A remote clock stamp too far ahead of this device's clock.
    #[error("clock skew: a change is stamped {ahead_ms} ms ahead of this device's clock (limit {limit_ms} ms); check the clock of the device that wrote it")]
    ClockSkew {
        /// How far ahead the remote stamp is.
        ahead_ms: u64,
        /// The tolerated drift.
        limit_ms: u64,
    },
    /// The clock counter overflowed within one millisecond.
    #[error("clock counter exhausted within one millisecond; retry")]
    ClockExhausted,
    /// A field that must not be empty, or is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or value at fault.
        field: &'static str,
        /// What is wrong with it, in words a user can act on.
        reason: String,
    },
}
