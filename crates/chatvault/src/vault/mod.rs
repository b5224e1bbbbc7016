//! [`Vault`]: what applications use. It stamps ids, times and versions,
//! encodes (and in an encrypted vault, encrypts) content, and writes every
//! change together with its outbox entry in one atomic batch.
//!
//! The struct and its fields live here, private to this module tree; each
//! concern is its own child module adding methods to it:
//! - `builder` — [`VaultBuilder`], [`VaultOptions`], [`VaultProbe`]: how a
//!   vault is opened.
//! - `types` — the app API's request and answer types.
//! - `records` — conversations and messages (the app API).
//! - `keys` — header, key envelope, unlocking, passphrase changes.
//! - `kv` — key-value state sealed with the vault's keys.
//! - `stamps` — the hybrid logical clock, its persisted mark and the one
//!   stamped write path.
//! - `replica` — [`Replica`]: what only the sync client needs.
//! - `settings` — stored settings (retention policy) and progress reports.
//! - `retention_run`, `storage`, `export_run`, `import_run` — the data
//!   lifecycle: applying core's retention plans, storage stats and
//!   compaction, export and import files.
//! - `migrate` — the vault moved whole into another store
//!   ([`Vault::migrate`]).
//!
//! Must never let a sibling outside `vault` reach into the vault's state:
//! they go through its methods.

mod builder;
mod export_run;
mod import_run;
mod keys;
mod kv;
mod migrate;
mod records;
mod replica;
mod retention_run;
mod settings;
mod stamps;
mod storage;
mod types;

pub use builder::{VaultBuilder, VaultOptions, VaultProbe};
pub use export_run::{ExportEncryption, ExportOptions, ExportReport};
pub use import_run::{ImportOptions, ImportReader, ImportRejection, ImportReport, ImportSource};
pub use keys::{PassphraseChange, RekeyReport};
pub use kv::{KvSealer, SealedKv};
pub use replica::{RemoteApply, Replica};
pub use retention_run::{RetentionMode, RetentionReport};
pub use settings::{is_encrypted_export, Progress, ProgressFn, ProgressPhase};
pub use storage::{CompactionReport, StorageFootprint};
pub use types::{
    ApplyReport, ConversationStats, ConversationUpdate, DamagedRecords, ListConversations,
    ListMessages, MessageUpdate, NewConversation, NewMessage, VaultStats,
};

use crate::clock::Clock;
use crate::codec::Codec;
use crate::Result;
use chatvault_core::Hlc;
use chatvault_core::{DeviceId, HlcClock, UserId};
use chatvault_crypto::{KdfParams, KdfPolicy};
use chatvault_store::Store;
use std::sync::{Arc, Mutex};

/// A local-first chat store: conversations and messages, written to a
/// store with their outbox entries, optionally encrypted.
///
/// Open one with [`Vault::builder`] or a shortcut ([`Vault::open`],
/// [`Vault::open_encrypted`], and with the `sqlite` feature
/// `Vault::open_sqlite` / `Vault::open_encrypted_sqlite`). What a sync
/// client needs is behind [`Vault::replica`].
pub struct Vault {
    store: Arc<dyn Store>,
    /// Shared so a bulk import can encode on its own thread.
    codec: Arc<Codec>,
    clock: Mutex<HlcClock>,
    /// The far-ahead clock mark this vault re-based away from on open,
    /// until its first stamped write replaces it (see `stamps`).
    rebase_from: Mutex<Option<Hlc>>,
    /// Stamped writes of this process take turns (see
    /// `Vault::commit_stamped`), so they never refuse each other's claims.
    writing: futures::lock::Mutex<()>,
    /// What [`meta_keys::DATA_KEY`](crate::meta_keys::DATA_KEY) must hold
    /// for this handle's writes of an encrypted vault (the id of the key
    /// it seals with; `None`: absent, an envelope from before the fence).
    key_fence: Mutex<Option<Vec<u8>>>,
    time: Arc<dyn Clock>,
    user: UserId,
    kdf: KdfParams,
    kdf_policy: KdfPolicy,
    /// See [`VaultOptions::max_record_bytes`].
    max_record_bytes: usize,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("backend", &self.store.backend())
            .field("encrypted", &self.codec.is_encrypted())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// `body` of record `id`, sealed at version `from`, sealed again for
    /// version `to`: what another device holding this vault's key would
    /// have written at `to`. Lets the conformance suite fabricate another
    /// device's version of a record (the version is bound into the seal,
    /// so re-dating a body alone reads as tampering).
    #[cfg(feature = "testing")]
    pub(crate) fn reseal_for_tests(
        &self,
        kind: chatvault_core::EntityKind,
        id: chatvault_core::RecordId,
        conversation: Option<chatvault_core::ConversationId>,
        (from, to): (Hlc, Hlc),
        body: &chatvault_core::Body,
    ) -> Result<chatvault_core::Body> {
        self.codec.reseal(kind, id, conversation, (from, to), body)
    }

