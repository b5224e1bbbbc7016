//! `chatvault-fuzz`: runs the fuzz targets for a time budget and prints
//! one line per target (executions, accepted, skipped). A failure writes
//! its input to `crates/chatvault-fuzz/regressions/<target>/` (where
//! `tests/regressions.rs` replays it from then on) and exits 1.
//! `cargo xtask fuzz [--quick | --seconds N]` is the usual way in.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chatvault_fuzz::{all_targets, fuzz, Budget};
use clap::Parser;

/// Fuzz chatvault's parsers of hostile input on stable Rust.
#[derive(Parser)]
struct Args {
    /// Wall-time budget for all targets together, shared equally.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run only this target (import, key_envelope, record_blob, stream,
    /// server_push, server_pull, ws_auth).
    #[arg(long)]
    target: Option<String>,
    /// The mutator's seed (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let mut targets = all_targets();
    if let Some(name) = &args.target {
        targets.retain(|t| t.name() == name);
        if targets.is_empty() {
            bail!("no fuzz target named {name:?}");
        }
    }
    let share = Duration::from_secs(args.seconds) / targets.len() as u32;
    println!(
        "fuzzing {} targets, {share:.1?} each, seed {seed}",
        targets.len()
    );
    // Panics are caught and reported with their input; the default hook
    // would print each one in the middle of the run.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = Vec::new();
    for target in &mut targets {
        let started = Instant::now();
        let report = fuzz(target.as_mut(), seed, Budget::Until(started + share));
        println!(
            "{:<13} {:>9} executions ({} accepted, {} skipped) in {:.1?}",
            report.target,
            report.executions,
            report.accepted,
            report.skipped,
            started.elapsed()
        );
        if let Some(failure) = report.failure {
            let path = save(report.target, &failure.input)?;
            println!(
                "  FAILED: {}\n  input saved to {}",
                failure.message,
                path.display()
            );
            failed.push(report.target);
        }
    }
    let _ = std::panic::take_hook();
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Writes a failing input where the regression test replays it, named by
/// a hash of its bytes (the same crash is saved once).
fn save(target: &str, input: &[u8]) -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut hasher);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{:016x}.bin", hasher.finish()));
    std::fs::write(&path, input).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
