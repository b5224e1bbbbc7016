//! `chatvault retention ...`: delete old history by age, count or size,
//! now (`run`, optionally `--dry-run`) or as a stored policy the vault
//! applies when it is opened, at most once a day (`set`, `show`, `clear`).
//!
//! A policy never deletes unannounced: a limit of 0 is refused, `set`
//! shows what the policy would delete now and asks before storing it, and
//! each automatic run prints one line on stderr (see `commands::open`).

use super::{Access, Context};
use crate::cli::{RetentionCommand, RetentionLimits};
use crate::output::{self, Table};
use anyhow::{bail, Result};
use chatvault::{RetentionMode, RetentionPolicy, RetentionReport};
use serde_json::json;

pub async fn run(ctx: &Context, cmd: RetentionCommand) -> Result<()> {
    match cmd {
        RetentionCommand::Run {
            limits,
            dry_run,
            json,
        } => {
            let vault = ctx.open(Access::Existing).await?;
            let policy = match checked(limits)? {
                Some(p) => p,
                None => match vault.retention_policy().await? {
                    Some(p) => {
                        // Stored by an older chatvault, it may have a zero.
                        p.check()?;
                        p
                    }
                    None => bail!(
                        "no retention policy: pass --max-age-days, --max-conversations or --max-bytes, \
                         or store one with `chatvault retention set`"
                    ),
                },
            };
            let mode = if dry_run {
                RetentionMode::DryRun
            } else {
                RetentionMode::Apply
            };
            let report = vault.run_retention(&policy, mode).await?;
            if json.json {
                return output::json(&report);
            }
            print_report(&report)?;
            Ok(())
        }
        RetentionCommand::Set { limits, yes } => {
            let Some(policy) = checked(limits)? else {
                bail!("give at least one of --max-age-days, --max-conversations, --max-bytes");
            };
            let vault = ctx.open(Access::Existing).await?;
            let dry = vault.run_retention(&policy, RetentionMode::DryRun).await?;
            print_report(&dry)?;
            if !super::confirm(
                "store this policy? it deletes what is listed above now, and more as history grows",
                yes,
                "refusing to store a retention policy (it deletes history automatically)",
            )? {
                outln!("nothing stored");
                return Ok(());
            }
            vault.set_retention_policy(Some(&policy)).await?;
            outln!(
                "stored retention policy: {} (applied when the vault is opened, at most once a day)",
                describe(&policy)
            );
            Ok(())
        }
        RetentionCommand::Show(json) => {
            let vault = ctx.open(Access::Existing).await?;
            let policy = vault.retention_policy().await?;
            let last_run = vault.retention_last_run().await?;
            if json.json {
                return output::json(&json!({ "policy": policy, "lastRun": last_run }));
            }
            match policy {
                None => outln!("no retention policy stored"),
                Some(p) => {
                    outln!("policy    {}", describe(&p));
                    outln!(
                        "last run  {}",
                        last_run.map_or("never".to_owned(), output::ago)
                    );
                }
            }
            Ok(())
        }
        RetentionCommand::Clear => {
            let vault = ctx.open(Access::Existing).await?;
            vault.set_retention_policy(None).await?;
            outln!("retention policy removed");
            Ok(())
        }
    }
}

/// The policy the limits given describe (`None` if none was), refused if
/// a limit is zero ([`RetentionPolicy::check`]).
fn checked(limits: RetentionLimits) -> Result<Option<RetentionPolicy>> {
    let p = RetentionPolicy {
        max_age_days: limits.max_age_days,
        max_conversations: limits.max_conversations,
        max_bytes: limits.max_bytes,
    };
    if p.is_empty() {
        return Ok(None);
    }
    p.check()?;
    Ok(Some(p))
}

/// A policy in words ("max age 30 days, max 10.0 MiB").
pub(super) fn describe(p: &RetentionPolicy) -> String {
    let mut parts = Vec::new();
    if let Some(d) = p.max_age_days {
        parts.push(format!("max age {d} days"));
    }
    if let Some(n) = p.max_conversations {
        parts.push(format!("max {n} conversations"));
    }
    if let Some(b) = p.max_bytes {
        parts.push(format!("max {}", output::bytes(b)));
    }
    parts.join(", ")
}

fn print_report(r: &RetentionReport) -> Result<()> {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    outln!(
        "{verb} {} conversation{} ({}) by {}",
        r.plan.delete.len(),
        if r.plan.delete.len() == 1 { "" } else { "s" },
        output::bytes(r.plan.bytes_freed),
        describe(&r.policy)
    );
    if !r.plan.delete.is_empty() {
        let mut t = Table::new(["CONVERSATION", "UPDATED", "BYTES", "REASON"]);
        for d in &r.plan.delete {
            t.row([
                d.id.to_string(),
                output::ago(d.updated_at),
                output::bytes(d.bytes),
                d.reason.as_str().to_owned(),
            ]);
        }
        t.print()?;
    }
    if !r.plan.kept.is_empty() {
        outln!("kept although selected:");
        let mut t = Table::new(["CONVERSATION", "UPDATED", "BYTES", "KEPT BECAUSE"]);
        for k in &r.plan.kept {
            t.row([
                k.id.to_string(),
                output::ago(k.updated_at),
                output::bytes(k.bytes),
                format!(
                    "{} (selected by {})",
                    k.protection.as_str(),
                    k.selected_by.as_str()
                ),
            ]);
        }
        t.print()?;
    }
    outln!(
        "{} {}; {} conversations ({}) {}",
        if r.dry_run { "would free" } else { "freed" },
        output::bytes(r.plan.bytes_freed),
        r.plan.remaining_conversations,
        output::bytes(r.plan.remaining_bytes),
        if r.dry_run { "would remain" } else { "remain" },
    );
    if let Some(c) = &r.compaction {
        outln!(
            "compacted the store: {} -> {}",
            output::bytes(c.before_bytes),
            output::bytes(c.after_bytes)
        );
    }
    Ok(())
}
