//! `chatvault stats`: what the vault holds and how much space it uses.

use super::{Access, Context};
use crate::cli::JsonFlag;
use crate::output::{self, Table};
use anyhow::Result;
use serde_json::json;

pub async fn run(ctx: &Context, json: JsonFlag) -> Result<()> {
    let vault = ctx.open(Access::Existing).await?;
    let stats = vault.stats().await?;
    let file_bytes = std::fs::metadata(ctx.store_path())
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(wal_path(ctx.store_path()))
            .map(|m| m.len())
            .unwrap_or(0);
    if json.json {
        let mut v = serde_json::to_value(&stats)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("path".into(), json!(ctx.store_path()));
            o.insert("fileBytes".into(), json!(file_bytes));
        }
        return output::json(&v);
    }
    println!("vault          {}", ctx.store_path().display());
    println!(
        "encrypted      {}",
        if stats.encrypted { "yes" } else { "no" }
    );
    println!("conversations  {}", stats.conversations);
    println!("messages       {}", stats.messages);
    println!("tombstones     {}", stats.tombstones);
    println!("pending sync   {}", stats.pending_changes);
    println!("content        {}", output::bytes(stats.bytes));
    println!("file           {}", output::bytes(file_bytes));
    if !stats.per_conversation.is_empty() {
        println!();
        let mut t = Table::new(["CONVERSATION", "MESSAGES", "BYTES", "UPDATED"]);
        for c in &stats.per_conversation {
            t.row([
                c.id.to_string(),
                c.messages.to_string(),
                output::bytes(c.bytes),
                output::time(c.updated_at),
            ]);
        }
        t.print();
    }
    Ok(())
}

fn wal_path(p: &std::path::Path) -> std::path::PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push("-wal");
    s.into()
}
