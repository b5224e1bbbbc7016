//! The data lifecycle of a vault: retention, storage stats and
//! compaction, export and import, and the settings they depend on.
//!
//! The rules are pure functions in `chatvault_core::lifecycle` (the
//! retention planner, the export format and its validation); this module
//! gathers their inputs from the store, applies their outcomes in one
//! atomic write each, and owns the I/O (files, encryption of exports,
//! threads that stream them).
//!
//! Settings live in the store's metadata, so they travel with the vault:
//! - `sync.remote` — the sync server's URL. While one is set, conversations
//!   with changes it has not acknowledged are never deleted by retention.
//! - `retention.policy` — a stored [`RetentionPolicy`] (JSON), applied
//!   automatically when the vault is opened, at most once a day.
//! - `retention.lastRun` — when that last happened (epoch ms, decimal).
//!
//! # Layout
//! - `retention` — [`Vault::plan_retention`], [`Vault::run_retention`], the
//!   daily run on open.
//! - `storage` — [`Vault::storage`], [`Vault::compact`].
//! - `export` — [`Vault::export`] (streams; optionally encrypted).
//! - `import` — [`Vault::import`] (validates the whole file, then applies
//!   it in one transaction).

mod export;
mod import;
mod retention;
mod storage;

pub use export::{ExportEncryption, ExportOptions, ExportReport};
pub use import::{ImportOptions, ImportReport, ImportSource, Rejection};
pub use retention::{RetentionMode, RetentionReport};
pub use storage::{CompactionReport, StorageFootprint};

use crate::{Result, Vault, VaultError};
use chatvault_core::lifecycle::RetentionPolicy;
use chatvault_core::{CoreError, Timestamp};
use chatvault_store::{WriteBatch, WriteOp};
use std::sync::Arc;

const SYNC_REMOTE_KEY: &str = "sync.remote";
const RETENTION_POLICY_KEY: &str = "retention.policy";
const RETENTION_LAST_RUN_KEY: &str = "retention.lastRun";

/// Which part of a long operation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressPhase {
    /// Writing an export (units: records).
    Exporting,
    /// Reading a whole import file to validate it (units: file bytes).
    Validating,
    /// Reading it again to apply it (units: file bytes).
    Importing,
}

/// How far a long operation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is running.
    pub phase: ProgressPhase,
    /// Units done.
    pub done: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
}

/// A progress callback (called often: keep it cheap). It may be called
/// from another thread.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Whether the first bytes of a file (at least 7) are those of an
/// encrypted export, which needs its passphrase to import.
pub fn is_encrypted_export(first_bytes: &[u8]) -> bool {
    chatvault_crypto::is_encrypted_stream(first_bytes)
}

impl Vault {
    /// The sync server this vault syncs with, if one is configured.
    pub async fn sync_remote(&self) -> Result<Option<String>> {
        match self.store.meta(SYNC_REMOTE_KEY).await? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| VaultError::Header("the sync.remote setting is not text".into())),
        }
    }

    /// Configures (or, with `None`, forgets) the sync server. While one is
    /// configured, retention keeps every conversation with changes it has
    /// not acknowledged.
    pub async fn set_sync_remote(&self, remote: Option<&str>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.push(match remote {
            Some(url) if url.trim().is_empty() => {
                return Err(invalid("sync remote", "must not be empty"))
            }
            Some(url) => WriteOp::SetMeta(SYNC_REMOTE_KEY.into(), url.as_bytes().to_vec()),
            None => WriteOp::DeleteMeta(SYNC_REMOTE_KEY.into()),
        });
        self.store.write(batch).await?;
        Ok(())
    }

    /// The stored retention policy, if any.
    pub async fn retention_policy(&self) -> Result<Option<RetentionPolicy>> {
        match self.store.meta(RETENTION_POLICY_KEY).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                VaultError::Header(format!("the stored retention policy is unreadable: {e}"))
            }),
        }
    }

    /// Stores a retention policy (applied on open, at most once a day) or,
    /// with `None`, removes it. An empty policy is refused: it would do
    /// nothing.
    pub async fn set_retention_policy(&self, policy: Option<&RetentionPolicy>) -> Result<()> {
        let mut batch = WriteBatch::new();
        match policy {
            Some(p) if p.is_empty() => {
                return Err(invalid(
                    "retention policy",
                    "set at least one of max age, max conversations, max bytes",
                ))
            }
            Some(p) => {
                let json = serde_json::to_vec(p)
                    .map_err(|e| invalid("retention policy", e.to_string()))?;
                batch.push(WriteOp::SetMeta(RETENTION_POLICY_KEY.into(), json));
            }
            None => {
                batch.push(WriteOp::DeleteMeta(RETENTION_POLICY_KEY.into()));
                batch.push(WriteOp::DeleteMeta(RETENTION_LAST_RUN_KEY.into()));
            }
        }
        self.store.write(batch).await?;
        Ok(())
    }

    /// When the stored policy was last applied automatically.
    pub async fn retention_last_run(&self) -> Result<Option<Timestamp>> {
        let Some(bytes) = self.store.meta(RETENTION_LAST_RUN_KEY).await? else {
            return Ok(None);
        };
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(|ms| Some(Timestamp(ms)))
            .ok_or_else(|| VaultError::Header("the retention.lastRun setting is unreadable".into()))
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> VaultError {
    VaultError::Invalid(CoreError::Invalid {
        field,
        reason: reason.into(),
    })
}
