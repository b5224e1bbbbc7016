//! What the sync client (`chatvault-sync`) needs from a [`Vault`] beyond
//! the app-facing API: sync-owned metadata (`sync.*` keys: the pull
//! cursor, the dead-letter list), applying a pulled page together with its
//! cursor in one atomic write, re-queueing a record, pruning records a
//! server snapshot no longer lists, and the key-envelope operations that
//! keep a vault and its server account on one data key (join on a new
//! device, adopt an envelope changed elsewhere, a two-step passphrase
//! change).
//!
//! Must never push, pull or talk to a network: the sync client moves
//! bytes, this module only reads and writes the local store, with the
//! same merge rules as [`Vault::apply_changes`]. Must never replace a
//! vault's key envelope with one that wraps a different data key (the
//! vault's records would become unreadable).

use crate::codec::Codec;
use crate::vault::{create, read_header, NewKeys, Refused, KEYS_KEY};
use crate::{Result, Vault, VaultError, VaultOptions};
use chatvault_core::{
    Change, ConversationCursor, ConversationId, CoreError, EntityKind, MessageCursor, OpId,
    RecordId, Timestamp, Tombstone,
};
use chatvault_crypto::{
    AuthKey, DataKey, KdfParams, KdfPolicy, KeyEnvelope, PassphraseKeys, RecordAad, Salt,
};
use chatvault_store::{ConversationQuery, MessageQuery, OutboxItem, Store, WriteBatch, WriteOp};
use std::collections::HashSet;
use std::sync::Arc;

/// Every key the sync client may read and write starts with this.
const SYNC_PREFIX: &str = "sync.";
/// `sync.remote` belongs to [`Vault::set_sync_remote`], which validates it.
const SYNC_REMOTE_KEY: &str = "sync.remote";
/// Page size for walking the local store.
const PAGE: usize = 500;

/// What [`Vault::apply_remote_changes`] did with a page of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteApply {
    /// Changes that won by last-writer-wins and were written.
    pub applied: u64,
    /// Changes older than what the vault holds.
    pub superseded: u64,
    /// Changes stamped implausibly far ahead of this device's clock. They
    /// were not applied and the metadata was **not** written, so the same
    /// page is fetched again once the clock is right.
    pub skewed: Vec<(OpId, String)>,
    /// Changes that are not valid records (they cannot apply, ever).
    pub invalid: Vec<(OpId, String)>,
}

/// A passphrase change prepared in memory by
/// [`Vault::prepare_passphrase_change`]: the new envelope (the same data
/// key wrapped under the new passphrase) and the credentials it yields, to
/// hand to the server before [`Vault::commit_passphrase_change`] stores it
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

impl Vault {
    /// The current time of the vault's clock (the one its writes are
    /// stamped with).
    pub fn now(&self) -> Timestamp {
        self.time.now()
    }

    /// The KDF parameters new passphrases get and the policy unlocking
    /// accepts, as the vault was opened with.
    pub fn kdf_settings(&self) -> (KdfParams, KdfPolicy) {
        (self.kdf, self.kdf_policy)
    }

    /// The key envelope (wrapped data key) of an encrypted vault, as JSON;
    /// `None` for a plaintext vault.
    pub async fn key_envelope_json(&self) -> Result<Option<String>> {
        if !self.is_encrypted() {
            return Ok(None);
        }
        read_envelope_json(self.store.as_ref()).await.map(Some)
    }

