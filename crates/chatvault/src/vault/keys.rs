//! What a vault records about itself and the keys that open it: the header
//! (format, device id, encrypted or not), creating a vault, unlocking it,
//! and every key-envelope operation — a local passphrase change, and the
//! ones that keep a vault and its sync account on one data key (join on a
//! new device, adopt an envelope changed elsewhere, a two-step passphrase
//! change) reached through [`Replica`].
//!
//! Also data-key rotation ([`Vault::rotate_data_key`],
//! [`Replica::prepare_key_rotation`]) and re-sealing old records under the
//! newest key ([`Vault::rekey`]).
//!
//! The envelope is read by [`read_envelope`] and written through
//! [`envelope_op`], nowhere else.
//!
//! Fail closed: the vault's mode is implied by its key material and checked
//! both ways on every open — a store holding a key envelope (or sealed
//! records) never opens as plaintext, whatever its header says, and a
//! header that says "encrypted" without an envelope is an error.
//!
//! Must never replace a vault's key envelope with one whose keyring lacks
//! a key of the current one (the vault's records would become unreadable),
//! adopt an envelope of a lower generation, or treat a vault with key
//! material as plaintext.

use super::replica::Replica;
use super::settings::{Progress, ProgressFn, ProgressPhase};
use super::{Vault, VaultOptions};
use crate::codec::Codec;
use crate::codec::{ConversationBody, MessageBody};
use crate::{meta_keys, Result, VaultError};
use chatvault_core::{CoreError, DeviceId, EntityKind, MessageCursor, Timestamp};
use chatvault_crypto::{AuthKey, KdfParams, KeyEnvelope, Keyring, PassphraseKeys, Salt};
use chatvault_store::{ConversationQuery, MessageQuery, Store, StoreError, WriteBatch, WriteOp};
use futures::TryStreamExt;
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
    // Half a vault (a migration that stopped) must never open as one.
    if store.meta(meta_keys::MIGRATION).await?.is_some() {
        return Err(StoreError::IncompleteMigration.into());
    }
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
/// Stores `envelope`, with the id of its newest key ([`meta_keys::DATA_KEY`]).
pub(super) fn envelope_ops(envelope: &KeyEnvelope) -> [WriteOp; 2] {
    [
        WriteOp::SetMeta(meta_keys::KEYS.into(), envelope.to_json().into_bytes()),
        WriteOp::SetMeta(meta_keys::DATA_KEY.into(), data_key_fence(envelope)),
    ]
}

/// What [`meta_keys::DATA_KEY`] holds for `envelope`.
fn data_key_fence(envelope: &KeyEnvelope) -> Vec<u8> {
    envelope
        .key_ids()
        .last()
        .map(|id| id.to_string())
        .unwrap_or_default()
        .into_bytes()
}

/// Names the stored envelope's newest key in [`meta_keys::DATA_KEY`] if the
/// envelope predates that key (written by an older chatvault), so every
/// handle opened from now on is fenced. Best effort on a store that cannot
/// be written (read-only): such a handle writes nothing anyway.
pub(super) async fn name_data_key(store: &dyn Store) -> Result<()> {
    if store.meta(meta_keys::DATA_KEY).await?.is_some() {
        return Ok(());
    }
    let stored = read_envelope(store).await?;
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::SetMeta(
        meta_keys::DATA_KEY.into(),
        data_key_fence(&stored.envelope),
    ));
    if let Err(e) = store.write(batch).await {
        tracing::warn!("cannot name the vault's data key (a read-only store?): {e}");
    }
    Ok(())
}

/// Stores `envelope` and makes `vault` (if any) expect its data key from
/// then on.
async fn write_envelope(store: &dyn Store, envelope: &KeyEnvelope) -> Result<()> {
    let mut batch = WriteBatch::new();
    for op in envelope_ops(envelope) {
        batch.push(op);
    }
    store.write(batch).await?;
    Ok(())
}

