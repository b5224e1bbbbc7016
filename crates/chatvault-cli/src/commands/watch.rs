//! `chatvault sync watch`: stays connected and keeps the vault in sync
//! until SIGINT or SIGTERM. Pulls on the server's pokes, pushes as local
//! changes appear — from this process or any other writing the vault (the
//! outbox is checked every second) — reconnects with jittered backoff (the
//! sync client's loop), and prints one line per change of state (one JSON
//! object per line with `--json`).
//!
//! One watcher per vault: `<vault>.sync-lock` is held (an OS file lock,
//! released however the process ends) for as long as it runs.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use chatvault_sync::{SyncClient, SyncOptions, SyncState, SyncStatus};
use serde_json::json;

use super::sync::{open_encrypted, signed_in_with};
use super::Context;
use crate::cli::WatchArgs;
use crate::output;

/// How often the outbox is checked for changes written by other processes.
const OUTBOX_POLL: Duration = Duration::from_secs(1);

pub async fn run(ctx: &Context, args: WatchArgs) -> Result<()> {
    let _lock = lock(ctx.store_path())?;
    let (vault, passphrase) = open_encrypted(ctx).await?;
    let options = SyncOptions {
        realtime: true,
        ..SyncOptions::default()
    };
    let client = signed_in_with(vault, &passphrase, options).await?;
    drop(passphrase);
    let mut status = client.status();
    let now = || client.vault().replica().now();
    let mut shown = Shown::of(&status.borrow_and_update());
    shown.print(now(), args.json.json, "watching")?;
    let task = client.spawn();
    let mut poll = tokio::time::interval(OUTBOX_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let ended = loop {
        tokio::select! {
            signal = &mut shutdown => break signal,
            changed = status.changed() => {
                if changed.is_err() {
                    break Ok("the sync loop ended");
                }
                let current = Shown::of(&status.borrow_and_update());
                if current != shown {
                    current.print(now(), args.json.json, "")?;
                    shown = current;
                }
            }
            _ = poll.tick() => nudge_if_pending(&client).await,
        }
    };
    // An in-flight sync finishes; nothing is cut off mid-write.
    task.stop().await;
    let why = ended?;
    let last = Shown::of(&client.status().borrow());
    last.print(now(), args.json.json, &format!("stopped ({why})"))?;
    Ok(())
}

/// Starts a sync when the outbox holds changes and the loop is idle —
/// how writes by other processes (which cannot notify this one) go out.
async fn nudge_if_pending(client: &SyncClient) {
    let idle = matches!(client.status().borrow().state, SyncState::Idle);
    match client.vault().replica().outbox_counts().await {
        Ok((pending, _)) if pending > 0 && idle => client.notify(),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the outbox"),
    }
}

/// Completes on SIGINT or SIGTERM, naming it.
async fn shutdown_signal() -> Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").context("cannot listen for SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}

/// The lock file next to the vault, held exclusively.
fn lock(store: &Path) -> Result<File> {
    let mut name = store.as_os_str().to_owned();
    name.push(".sync-lock");
    let path = PathBuf::from(name);
    let mut open = OpenOptions::new();
    open.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let file = open
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => anyhow::bail!(
            "another `chatvault sync watch` is already running on {} (lock {})",
            store.display(),
            path.display()
        ),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// What a watcher reports: a line is printed when any of it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    state: String,
    error: Option<String>,
    pending: u64,
    parked: usize,
    realtime: bool,
}

impl Shown {
    fn of(s: &SyncStatus) -> Shown {
        let (state, error) = match &s.state {
            SyncState::Idle => ("idle", None),
            SyncState::Syncing => ("syncing", None),
            SyncState::Offline => ("offline", s.last_error.clone()),
            SyncState::Error(e) => ("error", Some(e.clone())),
        };
        Shown {
            state: state.to_owned(),
            error,
            pending: s.pending,
            parked: s.dead_letters,
            realtime: s.realtime,
        }
    }

    fn print(&self, at: chatvault::Timestamp, as_json: bool, note: &str) -> Result<()> {
        let at = output::time(at);
        if as_json {
            let line = json!({
                "at": at,
                "state": self.state,
                "pending": self.pending,
                "parked": self.parked,
                "realtime": self.realtime,
                "error": self.error,
                "note": (!note.is_empty()).then_some(note),
            });
            outln!("{line}");
            return Ok(());
        }
        let mut line = format!(
            "{at}  {:<8} pending {}  parked {}  realtime {}",
            self.state,
            self.pending,
            self.parked,
            if self.realtime { "on" } else { "off" }
        );
        if let Some(e) = &self.error {
            line.push_str(&format!("  error: {}", output::text(e)));
        }
        if !note.is_empty() {
            line.push_str(&format!("  ({note})"));
        }
        outln!("{line}");
        Ok(())
    }
}
