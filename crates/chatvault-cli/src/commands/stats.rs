//! `chatvault stats`: what the vault holds, how much space it takes (the
//! file: database plus WAL, and what compaction would free), how much is
//! left (free disk space), whether it is persistent, and which records
//! cannot be read (damaged: listings skip them).

use super::{Access, Context};
use crate::cli::JsonFlag;
use crate::output::{self, Table};
use anyhow::Result;
use serde_json::json;

pub async fn run(ctx: &Context, json: JsonFlag) -> Result<()> {
    let vault = ctx.open(Access::Existing).await?;
    let stats = vault.stats().await?;
    let storage = vault.storage().await?;
    let damaged = vault.damaged_records().await?;
    if json.json {
        let mut v = serde_json::to_value(&stats)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("damaged".into(), json!(damaged));
            o.insert("damagedCount".into(), json!(damaged.count()));
            o.insert("path".into(), json!(ctx.store_path()));
            o.insert(
                "fileBytes".into(),
                json!(storage.as_ref().map_or(0, |s| s.used_bytes)),
            );
            o.insert("storage".into(), json!(storage));
        }
        return output::json(&v);
    }
    outln!("vault          {}", ctx.store_path().display());
    outln!(
        "encrypted      {}",
        if stats.encrypted { "yes" } else { "no" }
    );
    outln!("conversations  {}", stats.conversations);
    outln!("messages       {}", stats.messages);
    outln!("tombstones     {}", stats.tombstones);
    if damaged.is_empty() {
        outln!("damaged        none");
    } else {
        let ids: Vec<String> = damaged
            .conversations
            .iter()
            .map(ToString::to_string)
            .chain(damaged.messages.iter().map(ToString::to_string))
            .collect();
        outln!(
            "damaged        {} record(s) cannot be read, skipped by listings: {}",
            damaged.count(),
            ids.join(", ")
        );
    }
    outln!("pending sync   {}", stats.pending_changes);
    outln!("content        {}", output::bytes(stats.bytes));
    if let Some(s) = &storage {
        outln!(
            "file           {} (reclaimable by `chatvault compact`: {})",
            output::bytes(s.used_bytes),
            output::bytes(s.reclaimable_bytes)
        );
        outln!(
            "available      {}",
            s.available_bytes
                .map_or("unknown".to_owned(), output::bytes)
        );
        if let Some(q) = s.quota_bytes {
            outln!("quota          {}", output::bytes(q));
        }
        outln!("persistent     {}", if s.persistent { "yes" } else { "no" });
    }
    if !stats.per_conversation.is_empty() {
        outln!();
        let mut t = Table::new(["CONVERSATION", "MESSAGES", "BYTES", "UPDATED"]);
        for c in &stats.per_conversation {
            t.row([
                c.id.to_string(),
                c.messages.to_string(),
                output::bytes(c.bytes),
                output::ago(c.updated_at),
            ]);
        }
        t.print()?;
    }
    Ok(())
}
