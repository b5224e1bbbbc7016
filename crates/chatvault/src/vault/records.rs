//! Records: conversations and messages — create, read, list (one page, or
//! every page as a stream), update, delete — plus whole-vault counts and
//! clearing. Each write stamps its versions, encodes (and in an encrypted
//! vault, encrypts) content and commits the record with its outbox entry in
//! one atomic batch.
//!
//! A write that replaces a stored record (update, delete) stamps above the
//! version it read and requires, inside the write, that the store still
//! holds that version ([`WriteOp::RequireVersion`]); if a pull (or another
//! process) changed the record in between, it reads again, re-applies the
//! edit to what is stored now and retries. So a local edit never replaces
//! a newer version it did not see.
//!
//! Must never write a record without its outbox entry (a change that is
//! not queued never syncs), never replace a record without requiring the
//! version it read, nor read a store page without decoding it through the
//! vault's codec.

use super::stamps::MAX_ATTEMPTS;
use super::types::{
    ConversationStats, ConversationUpdate, DamagedRecords, ListConversations, ListMessages,
    MessageUpdate, NewConversation, NewMessage, VaultStats,
};
use super::Vault;
use crate::codec::{ConversationBody, MessageBody, Payload};
use crate::{Result, VaultError};
use chatvault_core::{
    Body, Conversation, ConversationCursor, ConversationId, ConversationRecord, EntityKind, Hlc,
    Message, MessageCursor, MessageId, MessageRecord, OpId, Page, RecordId, Timestamp, Tombstone,
};
use chatvault_store::{
    ConversationQuery, ConversationRow, MessageQuery, OutboxItem, StoreError, TombstoneQuery,
    WriteBatch, WriteOp,
};
use futures::stream::{self, Stream, TryStreamExt};
use std::collections::BTreeSet;

/// Records fetched per store call when walking a whole vault.
pub(super) const PAGE: usize = 500;

impl Vault {
    /// Creates a conversation owned by the vault's user, queued for sync.
    /// With [`NewConversation::id`] the create can be repeated: see there.
    pub async fn create_conversation(&self, new: NewConversation) -> Result<Conversation> {
        let body = ConversationBody::new(new.title, new.metadata);
        let id = match new.id {
            None => ConversationId::new(),
            Some(id) => match self.created_conversation(id, &body).await? {
                Some(created) => return Ok(created),
                None => id,
            },
        };
        let (record, _) = self
            .commit_stamped(|stamps| {
                let now = stamps.now();
                let version = stamps.next()?;
                let record = ConversationRecord {
                    id,
                    user_id: self.user.clone(),
                    created_at: now,
                    updated_at: now,
                    version,
                    // Sealed under its version: encoded again if the write
                    // has to be re-stamped.
                    body: self.seal(EntityKind::Conversation, id.into(), None, version, &body)?,
                };
                let mut batch = WriteBatch::new();
                batch.push(WriteOp::PutConversation(record.clone()));
                batch.push(WriteOp::Enqueue(outbox_item(
                    EntityKind::Conversation,
                    id.into(),
                    None,
                )));
                Ok((batch, record))
            })
            .await?;
        let now = record.updated_at;
        Ok(to_conversation(record, now, body))
    }

    /// The conversation with this id; [`VaultError::NotFound`] if there is
    /// none (or it was deleted).
    pub async fn conversation(&self, id: ConversationId) -> Result<Conversation> {
        let row = self.existing_conversation(id).await?;
        self.decode_conversation(row)
    }

    /// Conversations, most recent activity first. A stored conversation
    /// that cannot be read (damaged) is left out and named in
    /// [`Page::damaged`]; the page goes on past it.
    pub async fn conversations(
        &self,
        list: ListConversations,
    ) -> Result<Page<Conversation, ConversationCursor>> {
        Ok(self.conversation_page(list).await?.0)
    }

    /// [`conversations`](Self::conversations), with the error of each
    /// damaged record.
    async fn conversation_page(
        &self,
        list: ListConversations,
    ) -> Result<(Page<Conversation, ConversationCursor>, Vec<VaultError>)> {
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
        Ok(page_of(
            rows,
            limit,
            |r| self.decode_conversation(r),
            |r| ConversationCursor {
                // The decoded conversation's `updated_at`.
                updated_at: r.activity_at.max(r.record.updated_at),
                id: r.record.id,
            },
            |r| r.record.id.into(),
        ))
    }

