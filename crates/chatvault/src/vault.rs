//! [`Vault`]: what applications use. It stamps ids, times and versions,
//! encodes (and in an encrypted vault, encrypts) content, and writes every
//! change together with its outbox entry in one atomic batch.

use crate::clock::{Clock, SystemClock};
use crate::codec::{Codec, ConversationBody, MessageBody};
use crate::{Result, VaultError};
use chatvault_core::{
    Change, Conversation, ConversationCursor, ConversationId, ConversationRecord, CoreError,
    DeviceId, EntityKind, Hlc, HlcClock, Message, MessageCursor, MessageId, MessageRecord,
    Metadata, OpId, Page, RecordId, Role, Timestamp, Tombstone, UserId,
};
use chatvault_crypto::{DataKey, KdfParams, KdfPolicy, KeyEnvelope};
use chatvault_store::{
    ConversationQuery, ConversationRow, MessageQuery, OutboxEntry, OutboxItem, Store, StoreError,
    WriteBatch, WriteOp, WriteOutcome,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const HEADER_KEY: &str = "vault.header";
/// Metadata key of the key envelope (the wrapped data key) of an encrypted
/// vault. Replacing it is the whole of a passphrase change.
pub(crate) const KEYS_KEY: &str = "vault.keys";
/// Metadata key of the clock lease: a stamp above every stamp this device
/// has committed, so a restart (even with a clock that went backwards)
/// never reissues one.
const CLOCK_KEY: &str = "vault.clock";
/// How far ahead of the last committed stamp the persisted lease reaches.
/// The lease is rewritten only when stamps catch up with it, so most
/// commits carry no clock write at all.
const CLOCK_LEASE_MS: u64 = 10_000;
/// Version of the vault header layout.
const HEADER_VERSION: u32 = 1;

/// A change from elsewhere that [`Vault::admit_remote`] refused.
pub(crate) enum Refused {
    /// Stamped too far ahead of this device's clock (retry once it caught up).
    ClockSkew(OpId, String),
    /// Malformed: will never apply.
    Invalid(OpId, String),
}

/// What a vault records about itself, in the store's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VaultHeader {
    format_version: u32,
    device_id: DeviceId,
    created_at: Timestamp,
    /// Recorded so a deleted key envelope is an error, never a silent
    /// switch to plaintext.
    #[serde(default)]
    pub(crate) encrypted: bool,
}

/// How to open a [`Vault`].
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
}

impl Default for VaultOptions {
    fn default() -> Self {
        Self {
            user_id: UserId::local(),
            clock: Arc::new(SystemClock),
            kdf: KdfParams::default(),
            kdf_policy: KdfPolicy::default(),
        }
    }
}

impl std::fmt::Debug for VaultOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultOptions")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A conversation to create.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewConversation {
    /// Its title.
    pub title: String,
    /// Application metadata.
    pub metadata: Metadata,
}

impl NewConversation {
    /// A conversation with this title and no metadata.
    pub fn titled(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            metadata: Metadata::new(),
        }
    }
}

/// Fields of a conversation to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationUpdate {
    /// New title.
    pub title: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<Metadata>,
}

/// A message to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
    /// Application metadata.
    pub metadata: Metadata,
    /// Creation time; now if `None` (imports keep the original time).
    pub created_at: Option<Timestamp>,
}

impl NewMessage {
    /// A message with this role and content.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            metadata: Metadata::new(),
            created_at: None,
        }
    }
}

/// Fields of a message to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageUpdate {
    /// New content.
    pub content: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<Metadata>,
}

/// Which conversations to list (most recent activity first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListConversations {
    /// Only those active at or after this time.
    pub active_from: Option<Timestamp>,
    /// Only those active at or before this time.
    pub active_to: Option<Timestamp>,
    /// Continue after a cursor from a previous page.
    pub after: Option<ConversationCursor>,
    /// Page size (at least 1).
    pub limit: usize,
}

