//! What a vault records about itself and the keys that open it: the header
//! (format, device id, encrypted or not), creating a vault, unlocking it,
//! and every key-envelope operation — a local passphrase change, and the
//! ones that keep a vault and its sync account on one data key (join on a
//! new device, adopt an envelope changed elsewhere, a two-step passphrase
//! change) reached through [`Replica`].
//!
//! The envelope is read by [`read_envelope`] and written through
//! [`envelope_op`], nowhere else.
//!
//! Must never replace a vault's key envelope with one that wraps a
//! different data key (the vault's records would become unreadable), and
//! never treat a vault whose header says "encrypted" as plaintext.

use super::replica::Replica;
use super::{Vault, VaultOptions};
use crate::codec::Codec;
use crate::{meta_keys, Result, VaultError};
use chatvault_core::{CoreError, DeviceId, EntityKind, Timestamp};
use chatvault_crypto::{AuthKey, DataKey, KdfParams, KeyEnvelope, PassphraseKeys, RecordAad, Salt};
use chatvault_store::{ConversationQuery, Store, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Version of the vault header layout.
const HEADER_VERSION: u32 = 1;

/// What a vault records about itself, in the store's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VaultHeader {
    format_version: u32,
    pub(super) device_id: DeviceId,
    created_at: Timestamp,
    /// Recorded so a deleted key envelope is an error, never a silent
    /// switch to plaintext.
    #[serde(default)]
    pub(super) encrypted: bool,
}

pub(super) async fn read_header(store: &dyn Store) -> Result<Option<VaultHeader>> {
    let Some(bytes) = store.meta(meta_keys::HEADER).await? else {
        return Ok(None);
    };
    let header: VaultHeader =
        serde_json::from_slice(&bytes).map_err(|e| VaultError::CorruptMetadata {
            key: meta_keys::HEADER,
            reason: e.to_string(),
        })?;
    if header.format_version > HEADER_VERSION {
        return Err(VaultError::NewerFormat {
            found: header.format_version,
            supported: HEADER_VERSION,
        });
    }
    Ok(Some(header))
}

/// A key envelope as stored (its JSON, compared byte for byte to detect a
/// change) and parsed.
pub(super) struct StoredEnvelope {
    pub(super) json: String,
    pub(super) envelope: KeyEnvelope,
}

/// The stored key envelope of an encrypted vault.
pub(super) async fn read_envelope(store: &dyn Store) -> Result<StoredEnvelope> {
    let bytes = store
        .meta(meta_keys::KEYS)
        .await?
        .ok_or(VaultError::MissingEnvelope)?;
    let json = String::from_utf8(bytes).map_err(|_| VaultError::CorruptMetadata {
        key: meta_keys::KEYS,
        reason: "not text".into(),
    })?;
    let envelope = KeyEnvelope::from_json(&json)?;
    Ok(StoredEnvelope { json, envelope })
}

/// The write that stores `envelope` as the vault's key envelope.
pub(super) fn envelope_op(envelope: &KeyEnvelope) -> WriteOp {
    WriteOp::SetMeta(meta_keys::KEYS.into(), envelope.to_json().into_bytes())
}

async fn write_envelope(store: &dyn Store, envelope: &KeyEnvelope) -> Result<()> {
    let mut batch = WriteBatch::new();
    batch.push(envelope_op(envelope));
    store.write(batch).await?;
    Ok(())
}

/// The keys a new vault is created with.
pub(super) enum NewKeys<'a> {
    /// None: a plaintext vault.
    Plain,
    /// This envelope (new, or the sync account's) and the data key it wraps.
    Sealed(&'a KeyEnvelope, DataKey),
}

/// Writes the header (and key envelope) of a new vault in one batch.
pub(super) async fn create(
    store: &dyn Store,
    options: &VaultOptions,
    keys: NewKeys<'_>,
) -> Result<(VaultHeader, Codec)> {
    let header = VaultHeader {
        format_version: HEADER_VERSION,
        device_id: DeviceId::from_random(crate::random::u64()?),
        created_at: options.clock.now(),
        encrypted: matches!(keys, NewKeys::Sealed(..)),
    };
    let header_json = serde_json::to_vec(&header).map_err(|e| {
        VaultError::Invalid(CoreError::Invalid {
            field: "header",
            reason: e.to_string(),
        })
    })?;
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::SetMeta(meta_keys::HEADER.into(), header_json));
    let codec = match keys {
        NewKeys::Plain => Codec::Plain,
        NewKeys::Sealed(envelope, data) => {
            batch.push(envelope_op(envelope));
            Codec::Sealed(data)
        }
    };
    store.write(batch).await?;
    tracing::info!(backend = store.backend(), device = %header.device_id, encrypted = header.encrypted, "created vault");
    Ok((header, codec))
}