    /// Every conversation active within `[from, to]` (inclusive), most
    /// recent first.
    pub async fn conversations_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Conversation>> {
        self.conversations_stream(ListConversations {
            active_from: Some(from),
            active_to: Some(to),
            after: None,
            limit: PAGE,
        })
        .try_collect()
        .await
    }

    /// Changes a conversation's title and/or metadata. The edit applies to
    /// the version stored when it is written: a version pulled meanwhile is
    /// edited, never overwritten.
    pub async fn update_conversation(
        &self,
        id: ConversationId,
        update: ConversationUpdate,
    ) -> Result<Conversation> {
        for _ in 0..MAX_ATTEMPTS {
            let row = self.existing_conversation(id).await?;
            let mut body: ConversationBody = self.codec.decode(
                EntityKind::Conversation,
                id.into(),
                None,
                row.record.version,
                &row.record.body,
            )?;
            if let Some(title) = &update.title {
                body.title = title.clone();
            }
            if let Some(metadata) = &update.metadata {
                body.metadata = metadata.clone();
            }
            let read = row.record.version;
            let written = self
                .commit_stamped(|stamps| {
                    let version = stamps.above(read)?;
                    let record = ConversationRecord {
                        updated_at: stamps.now(),
                        version,
                        body: self.seal(
                            EntityKind::Conversation,
                            id.into(),
                            None,
                            version,
                            &body,
                        )?,
                        ..row.record.clone()
                    };
                    let batch = rewrite_batch(
                        EntityKind::Conversation,
                        id.into(),
                        None,
                        read,
                        WriteOp::PutConversation(record.clone()),
                    );
                    Ok((batch, record))
                })
                .await;
            if let Some((record, _)) = changed_since_read(written)? {
                let activity = row.activity_at.max(record.updated_at);
                return Ok(to_conversation(record, activity, body));
            }
        }
        Err(record_contended())
    }

