//! Queries and batch application. Each function takes the connection and
//! runs synchronously; the caller puts it on the blocking pool.

use crate::convert::{conversation_id, hlc, message_id, record_id, sql_err, ts};
use chatvault_core::{
    Body, Change, ConversationId, ConversationRecord, EntityKind, Hlc, Incoming, MessageId,
    MessageRecord, OpId, RecordId, Tombstone, UserId,
};
use chatvault_store::{
    check_limit, import_wins, incoming_key, incoming_outbox_item, incoming_parent, incoming_wins,
    merged_op, parse_clock_mark, version_matches, BatchSource, ConversationQuery, ConversationRow,
    ConversationUsage, DeletionMark, LocalVersion, MessageQuery, MetaEntry, OutboxEntry,
    OutboxItem, ParkReason, ParkedEntry, Result, StoreError, StoredOutboxEntry, TombstoneQuery,
    Usage, WriteBatch, WriteOp, WriteOutcome, CLOCK_MARK_KEY,
};
use rusqlite::{named_params, params, Connection, OptionalExtension, Row, ToSql, Transaction};
use std::collections::{HashMap, HashSet};

const CONVERSATION_COLUMNS: &str =
    "id, user_id, created_at, updated_at, version, body, activity_at";
const MESSAGE_COLUMNS: &str = "id, conversation_id, created_at, updated_at, version, body";

fn read_conversation(row: &Row<'_>) -> rusqlite::Result<Result<ConversationRow>> {
    let id: Vec<u8> = row.get(0)?;
    let user: String = row.get(1)?;
    let created: i64 = row.get(2)?;
    let updated: i64 = row.get(3)?;
    let version: String = row.get(4)?;
    let body: Vec<u8> = row.get(5)?;
    let activity: i64 = row.get(6)?;
    Ok((|| {
        Ok(ConversationRow {
            record: ConversationRecord {
                id: conversation_id(id)?,
                user_id: user
                    .parse::<UserId>()
                    .map_err(|e| StoreError::Decode(e.to_string()))?,
                created_at: ts(created),
                updated_at: ts(updated),
                version: hlc(version)?,
                body: Body(body),
            },
            activity_at: ts(activity),
        })
    })())
}

fn read_message(row: &Row<'_>) -> rusqlite::Result<Result<MessageRecord>> {
    let id: Vec<u8> = row.get(0)?;
    let conv: Vec<u8> = row.get(1)?;
    let created: i64 = row.get(2)?;
    let updated: i64 = row.get(3)?;
    let version: String = row.get(4)?;
    let body: Vec<u8> = row.get(5)?;
    Ok((|| {
        Ok(MessageRecord {
            id: message_id(id)?,
            conversation_id: conversation_id(conv)?,
            created_at: ts(created),
            updated_at: ts(updated),
            version: hlc(version)?,
            body: Body(body),
        })
    })())
}

fn read_tombstone(row: &Row<'_>) -> rusqlite::Result<Result<Tombstone>> {
    let kind: String = row.get(0)?;
    let id: Vec<u8> = row.get(1)?;
    let conv: Option<Vec<u8>> = row.get(2)?;
    let version: String = row.get(3)?;
    let deleted: i64 = row.get(4)?;
    Ok((|| {
        Ok(Tombstone {
            kind: kind
                .parse()
                .map_err(|e: chatvault_core::CoreError| StoreError::Decode(e.to_string()))?,
            id: record_id(id)?,
            conversation_id: conv.map(conversation_id).transpose()?,
            version: hlc(version)?,
            deleted_at: ts(deleted),
        })
    })())
}

/// Collects decoded rows, surfacing SQL errors and decode errors alike.
fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<Result<T>>>) -> Result<Vec<T>> {
    rows.map(|r| r.map_err(sql_err)?).collect()
}

/// A page of the conversation's messages, or `None` if it does not exist;
/// one read transaction, so no write lands between the two.
pub(crate) fn conversation_messages(
    c: &mut Connection,
    query: &MessageQuery,
) -> Result<Option<Vec<MessageRecord>>> {
    let tx = c.transaction().map_err(sql_err)?;
    let exists = tx
        .prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")
        .map_err(sql_err)?
        .exists([&query.conversation_id.as_bytes()[..]])
        .map_err(sql_err)?;
    let page = if exists {
        Some(messages(&tx, query)?)
    } else {
        None
    };
    tx.commit().map_err(sql_err)?;
    Ok(page)
}

pub(crate) fn conversation(
    c: &mut Connection,
    id: ConversationId,
) -> Result<Option<ConversationRow>> {
    let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1");
    c.prepare_cached(&sql)
        .map_err(sql_err)?
        .query_row([&id.as_bytes()[..]], read_conversation)
        .optional()
        .map_err(sql_err)?
        .transpose()
}

pub(crate) fn conversations(
    c: &mut Connection,
    q: &ConversationQuery,
) -> Result<Vec<ConversationRow>> {
    check_limit(q.limit)?;
    let mut sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE 1");
    let mut args: Vec<(&str, Box<dyn ToSql>)> = Vec::new();
    if let Some(from) = q.active_from {
        sql.push_str(" AND activity_at >= :from");
        args.push((":from", Box::new(from.as_millis())));
    }
    if let Some(to) = q.active_to {
        sql.push_str(" AND activity_at <= :to");
        args.push((":to", Box::new(to.as_millis())));
    }
    if let Some(after) = q.after {
        sql.push_str(" AND (activity_at, id) < (:at, :id)");
        args.push((":at", Box::new(after.updated_at.as_millis())));
        args.push((":id", Box::new(after.id.as_bytes().to_vec())));
    }
    sql.push_str(" ORDER BY activity_at DESC, id DESC LIMIT :limit");
    args.push((":limit", Box::new(q.limit as i64)));
    let params: Vec<(&str, &dyn ToSql)> = args.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    let mut stmt = c.prepare_cached(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(params.as_slice(), read_conversation)
        .map_err(sql_err)?;
    collect(rows)
}

pub(crate) fn message(c: &mut Connection, id: MessageId) -> Result<Option<MessageRecord>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
    c.prepare_cached(&sql)
        .map_err(sql_err)?
        .query_row([&id.as_bytes()[..]], read_message)
        .optional()
        .map_err(sql_err)?
        .transpose()
}