impl Default for ListConversations {
    fn default() -> Self {
        Self {
            active_from: None,
            active_to: None,
            after: None,
            limit: 50,
        }
    }
}

/// Which messages of a conversation to list (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListMessages {
    /// Continue with older messages than a cursor from a previous page.
    pub before: Option<MessageCursor>,
    /// Page size (at least 1).
    pub limit: usize,
}

impl Default for ListMessages {
    fn default() -> Self {
        Self {
            before: None,
            limit: 50,
        }
    }
}

/// Storage use of one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationStats {
    /// The conversation.
    pub id: ConversationId,
    /// Its last activity.
    pub updated_at: Timestamp,
    /// Its message count.
    pub messages: u64,
    /// Bytes stored for it and its messages (after encryption).
    pub bytes: u64,
    /// Whether it has changes not yet acknowledged by a server.
    pub pending: bool,
}

/// What a vault holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultStats {
    /// Storage backend (`sqlite`, `memory`, ...).
    pub backend: &'static str,
    /// Whether content is encrypted.
    pub encrypted: bool,
    /// Live conversations.
    pub conversations: u64,
    /// Live messages.
    pub messages: u64,
    /// Deletion marks kept for sync.
    pub tombstones: u64,
    /// Changes waiting to sync.
    pub pending_changes: u64,
    /// Bytes of stored content (after encryption).
    pub bytes: u64,
    /// Per conversation, most recent first.
    pub per_conversation: Vec<ConversationStats>,
}

/// The outcome of applying changes from elsewhere (sync, import).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// Changes that won and were written.
    pub applied: u64,
    /// Changes older than what the vault holds (kept the local version).
    pub superseded: u64,
    /// Changes refused, with the reason.
    pub rejected: Vec<(OpId, String)>,
}

/// A local-first chat store: conversations and messages, written to a
/// store with their outbox entries, optionally encrypted.
pub struct Vault {
    pub(crate) store: Arc<dyn Store>,
    /// Shared so a bulk import can encode on its own thread.
    pub(crate) codec: Arc<Codec>,
    pub(crate) clock: Mutex<HlcClock>,
    /// Wall time of the clock lease last persisted (see [`CLOCK_KEY`]).
    pub(crate) clock_lease: AtomicU64,
    pub(crate) time: Arc<dyn Clock>,
    pub(crate) user: UserId,
    pub(crate) kdf: KdfParams,
    pub(crate) kdf_policy: KdfPolicy,
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
    /// Opens a plaintext vault on `store`, creating it if the store is
    /// empty. An encrypted vault answers [`VaultError::Locked`]: open it
    /// with [`Vault::open_encrypted`].
    pub async fn open(store: Arc<dyn Store>, options: VaultOptions) -> Result<Vault> {
        Self::open_with(store, options, None).await
    }

    /// Opens an encrypted vault with its passphrase, creating it (encrypted
    /// under that passphrase) if the store is empty. A wrong passphrase is
    /// [`VaultError::WrongPassphrase`]; a plaintext vault is
    /// [`VaultError::NotEncrypted`].
    pub async fn open_encrypted(
        store: Arc<dyn Store>,
        passphrase: &str,
        options: VaultOptions,
    ) -> Result<Vault> {
        Self::open_with(store, options, Some(passphrase)).await
    }

    /// Whether the vault in `store` is encrypted; `None` if the store holds
    /// no vault yet. Reads only the header (no passphrase needed).
    pub async fn probe(store: &dyn Store) -> Result<Option<bool>> {
        Ok(read_header(store).await?.map(|h| h.encrypted))
    }

