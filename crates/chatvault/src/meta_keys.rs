//! Every key a vault, its sync client and its settings keep in the store's
//! metadata, defined once so a search finds where each is read and
//! written.
//!
//! Owners: `vault.*` belongs to the vault itself (never written by anyone
//! else); `retention.*` and [`SYNC_REMOTE`] are vault settings with their
//! own validating methods; every other `sync.*` key belongs to the sync
//! client and its tools, which read and write them through
//! [`Replica::sync_meta`](crate::Replica::sync_meta) and
//! [`Replica::set_sync_meta`](crate::Replica::set_sync_meta).
//!
//! Must never hold anything but names: the values' formats are documented
//! by their owners.

/// The vault header (JSON): format version, device id, whether encrypted.
pub const HEADER: &str = "vault.header";
/// The key envelope (JSON) of an encrypted vault: its data key wrapped
/// under the passphrase. Replacing it is the whole of a passphrase change.
pub const KEYS: &str = "vault.keys";
/// The id of the data key that seals new records (text), written with
/// every envelope: writers of an encrypted vault require it unchanged
/// ([`WriteOp::RequireMeta`](chatvault_store::WriteOp::RequireMeta)), so a
/// handle opened before another process rotated the key never seals with
/// the old one. Absent in vaults whose envelope predates it (then absence
/// is what writers require, until the next envelope write).
pub const DATA_KEY: &str = "vault.dataKey";
/// The clock mark: the highest version stamp this device's writers have
/// committed, kept by the store with the records it covers
/// ([`WriteOp::ClaimStamps`](chatvault_store::WriteOp::ClaimStamps)), so a
/// restart (even with a clock that went backwards) never reissues one.
pub const CLOCK: &str = chatvault_store::CLOCK_MARK_KEY;
/// Present while the store is the target of a migration that has not
/// been verified yet ([`Vault::migrate`](crate::Vault::migrate)): such a
/// store never opens as a vault.
pub const MIGRATION: &str = chatvault_store::MIGRATION_MARK_KEY;
/// A stored retention policy (JSON), applied by
/// [`VaultBuilder::run_due_retention`](crate::VaultBuilder::run_due_retention).
pub const RETENTION_POLICY: &str = "retention.policy";
/// When the stored retention policy last ran (epoch ms, decimal).
pub const RETENTION_LAST_RUN: &str = "retention.lastRun";
/// Every key the sync client owns starts with this.
pub const SYNC_PREFIX: &str = "sync.";
/// The sync server's URL (text). A vault setting, not sync-client owned:
/// set it with [`Replica::set_sync_remote`](crate::Replica::set_sync_remote).
pub const SYNC_REMOTE: &str = "sync.remote";
/// The sync client's pull cursor.
pub const SYNC_CURSOR: &str = "sync.cursor";
/// Where sync clients of store schema 2 kept refused changes (a JSON
/// list). No longer written: refused changes are parked outbox entries,
/// and opening a schema-2 SQLite vault moves the list into them.
pub const SYNC_DEAD_LETTERS: &str = "sync.deadLetters";
/// The last sync error (text), shown by `sync status`; removed when a
/// sync completes.
pub const SYNC_LAST_ERROR: &str = "sync.lastError";
/// The device's server session (token, account, the auth key that opened
/// it), sealed under the data key by the sync client.
pub const SYNC_SESSION: &str = "sync.session";
/// The sync account's user name (the CLI's `sync` commands).
pub const SYNC_USER: &str = "sync.user";