    /// Deletes a conversation and all its messages, leaving a tombstone
    /// that syncs the deletion (stamped above the version stored when it
    /// is written).
    pub async fn delete_conversation(&self, id: ConversationId) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            let read = self.existing_conversation(id).await?.record.version;
            // The deletion covers what it is stamped above (core's rule):
            // above every message held here too, so it takes them all,
            // here and on every other replica.
            let mut newest = read;
            let mut pages = std::pin::pin!(self.message_record_pages(id));
            while let Some(page) = pages.try_next().await? {
                newest = page.iter().map(|m| m.version).fold(newest, Hlc::max);
            }
            let written = self
                .commit_stamped(|stamps| {
                    let tombstone =
                        Tombstone::conversation(id, stamps.above(newest)?, stamps.now());
                    let batch = rewrite_batch(
                        EntityKind::Conversation,
                        id.into(),
                        None,
                        read,
                        WriteOp::Delete(tombstone),
                    );
                    Ok((batch, ()))
                })
                .await;
            if changed_since_read(written)?.is_some() {
                return Ok(());
            }
        }
        Err(record_contended())
    }

    /// Adds a message to a conversation; [`VaultError::NotFound`] if the
    /// conversation does not exist.
    pub async fn add_message(
        &self,
        conversation: ConversationId,
        new: NewMessage,
    ) -> Result<Message> {
        let mut added = self.add_messages(conversation, vec![new]).await?;
        added
            .pop()
            .ok_or(VaultError::Internal("a one-message batch added no message"))
    }

    /// Adds many messages to a conversation in one atomic write (bulk
    /// import: one transaction, one sync to disk).
    pub async fn add_messages(
        &self,
        conversation: ConversationId,
        new: Vec<NewMessage>,
    ) -> Result<Vec<Message>> {
        // Ids and bodies are fixed before taking the clock; each body is
        // sealed under its version, so a re-stamped attempt seals again.
        let mut given = BTreeSet::new();
        let mut encoded = Vec::with_capacity(new.len());
        for n in new {
            let id = match n.id {
                Some(id) if !given.insert(id) => return Err(id_taken(id)),
                Some(id) => id,
                None => MessageId::new(),
            };
            let body = MessageBody::new(n.role, n.content, n.metadata);
            encoded.push((id, n.created_at, body));
        }
        if !given.is_empty() {
            self.refuse_deleted(&given).await?;
        }
        // Ids new to the vault, as they almost always are: one write. A
        // caller's id the vault already holds fails it whole (nothing is
        // written), and then the add is sorted out as a repeat.
        match self.insert_messages(conversation, &encoded).await {
            Ok(records) => Ok(records
                .iter()
                .zip(encoded)
                .map(|(record, (_, _, body))| to_message(record, body))
                .collect()),
            Err(VaultError::Store(StoreError::InvalidRequest(_))) if !given.is_empty() => {
                self.repeat_messages(conversation, encoded, &given).await
            }
            Err(e) => Err(e),
        }
    }

    /// Writes messages new to the store, each with its outbox entry, in one
    /// batch that requires their conversation; the stored records.
    async fn insert_messages(
        &self,
        conversation: ConversationId,
        encoded: &[(MessageId, Option<Timestamp>, MessageBody)],
    ) -> Result<Vec<MessageRecord>> {
        let (records, _) = self
            .commit_stamped(|stamps| {
                let now = stamps.now();
                let mut batch = WriteBatch::new();
                batch.ops.reserve(encoded.len() * 2 + 1);
                // Checked inside the write: no separate read, and no window
                // in which the conversation could be deleted first.
                batch.push(WriteOp::RequireConversation(conversation));
                let mut records = Vec::with_capacity(encoded.len());
                for (id, created_at, body) in encoded {
                    let created_at = created_at.unwrap_or(now);
                    let version = stamps.next()?;
                    let record = MessageRecord {
                        id: *id,
                        conversation_id: conversation,
                        created_at,
                        updated_at: created_at.max(now),
                        version,
                        body: self.seal(
                            EntityKind::Message,
                            (*id).into(),
                            Some(conversation),
                            version,
                            body,
                        )?,
                    };
                    records.push(record.clone());
                    // The record, then its change: the store writes the
                    // two in one row write (and queues nothing for a
                    // record it does not hold).
                    batch.push(WriteOp::InsertMessage(record));
                    batch.push(WriteOp::Enqueue(outbox_item(
                        EntityKind::Message,
                        (*id).into(),
                        Some(conversation),
                    )));
                }
                Ok((batch, records))
            })
            .await?;
        Ok(records)
    }

    /// An add naming ids the vault already holds: each of those must be
    /// the message it describes, in this conversation, and is answered as
    /// stored; the others are written. In the add's order.
    async fn repeat_messages(
        &self,
        conversation: ConversationId,
        encoded: Vec<(MessageId, Option<Timestamp>, MessageBody)>,
        given: &BTreeSet<MessageId>,
    ) -> Result<Vec<Message>> {
        let mut answers: Vec<Option<Message>> = Vec::with_capacity(encoded.len());
        let mut fresh = Vec::new();
        for (id, created_at, body) in encoded {
            let stored = match given.contains(&id) {
                true => self.created_message(conversation, id, &body).await?,
                false => None,
            };
            if stored.is_none() {
                fresh.push((id, created_at, body));
            }
            answers.push(stored);
        }
        let records = match fresh.is_empty() {
            true => Vec::new(),
            false => self.insert_messages(conversation, &fresh).await?,
        };
        let mut added = records
            .iter()
            .zip(fresh)
            .map(|(record, (_, _, body))| to_message(record, body));
        answers
            .into_iter()
            .map(|answer| answer.or_else(|| added.next()))
            .collect::<Option<Vec<_>>>()
            .ok_or(VaultError::Internal(
                "an add answered fewer messages than it wrote",
            ))
    }

    /// The stored message `id` if it is the one `body` describes in
    /// `conversation` (an earlier add of it); `None` if the store holds no
    /// message `id`; [`VaultError::IdTaken`] if it holds another.
    async fn created_message(
        &self,
        conversation: ConversationId,
        id: MessageId,
        body: &MessageBody,
    ) -> Result<Option<Message>> {
        let Some(record) = self.store.message(id).await? else {
            return Ok(None);
        };
        if record.conversation_id != conversation {
            return Err(id_taken(id));
        }
        let stored = self.decode_message(record)?;
        let same = stored.role == body.role
            && stored.content == body.content
            && stored.metadata == body.metadata;
        if same {
            Ok(Some(stored))
        } else {
            Err(id_taken(id))
        }
    }

    /// [`VaultError::IdTaken`] if one of the caller's `ids` names a
    /// deleted message: one walk over the message tombstones between the
    /// smallest and the largest id (an add's time-ordered ids lie close
    /// together, so it usually finds none there).
    async fn refuse_deleted(&self, ids: &BTreeSet<MessageId>) -> Result<()> {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(());
        };
        let start = u128::from_be_bytes(*first.as_bytes());
        let mut after = start.checked_sub(1).map(|before| {
            let id = MessageId::from_bytes(before.to_be_bytes());
            (EntityKind::Message, RecordId::from(id))
        });
        loop {
            let query = TombstoneQuery { after, limit: PAGE };
            let page = self.store.tombstones(&query).await?;
            for t in &page {
                if t.kind != EntityKind::Message {
                    continue;
                }
                let id = MessageId::from_bytes(*t.id.as_bytes());
                if id > *last {
                    return Ok(());
                }
                if ids.contains(&id) {
                    return Err(id_taken(id));
                }
            }
            match page.last() {
                Some(t) if page.len() == PAGE => after = Some((t.kind, t.id)),
                _ => return Ok(()),
            }
        }
    }

    /// What an earlier create with the caller's id `id` made, if it is the
    /// conversation `body` describes (a repeated create); `None` if the id
    /// is new to the vault; [`VaultError::IdTaken`] if it names another
    /// conversation or a deleted one.
    async fn created_conversation(
        &self,
        id: ConversationId,
        body: &ConversationBody,
    ) -> Result<Option<Conversation>> {
        let taken = || VaultError::IdTaken {
            kind: EntityKind::Conversation,
            id: id.into(),
        };
        match self.store.conversation(id).await? {
            Some(row) => {
                let stored = self.decode_conversation(row)?;
                if stored.title == body.title && stored.metadata == body.metadata {
                    Ok(Some(stored))
                } else {
                    Err(taken())
                }
            }
            None if self
                .store
                .tombstone(EntityKind::Conversation, id.into())
                .await?
                .is_some() =>
            {
                Err(taken())
            }
            None => Ok(None),
        }
    }

    /// The message with this id; [`VaultError::NotFound`] if there is none
    /// (or it was deleted).
    pub async fn message(&self, id: MessageId) -> Result<Message> {
        let record = self.existing_message(id).await?;
        self.decode_message(record)
    }

    /// The latest messages of a conversation, newest first; pass the
    /// returned cursor back to page further into the past. A stored
    /// message that cannot be read (damaged) is left out and named in
    /// [`Page::damaged`]; the page goes on past it.
    pub async fn messages(
        &self,
        conversation: ConversationId,
        list: ListMessages,
    ) -> Result<Page<Message, MessageCursor>> {
        Ok(self.message_page(conversation, list).await?.0)
    }

    /// [`messages`](Self::messages), with the error of each damaged record.
    async fn message_page(
        &self,
        conversation: ConversationId,
        list: ListMessages,
    ) -> Result<(Page<Message, MessageCursor>, Vec<VaultError>)> {
        let limit = list.limit.max(1);
        let records = self
            .store
            .conversation_messages(&MessageQuery {
                conversation_id: conversation,
                before: list.before,
                limit: limit.saturating_add(1),
            })
            .await?
            .ok_or_else(|| not_found(EntityKind::Conversation, conversation.into()))?;
        Ok(page_of(
            records,
            limit,
            |r| self.decode_message(r),
            |r| MessageCursor {
                created_at: r.created_at,
                id: r.id,
            },
            |r| r.id.into(),
        ))
    }

    /// Changes a message's content and/or metadata. The edit applies to
    /// the version stored when it is written: a version pulled meanwhile is
    /// edited, never overwritten.
    pub async fn update_message(&self, id: MessageId, update: MessageUpdate) -> Result<Message> {
        for _ in 0..MAX_ATTEMPTS {
            let old = self.existing_message(id).await?;
            let mut body: MessageBody = self.codec.decode(
                EntityKind::Message,
                id.into(),
                Some(old.conversation_id),
                old.version,
                &old.body,
            )?;
            if let Some(content) = &update.content {
                body.content = content.clone();
            }
            if let Some(metadata) = &update.metadata {
                body.metadata = metadata.clone();
            }
            let read = old.version;
            let written = self
                .commit_stamped(|stamps| {
                    let version = stamps.above(read)?;
                    let record = MessageRecord {
                        updated_at: stamps.now(),
                        version,
                        body: self.seal(
                            EntityKind::Message,
                            id.into(),
                            Some(old.conversation_id),
                            version,
                            &body,
                        )?,
                        ..old.clone()
                    };
                    let batch = rewrite_batch(
                        EntityKind::Message,
                        id.into(),
                        Some(record.conversation_id),
                        read,
                        WriteOp::PutMessage(record.clone()),
                    );
                    Ok((batch, record))
                })
                .await;
            if let Some((record, _)) = changed_since_read(written)? {
                return Ok(to_message(&record, body));
            }
        }
        Err(record_contended())
    }

    /// Deletes one message, leaving a tombstone that syncs the deletion
    /// (stamped above the version stored when it is written).
    pub async fn delete_message(&self, id: MessageId) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            let old = self.existing_message(id).await?;
            let written = self
                .commit_stamped(|stamps| {
                    let tombstone = Tombstone::message(
                        id,
                        old.conversation_id,
                        stamps.above(old.version)?,
                        stamps.now(),
                    );
                    let batch = rewrite_batch(
                        EntityKind::Message,
                        id.into(),
                        Some(old.conversation_id),
                        old.version,
                        WriteOp::Delete(tombstone),
                    );
                    Ok((batch, ()))
                })
                .await;
            if changed_since_read(written)?.is_some() {
                return Ok(());
            }
        }
        Err(record_contended())
    }

    /// What the vault holds: records, tombstones, pending changes and bytes,
    /// in all and per conversation.
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

    /// Every stored record that cannot be read (damaged, or tampered
    /// with): a whole-vault check that decodes each record once, a page at
    /// a time. Listings skip such records ([`Page::damaged`]); this finds
    /// them all, for a report like `chatvault stats`.
    pub async fn damaged_records(&self) -> Result<DamagedRecords> {
        let mut found = DamagedRecords::default();
        let mut conversations = Vec::new();
        let mut pages = std::pin::pin!(self.conversation_row_pages());
        while let Some(rows) = pages.try_next().await? {
            for row in rows {
                let id = row.record.id;
                conversations.push(id);
                if self.decode_conversation(row).is_err() {
                    found.conversations.push(id);
                }
            }
        }
        for conversation in conversations {
            let mut pages = std::pin::pin!(self.message_record_pages(conversation));
            while let Some(records) = pages.try_next().await? {
                for record in records {
                    let id = record.id;
                    if self.decode_message(record).is_err() {
                        found.messages.push(id);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Removes every conversation, message, tombstone and pending change
    /// from this device only (nothing is synced; keys and settings stay).
    pub async fn clear_local(&self) -> Result<()> {
        Ok(self.store.clear().await?)
    }

    /// Every conversation matching `list` (its `after` and filters; `limit`
    /// is the page size fetched at a time), most recent activity first, as
    /// a stream that fetches one page at a time. A damaged conversation
    /// comes as an `Err(`[`VaultError::CorruptRecord`]`)` item and the
    /// stream goes on after it (`try_collect` stops there; skip those
    /// errors to read the rest).
    pub fn conversations_stream(
        &self,
        list: ListConversations,
    ) -> impl Stream<Item = Result<Conversation>> + '_ {
        let first = Some(list);
        stream::try_unfold(first, move |next| async move {
            let Some(list) = next else {
                return Ok::<_, VaultError>(None);
            };
            let (page, damaged) = self.conversation_page(list.clone()).await?;
            let next = page.next_cursor.map(|after| ListConversations {
                after: Some(after),
                ..list
            });
            Ok(Some((
                stream::iter(with_damaged(page.items, damaged)),
                next,
            )))
        })
        .try_flatten()
    }

    /// Every message of a conversation from `list.before` on (newest first),
    /// as a stream that fetches `list.limit` at a time. A damaged message
    /// comes as an `Err(`[`VaultError::CorruptRecord`]`)` item and the
    /// stream goes on after it.
    pub fn messages_stream(
        &self,
        conversation: ConversationId,
        list: ListMessages,
    ) -> impl Stream<Item = Result<Message>> + '_ {
        stream::try_unfold(Some(list), move |next| async move {
            let Some(list) = next else {
                return Ok::<_, VaultError>(None);
            };
            let (page, damaged) = self.message_page(conversation, list).await?;
            let next = page.next_cursor.map(|before| ListMessages {
                before: Some(before),
                ..list
            });
            Ok(Some((
                stream::iter(with_damaged(page.items, damaged)),
                next,
            )))
        })
        .try_flatten()
    }

    /// Every stored conversation row (undecoded), most recent activity
    /// first, [`PAGE`] rows per item: for whole-vault walks that need the
    /// stored form (export, retention, resync).
    pub(super) fn conversation_row_pages(
        &self,
    ) -> impl Stream<Item = Result<Vec<ConversationRow>>> + '_ {
        stream::try_unfold(
            Some(None),
            move |next: Option<Option<ConversationCursor>>| async move {
                let Some(after) = next else {
                    return Ok::<_, VaultError>(None);
                };
                let rows = self
                    .store
                    .conversations(&ConversationQuery {
                        after,
                        limit: PAGE,
                        ..ConversationQuery::default()
                    })
                    .await?;
                let next = match rows.last() {
                    Some(last) if rows.len() == PAGE => Some(Some(ConversationCursor {
                        updated_at: last.activity_at,
                        id: last.record.id,
                    })),
                    _ => None,
                };
                Ok((!rows.is_empty()).then_some((rows, next)))
            },
        )
    }

    /// Every stored message of a conversation (undecoded), newest first,
    /// [`PAGE`] records per item.
    pub(super) fn message_record_pages(
        &self,
        conversation: ConversationId,
    ) -> impl Stream<Item = Result<Vec<MessageRecord>>> + '_ {
        stream::try_unfold(
            Some(None),
            move |next: Option<Option<MessageCursor>>| async move {
                let Some(before) = next else {
                    return Ok::<_, VaultError>(None);
                };
                let records = self
                    .store
                    .messages(&MessageQuery {
                        conversation_id: conversation,
                        before,
                        limit: PAGE,
                    })
                    .await?;
                let next = match records.last() {
                    Some(last) if records.len() == PAGE => Some(Some(MessageCursor {
                        created_at: last.created_at,
                        id: last.id,
                    })),
                    _ => None,
                };
                Ok((!records.is_empty()).then_some((records, next)))
            },
        )
    }

    /// The stored conversation, or [`VaultError::NotFound`].
    pub(super) async fn existing_conversation(
        &self,
        id: ConversationId,
    ) -> Result<ConversationRow> {
        self.store
            .conversation(id)
            .await?
            .ok_or_else(|| not_found(EntityKind::Conversation, id.into()))
    }

    /// The stored message, or [`VaultError::NotFound`].
    pub(super) async fn existing_message(&self, id: MessageId) -> Result<MessageRecord> {
        self.store
            .message(id)
            .await?
            .ok_or_else(|| not_found(EntityKind::Message, id.into()))
    }

    /// The stored body of a local write (see `Codec::encode`), refused
    /// with [`VaultError::RecordTooLarge`] if it is over the vault's limit:
    /// a record that could never sync is not written at all.
    fn seal<T: Payload>(
        &self,
        kind: EntityKind,
        id: RecordId,
        conversation: Option<ConversationId>,
        version: chatvault_core::Hlc,
        value: &T,
    ) -> Result<Body> {
        let body = self.codec.encode(kind, id, conversation, version, value)?;
        if body.0.len() > self.max_record_bytes {
            return Err(VaultError::RecordTooLarge {
                kind,
                id,
                bytes: body.0.len(),
                limit: self.max_record_bytes,
            });
        }
        Ok(body)
    }

    pub(super) fn decode_conversation(&self, row: ConversationRow) -> Result<Conversation> {
        let body: ConversationBody = self.codec.decode(
            EntityKind::Conversation,
            row.record.id.into(),
            None,
            row.record.version,
            &row.record.body,
        )?;
        Ok(to_conversation(row.record, row.activity_at, body))
    }

    pub(super) fn decode_message(&self, record: MessageRecord) -> Result<Message> {
        let body: MessageBody = self.codec.decode(
            EntityKind::Message,
            record.id.into(),
            Some(record.conversation_id),
            record.version,
            &record.body,
        )?;
        Ok(to_message(&record, body))
    }
}

