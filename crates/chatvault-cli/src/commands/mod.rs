//! Command dispatch and the one way commands open a vault.

mod conv;
mod msg;
mod stats;

use crate::cli::{Cli, Command};
use anyhow::{bail, Context as _, Result};
use chatvault::{Vault, VaultOptions};
use std::path::{Path, PathBuf};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(cli.store)?;
    match cli.command {
        Command::Init => ctx.init().await,
        Command::Conv(c) => conv::run(&ctx, c).await,
        Command::Msg(c) => msg::run(&ctx, c).await,
        Command::Stats(json) => stats::run(&ctx, json).await,
    }
}

/// Whether a command may create a vault that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading commands: a missing vault is an error.
    Existing,
    /// Writing commands: a missing vault is created.
    CreateIfMissing,
}

/// What every command needs: where the vault is.
pub struct Context {
    store: PathBuf,
}

impl Context {
    fn new(store: Option<PathBuf>) -> Result<Self> {
        let store = match store {
            Some(p) => p,
            None => default_store()?,
        };
        Ok(Self { store })
    }

    /// The vault file.
    pub fn store_path(&self) -> &Path {
        &self.store
    }

    /// Opens the vault.
    pub async fn open(&self, access: Access) -> Result<Vault> {
        let exists = self.store.exists();
        if !exists {
            match access {
                Access::Existing => bail!(
                    "no vault at {} (create one with `chatvault init`, or pass --store / set CHATVAULT_STORE)",
                    self.store.display()
                ),
                Access::CreateIfMissing => self.create_parent()?,
            }
        }
        if exists && self.store.is_dir() {
            bail!("{} is a directory, not a vault file", self.store.display());
        }
        Vault::open_sqlite(&self.store, VaultOptions::default())
            .await
            .with_context(|| format!("cannot open vault {}", self.store.display()))
    }

    fn create_parent(&self) -> Result<()> {
        if let Some(parent) = self.store.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create directory {}", parent.display()))?;
        }
        Ok(())
    }

    async fn init(&self) -> Result<()> {
        if self.store.exists() {
            bail!("a vault already exists at {}", self.store.display());
        }
        self.open(Access::CreateIfMissing).await?;
        println!("created vault {}", self.store.display());
        Ok(())
    }
}

fn default_store() -> Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("dev", "chatvault", "chatvault").context(
        "cannot find a home directory for the default vault; pass --store or set CHATVAULT_STORE",
    )?;
    Ok(dirs.data_dir().join("vault.db"))
}

/// Parses an id argument, naming what was expected.
pub fn parse_id<T>(s: &str) -> Result<T>
where
    T: std::str::FromStr<Err = chatvault_core::CoreError>,
{
    Ok(s.parse::<T>()?)
}