    /// Opens a plaintext vault on `store`, creating it if the store is
    /// empty. An encrypted vault answers [`VaultError::Locked`](crate::VaultError::Locked):
    /// open it with [`Vault::open_encrypted`].
    pub async fn open(store: Arc<dyn Store>, options: VaultOptions) -> Result<Vault> {
        keys::open(store, options, None).await
    }

    /// Opens an encrypted vault with its passphrase, creating it (encrypted
    /// under that passphrase) if the store is empty. A wrong passphrase is
    /// [`VaultError::WrongPassphrase`](crate::VaultError::WrongPassphrase);
    /// a plaintext vault is [`VaultError::NotEncrypted`](crate::VaultError::NotEncrypted).
    pub async fn open_encrypted(
        store: Arc<dyn Store>,
        passphrase: &str,
        options: VaultOptions,
    ) -> Result<Vault> {
        keys::open(store, options, Some(passphrase)).await
    }

    /// Opens (creating if needed) a plaintext vault in a SQLite file with
    /// default (fully durable) settings.
    #[cfg(feature = "sqlite")]
    pub async fn open_sqlite(
        path: impl AsRef<std::path::Path>,
        options: VaultOptions,
    ) -> Result<Vault> {
        Self::builder()
            .sqlite(path.as_ref())
            .options(options)
            .open()
            .await
    }

    /// Opens (creating if needed) an encrypted vault in a SQLite file with
    /// default (fully durable) settings.
    #[cfg(feature = "sqlite")]
    pub async fn open_encrypted_sqlite(
        path: impl AsRef<std::path::Path>,
        passphrase: &str,
        options: VaultOptions,
    ) -> Result<Vault> {
        Self::builder()
            .sqlite(path.as_ref())
            .options(options)
            .passphrase(passphrase)
            .open()
            .await
    }

    /// What `store` holds: no vault yet, a plaintext or an encrypted one.
    /// Reads only the header (no passphrase needed).
    pub async fn probe(store: &dyn Store) -> Result<VaultProbe> {
        keys::probe(store).await
    }

    /// A vault on `store` once its header is known and its content key
    /// unlocked: resumes the clock and, if asked, applies a due retention
    /// policy.
    async fn assemble(
        store: Arc<dyn Store>,
        options: VaultOptions,
        header: keys::VaultHeader,
        codec: Codec,
    ) -> Result<Vault> {
        let mark = stamps::stored_mark(store.as_ref()).await?;
        let (clock, rebase_from) = stamps::resume(header.device_id, mark, options.clock.now());
        // The key this handle seals with, if the store names one at all: a
        // rotation by another process since the unlock then shows as a
        // mismatch on the first write, never as a write under the old key.
        let key_fence = match codec.keyring() {
            Some(keyring) => {
                keys::name_data_key(store.as_ref()).await?;
                Some(keyring.current_key_id().to_string().into_bytes())
            }
            None => None,
        };
        let vault = Vault {
            store,
            codec: Arc::new(codec),
            clock: Mutex::new(clock),
            rebase_from: Mutex::new(rebase_from),
            writing: futures::lock::Mutex::new(()),
            key_fence: Mutex::new(key_fence),
            time: options.clock,
            user: options.user_id,
            kdf: options.kdf,
            kdf_policy: options.kdf_policy,
            max_record_bytes: options.max_record_bytes,
        };
        if options.run_due_retention {
            vault.run_scheduled_retention().await;
        }
        Ok(vault)
    }

    /// The store the vault writes to. Writing to it directly bypasses the
    /// outbox and the codec: use it for backend-specific calls only.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether content is encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.codec.is_encrypted()
    }

    /// This device's id, part of every version stamp it writes.
    pub fn device_id(&self) -> DeviceId {
        self.lock_clock().device()
    }

    /// Locks the vault: drops it, wiping its keys from memory.
    pub fn lock(self) {
        drop(self);
    }
}