/// Whether the store holds a key envelope (without parsing it).
async fn has_envelope(store: &dyn Store) -> Result<bool> {
    Ok(store.meta(meta_keys::KEYS).await?.is_some())
}

/// Fails closed when a header that says (or implies) "plaintext" sits next
/// to key material: a key envelope, or a first conversation whose body is
/// a sealed blob rather than JSON. Run before opening any vault as
/// plaintext, or creating one over a store that lost its header.
async fn check_plaintext(store: &dyn Store) -> Result<()> {
    if has_envelope(store).await? {
        return Err(VaultError::TamperedHeader {
            detail: "plaintext header but a key envelope is present",
        });
    }
    let rows = store
        .conversations(&ConversationQuery {
            limit: 1,
            ..ConversationQuery::default()
        })
        .await?;
    // Plaintext bodies are JSON objects; sealed blobs start with their
    // format byte (1 or 2).
    if let Some(first) = rows.first().and_then(|r| r.record.body.as_bytes().first()) {
        if *first != b'{' {
            return Err(VaultError::TamperedHeader {
                detail: "plaintext header but the records are encrypted",
            });
        }
    }
    Ok(())
}

/// What `store` holds, failing closed like opening does: a header that
/// says plaintext next to key material is [`VaultError::TamperedHeader`].
pub(super) async fn probe(store: &dyn Store) -> Result<super::VaultProbe> {
    use super::VaultProbe;
    let header = read_header(store).await?;
    if !header.as_ref().is_some_and(|h| h.encrypted) {
        check_plaintext(store).await?;
    }
    Ok(match header {
        None => VaultProbe::Empty,
        Some(h) if h.encrypted => VaultProbe::Encrypted,
        Some(_) => VaultProbe::Plaintext,
    })
}