    /// A sync-owned metadata value (`key` starts with `sync.`).
    pub async fn sync_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_sync_key(key)?;
        Ok(self.store.meta(key).await?)
    }

    /// Sets (or with `None` removes) a sync-owned metadata value.
    pub async fn set_sync_meta(&self, key: &str, value: Option<Vec<u8>>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.push(meta_op(key, value)?);
        self.store.write(batch).await?;
        Ok(())
    }

    /// Applies changes pulled from the server by last-writer-wins (as
    /// [`Vault::apply_changes`]) and writes `meta` (typically the new pull
    /// cursor) **in the same atomic write**, so a crash never leaves a
    /// cursor ahead of the changes it covers.
    ///
    /// If any change is stamped too far ahead of this device's clock, it is
    /// reported in [`RemoteApply::skewed`], the others still apply, and
    /// `meta` is not written: the caller fetches the page again once the
    /// clock is right (applying twice is harmless). Invalid changes never
    /// hold `meta` back (they cannot apply, ever).
    pub async fn apply_remote_changes(
        &self,
        changes: Vec<Change>,
        meta: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<RemoteApply> {
        let mut report = RemoteApply::default();
        let (mut batch, refused) = self.admit_remote(changes);
        for r in refused {
            match r {
                Refused::ClockSkew(op, why) => report.skewed.push((op, why)),
                Refused::Invalid(op, why) => report.invalid.push((op, why)),
            }
        }
        if report.skewed.is_empty() {
            for (key, value) in meta {
                batch.push(meta_op(&key, value)?);
            }
        }
        if !batch.is_empty() {
            let outcome = self.commit(batch).await?;
            report.applied = outcome.merged;
            report.superseded = outcome.superseded;
        }
        Ok(report)
    }

    /// Queues a record's current state (its upsert, or its tombstone) for
    /// sync again under a fresh op id, writing `meta` in the same batch.
    /// `false` (and nothing written) if the vault holds neither the record
    /// nor its tombstone any more.
    pub async fn requeue_record(
        &self,
        kind: EntityKind,
        id: RecordId,
        meta: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<bool> {
        let conversation_id = match kind {
            EntityKind::Conversation => {
                let live = self.store.conversation(id.conversation()).await?.is_some();
                if !live && self.store.tombstone(kind, id).await?.is_none() {
                    return Ok(false);
                }
                None
            }
            EntityKind::Message => match self.store.message(id.message()).await? {
                Some(m) => Some(m.conversation_id),
                None => match self.store.tombstone(kind, id).await? {
                    Some(t) => t.conversation_id,
                    None => return Ok(false),
                },
            },
        };
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Enqueue(OutboxItem {
            op_id: OpId::new(),
            kind,
            entity_id: id,
            conversation_id,
        }));
        for (key, value) in meta {
            batch.push(meta_op(&key, value)?);
        }
        self.commit(batch).await?;
        Ok(true)
    }

    /// After a resync from a server snapshot: drops every local record the
    /// snapshot did not list (`listed`), unless it — or, for a
    /// conversation, one of its messages — has a change waiting to be
    /// pushed. The server listed only live records, so the dropped ones
    /// were deleted elsewhere while this device was behind. Returns how
    /// many records were dropped. Nothing is queued for sync.
    ///
    /// Each dropped record keeps a local tombstone at its own version, so a
    /// stale copy of that version arriving later cannot bring it back.
    pub async fn forget_records_missing_from(
        &self,
        listed: &HashSet<(EntityKind, RecordId)>,
    ) -> Result<u64> {
        let pending = self.store.outbox(usize::MAX).await?;
        let mut pending_records = HashSet::new();
        let mut pending_conversations = HashSet::new();
        for entry in &pending {
            pending_records.insert((entry.change.kind, entry.change.entity_id));
            match entry.change.kind {
                EntityKind::Conversation => {
                    pending_conversations.insert(entry.change.entity_id.conversation());
                }
                EntityKind::Message => {
                    if let Some(c) = entry.change.conversation_id {
                        pending_conversations.insert(c);
                    }
                }
            }
        }
        let now = self.time.now();
        let mut batch = WriteBatch::new();
        let mut dropped = 0u64;
        let mut after: Option<ConversationCursor> = None;
        loop {
            let rows = self
                .store
                .conversations(&ConversationQuery {
                    active_from: None,
                    active_to: None,
                    after,
                    limit: PAGE,
                })
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(ConversationCursor {
                updated_at: last.activity_at,
                id: last.record.id,
            });
            let full = rows.len() == PAGE;
            for row in rows {
                let id = row.record.id;
                let key = (EntityKind::Conversation, RecordId::from(id));
                if !listed.contains(&key) && !pending_conversations.contains(&id) {
                    // Its messages go with it.
                    batch.push(WriteOp::Delete(Tombstone::conversation(
                        id,
                        row.record.version,
                        now,
                    )));
                    dropped += 1;
                    continue;
                }
                // Kept (listed, or holding unsent work): its unlisted
                // messages without unsent changes still go.
                dropped += self
                    .forget_messages_missing_from(id, listed, &pending_records, now, &mut batch)
                    .await?;
            }
            if !full {
                break;
            }
        }
        if !batch.is_empty() {
            self.commit(batch).await?;
        }
        Ok(dropped)
    }

    async fn forget_messages_missing_from(
        &self,
        conversation: ConversationId,
        listed: &HashSet<(EntityKind, RecordId)>,
        pending: &HashSet<(EntityKind, RecordId)>,
        now: Timestamp,
        batch: &mut WriteBatch,
    ) -> Result<u64> {
        let mut dropped = 0;
        let mut before: Option<MessageCursor> = None;
        loop {
            let messages = self
                .store
                .messages(&MessageQuery {
                    conversation_id: conversation,
                    before,
                    limit: PAGE,
                })
                .await?;
            let Some(last) = messages.last() else { break };
            before = Some(MessageCursor {
                created_at: last.created_at,
                id: last.id,
            });
            let full = messages.len() == PAGE;
            for m in messages {
                let key = (EntityKind::Message, RecordId::from(m.id));
                if !listed.contains(&key) && !pending.contains(&key) {
                    batch.push(WriteOp::Delete(Tombstone::message(
                        m.id,
                        conversation,
                        m.version,
                        now,
                    )));
                    dropped += 1;
                }
            }
            if !full {
                break;
            }
        }
        Ok(dropped)
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
        if !self.is_encrypted() {
            return Err(VaultError::NotEncrypted);
        }
        let previous = read_envelope_json(self.store.as_ref()).await?;
        let envelope = KeyEnvelope::from_json(&previous)?;
        let (rewrapped, keys) = envelope.rewrap_with_policy(old, new, self.kdf, self.kdf_policy)?;
        Ok(PassphraseChange {
            previous,
            envelope: rewrapped,
            auth_key: keys.auth,
        })
    }

    /// Second half of a passphrase change: stores the prepared envelope, in
    /// one atomic write, if the vault's envelope is still the one it was
    /// prepared from (otherwise nothing changes and the error says so).
    pub async fn commit_passphrase_change(&self, change: &PassphraseChange) -> Result<()> {
        let current = read_envelope_json(self.store.as_ref()).await?;
        if current != change.previous {
            return Err(VaultError::Header(
                "the key envelope changed while the passphrase change was prepared; \
                 prepare it again"
                    .into(),
            ));
        }
        self.write_envelope(&change.envelope).await?;
        tracing::info!("vault passphrase changed (prepared change committed)");
        Ok(())
    }

    /// Makes `envelope_json` (fetched from the sync server, opened with
    /// `keys` derived from the account's current salt and parameters) this
    /// vault's key envelope — after a passphrase change made on another
    /// device, or one whose local half was interrupted. Refused unless it
    /// wraps this vault's own data key. `false` if it already was the
    /// vault's envelope.
    pub async fn adopt_key_envelope(
        &self,
        envelope_json: &str,
        keys: &PassphraseKeys,
    ) -> Result<bool> {
        let Codec::Sealed(own) = self.codec.as_ref() else {
            return Err(VaultError::NotEncrypted);
        };
        let current = read_envelope_json(self.store.as_ref()).await?;
        let envelope = KeyEnvelope::from_json(envelope_json)?;
        if KeyEnvelope::from_json(&current)? == envelope {
            return Ok(false);
        }
        let theirs = envelope.unlock_with_keys(keys)?.data;
        if !same_data_key(own, &theirs)? {
            return Err(other_data_key());
        }
        self.write_envelope(&envelope).await?;
        tracing::info!("adopted the key envelope of the sync account");
        Ok(true)
    }

    /// Opens the encrypted vault in `store` on an account's key envelope
    /// (`envelope_json`, from the sync server) with its passphrase, so the
    /// vault uses the account's data key:
    ///
    /// - an empty store gets a new vault (new device id) whose envelope is
    ///   that one — records pushed by the account's other devices decrypt
    ///   here;
    /// - a store holding a vault of the same account whose envelope differs
    ///   (the passphrase was changed elsewhere, or a local change was
    ///   interrupted) adopts it, after checking that its data key opens the
    ///   vault's records;
    /// - anything else is refused: [`VaultError::WrongPassphrase`],
    ///   [`VaultError::NotEncrypted`] for a plaintext vault, or an error
    ///   saying the vault belongs to another account.
    pub async fn open_with_envelope(
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
        let current = read_envelope_json(store.as_ref()).await?;
        if KeyEnvelope::from_json(&current)? != envelope {
            if !opens_local_records(store.as_ref(), &theirs).await? {
                return Err(other_data_key());
            }
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::SetMeta(
                KEYS_KEY.into(),
                envelope.to_json().into_bytes(),
            ));
            store.write(batch).await?;
            tracing::info!("vault now uses the sync account's key envelope");
        }
        // The envelope now in the vault wraps `theirs`: no second unlock.
        Vault::assemble(store, options, header, Codec::Sealed(theirs)).await
    }

    async fn write_envelope(&self, envelope: &KeyEnvelope) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::SetMeta(
            KEYS_KEY.into(),
            envelope.to_json().into_bytes(),
        ));
        self.store.write(batch).await?;
        Ok(())
    }
}

