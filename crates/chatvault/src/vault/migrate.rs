//! Migration: a vault moved, whole, from one store to another — between
//! IndexedDB and SQLite on OPFS in a browser, between SQLite and memory
//! natively. The records travel sealed (nothing is decrypted, no
//! passphrase is needed) together with their outbox, pending and parked,
//! so a sync after the move sends exactly what it would have sent before.
//!
//! The copy itself is `chatvault_store::copy_store` (batched, verified by
//! counts, marked incomplete until verified); this module adds the
//! vault's view: the source must hold a vault, the copy must read back as
//! the same kind of vault, and an incomplete copy never opens as a vault
//! (`keys::read_header` refuses it).

use super::{keys, Progress, ProgressFn, ProgressPhase, Vault, VaultProbe};
use crate::{Result, VaultError};
use chatvault_core::CoreError;
use chatvault_store::{copy_store, CopyOptions, CopyProgress, CopyReport, Store, StoreError};

impl Vault {
    /// Copies the vault in `from` into the empty store `to`, exactly (see
    /// the `migrate` module docs), and checks that `to` then holds the
    /// same kind of vault. [`ProgressPhase::Migrating`] reports rows
    /// copied of the source's records, tombstones and outbox entries.
    ///
    /// Neither store may be open as a vault meanwhile (nothing may write
    /// to either: a source that changes is a
    /// [`StoreError::CopyMismatch`]). `from` is only read; deleting it
    /// afterwards is the caller's decision. A copy that failed midway
    /// leaves `to` marked incomplete: opening it as a vault fails with
    /// [`StoreError::IncompleteMigration`], and migrating into it again
    /// starts over.
    ///
    /// Errors: [`VaultError::Invalid`] if `from` holds no vault;
    /// [`StoreError::NotEmpty`] if `to` holds anything; any store error.
    pub async fn migrate(
        from: &dyn Store,
        to: &dyn Store,
        progress: Option<ProgressFn>,
    ) -> Result<CopyReport> {
        let kind = keys::probe(from).await?;
        if kind == VaultProbe::Empty {
            return Err(VaultError::Invalid(CoreError::Invalid {
                field: "migration source",
                reason: "the source store holds no vault".into(),
            }));
        }
        let sink = move |p: CopyProgress| {
            if let Some(f) = &progress {
                f(Progress {
                    phase: ProgressPhase::Migrating,
                    done: p.done,
                    total: Some(p.total),
                });
            }
        };
        let options = CopyOptions {
            progress: Some(&sink),
            ..CopyOptions::default()
        };
        let report = copy_store(from, to, options).await?;
        let copied = keys::probe(to).await?;
        if copied != kind {
            return Err(StoreError::CopyMismatch(format!(
                "the source holds a {kind:?} vault, the copy reads as {copied:?}"
            ))
            .into());
        }
        Ok(report)
    }
}
