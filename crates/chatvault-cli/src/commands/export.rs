//! `chatvault export`: the whole vault as an export file (see
//! `docs/export-format.md`), streamed with a progress bar on a terminal,
//! optionally encrypted under its own passphrase.

use super::{Access, Context};
use crate::cli::ExportArgs;
use crate::{output, passphrase, progress};
use anyhow::{bail, Context as _, Result};
use chatvault::{ExportEncryption, ExportOptions, ExportReport};
use std::io::IsTerminal;
use std::sync::Arc;

/// Where the passphrase of an export file comes from (import reads the same).
pub fn passphrase_source(confirm: bool) -> passphrase::Source<'static> {
    passphrase::Source {
        file_var: "CHATVAULT_EXPORT_PASSPHRASE_FILE",
        value_var: "CHATVAULT_EXPORT_PASSPHRASE",
        prompt: "Export file passphrase: ",
        confirm,
        hint: "the export file is encrypted: run in a terminal to be prompted, or set \
               CHATVAULT_EXPORT_PASSPHRASE_FILE (a file holding the passphrase) or \
               CHATVAULT_EXPORT_PASSPHRASE",
    }
}

pub async fn run(ctx: &Context, args: ExportArgs) -> Result<()> {
    if args.encrypt && args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an encrypted export to the terminal: pass -o FILE or redirect the output");
    }
    let vault = ctx.open(Access::Existing).await?;
    let passphrase = if args.encrypt {
        Some(passphrase::read(&passphrase::Source {
            hint: "--encrypt needs a passphrase: run in a terminal to be prompted, or set \
                   CHATVAULT_EXPORT_PASSPHRASE_FILE or CHATVAULT_EXPORT_PASSPHRASE",
            ..passphrase_source(true)
        })?)
    } else {
        None
    };
    let stats = vault.stats().await?;
    let bar = progress::bar(
        Some(stats.conversations + stats.messages + stats.tombstones),
        "exporting",
    );
    let options = ExportOptions {
        encryption: passphrase
            .as_ref()
            .map(|p| ExportEncryption::new(p.expose())),
        progress: Some(Arc::new({
            let bar = bar.clone();
            move |p: chatvault::Progress| bar.set_position(p.done)
        })),
    };

    let report = match &args.output {
        Some(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            let mut tmp = tempfile::Builder::new()
                .prefix(".chatvault-export-")
                .suffix(".tmp")
                .tempfile_in(dir)
                .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
            let (_, report) = vault
                .export(tmp.as_file_mut(), options)
                .await
                .with_context(|| format!("cannot export to {}", path.display()))?;
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
            tmp.persist(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            report
        }
        None => {
            let (_, report) = vault
                .export(std::io::stdout(), options)
                .await
                .context("cannot export to standard output")?;
            report
        }
    };
    bar.finish_and_clear();
    if args.json.json && args.output.is_some() {
        return output::json(&report);
    }
    let summary = summary(&report, args.output.as_deref());
    // With the export itself on stdout, the summary goes to stderr.
    if args.output.is_some() {
        outln!("{summary}");
    } else {
        eprintln!("{summary}");
    }
    Ok(())
}

fn summary(r: &ExportReport, to: Option<&std::path::Path>) -> String {
    format!(
        "exported {} conversations, {} messages, {} tombstones ({}{}) to {}",
        r.counts.conversations,
        r.counts.messages,
        r.counts.tombstones,
        output::bytes(r.bytes),
        if r.encrypted { ", encrypted" } else { "" },
        to.map_or("standard output".to_owned(), |p| p.display().to_string())
    )
}