fn check_sync_key(key: &str) -> Result<()> {
    if !key.starts_with(SYNC_PREFIX) || key.len() == SYNC_PREFIX.len() || key == SYNC_REMOTE_KEY {
        return Err(VaultError::Invalid(CoreError::Invalid {
            field: "sync metadata key",
            reason: format!("{key:?} is not a sync-owned key (sync.*, other than sync.remote)"),
        }));
    }
    Ok(())
}

fn meta_op(key: &str, value: Option<Vec<u8>>) -> Result<WriteOp> {
    check_sync_key(key)?;
    Ok(match value {
        Some(v) => WriteOp::SetMeta(key.to_owned(), v),
        None => WriteOp::DeleteMeta(key.to_owned()),
    })
}

async fn read_envelope_json(store: &dyn Store) -> Result<String> {
    let bytes = store.meta(KEYS_KEY).await?.ok_or_else(|| {
        VaultError::Header("the vault is encrypted but its key envelope is missing".into())
    })?;
    String::from_utf8(bytes).map_err(|_| VaultError::Header("the key envelope is not text".into()))
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

fn other_data_key() -> VaultError {
    VaultError::Header(
        "the sync account's key does not open this vault: it belongs to another account \
         (or was created separately); sync it with its own account or start a new vault"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, MemoryStore, NewConversation, NewMessage, Role};

    const PASS: &str = "correct horse";

    fn options() -> VaultOptions {
        VaultOptions {
            clock: Arc::new(ManualClock::new(Timestamp(1_700_000_000_000))),
            kdf: KdfParams::insecure_fast_for_tests(),
            kdf_policy: KdfPolicy::insecure_allow_weak_for_tests(),
            ..VaultOptions::default()
        }
    }

    async fn encrypted() -> (Arc<dyn Store>, Vault) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let vault = Vault::open_encrypted(store.clone(), PASS, options())
            .await
            .unwrap();
        (store, vault)
    }

    #[tokio::test]
    async fn keys_key_is_where_the_vault_keeps_its_envelope() {
        let (store, vault) = encrypted().await;
        let json = vault.key_envelope_json().await.unwrap().unwrap();
        assert_eq!(
            store.meta(KEYS_KEY).await.unwrap().unwrap(),
            json.as_bytes()
        );
        assert!(KeyEnvelope::from_json(&json).is_ok());
    }

    #[tokio::test]
    async fn sync_meta_is_confined_to_sync_keys() {
        let (_, vault) = encrypted().await;
        vault
            .set_sync_meta("sync.cursor", Some(b"v1.3".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            vault.sync_meta("sync.cursor").await.unwrap().unwrap(),
            b"v1.3"
        );
        for bad in ["vault.keys", "sync.", "sync.remote", "cursor"] {
            assert!(vault.sync_meta(bad).await.is_err(), "{bad}");
            assert!(vault.set_sync_meta(bad, None).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_second_device_opens_on_the_same_data_key() {
        let (_, a) = encrypted().await;
        let conv = a
            .create_conversation(NewConversation::titled("shared"))
            .await
            .unwrap();
        a.add_message(conv.id, NewMessage::new(Role::User, "hi"))
            .await
            .unwrap();
        let envelope = a.key_envelope_json().await.unwrap().unwrap();

        let store_b: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let b = Vault::open_with_envelope(store_b.clone(), &envelope, PASS, options())
            .await
            .unwrap();
        assert_ne!(a.device_id(), b.device_id());
        let changes = a
            .pending_changes(10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.change)
            .collect();
        let report = b
            .apply_remote_changes(changes, vec![("sync.cursor".into(), Some(b"c".to_vec()))])
            .await
            .unwrap();
        assert_eq!(report.applied, 2);
        assert_eq!(b.conversation(conv.id).await.unwrap().title, "shared");
        assert_eq!(b.sync_meta("sync.cursor").await.unwrap().unwrap(), b"c");

        // Reopened with the passphrase alone, it is an ordinary vault.
        drop(b);
        let b = Vault::open_encrypted(store_b, PASS, options())
            .await
            .unwrap();
        assert_eq!(b.conversation(conv.id).await.unwrap().title, "shared");

        // A wrong passphrase opens nothing.
        let err =
            Vault::open_with_envelope(Arc::new(MemoryStore::new()), &envelope, "nope", options())
                .await
                .unwrap_err();
        assert!(matches!(err, VaultError::WrongPassphrase), "{err:?}");
    }

    #[tokio::test]
    async fn another_accounts_envelope_is_refused() {
        let (store, a) = encrypted().await;
        a.create_conversation(NewConversation::titled("mine"))
            .await
            .unwrap();
        let (_, other) = encrypted().await;
        let foreign = other.key_envelope_json().await.unwrap().unwrap();
        drop(a);
        let err = Vault::open_with_envelope(store.clone(), &foreign, PASS, options())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("another account"), "{err}");
        // The vault still opens as before.
        Vault::open_encrypted(store, PASS, options()).await.unwrap();
    }

    #[tokio::test]
    async fn a_prepared_passphrase_change_commits_and_can_be_adopted_elsewhere() {
        let (store, a) = encrypted().await;
        a.create_conversation(NewConversation::titled("kept"))
            .await
            .unwrap();
        let envelope = a.key_envelope_json().await.unwrap().unwrap();
        let store_b: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let b = Vault::open_with_envelope(store_b.clone(), &envelope, PASS, options())
            .await
            .unwrap();

        assert!(matches!(
            a.prepare_passphrase_change("wrong", "new pass").await,
            Err(VaultError::WrongPassphrase)
        ));
        let change = a.prepare_passphrase_change(PASS, "new pass").await.unwrap();
        // Nothing is stored until committed.
        assert_eq!(a.key_envelope_json().await.unwrap().unwrap(), envelope);
        a.commit_passphrase_change(&change).await.unwrap();
        assert!(a.commit_passphrase_change(&change).await.is_err());
        drop(a);
        assert!(Vault::open_encrypted(store.clone(), PASS, options())
            .await
            .is_err());
        Vault::open_encrypted(store, "new pass", options())
            .await
            .unwrap();

        // Device B adopts the new envelope with keys for its salt.
        let keys = PassphraseKeys::derive_with_policy(
            "new pass",
            change.kdf(),
            change.salt(),
            KdfPolicy::insecure_allow_weak_for_tests(),
        )
        .unwrap();
        assert!(b
            .adopt_key_envelope(&change.envelope_json(), &keys)
            .await
            .unwrap());
        assert!(!b
            .adopt_key_envelope(&change.envelope_json(), &keys)
            .await
            .unwrap());
        drop(b);
        Vault::open_encrypted(store_b, "new pass", options())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn skewed_remote_changes_hold_the_cursor_back() {
        let (_, a) = encrypted().await;
        let conv = a
            .create_conversation(NewConversation::titled("x"))
            .await
            .unwrap();
        let mut change = a.pending_changes(1).await.unwrap().remove(0).change;
        let far = a.now().as_millis() as u64 + 3 * 3_600_000;
        change.version = chatvault_core::Hlc::new(far, 0, a.device_id()).unwrap();
        let (_, b) = encrypted().await;
        let report = b
            .apply_remote_changes(
                vec![change],
                vec![("sync.cursor".into(), Some(b"c".to_vec()))],
            )
            .await
            .unwrap();
        assert_eq!(report.skewed.len(), 1);
        assert_eq!(b.sync_meta("sync.cursor").await.unwrap(), None);
        assert!(b.conversation(conv.id).await.is_err());
    }

    #[tokio::test]
    async fn requeue_and_forget_respect_pending_changes() {
        let (_, v) = encrypted().await;
        let kept = v
            .create_conversation(NewConversation::titled("listed"))
            .await
            .unwrap();
        let m = v
            .add_message(kept.id, NewMessage::new(Role::User, "unlisted"))
            .await
            .unwrap();
        let gone = v
            .create_conversation(NewConversation::titled("deleted elsewhere"))
            .await
            .unwrap();
        let pending_only = v
            .create_conversation(NewConversation::titled("not pushed yet"))
            .await
            .unwrap();
        let orphaned = v
            .add_message(
                pending_only.id,
                NewMessage::new(Role::User, "deleted elsewhere"),
            )
            .await
            .unwrap();
        // Everything but the last conversation was pushed.
        let seqs: Vec<u64> = v
            .pending_changes(10)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.change.entity_id != RecordId::from(pending_only.id))
            .map(|e| e.seq)
            .collect();
        v.acknowledge(&seqs).await.unwrap();

        let listed: HashSet<_> = [(EntityKind::Conversation, RecordId::from(kept.id))].into();
        assert_eq!(v.forget_records_missing_from(&listed).await.unwrap(), 3);
        assert!(v.message(orphaned.id).await.is_err());
        assert!(v.conversation(kept.id).await.is_ok());
        assert!(v.message(m.id).await.is_err());
        assert!(v.conversation(gone.id).await.is_err());
        assert!(v.conversation(pending_only.id).await.is_ok());
        assert_eq!(v.pending_changes(10).await.unwrap().len(), 1);

        assert!(v
            .requeue_record(EntityKind::Conversation, kept.id.into(), vec![])
            .await
            .unwrap());
        // A dropped record's tombstone can be queued; an unknown id cannot.
        assert!(v
            .requeue_record(EntityKind::Message, m.id.into(), vec![])
            .await
            .unwrap());
        assert!(!v
            .requeue_record(
                EntityKind::Message,
                RecordId::from(chatvault_core::MessageId::new()),
                vec![]
            )
            .await
            .unwrap());
        assert_eq!(v.pending_changes(10).await.unwrap().len(), 3);
        assert!(v
            .requeue_record(EntityKind::Message, orphaned.id.into(), vec![])
            .await
            .unwrap());
    }
}
