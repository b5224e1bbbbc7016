//! `chatvault`: manage a local chat vault from a terminal or a script.
//!
//! Every command opens the vault named by `--store` (or `CHATVAULT_STORE`,
//! or the default in the user's data directory), does one thing, and exits.
//! Listings print a readable table, or with `--json` the model's camelCase
//! JSON. Any failure prints one line, `error: ...`, to stderr and exits
//! with status 1 (2 for a malformed command line, 3 for an import that
//! rejected records); never a panic. A reader that closes stdout early
//! (`| head`) is a normal end, status 0. Record text is printed with its
//! control characters escaped, so a synced or imported title cannot drive
//! the terminal; `--json` prints it untouched.
//!
//! # Layout
//! - `cli` — the command-line grammar (clap).
//! - `commands` — one module per command group.
//! - `output` — tables, JSON and time formatting.
//! - `progress` — the one way long work reports progress.

// First: `outln!` is defined there and used by `commands`.
#[macro_use]
mod output;
mod cli;
mod commands;
mod passphrase;
mod progress;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): it has all it wanted.
        Err(e) if output::is_closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain on one line.
            eprintln!("error: {e:#}");
            match e.downcast_ref::<commands::Rejected>() {
                Some(_) => ExitCode::from(commands::Rejected::EXIT_CODE),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Logs go to stderr, filtered by `CHATVAULT_LOG` (default: warnings).
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHATVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal (and never with NO_COLOR):
    // escape codes in a log file or a pipe are noise.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .init();
}
