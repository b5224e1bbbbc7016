//! What a vault shows through its public API, as one comparable value: the
//! evidence of the reliability tests (`tests/crash.rs`, `tests/faults.rs`),
//! which compare a vault reopened after a kill or an injected fault with a
//! model of what it must hold.
//!
//! [`Snapshot::of`] reads everything an app and a sync client can see
//! (every conversation and message, every pending outbox entry, damaged
//! records); [`Snapshot::contents`] drops ids and version stamps so two
//! vaults that ran the same steps (a SQLite one and the in-memory
//! reference) compare equal; [`Snapshot::outbox_problems`] states the
//! outbox invariant of a vault that never synced.

use crate::{
    Conversation, ConversationId, ListConversations, ListMessages, Message, MessageId, OutboxEntry,
    Result, Vault,
};
use chatvault_core::{ChangeOp, EntityKind, Hlc, RecordId};
use futures::TryStreamExt;
use std::collections::{BTreeMap, BTreeSet};

/// Everything a vault shows, by id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Every live conversation.
    pub conversations: BTreeMap<ConversationId, Conversation>,
    /// Every live message.
    pub messages: BTreeMap<MessageId, Message>,
    /// Every pending (unacknowledged, unparked) outbox entry, oldest first.
    pub outbox: Vec<OutboxEntry>,
    /// Records stored but unreadable (a torn or damaged write would show
    /// here).
    pub damaged: usize,
}

/// A snapshot without ids and version stamps: what two vaults that ran the
/// same steps must agree on, whatever ids and device stamps each drew.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contents {
    /// Each conversation's title with its messages' `role: content`,
    /// sorted.
    pub records: BTreeSet<(String, Vec<String>)>,
    /// The labels (title or content) of records with a pending upsert.
    pub pending_upserts: BTreeSet<String>,
    /// Pending deletions by record kind.
    pub pending_deletes: BTreeMap<String, usize>,
}

impl Snapshot {
    /// Reads the whole vault (every page).
    pub async fn of(vault: &Vault) -> Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        let list = ListConversations {
            limit: 50,
            ..ListConversations::default()
        };
        let conversations: Vec<Conversation> =
            vault.conversations_stream(list).try_collect().await?;
        for c in conversations {
            let list = ListMessages {
                limit: 50,
                ..ListMessages::default()
            };
            let messages: Vec<Message> = vault.messages_stream(c.id, list).try_collect().await?;
            snapshot
                .messages
                .extend(messages.into_iter().map(|m| (m.id, m)));
            snapshot.conversations.insert(c.id, c);
        }
        snapshot.outbox = vault.replica().pending_changes(1_000_000).await?;
        snapshot.damaged = vault.damaged_records().await?.count();
        Ok(snapshot)
    }

    /// The stamp of the live record `id`, if there is one.
    fn live_version(&self, kind: EntityKind, id: RecordId) -> Option<Hlc> {
        let uuid = *id.as_uuid();
        match kind {
            EntityKind::Conversation => self
                .conversations
                .get(&ConversationId::from_uuid(uuid))
                .map(|c| c.version),
            EntityKind::Message => self
                .messages
                .get(&MessageId::from_uuid(uuid))
                .map(|m| m.version),
        }
    }

    /// The version stamps of every live record.
    pub fn versions(&self) -> impl Iterator<Item = Hlc> + '_ {
        let c = self.conversations.values().map(|c| c.version);
        let m = self.messages.values().map(|m| m.version);
        c.chain(m)
    }

    /// The outbox invariant, as a list of violations (empty when it
    /// holds): a record has at most one pending change; every pending
    /// upsert names a live record at its current version (no change queued
    /// for data that is not there, none stale); every pending deletion
    /// names a record that is gone; no two live records share a version
    /// stamp (stamps are unique per device); nothing is damaged.
    pub fn outbox_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut entries = BTreeSet::new();
        for entry in &self.outbox {
            let change = &entry.change;
            if !entries.insert((change.kind, change.entity_id)) {
                problems.push(format!(
                    "{} {} has two pending changes",
                    change.kind, change.entity_id
                ));
            }
            let live = self.live_version(change.kind, change.entity_id);
            match &change.op {
                ChangeOp::Upsert(_) => {
                    if live != Some(change.version) {
                        problems.push(format!(
                            "pending upsert of {} {} at {} but the vault shows {:?}",
                            change.kind, change.entity_id, change.version, live
                        ));
                    }
                }
                ChangeOp::Delete(_) => {
                    if live.is_some() {
                        problems.push(format!(
                            "pending deletion of {} {} which is still live",
                            change.kind, change.entity_id
                        ));
                    }
                }
            }
        }
        let records = self
            .conversations
            .values()
            .map(|c| (EntityKind::Conversation, RecordId::from(c.id), c.version))
            .chain(
                self.messages
                    .values()
                    .map(|m| (EntityKind::Message, RecordId::from(m.id), m.version)),
            );
        let mut stamps = BTreeSet::new();
        for (kind, id, version) in records {
            if !stamps.insert(version) {
                problems.push(format!("version {version} is used twice ({kind} {id})"));
            }
        }
        if self.damaged > 0 {
            problems.push(format!("{} damaged records", self.damaged));
        }
        problems
    }

    /// Live records without a pending change: in a vault that never
    /// synced (acknowledged nothing), each one is a lost change.
    pub fn not_pending(&self) -> Vec<RecordId> {
        let pending: BTreeSet<RecordId> = self.outbox.iter().map(|e| e.change.entity_id).collect();
        self.conversations
            .keys()
            .map(|&id| RecordId::from(id))
            .chain(self.messages.keys().map(|&id| RecordId::from(id)))
            .filter(|id| !pending.contains(id))
            .collect()
    }

    /// The ids of the records with a pending change, live or deleted.
    pub fn pending_ids(&self) -> BTreeSet<RecordId> {
        self.outbox.iter().map(|e| e.change.entity_id).collect()
    }

    /// The id- and stamp-free view (see [`Contents`]).
    pub fn contents(&self) -> Contents {
        let mut by_conversation: BTreeMap<ConversationId, Vec<String>> = BTreeMap::new();
        for m in self.messages.values() {
            by_conversation
                .entry(m.conversation_id)
                .or_default()
                .push(format!("{}: {}", m.role, m.content));
        }
        let records = self
            .conversations
            .values()
            .map(|c| {
                let mut messages = by_conversation.remove(&c.id).unwrap_or_default();
                messages.sort();
                (c.title.clone(), messages)
            })
            .collect();
        let mut pending_upserts = BTreeSet::new();
        let mut pending_deletes = BTreeMap::new();
        for entry in &self.outbox {
            let change = &entry.change;
            let uuid = *change.entity_id.as_uuid();
            match &change.op {
                ChangeOp::Upsert(_) => {
                    let label = match change.kind {
                        EntityKind::Conversation => self
                            .conversations
                            .get(&ConversationId::from_uuid(uuid))
                            .map(|c| c.title.clone()),
                        EntityKind::Message => self
                            .messages
                            .get(&MessageId::from_uuid(uuid))
                            .map(|m| m.content.clone()),
                    };
                    pending_upserts.insert(label.unwrap_or_else(|| "<not live>".into()));
                }
                ChangeOp::Delete(_) => {
                    *pending_deletes.entry(change.kind.to_string()).or_insert(0) += 1;
                }
            }
        }
        Contents {
            records,
            pending_upserts,
            pending_deletes,
        }
    }
}