    async fn open_with(
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
                let envelope = read_envelope(store.as_ref()).await?;
                let keys = envelope.unlock_with_policy(passphrase, options.kdf_policy)?;
                (h, Codec::Sealed(keys.data))
            }
        };
        Self::assemble(store, options, header, codec).await
    }

    /// A vault on `store` once its header is known and its content key
    /// unlocked: resumes the clock and applies a due retention policy.
    pub(crate) async fn assemble(
        store: Arc<dyn Store>,
        options: VaultOptions,
        header: VaultHeader,
        codec: Codec,
    ) -> Result<Vault> {
        let last = match store.meta(CLOCK_KEY).await? {
            Some(bytes) => Some(
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.parse::<Hlc>().ok())
                    .ok_or_else(|| VaultError::Header("unreadable vault clock".into()))?,
            ),
            None => None,
        };
        let vault = Vault {
            store,
            codec: Arc::new(codec),
            clock: Mutex::new(HlcClock::resume(header.device_id, last)),
            clock_lease: AtomicU64::new(last.map_or(0, |l| l.wall_ms())),
            time: options.clock,
            user: options.user_id,
            kdf: options.kdf,
            kdf_policy: options.kdf_policy,
        };
        vault.run_scheduled_retention().await;
        Ok(vault)
    }

    /// Changes the passphrase of an encrypted vault. Only the wrapped data
    /// key is rewritten (no record is re-encrypted), in one atomic write: a
    /// crash leaves either the old or the new passphrase working.
    pub async fn change_passphrase(&self, old: &str, new: &str) -> Result<()> {
        if !self.is_encrypted() {
            return Err(VaultError::NotEncrypted);
        }
        let envelope = read_envelope(self.store.as_ref()).await?;
        let (rewrapped, _keys) =
            envelope.rewrap_with_policy(old, new, self.kdf, self.kdf_policy)?;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::SetMeta(
            KEYS_KEY.into(),
            rewrapped.to_json().into_bytes(),
        ));
        self.store.write(batch).await?;
        tracing::info!("vault passphrase changed");
        Ok(())
    }

    /// Locks the vault: drops it, wiping its keys from memory.
    pub fn lock(self) {
        drop(self);
    }

    /// Opens (creating if needed) a vault in a SQLite file with default
    /// (fully durable) settings.
    #[cfg(feature = "sqlite")]
    pub async fn open_sqlite(
        path: impl AsRef<std::path::Path>,
        options: VaultOptions,
    ) -> Result<Vault> {
        let store = chatvault_sqlite::SqliteStore::open(path, Default::default()).await?;
        Self::open(Arc::new(store), options).await
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether content is encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.codec.is_encrypted()
    }

    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        self.lock_clock().device()
    }

    pub(crate) fn lock_clock(&self) -> std::sync::MutexGuard<'_, HlcClock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current time and a fresh version stamp.
    pub(crate) fn stamp(&self) -> Result<(Timestamp, Hlc)> {
        let now = self.time.now();
        let version = self.lock_clock().tick(now)?;
        Ok((now, version))
    }

    /// `n` consecutive version stamps taken at one instant.
    pub(crate) fn stamps(&self, n: usize) -> Result<(Timestamp, Vec<Hlc>)> {
        let now = self.time.now();
        let mut clock = self.lock_clock();
        let stamps = (0..n).map(|_| clock.tick(now)).collect::<Result<_, _>>()?;
        Ok((now, stamps))
    }

    /// Appends the clock's high-water mark, so a restart never reissues a
    /// stamp, and writes the batch.
    pub(crate) async fn commit(&self, mut batch: WriteBatch) -> Result<WriteOutcome> {
        let last = self.lock_clock().last();
        let lease = self.clock_lease.load(Ordering::SeqCst);
        let new_lease = (last.wall_ms() >= lease).then(|| last.wall_ms() + CLOCK_LEASE_MS);
        if let Some(wall) = new_lease {
            let stamp = Hlc::new(wall, 0, last.device())?;
            batch.push(WriteOp::SetMeta(
                CLOCK_KEY.into(),
                stamp.to_string().into_bytes(),
            ));
        }
        let outcome = self.store.write(batch).await.map_err(|e| match e {
            StoreError::ConversationNotFound(id) => not_found(EntityKind::Conversation, id.into()),
            other => VaultError::Store(other),
        })?;
        if let Some(wall) = new_lease {
            self.clock_lease.fetch_max(wall, Ordering::SeqCst);
        }
        Ok(outcome)
    }

    // ---- conversations -------------------------------------------------

    /// Creates a conversation.
    pub async fn create_conversation(&self, new: NewConversation) -> Result<Conversation> {
        let (now, version) = self.stamp()?;
        let id = ConversationId::new();
        let body = ConversationBody::new(new.title, new.metadata);
        let record = ConversationRecord {
            id,
            user_id: self.user.clone(),
            created_at: now,
            updated_at: now,
            version,
            body: self
                .codec
                .encode(EntityKind::Conversation, id.into(), &body)?,
        };
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutConversation(record.clone()));
        batch.push(WriteOp::Enqueue(outbox_item(
            EntityKind::Conversation,
            id.into(),
            None,
        )));
        self.commit(batch).await?;
        Ok(to_conversation(record, now, body))
    }

    /// One conversation.
    pub async fn conversation(&self, id: ConversationId) -> Result<Conversation> {
        let row = self.existing_conversation(id).await?;
        self.decode_conversation(row)
    }

    /// Conversations, most recent activity first.
    pub async fn conversations(
        &self,
        list: ListConversations,
    ) -> Result<Page<Conversation, ConversationCursor>> {
        let limit = list.limit.max(1);
        let rows = self
            .store
            .conversations(&ConversationQuery {
                active_from: list.active_from,
                active_to: list.active_to,
                after: list.after,
                limit: limit.saturating_add(1),
            })
            .await?;
        let more = rows.len() > limit;
        let items = rows
            .into_iter()
            .take(limit)
            .map(|r| self.decode_conversation(r))
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = more
            .then(|| items.last())
            .flatten()
            .map(|c| ConversationCursor {
                updated_at: c.updated_at,
                id: c.id,
            });
        Ok(Page { items, next_cursor })
    }

    /// Every conversation active within `[from, to]` (inclusive), most
    /// recent first.
    pub async fn conversations_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Conversation>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .conversations(ListConversations {
                    active_from: Some(from),
                    active_to: Some(to),
                    after,
                    limit: 500,
                })
                .await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Changes a conversation's title and/or metadata.
    pub async fn update_conversation(
        &self,
        id: ConversationId,
        update: ConversationUpdate,
    ) -> Result<Conversation> {
        let row = self.existing_conversation(id).await?;
        let mut body: ConversationBody =
            self.codec
                .decode(EntityKind::Conversation, id.into(), &row.record.body)?;
        if let Some(title) = update.title {
            body.title = title;
        }
        if let Some(metadata) = update.metadata {
            body.metadata = metadata;
        }
        let (now, version) = self.stamp()?;
        let record = ConversationRecord {
            updated_at: now,
            version,
            body: self
                .codec
                .encode(EntityKind::Conversation, id.into(), &body)?,
            ..row.record
        };
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutConversation(record.clone()));
        batch.push(WriteOp::Enqueue(outbox_item(
            EntityKind::Conversation,
            id.into(),
            None,
        )));
        self.commit(batch).await?;
        Ok(to_conversation(record, row.activity_at.max(now), body))
    }

    /// Deletes a conversation and all its messages, leaving a tombstone
    /// that syncs the deletion.
    pub async fn delete_conversation(&self, id: ConversationId) -> Result<()> {
        self.existing_conversation(id).await?;
        let (now, version) = self.stamp()?;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Delete(Tombstone::conversation(id, version, now)));
        batch.push(WriteOp::Enqueue(outbox_item(
            EntityKind::Conversation,
            id.into(),
            None,
        )));
        self.commit(batch).await.map(drop)
    }

    // ---- messages ------------------------------------------------------

    /// Adds a message to a conversation.
    pub async fn add_message(
        &self,
        conversation: ConversationId,
        new: NewMessage,
    ) -> Result<Message> {
        let mut added = self.add_messages(conversation, vec![new]).await?;
        added
            .pop()
            .ok_or_else(|| VaultError::Header("internal: empty batch result".into()))
    }

    /// Adds many messages to a conversation in one atomic write (bulk
    /// import: one transaction, one sync to disk).
    pub async fn add_messages(
        &self,
        conversation: ConversationId,
        new: Vec<NewMessage>,
    ) -> Result<Vec<Message>> {
        let (now, stamps) = self.stamps(new.len())?;
        let mut batch = WriteBatch::new();
        batch.ops.reserve(new.len() * 2 + 1);
        // Checked inside the write: no separate read, and no window in
        // which the conversation could be deleted first.
        batch.push(WriteOp::RequireConversation(conversation));
        let mut out = Vec::with_capacity(new.len());
        for (n, version) in new.into_iter().zip(stamps) {
            let id = MessageId::new();
            let created_at = n.created_at.unwrap_or(now);
            let body = MessageBody::new(n.role, n.content, n.metadata);
            let record = MessageRecord {
                id,
                conversation_id: conversation,
                created_at,
                updated_at: created_at.max(now),
                version,
                body: self.codec.encode(EntityKind::Message, id.into(), &body)?,
            };
            batch.push(WriteOp::Enqueue(outbox_item(
                EntityKind::Message,
                id.into(),
                Some(conversation),
            )));
            out.push(to_message(&record, body));
            batch.push(WriteOp::InsertMessage(record));
        }
        self.commit(batch).await?;
        Ok(out)
    }

    /// One message.
    pub async fn message(&self, id: MessageId) -> Result<Message> {
        let record = self.existing_message(id).await?;
        self.decode_message(record)
    }

    /// The latest messages of a conversation, newest first; pass the
    /// returned cursor back to page further into the past.
    pub async fn messages(
        &self,
        conversation: ConversationId,
        list: ListMessages,
    ) -> Result<Page<Message, MessageCursor>> {
        self.existing_conversation(conversation).await?;
        let limit = list.limit.max(1);
        let records = self
            .store
            .messages(&MessageQuery {
                conversation_id: conversation,
                before: list.before,
                limit: limit.saturating_add(1),
            })
            .await?;
        let more = records.len() > limit;
        let items = records
            .into_iter()
            .take(limit)
            .map(|r| self.decode_message(r))
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = more.then(|| items.last()).flatten().map(|m| MessageCursor {
            created_at: m.created_at,
            id: m.id,
        });
        Ok(Page { items, next_cursor })
    }

    /// Changes a message's content and/or metadata.
    pub async fn update_message(&self, id: MessageId, update: MessageUpdate) -> Result<Message> {
        let old = self.existing_message(id).await?;
        let mut body: MessageBody = self
            .codec
            .decode(EntityKind::Message, id.into(), &old.body)?;
        if let Some(content) = update.content {
            body.content = content;
        }
        if let Some(metadata) = update.metadata {
            body.metadata = metadata;
        }
        let (now, version) = self.stamp()?;
        let record = MessageRecord {
            updated_at: now,
            version,
            body: self.codec.encode(EntityKind::Message, id.into(), &body)?,
            ..old
        };
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutMessage(record.clone()));
        batch.push(WriteOp::Enqueue(outbox_item(
            EntityKind::Message,
            id.into(),
            Some(record.conversation_id),
        )));
        self.commit(batch).await?;
        Ok(to_message(&record, body))
    }

    /// Deletes one message, leaving a tombstone that syncs the deletion.
    pub async fn delete_message(&self, id: MessageId) -> Result<()> {
        let old = self.existing_message(id).await?;
        let (now, version) = self.stamp()?;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Delete(Tombstone::message(
            id,
            old.conversation_id,
            version,
            now,
        )));
        batch.push(WriteOp::Enqueue(outbox_item(
            EntityKind::Message,
            id.into(),
            Some(old.conversation_id),
        )));
        self.commit(batch).await.map(drop)
    }

    // ---- whole vault -----------------------------------------------------

    /// Counts and sizes.
    pub async fn stats(&self) -> Result<VaultStats> {
        let usage = self.store.usage().await?;
        Ok(VaultStats {
            backend: self.store.backend(),
            encrypted: self.codec.is_encrypted(),
            conversations: usage.conversations,
            messages: usage.messages,
            tombstones: usage.tombstones,
            pending_changes: usage.pending_changes,
            bytes: usage.bytes,
            per_conversation: usage
                .per_conversation
                .into_iter()
                .map(|c| ConversationStats {
                    id: c.id,
                    updated_at: c.activity_at,
                    messages: c.messages,
                    bytes: c.bytes,
                    pending: c.pending,
                })
                .collect(),
        })
    }

    /// Removes every conversation, message, tombstone and pending change
    /// from this device only (nothing is synced; keys and settings stay).
    pub async fn clear_local(&self) -> Result<()> {
        Ok(self.store.clear().await?)
    }

    // ---- outbox and remote changes ---------------------------------------

    /// Up to `limit` pending changes, oldest first, ready to push.
    pub async fn pending_changes(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        Ok(self.store.outbox(limit.max(1)).await?)
    }

    /// Marks pushed changes as delivered.
    pub async fn acknowledge(&self, seqs: &[u64]) -> Result<()> {
        Ok(self.store.acknowledge(seqs).await?)
    }

    /// Applies changes that came from elsewhere (another device through the
    /// server, or an import) by last-writer-wins on their versions, in one
    /// atomic write. A change that loses to what the vault holds is counted
    /// as superseded; one that is malformed or stamped implausibly far in
    /// the future is rejected with a reason; neither stops the others.
    pub async fn apply_changes(&self, changes: Vec<Change>) -> Result<ApplyReport> {
        let (batch, refused) = self.admit_remote(changes);
        let outcome = if batch.is_empty() {
            Default::default()
        } else {
            self.commit(batch).await?
        };
        Ok(ApplyReport {
            applied: outcome.merged,
            superseded: outcome.superseded,
            rejected: refused
                .into_iter()
                .map(|r| match r {
                    Refused::ClockSkew(op, why) | Refused::Invalid(op, why) => (op, why),
                })
                .collect(),
        })
    }

    /// Turns changes from elsewhere into [`WriteOp::Merge`] operations,
    /// folding their stamps into this device's clock. Changes stamped
    /// implausibly far ahead, or malformed, are refused (in input order)
    /// and never reach the batch.
    pub(crate) fn admit_remote(&self, changes: Vec<Change>) -> (WriteBatch, Vec<Refused>) {
        let mut refused = Vec::new();
        let mut batch = WriteBatch::new();
        for change in changes {
            let op_id = change.op_id;
            if let Err(e) = self.lock_clock().observe(change.version, self.time.now()) {
                refused.push(match e {
                    CoreError::ClockSkew { .. } => Refused::ClockSkew(op_id, e.to_string()),
                    other => Refused::Invalid(op_id, other.to_string()),
                });
                continue;
            }
            match change.into_incoming() {
                Ok(incoming) => {
                    batch.push(WriteOp::Merge(incoming));
                }
                Err(e) => refused.push(Refused::Invalid(op_id, e.to_string())),
            }
        }
        (batch, refused)
    }

    /// The stored conversation, or [`VaultError::NotFound`].
    pub(crate) async fn existing_conversation(
        &self,
        id: ConversationId,
    ) -> Result<ConversationRow> {
        self.store
            .conversation(id)
            .await?
            .ok_or_else(|| not_found(EntityKind::Conversation, id.into()))
    }

    /// The stored message, or [`VaultError::NotFound`].
    pub(crate) async fn existing_message(&self, id: MessageId) -> Result<MessageRecord> {
        self.store
            .message(id)
            .await?
            .ok_or_else(|| not_found(EntityKind::Message, id.into()))
    }

    pub(crate) fn decode_conversation(&self, row: ConversationRow) -> Result<Conversation> {
        let body: ConversationBody = self.codec.decode(
            EntityKind::Conversation,
            row.record.id.into(),
            &row.record.body,
        )?;
        Ok(to_conversation(row.record, row.activity_at, body))
    }

    pub(crate) fn decode_message(&self, record: MessageRecord) -> Result<Message> {
        let body: MessageBody =
            self.codec
                .decode(EntityKind::Message, record.id.into(), &record.body)?;
        Ok(to_message(&record, body))
    }
}

