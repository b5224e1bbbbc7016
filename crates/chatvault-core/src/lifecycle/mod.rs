//! Data lifecycle rules, as pure functions over plain data: what retention
//! deletes, what an export file looks like and when one is valid, how an
//! app's own export becomes chatvault records. The facade gathers the
//! inputs, applies the outcomes in one atomic write and owns every byte of
//! I/O; nothing here reads a clock, a file or a store.
//!
//! - `retention_plan` — [`plan_retention`] and its policy, plan and
//!   reasons.
//! - `export_format` — the export format (version [`EXPORT_VERSION`]):
//!   [`ExportWriter`], [`read_export`], [`ExportValidator`].
//! - `seed` — [`parse_seed`]: import from seed-style TypeScript apps.

mod export_format;
mod retention_plan;
mod seed;

pub use export_format::{
    read_export, Checksum, ExportCounts, ExportItem, ExportReadError, ExportSummary,
    ExportValidator, ExportWriter, ExportedConversation, ExportedMessage, ExportedTombstone,
    ValidatedExport, EXPORT_FORMAT, EXPORT_VERSION,
};
pub use retention_plan::{
    plan_retention, ConversationSummary, Deletion, Kept, Protection, RetentionPlan,
    RetentionPolicy, RetentionReason,
};
pub use seed::{looks_like_seed, parse_seed, IMPORT_DEVICE, SEED_MAX_BYTES};
