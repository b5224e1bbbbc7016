//! Batch application: every [`WriteBatch`] (and every `write_all`) is
//! **one** readwrite transaction over all object stores, so records, their
//! outbox entries and the totals commit together or not at all.
//!
//! Inside it, only reads are awaited (a merge must see the stored version
//! before it decides); puts and deletes are issued without waiting, since
//! IndexedDB runs a transaction's requests in order and later reads see
//! them. An awaited read waits for every write issued before it, and the
//! browser idles while the writer then prepares the next requests, so the
//! read an op repeats per record (its outbox entry: one change per record)
//! is read ahead instead. The ops run in windows of [`READ_AHEAD`]; the
//! outbox entries of every record in the next window are read with one
//! `getAll` over their range of the `entity` index (freshly minted,
//! time-ordered ids make it a narrow range holding little else), issued
//! *before* the current window's writes and awaited only when that
//! window is done, so the browser always has writes queued. An answer the
//! current window's writes make stale (they wrote that record's entry) is
//! dropped and read again when needed; a range crowded with other
//! records' entries falls back to one lookup each, issued together.
//! Every [`BACKPRESSURE`] writes the writer waits for the write issued
//! that many writes before, so a long `write_all` never queues more than
//! a bounded number of requests inside the browser (memory stays flat in
//! the input size) and never lets the queue run dry. A failing request
//! aborts the transaction (its cause is read back from the transaction),
//! and every error path aborts it explicitly, so nothing of a failed batch
//! is kept.
//!
//! Per-conversation effects (activity bumps, message totals) are folded
//! while the batch runs and written once at its end (the rows they change
//! read together), as the SQLite backend does; the quota check runs then
//! too, on the exact change in stored bytes.

use crate::codec::{self, above, hex_id, key, tombstone_key, version_text};
use crate::idb::{self, store_error, wait, DomError};
use crate::schema::{ALL_STORES, CONVERSATIONS, MARKS, MESSAGES, META, OUTBOX, TOMBSTONES, TOTALS};
use chatvault_core::{
    ConversationId, ConversationRecord, EntityKind, Hlc, Incoming, MessageRecord, RecordId,
    Timestamp, Tombstone,
};
use chatvault_store::{
    import_wins, incoming_key, incoming_outbox_item, incoming_parent, incoming_wins, merged_op,
    parse_clock_mark, version_matches, BatchSource, ConversationRow, LocalVersion, Result,
    StoreError, WriteOp, WriteOutcome, CLOCK_MARK_KEY,
};
use js_sys::Array;
use std::collections::{HashMap, HashSet};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{IdbDatabase, IdbIndex, IdbObjectStore, IdbRequest, IdbTransaction};

/// Unawaited writes after which the writer waits for the browser to catch
/// up (bounds what a long `write_all` holds in the request queue).
const BACKPRESSURE: usize = 256;

/// Ops whose outbox lookups are read ahead together (see the module docs).
const READ_AHEAD: usize = 256;

/// A page of a conversation's covered messages or tombstones.
const COVER_PAGE: usize = 256;

/// The `totals` row holding the body bytes of every live record.
const ALL_BYTES: &str = "";

/// [`incoming_wins`] or [`import_wins`].
type WinRule = fn(&Incoming, Option<&LocalVersion>, Option<Hlc>) -> bool;

/// Applies every batch `source` yields in one transaction; commits only if
/// all of them applied.
pub(crate) async fn write_all(
    db: &IdbDatabase,
    durability: &str,
    max_bytes: Option<u64>,
    source: BatchSource,
) -> Result<WriteOutcome> {
    let tx = idb::readwrite(db, &ALL_STORES, durability)
        .map_err(|e| store_error("starting a write", e))?;
    let mut writer = Writer::new(tx)?;
    let applied = async {
        let mut windows = Windows {
            source,
            batch: Vec::new().into_iter(),
        };
        let mut window = windows.next()?;
        writer.read_ahead(&window)?;
        while !window.is_empty() {
            writer.take_read_ahead().await?;
            let next = windows.next()?;
            writer.read_ahead(&next)?;
            for op in window {
                writer.apply(op).await?;
            }
            window = next;
        }
        writer.flush(max_bytes).await
    }
    .await;
    match applied {
        Ok(()) => {
            idb::finish(&writer.tx)
                .await
                .map_err(|e| store_error("committing a write", e))?;
            Ok(writer.outcome)
        }
        Err(e) => {
            // Already aborted if a request failed; aborting again is a
            // harmless InvalidStateError.
            let _ = writer.tx.abort();
            tracing::debug!(error = %e, "IndexedDB write aborted; nothing of it was kept");
            Err(e)
        }
    }
}