pub(crate) async fn read_header(store: &dyn Store) -> Result<Option<VaultHeader>> {
    let Some(bytes) = store.meta(HEADER_KEY).await? else {
        return Ok(None);
    };
    let header: VaultHeader = serde_json::from_slice(&bytes)
        .map_err(|e| VaultError::Header(format!("unreadable vault header: {e}")))?;
    if header.format_version > HEADER_VERSION {
        return Err(VaultError::Header(format!(
            "vault format {} is newer than this program supports ({HEADER_VERSION}); upgrade chatvault",
            header.format_version
        )));
    }
    Ok(Some(header))
}

async fn read_envelope(store: &dyn Store) -> Result<KeyEnvelope> {
    let bytes = store.meta(KEYS_KEY).await?.ok_or_else(|| {
        VaultError::Header("the vault is encrypted but its key envelope is missing".into())
    })?;
    let json = std::str::from_utf8(&bytes)
        .map_err(|_| VaultError::Header("the key envelope is not text".into()))?;
    Ok(KeyEnvelope::from_json(json)?)
}

/// The keys a new vault is created with.
pub(crate) enum NewKeys<'a> {
    /// None: a plaintext vault.
    Plain,
    /// This envelope (new, or the sync account's) and the data key it wraps.
    Sealed(&'a KeyEnvelope, DataKey),
}