/// The keys a new vault is created with.
pub(super) enum NewKeys<'a> {
    /// None: a plaintext vault.
    Plain,
    /// This envelope (new, or the sync account's) and the keyring it wraps.
    Sealed(&'a KeyEnvelope, Arc<Keyring>),
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
        NewKeys::Sealed(envelope, keyring) => {
            for op in envelope_ops(envelope) {
                batch.push(op);
            }
            Codec::sealed(keyring)
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
    let header = read_header(store.as_ref()).await?;
    // A store without a header, or whose header says plaintext, must hold
    // no key material: otherwise the header was deleted or edited.
    if !header.as_ref().is_some_and(|h| h.encrypted) {
        check_plaintext(store.as_ref()).await?;
    }
    let (header, codec) = match (header, passphrase) {
        (None, None) => create(store.as_ref(), &options, NewKeys::Plain).await?,
        (None, Some(p)) => {
            let (envelope, keys) =
                KeyEnvelope::create_with_policy(p, options.kdf, options.kdf_policy)?;
            create(
                store.as_ref(),
                &options,
                NewKeys::Sealed(&envelope, Arc::new(keys.keyring)),
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
            (h, Codec::sealed(Arc::new(keys.keyring)))
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
///   (the passphrase was changed or the key rotated elsewhere, or a local
///   change was interrupted) adopts it, after checking that it is not
///   older (generation), that its keyring names every key the vault's
///   does, and that it opens the vault's records;
/// - anything else is refused: [`VaultError::WrongPassphrase`],
///   [`VaultError::NotEncrypted`] for a plaintext vault,
///   [`VaultError::ForeignAccountKey`] for a vault of another account,
///   [`VaultError::StaleEnvelope`] for an older envelope.
pub(super) async fn open_with_envelope(
    store: Arc<dyn Store>,
    envelope_json: &str,
    passphrase: &str,
    options: VaultOptions,
) -> Result<Vault> {
    let envelope = KeyEnvelope::from_json(envelope_json)?;
    let theirs = Arc::new(
        envelope
            .unlock_with_policy(passphrase, options.kdf_policy)?
            .keyring,
    );
    let header = read_header(store.as_ref()).await?;
    if !header.as_ref().is_some_and(|h| h.encrypted) {
        check_plaintext(store.as_ref()).await?;
    }
    let header = match header {
        // A new vault is created on the account's envelope directly, in
        // one write: the keyring is the account's from the start.
        None => {
            let (header, codec) =
                create(store.as_ref(), &options, NewKeys::Sealed(&envelope, theirs)).await?;
            return Vault::assemble(store, options, header, codec).await;
        }
        Some(h) if !h.encrypted => return Err(VaultError::NotEncrypted),
        Some(h) => h,
    };
    let local = read_envelope(store.as_ref()).await?.envelope;
    if local != envelope {
        if envelope.generation() < local.generation() {
            return Err(VaultError::StaleEnvelope {
                offered: envelope.generation(),
                current: local.generation(),
            });
        }
        let names_every_key = local
            .key_ids()
            .iter()
            .all(|id| envelope.key_ids().contains(id));
        if !names_every_key || !opens_local_records(store.as_ref(), &theirs).await? {
            return Err(VaultError::ForeignAccountKey);
        }
        write_envelope(store.as_ref(), &envelope).await?;
        tracing::info!("vault now uses the sync account's key envelope");
    }
    // The envelope now in the vault wraps `theirs`: no second unlock.
    Vault::assemble(store, options, header, Codec::sealed(theirs)).await
}

impl Vault {
    /// Whether opening this vault with `passphrase` would succeed: `Ok` for
    /// the passphrase that unlocks it (`None` for a plaintext vault), else
    /// the error the open would give ([`VaultError::WrongPassphrase`],
    /// [`VaultError::Locked`], [`VaultError::NotEncrypted`]). Runs the key
    /// derivation as an unlock does; writes nothing. For a process that
    /// serves this vault to others (a browser tab serving the others),
    /// which must not hand it to a caller without its passphrase.
    pub async fn check_passphrase(&self, passphrase: Option<&str>) -> Result<()> {
        match (self.is_encrypted(), passphrase) {
            (false, None) => Ok(()),
            (false, Some(_)) => Err(VaultError::NotEncrypted),
            (true, None) => Err(VaultError::Locked),
            (true, Some(passphrase)) => {
                let stored = read_envelope(self.store.as_ref()).await?;
                stored
                    .envelope
                    .unlock_with_policy(passphrase, self.kdf_policy)?;
                Ok(())
            }
        }
    }

    /// Changes the passphrase of an encrypted vault. Only the wrapped data
    /// key is rewritten (no record is re-encrypted), in one atomic write: a
    /// crash leaves either the old or the new passphrase working.
    ///
    /// A vault that syncs changes its passphrase through the sync client,
    /// which updates the server's copy first: here it is refused with
    /// [`VaultError::LinkedToAccount`] while a sync server is set.
    pub async fn change_passphrase(&self, old: &str, new: &str) -> Result<()> {
        self.refuse_if_linked().await?;
        let change = self
            .prepare_envelope(EnvelopeRewrite::Rewrap { old, new })
            .await?;
        write_envelope(self.store.as_ref(), &change.envelope).await?;
        tracing::info!("vault passphrase changed");
        Ok(())
    }

    /// Rotates the data key of an encrypted vault: adds a fresh key to the
    /// keyring that seals everything written from now on, and stores the
    /// new envelope (same passphrase, fresh salt) in one atomic write.
    /// Records written before stay readable (their keys stay in the
    /// keyring); [`rekey`](Self::rekey) re-seals them under the new key.
    ///
    /// Unlike [`change_passphrase`](Self::change_passphrase), this protects
    /// what is written afterwards from anyone holding an old copy of the
    /// envelope and the passphrase. A vault that syncs rotates through its
    /// sync client ([`Replica::prepare_key_rotation`]), which gives the
    /// server the new envelope first so every device follows; here it is
    /// refused with [`VaultError::LinkedToAccount`] while a sync server is
    /// set.
    pub async fn rotate_data_key(&self, passphrase: &str) -> Result<()> {
        self.refuse_if_linked().await?;
        let change = self
            .prepare_envelope(EnvelopeRewrite::Rotate { passphrase })
            .await?;
        write_envelope(self.store.as_ref(), &change.envelope).await?;
        self.codec.replace_keyring(change.keyring);
        self.set_key_fence(Some(data_key_fence(&change.envelope)));
        tracing::info!(key = %self.current_key_id(), "vault data key rotated");
        Ok(())
    }

    /// A local-only key change would split the vault from its sync
    /// account: refused while a sync server is set.
    async fn refuse_if_linked(&self) -> Result<()> {
        match self.replica().sync_remote().await? {
            Some(server) => Err(VaultError::LinkedToAccount { server }),
            None => Ok(()),
        }
    }

    /// Writes a new envelope from the stored one, in memory only, under
    /// this vault's KDF parameters and policy: the one preparation behind a
    /// passphrase change and a key rotation, local or through a server.
    /// [`VaultError::NotEncrypted`] on a plaintext vault.
    async fn prepare_envelope(&self, rewrite: EnvelopeRewrite<'_>) -> Result<PassphraseChange> {
        if !self.is_encrypted() {
            return Err(VaultError::NotEncrypted);
        }
        let stored = read_envelope(self.store.as_ref()).await?;
        let (envelope, keys) = match rewrite {
            EnvelopeRewrite::Rewrap { old, new } => {
                stored
                    .envelope
                    .rewrap_with_policy(old, new, self.kdf, self.kdf_policy)?
            }
            EnvelopeRewrite::Rotate { passphrase } => stored.envelope.rotate_with_policy(
                passphrase,
                passphrase,
                self.kdf,
                self.kdf_policy,
            )?,
        };
        Ok(PassphraseChange {
            previous: stored.json,
            envelope,
            auth_key: keys.auth,
            keyring: Arc::new(keys.keyring),
        })
    }

    fn current_key_id(&self) -> String {
        self.codec
            .keyring()
            .map_or_else(String::new, |k| k.current_key_id().to_string())
    }

    /// Re-seals every record not yet sealed by the newest data key in the
    /// newest record format (after [`rotate_data_key`](Self::rotate_data_key),
    /// or on a vault written by an older chatvault), [`PAGE`](super::records::PAGE)
    /// records per write so memory stays flat however large the vault.
    /// Versions and times are kept: this is a local re-encryption, not an
    /// edit, so nothing is queued for sync. `progress` gets
    /// [`ProgressPhase::Rekeying`] reports (units: records looked at).
    ///
    /// A record that does not open is left as it is and counted in
    /// [`RekeyReport::damaged`]; a plaintext vault has nothing to do.
    pub async fn rekey(&self, progress: Option<ProgressFn>) -> Result<RekeyReport> {
        let mut report = RekeyReport::default();
        if !self.is_encrypted() {
            return Ok(report);
        }
        let total = {
            let usage = self.store.usage().await?;
            Some(usage.conversations + usage.messages)
        };
        let tell = |done: u64| {
            if let Some(p) = &progress {
                p(Progress {
                    phase: ProgressPhase::Rekeying,
                    done,
                    total,
                });
            }
        };
        let mut conversations = Vec::new();
        let mut pages = std::pin::pin!(self.conversation_row_pages());
        while let Some(rows) = pages.try_next().await? {
            let mut resealed = Vec::new();
            for row in rows {
                let record = row.record;
                conversations.push(record.id);
                report.seen += 1;
                if self.codec.is_current(&record.body) {
                    continue;
                }
                let (kind, id, version) =
                    (EntityKind::Conversation, record.id.into(), record.version);
                match self
                    .codec
                    .decode::<ConversationBody>(kind, id, None, version, &record.body)
                {
                    Ok(body) => {
                        let body = self.codec.encode(kind, id, None, version, &body)?;
                        resealed.push([
                            WriteOp::RequireVersion(kind, id, version),
                            WriteOp::PutConversation(chatvault_core::ConversationRecord {
                                body,
                                ..record
                            }),
                        ]);
                    }
                    Err(_) => report.damaged.push(id),
                }
            }
            report.resealed += self.write_resealed(resealed).await?;
            tell(report.seen);
        }
        for conversation in conversations {
            let mut before: Option<MessageCursor> = None;
            loop {
                let page = self
                    .store
                    .messages(&MessageQuery {
                        conversation_id: conversation,
                        before,
                        limit: super::records::PAGE,
                    })
                    .await?;
                let full = page.len() == super::records::PAGE;
                before = page.last().map(|m| MessageCursor {
                    created_at: m.created_at,
                    id: m.id,
                });
                let mut resealed = Vec::new();
                for record in page {
                    report.seen += 1;
                    if self.codec.is_current(&record.body) {
                        continue;
                    }
                    let (kind, id, conv, version) = (
                        EntityKind::Message,
                        record.id.into(),
                        Some(record.conversation_id),
                        record.version,
                    );
                    match self
                        .codec
                        .decode::<MessageBody>(kind, id, conv, version, &record.body)
                    {
                        Ok(body) => {
                            let body = self.codec.encode(kind, id, conv, version, &body)?;
                            resealed.push([
                                WriteOp::RequireVersion(kind, id, version),
                                WriteOp::PutMessage(chatvault_core::MessageRecord {
                                    body,
                                    ..record
                                }),
                            ]);
                        }
                        Err(_) => report.damaged.push(id),
                    }
                }
                report.resealed += self.write_resealed(resealed).await?;
                tell(report.seen);
                if !full {
                    break;
                }
            }
        }
        tracing::info!(
            seen = report.seen,
            resealed = report.resealed,
            damaged = report.damaged.len(),
            "re-key finished"
        );
        Ok(report)
    }

    /// Writes re-sealed records (each a version check and its put) in one
    /// batch, keeping their versions. A record written since it was read
    /// (a local edit or a pull racing the re-key) makes the batch fail as
    /// a whole; then each goes alone and the changed ones are skipped:
    /// their newer write was sealed with the newest key already. Returns
    /// how many were re-sealed.
    async fn write_resealed(&self, resealed: Vec<[WriteOp; 2]>) -> Result<u64> {
        if resealed.is_empty() {
            return Ok(0);
        }
        // Re-sealing under a key another process has since replaced would
        // undo its rotation: each write requires this handle's key current.
        let mut batch = WriteBatch::new();
        batch.ops = resealed.iter().flatten().cloned().collect();
        batch.push(self.key_fence_op());
        match self.store.write(batch).await {
            Ok(_) => return Ok(resealed.len() as u64),
            Err(StoreError::VersionChanged { .. }) => {}
            Err(e) => return Err(super::stamps::fenced(e)),
        }
        let mut written = 0;
        for pair in resealed {
            let mut batch = WriteBatch::new();
            batch.ops = pair.into();
            batch.push(self.key_fence_op());
            match self.store.write(batch).await {
                Ok(_) => written += 1,
                Err(StoreError::VersionChanged { .. }) => {}
                Err(e) => return Err(super::stamps::fenced(e)),
            }
        }
        Ok(written)
    }
}

/// What [`Vault::rekey`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RekeyReport {
    /// Records looked at.
    pub seen: u64,
    /// Records re-sealed under the newest key.
    pub resealed: u64,
    /// Records that did not open and were left as they are.
    pub damaged: Vec<chatvault_core::RecordId>,
}

/// How [`Vault::prepare_envelope`] writes the new envelope.
enum EnvelopeRewrite<'a> {
    /// The same keyring under a new passphrase.
    Rewrap { old: &'a str, new: &'a str },
    /// A keyring with a fresh data key, under the same passphrase.
    Rotate { passphrase: &'a str },
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
    /// The keyring the new envelope wraps (a rotation adds a key).
    keyring: Arc<Keyring>,
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
        self.vault
            .prepare_envelope(EnvelopeRewrite::Rewrap { old, new })
            .await
    }

    /// First half of a data-key rotation that must also reach a server
    /// (see [`Vault::rotate_data_key`]): a new envelope whose keyring adds
    /// a fresh key, under the same `passphrase` with a fresh salt, so the
    /// auth key changes too. Send it to the server like a passphrase
    /// change, then [`commit_passphrase_change`](Self::commit_passphrase_change):
    /// from then on this vault seals with the new key, and other devices
    /// adopt the envelope when they next sign in.
    ///
    /// [`VaultError::WrongPassphrase`] if `passphrase` does not open the
    /// vault.
    pub async fn prepare_key_rotation(&self, passphrase: &str) -> Result<PassphraseChange> {
        self.vault
            .prepare_envelope(EnvelopeRewrite::Rotate { passphrase })
            .await
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
        self.vault.codec.replace_keyring(change.keyring.clone());
        self.vault
            .set_key_fence(Some(data_key_fence(&change.envelope)));
        tracing::info!("vault key envelope changed (prepared change committed)");
        Ok(())
    }

    /// Makes `envelope_json` (fetched from the sync server, opened with
    /// `keys` derived from the account's current salt and parameters) this
    /// vault's key envelope — after a passphrase change or key rotation
    /// made on another device, or one whose local half was interrupted.
    /// From then on the vault seals with the envelope's newest key.
    /// Refused with [`VaultError::ForeignAccountKey`] unless its keyring
    /// contains every key of this vault's (same vault id, same keys), and
    /// with [`VaultError::StaleEnvelope`] if it is older than the vault's.
    /// `false` if it already was the vault's envelope.
    pub async fn adopt_key_envelope(
        &self,
        envelope_json: &str,
        keys: &PassphraseKeys,
    ) -> Result<bool> {
        let Some(own) = self.vault.codec.keyring() else {
            return Err(VaultError::NotEncrypted);
        };
        let store = self.vault.store.as_ref();
        let current = read_envelope(store).await?;
        let envelope = KeyEnvelope::from_json(envelope_json)?;
        if current.envelope == envelope {
            return Ok(false);
        }
        if envelope.generation() < current.envelope.generation() {
            return Err(VaultError::StaleEnvelope {
                offered: envelope.generation(),
                current: current.envelope.generation(),
            });
        }
        let theirs = envelope.unlock_with_keys(keys)?.keyring;
        if !theirs.contains(&own) {
            return Err(VaultError::ForeignAccountKey);
        }
        write_envelope(store, &envelope).await?;
        self.vault.codec.replace_keyring(Arc::new(theirs));
        self.vault.set_key_fence(Some(data_key_fence(&envelope)));
        tracing::info!("adopted the key envelope of the sync account");
        Ok(true)
    }
}

/// Whether `keyring` opens the vault's records (checked on one
/// conversation: a vault without conversations has nothing to lose).
async fn opens_local_records(store: &dyn Store, keyring: &Arc<Keyring>) -> Result<bool> {
    let rows = store
        .conversations(&ConversationQuery {
            limit: 1,
            ..ConversationQuery::default()
        })
        .await?;
    let Some(row) = rows.first() else {
        return Ok(true);
    };
    let codec = Codec::sealed(keyring.clone());
    let body: Result<ConversationBody> = codec.decode(
        EntityKind::Conversation,
        row.record.id.into(),
        None,
        row.record.version,
        &row.record.body,
    );
    Ok(body.is_ok())
}
