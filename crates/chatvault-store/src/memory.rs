//! The in-memory backend: for tests and ephemeral sessions. It implements
//! the whole contract (including the outbox) so the conformance suite holds
//! it to the same rules as the persistent backends.

use crate::types::check_limit;
use crate::{
    import_wins, incoming_key, incoming_outbox_item, incoming_parent, incoming_wins, merged_op,
    parse_clock_mark, version_matches, BatchSource, ConversationQuery, ConversationRow,
    ConversationUsage, DeletionMark, Footprint, LocalVersion, MessageQuery, MetaEntry, OutboxEntry,
    OutboxItem, ParkReason, ParkedEntry, Result, Store, StoreError, StoredOutboxEntry,
    TombstoneQuery, Usage, WriteBatch, WriteOp, WriteOutcome, CLOCK_MARK_KEY,
};
use async_trait::async_trait;
use chatvault_core::{
    Change, ConversationId, EntityKind, Hlc, Incoming, MessageId, MessageRecord, RecordId,
    Timestamp, Tombstone,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

/// [`incoming_wins`] or [`import_wins`].
type WinRule = fn(&Incoming, Option<&LocalVersion>, Option<chatvault_core::Hlc>) -> bool;

/// A store that lives in memory and is gone when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    quota: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    conversations: HashMap<ConversationId, ConversationRow>,
    messages: HashMap<MessageId, MessageRecord>,
    by_conversation: BTreeSet<(ConversationId, Timestamp, MessageId)>,
    tombstones: HashMap<(EntityKind, RecordId), Tombstone>,
    /// Per conversation, the highest stamp it was deleted at by deletions
    /// learnt from elsewhere ([`WriteOp::CoverMessages`]) and by tombstones
    /// a recreation replaced; its tombstone, while it has one, counts too
    /// (see [`Store::deletion_mark`]).
    deletion_marks: HashMap<ConversationId, Hlc>,
    outbox: BTreeMap<u64, Slot>,
    outbox_by_entity: HashMap<RecordId, u64>,
    next_seq: u64,
    meta: HashMap<String, Vec<u8>>,
}

/// One outbox entry: the change's pointer and, once refused, its parking.
#[derive(Debug, Clone)]
struct Slot {
    item: OutboxItem,
    parked: Option<ParkReason>,
    attempts: u32,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that refuses, with [`StoreError::Full`], any batch
    /// that would take its stored bodies past `bytes` (like a browser quota).
    pub fn with_quota(bytes: u64) -> Self {
        Self {
            inner: Mutex::default(),
            quota: Some(bytes),
        }
    }