pub(crate) fn messages(c: &Connection, q: &MessageQuery) -> Result<Vec<MessageRecord>> {
    check_limit(q.limit)?;
    let conv = q.conversation_id.as_bytes().to_vec();
    let limit = q.limit as i64;
    match q.before {
        None => {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 \
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(params![conv, limit], read_message)
                .map_err(sql_err)?;
            collect(rows)
        }
        Some(before) => {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 \
                 AND (created_at, id) < (?2, ?3) ORDER BY created_at DESC, id DESC LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(
                    params![
                        conv,
                        before.created_at.as_millis(),
                        &before.id.as_bytes()[..],
                        limit
                    ],
                    read_message,
                )
                .map_err(sql_err)?;
            collect(rows)
        }
    }
}

pub(crate) fn tombstone(
    c: &mut Connection,
    kind: EntityKind,
    id: RecordId,
) -> Result<Option<Tombstone>> {
    tombstone_in(c, kind, id)
}

fn tombstone_in(c: &Connection, kind: EntityKind, id: RecordId) -> Result<Option<Tombstone>> {
    c.prepare_cached(
        "SELECT kind, id, conversation_id, version, deleted_at FROM tombstones \
         WHERE kind = ?1 AND id = ?2",
    )
    .map_err(sql_err)?
    .query_row(params![kind.as_str(), &id.as_bytes()[..]], read_tombstone)
    .optional()
    .map_err(sql_err)?
    .transpose()
}

pub(crate) fn deletion_mark(c: &mut Connection, id: ConversationId) -> Result<Option<Hlc>> {
    deletion_mark_in(c, id)
}

/// The later of the kept mark and the conversation's tombstone (a local
/// tombstone re-stamped lower after a `clock_skew` refusal counts at its
/// new stamp).
fn deletion_mark_in(c: &Connection, id: ConversationId) -> Result<Option<Hlc>> {
    let version: Option<String> = c
        .prepare_cached(
            "SELECT max(version) FROM ( \
                 SELECT version FROM deletion_marks WHERE conversation_id = ?1 \
                 UNION ALL SELECT version FROM tombstones \
                 WHERE kind = 'conversation' AND id = ?1)",
        )
        .map_err(sql_err)?
        .query_row([&id.as_bytes()[..]], |r| r.get(0))
        .map_err(sql_err)?;
    version.map(hlc).transpose()
}

/// Raises a conversation's kept deletion mark to at least `through` (text
/// order is clock order).
fn raise_mark(tx: &Connection, conversation: ConversationId, through: Hlc) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO deletion_marks (conversation_id, version) VALUES (?1, ?2) \
         ON CONFLICT (conversation_id) DO UPDATE SET version = max(version, excluded.version)",
    )
    .map_err(sql_err)?
    .execute(params![&conversation.as_bytes()[..], through.to_string()])
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn tombstones(c: &mut Connection, q: &TombstoneQuery) -> Result<Vec<Tombstone>> {
    check_limit(q.limit)?;
    let limit = q.limit as i64;
    let mut stmt;
    let rows = match q.after {
        None => {
            stmt = c
                .prepare_cached(
                    "SELECT kind, id, conversation_id, version, deleted_at FROM tombstones \
                     ORDER BY kind, id LIMIT ?1",
                )
                .map_err(sql_err)?;
            stmt.query_map([limit], read_tombstone)
        }
        Some((kind, id)) => {
            stmt = c
                .prepare_cached(
                    "SELECT kind, id, conversation_id, version, deleted_at FROM tombstones \
                     WHERE (kind, id) > (?1, ?2) ORDER BY kind, id LIMIT ?3",
                )
                .map_err(sql_err)?;
            stmt.query_map(
                params![kind.as_str(), &id.as_bytes()[..], limit],
                read_tombstone,
            )
        }
    }
    .map_err(sql_err)?;
    collect(rows)
}

/// Counts and sizes. Reads one row per conversation (the totals the write
/// path keeps, schema 2), never every message.
pub(crate) fn usage(c: &mut Connection) -> Result<Usage> {
    let tx = c.transaction().map_err(sql_err)?;
    let count = |sql: &str| -> Result<u64> {
        tx.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sql_err)
    };
    let conversations = count("SELECT count(*) FROM conversations")?;
    let messages = count("SELECT coalesce(sum(messages), 0) FROM conversation_totals")?;
    let tombstones = count("SELECT count(*) FROM tombstones")?;
    let pending_changes = count("SELECT count(*) FROM outbox WHERE parked_at IS NULL")?;
    let parked_changes = count("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")?;
    let bytes = count(
        "SELECT (SELECT coalesce(sum(length(body)), 0) FROM conversations) + \
                (SELECT coalesce(sum(bytes), 0) FROM conversation_totals)",
    )?;

    let pending: HashSet<Vec<u8>> = {
        let mut stmt = tx
            .prepare(
                "SELECT DISTINCT CASE kind WHEN 'conversation' THEN entity_id \
                 ELSE conversation_id END FROM outbox",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Option<Vec<u8>>>(0))
            .map_err(sql_err)?;
        rows.filter_map(|r| r.transpose())
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_err)?
    };

    let mut per_conversation = Vec::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT c.id, c.activity_at, length(c.body), \
                        coalesce(t.messages, 0), coalesce(t.bytes, 0) \
                 FROM conversations c \
                 LEFT JOIN conversation_totals t ON t.conversation_id = c.id \
                 ORDER BY c.activity_at DESC, c.id DESC",
            )
            .map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        while let Some(row) = rows.next().map_err(sql_err)? {
            let id: Vec<u8> = row.get(0).map_err(sql_err)?;
            let pending = pending.contains(&id);
            let own: i64 = row.get(2).map_err(sql_err)?;
            let n: i64 = row.get(3).map_err(sql_err)?;
            let msg_bytes: i64 = row.get(4).map_err(sql_err)?;
            per_conversation.push(ConversationUsage {
                id: conversation_id(id)?,
                activity_at: ts(row.get(1).map_err(sql_err)?),
                messages: n as u64,
                bytes: (own + msg_bytes) as u64,
                pending,
            });
        }
    }
    Ok(Usage {
        conversations,
        messages,
        tombstones,
        pending_changes,
        parked_changes,
        bytes,
        per_conversation,
    })
}

pub(crate) fn write(c: &mut Connection, batch: WriteBatch) -> Result<WriteOutcome> {
    if batch.is_empty() {
        return Ok(WriteOutcome::default());
    }
    write_all(c, Box::new(std::iter::once(Ok(batch))))
}

/// Per-conversation effects of a transaction, folded and applied once at
/// its end: a bulk import into one conversation then updates its rows
/// once, not once per message.
#[derive(Default)]
struct Deferred {
    /// Activity bumps (the latest time wins).
    activity: HashMap<ConversationId, i64>,
    /// Changes to `conversation_totals`: (messages, bytes) to add.
    totals: HashMap<ConversationId, (i64, i64)>,
    /// The last outbox sequence number given (read at the first change
    /// queued).
    seq: Option<i64>,
}

