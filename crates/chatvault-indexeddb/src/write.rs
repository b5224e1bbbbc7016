//! Batch application: every [`WriteBatch`] (and every `write_all`) is
//! **one** readwrite transaction over all object stores, so records, their
//! outbox entries and the totals commit together or not at all.
//!
//! Inside it, only reads are awaited (a merge must see the stored version
//! before it decides); puts and deletes are issued without waiting, since
//! IndexedDB runs a transaction's requests in order and later reads see
//! them. An awaited read waits for every write issued before it, and the
//! browser idles while the writer then prepares the next requests, so the
//! writer avoids reads a write does not need. Every [`BACKPRESSURE`]
//! writes it waits for the write issued that many writes before, so a long
//! `write_all` never queues more than a bounded number of requests inside
//! the browser (memory stays flat in the input size) and never lets the
//! queue run dry. A failing request aborts the transaction (its cause is
//! read back from the transaction), and every error path aborts it
//! explicitly, so nothing of a failed batch is kept.
//!
//! # The outbox on the records
//! A record's pending (or parked) change is its `outbox` property (see
//! `schema`), so queueing a change is part of the record's own put. Ops
//! are taken a window of [`WINDOW`] at a time, which lets the writer look
//! ahead:
//! - an [`WriteOp::Enqueue`] next to the write of its record (before or
//!   after it: a new message, a local edit, a deletion) is **fused** with
//!   it — the record is written once, already carrying its new change, and
//!   nothing is read for the change;
//! - a run of other `Enqueue`, [`WriteOp::Dequeue`] and
//!   [`WriteOp::Unpark`] ops looks up every record it touches at once (one
//!   round trip) and puts each changed record once;
//! - a record write that is not fused keeps the change of what it replaces
//!   (a local write's change is queued on its own), a merged version from
//!   elsewhere drops it (the remote version superseded the local change).
//!
//! A change queued for a record the store does not hold (yet) waits in
//! the writer: the record's write later in the transaction takes it, and
//! if none comes it is dropped at the end (with no record and no
//! tombstone it could never be listed). Sequence numbers come from the
//! counter in `meta`, read at the first change a transaction queues and
//! written back once, when it flushes.
//!
//! Per-conversation effects (activity bumps, message totals) are folded
//! while the batch runs and written once at its end (the rows they change
//! read together), as the SQLite backend does; the quota check runs then
//! too, on the exact change in stored bytes.

use crate::codec::{self, above, hex_id, key, tombstone_key, version_text};
use crate::idb::{self, store_error, wait, DomError};
use crate::read;
use crate::schema::{
    ALL_STORES, CONVERSATIONS, MARKS, MESSAGES, META, OUTBOX_INDEX, RECORD_STORES, SEQ_KEY,
    TOMBSTONES, TOTALS,
};
use chatvault_core::{
    ConversationId, ConversationRecord, EntityKind, Hlc, Incoming, MessageRecord, OpId, RecordId,
    Timestamp, Tombstone,
};
use chatvault_store::{
    import_wins, incoming_key, incoming_parent, incoming_wins, merged_op, parse_clock_mark,
    version_matches, BatchSource, ConversationRow, LocalVersion, OutboxItem, ParkReason, Result,
    StoreError, StoredOutboxEntry, WriteOp, WriteOutcome, CLOCK_MARK_KEY,
};
use js_sys::Array;
use std::collections::{HashMap, HashSet, VecDeque};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{IdbDatabase, IdbObjectStore, IdbRequest, IdbTransaction};

/// Unawaited writes after which the writer waits for the browser to catch
/// up (bounds what a long `write_all` holds in the request queue).
const BACKPRESSURE: usize = 256;

/// Ops taken from the source at a time, and so how far the writer looks
/// ahead (see the module docs).
const WINDOW: usize = 256;

/// A page of a conversation's covered messages or tombstones.
const COVER_PAGE: usize = 256;

/// The `totals` row holding the body bytes of every live record.
const ALL_BYTES: &str = "";

