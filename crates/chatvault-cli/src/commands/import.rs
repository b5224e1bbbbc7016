//! `chatvault import FILE`: validate the whole file, then apply it
//! newer-wins in one transaction, reporting imported / skipped / rejected.

use super::{export::passphrase_source, Access, Context, Rejected};
use crate::cli::ImportArgs;
use crate::{output, passphrase, progress};
use anyhow::{Context as _, Result};
use chatvault::{is_encrypted_export, ImportOptions, Progress, ProgressPhase};
use std::io::Read;
use std::sync::Arc;

pub async fn run(ctx: &Context, args: ImportArgs) -> Result<()> {
    let path = &args.file;
    let cannot = || format!("cannot import {}", path.display());
    let mut head = Vec::with_capacity(7);
    std::fs::File::open(path)
        .and_then(|f| f.take(7).read_to_end(&mut head))
        .map_err(chatvault::VaultError::ExportFile)
        .with_context(cannot)?;
    let passphrase = if is_encrypted_export(&head) {
        Some(passphrase::read(&passphrase_source(false))?)
    } else {
        None
    };
    let vault = ctx.open(Access::Existing).await?;

    let size = std::fs::metadata(path).map(|m| m.len()).ok();
    let bar = progress::bar(size, "validating");
    let options = ImportOptions {
        passphrase: passphrase.as_ref().map(|p| p.expose().to_owned().into()),
        progress: Some(Arc::new({
            let bar = bar.clone();
            move |p: Progress| {
                let phase = match p.phase {
                    ProgressPhase::Importing => "importing",
                    ProgressPhase::Rekeying => "re-keying",
                    _ => "validating",
                };
                if bar.message() != phase {
                    bar.set_message(phase);
                    bar.reset();
                }
                bar.set_position(p.done);
            }
        })),
        ..ImportOptions::default()
    };
    let result = vault.import(path.clone(), options).await;
    bar.finish_and_clear();
    let report = result.with_context(cannot)?;
    if args.json.json {
        output::json(&report)?;
        return rejected(report.rejected);
    }
    outln!(
        "imported {}, skipped {} (older or identical), rejected {} of {} records from {} ({} v{}{})",
        report.imported,
        report.skipped,
        report.rejected,
        report.records.total(),
        path.display(),
        report.format,
        report.version,
        if report.encrypted { ", encrypted" } else { "" }
    );
    for r in &report.rejections {
        outln!(
            "  rejected {} {}: {}",
            r.kind,
            output::text(&r.id.to_string()),
            output::text(&r.reason.to_string())
        );
    }
    if report.rejected > report.rejections.len() as u64 {
        outln!(
            "  ... and {} more",
            report.rejected - report.rejections.len() as u64
        );
    }
    rejected(report.rejected)
}

/// An import that left records out fails with [`Rejected`] (exit 3).
fn rejected(count: u64) -> Result<()> {
    if count > 0 {
        return Err(Rejected { count }.into());
    }
    Ok(())
}