/// The ops of every batch a source yields, a window of [`READ_AHEAD`] at
/// a time (inside one transaction, batches draw no line).
struct Windows {
    source: BatchSource,
    batch: std::vec::IntoIter<WriteOp>,
}

impl Windows {
    /// The next window; empty when the source is done.
    fn next(&mut self) -> Result<Vec<WriteOp>> {
        let mut window = Vec::with_capacity(READ_AHEAD);
        while window.len() < READ_AHEAD {
            match self.batch.next() {
                Some(op) => window.push(op),
                None => match self.source.next() {
                    Some(batch) => self.batch = batch?.ops.into_iter(),
                    None => break,
                },
            }
        }
        Ok(window)
    }
}

/// The read ahead for the next window, in flight.
struct Pending {
    /// The records it looks up (hex, sorted, without repeats).
    entities: Vec<String>,
    /// `getAll` over their range of the outbox's `entity` index.
    request: IdbRequest,
}

/// The object stores of one write transaction and what the batch has done
/// so far.
struct Writer {
    tx: IdbTransaction,
    conversations: IdbObjectStore,
    messages: IdbObjectStore,
    tombstones: IdbObjectStore,
    outbox: IdbObjectStore,
    totals: IdbObjectStore,
    meta: IdbObjectStore,
    marks: IdbObjectStore,
    /// The outbox's `entity` index (one entry per record).
    by_entity: IdbIndex,
    /// Outbox entries read ahead for the current window, by record id
    /// (hex): the entry, or `undefined` for none. A record leaves (or is
    /// set to `undefined` when its entry is deleted) as soon as the
    /// transaction writes its entry.
    ahead: HashMap<String, JsValue>,
    /// The read ahead for the next window.
    next: Option<Pending>,
    /// Records whose outbox entry the transaction wrote after `next` was
    /// issued: its answers for them are stale.
    written: HashSet<String>,
    /// Writes issued since the last checkpoint.
    unawaited: usize,
    /// The write at the latest checkpoint (every [`BACKPRESSURE`] writes),
    /// awaited at the next one.
    checkpoint: Option<IdbRequest>,
    /// Activity bumps by conversation (the latest time wins).
    activity: HashMap<ConversationId, Timestamp>,
    /// `(messages, bytes)` to add to each conversation's totals.
    deltas: HashMap<ConversationId, (i64, i64)>,
    /// Change in the body bytes of all live records.
    bytes: i64,
    outcome: WriteOutcome,
}

impl Writer {
    fn new(tx: IdbTransaction) -> Result<Self> {
        let store = |name: &str| {
            tx.object_store(name)
                .map_err(|e| store_error("starting a write", DomError::from_js(&e)))
        };
        let outbox = store(OUTBOX)?;
        let by_entity = outbox
            .index("entity")
            .map_err(|e| store_error("starting a write", DomError::from_js(&e)))?;
        Ok(Self {
            conversations: store(CONVERSATIONS)?,
            messages: store(MESSAGES)?,
            tombstones: store(TOMBSTONES)?,
            outbox,
            by_entity,
            ahead: HashMap::new(),
            next: None,
            written: HashSet::new(),
            checkpoint: None,
            totals: store(TOTALS)?,
            meta: store(META)?,
            marks: store(MARKS)?,
            tx,
            unawaited: 0,
            activity: HashMap::new(),
            deltas: HashMap::new(),
            bytes: 0,
            outcome: WriteOutcome::default(),
        })
    }

    /// A store error for a failure inside the transaction: the
    /// transaction's own error when it has one (the request that failed
    /// first, e.g. `QuotaExceededError`), else `e`.
    fn failed(&self, e: DomError) -> StoreError {
        let cause = self.tx.error().map_or(e, |d| DomError::from_js(&d));
        store_error("writing a batch", cause)
    }

    fn js(&self, e: JsValue) -> StoreError {
        self.failed(DomError::from_js(&e))
    }