    /// Refuses, before anything is applied, batches that would take the
    /// stored bodies past the quota. Conservative: counts new bodies without
    /// crediting the ones they replace.
    fn check_quota(&self, inner: &Inner, batches: &[WriteBatch]) -> Result<()> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let stored = inner.stored_bytes();
        let incoming: u64 = batches
            .iter()
            .flat_map(|b| &b.ops)
            .map(|op| match op {
                WriteOp::PutConversation(r) => r.body.len() as u64,
                WriteOp::PutMessage(m) | WriteOp::InsertMessage(m) => m.body.len() as u64,
                WriteOp::Merge(Incoming::Conversation(r)) => r.body.len() as u64,
                WriteOp::Merge(Incoming::Message(m)) => m.body.len() as u64,
                WriteOp::MergeAndEnqueue(Incoming::Conversation(r), _) => r.body.len() as u64,
                WriteOp::MergeAndEnqueue(Incoming::Message(m), _) => m.body.len() as u64,
                _ => 0,
            })
            .sum();
        if stored + incoming > quota {
            return Err(StoreError::full(format!(
                "memory store quota of {quota} bytes reached"
            )));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied batch
        // (batches are applied by infallible code), so poisoning is benign.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The refusal of a [`WriteOp::RestoreOutbox`] onto another record's entry.
fn seq_taken(seq: u64) -> StoreError {
    StoreError::InvalidRequest(format!(
        "outbox sequence number {seq} is another record's entry"
    ))
}

impl Inner {
    /// Refuses, before anything is applied, batches whose
    /// [`WriteOp::RequireConversation`] or [`WriteOp::InsertMessage`] does
    /// not hold **at its position**: the earlier operations of the batches
    /// count (a conversation put earlier satisfies a requirement, one
    /// deleted earlier fails it), as they do in a backend that applies the
    /// operations in order inside a transaction. A merge counts by whether
    /// it wins over the state before the batches (a merge that an earlier
    /// operation of the same batches would flip is not foreseen). The same
    /// holds for [`WriteOp::RequireVersion`] and [`WriteOp::ClaimStamps`].
    fn check_requirements(&self, batches: &[WriteBatch]) -> Result<()> {
        let mut conversation_exists: HashMap<ConversationId, bool> = HashMap::new();
        let mut message_exists: HashMap<MessageId, bool> = HashMap::new();
        // Versions and the clock mark as earlier operations left them.
        let mut versions: HashMap<(EntityKind, RecordId), Option<LocalVersion>> = HashMap::new();
        let mut mark: Option<Option<Vec<u8>>> = None;
        // Metadata values as earlier operations left them.
        let mut meta: HashMap<&str, Option<&Vec<u8>>> = HashMap::new();
        for op in batches.iter().flat_map(|b| &b.ops) {
            self.track_version(op, &mut versions);
            match op {
                WriteOp::RequireMeta(key, expected) => {
                    let stored = match meta.get(key.as_str()) {
                        Some(v) => *v,
                        None => self.meta.get(key),
                    };
                    if stored != expected.as_ref() {
                        return Err(StoreError::MetaChanged { key: key.clone() });
                    }
                }
                WriteOp::SetMeta(key, value) => {
                    meta.insert(key, Some(value));
                }
                WriteOp::DeleteMeta(key) => {
                    meta.insert(key, None);
                }
                WriteOp::RestoreOutbox(entry) => {
                    let taken = self.outbox.get(&entry.seq);
                    if taken.is_some_and(|slot| slot.item.entity_id != entry.item.entity_id) {
                        return Err(seq_taken(entry.seq));
                    }
                }
                _ => {}
            }
            match op {
                WriteOp::RequireVersion(kind, id, expected) => {
                    let stored = match versions.get(&(*kind, *id)) {
                        Some(v) => v.clone(),
                        None => self.local_version(*kind, *id),
                    };
                    // A message whose conversation an earlier operation
                    // deleted is gone too.
                    let orphaned = *kind == EntityKind::Message
                        && self.messages.get(&id.message()).is_some_and(|m| {
                            conversation_exists.get(&m.conversation_id) == Some(&false)
                        });
                    if orphaned || !version_matches(stored.as_ref(), *expected) {
                        return Err(StoreError::VersionChanged {
                            kind: *kind,
                            id: *id,
                        });
                    }
                }
                WriteOp::ClaimStamps(claim) => {
                    let stored = match &mark {
                        Some(m) => m.clone(),
                        None => self.meta.get(CLOCK_MARK_KEY).cloned(),
                    };
                    let stored = stored.map(|b| parse_clock_mark(&b)).transpose()?;
                    let next = claim
                        .accept(stored)
                        .map_err(|mark| StoreError::StampsTaken { mark })?;
                    mark = Some(Some(next.to_string().into_bytes()));
                }
                WriteOp::SetMeta(key, value) if key == CLOCK_MARK_KEY => {
                    mark = Some(Some(value.clone()));
                }
                WriteOp::DeleteMeta(key) if key == CLOCK_MARK_KEY => mark = Some(None),
                _ => {}
            }
            let merged = self.winning_merge(op);
            match (op, merged) {
                (WriteOp::PutConversation(r), _) | (_, Some(Incoming::Conversation(r))) => {
                    conversation_exists.insert(r.id, true);
                }
                (WriteOp::PutMessage(m), _) | (_, Some(Incoming::Message(m))) => {
                    message_exists.insert(m.id, true);
                }
                (WriteOp::Delete(t), _) | (_, Some(Incoming::Tombstone(t))) => match t.kind {
                    EntityKind::Conversation => {
                        conversation_exists.insert(t.id.conversation(), false);
                    }
                    EntityKind::Message => {
                        message_exists.insert(t.id.message(), false);
                    }
                },
                (WriteOp::RequireConversation(id), _) => {
                    let exists = conversation_exists
                        .get(id)
                        .copied()
                        .unwrap_or_else(|| self.conversations.contains_key(id));
                    if !exists {
                        return Err(StoreError::ConversationNotFound(*id));
                    }
                }
                (WriteOp::InsertMessage(m), _) => {
                    let exists = message_exists
                        .insert(m.id, true)
                        .unwrap_or_else(|| self.messages.contains_key(&m.id));
                    if exists {
                        return Err(StoreError::InvalidRequest(format!(
                            "message {} already exists",
                            m.id
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The incoming record of a merge `op` that would win against what is
    /// stored ([`incoming_wins`] for sync, [`import_wins`] for imports);
    /// `None` for a losing merge or any other operation.
    fn winning_merge<'a>(&self, op: &'a WriteOp) -> Option<&'a Incoming> {
        match op {
            WriteOp::Merge(incoming) if self.wins(incoming, incoming_wins) => Some(incoming),
            WriteOp::MergeAndEnqueue(incoming, _) if self.wins(incoming, import_wins) => {
                Some(incoming)
            }
            _ => None,
        }
    }

    /// Records what `op` leaves stored for the record it writes (for the
    /// version checks of later operations of the same batches).
    fn track_version(
        &self,
        op: &WriteOp,
        versions: &mut HashMap<(EntityKind, RecordId), Option<LocalVersion>>,
    ) {
        let stored = |version, deleted| {
            Some(LocalVersion {
                version,
                deleted,
                body: Vec::new(),
            })
        };
        let merged = self.winning_merge(op);
        match (op, merged) {
            (WriteOp::PutConversation(r), _) | (_, Some(Incoming::Conversation(r))) => {
                versions.insert(
                    (EntityKind::Conversation, r.id.into()),
                    stored(r.version, false),
                );
            }
            (WriteOp::PutMessage(m) | WriteOp::InsertMessage(m), _)
            | (_, Some(Incoming::Message(m))) => {
                versions.insert((EntityKind::Message, m.id.into()), stored(m.version, false));
            }
            (WriteOp::Delete(t), _) | (_, Some(Incoming::Tombstone(t))) => {
                versions.insert((t.kind, t.id), stored(t.version, true));
            }
            _ => {}
        }
    }

    /// Body bytes of every live record.
    fn stored_bytes(&self) -> u64 {
        self.conversations
            .values()
            .map(|r| r.record.body.len() as u64)
            .chain(self.messages.values().map(|m| m.body.len() as u64))
            .sum()
    }

    fn messages_of(&self, id: ConversationId) -> impl Iterator<Item = &MessageRecord> + '_ {
        self.by_conversation
            .range((id, Timestamp(i64::MIN), MessageId::from_bytes([0; 16]))..)
            .take_while(move |(c, _, _)| *c == id)
            .filter_map(|(_, _, m)| self.messages.get(m))
    }

    fn remove_message(&mut self, id: MessageId) {
        if let Some(old) = self.messages.remove(&id) {
            self.by_conversation
                .remove(&(old.conversation_id, old.created_at, old.id));
        }
    }

    /// [`Store::deletion_mark`]: the later of the kept mark and the
    /// conversation's tombstone (a local tombstone re-stamped lower after a
    /// `clock_skew` refusal counts at its new stamp).
    fn deletion_mark(&self, id: ConversationId) -> Option<Hlc> {
        let tombstone = self
            .tombstones
            .get(&(EntityKind::Conversation, id.into()))
            .map(|t| t.version);
        self.deletion_marks.get(&id).copied().max(tombstone)
    }

    /// Raises a conversation's kept deletion mark to at least `through`.
    fn raise_mark(&mut self, id: ConversationId, through: Hlc) {
        let mark = self.deletion_marks.entry(id).or_insert(through);
        *mark = (*mark).max(through);
    }

    /// Drops what a deletion at `through` covers (see
    /// [`WriteOp::CoverMessages`]; the caller raises the mark).
    fn cover_messages(&mut self, id: ConversationId, through: Hlc) {
        let doomed: Vec<RecordId> = self
            .messages_of(id)
            .filter(|m| m.version <= through)
            .map(|m| m.id.into())
            .chain(
                self.tombstones
                    .values()
                    .filter(|t| t.conversation_id == Some(id) && t.version <= through)
                    .map(|t| t.id),
            )
            .collect();
        for entity in doomed {
            self.remove_message(entity.message());
            self.tombstones.remove(&(EntityKind::Message, entity));
            // Whatever conversation its change was queued under, the record
            // is gone now: its change has nothing left to send.
            self.dequeue(entity);
        }
    }

    fn dequeue(&mut self, entity: RecordId) {
        if let Some(seq) = self.outbox_by_entity.remove(&entity) {
            self.outbox.remove(&seq);
        }
    }

    fn local_version(&self, kind: EntityKind, id: RecordId) -> Option<LocalVersion> {
        let live = match kind {
            EntityKind::Conversation => self
                .conversations
                .get(&id.conversation())
                .map(|r| (r.record.version, r.record.body.0.clone())),
            EntityKind::Message => self
                .messages
                .get(&id.message())
                .map(|m| (m.version, m.body.0.clone())),
        };
        match live {
            Some((version, body)) => Some(LocalVersion {
                version,
                deleted: false,
                body,
            }),
            None => self.tombstones.get(&(kind, id)).map(|t| LocalVersion {
                version: t.version,
                deleted: true,
                body: Vec::new(),
            }),
        }
    }

    /// Whether `incoming` wins over what the store holds, by `rule`
    /// ([`incoming_wins`] or [`import_wins`]).
    fn wins(&self, incoming: &Incoming, rule: WinRule) -> bool {
        let (kind, id) = incoming_key(incoming);
        let local = self.local_version(kind, id);
        let mark = incoming_parent(incoming).and_then(|c| self.deletion_mark(c));
        rule(incoming, local.as_ref(), mark)
    }

    fn apply(&mut self, op: WriteOp, outcome: &mut WriteOutcome) {
        match op {
            // Checked before anything was applied.
            WriteOp::RequireConversation(_)
            | WriteOp::RequireVersion(..)
            | WriteOp::RequireMeta(..) => {}
            WriteOp::ClaimStamps(claim) => {
                let stored = self
                    .meta
                    .get(CLOCK_MARK_KEY)
                    .and_then(|b| parse_clock_mark(b).ok());
                // Accepted by the check; a refusal here cannot happen.
                if let Ok(next) = claim.accept(stored) {
                    self.meta
                        .insert(CLOCK_MARK_KEY.into(), next.to_string().into_bytes());
                }
            }
            WriteOp::Merge(incoming) => {
                if self.wins(&incoming, incoming_wins) {
                    self.dequeue(incoming_key(&incoming).1);
                    self.apply(merged_op(incoming), outcome);
                    outcome.merged += 1;
                } else {
                    outcome.superseded += 1;
                }
            }
            WriteOp::MergeAndEnqueue(incoming, op_id) => {
                if self.wins(&incoming, import_wins) {
                    let item = incoming_outbox_item(&incoming, op_id);
                    self.apply(merged_op(incoming), outcome);
                    self.apply(WriteOp::Enqueue(item), outcome);
                    outcome.merged += 1;
                } else {
                    outcome.superseded += 1;
                }
            }
            WriteOp::RaiseActivity(id, at) => {
                if let Some(row) = self.conversations.get_mut(&id) {
                    row.activity_at = row.activity_at.max(at);
                }
            }
            WriteOp::PutConversation(record) => {
                // The tombstone goes; its deletion stays in the mark.
                if let Some(t) = self
                    .tombstones
                    .remove(&(EntityKind::Conversation, record.id.into()))
                {
                    self.raise_mark(record.id, t.version);
                }
                let newest_message = self
                    .messages_of(record.id)
                    .map(|m| m.updated_at)
                    .max()
                    .unwrap_or(Timestamp::EPOCH);
                // Activity never goes back: an older edit time arriving
                // later (another device's lagging clock) keeps the newer
                // activity, as for messages.
                let previous = self
                    .conversations
                    .get(&record.id)
                    .map_or(Timestamp::EPOCH, |row| row.activity_at);
                let activity_at = record.updated_at.max(newest_message).max(previous);
                self.conversations.insert(
                    record.id,
                    ConversationRow {
                        record,
                        activity_at,
                    },
                );
            }
            WriteOp::PutMessage(record) | WriteOp::InsertMessage(record) => {
                self.tombstones
                    .remove(&(EntityKind::Message, record.id.into()));
                self.remove_message(record.id);
                if let Some(row) = self.conversations.get_mut(&record.conversation_id) {
                    row.activity_at = row.activity_at.max(record.updated_at);
                }
                self.by_conversation
                    .insert((record.conversation_id, record.created_at, record.id));
                self.messages.insert(record.id, record);
            }
            WriteOp::Delete(tombstone) => {
                match tombstone.kind {
                    EntityKind::Conversation => {
                        let id = tombstone.id.conversation();
                        self.conversations.remove(&id);
                        self.cover_messages(id, tombstone.version);
                    }
                    EntityKind::Message => self.remove_message(tombstone.id.message()),
                }
                self.tombstones
                    .insert((tombstone.kind, tombstone.id), tombstone);
            }
            WriteOp::CoverMessages(id, through) => {
                self.raise_mark(id, through);
                self.cover_messages(id, through);
            }
            WriteOp::Enqueue(item) => {
                if self.local_version(item.kind, item.entity_id).is_none() {
                    // Neither the record nor its tombstone: nothing to send.
                    return;
                }
                self.dequeue(item.entity_id);
                self.next_seq += 1;
                let slot = Slot {
                    item,
                    parked: None,
                    attempts: 0,
                };
                self.outbox.insert(self.next_seq, slot);
                self.outbox_by_entity.insert(item.entity_id, self.next_seq);
            }
            WriteOp::RestoreOutbox(entry) => {
                let item = entry.item;
                if self.local_version(item.kind, item.entity_id).is_none() {
                    return;
                }
                self.dequeue(item.entity_id);
                self.outbox.insert(
                    entry.seq,
                    Slot {
                        item,
                        parked: entry.parked,
                        attempts: entry.attempts,
                    },
                );
                self.outbox_by_entity.insert(item.entity_id, entry.seq);
                self.next_seq = self.next_seq.max(entry.seq);
            }
            WriteOp::Dequeue(entity) => self.dequeue(entity),
            WriteOp::Park(seq, reason) => {
                if let Some(slot) = self.outbox.get_mut(&seq) {
                    slot.parked = Some(reason);
                    slot.attempts = slot.attempts.saturating_add(1);
                }
            }
            WriteOp::Unpark(entity) => {
                if let Some(seq) = self.outbox_by_entity.get(&entity) {
                    if let Some(slot) = self.outbox.get_mut(seq) {
                        slot.parked = None;
                    }
                }
            }
            WriteOp::ForgetUnlessPending(tombstone) => {
                if self.forgettable(&tombstone) {
                    // A forgotten conversation takes all its messages
                    // along: nothing of it is unsynced.
                    let conversation = (tombstone.kind == EntityKind::Conversation)
                        .then(|| tombstone.id.conversation());
                    self.apply(WriteOp::Delete(tombstone), outcome);
                    if let Some(conversation) = conversation {
                        self.cover_messages(conversation, Hlc::MAX);
                    }
                    outcome.forgotten += 1;
                }
            }
            WriteOp::SetMeta(key, value) => {
                self.meta.insert(key, value);
            }
            WriteOp::DeleteMeta(key) => {
                self.meta.remove(&key);
            }
        }
    }

    /// Whether [`WriteOp::ForgetUnlessPending`] may delete: the record is
    /// stored at the tombstone's version and nothing of it is unsynced.
    fn forgettable(&self, t: &Tombstone) -> bool {
        let same_version = self
            .local_version(t.kind, t.id)
            .is_some_and(|l| !l.deleted && l.version == t.version);
        if !same_version || self.outbox_by_entity.contains_key(&t.id) {
            return false;
        }
        match t.kind {
            EntityKind::Conversation => !self
                .outbox
                .values()
                .any(|s| s.item.conversation_id == Some(t.id.conversation())),
            EntityKind::Message => true,
        }
    }

    fn change_for(&self, item: &OutboxItem) -> Option<Change> {
        let live = match item.kind {
            EntityKind::Conversation => self
                .conversations
                .get(&item.entity_id.conversation())
                .map(|row| Change::upsert_conversation(item.op_id, &row.record)),
            EntityKind::Message => self
                .messages
                .get(&item.entity_id.message())
                .map(|m| Change::upsert_message(item.op_id, m)),
        };
        live.or_else(|| {
            self.tombstones
                .get(&(item.kind, item.entity_id))
                .map(|t| Change::delete(item.op_id, t))
        })
    }
}

#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRow>> {
        Ok(self.lock().conversations.get(&id).cloned())
    }

    async fn conversations(&self, query: &ConversationQuery) -> Result<Vec<ConversationRow>> {
        check_limit(query.limit)?;
        let inner = self.lock();
        let mut rows: Vec<&ConversationRow> = inner
            .conversations
            .values()
            .filter(|r| query.matches(r))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse((r.activity_at, r.record.id)));
        Ok(rows.into_iter().take(query.limit).cloned().collect())
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>> {
        Ok(self.lock().messages.get(&id).cloned())
    }

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageRecord>> {
        check_limit(query.limit)?;
        let inner = self.lock();
        let mut all: Vec<&MessageRecord> = inner
            .messages_of(query.conversation_id)
            .filter(|m| query.matches(m))
            .collect();
        all.sort_by_key(|m| std::cmp::Reverse((m.created_at, m.id)));
        Ok(all.into_iter().take(query.limit).cloned().collect())
    }

    async fn tombstone(&self, kind: EntityKind, id: RecordId) -> Result<Option<Tombstone>> {
        Ok(self.lock().tombstones.get(&(kind, id)).cloned())
    }

    async fn deletion_mark(&self, id: ConversationId) -> Result<Option<Hlc>> {
        Ok(self.lock().deletion_mark(id))
    }

    async fn tombstones(&self, query: &TombstoneQuery) -> Result<Vec<Tombstone>> {
        check_limit(query.limit)?;
        let inner = self.lock();
        let mut all: Vec<&Tombstone> = inner
            .tombstones
            .values()
            .filter(|t| query.matches(t))
            .collect();
        all.sort_by_key(|t| (t.kind, t.id));
        Ok(all.into_iter().take(query.limit).cloned().collect())
    }

    async fn footprint(&self) -> Result<Option<Footprint>> {
        let used = self.lock().stored_bytes();
        Ok(Some(Footprint {
            used_bytes: used,
            reclaimable_bytes: 0,
            available_bytes: self.quota.map(|q| q.saturating_sub(used)),
            quota_bytes: self.quota,
            persistent: false,
        }))
    }

    async fn usage(&self) -> Result<Usage> {
        let inner = self.lock();
        let pending_conversations: BTreeSet<ConversationId> = inner
            .outbox
            .values()
            .map(|s| &s.item)
            .filter_map(|i| match i.kind {
                EntityKind::Conversation => Some(i.entity_id.conversation()),
                EntityKind::Message => i.conversation_id,
            })
            .collect();
        let mut per_conversation: Vec<ConversationUsage> = inner
            .conversations
            .values()
            .map(|row| {
                let (count, bytes) = inner
                    .messages_of(row.record.id)
                    .fold((0u64, 0u64), |(n, b), m| (n + 1, b + m.body.len() as u64));
                ConversationUsage {
                    id: row.record.id,
                    activity_at: row.activity_at,
                    messages: count,
                    bytes: bytes + row.record.body.len() as u64,
                    pending: pending_conversations.contains(&row.record.id),
                }
            })
            .collect();
        per_conversation.sort_by_key(|c| std::cmp::Reverse((c.activity_at, c.id)));
        let bytes = inner.stored_bytes();
        Ok(Usage {
            conversations: inner.conversations.len() as u64,
            messages: inner.messages.len() as u64,
            tombstones: inner.tombstones.len() as u64,
            pending_changes: inner.outbox.values().filter(|s| s.parked.is_none()).count() as u64,
            parked_changes: inner.outbox.values().filter(|s| s.parked.is_some()).count() as u64,
            bytes,
            per_conversation,
        })
    }

    async fn write(&self, batch: WriteBatch) -> Result<WriteOutcome> {
        let mut inner = self.lock();
        self.check_quota(&inner, std::slice::from_ref(&batch))?;
        inner.check_requirements(std::slice::from_ref(&batch))?;
        let mut outcome = WriteOutcome::default();
        for op in batch.ops {
            inner.apply(op, &mut outcome);
        }
        Ok(outcome)
    }

    async fn write_all(&self, source: BatchSource) -> Result<WriteOutcome> {
        // Gather first so a failing source leaves the store untouched.
        let batches = source.collect::<Result<Vec<_>>>()?;
        let mut inner = self.lock();
        self.check_quota(&inner, &batches)?;
        inner.check_requirements(&batches)?;
        let mut outcome = WriteOutcome::default();
        for op in batches.into_iter().flat_map(|b| b.ops) {
            inner.apply(op, &mut outcome);
        }
        Ok(outcome)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        check_limit(limit)?;
        let inner = self.lock();
        Ok(inner
            .outbox
            .iter()
            .filter(|(_, slot)| slot.parked.is_none())
            .filter_map(|(seq, slot)| {
                inner
                    .change_for(&slot.item)
                    .map(|change| OutboxEntry { seq: *seq, change })
            })
            .take(limit)
            .collect())
    }

    async fn parked(&self, after: Option<u64>, limit: usize) -> Result<Vec<ParkedEntry>> {
        check_limit(limit)?;
        let inner = self.lock();
        let from = after.map_or(0, |a| a.saturating_add(1));
        Ok(inner
            .outbox
            .range(from..)
            .filter_map(|(seq, slot)| {
                let reason = slot.parked.clone()?;
                let change = inner.change_for(&slot.item)?;
                Some(ParkedEntry {
                    seq: *seq,
                    change,
                    reason,
                    attempts: slot.attempts,
                })
            })
            .take(limit)
            .collect())
    }

    async fn acknowledge(&self, seqs: &[u64]) -> Result<()> {
        let mut inner = self.lock();
        for seq in seqs {
            if let Some(slot) = inner.outbox.remove(seq) {
                inner.outbox_by_entity.remove(&slot.item.entity_id);
            }
        }
        Ok(())
    }

    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().meta.get(key).cloned())
    }

    async fn meta_entries(&self, after: Option<&str>, limit: usize) -> Result<Vec<MetaEntry>> {
        check_limit(limit)?;
        let inner = self.lock();
        let mut keys: Vec<&String> = inner
            .meta
            .keys()
            .filter(|k| after.is_none_or(|a| k.as_str() > a))
            .collect();
        keys.sort();
        Ok(keys
            .into_iter()
            .take(limit)
            .map(|k| MetaEntry {
                key: k.clone(),
                value: inner.meta[k].clone(),
            })
            .collect())
    }

    async fn all_messages(
        &self,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        check_limit(limit)?;
        let inner = self.lock();
        let mut all: Vec<&MessageRecord> = inner
            .messages
            .values()
            .filter(|m| after.is_none_or(|a| m.id > a))
            .collect();
        all.sort_by_key(|m| m.id);
        Ok(all.into_iter().take(limit).cloned().collect())
    }

    async fn deletion_marks(
        &self,
        after: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<DeletionMark>> {
        check_limit(limit)?;
        let inner = self.lock();
        let mut all: Vec<DeletionMark> = inner
            .deletion_marks
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| **id > a))
            .map(|(id, version)| DeletionMark {
                conversation_id: *id,
                version: *version,
            })
            .collect();
        all.sort_by_key(|m| m.conversation_id);
        all.truncate(limit);
        Ok(all)
    }

    async fn outbox_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOutboxEntry>> {
        check_limit(limit)?;
        let inner = self.lock();
        let from = after.map_or(0, |a| a.saturating_add(1));
        Ok(inner
            .outbox
            .range(from..)
            .take(limit)
            .map(|(seq, slot)| StoredOutboxEntry {
                seq: *seq,
                item: slot.item,
                parked: slot.parked.clone(),
                attempts: slot.attempts,
            })
            .collect())
    }

    async fn clear(&self) -> Result<()> {
        let mut inner = self.lock();
        let meta = std::mem::take(&mut inner.meta);
        *inner = Inner {
            meta,
            next_seq: inner.next_seq,
            ..Inner::default()
        };
        Ok(())
    }
}