/// [`incoming_wins`] or [`import_wins`].
type WinRule = fn(&Incoming, Option<&LocalVersion>, Option<Hlc>) -> bool;

/// What a record write does with the record's outbox entry.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// Keeps the entry of what it replaces (the stored record or its
    /// tombstone, or a change waiting for the record): a local write.
    Carry,
    /// Drops it: a version from elsewhere superseded the local change.
    Drop,
    /// Gives the record a new pending change under this op id (an
    /// `Enqueue` fused with the write).
    Fresh(OpId),
}

/// A change queued for a record the store does not hold (see the module
/// docs).
struct Stashed {
    entry: JsValue,
    /// A message's conversation (stored hex): it keeps the conversation
    /// from being forgotten while the change waits.
    conversation: Option<String>,
}

/// A record a run of outbox ops touches, as looked up.
struct Found {
    value: JsValue,
    kind: EntityKind,
    store: IdbObjectStore,
    /// Whether the run changed its entry (it is put once, at the end).
    changed: bool,
}

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
        loop {
            let window = windows.next()?;
            if window.is_empty() {
                break;
            }
            writer.apply_window(window).await?;
        }
        writer.flush(max_bytes).await
    }
    .await;
    match applied {
        Ok(()) => {
            idb::finish(&writer.tx)
                .await
                .map_err(|e| store_error("committing a write", e))?;
            if !writer.stash.is_empty() {
                tracing::debug!(
                    dropped = writer.stash.len(),
                    "changes queued for records the store does not hold were dropped"
                );
            }
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

/// The ops of every batch a source yields, a window of [`WINDOW`] at
/// a time (inside one transaction, batches draw no line).
struct Windows {
    source: BatchSource,
    batch: std::vec::IntoIter<WriteOp>,
}

impl Windows {
    /// The next window; empty when the source is done.
    fn next(&mut self) -> Result<Vec<WriteOp>> {
        let mut window = Vec::with_capacity(WINDOW);
        while window.len() < WINDOW {
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

/// The object stores of one write transaction and what the batch has done
/// so far.
struct Writer {
    tx: IdbTransaction,
    conversations: IdbObjectStore,
    messages: IdbObjectStore,
    tombstones: IdbObjectStore,
    totals: IdbObjectStore,
    meta: IdbObjectStore,
    marks: IdbObjectStore,
    /// Changes queued for records the store does not hold, by record id
    /// (hex).
    stash: HashMap<String, Stashed>,
    /// The last sequence number issued, once the counter was read.
    last_seq: Option<f64>,
    /// Whether the transaction issued sequence numbers (the counter is
    /// written back when it flushes).
    seq_changed: bool,
    /// The conversations with a pending or parked change of a message (or
    /// message tombstone), while a run of `ForgetUnlessPending` ops reads
    /// them (no other op may run in between: it could change them).
    unsynced: Option<HashSet<String>>,
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
        Ok(Self {
            conversations: store(CONVERSATIONS)?,
            messages: store(MESSAGES)?,
            tombstones: store(TOMBSTONES)?,
            totals: store(TOTALS)?,
            meta: store(META)?,
            marks: store(MARKS)?,
            tx,
            stash: HashMap::new(),
            last_seq: None,
            seq_changed: false,
            unsynced: None,
            checkpoint: None,
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
        let v = self
            .get(self.record_store(kind), &hex_id(id.as_bytes()).into())
            .await?;
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

    /// The store of a kind's live records.
    fn record_store(&self, kind: EntityKind) -> &IdbObjectStore {
        match kind {
            EntityKind::Conversation => &self.conversations,
            EntityKind::Message => &self.messages,
        }
    }

    /// The next outbox sequence number (the counter is read once per
    /// transaction, at the first number it issues).
    async fn next_seq(&mut self) -> Result<f64> {
        let last = match self.last_seq {
            Some(last) => last,
            None => codec::last_seq(&self.get(&self.meta, &SEQ_KEY.into()).await?)?,
        };
        let seq = last + 1.0;
        self.last_seq = Some(seq);
        self.seq_changed = true;
        Ok(seq)
    }

    /// The outbox entry the record `id` (hex) is written with: `carried`
    /// is the entry of what the write replaces, if the caller read it. The
    /// write takes any change waiting for the record.
    async fn resolve(
        &mut self,
        id: &str,
        mark: Mark,
        carried: Option<JsValue>,
    ) -> Result<Option<JsValue>> {
        let waiting = self.stash.remove(id).map(|s| s.entry);
        Ok(match mark {
            Mark::Carry => carried.or(waiting),
            Mark::Drop => None,
            Mark::Fresh(op) => Some(codec::fresh_entry(self.next_seq().await?, op)),
        })
    }

    /// Applies one window of ops, fusing each `Enqueue` with the write of
    /// its record next to it and grouping runs of outbox ops (see the
    /// module docs).
    async fn apply_window(&mut self, window: Vec<WriteOp>) -> Result<()> {
        let mut ops: VecDeque<WriteOp> = window.into();
        while let Some(op) = ops.pop_front() {
            if !matches!(op, WriteOp::ForgetUnlessPending(_)) {
                self.unsynced = None;
            }
            match op {
                WriteOp::Enqueue(item) if ops.front().is_some_and(|w| writes(w, &item)) => {
                    if let Some(write) = ops.pop_front() {
                        self.write_record(write, Mark::Fresh(item.op_id)).await?;
                    }
                }
                op if record_of(&op).is_some() => {
                    let fused = match ops.front() {
                        Some(WriteOp::Enqueue(item)) if writes(&op, item) => Some(item.op_id),
                        _ => None,
                    };
                    let mark = match fused {
                        Some(op_id) => {
                            ops.pop_front();
                            Mark::Fresh(op_id)
                        }
                        None => Mark::Carry,
                    };
                    self.write_record(op, mark).await?;
                }
                op if is_outbox_op(&op) => {
                    let mut run = vec![op];
                    while let Some(next) = ops.front() {
                        let fuses = matches!(next, WriteOp::Enqueue(item)
                            if ops.get(1).is_some_and(|w| writes(w, item)));
                        if !is_outbox_op(next) || fuses {
                            break;
                        }
                        run.extend(ops.pop_front());
                    }
                    self.apply_outbox_run(run).await?;
                }
                WriteOp::RestoreOutbox(first) => {
                    let mut run = vec![first];
                    while let Some(WriteOp::RestoreOutbox(_)) = ops.front() {
                        if let Some(WriteOp::RestoreOutbox(entry)) = ops.pop_front() {
                            run.push(entry);
                        }
                    }
                    self.restore_run(run).await?;
                }
                op => self.apply(op).await?,
            }
        }
        Ok(())
    }

    /// Applies a run of `Enqueue`, `Dequeue` and `Unpark` ops: every record
    /// they touch is looked up at once (all requests issued before the
    /// first is awaited), and each record whose entry changed is put once.
    async fn apply_outbox_run(&mut self, run: Vec<WriteOp>) -> Result<()> {
        // The kinds to look a record up as: an `Enqueue` names its kind, a
        // `Dequeue` or `Unpark` does not.
        let mut wanted: HashMap<RecordId, [bool; 2]> = HashMap::new();
        for op in &run {
            let (id, kind) = match op {
                WriteOp::Enqueue(item) => (item.entity_id, Some(item.kind)),
                WriteOp::Dequeue(id) | WriteOp::Unpark(id) => (*id, None),
                _ => continue,
            };
            let kinds = wanted.entry(id).or_default();
            match kind {
                Some(EntityKind::Conversation) => kinds[0] = true,
                Some(EntityKind::Message) => kinds[1] = true,
                None => *kinds = [true, true],
            }
        }
        let mut lookups = Vec::new();
        for (id, kinds) in &wanted {
            let hex: JsValue = hex_id(id.as_bytes()).into();
            for (kind, wanted) in [EntityKind::Conversation, EntityKind::Message]
                .into_iter()
                .zip(kinds)
            {
                if *wanted {
                    let store = self.record_store(kind).clone();
                    let live = store.get(&hex).map_err(|e| self.js(e))?;
                    let tombstone = self
                        .tombstones
                        .get(&tombstone_key(kind, *id))
                        .map_err(|e| self.js(e))?;
                    lookups.push((*id, kind, store, live, tombstone));
                }
            }
        }
        // Requests complete in order: once the last is done, all are.
        if let Some((.., last)) = lookups.last() {
            wait(last).await.map_err(|e| self.failed(e))?;
        }
        let mut found: HashMap<RecordId, Found> = HashMap::new();
        for (id, kind, store, live, tombstone) in lookups {
            if found.contains_key(&id) {
                continue;
            }
            let live = wait(&live).await.map_err(|e| self.failed(e))?;
            let (value, store) = if live.is_undefined() {
                let t = wait(&tombstone).await.map_err(|e| self.failed(e))?;
                (t, self.tombstones.clone())
            } else {
                (live, store)
            };
            if !value.is_undefined() {
                found.insert(
                    id,
                    Found {
                        value,
                        kind,
                        store,
                        changed: false,
                    },
                );
            }
        }

        for op in run {
            match op {
                WriteOp::Enqueue(item) => self.enqueue(item, &mut found).await?,
                WriteOp::Dequeue(id) => {
                    if let Some(f) = found.get_mut(&id) {
                        if codec::entry(&f.value)?.is_some() {
                            codec::set_entry(&f.value, None);
                            f.changed = true;
                        }
                    }
                    self.stash.remove(&hex_id(id.as_bytes()));
                }
                WriteOp::Unpark(id) => {
                    let (entry, f) = match found.get_mut(&id) {
                        Some(f) => (codec::entry(&f.value)?, Some(f)),
                        None => {
                            let waiting = self.stash.get(&hex_id(id.as_bytes()));
                            (waiting.map(|s| s.entry.clone()), None)
                        }
                    };
                    if let Some(entry) = entry {
                        if codec::is_parked(&entry)? {
                            codec::unpark(&entry);
                            if let Some(f) = f {
                                f.changed = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for f in found.into_values().filter(|f| f.changed) {
            self.put(&f.store, &f.value).await?;
        }
        Ok(())
    }

    /// [`WriteOp::Enqueue`] in a run: the looked-up record gets a new
    /// pending change; one the store does not hold waits for its write.
    async fn enqueue(
        &mut self,
        item: OutboxItem,
        found: &mut HashMap<RecordId, Found>,
    ) -> Result<()> {
        let entry = codec::fresh_entry(self.next_seq().await?, item.op_id);
        let id = hex_id(item.entity_id.as_bytes());
        match found
            .get_mut(&item.entity_id)
            .filter(|f| f.kind == item.kind)
        {
            Some(f) => {
                codec::set_entry(&f.value, Some(&entry));
                f.changed = true;
                self.stash.remove(&id);
            }
            None => {
                let conversation = item.conversation_id.map(|c| hex_id(c.as_bytes()));
                self.stash.insert(
                    id,
                    Stashed {
                        entry,
                        conversation,
                    },
                );
            }
        }
        Ok(())
    }

    /// A run of [`WriteOp::RestoreOutbox`] ops: each record (live, else
    /// its tombstone) takes its entry as given, and the sequence counter is
    /// raised to at least the highest number. Every lookup of the run — the
    /// record, its tombstone, and who holds the number now (the `outbox`
    /// index of every record store, pending and parked) — is issued before
    /// the first is awaited: one round trip for the run, not one per entry
    /// (a migration restores thousands). A record the store does not hold
    /// gets nothing; a number another record's entry holds fails the batch.
    async fn restore_run(&mut self, run: Vec<StoredOutboxEntry>) -> Result<()> {
        struct Lookup {
            live: IdbRequest,
            tombstone: IdbRequest,
            holders: Vec<IdbRequest>,
        }
        // The counter is at or above every number an entry holds (numbers
        // are issued from it, and restoring raises it), so only a number
        // at or below it can be another record's: a migration into an
        // empty store looks up no holder at all.
        let counter = match self.last_seq {
            Some(last) => last,
            None => codec::last_seq(&self.get(&self.meta, &SEQ_KEY.into()).await?)?,
        };
        let mut lookups = Vec::with_capacity(run.len());
        for entry in &run {
            let item = entry.item;
            let number = JsValue::from_f64(entry.seq as f64);
            let mut holders = Vec::new();
            if entry.seq as f64 <= counter {
                for store in [&self.conversations, &self.messages, &self.tombstones] {
                    let index = store.index(OUTBOX_INDEX).map_err(|e| self.js(e))?;
                    for parked in [0.0, 1.0] {
                        let k = key(&[JsValue::from_f64(parked), number.clone()]);
                        holders.push(index.get(&k).map_err(|e| self.js(e))?);
                    }
                }
            }
            let live = self
                .record_store(item.kind)
                .get(&hex_id(item.entity_id.as_bytes()).into())
                .map_err(|e| self.js(e))?;
            let tombstone = self
                .tombstones
                .get(&tombstone_key(item.kind, item.entity_id))
                .map_err(|e| self.js(e))?;
            lookups.push(Lookup {
                live,
                tombstone,
                holders,
            });
        }
        // Requests complete in order: once the last is done, all are.
        if let Some(last) = lookups.last() {
            wait(&last.tombstone).await.map_err(|e| self.failed(e))?;
        }
        let mut last_seq = counter;
        for (entry, lookup) in run.iter().zip(lookups) {
            let own = hex_id(entry.item.entity_id.as_bytes());
            for request in &lookup.holders {
                let holder = wait(request).await.map_err(|e| self.failed(e))?;
                if !holder.is_undefined() && codec::get_str(&holder, "id")? != own {
                    return Err(StoreError::InvalidRequest(format!(
                        "outbox sequence number {} is another record's entry",
                        entry.seq
                    )));
                }
            }
            let live = wait(&lookup.live).await.map_err(|e| self.failed(e))?;
            let (value, store) = if live.is_undefined() {
                let t = wait(&lookup.tombstone).await.map_err(|e| self.failed(e))?;
                (t, self.tombstones.clone())
            } else {
                (live, self.record_store(entry.item.kind).clone())
            };
            if value.is_undefined() {
                continue;
            }
            codec::set_entry(&value, Some(&codec::restored_entry(entry)));
            self.put(&store, &value).await?;
            last_seq = last_seq.max(entry.seq as f64);
        }
        self.last_seq = Some(last_seq);
        self.seq_changed = true;
        Ok(())
    }

    /// [`WriteOp::Park`]: the record whose entry has this sequence number,
    /// looked up in the `outbox` index of every record store at once.
    async fn park(&mut self, seq: u64, reason: &ParkReason) -> Result<()> {
        let number = JsValue::from_f64(seq as f64);
        let mut lookups = Vec::new();
        for store in [&self.conversations, &self.messages, &self.tombstones] {
            let index = store.index(OUTBOX_INDEX).map_err(|e| self.js(e))?;
            for parked in [0.0, 1.0] {
                let k = key(&[JsValue::from_f64(parked), number.clone()]);
                lookups.push((store.clone(), index.get(&k).map_err(|e| self.js(e))?));
            }
        }
        if let Some((_, last)) = lookups.last() {
            wait(last).await.map_err(|e| self.failed(e))?;
        }
        for (store, request) in lookups {
            let record = wait(&request).await.map_err(|e| self.failed(e))?;
            if let Some(entry) = codec::entry(&record)? {
                codec::park(&entry, reason)?;
                return self.put(&store, &record).await;
            }
        }
        // A change waiting for its record's write (its number is one only
        // this transaction has seen, but the rule is the same).
        for waiting in self.stash.values() {
            if codec::entry_seq(&waiting.entry)? == seq {
                codec::park(&waiting.entry, reason)?;
                break;
            }
        }
        Ok(())
    }

    /// Whether [`WriteOp::ForgetUnlessPending`] may delete: the record is
    /// stored at the tombstone's version and has no pending or parked
    /// change (for a conversation, none of its messages has one either).
    async fn forgettable(&mut self, t: &Tombstone) -> Result<bool> {
        let id = hex_id(t.id.as_bytes());
        let stored = self
            .get(self.record_store(t.kind), &id.clone().into())
            .await?;
        if stored.is_undefined()
            || codec::version(&stored)? != t.version
            || codec::entry(&stored)?.is_some()
        {
            return Ok(false);
        }
        if t.kind == EntityKind::Conversation {
            if self.unsynced.is_none() {
                let mut unsynced =
                    read::unsynced_conversations(&[&self.messages, &self.tombstones]).await?;
                unsynced.extend(self.stash.values().filter_map(|s| s.conversation.clone()));
                self.unsynced = Some(unsynced);
            }
            return Ok(!self.unsynced.as_ref().is_some_and(|u| u.contains(&id)));
        }
        Ok(true)
    }

    /// Applies a write of a record (a put, an insert or a deletion), doing
    /// `mark` with its outbox entry; any other op as [`Writer::apply`].
    async fn write_record(&mut self, op: WriteOp, mark: Mark) -> Result<()> {
        match op {
            WriteOp::PutConversation(r) => self.put_conversation(r, mark).await,
            WriteOp::PutMessage(m) => self.put_message(m, false, mark).await,
            WriteOp::InsertMessage(m) => self.put_message(m, true, mark).await,
            WriteOp::Delete(t) => self.delete_record(t, mark).await,
            other => Box::pin(self.apply(other)).await,
        }
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
    /// stamped at or below `through` and their tombstones — their outbox
    /// entries go with them — and takes them off the totals.
    async fn cover_messages(&mut self, conversation: ConversationId, through: Hlc) -> Result<()> {
        let conv: JsValue = hex_id(conversation.as_bytes()).into();
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
                        self.delete(store, &id.into()).await?;
                    } else {
                        let k = key(&[codec::get_str(v, "kind")?.into(), id.into()]);
                        self.delete(store, &k).await?;
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
    /// the caller then deletes or replaces it. Returns what was stored
    /// (`undefined`: nothing).
    async fn uncount_message(&mut self, id: &JsValue) -> Result<JsValue> {
        let old = self.get(&self.messages, id).await?;
        if !old.is_undefined() {
            let conversation = codec::get_conversation_id(&old, "conv")?;
            let len = codec::body_len(&old)? as i64;
            self.count_message(conversation, -1, -len);
        }
        Ok(old)
    }

    async fn put_conversation(&mut self, r: ConversationRecord, mark: Mark) -> Result<()> {
        let hex = hex_id(r.id.as_bytes());
        let id: JsValue = hex.clone().into();
        // The tombstone goes; its deletion stays in the mark.
        let tombstone_at = tombstone_key(EntityKind::Conversation, r.id.into());
        let tombstone = self.get(&self.tombstones, &tombstone_at).await?;
        if let Some(deleted) = codec::found(&tombstone, codec::tombstone)? {
            self.raise_mark(r.id, deleted.version).await?;
        }
        let tombstones = self.tombstones.clone();
        self.delete(&tombstones, &tombstone_at).await?;
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
        let carried = codec::entry(&old)?.or(codec::entry(&tombstone)?);
        let entry = self.resolve(&hex, mark, carried).await?;
        let value: JsValue = codec::conversation_value(&ConversationRow {
            record: r,
            activity_at,
        })
        .into();
        codec::set_entry(&value, entry.as_ref());
        let store = self.conversations.clone();
        self.put(&store, &value).await
    }

    async fn put_message(&mut self, m: MessageRecord, insert: bool, mark: Mark) -> Result<()> {
        let hex = hex_id(m.id.as_bytes());
        let value: JsValue = codec::message_value(&m).into();
        let (messages, tombstones) = (self.messages.clone(), self.tombstones.clone());
        if insert {
            let entry = self.resolve(&hex, mark, None).await?;
            codec::set_entry(&value, entry.as_ref());
            // `add` fails with a ConstraintError if the id exists, which
            // aborts the transaction: the batch fails as the contract says.
            self.issued(messages.add(&value)).await?;
        } else {
            let old = self.uncount_message(&hex.clone().into()).await?;
            let tombstone_at = tombstone_key(EntityKind::Message, m.id.into());
            let mut carried = codec::entry(&old)?;
            if old.is_undefined() && matches!(mark, Mark::Carry) {
                carried = codec::entry(&self.get(&tombstones, &tombstone_at).await?)?;
            }
            self.delete(&tombstones, &tombstone_at).await?;
            let entry = self.resolve(&hex, mark, carried).await?;
            codec::set_entry(&value, entry.as_ref());
            self.put(&messages, &value).await?;
        }
        self.count_message(m.conversation_id, 1, m.body.len() as i64);
        self.bump(m.conversation_id, m.updated_at);
        Ok(())
    }

    /// Deletes a record and keeps its tombstone, which takes over the
    /// record's outbox entry as `mark` says.
    async fn delete_record(&mut self, t: Tombstone, mark: Mark) -> Result<()> {
        let hex = hex_id(t.id.as_bytes());
        let id: JsValue = hex.clone().into();
        let old = match t.kind {
            EntityKind::Conversation => {
                let old = self.get(&self.conversations, &id).await?;
                if !old.is_undefined() {
                    self.bytes -= codec::body_len(&old)? as i64;
                }
                let store = self.conversations.clone();
                self.delete(&store, &id).await?;
                self.cover_messages(t.id.conversation(), t.version).await?;
                old
            }
            EntityKind::Message => {
                let old = self.uncount_message(&id).await?;
                let store = self.messages.clone();
                self.delete(&store, &id).await?;
                old
            }
        };
        let mut carried = codec::entry(&old)?;
        if old.is_undefined() && matches!(mark, Mark::Carry) {
            // A tombstone replaced by a newer one keeps its change.
            let replaced = self
                .get(&self.tombstones, &tombstone_key(t.kind, t.id))
                .await?;
            carried = codec::entry(&replaced)?;
        }
        let entry = self.resolve(&hex, mark, carried).await?;
        let value: JsValue = codec::tombstone_value(&t).into();
        codec::set_entry(&value, entry.as_ref());
        let store = self.tombstones.clone();
        self.put(&store, &value).await
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
                    // The remote version supersedes the local change.
                    Box::pin(self.write_record(merged_op(incoming), Mark::Drop)).await?;
                    self.outcome.merged += 1;
                } else {
                    self.outcome.superseded += 1;
                }
            }
            WriteOp::MergeAndEnqueue(incoming, op_id) => {
                if self.wins(&incoming, import_wins).await? {
                    Box::pin(self.write_record(merged_op(incoming), Mark::Fresh(op_id))).await?;
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
            op @ (WriteOp::PutConversation(_)
            | WriteOp::PutMessage(_)
            | WriteOp::InsertMessage(_)
            | WriteOp::Delete(_)) => Box::pin(self.write_record(op, Mark::Carry)).await?,
            WriteOp::CoverMessages(id, through) => {
                self.raise_mark(id, through).await?;
                self.cover_messages(id, through).await?;
            }
            op @ (WriteOp::Enqueue(_) | WriteOp::Dequeue(_) | WriteOp::Unpark(_)) => {
                self.apply_outbox_run(vec![op]).await?;
            }
            WriteOp::Park(seq, reason) => self.park(seq, &reason).await?,
            WriteOp::RestoreOutbox(entry) => self.restore_run(vec![entry]).await?,
            WriteOp::ForgetUnlessPending(t) => {
                if self.forgettable(&t).await? {
                    // A forgotten conversation takes all its messages
                    // along: nothing of it is unsynced.
                    let conversation =
                        (t.kind == EntityKind::Conversation).then(|| t.id.conversation());
                    self.delete_record(t, Mark::Carry).await?;
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

    /// Writes the folded activity bumps and totals and the outbox's
    /// sequence counter, and refuses the whole write if it grew the store
    /// past `max_bytes`.
    async fn flush(&mut self, max_bytes: Option<u64>) -> Result<()> {
        if let (true, Some(last)) = (self.seq_changed, self.last_seq) {
            let meta = self.meta.clone();
            let value = codec::last_seq_value(last);
            self.issued(meta.put_with_key(&value, &SEQ_KEY.into()))
                .await?;
        }
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

/// The record a write op writes, if it writes one.
fn record_of(op: &WriteOp) -> Option<(EntityKind, RecordId)> {
    match op {
        WriteOp::PutConversation(r) => Some((EntityKind::Conversation, r.id.into())),
        WriteOp::PutMessage(m) | WriteOp::InsertMessage(m) => {
            Some((EntityKind::Message, m.id.into()))
        }
        WriteOp::Delete(t) => Some((t.kind, t.id)),
        _ => None,
    }
}

/// Whether `op` writes the record `item` queues.
fn writes(op: &WriteOp, item: &OutboxItem) -> bool {
    record_of(op) == Some((item.kind, item.entity_id))
}

/// Whether `op` only changes a record's outbox entry, found by its id.
fn is_outbox_op(op: &WriteOp) -> bool {
    matches!(
        op,
        WriteOp::Enqueue(_) | WriteOp::Dequeue(_) | WriteOp::Unpark(_)
    )
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

/// Removes delivered outbox entries, in one transaction: each record
/// whose entry has one of `seqs` loses it (a newer change of the record
/// has a newer number and stays). The entries are read as one `outbox`
/// index range per store and state, from the lowest number to the
/// highest — a page the outbox handed out, so little else lies between.
pub(crate) async fn acknowledge(db: &IdbDatabase, durability: &str, seqs: &[u64]) -> Result<()> {
    let (Some(low), Some(high)) = (seqs.iter().min(), seqs.iter().max()) else {
        return Ok(());
    };
    let doing = "acknowledging";
    let js = |e: JsValue| store_error(doing, DomError::from_js(&e));
    let tx = idb::readwrite(db, &RECORD_STORES, durability).map_err(|e| store_error(doing, e))?;
    let acknowledged = async {
        let wanted: HashSet<u64> = seqs.iter().copied().collect();
        let mut reads = Vec::new();
        for name in RECORD_STORES {
            let store = tx.object_store(name).map_err(js)?;
            let index = store.index(OUTBOX_INDEX).map_err(js)?;
            for parked in [0.0, 1.0] {
                let state = JsValue::from_f64(parked);
                let range = web_sys::IdbKeyRange::bound(
                    &key(&[state.clone(), JsValue::from_f64(*low as f64)]),
                    &key(&[state, JsValue::from_f64(*high as f64)]),
                )
                .map_err(js)?;
                reads.push((store.clone(), index.get_all_with_key(&range).map_err(js)?));
            }
        }
        for (store, request) in reads {
            let found: Array = wait(&request)
                .await
                .map_err(|e| store_error(doing, e))?
                .unchecked_into();
            for record in found.iter() {
                let Some(entry) = codec::entry(&record)? else {
                    continue;
                };
                if wanted.contains(&codec::entry_seq(&entry)?) {
                    codec::set_entry(&record, None);
                    store.put(&record).map_err(js)?;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = acknowledged {
        let _ = tx.abort();
        return Err(e);
    }
    idb::finish(&tx).await.map_err(|e| store_error(doing, e))
}

/// Deletes every record, tombstone, deletion mark (outbox entries go
/// with their records) and total; keeps `meta`, and with it the outbox's
/// sequence counter: numbers go on from where they were.
pub(crate) async fn clear(db: &IdbDatabase, durability: &str) -> Result<()> {
    let stores = [CONVERSATIONS, MESSAGES, TOMBSTONES, TOTALS, MARKS];
    issue_and_commit(db, &stores, durability, "clearing", |tx| {
        for name in stores {
            tx.object_store(name)?.clear()?;
        }
        Ok(())
    })
    .await
}