impl Deferred {
    fn raise_activity(&mut self, id: ConversationId, at: i64) {
        let latest = self.activity.entry(id).or_insert(i64::MIN);
        *latest = (*latest).max(at);
    }

    fn add_totals(&mut self, id: ConversationId, messages: i64, bytes: i64) {
        let t = self.totals.entry(id).or_insert((0, 0));
        t.0 += messages;
        t.1 += bytes;
    }

    /// The next outbox sequence number: above every entry and every
    /// number an entry ever had (the counter a trigger raises as entries
    /// go; see schema 5), so never one given before.
    fn next_seq(&mut self, tx: &Connection) -> Result<i64> {
        let last = match self.seq {
            Some(last) => last,
            None => tx
                .prepare_cached(
                    "SELECT max(last, coalesce((SELECT max(seq) FROM outbox), 0)) \
                     FROM outbox_counter WHERE id = 1",
                )
                .map_err(sql_err)?
                .query_row([], |r| r.get(0))
                .map_err(sql_err)?,
        };
        self.seq = Some(last + 1);
        Ok(last + 1)
    }

    fn flush(self, tx: &Transaction<'_>) -> Result<()> {
        let mut bump = tx
            .prepare_cached(
                "UPDATE conversations SET activity_at = max(activity_at, ?2) WHERE id = ?1",
            )
            .map_err(sql_err)?;
        for (id, at) in self.activity {
            bump.execute(params![&id.as_bytes()[..], at])
                .map_err(sql_err)?;
        }
        let mut add = tx
            .prepare_cached(
                "INSERT INTO conversation_totals (conversation_id, messages, bytes) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (conversation_id) DO UPDATE SET \
                 messages = messages + excluded.messages, bytes = bytes + excluded.bytes",
            )
            .map_err(sql_err)?;
        for (id, (messages, bytes)) in self.totals {
            if (messages, bytes) != (0, 0) {
                add.execute(params![&id.as_bytes()[..], messages, bytes])
                    .map_err(sql_err)?;
            }
        }
        Ok(())
    }
}

/// Applies every batch from `source` in one transaction.
pub(crate) fn write_all(c: &mut Connection, source: BatchSource) -> Result<WriteOutcome> {
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let mut deferred = Deferred::default();
    let mut outcome = WriteOutcome::default();
    for batch in source {
        let mut ops = batch?.ops.into_iter().peekable();
        while let Some(op) = ops.next() {
            // A record write followed by the queueing of that record's
            // change (what every local write is) writes the row once, with
            // its outbox pointer, instead of writing it and then pointing it.
            let record = written_record(&op);
            let queued = ops
                .next_if(
                    |next| matches!(next, WriteOp::Enqueue(item) if Some(item.entity_id) == record),
                )
                .and_then(|next| match next {
                    WriteOp::Enqueue(item) => Some(item),
                    _ => None,
                });
            apply_queued(&tx, op, queued, &mut deferred, &mut outcome)?;
        }
    }
    deferred.flush(&tx)?;
    tx.commit().map_err(sql_err)?;
    Ok(outcome)
}

/// [`incoming_wins`] or [`import_wins`].
type WinRule = fn(&Incoming, Option<&LocalVersion>, Option<chatvault_core::Hlc>) -> bool;

/// Whether `incoming` wins over what the store holds, by `rule`, and the
/// outbox pointer of what it holds (a winner drops that entry).
fn wins(tx: &Connection, incoming: &Incoming, rule: WinRule) -> Result<(bool, Option<i64>)> {
    let (kind, id) = incoming_key(incoming);
    let local = local_state(tx, kind, id)?;
    let mark = match incoming_parent(incoming) {
        Some(c) => deletion_mark_in(tx, c)?,
        None => None,
    };
    let pointer = local.as_ref().and_then(|(_, p)| *p);
    Ok((
        rule(incoming, local.as_ref().map(|(l, _)| l), mark),
        pointer,
    ))
}

/// [`WriteOp::CoverMessages`] (the caller raises the mark): drops the
/// messages of `conversation` stamped at or below `through`, their
/// tombstones and their outbox entries, and takes them off the
/// conversation's totals. Stamps compare as text (fixed-width hex: text
/// order is clock order).
fn cover_messages(
    tx: &Connection,
    conversation: ConversationId,
    through: Hlc,
    deferred: &mut Deferred,
) -> Result<()> {
    let id = &conversation.as_bytes()[..];
    let through = through.to_string();
    let (count, bytes): (i64, i64) = tx
        .prepare_cached(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM messages \
             WHERE conversation_id = ?1 AND version <= ?2",
        )
        .map_err(sql_err)?
        .query_row(params![id, through], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sql_err)?;
    deferred.add_totals(conversation, -count, -bytes);
    for sql in [
        "DELETE FROM outbox WHERE seq IN ( \
             SELECT pending_seq FROM messages WHERE conversation_id = ?1 AND version <= ?2 \
             UNION ALL SELECT pending_seq FROM tombstones WHERE kind = 'message' \
             AND conversation_id = ?1 AND version <= ?2)",
        "DELETE FROM messages WHERE conversation_id = ?1 AND version <= ?2",
        "DELETE FROM tombstones WHERE kind = 'message' AND conversation_id = ?1 \
         AND version <= ?2",
    ] {
        tx.prepare_cached(sql)
            .map_err(sql_err)?
            .execute(params![id, through])
            .map_err(sql_err)?;
    }
    Ok(())
}

/// Removes a stored message (if any) from its conversation's totals and
/// returns its outbox pointer; the caller then replaces the row.
fn uncount_message(tx: &Connection, id: &[u8], deferred: &mut Deferred) -> Result<Option<i64>> {
    let old: Option<(Vec<u8>, i64, Option<i64>)> = tx
        .prepare_cached(
            "SELECT conversation_id, length(body), pending_seq FROM messages WHERE id = ?1",
        )
        .map_err(sql_err)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(sql_err)?;
    let Some((conversation, bytes, pointer)) = old else {
        return Ok(None);
    };
    deferred.add_totals(conversation_id(conversation)?, -1, -bytes);
    Ok(pointer)
}

/// What the store holds for a record: the live version or its tombstone.
fn local_version(tx: &Connection, kind: EntityKind, id: RecordId) -> Result<Option<LocalVersion>> {
    Ok(local_state(tx, kind, id)?.map(|(local, _)| local))
}