    /// Awaits a read inside the transaction.
    async fn read(&self, request: std::result::Result<IdbRequest, JsValue>) -> Result<JsValue> {
        let request = request.map_err(|e| self.js(e))?;
        wait(&request).await.map_err(|e| self.failed(e))
    }

    async fn get(&self, store: &IdbObjectStore, key: &JsValue) -> Result<JsValue> {
        self.read(store.get(key)).await
    }

    /// Issues a write without awaiting it (see the module docs).
    async fn issued(&mut self, request: std::result::Result<IdbRequest, JsValue>) -> Result<()> {
        let request = request.map_err(|e| self.js(e))?;
        self.unawaited += 1;
        if self.unawaited >= BACKPRESSURE {
            self.unawaited = 0;
            // Requests run in order: when the previous checkpoint is done,
            // at most this many writes wait in the browser.
            if let Some(earlier) = self.checkpoint.replace(request) {
                wait(&earlier).await.map_err(|e| self.failed(e))?;
            }
        }
        Ok(())
    }

    async fn put(&mut self, store: &IdbObjectStore, value: &JsValue) -> Result<()> {
        self.issued(store.put(value)).await
    }

    async fn delete(&mut self, store: &IdbObjectStore, key: &JsValue) -> Result<()> {
        self.issued(store.delete(key)).await
    }

    fn count_message(&mut self, conversation: ConversationId, messages: i64, bytes: i64) {
        let t = self.deltas.entry(conversation).or_insert((0, 0));
        t.0 += messages;
        t.1 += bytes;
        self.bytes += bytes;
    }

    fn bump(&mut self, conversation: ConversationId, at: Timestamp) {
        let a = self.activity.entry(conversation).or_insert(at);
        *a = (*a).max(at);
    }

    /// What the store holds for a record: its live version or tombstone.
    async fn local_version(&self, kind: EntityKind, id: RecordId) -> Result<Option<LocalVersion>> {
        let store = match kind {
            EntityKind::Conversation => &self.conversations,
            EntityKind::Message => &self.messages,
        };
        let v = self.get(store, &hex_id(id.as_bytes()).into()).await?;
        if !v.is_undefined() {
            let (version, body) = codec::version_and_body(&v)?;
            return Ok(Some(LocalVersion {
                version,
                deleted: false,
                body,
            }));
        }
        let t = self.get(&self.tombstones, &tombstone_key(kind, id)).await?;
        if t.is_undefined() {
            return Ok(None);
        }
        Ok(Some(LocalVersion {
            version: codec::tombstone(&t)?.version,
            deleted: true,
            body: Vec::new(),
        }))
    }

    async fn wins(&self, incoming: &Incoming, rule: WinRule) -> Result<bool> {
        let (kind, id) = incoming_key(incoming);
        let local = self.local_version(kind, id).await?;
        let mark = match incoming_parent(incoming) {
            Some(c) => self.deletion_mark(c).await?,
            None => None,
        };
        Ok(rule(incoming, local.as_ref(), mark))
    }

    /// The conversation's tombstone version, if it has one.
    async fn conversation_tombstone(&self, id: ConversationId) -> Result<Option<Hlc>> {
        let t = self
            .get(
                &self.tombstones,
                &tombstone_key(EntityKind::Conversation, id.into()),
            )
            .await?;
        Ok(codec::found(&t, codec::tombstone)?.map(|t| t.version))
    }

    /// The conversation's deletion mark: the later of its `marks` row and
    /// its tombstone (see the schema docs).
    async fn deletion_mark(&self, id: ConversationId) -> Result<Option<Hlc>> {
        let row = self.get(&self.marks, &hex_id(id.as_bytes()).into()).await?;
        let row = codec::found(&row, codec::mark)?;
        Ok(row.max(self.conversation_tombstone(id).await?))
    }

    /// Raises the conversation's deletion mark to at least `through`.
    async fn raise_mark(&mut self, id: ConversationId, through: Hlc) -> Result<()> {
        let row = self.get(&self.marks, &hex_id(id.as_bytes()).into()).await?;
        if codec::found(&row, codec::mark)?.is_some_and(|m| m >= through) {
            return Ok(());
        }
        let marks = self.marks.clone();
        self.put(&marks, &codec::mark_value(id, through)).await
    }