/// Opens (creating if the store is empty) the vault in `store`, unlocking
/// it with `passphrase` if given.
pub(super) async fn open(
    store: Arc<dyn Store>,
    options: VaultOptions,
    passphrase: Option<&str>,
) -> Result<Vault> {
    let (header, codec) = match (read_header(store.as_ref()).await?, passphrase) {
        (None, None) => create(store.as_ref(), &options, NewKeys::Plain).await?,
        (None, Some(p)) => {
            let (envelope, keys) =
                KeyEnvelope::create_with_policy(p, options.kdf, options.kdf_policy)?;
            create(
                store.as_ref(),
                &options,
                NewKeys::Sealed(&envelope, keys.data),
            )
            .await?
        }
        (Some(h), None) if h.encrypted => return Err(VaultError::Locked),
        (Some(h), None) => (h, Codec::Plain),
        (Some(h), Some(_)) if !h.encrypted => return Err(VaultError::NotEncrypted),
        (Some(h), Some(passphrase)) => {
            let stored = read_envelope(store.as_ref()).await?;
            let keys = stored
                .envelope
                .unlock_with_policy(passphrase, options.kdf_policy)?;
            (h, Codec::Sealed(keys.data))
        }
    };
    Vault::assemble(store, options, header, codec).await
}

/// Opens the encrypted vault in `store` on an account's key envelope
/// (`envelope_json`, from the sync server) with its passphrase, so the
/// vault uses the account's data key:
///
/// - an empty store gets a new vault (new device id) whose envelope is that
///   one — records pushed by the account's other devices decrypt here;
/// - a store holding a vault of the same account whose envelope differs
///   (the passphrase was changed elsewhere, or a local change was
///   interrupted) adopts it, after checking that its data key opens the
///   vault's records;
/// - anything else is refused: [`VaultError::WrongPassphrase`],
///   [`VaultError::NotEncrypted`] for a plaintext vault,
///   [`VaultError::ForeignAccountKey`] for a vault of another account.
pub(super) async fn open_with_envelope(
    store: Arc<dyn Store>,
    envelope_json: &str,
    passphrase: &str,
    options: VaultOptions,
) -> Result<Vault> {
    let envelope = KeyEnvelope::from_json(envelope_json)?;
    let theirs = envelope
        .unlock_with_policy(passphrase, options.kdf_policy)?
        .data;
    let header = match read_header(store.as_ref()).await? {
        // A new vault is created on the account's envelope directly, in
        // one write: the data key is the account's from the start.
        None => {
            let (header, codec) =
                create(store.as_ref(), &options, NewKeys::Sealed(&envelope, theirs)).await?;
            return Vault::assemble(store, options, header, codec).await;
        }
        Some(h) if !h.encrypted => return Err(VaultError::NotEncrypted),
        Some(h) => h,
    };
    if read_envelope(store.as_ref()).await?.envelope != envelope {
        if !opens_local_records(store.as_ref(), &theirs).await? {
            return Err(VaultError::ForeignAccountKey);
        }
        write_envelope(store.as_ref(), &envelope).await?;
        tracing::info!("vault now uses the sync account's key envelope");
    }
    // The envelope now in the vault wraps `theirs`: no second unlock.
    Vault::assemble(store, options, header, Codec::Sealed(theirs)).await
}

impl Vault {
    /// Changes the passphrase of an encrypted vault. Only the wrapped data
    /// key is rewritten (no record is re-encrypted), in one atomic write: a
    /// crash leaves either the old or the new passphrase working.
    ///
    /// A vault that syncs changes its passphrase through the sync client,
    /// which updates the server's copy first.
    pub async fn change_passphrase(&self, old: &str, new: &str) -> Result<()> {
        if !self.is_encrypted() {
            return Err(VaultError::NotEncrypted);
        }
        let stored = read_envelope(self.store.as_ref()).await?;
        let (rewrapped, _keys) =
            stored
                .envelope
                .rewrap_with_policy(old, new, self.kdf, self.kdf_policy)?;
        write_envelope(self.store.as_ref(), &rewrapped).await?;
        tracing::info!("vault passphrase changed");
        Ok(())
    }
}

/// A passphrase change prepared in memory by
/// [`Replica::prepare_passphrase_change`]: the new envelope (the same data
/// key wrapped under the new passphrase) and the credentials it yields, to
/// hand to the server before [`Replica::commit_passphrase_change`] stores it
/// locally. Keys are wiped on drop.
pub struct PassphraseChange {
    previous: String,
    envelope: KeyEnvelope,
    auth_key: AuthKey,
}

impl PassphraseChange {
    /// The new key envelope as JSON (what the server stores).
    pub fn envelope_json(&self) -> String {
        self.envelope.to_json()
    }