/// [`local_version`] and the row's outbox pointer.
fn local_state(
    tx: &Connection,
    kind: EntityKind,
    id: RecordId,
) -> Result<Option<(LocalVersion, Option<i64>)>> {
    let sql = match kind {
        EntityKind::Conversation => {
            "SELECT version, body, pending_seq FROM conversations WHERE id = ?1"
        }
        EntityKind::Message => "SELECT version, body, pending_seq FROM messages WHERE id = ?1",
    };
    let live: Option<(String, Vec<u8>, Option<i64>)> = tx
        .prepare_cached(sql)
        .map_err(sql_err)?
        .query_row([&id.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(sql_err)?;
    if let Some((version, body, pointer)) = live {
        let local = LocalVersion {
            version: hlc(version)?,
            deleted: false,
            body,
        };
        return Ok(Some((local, pointer)));
    }
    let dead: Option<(String, Option<i64>)> = tx
        .prepare_cached("SELECT version, pending_seq FROM tombstones WHERE kind = ?1 AND id = ?2")
        .map_err(sql_err)?
        .query_row(params![kind.as_str(), &id.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(sql_err)?;
    dead.map(|(version, pointer)| {
        let local = LocalVersion {
            version: hlc(version)?,
            deleted: true,
            body: Vec::new(),
        };
        Ok((local, pointer))
    })
    .transpose()
}

/// Where a record's row is: live, or as its tombstone.
#[derive(Clone, Copy)]
enum Place {
    Live,
    Tombstone,
}

/// The row a record has (live or tombstone) and its outbox pointer; `None`
/// if the store holds neither.
fn pointer_of(
    tx: &Connection,
    kind: EntityKind,
    id: RecordId,
) -> Result<Option<(Place, Option<i64>)>> {
    let sql = match kind {
        EntityKind::Conversation => "SELECT pending_seq FROM conversations WHERE id = ?1",
        EntityKind::Message => "SELECT pending_seq FROM messages WHERE id = ?1",
    };
    let id = &id.as_bytes()[..];
    let live: Option<Option<i64>> = tx
        .prepare_cached(sql)
        .map_err(sql_err)?
        .query_row([id], |r| r.get(0))
        .optional()
        .map_err(sql_err)?;
    if let Some(pointer) = live {
        return Ok(Some((Place::Live, pointer)));
    }
    let dead: Option<Option<i64>> = tx
        .prepare_cached("SELECT pending_seq FROM tombstones WHERE kind = ?1 AND id = ?2")
        .map_err(sql_err)?
        .query_row(params![kind.as_str(), id], |r| r.get(0))
        .optional()
        .map_err(sql_err)?;
    Ok(dead.map(|pointer| (Place::Tombstone, pointer)))
}

/// Removes the outbox entry a pointer names (nothing if it was
/// acknowledged already: sequence numbers are never reused, so a pointer
/// left behind names nothing).
fn drop_entry(tx: &Connection, pointer: Option<i64>) -> Result<()> {
    if let Some(seq) = pointer {
        tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")
            .map_err(sql_err)?
            .execute([seq])
            .map_err(sql_err)?;
    }
    Ok(())
}

/// Queues `item` as entry `seq`, replacing the record's previous entry
/// (`old`, its pointer before this write): one pending change per record.
fn requeue(tx: &Connection, old: Option<i64>, seq: i64, item: &OutboxItem) -> Result<()> {
    drop_entry(tx, old)?;
    tx.prepare_cached(
        "INSERT INTO outbox (seq, entity_id, kind, conversation_id, op_id) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(sql_err)?
    .execute(params![
        seq,
        &item.entity_id.as_bytes()[..],
        item.kind.as_str(),
        item.conversation_id.map(|c| c.as_bytes().to_vec()),
        &item.op_id.as_bytes()[..],
    ])
    .map_err(sql_err)?;
    Ok(())
}

/// The record a write op stores or deletes: the ops that can carry the
/// outbox pointer of the change queued right after them.
fn written_record(op: &WriteOp) -> Option<RecordId> {
    match op {
        WriteOp::PutConversation(r) => Some(r.id.into()),
        WriteOp::PutMessage(m) | WriteOp::InsertMessage(m) => Some(m.id.into()),
        WriteOp::Delete(t) => Some(t.id),
        _ => None,
    }
}

/// Applies `op`, then queues `queued` (a change of the record `op` writes,
/// see [`written_record`]) — in the same row write.
fn apply_queued(
    tx: &Transaction<'_>,
    op: WriteOp,
    queued: Option<OutboxItem>,
    deferred: &mut Deferred,
    outcome: &mut WriteOutcome,
) -> Result<()> {
    let Some(item) = queued else {
        return apply(tx, op, deferred, outcome);
    };
    if written_record(&op) != Some(item.entity_id) {
        apply(tx, op, deferred, outcome)?;
        return apply(tx, WriteOp::Enqueue(item), deferred, outcome);
    }
    let seq = deferred.next_seq(tx)?;
    let old = write_record(tx, op, Some(seq), deferred)?;
    requeue(tx, old, seq, &item)
}

/// Whether [`WriteOp::ForgetUnlessPending`] may delete: the record is
/// stored at the tombstone's version and nothing of it is in the outbox
/// (pending or parked), for a conversation nothing of its messages either.
fn forgettable(tx: &Connection, t: &Tombstone) -> Result<bool> {
    let same_version =
        local_version(tx, t.kind, t.id)?.is_some_and(|l| !l.deleted && l.version == t.version);
    if !same_version {
        return Ok(false);
    }
    let id = &t.id.as_bytes()[..];
    let sql = match t.kind {
        EntityKind::Conversation => {
            "SELECT 1 FROM outbox WHERE seq IN ( \
                 SELECT pending_seq FROM conversations WHERE id = ?1 \
                 UNION ALL SELECT pending_seq FROM messages WHERE conversation_id = ?1 \
                 UNION ALL SELECT pending_seq FROM tombstones WHERE conversation_id = ?1)"
        }
        EntityKind::Message => {
            "SELECT 1 FROM outbox WHERE seq = (SELECT pending_seq FROM messages WHERE id = ?1)"
        }
    };
    let unsynced = tx
        .prepare_cached(sql)
        .map_err(sql_err)?
        .exists([id])
        .map_err(sql_err)?;
    Ok(!unsynced)
}

fn apply(
    tx: &Transaction<'_>,
    op: WriteOp,
    deferred: &mut Deferred,
    outcome: &mut WriteOutcome,
) -> Result<()> {
    match op {
        WriteOp::Merge(incoming) => {
            let (won, pointer) = wins(tx, &incoming, incoming_wins)?;
            if won {
                drop_entry(tx, pointer)?;
                apply(tx, merged_op(incoming), deferred, outcome)?;
                outcome.merged += 1;
            } else {
                outcome.superseded += 1;
            }
        }
        WriteOp::MergeAndEnqueue(incoming, op_id) => {
            if wins(tx, &incoming, import_wins)?.0 {
                let item = incoming_outbox_item(&incoming, op_id);
                apply_queued(tx, merged_op(incoming), Some(item), deferred, outcome)?;
                outcome.merged += 1;
            } else {
                outcome.superseded += 1;
            }
        }
        WriteOp::RaiseActivity(id, at) => {
            tx.prepare_cached(
                "UPDATE conversations SET activity_at = max(activity_at, ?2) WHERE id = ?1",
            )
            .map_err(sql_err)?
            .execute(params![&id.as_bytes()[..], at.as_millis()])
            .map_err(sql_err)?;
        }
        WriteOp::RequireConversation(id) => {
            let exists = tx
                .prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")
                .map_err(sql_err)?
                .exists([&id.as_bytes()[..]])
                .map_err(sql_err)?;
            if !exists {
                // Returning an error drops the transaction: nothing of the
                // batch is written.
                return Err(StoreError::ConversationNotFound(id));
            }
        }
        WriteOp::RequireVersion(kind, id, expected) => {
            if !version_matches(local_version(tx, kind, id)?.as_ref(), expected) {
                return Err(StoreError::VersionChanged { kind, id });
            }
        }
        WriteOp::RequireMeta(key, expected) => {
            let stored: Option<Vec<u8>> = tx
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")
                .map_err(sql_err)?
                .query_row([&key], |r| r.get(0))
                .optional()
                .map_err(sql_err)?;
            if stored != expected {
                return Err(StoreError::MetaChanged { key });
            }
        }
        WriteOp::ClaimStamps(claim) => {
            // Read and written inside the batch's IMMEDIATE transaction, so
            // two processes cannot both pass the check: the mark costs no
            // write of its own and no extra sync.
            let stored: Option<Vec<u8>> = tx
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")
                .map_err(sql_err)?
                .query_row([CLOCK_MARK_KEY], |r| r.get(0))
                .optional()
                .map_err(sql_err)?;
            let stored = stored.map(|b| parse_clock_mark(&b)).transpose()?;
            let next = claim
                .accept(stored)
                .map_err(|mark| StoreError::StampsTaken { mark })?;
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                .map_err(sql_err)?
                .execute(params![CLOCK_MARK_KEY, next.to_string().into_bytes()])
                .map_err(sql_err)?;
        }
        op @ (WriteOp::PutConversation(_)
        | WriteOp::InsertMessage(_)
        | WriteOp::PutMessage(_)
        | WriteOp::Delete(_)) => {
            write_record(tx, op, None, deferred)?;
        }
        WriteOp::CoverMessages(conversation, through) => {
            raise_mark(tx, conversation, through)?;
            cover_messages(tx, conversation, through, deferred)?;
        }
        WriteOp::Enqueue(item) => {
            // A change of a record the store holds neither live nor as a
            // tombstone would have nothing to send: nothing is queued.
            if let Some((place, old)) = pointer_of(tx, item.kind, item.entity_id)? {
                let seq = deferred.next_seq(tx)?;
                point_at(tx, place, item.kind, item.entity_id, seq)?;
                requeue(tx, old, seq, &item)?;
            }
        }
        WriteOp::RestoreOutbox(entry) => {
            let item = entry.item;
            let holder: Option<Vec<u8>> = tx
                .prepare_cached("SELECT entity_id FROM outbox WHERE seq = ?1")
                .map_err(sql_err)?
                .query_row([entry.seq as i64], |r| r.get(0))
                .optional()
                .map_err(sql_err)?;
            if holder.is_some_and(|h| h[..] != item.entity_id.as_bytes()[..]) {
                return Err(StoreError::InvalidRequest(format!(
                    "outbox sequence number {} is another record's entry",
                    entry.seq
                )));
            }
            if let Some((place, old)) = pointer_of(tx, item.kind, item.entity_id)? {
                let seq = entry.seq as i64;
                point_at(tx, place, item.kind, item.entity_id, seq)?;
                if old != Some(seq) {
                    drop_entry(tx, old)?;
                }
                let parked = entry.parked.as_ref();
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO outbox (seq, entity_id, kind, conversation_id, op_id, \
                     parked_at, parked_code, parked_message, attempts) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(sql_err)?
                .execute(params![
                    seq,
                    &item.entity_id.as_bytes()[..],
                    item.kind.as_str(),
                    item.conversation_id.map(|c| c.as_bytes().to_vec()),
                    &item.op_id.as_bytes()[..],
                    parked.map(|p| p.at.as_millis()),
                    parked.map(|p| p.code.as_str()),
                    parked.map(|p| p.message.as_str()),
                    entry.attempts,
                ])
                .map_err(sql_err)?;
                // The next number is read again: above this one.
                deferred.seq = None;
            }
        }
        WriteOp::Dequeue(entity) => {
            // The pointer stays on the row, naming nothing from now on.
            drop_entry(tx, entity_pointer(tx, entity)?)?;
        }
        WriteOp::Park(seq, reason) => {
            tx.prepare_cached(
                "UPDATE outbox SET parked_at = ?2, parked_code = ?3, parked_message = ?4, \
                 attempts = attempts + 1 WHERE seq = ?1",
            )
            .map_err(sql_err)?
            .execute(params![
                seq as i64,
                reason.at.as_millis(),
                reason.code,
                reason.message
            ])
            .map_err(sql_err)?;
        }
        WriteOp::Unpark(entity) => {
            if let Some(seq) = entity_pointer(tx, entity)? {
                tx.prepare_cached("UPDATE outbox SET parked_at = NULL WHERE seq = ?1")
                    .map_err(sql_err)?
                    .execute([seq])
                    .map_err(sql_err)?;
            }
        }
        WriteOp::ForgetUnlessPending(t) => {
            if forgettable(tx, &t)? {
                // A forgotten conversation takes all its messages along:
                // nothing of it is unsynced, and the server lists none.
                let conversation =
                    (t.kind == EntityKind::Conversation).then(|| t.id.conversation());
                apply(tx, WriteOp::Delete(t), deferred, outcome)?;
                if let Some(conversation) = conversation {
                    cover_messages(tx, conversation, Hlc::MAX, deferred)?;
                }
                outcome.forgotten += 1;
            }
        }
        WriteOp::SetMeta(key, value) => {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                .map_err(sql_err)?
                .execute(params![key, value])
                .map_err(sql_err)?;
        }
        WriteOp::DeleteMeta(key) => {
            tx.prepare_cached("DELETE FROM meta WHERE key = ?1")
                .map_err(sql_err)?
                .execute([key])
                .map_err(sql_err)?;
        }
    }
    Ok(())
}

/// Points a record's row (live or tombstone) at outbox entry `seq`.
fn point_at(
    tx: &Connection,
    place: Place,
    kind: EntityKind,
    entity: RecordId,
    seq: i64,
) -> Result<()> {
    let id = &entity.as_bytes()[..];
    let (sql, args) = match (place, kind) {
        (Place::Live, EntityKind::Conversation) => (
            "UPDATE conversations SET pending_seq = ?1 WHERE id = ?2",
            params![seq, id],
        ),
        (Place::Live, EntityKind::Message) => (
            "UPDATE messages SET pending_seq = ?1 WHERE id = ?2",
            params![seq, id],
        ),
        (Place::Tombstone, kind) => (
            "UPDATE tombstones SET pending_seq = ?1 WHERE kind = ?3 AND id = ?2",
            params![seq, id, kind.as_str()],
        ),
    };
    tx.prepare_cached(sql)
        .map_err(sql_err)?
        .execute(args)
        .map_err(sql_err)?;
    Ok(())
}

/// The outbox pointer of a record of either kind (ids of conversations
/// and messages never collide), live or as a tombstone.
fn entity_pointer(tx: &Connection, entity: RecordId) -> Result<Option<i64>> {
    for kind in [EntityKind::Message, EntityKind::Conversation] {
        if let Some((_, pointer)) = pointer_of(tx, kind, entity)? {
            return Ok(pointer);
        }
    }
    Ok(None)
}

/// Writes a record or its tombstone ([`written_record`]'s ops). With
/// `pointer`, the row points at that new outbox entry and the record's
/// previous pointer is returned (the caller replaces that entry);
/// without, the row keeps the pointer it had — across a record becoming
/// its tombstone and back, so its pending change stays reachable.
fn write_record(
    tx: &Transaction<'_>,
    op: WriteOp,
    pointer: Option<i64>,
    deferred: &mut Deferred,
) -> Result<Option<i64>> {
    match op {
        WriteOp::PutConversation(r) => {
            let id = &r.id.as_bytes()[..];
            let own: Option<i64> = match pointer {
                Some(_) => tx
                    .prepare_cached("SELECT pending_seq FROM conversations WHERE id = ?1")
                    .map_err(sql_err)?
                    .query_row([id], |row| row.get(0))
                    .optional()
                    .map_err(sql_err)?
                    .flatten(),
                None => None,
            };
            // The tombstone goes; its deletion stays in the mark.
            tx.prepare_cached(
                "INSERT INTO deletion_marks (conversation_id, version) \
                 SELECT id, version FROM tombstones WHERE kind = 'conversation' AND id = ?1 \
                 ON CONFLICT (conversation_id) DO UPDATE SET version = max(version, excluded.version)",
            )
            .map_err(sql_err)?
            .execute([id])
            .map_err(sql_err)?;
            let buried = take_tombstone(tx, EntityKind::Conversation, id)?;
            tx.prepare_cached(
                "INSERT INTO conversations (id, user_id, created_at, updated_at, activity_at, version, body, pending_seq) \
                 VALUES (:id, :user, :created, :updated, \
                         max(:updated, coalesce((SELECT max(updated_at) FROM messages WHERE conversation_id = :id), 0)), \
                         :version, :body, :pending) \
                 ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
                     created_at = excluded.created_at, updated_at = excluded.updated_at, \
                     activity_at = max(activity_at, excluded.updated_at), \
                     version = excluded.version, body = excluded.body, \
                     pending_seq = coalesce(excluded.pending_seq, pending_seq)",
            )
            .map_err(sql_err)?
            .execute(named_params! {
                ":id": id,
                ":user": r.user_id.as_str(),
                ":created": r.created_at.as_millis(),
                ":updated": r.updated_at.as_millis(),
                ":version": r.version.to_string(),
                ":body": r.body.as_bytes(),
                ":pending": pointer.or(buried),
            })
            .map_err(sql_err)?;
            Ok(own.or(buried))
        }
        WriteOp::InsertMessage(m) => {
            deferred.add_totals(m.conversation_id, 1, m.body.len() as i64);
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO messages (id, conversation_id, created_at, updated_at, version, body, pending_seq) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql_err)?
                .execute(params![
                    &m.id.as_bytes()[..],
                    &m.conversation_id.as_bytes()[..],
                    m.created_at.as_millis(),
                    m.updated_at.as_millis(),
                    m.version.to_string(),
                    m.body.as_bytes(),
                    pointer,
                ]);
            match inserted {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(StoreError::InvalidRequest(format!(
                        "message {} already exists",
                        m.id
                    )));
                }
                other => {
                    other.map_err(sql_err)?;
                }
            }
            deferred.raise_activity(m.conversation_id, m.updated_at.as_millis());
            // A new id: no earlier entry to replace.
            Ok(None)
        }
        WriteOp::PutMessage(m) => {
            let id = &m.id.as_bytes()[..];
            let buried = take_tombstone(tx, EntityKind::Message, id)?;
            let own = uncount_message(tx, id, deferred)?;
            deferred.add_totals(m.conversation_id, 1, m.body.len() as i64);
            tx.prepare_cached(
                "INSERT INTO messages (id, conversation_id, created_at, updated_at, version, body, pending_seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (id) DO UPDATE SET conversation_id = excluded.conversation_id, \
                     created_at = excluded.created_at, updated_at = excluded.updated_at, \
                     version = excluded.version, body = excluded.body, \
                     pending_seq = coalesce(excluded.pending_seq, pending_seq)",
            )
            .map_err(sql_err)?
            .execute(params![
                id,
                &m.conversation_id.as_bytes()[..],
                m.created_at.as_millis(),
                m.updated_at.as_millis(),
                m.version.to_string(),
                m.body.as_bytes(),
                pointer.or(buried),
            ])
            .map_err(sql_err)?;
            deferred.raise_activity(m.conversation_id, m.updated_at.as_millis());
            Ok(own.or(buried))
        }
        WriteOp::Delete(t) => {
            let id = &t.id.as_bytes()[..];
            let live = match t.kind {
                EntityKind::Conversation => {
                    let live: Option<Option<i64>> = tx
                        .prepare_cached(
                            "DELETE FROM conversations WHERE id = ?1 RETURNING pending_seq",
                        )
                        .map_err(sql_err)?
                        .query_row([id], |r| r.get(0))
                        .optional()
                        .map_err(sql_err)?;
                    cover_messages(tx, t.id.conversation(), t.version, deferred)?;
                    live
                }
                EntityKind::Message => {
                    let live: Option<(Vec<u8>, i64, Option<i64>)> = tx
                        .prepare_cached(
                            "DELETE FROM messages WHERE id = ?1 \
                             RETURNING conversation_id, length(body), pending_seq",
                        )
                        .map_err(sql_err)?
                        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                        .map_err(sql_err)?;
                    match live {
                        Some((conversation, bytes, pointer)) => {
                            deferred.add_totals(conversation_id(conversation)?, -1, -bytes);
                            Some(pointer)
                        }
                        None => None,
                    }
                }
            };
            // Without a live row the record may already lie as a
            // tombstone, whose entry a new pointer replaces.
            let buried = match (pointer, live) {
                (Some(_), None) => pointer_of(tx, t.kind, t.id)?.and_then(|(_, p)| p),
                _ => None,
            };
            let live = live.flatten();
            tx.prepare_cached(
                "INSERT INTO tombstones (kind, id, conversation_id, version, deleted_at, pending_seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (kind, id) DO UPDATE SET conversation_id = excluded.conversation_id, \
                     version = excluded.version, deleted_at = excluded.deleted_at, \
                     pending_seq = coalesce(excluded.pending_seq, pending_seq)",
            )
            .map_err(sql_err)?
            .execute(params![
                t.kind.as_str(),
                id,
                t.conversation_id.map(|c| c.as_bytes().to_vec()),
                t.version.to_string(),
                t.deleted_at.as_millis(),
                pointer.or(live),
            ])
            .map_err(sql_err)?;
            Ok(live.or(buried))
        }
        other => Err(StoreError::InvalidRequest(format!(
            "not a record write: {other:?}"
        ))),
    }
}

/// Deletes a record's tombstone (a put brings the record back) and
/// returns its outbox pointer, which the record's row takes over.
fn take_tombstone(tx: &Connection, kind: EntityKind, id: &[u8]) -> Result<Option<i64>> {
    let pointer: Option<Option<i64>> = tx
        .prepare_cached("DELETE FROM tombstones WHERE kind = ?1 AND id = ?2 RETURNING pending_seq")
        .map_err(sql_err)?
        .query_row(params![kind.as_str(), id], |r| r.get(0))
        .optional()
        .map_err(sql_err)?;
    Ok(pointer.flatten())
}

pub(crate) fn outbox(c: &mut Connection, limit: usize) -> Result<Vec<OutboxEntry>> {
    check_limit(limit)?;
    let tx = c.transaction().map_err(sql_err)?;
    let mut out = Vec::with_capacity(limit);
    // An entry whose record is gone yields no change; read on past it so
    // it never hides the pending changes behind it.
    let mut after = 0i64;
    while out.len() < limit {
        let items: Vec<(i64, Vec<u8>, String, Vec<u8>)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, entity_id, kind, op_id FROM outbox \
                     WHERE seq > ?1 AND parked_at IS NULL ORDER BY seq LIMIT ?2",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![after, (limit - out.len()) as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql_err)?
        };
        let Some(last) = items.last() else {
            break;
        };
        after = last.0;
        read_changes(&tx, items, &mut out)?;
    }
    Ok(out)
}

pub(crate) fn parked(
    c: &mut Connection,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<ParkedEntry>> {
    check_limit(limit)?;
    let tx = c.transaction().map_err(sql_err)?;
    let mut out = Vec::with_capacity(limit.min(1024));
    let mut after = after.map_or(0, |a| a as i64);
    while out.len() < limit {
        type ParkedRow = (i64, Vec<u8>, String, Vec<u8>, i64, String, String, i64);
        let rows: Vec<ParkedRow> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, entity_id, kind, op_id, parked_at, parked_code, parked_message, \
                     attempts FROM outbox WHERE seq > ?1 AND parked_at IS NOT NULL \
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![after, (limit - out.len()) as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                })
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql_err)?
        };
        let Some(last) = rows.last() else {
            break;
        };
        after = last.0;
        let mut reasons: HashMap<u64, (ParkReason, u32)> = HashMap::new();
        let items = rows
            .into_iter()
            .map(|(seq, entity, kind, op, at, code, message, attempts)| {
                let reason = ParkReason {
                    code,
                    message,
                    at: ts(at),
                };
                reasons.insert(seq as u64, (reason, attempts.max(0) as u32));
                (seq, entity, kind, op)
            })
            .collect();
        let mut changes = Vec::new();
        read_changes(&tx, items, &mut changes)?;
        for entry in changes {
            if let Some((reason, attempts)) = reasons.remove(&entry.seq) {
                out.push(ParkedEntry {
                    seq: entry.seq,
                    change: entry.change,
                    reason,
                    attempts,
                });
            }
        }
    }
    Ok(out)
}