    /// Issues, without awaiting it, the read ahead of the outbox entries
    /// of every record `ops` (the next window) queue, dequeue or look up.
    fn read_ahead(&mut self, ops: &[WriteOp]) -> Result<()> {
        self.next = None;
        self.written.clear();
        let mut entities: Vec<String> = ops
            .iter()
            .filter_map(outbox_record)
            .map(|id| hex_id(id.as_bytes()))
            .collect();
        // One lookup gains nothing from being read ahead.
        if entities.len() < 2 {
            return Ok(());
        }
        entities.sort_unstable();
        entities.dedup();
        let (first, last) = (&entities[0], &entities[entities.len() - 1]);
        let range =
            web_sys::IdbKeyRange::bound(&first.into(), &last.into()).map_err(|e| self.js(e))?;
        let request = self
            .by_entity
            .get_all_with_key_and_limit(&range, READ_AHEAD as u32)
            .map_err(|e| self.js(e))?;
        self.next = Some(Pending { entities, request });
        Ok(())
    }

    /// Waits for the read ahead of the window about to apply and makes its
    /// answers current.
    async fn take_read_ahead(&mut self) -> Result<()> {
        self.ahead.clear();
        let Some(Pending { entities, request }) = self.next.take() else {
            return Ok(());
        };
        let found: Array = wait(&request)
            .await
            .map_err(|e| self.failed(e))?
            .unchecked_into();
        if (found.length() as usize) < READ_AHEAD {
            // The whole range: a record without an entry in it has none,
            // unless the transaction wrote its entry after the read.
            for entity in entities {
                if !self.written.contains(&entity) {
                    self.ahead.insert(entity, JsValue::UNDEFINED);
                }
            }
            for entry in found.iter() {
                if let Some(known) = self.ahead.get_mut(&codec::get_str(&entry, "entity")?) {
                    *known = entry;
                }
            }
            return Ok(());
        }
        // Other records' entries fill the range: one lookup each, all
        // issued before the first is awaited (after every write so far, so
        // none of their answers is stale).
        let requests = entities
            .into_iter()
            .map(|entity| {
                let request = self
                    .by_entity
                    .get(&JsValue::from_str(&entity))
                    .map_err(|e| self.js(e))?;
                Ok((entity, request))
            })
            .collect::<Result<Vec<_>>>()?;
        // Requests complete in order: once the last is done, all are.
        if let Some((_, request)) = requests.last() {
            wait(request).await.map_err(|e| self.failed(e))?;
        }
        for (entity, request) in requests {
            let entry = wait(&request).await.map_err(|e| self.failed(e))?;
            self.ahead.insert(entity, entry);
        }
        Ok(())
    }

    /// Notes that the transaction writes the outbox entry of `entity`.
    fn entry_written(&mut self, entity: &str) {
        if self.next.is_some() {
            self.written.insert(entity.to_owned());
        }
    }

    /// The outbox entry of a record, if any (`undefined` if none).
    async fn outbox_entry(&self, entity: RecordId) -> Result<JsValue> {
        let entity = hex_id(entity.as_bytes());
        if let Some(known) = self.ahead.get(&entity) {
            return Ok(known.clone());
        }
        self.read(self.by_entity.get(&entity.into())).await
    }

    /// Deletes the outbox entry with the sequence number `seq`, the one of
    /// the record `entity` (hex).
    async fn delete_entry(&mut self, entity: &str, seq: f64) -> Result<()> {
        let outbox = self.outbox.clone();
        self.delete(&outbox, &seq.into()).await?;
        self.entry_written(entity);
        if let Some(known) = self.ahead.get_mut(entity) {
            *known = JsValue::UNDEFINED;
        }
        Ok(())
    }

    /// Writes an outbox entry (new or changed) of the record `entity`
    /// (hex).
    async fn put_entry(&mut self, entity: &str, entry: &JsValue) -> Result<()> {
        // Its sequence number is the put's answer, which nobody awaits: a
        // later lookup reads it from the store.
        self.ahead.remove(entity);
        self.entry_written(entity);
        let outbox = self.outbox.clone();
        self.put(&outbox, entry).await
    }

    async fn dequeue(&mut self, entity: RecordId) -> Result<()> {
        let entry = self.outbox_entry(entity).await?;
        if !entry.is_undefined() {
            let seq = codec::get_f64(&entry, "seq")?;
            self.delete_entry(&hex_id(entity.as_bytes()), seq).await?;
        }
        Ok(())
    }

