//! `chatvault compact`: give the space of deleted data back to the disk.
//!
//! On a full disk: deleting (`conv rm`, `msg rm`, `retention run`) still
//! works, but compacting rewrites the file and needs free disk space about
//! the size of the vault; the error says so, with the size.

use super::{Access, Context};
use crate::cli::JsonFlag;
use crate::output;
use anyhow::Result;
use chatvault::{StoreError, VaultError};

pub async fn run(ctx: &Context, json: JsonFlag) -> Result<()> {
    let vault = ctx.open(Access::Existing).await?;
    let compacted = match vault.compact().await {
        Err(VaultError::Store(StoreError::Full { detail, .. })) => {
            let size = vault
                .storage()
                .await
                .ok()
                .flatten()
                .map_or("unknown".to_owned(), |s| output::bytes(s.used_bytes));
            anyhow::bail!(
                "cannot compact: storage is full ({detail}). Compacting rewrites the vault and \
                 needs free disk space about its size ({size}); deleting from the vault frees \
                 space only inside it until then. Free space outside the vault and run \
                 `chatvault compact` again"
            );
        }
        other => other?,
    };
    let Some(done) = compacted else {
        outln!("nothing to compact");
        return Ok(());
    };
    if json.json {
        return output::json(&done);
    }
    outln!(
        "compacted {}: {} -> {}",
        ctx.store_path().display(),
        output::bytes(done.before_bytes),
        output::bytes(done.after_bytes)
    );
    Ok(())
}
