//! Command dispatch and the one way commands open a vault.

mod compact;
mod conv;
mod export;
mod import;
mod msg;
mod retention;
mod stats;
mod sync;
mod watch;

use crate::cli::{Cli, Command};
use crate::passphrase;
use anyhow::{bail, Context as _, Result};
use chatvault::{SqliteOptions, SqliteStore, Store, Vault, VaultOptions, VaultProbe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(cli.store, applies_retention(&cli.command))?;
    match cli.command {
        Command::Init { encrypt } => ctx.init(encrypt).await,
        Command::Passwd { rotate_key } => ctx.passwd(rotate_key).await,
        Command::Rekey => ctx.rekey().await,
        Command::Conv(c) => conv::run(&ctx, c).await,
        Command::Msg(c) => msg::run(&ctx, c).await,
        Command::Stats(json) => stats::run(&ctx, json).await,
        Command::Retention(c) => retention::run(&ctx, c).await,
        Command::Compact(json) => compact::run(&ctx, json).await,
        Command::Export(args) => export::run(&ctx, args).await,
        Command::Import(args) => import::run(&ctx, args).await,
        Command::Sync(c) => sync::run(&ctx, c).await,
    }
}

/// Whether opening the vault for `command` applies a stored retention
/// policy that is due. Not for the commands that manage the policy (a user
/// clearing a bad policy must not trigger it first), nor for `export` (a
/// backup taken before a policy deletes anything) and the key commands.
fn applies_retention(command: &Command) -> bool {
    !matches!(
        command,
        Command::Retention(_)
            | Command::Export(_)
            | Command::Passwd { .. }
            | Command::Rekey
            | Command::Init { .. }
    )
}

/// `import` finished but rejected records: the accepted ones are in the
/// vault, and the exit status (3) tells a script that something was left
/// out.
#[derive(Debug)]
pub struct Rejected {
    /// How many records were rejected.
    pub count: u64,
}

impl Rejected {
    /// The process exit status for this outcome (documented in `--help`).
    pub const EXIT_CODE: u8 = 3;
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rejected {} of the file's records (listed above); the rest was imported",
            self.count
        )
    }
}

impl std::error::Error for Rejected {}

/// Whether a command may create a vault that does not exist yet.
///
/// Only `init` and `sync join` create one: any other command on a missing
/// (say, mistyped) path would otherwise leave an unencrypted vault behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every command but `init` and `sync join`: a missing vault is an
    /// error, and nothing is created.
    Existing,
    /// `init` and `sync join`: a missing vault (and its directory) is
    /// created.
    Create,
}

/// What every command needs: where the vault is, and whether opening it
/// applies a due retention policy.
pub struct Context {
    store: PathBuf,
    apply_retention: bool,
}

impl Context {
    fn new(store: Option<PathBuf>, apply_retention: bool) -> Result<Self> {
        let store = match store {
            Some(p) => p,
            None => default_store()?,
        };
        Ok(Self {
            store,
            apply_retention,
        })
    }

    /// The vault file.
    pub fn store_path(&self) -> &Path {
        &self.store
    }

    /// Opens the vault, unlocking it if it is encrypted.
    pub async fn open(&self, access: Access) -> Result<Vault> {
        Ok(self.open_keeping_passphrase(access).await?.0)
    }

    /// Opens the vault like [`open`](Self::open) and also returns the
    /// passphrase that unlocked it (for commands that derive more keys from
    /// it, like sync's server sign-in).
    pub async fn open_keeping_passphrase(
        &self,
        access: Access,
    ) -> Result<(Vault, Option<passphrase::Passphrase>)> {
        let store = self.open_store(access).await?;
        let (opened, passphrase) = match Vault::probe(store.as_ref()).await? {
            VaultProbe::Encrypted => {
                let passphrase = passphrase::read(&self.unlock_source())?;
                let opened =
                    Vault::open_encrypted(store, passphrase.expose(), vault_options()).await;
                (opened, Some(passphrase))
            }
            VaultProbe::Plaintext | VaultProbe::Empty => {
                (Vault::open(store, vault_options()).await, None)
            }
        };
        let vault =
            opened.with_context(|| format!("cannot open vault {}", self.store.display()))?;
        if self.apply_retention {
            apply_due_retention(&vault).await;
        }
        Ok((vault, passphrase))
    }

