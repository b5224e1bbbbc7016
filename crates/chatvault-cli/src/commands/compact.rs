//! `chatvault compact`: give the space of deleted data back to the disk.

use super::{Access, Context};
use crate::cli::JsonFlag;
use crate::output;
use anyhow::Result;

pub async fn run(ctx: &Context, json: JsonFlag) -> Result<()> {
    let vault = ctx.open(Access::Existing).await?;
    let Some(done) = vault.compact().await? else {
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