/// A caller's message id already used for something else.
fn id_taken(id: MessageId) -> VaultError {
    VaultError::IdTaken {
        kind: EntityKind::Message,
        id: id.into(),
    }
}

/// The outbox entry that queues a local change of one record for sync.
pub(super) fn outbox_item(
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

/// A replacing write's result: `None` if the record changed between the
/// read and the write (read it again and retry), otherwise what it wrote
/// or its error.
pub(super) fn changed_since_read<T>(written: Result<T>) -> Result<Option<T>> {
    match written {
        Err(VaultError::Store(StoreError::VersionChanged { kind, id })) => {
            tracing::debug!(%kind, %id, "changed since read (a pull landed); editing it again");
            Ok(None)
        }
        other => other.map(Some),
    }
}

pub(super) fn record_contended() -> VaultError {
    VaultError::Contended {
        what: "record",
        attempts: MAX_ATTEMPTS,
    }
}

pub(super) fn not_found(kind: EntityKind, id: RecordId) -> VaultError {
    VaultError::NotFound { kind, id }
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

/// A page of at most `limit` decoded items from `rows`, which the store
/// was asked for `limit + 1` of: one more row than the page means there is
/// a next page, which starts after the cursor of the page's last item.
/// One page from `rows` (fetched with `limit + 1`, so one more row means
/// there is a next page): each of the first `limit` rows decoded, a row
/// that does not decode left out and named in [`Page::damaged`] (its error
/// returned alongside), and the cursor taken from the last row — not the
/// last readable item, so a page whose last rows are damaged still leads
/// on to the next.
fn page_of<R, T, C>(
    rows: Vec<R>,
    limit: usize,
    decode: impl Fn(R) -> Result<T>,
    cursor: impl Fn(&R) -> C,
    id: impl Fn(&R) -> RecordId,
) -> (Page<T, C>, Vec<VaultError>) {
    let more = rows.len() > limit;
    let mut next_cursor = None;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let (mut damaged, mut errors) = (Vec::new(), Vec::new());
    for row in rows.into_iter().take(limit) {
        next_cursor = more.then(|| cursor(&row));
        let row_id = id(&row);
        match decode(row) {
            Ok(item) => items.push(item),
            Err(e) => {
                tracing::warn!(id = %row_id, error = %e, "skipping a record that cannot be read");
                damaged.push(row_id);
                errors.push(e);
            }
        }
    }
    let page = Page {
        items,
        next_cursor,
        damaged,
    };
    (page, errors)
}

/// A page's items and its damaged records' errors as stream items.
fn with_damaged<T>(items: Vec<T>, damaged: Vec<VaultError>) -> impl Iterator<Item = Result<T>> {
    items
        .into_iter()
        .map(Ok)
        .chain(damaged.into_iter().map(Err))
}

/// The batch of a local rewrite of one record: `op` (its new state or its
/// tombstone) on condition that the store still holds the record at the
/// version `read` (otherwise the write fails and the caller starts over
/// from the newer version), and the record queued for sync.
fn rewrite_batch(
    kind: EntityKind,
    id: RecordId,
    conversation: Option<ConversationId>,
    read: chatvault_core::Hlc,
    op: WriteOp,
) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::RequireVersion(kind, id, read));
    batch.push(op);
    batch.push(WriteOp::Enqueue(outbox_item(kind, id, conversation)));
    batch
}