    /// KDF parameters of the new passphrase.
    pub fn kdf(&self) -> &KdfParams {
        self.envelope.kdf()
    }

    /// Salt of the new passphrase.
    pub fn salt(&self) -> &Salt {
        self.envelope.salt()
    }

    /// The server-auth key the new passphrase yields.
    pub fn auth_key(&self) -> &AuthKey {
        &self.auth_key
    }
}

impl std::fmt::Debug for PassphraseChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassphraseChange")
            .field("kdf", self.envelope.kdf())
            .finish_non_exhaustive()
    }
}

impl Replica<'_> {
    /// The key envelope (wrapped data key) of an encrypted vault, as JSON;
    /// `None` for a plaintext vault.
    pub async fn key_envelope_json(&self) -> Result<Option<String>> {
        if !self.vault.is_encrypted() {
            return Ok(None);
        }
        Ok(Some(read_envelope(self.vault.store.as_ref()).await?.json))
    }

    /// First half of a passphrase change that must also reach a server:
    /// wraps this vault's data key under `new` (fresh salt, the vault's KDF
    /// parameters) without storing anything. Send the result to the server,
    /// then [`commit_passphrase_change`](Self::commit_passphrase_change).
    ///
    /// [`VaultError::WrongPassphrase`] if `old` does not open the vault.
    pub async fn prepare_passphrase_change(
        &self,
        old: &str,
        new: &str,
    ) -> Result<PassphraseChange> {
        let vault = self.vault;
        if !vault.is_encrypted() {
            return Err(VaultError::NotEncrypted);
        }
        let stored = read_envelope(vault.store.as_ref()).await?;
        let (rewrapped, keys) =
            stored
                .envelope
                .rewrap_with_policy(old, new, vault.kdf, vault.kdf_policy)?;
        Ok(PassphraseChange {
            previous: stored.json,
            envelope: rewrapped,
            auth_key: keys.auth,
        })
    }

    /// Second half of a passphrase change: stores the prepared envelope, in
    /// one atomic write, if the vault's envelope is still the one it was
    /// prepared from (otherwise nothing changes:
    /// [`VaultError::EnvelopeChanged`]).
    pub async fn commit_passphrase_change(&self, change: &PassphraseChange) -> Result<()> {
        let store = self.vault.store.as_ref();
        if read_envelope(store).await?.json != change.previous {
            return Err(VaultError::EnvelopeChanged);
        }
        write_envelope(store, &change.envelope).await?;
        tracing::info!("vault passphrase changed (prepared change committed)");
        Ok(())
    }

    /// Makes `envelope_json` (fetched from the sync server, opened with
    /// `keys` derived from the account's current salt and parameters) this
    /// vault's key envelope — after a passphrase change made on another
    /// device, or one whose local half was interrupted. Refused with
    /// [`VaultError::ForeignAccountKey`] unless it wraps this vault's own
    /// data key. `false` if it already was the vault's envelope.
    pub async fn adopt_key_envelope(
        &self,
        envelope_json: &str,
        keys: &PassphraseKeys,
    ) -> Result<bool> {
        let Codec::Sealed(own) = self.vault.codec.as_ref() else {
            return Err(VaultError::NotEncrypted);
        };
        let store = self.vault.store.as_ref();
        let current = read_envelope(store).await?;
        let envelope = KeyEnvelope::from_json(envelope_json)?;
        if current.envelope == envelope {
            return Ok(false);
        }
        let theirs = envelope.unlock_with_keys(keys)?.data;
        if !same_data_key(own, &theirs)? {
            return Err(VaultError::ForeignAccountKey);
        }
        write_envelope(store, &envelope).await?;
        tracing::info!("adopted the key envelope of the sync account");
        Ok(true)
    }
}

/// Whether two data keys are the same key: what one seals, the other opens.
fn same_data_key(a: &DataKey, b: &DataKey) -> Result<bool> {
    let aad = RecordAad::new("chatvault/key-check", "0");
    let probe = a.seal(&aad, b"same key?")?;
    Ok(b.open(&aad, &probe).is_ok())
}

/// Whether `key` opens the vault's records (checked on one conversation: a
/// vault without conversations has nothing to lose).
async fn opens_local_records(store: &dyn Store, key: &DataKey) -> Result<bool> {
    let rows = store
        .conversations(&ConversationQuery {
            limit: 1,
            ..ConversationQuery::default()
        })
        .await?;
    let Some(row) = rows.first() else {
        return Ok(true);
    };
    let id = row.record.id.to_string();
    let aad = RecordAad::new(EntityKind::Conversation.as_str(), &id);
    Ok(key.open(&aad, row.record.body.as_bytes()).is_ok())
}
