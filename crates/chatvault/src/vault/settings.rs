//! The settings a vault keeps in its store's metadata, so they travel
//! with it (the retention policy and when it last ran; the sync server is
//! set through [`Replica`](crate::Replica)), and the progress reporting
//! that long lifecycle operations (export, import) share.
//!
//! Must never store a setting that would silently change what a vault
//! deletes: an empty retention policy is refused, and a stored policy runs
//! on open only when the opener asks
//! ([`VaultBuilder::run_due_retention`](crate::VaultBuilder::run_due_retention)).

use super::Vault;
use crate::{meta_keys, Result, VaultError};
use chatvault_core::lifecycle::RetentionPolicy;
use chatvault_core::{CoreError, Timestamp};
use chatvault_store::{WriteBatch, WriteOp};
use std::sync::Arc;

/// Which part of a long operation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressPhase {
    /// Writing an export (units: records).
    Exporting,
    /// Reading a whole import file to validate it (units: file bytes).
    Validating,
    /// Reading it again to apply it (units: file bytes).
    Importing,
    /// Re-sealing records under the newest data key (units: records).
    Rekeying,
    /// Copying the vault into another store (units: rows — records,
    /// tombstones, outbox entries).
    Migrating,
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
    /// The stored retention policy, if any.
    pub async fn retention_policy(&self) -> Result<Option<RetentionPolicy>> {
        match self.store.meta(meta_keys::RETENTION_POLICY).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| VaultError::CorruptMetadata {
                        key: meta_keys::RETENTION_POLICY,
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Stores a retention policy (applied at most once a day by openers that
    /// ask for it, and by [`Vault::run_retention`]) or,
    /// with `None`, removes it. A policy without limits, or with a limit of
    /// zero, is refused ([`RetentionPolicy::check`]).
    pub async fn set_retention_policy(&self, policy: Option<&RetentionPolicy>) -> Result<()> {
        let mut batch = WriteBatch::new();
        match policy {
            Some(p) => {
                p.check()?;
                let json = serde_json::to_vec(p)
                    .map_err(|e| invalid("retention policy", e.to_string()))?;
                batch.push(WriteOp::SetMeta(meta_keys::RETENTION_POLICY.into(), json));
            }
            None => {
                batch.push(WriteOp::DeleteMeta(meta_keys::RETENTION_POLICY.into()));
                batch.push(WriteOp::DeleteMeta(meta_keys::RETENTION_LAST_RUN.into()));
            }
        }
        self.store.write(batch).await?;
        Ok(())
    }

    /// When the stored policy was last applied automatically.
    pub async fn retention_last_run(&self) -> Result<Option<Timestamp>> {
        let Some(bytes) = self.store.meta(meta_keys::RETENTION_LAST_RUN).await? else {
            return Ok(None);
        };
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(|ms| Some(Timestamp(ms)))
            .ok_or_else(|| VaultError::CorruptMetadata {
                key: meta_keys::RETENTION_LAST_RUN,
                reason: "not a decimal time".into(),
            })
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> VaultError {
    VaultError::Invalid(CoreError::Invalid {
        field,
        reason: reason.into(),
    })
}