    /// Opens an existing vault that must be encrypted, for the commands
    /// that change its keys, and returns the passphrase that unlocked it; a
    /// plaintext vault is an error: "<path> is not encrypted" followed by
    /// `not_encrypted`.
    async fn open_encrypted(&self, not_encrypted: &str) -> Result<(Vault, passphrase::Passphrase)> {
        let store = self.open_store(Access::Existing).await?;
        if Vault::probe(store.as_ref()).await? != VaultProbe::Encrypted {
            bail!("{} is not encrypted{not_encrypted}", self.store.display());
        }
        let passphrase = passphrase::read(&self.unlock_source())?;
        let vault = Vault::open_encrypted(store, passphrase.expose(), vault_options())
            .await
            .with_context(|| format!("cannot open vault {}", self.store.display()))?;
        Ok((vault, passphrase))
    }

    /// Where the passphrase that unlocks the vault comes from.
    pub(crate) fn unlock_source(&self) -> passphrase::Source<'static> {
        passphrase::Source {
            file_var: "CHATVAULT_PASSPHRASE_FILE",
            value_var: "CHATVAULT_PASSPHRASE",
            prompt: "Vault passphrase: ",
            confirm: false,
            hint: "the vault is encrypted: run in a terminal to be prompted, or set \
                   CHATVAULT_PASSPHRASE_FILE (a file holding the passphrase) or CHATVAULT_PASSPHRASE",
        }
    }

    /// Opens the vault's store without opening the vault itself.
    pub async fn open_store(&self, access: Access) -> Result<Arc<dyn Store>> {
        let exists = self.store.exists();
        if !exists {
            match access {
                Access::Existing => bail!(
                    "no vault at {}; run `chatvault init` (or pass --store / set CHATVAULT_STORE)",
                    self.store.display()
                ),
                Access::Create => self.create_parent()?,
            }
        }
        if exists && self.store.is_dir() {
            bail!("{} is a directory, not a vault file", self.store.display());
        }
        let options = SqliteOptions {
            // A vault deleted since the check above is not silently re-made.
            create: access == Access::Create,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&self.store, options)
            .await
            .with_context(|| format!("cannot open vault {}", self.store.display()))?;
        Ok(Arc::new(store))
    }

    /// Creates the directories missing above the vault file, private to
    /// the user (0700 on Unix, whatever the umask); directories that exist
    /// are left as they are.
    fn create_parent(&self) -> Result<()> {
        let Some(parent) = self.store.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        let missing: Vec<&Path> = parent.ancestors().take_while(|d| !d.exists()).collect();
        for dir in missing.into_iter().rev() {
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            match builder.create(dir) {
                // Another process made it first: it is theirs to set up.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => {
                    other.with_context(|| format!("cannot create directory {}", dir.display()))?
                }
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("cannot make directory {} private", dir.display()))?;
            }
        }
        Ok(())
    }

    /// Removes a vault this command created and could not finish (a failed
    /// `init` or `sync join`), with its SQLite sidecar files, so that no
    /// half-made vault is left to block the retry.
    pub(crate) fn remove_new_vault(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.store.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => tracing::warn!(
                    file = %Path::new(&file).display(),
                    error = %e,
                    "cannot remove a half-made vault file"
                ),
                _ => {}
            }
        }
    }

    async fn init(&self, encrypt: bool) -> Result<()> {
        if self.store.exists() {
            bail!("a vault already exists at {}", self.store.display());
        }
        let passphrase = if encrypt {
            Some(passphrase::read(&passphrase::Source {
                confirm: true,
                prompt: "New vault passphrase: ",
                hint: "--encrypt needs a passphrase: run in a terminal to be prompted, or set \
                       CHATVAULT_PASSPHRASE_FILE or CHATVAULT_PASSPHRASE",
                ..self.unlock_source()
            })?)
        } else {
            None
        };
        let store = self.open_store(Access::Create).await?;
        let created = match &passphrase {
            Some(p) => Vault::open_encrypted(store, p.expose(), vault_options()).await,
            None => Vault::open(store, vault_options()).await,
        };
        if let Err(e) = created {
            self.remove_new_vault();
            return Err(e).with_context(|| format!("cannot create vault {}", self.store.display()));
        }
        outln!(
            "created {} vault {}",
            if encrypt { "encrypted" } else { "plaintext" },
            self.store.display()
        );
        Ok(())
    }

    async fn passwd(&self, rotate_key: bool) -> Result<()> {
        let (vault, old) = self
            .open_encrypted("; create an encrypted vault with `chatvault init --encrypt`")
            .await?;
        let new = passphrase::read(&passphrase::Source {
            file_var: "CHATVAULT_NEW_PASSPHRASE_FILE",
            value_var: "CHATVAULT_NEW_PASSPHRASE",
            prompt: "New passphrase: ",
            confirm: true,
            hint: "a new passphrase is needed: run in a terminal to be prompted, or set \
                   CHATVAULT_NEW_PASSPHRASE_FILE or CHATVAULT_NEW_PASSPHRASE",
        })?;
        // A vault linked to an account changes the account first: changed
        // only here, the old passphrase would still open the account (and
        // its envelope) and this device could no longer sign in.
        let vault = Arc::new(vault);
        if let Some(client) = sync::linked_client(&vault, &old).await? {
            client
                .change_passphrase(old.expose(), new.expose())
                .await
                .context("cannot change the passphrase")?;
            outln!(
                "passphrase changed on this device and for account {} (its other sessions \
                 were signed out)",
                client.username()
            );
            if rotate_key {
                client
                    .rotate_data_key(new.expose())
                    .await
                    .context("the passphrase was changed, but the data key was not rotated")?;
                outln!(
                    "data key rotated here and on the account; run `chatvault rekey` to \
                     re-seal older records"
                );
            }
            return Ok(());
        }
        vault
            .change_passphrase(old.expose(), new.expose())
            .await
            .context("cannot change the passphrase")?;
        outln!("passphrase changed");
        if rotate_key {
            vault
                .rotate_data_key(new.expose())
                .await
                .context("the passphrase was changed, but the data key was not rotated")?;
            outln!("data key rotated; run `chatvault rekey` to re-seal older records");
        }
        Ok(())
    }

    async fn rekey(&self) -> Result<()> {
        let (vault, _passphrase) = self.open_encrypted(": nothing to re-key").await?;
        let bar = crate::progress::bar(None, "re-keying");
        let shown = bar.clone();
        let report = vault
            .rekey(Some(std::sync::Arc::new(move |p: chatvault::Progress| {
                if let Some(total) = p.total {
                    shown.set_length(total);
                }
                shown.set_position(p.done);
            })))
            .await
            .context("cannot re-key the vault")?;
        bar.finish_and_clear();
        outln!(
            "re-sealed {} of {} records under the newest key{}",
            report.resealed,
            report.seen,
            if report.damaged.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} damaged records left as they were",
                    report.damaged.len()
                )
            }
        );
        Ok(())
    }
}