/// Writes the header (and key envelope) of a new vault in one batch.
pub(crate) async fn create(
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
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::SetMeta(HEADER_KEY.into(), to_json(&header)?));
    let codec = match keys {
        NewKeys::Plain => Codec::Plain,
        NewKeys::Sealed(envelope, data) => {
            batch.push(WriteOp::SetMeta(
                KEYS_KEY.into(),
                envelope.to_json().into_bytes(),
            ));
            Codec::Sealed(data)
        }
    };
    store.write(batch).await?;
    tracing::info!(backend = store.backend(), device = %header.device_id, encrypted = header.encrypted, "created vault");
    Ok((header, codec))
}

fn outbox_item(
    kind: EntityKind,
    entity_id: RecordId,
    conversation_id: Option<ConversationId>,
) -> OutboxItem {
    OutboxItem {
        op_id: OpId::new(),
        kind,
        entity_id,
        conversation_id,
    }
}

fn not_found(kind: EntityKind, id: RecordId) -> VaultError {
    VaultError::NotFound { kind, id }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        VaultError::Invalid(CoreError::Invalid {
            field: "header",
            reason: e.to_string(),
        })
    })
}

fn to_conversation(
    record: ConversationRecord,
    activity_at: Timestamp,
    body: ConversationBody,
) -> Conversation {
    Conversation {
        id: record.id,
        user_id: record.user_id,
        title: body.title,
        created_at: record.created_at,
        updated_at: activity_at.max(record.updated_at),
        version: record.version,
        metadata: body.metadata,
    }
}

fn to_message(record: &MessageRecord, body: MessageBody) -> Message {
    Message {
        id: record.id,
        conversation_id: record.conversation_id,
        role: body.role,
        content: body.content,
        created_at: record.created_at,
        updated_at: record.updated_at,
        version: record.version,
        metadata: body.metadata,
    }
}
