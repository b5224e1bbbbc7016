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
    /// A file handed to import is not an export of a known kind.
    #[error("not a chatvault export: {0}")]
    NotAnExport(String),
    /// An export file from a newer chatvault.
    #[error("export file is version {found}, newest supported is {newest}; upgrade chatvault to import it")]
    UnsupportedExportVersion {
        /// The version in the file.
        found: u32,
        /// The newest this build reads.
        newest: u32,
    },
    /// An export file that ends early.
    #[error(
        "export file is truncated: it ends inside {at} (interrupted export or incomplete copy?)"
    )]
    ExportTruncated {
        /// Where the file ends.
        at: String,
    },
    /// An export file with a malformed or inconsistent part.
    #[error("export file is invalid at {at}: {reason}")]
    ExportInvalid {
        /// Where (e.g. `messages[12]`).
        at: String,
        /// What is wrong there.
        reason: String,
    },
    /// An export file whose content does not match its checksum.
    #[error("export file is corrupt: its checksum does not match its content (damaged, or edited after it was written)")]
    ExportChecksum,
    /// An export file that holds one record twice (or both live and
    /// deleted).
    #[error("export file holds {kind} {id} more than once")]
    ExportDuplicate {
        /// Whether the duplicate is a conversation or a message.
        kind: crate::EntityKind,
        /// The id found more than once.
        id: crate::RecordId,
    },
    /// A field that must not be empty, or is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or value at fault.
        field: &'static str,
        /// What is wrong with it, in words a user can act on.
        reason: String,
    },
}