/// Builds the changes of outbox rows `(seq, entity, kind, op id)` from
/// their records' current state, skipping rows whose record is gone.
fn read_changes(
    tx: &Transaction<'_>,
    items: Vec<(i64, Vec<u8>, String, Vec<u8>)>,
    out: &mut Vec<OutboxEntry>,
) -> Result<()> {
    for (seq, entity, kind, op) in items {
        let entity = record_id(entity)?;
        let kind: EntityKind = kind
            .parse()
            .map_err(|e: chatvault_core::CoreError| StoreError::Decode(e.to_string()))?;
        let op_id = OpId::from_bytes(
            op.try_into()
                .map_err(|_| StoreError::Decode("outbox op id is not 16 bytes".into()))?,
        );
        let live = match kind {
            EntityKind::Conversation => {
                let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1");
                tx.prepare_cached(&sql)
                    .map_err(sql_err)?
                    .query_row([&entity.as_bytes()[..]], read_conversation)
                    .optional()
                    .map_err(sql_err)?
                    .transpose()?
                    .map(|row| Change::upsert_conversation(op_id, &row.record))
            }
            EntityKind::Message => {
                let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
                tx.prepare_cached(&sql)
                    .map_err(sql_err)?
                    .query_row([&entity.as_bytes()[..]], read_message)
                    .optional()
                    .map_err(sql_err)?
                    .transpose()?
                    .map(|m| Change::upsert_message(op_id, &m))
            }
        };
        let change = match live {
            Some(c) => Some(c),
            None => tombstone_in(tx, kind, entity)?.map(|t| Change::delete(op_id, &t)),
        };
        if let Some(change) = change {
            out.push(OutboxEntry {
                seq: seq as u64,
                change,
            });
        }
    }
    Ok(())
}

