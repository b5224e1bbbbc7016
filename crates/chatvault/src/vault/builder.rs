//! How a vault is opened: [`VaultBuilder`] (any store, or a SQLite file
//! with its durability and quota; plaintext or encrypted; on a sync
//! account's key envelope), the [`VaultOptions`] it fills, and
//! [`VaultProbe`], what a store holds before it is opened.
//!
//! Must never delete data while opening unless the caller asked for it
//! ([`VaultBuilder::run_due_retention`]).

use super::{keys, Vault};
use crate::clock::{Clock, SystemClock};
use crate::{Result, VaultError};
use chatvault_core::{CoreError, UserId};
use chatvault_crypto::{KdfParams, KdfPolicy};
use chatvault_store::Store;
use std::sync::Arc;
use zeroize::Zeroizing;

/// How to open a [`Vault`]: everything but the store and the passphrase.
#[derive(Clone)]
pub struct VaultOptions {
    /// The owner recorded on new conversations.
    pub user_id: UserId,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Argon2id parameters for a new encrypted vault or a new passphrase
    /// (default: the OWASP minimum, m=19 MiB, t=2, p=1).
    pub kdf: KdfParams,
    /// Which parameters are accepted when unlocking. Keep the default
    /// (strict); tests may relax it to stay fast.
    pub kdf_policy: KdfPolicy,
    /// Apply the stored retention policy while opening if it has not run
    /// for a day (default `false`: opening never deletes unless asked).
    pub run_due_retention: bool,
    /// The largest stored body (after encryption) a write may produce;
    /// larger content is refused with [`VaultError::RecordTooLarge`](crate::VaultError::RecordTooLarge).
    /// Default [`Body::MAX_SYNC_BYTES`](chatvault_core::Body::MAX_SYNC_BYTES),
    /// the most that still syncs through a default server.
    pub max_record_bytes: usize,
}

impl Default for VaultOptions {
    fn default() -> Self {
        Self {
            user_id: UserId::local(),
            clock: Arc::new(SystemClock),
            kdf: KdfParams::default(),
            kdf_policy: KdfPolicy::default(),
            run_due_retention: false,
            max_record_bytes: chatvault_core::Body::MAX_SYNC_BYTES,
        }
    }
}

impl std::fmt::Debug for VaultOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultOptions")
            .field("user_id", &self.user_id)
            .field("run_due_retention", &self.run_due_retention)
            .finish_non_exhaustive()
    }
}

/// What a store holds, found by [`Vault::probe`] without a passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultProbe {
    /// No vault yet: opening creates one.
    Empty,
    /// A plaintext vault: open it without a passphrase.
    Plaintext,
    /// An encrypted vault: opening needs its passphrase.
    Encrypted,
}

/// Where the vault is.
enum Target {
    None,
    Store(Arc<dyn Store>),
    #[cfg(feature = "sqlite")]
    Sqlite(std::path::PathBuf),
}

/// Opens a [`Vault`] step by step; start with [`Vault::builder`].
///
/// ```no_run
/// # async fn demo() -> chatvault::Result<()> {
/// use chatvault::{Durability, Vault};
/// let vault = Vault::builder()
///     .sqlite("chats.db")
///     .durability(Durability::Normal)
///     .quota(512 * 1024 * 1024)
///     .passphrase("correct horse battery staple")
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `open` is awaited"]
pub struct VaultBuilder {
    target: Target,
    options: VaultOptions,
    passphrase: Option<Zeroizing<String>>,
    account_envelope: Option<String>,
    #[cfg(feature = "sqlite")]
    sqlite: chatvault_sqlite::SqliteOptions,
    /// Whether a SQLite-only option was set (refused with another store).
    #[cfg(feature = "sqlite")]
    sqlite_tuned: bool,
}

impl std::fmt::Debug for VaultBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultBuilder")
            .field("options", &self.options)
            .field("encrypted", &self.passphrase.is_some())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// A [`VaultBuilder`] with default options and no store chosen yet.
    pub fn builder() -> VaultBuilder {
        VaultBuilder {
            target: Target::None,
            options: VaultOptions::default(),
            passphrase: None,
            account_envelope: None,
            #[cfg(feature = "sqlite")]
            sqlite: chatvault_sqlite::SqliteOptions::default(),
            #[cfg(feature = "sqlite")]
            sqlite_tuned: false,
        }
    }
}