    /// The stored messages (or message tombstones) of a conversation
    /// stamped at or below `through`, a page at a time through the
    /// `conv_version` index.
    async fn covered_page(
        &self,
        store: &IdbObjectStore,
        conversation: &JsValue,
        through: &JsValue,
    ) -> Result<Vec<JsValue>> {
        let range = web_sys::IdbKeyRange::bound(
            &key(std::slice::from_ref(conversation)),
            &key(&[conversation.clone(), through.clone()]),
        )
        .map_err(|e| self.js(e))?;
        let index = store.index("conv_version").map_err(|e| self.js(e))?;
        let page = self
            .read(index.get_all_with_key_and_limit(&range, COVER_PAGE as u32))
            .await?;
        Ok(page.unchecked_into::<Array>().iter().collect())
    }

    /// [`WriteOp::CoverMessages`]: drops the conversation's messages
    /// stamped at or below `through`, their tombstones and their outbox
    /// entries (those queued for this conversation), and takes them off
    /// the totals.
    async fn cover_messages(&mut self, conversation: ConversationId, through: Hlc) -> Result<()> {
        let conv_hex = hex_id(conversation.as_bytes());
        let conv: JsValue = conv_hex.clone().into();
        let through = version_text(through);
        let (messages, tombstones) = (self.messages.clone(), self.tombstones.clone());
        for (store, is_message) in [(&messages, true), (&tombstones, false)] {
            loop {
                // Deletions issued before the next page's read apply before
                // it, so each page starts with what is left.
                let page = self.covered_page(store, &conv, &through).await?;
                for v in &page {
                    let id = codec::get_str(v, "id")?;
                    if is_message {
                        let len = codec::body_len(v)? as i64;
                        self.count_message(conversation, -1, -len);
                        self.delete(store, &id.clone().into()).await?;
                    } else {
                        let k = key(&[codec::get_str(v, "kind")?.into(), id.clone().into()]);
                        self.delete(store, &k).await?;
                    }
                    let entry = match self.ahead.get(&id) {
                        Some(known) => known.clone(),
                        None => self.read(self.by_entity.get(&id.clone().into())).await?,
                    };
                    if !entry.is_undefined()
                        && codec::get_str(&entry, "conv").ok().as_deref() == Some(conv_hex.as_str())
                    {
                        let seq = codec::get_f64(&entry, "seq")?;
                        self.delete_entry(&id, seq).await?;
                    }
                }
                if page.len() < COVER_PAGE {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Removes a stored message (if any) from its conversation's totals;
    /// the caller then deletes or replaces it.
    async fn uncount_message(&mut self, id: &JsValue) -> Result<()> {
        let old = self.get(&self.messages, id).await?;
        if !old.is_undefined() {
            let conversation = codec::get_conversation_id(&old, "conv")?;
            let len = codec::body_len(&old)? as i64;
            self.count_message(conversation, -1, -len);
        }
        Ok(())
    }

    async fn put_conversation(&mut self, r: ConversationRecord) -> Result<()> {
        let id: JsValue = hex_id(r.id.as_bytes()).into();
        // The tombstone goes; its deletion stays in the mark.
        if let Some(deleted) = self.conversation_tombstone(r.id).await? {
            self.raise_mark(r.id, deleted).await?;
        }
        let tombstones = self.tombstones.clone();
        self.delete(
            &tombstones,
            &tombstone_key(EntityKind::Conversation, r.id.into()),
        )
        .await?;
        let old = self.get(&self.conversations, &id).await?;
        let previous = if old.is_undefined() {
            Timestamp::EPOCH
        } else {
            self.bytes -= codec::body_len(&old)? as i64;
            codec::conversation_activity(&old)?
        };
        // Its newest message's edit: the last key of `conv_updated` in
        // the conversation's range.
        let index = self
            .messages
            .index("conv_updated")
            .map_err(|e| self.js(e))?;
        let range = web_sys::IdbKeyRange::bound(&key(std::slice::from_ref(&id)), &above(&id))
            .map_err(|e| self.js(e))?;
        let cursor = self
            .read(index.open_key_cursor_with_range_and_direction(
                &range,
                web_sys::IdbCursorDirection::Prev,
            ))
            .await?;
        let newest = match cursor.dyn_ref::<web_sys::IdbCursor>() {
            Some(c) => {
                let k: Array = c.key().map_err(|e| self.js(e))?.unchecked_into();
                Timestamp(k.get(1).as_f64().unwrap_or(0.0) as i64)
            }
            None => Timestamp::EPOCH,
        };
        // Activity never goes back (see the memory backend).
        let activity_at = r.updated_at.max(newest).max(previous);
        self.bytes += r.body.len() as i64;
        let value = codec::conversation_value(&ConversationRow {
            record: r,
            activity_at,
        });
        let store = self.conversations.clone();
        self.put(&store, &value).await
    }

    async fn put_message(&mut self, m: MessageRecord, insert: bool) -> Result<()> {
        let id: JsValue = hex_id(m.id.as_bytes()).into();
        let (messages, tombstones) = (self.messages.clone(), self.tombstones.clone());
        if insert {
            // `add` fails with a ConstraintError if the id exists, which
            // aborts the transaction: the batch fails as the contract says.
            self.issued(messages.add(&codec::message_value(&m))).await?;
        } else {
            self.delete(
                &tombstones,
                &tombstone_key(EntityKind::Message, m.id.into()),
            )
            .await?;
            self.uncount_message(&id).await?;
            self.put(&messages, &codec::message_value(&m)).await?;
        }
        self.count_message(m.conversation_id, 1, m.body.len() as i64);
        self.bump(m.conversation_id, m.updated_at);
        Ok(())
    }

    async fn delete_record(&mut self, t: Tombstone) -> Result<()> {
        let id: JsValue = hex_id(t.id.as_bytes()).into();
        match t.kind {
            EntityKind::Conversation => {
                let old = self.get(&self.conversations, &id).await?;
                if !old.is_undefined() {
                    self.bytes -= codec::body_len(&old)? as i64;
                }
                let store = self.conversations.clone();
                self.delete(&store, &id).await?;
                self.cover_messages(t.id.conversation(), t.version).await?;
            }
            EntityKind::Message => {
                self.uncount_message(&id).await?;
                let store = self.messages.clone();
                self.delete(&store, &id).await?;
            }
        }
        let store = self.tombstones.clone();
        self.put(&store, &codec::tombstone_value(&t)).await
    }

    /// Whether [`WriteOp::ForgetUnlessPending`] may delete: the record is
    /// stored at the tombstone's version and nothing of it is in the
    /// outbox (for a conversation, nothing of its messages either).
    async fn forgettable(&self, t: &Tombstone) -> Result<bool> {
        let same = self
            .local_version(t.kind, t.id)
            .await?
            .is_some_and(|l| !l.deleted && l.version == t.version);
        if !same || !self.outbox_entry(t.id).await?.is_undefined() {
            return Ok(false);
        }
        if t.kind == EntityKind::Conversation {
            let index = self.outbox.index("conv").map_err(|e| self.js(e))?;
            let n = self
                .read(index.count_with_key(&hex_id(t.id.as_bytes()).into()))
                .await?;
            return Ok(n.as_f64().unwrap_or(0.0) == 0.0);
        }
        Ok(true)
    }

    async fn apply(&mut self, op: WriteOp) -> Result<()> {
        match op {
            WriteOp::RequireConversation(id) => {
                let n = self
                    .read(
                        self.conversations
                            .count_with_key(&hex_id(id.as_bytes()).into()),
                    )
                    .await?;
                if n.as_f64().unwrap_or(0.0) == 0.0 {
                    return Err(StoreError::ConversationNotFound(id));
                }
            }
            WriteOp::RequireVersion(kind, id, expected) => {
                if !version_matches(self.local_version(kind, id).await?.as_ref(), expected) {
                    return Err(StoreError::VersionChanged { kind, id });
                }
            }
            WriteOp::RequireMeta(key, expected) => {
                let stored = codec::meta_bytes(&self.get(&self.meta, &key.as_str().into()).await?)?;
                if stored != expected {
                    return Err(StoreError::MetaChanged { key });
                }
            }
            WriteOp::ClaimStamps(claim) => {
                let stored =
                    codec::meta_bytes(&self.get(&self.meta, &CLOCK_MARK_KEY.into()).await?)?;
                let stored = stored.map(|b| parse_clock_mark(&b)).transpose()?;
                let next = claim
                    .accept(stored)
                    .map_err(|mark| StoreError::StampsTaken { mark })?;
                let meta = self.meta.clone();
                let value = codec::meta_value(next.to_string().as_bytes());
                self.issued(meta.put_with_key(&value, &CLOCK_MARK_KEY.into()))
                    .await?;
            }
            WriteOp::Merge(incoming) => {
                if self.wins(&incoming, incoming_wins).await? {
                    self.dequeue(incoming_key(&incoming).1).await?;
                    Box::pin(self.apply(merged_op(incoming))).await?;
                    self.outcome.merged += 1;
                } else {
                    self.outcome.superseded += 1;
                }
            }
            WriteOp::MergeAndEnqueue(incoming, op_id) => {
                if self.wins(&incoming, import_wins).await? {
                    let item = incoming_outbox_item(&incoming, op_id);
                    Box::pin(self.apply(merged_op(incoming))).await?;
                    Box::pin(self.apply(WriteOp::Enqueue(item))).await?;
                    self.outcome.merged += 1;
                } else {
                    self.outcome.superseded += 1;
                }
            }
            WriteOp::RaiseActivity(id, at) => {
                let row = self
                    .get(&self.conversations, &hex_id(id.as_bytes()).into())
                    .await?;
                if !row.is_undefined() && at > codec::conversation_activity(&row)? {
                    codec::set_activity(&row, at);
                    let store = self.conversations.clone();
                    self.put(&store, &row).await?;
                }
            }
            WriteOp::PutConversation(r) => self.put_conversation(r).await?,
            WriteOp::PutMessage(m) => self.put_message(m, false).await?,
            WriteOp::InsertMessage(m) => self.put_message(m, true).await?,
            WriteOp::Delete(t) => self.delete_record(t).await?,
            WriteOp::CoverMessages(id, through) => {
                self.raise_mark(id, through).await?;
                self.cover_messages(id, through).await?;
            }
            WriteOp::Enqueue(item) => {
                // One change per record: the new one replaces the pending
                // one and gets the next sequence number.
                self.dequeue(item.entity_id).await?;
                let entity = hex_id(item.entity_id.as_bytes());
                self.put_entry(&entity, &codec::outbox_value(&item)).await?;
            }
            WriteOp::Dequeue(entity) => self.dequeue(entity).await?,
            WriteOp::Park(seq, reason) => {
                let entry = self.get(&self.outbox, &(seq as f64).into()).await?;
                if !entry.is_undefined() {
                    codec::park(&entry, &reason)?;
                    let entity = codec::get_str(&entry, "entity")?;
                    self.put_entry(&entity, &entry).await?;
                }
            }
            WriteOp::Unpark(entity) => {
                let entry = self.outbox_entry(entity).await?;
                if !entry.is_undefined() && codec::is_parked(&entry)? {
                    codec::unpark(&entry);
                    self.put_entry(&hex_id(entity.as_bytes()), &entry).await?;
                }
            }
            WriteOp::ForgetUnlessPending(t) => {
                if self.forgettable(&t).await? {
                    // A forgotten conversation takes all its messages
                    // along: nothing of it is unsynced.
                    let conversation =
                        (t.kind == EntityKind::Conversation).then(|| t.id.conversation());
                    self.delete_record(t).await?;
                    if let Some(conversation) = conversation {
                        self.cover_messages(conversation, Hlc::MAX).await?;
                    }
                    self.outcome.forgotten += 1;
                }
            }
            WriteOp::SetMeta(k, v) => {
                let meta = self.meta.clone();
                self.issued(meta.put_with_key(&codec::meta_value(&v), &k.into()))
                    .await?;
            }
            WriteOp::DeleteMeta(k) => {
                let meta = self.meta.clone();
                self.delete(&meta, &k.into()).await?;
            }
        }
        Ok(())
    }

    /// Writes the folded activity bumps and totals, and refuses the whole
    /// write if it grew the store past `max_bytes`.
    async fn flush(&mut self, max_bytes: Option<u64>) -> Result<()> {
        // Every row to change is read first, all requests issued before
        // the first is awaited: one round trip, not one per row.
        let mut activity = Vec::new();
        for (id, at) in std::mem::take(&mut self.activity) {
            let request = self
                .conversations
                .get(&hex_id(id.as_bytes()).into())
                .map_err(|e| self.js(e))?;
            activity.push((at, request));
        }
        let mut totals = Vec::new();
        for (id, delta) in std::mem::take(&mut self.deltas) {
            if delta == (0, 0) {
                continue;
            }
            let conv = hex_id(id.as_bytes());
            let request = self
                .totals
                .get(&conv.clone().into())
                .map_err(|e| self.js(e))?;
            totals.push((conv, delta, request));
        }
        let all_bytes = match self.bytes {
            0 => None,
            _ => Some(self.totals.get(&ALL_BYTES.into()).map_err(|e| self.js(e))?),
        };
        // Requests complete in order: once the last is done, all are.
        let last = all_bytes
            .clone()
            .or_else(|| totals.last().map(|(_, _, r)| r.clone()))
            .or_else(|| activity.last().map(|(_, r)| r.clone()));
        if let Some(last) = last {
            wait(&last).await.map_err(|e| self.failed(e))?;
        }

        let store = self.conversations.clone();
        for (at, request) in activity {
            let row = wait(&request).await.map_err(|e| self.failed(e))?;
            if !row.is_undefined() && at > codec::conversation_activity(&row)? {
                codec::set_activity(&row, at);
                self.put(&store, &row).await?;
            }
        }
        let store = self.totals.clone();
        for (conv, (messages, bytes), request) in totals {
            let row = wait(&request).await.map_err(|e| self.failed(e))?;
            let (n, b) = codec::totals(&row)?;
            let (n, b) = (n + messages, b + bytes);
            if n <= 0 && b <= 0 {
                self.delete(&store, &conv.into()).await?;
            } else {
                self.put(&store, &codec::totals_value(&conv, n, b)).await?;
            }
        }
        if let Some(request) = all_bytes {
            let row = wait(&request).await.map_err(|e| self.failed(e))?;
            let (_, before) = codec::totals(&row)?;
            let after = before + self.bytes;
            if let Some(max) = max_bytes {
                // Only growth is refused: a deletion always goes through,
                // even on a full store.
                if self.bytes > 0 && after > max as i64 {
                    return Err(StoreError::full(format!(
                        "the store's cap of {max} bytes is reached"
                    )));
                }
            }
            self.put(&store, &codec::totals_value(ALL_BYTES, 0, after))
                .await?;
        }
        Ok(())
    }
}

/// The record whose outbox entry `op` looks up, if it looks one up.
fn outbox_record(op: &WriteOp) -> Option<RecordId> {
    match op {
        WriteOp::Enqueue(item) => Some(item.entity_id),
        WriteOp::Dequeue(entity) | WriteOp::Unpark(entity) => Some(*entity),
        WriteOp::Merge(incoming) | WriteOp::MergeAndEnqueue(incoming, _) => {
            Some(incoming_key(incoming).1)
        }
        WriteOp::ForgetUnlessPending(t) => Some(t.id),
        _ => None,
    }
}

/// Runs `issue` (requests that need no answer) in one readwrite
/// transaction over `stores` and waits for it to commit; a request that
/// throws aborts it.
async fn issue_and_commit(
    db: &IdbDatabase,
    stores: &[&str],
    durability: &str,
    doing: &str,
    issue: impl FnOnce(&IdbTransaction) -> std::result::Result<(), JsValue>,
) -> Result<()> {
    let tx = idb::readwrite(db, stores, durability).map_err(|e| store_error(doing, e))?;
    if let Err(e) = issue(&tx) {
        let _ = tx.abort();
        return Err(store_error(doing, DomError::from_js(&e)));
    }
    idb::finish(&tx).await.map_err(|e| store_error(doing, e))
}

/// Removes delivered outbox entries, in one transaction.
pub(crate) async fn acknowledge(db: &IdbDatabase, durability: &str, seqs: &[u64]) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    issue_and_commit(db, &[OUTBOX], durability, "acknowledging", |tx| {
        let outbox = tx.object_store(OUTBOX)?;
        for seq in seqs {
            outbox.delete(&(*seq as f64).into())?;
        }
        Ok(())
    })
    .await
}

/// Deletes every record, tombstone, deletion mark, outbox entry and
/// total; keeps `meta`.
/// The outbox's sequence numbers go on from where they were (IndexedDB
/// never resets a key generator on `clear`).
pub(crate) async fn clear(db: &IdbDatabase, durability: &str) -> Result<()> {
    let stores = [CONVERSATIONS, MESSAGES, TOMBSTONES, OUTBOX, TOTALS, MARKS];
    issue_and_commit(db, &stores, durability, "clearing", |tx| {
        for name in stores {
            tx.object_store(name)?.clear()?;
        }
        Ok(())
    })
    .await
}