pub(crate) fn acknowledge(c: &mut Connection, seqs: &[u64]) -> Result<()> {
    let tx = c.transaction().map_err(sql_err)?;
    {
        let mut stmt = tx
            .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
            .map_err(sql_err)?;
        for seq in seqs {
            stmt.execute([*seq as i64]).map_err(sql_err)?;
        }
    }
    tx.commit().map_err(sql_err)
}

pub(crate) fn meta(c: &mut Connection, key: &str) -> Result<Option<Vec<u8>>> {
    c.prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .map_err(sql_err)?
        .query_row([key], |r| r.get(0))
        .optional()
        .map_err(sql_err)
}

pub(crate) fn meta_entries(
    c: &mut Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<MetaEntry>> {
    check_limit(limit)?;
    let mut stmt = c
        .prepare_cached(
            "SELECT key, value FROM meta WHERE ?1 IS NULL OR key > ?1 ORDER BY key LIMIT ?2",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(params![after, limit as i64], |r| {
            Ok(MetaEntry {
                key: r.get(0)?,
                value: r.get(1)?,
            })
        })
        .map_err(sql_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_err)
}

pub(crate) fn all_messages(
    c: &mut Connection,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Vec<MessageRecord>> {
    check_limit(limit)?;
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(
            params![after.map(|a| a.as_bytes().to_vec()), limit as i64],
            read_message,
        )
        .map_err(sql_err)?;
    collect(rows)
}

pub(crate) fn deletion_marks(
    c: &mut Connection,
    after: Option<ConversationId>,
    limit: usize,
) -> Result<Vec<DeletionMark>> {
    check_limit(limit)?;
    let mut stmt = c
        .prepare_cached(
            "SELECT conversation_id, version FROM deletion_marks \
             WHERE ?1 IS NULL OR conversation_id > ?1 ORDER BY conversation_id LIMIT ?2",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(
            params![after.map(|a| a.as_bytes().to_vec()), limit as i64],
            |r| {
                let id: Vec<u8> = r.get(0)?;
                let version: String = r.get(1)?;
                Ok((|| {
                    Ok(DeletionMark {
                        conversation_id: conversation_id(id)?,
                        version: hlc(version)?,
                    })
                })())
            },
        )
        .map_err(sql_err)?;
    collect(rows)
}

pub(crate) fn outbox_entries(
    c: &mut Connection,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<StoredOutboxEntry>> {
    check_limit(limit)?;
    let mut stmt = c
        .prepare_cached(
            "SELECT seq, entity_id, kind, conversation_id, op_id, parked_at, parked_code, \
             parked_message, attempts FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(params![after.map_or(0, |a| a as i64), limit as i64], |r| {
            let seq: i64 = r.get(0)?;
            let entity: Vec<u8> = r.get(1)?;
            let kind: String = r.get(2)?;
            let conversation: Option<Vec<u8>> = r.get(3)?;
            let op: Vec<u8> = r.get(4)?;
            let parked_at: Option<i64> = r.get(5)?;
            let code: Option<String> = r.get(6)?;
            let message: Option<String> = r.get(7)?;
            let attempts: i64 = r.get(8)?;
            Ok((|| {
                let op_id = OpId::from_bytes(
                    op.try_into()
                        .map_err(|_| StoreError::Decode("outbox op id is not 16 bytes".into()))?,
                );
                Ok(StoredOutboxEntry {
                    seq: seq as u64,
                    item: OutboxItem {
                        op_id,
                        kind: kind.parse().map_err(|e: chatvault_core::CoreError| {
                            StoreError::Decode(e.to_string())
                        })?,
                        entity_id: record_id(entity)?,
                        conversation_id: conversation.map(conversation_id).transpose()?,
                    },
                    parked: parked_at.map(|at| ParkReason {
                        code: code.unwrap_or_default(),
                        message: message.unwrap_or_default(),
                        at: ts(at),
                    }),
                    attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
                })
            })())
        })
        .map_err(sql_err)?;
    collect(rows)
}

pub(crate) fn clear(c: &mut Connection) -> Result<()> {
    let tx = c.transaction().map_err(sql_err)?;
    tx.execute_batch(
        "DELETE FROM conversations; DELETE FROM messages; DELETE FROM conversation_totals; \
         DELETE FROM tombstones; DELETE FROM deletion_marks; DELETE FROM outbox;",
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)
}

/// Page counts behind the store's footprint: `(page_size,
/// page_count, freelist_count)`.
pub(crate) fn pages(c: &mut Connection) -> Result<(u64, u64, u64)> {
    let pragma = |name: &str| -> Result<u64> {
        c.pragma_query_value(None, name, |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(sql_err)
    };
    Ok((
        pragma("page_size")?,
        pragma("page_count")?,
        pragma("freelist_count")?,
    ))
}

/// Folds the WAL into the database and truncates it, rewrites the database
/// without its free pages (`VACUUM`), and truncates the WAL that rewrite
/// produced. A checkpoint blocked by another connection's reader is not an
/// error: the file shrinks at a later checkpoint.
pub(crate) fn compact(c: &mut Connection) -> Result<()> {
    let checkpoint = |c: &Connection| -> Result<()> {
        let busy: i64 = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(sql_err)?;
        if busy != 0 {
            tracing::info!("WAL checkpoint blocked by another connection; it will shrink later");
        }
        Ok(())
    };
    checkpoint(c)?;
    c.execute_batch("VACUUM").map_err(sql_err)?;
    checkpoint(c)
}

#[cfg(all(test, not(target_family = "wasm")))]
pub(crate) fn totals_match_messages(c: &mut Connection) -> Result<bool> {
    let mismatches: i64 = c
        .query_row(
            "SELECT count(*) FROM ( \
                 SELECT conversation_id, count(*) AS n, sum(length(body)) AS b \
                 FROM messages GROUP BY conversation_id) m \
             FULL OUTER JOIN (SELECT * FROM conversation_totals WHERE messages != 0 OR bytes != 0) t \
               ON t.conversation_id = m.conversation_id \
             WHERE m.n IS NOT t.messages OR m.b IS NOT t.bytes",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    Ok(mismatches == 0)
}