/// How the CLI opens vaults. A due retention policy is not run by the
/// open itself but by [`apply_due_retention`], which says what it removed.
pub(crate) fn vault_options() -> VaultOptions {
    VaultOptions::default()
}

/// Applies the stored retention policy if it is due (the CLI has no daemon
/// to run it otherwise) and says so in one line on stderr: what it
/// removed, or why it was not applied. Never fails the command.
async fn apply_due_retention(vault: &Vault) {
    match vault.apply_due_retention().await {
        Ok(None) => {}
        Ok(Some(report)) => eprintln!(
            "retention: the stored policy ({}) deleted {} conversation(s), {}; \
             see `chatvault retention show`",
            retention::describe(&report.policy),
            report.plan.delete.len(),
            crate::output::bytes(report.plan.bytes_freed)
        ),
        Err(e) => eprintln!(
            "warning: the stored retention policy was not applied: {e}; change it with \
             `chatvault retention set` or remove it with `chatvault retention clear`"
        ),
    }
}

/// Asks `question` (y/N) on the terminal; without one, `yes` (a `--yes`
/// flag) stands for the answer, and its absence is an error that says
/// `refusal` and how to confirm.
pub(crate) fn confirm(question: &str, yes: bool, refusal: &str) -> Result<bool> {
    use std::io::{IsTerminal as _, Write as _};
    if yes {
        return Ok(true);
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        bail!("{refusal} without confirmation: pass --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
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