impl VaultBuilder {
    /// Opens the vault in `store` (any backend).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.target = Target::Store(store);
        self
    }

    /// Opens the vault in the SQLite file at `path`, creating the file if
    /// it does not exist.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.target = Target::Sqlite(path.into());
        self
    }

    /// How hard a SQLite commit works to be durable (default
    /// [`Durability::Full`](chatvault_sqlite::Durability::Full)).
    #[cfg(feature = "sqlite")]
    pub fn durability(mut self, durability: chatvault_sqlite::Durability) -> Self {
        self.sqlite.durability = durability;
        self.sqlite_tuned = true;
        self
    }

    /// The most bytes the SQLite file may grow to: writes past it fail with
    /// [`StoreError::Full`](chatvault_store::StoreError::Full) and change
    /// nothing (default: no quota).
    #[cfg(feature = "sqlite")]
    pub fn quota(mut self, max_bytes: u64) -> Self {
        self.sqlite.max_bytes = Some(max_bytes);
        self.sqlite_tuned = true;
        self
    }

    /// Unlocks (or creates) an encrypted vault with this passphrase.
    /// Without one, the vault must be (or is created) plaintext.
    pub fn passphrase(mut self, passphrase: &str) -> Self {
        self.passphrase = Some(Zeroizing::new(passphrase.to_owned()));
        self
    }

    /// Opens the vault on a sync account's key envelope (JSON, from the
    /// sync server) so it uses the account's data key: an empty store gets
    /// a new vault on it; a vault of the same account adopts it; a vault of
    /// another account is refused with
    /// [`VaultError::ForeignAccountKey`]. Needs
    /// [`passphrase`](Self::passphrase).
    pub fn account_envelope(mut self, envelope_json: &str) -> Self {
        self.account_envelope = Some(envelope_json.to_owned());
        self
    }

    /// Replaces every option at once.
    pub fn options(mut self, options: VaultOptions) -> Self {
        self.options = options;
        self
    }

    /// The time source (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.options.clock = clock;
        self
    }

    /// The owner recorded on new conversations.
    pub fn user(mut self, user: UserId) -> Self {
        self.options.user_id = user;
        self
    }

    /// Argon2id parameters for a new vault or passphrase, and the policy
    /// unlocking accepts.
    pub fn kdf(mut self, params: KdfParams, policy: KdfPolicy) -> Self {
        self.options.kdf = params;
        self.options.kdf_policy = policy;
        self
    }

    /// The largest stored body a write may produce (default
    /// [`Body::MAX_SYNC_BYTES`](chatvault_core::Body::MAX_SYNC_BYTES)); a
    /// server configured with a larger request limit can take larger ones.
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.options.max_record_bytes = bytes;
        self
    }

    /// Whether to apply the stored retention policy while opening, if it
    /// has not run for a day (default `false`: opening never deletes
    /// unless asked).
    pub fn run_due_retention(mut self, run: bool) -> Self {
        self.options.run_due_retention = run;
        self
    }

    /// Opens the vault, creating it if the store is empty.
    ///
    /// Errors as [`Vault::open`] and [`Vault::open_encrypted`]; an
    /// [`VaultError::Invalid`] if no store was chosen, if SQLite options
    /// were set for another store, or if an account envelope comes without
    /// a passphrase.
    pub async fn open(self) -> Result<Vault> {
        let store: Arc<dyn Store> = match self.target {
            Target::None => {
                return Err(invalid(
                    "no store chosen: call .sqlite(path) or .store(store)",
                ))
            }
            #[cfg(feature = "sqlite")]
            Target::Store(_) if self.sqlite_tuned => {
                return Err(invalid(
                    "durability and quota are SQLite options: use .sqlite(path)",
                ))
            }
            Target::Store(store) => store,
            #[cfg(feature = "sqlite")]
            Target::Sqlite(path) => {
                Arc::new(chatvault_sqlite::SqliteStore::open(path, self.sqlite).await?)
            }
        };
        let passphrase = self.passphrase.as_ref().map(|p| p.as_str());
        match (self.account_envelope, passphrase) {
            (Some(envelope), Some(passphrase)) => {
                keys::open_with_envelope(store, &envelope, passphrase, self.options).await
            }
            (Some(_), None) => Err(invalid("an account envelope needs its passphrase")),
            (None, passphrase) => keys::open(store, self.options, passphrase).await,
        }
    }
}

fn invalid(reason: &str) -> VaultError {
    VaultError::Invalid(CoreError::Invalid {
        field: "vault builder",
        reason: reason.into(),
    })
}
