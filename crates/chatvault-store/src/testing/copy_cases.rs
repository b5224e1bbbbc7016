//! Cases of the Store conformance suite on migration: the listings a copy
//! reads ([`Store::meta_entries`], [`Store::all_messages`],
//! [`Store::deletion_marks`], [`Store::outbox_entries`]), the verbatim
//! outbox write ([`WriteOp::RestoreOutbox`]) and [`copy_store`] itself —
//! exact (every listing of the copy equals the source's, the outbox down
//! to sequence numbers, parking and refusal counts), in batches, refusing
//! a non-empty target, and leaving a copy that failed midway marked
//! incomplete with its source untouched.

use super::*;
use crate::{
    copy_store, BatchSource, CopyOptions, CopyPhase, CopyProgress, DeletionMark, MetaEntry,
    OutboxEntry, ParkReason, ParkedEntry, StoredOutboxEntry, Usage, WriteOutcome,
    MIGRATION_MARK_KEY,
};
use async_trait::async_trait;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Everything a store holds, read through the contract only.
#[derive(Debug, PartialEq)]
struct Snapshot {
    conversations: Vec<ConversationRow>,
    messages: Vec<MessageRecord>,
    tombstones: Vec<Tombstone>,
    marks: Vec<DeletionMark>,
    entries: Vec<StoredOutboxEntry>,
    outbox: Vec<OutboxEntry>,
    parked: Vec<ParkedEntry>,
    meta: Vec<MetaEntry>,
    usage: Usage,
}

/// Reads everything, in small pages (the paging is under test too).
async fn snapshot(store: &dyn Store) -> TestResult<Snapshot> {
    const PAGE: usize = 3;
    let mut conversations = Vec::new();
    let mut query = ConversationQuery {
        limit: PAGE,
        ..ConversationQuery::default()
    };
    loop {
        let page = store.conversations(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = Some(ConversationCursor {
            updated_at: last.activity_at,
            id: last.record.id,
        });
        conversations.extend(page);
    }
    let mut messages: Vec<MessageRecord> = Vec::new();
    loop {
        let page = store
            .all_messages(messages.last().map(|m| m.id), PAGE)
            .await?;
        if page.is_empty() {
            break;
        }
        messages.extend(page);
    }
    let mut tombstones: Vec<Tombstone> = Vec::new();
    loop {
        let after = tombstones.last().map(|t| (t.kind, t.id));
        let page = store
            .tombstones(&TombstoneQuery { after, limit: PAGE })
            .await?;
        if page.is_empty() {
            break;
        }
        tombstones.extend(page);
    }
    let mut marks: Vec<DeletionMark> = Vec::new();
    loop {
        let after = marks.last().map(|m| m.conversation_id);
        let page = store.deletion_marks(after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        marks.extend(page);
    }
    let mut entries: Vec<StoredOutboxEntry> = Vec::new();
    loop {
        let page = store
            .outbox_entries(entries.last().map(|e| e.seq), PAGE)
            .await?;
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    let mut meta: Vec<MetaEntry> = Vec::new();
    loop {
        let after = meta.last().map(|e| e.key.clone());
        let page = store.meta_entries(after.as_deref(), PAGE).await?;
        if page.is_empty() {
            break;
        }
        meta.extend(page);
    }
    Ok(Snapshot {
        conversations,
        messages,
        tombstones,
        marks,
        entries,
        outbox: store.outbox(10_000).await?,
        parked: store.parked(None, 10_000).await?,
        meta,
        usage: store.usage().await?,
    })
}

/// The seq of the record's pending change.
async fn seq_of(store: &dyn Store, entity: RecordId) -> TestResult<u64> {
    pending(store)
        .await?
        .into_iter()
        .find(|p| p.1 == entity)
        .map(|p| p.0)
        .ok_or_else(|| format!("no pending change of {entity}").into())
}

fn refusal(code: &str, t: u64) -> ParkReason {
    ParkReason {
        code: code.into(),
        message: format!("refused: {code}"),
        at: at(t),
    }
}

/// A vault's worth of everything a store keeps: 12 conversations with
/// their messages, pending changes (records and tombstones), parked ones
/// (refused once, twice, and refused then retried), deleted messages and
/// conversations, a message outliving its conversation's deletion, kept
/// deletion marks, metadata with the clock mark and binary values.
async fn fill(store: &dyn Store) -> TestResult {
    for c in 1..=12u8 {
        let mut ops = vec![
            WriteOp::PutConversation(conversation(c, 10 + u64::from(c), 5 + usize::from(c))?),
            enqueue_conversation(c, c),
        ];
        for j in 0..6u8 {
            let m = c * 10 + j;
            ops.push(WriteOp::PutMessage(message(m, c, 20 + u64::from(m), 9)?));
            if j % 2 == 0 {
                ops.push(enqueue_message(m, c, 100 + m));
            }
        }
        store.write(batch(ops)).await?;
    }
    store
        .write(batch([
            WriteOp::Delete(message_tombstone(11, 1, 200)?),
            enqueue_message(11, 1, 240),
            WriteOp::Delete(message_tombstone(21, 2, 201)?),
            // Activity a deleted message left: derived, yet copied.
            WriteOp::PutMessage(message(251, 3, 450, 4)?),
            WriteOp::Delete(message_tombstone(251, 3, 460)?),
            // Conversation 12 deleted (its messages go), then a message
            // stamped after the deletion arrives and stays.
            WriteOp::Delete(conversation_tombstone(12, 300)?),
            enqueue_conversation(12, 241),
            WriteOp::PutMessage(message(250, 12, 400, 4)?),
            // A kept mark without a tombstone, and one a recreation left.
            WriteOp::CoverMessages(conv_id(11), hlc(45)?),
            WriteOp::Delete(conversation_tombstone(10, 310)?),
            WriteOp::PutConversation(conversation(10, 320, 6)?),
            WriteOp::SetMeta("vault.header".into(), b"{\"format\":1}".to_vec()),
            WriteOp::SetMeta("sync.cursor".into(), vec![0, 255, 7]),
            WriteOp::ClaimStamps(crate::StampClaim {
                from: hlc(1)?,
                through: hlc(500)?,
                rebases: None,
            }),
        ]))
        .await?;
    let three = seq_of(store, conv_id(3).into()).await?;
    let four = seq_of(store, conv_id(4).into()).await?;
    let five = seq_of(store, conv_id(5).into()).await?;
    store
        .write(batch([
            WriteOp::Park(three, refusal("payload_too_large", 501)),
            WriteOp::Park(four, refusal("forbidden", 502)),
            WriteOp::Park(five, refusal("invalid", 503)),
        ]))
        .await?;
    store
        .write(batch([
            WriteOp::Unpark(conv_id(4).into()),
            WriteOp::Unpark(conv_id(5).into()),
        ]))
        .await?;
    store
        .write(batch([WriteOp::Park(four, refusal("forbidden", 504))]))
        .await?;
    Ok(())
}

/// A store that fails every write after the first `writes` (a copy that
/// stops midway: a crash, a full disk).
struct FailAfter {
    inner: Arc<dyn Store>,
    writes: AtomicUsize,
}

#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
impl Store for FailAfter {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRow>> {
        self.inner.conversation(id).await
    }
    async fn conversations(&self, query: &ConversationQuery) -> Result<Vec<ConversationRow>> {
        self.inner.conversations(query).await
    }
    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>> {
        self.inner.message(id).await
    }
    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageRecord>> {
        self.inner.messages(query).await
    }
    async fn tombstone(&self, kind: EntityKind, id: RecordId) -> Result<Option<Tombstone>> {
        self.inner.tombstone(kind, id).await
    }
    async fn deletion_mark(&self, id: ConversationId) -> Result<Option<Hlc>> {
        self.inner.deletion_mark(id).await
    }
    async fn tombstones(&self, query: &TombstoneQuery) -> Result<Vec<Tombstone>> {
        self.inner.tombstones(query).await
    }
    async fn usage(&self) -> Result<Usage> {
        self.inner.usage().await
    }
    async fn write(&self, batch: WriteBatch) -> Result<WriteOutcome> {
        let left = self.writes.load(Ordering::SeqCst);
        if left == 0 {
            return Err(StoreError::Unavailable {
                detail: "injected failure".into(),
                source: None,
            });
        }
        self.writes.store(left - 1, Ordering::SeqCst);
        self.inner.write(batch).await
    }
    async fn write_all(&self, source: BatchSource) -> Result<WriteOutcome> {
        self.inner.write_all(source).await
    }
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.inner.outbox(limit).await
    }
    async fn parked(&self, after: Option<u64>, limit: usize) -> Result<Vec<ParkedEntry>> {
        self.inner.parked(after, limit).await
    }
    async fn acknowledge(&self, seqs: &[u64]) -> Result<()> {
        self.inner.acknowledge(seqs).await
    }
    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.meta(key).await
    }
    async fn meta_entries(&self, after: Option<&str>, limit: usize) -> Result<Vec<MetaEntry>> {
        self.inner.meta_entries(after, limit).await
    }
    async fn all_messages(
        &self,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        self.inner.all_messages(after, limit).await
    }
    async fn deletion_marks(
        &self,
        after: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<DeletionMark>> {
        self.inner.deletion_marks(after, limit).await
    }
    async fn outbox_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOutboxEntry>> {
        self.inner.outbox_entries(after, limit).await
    }
    async fn clear(&self) -> Result<()> {
        self.inner.clear().await
    }
}

/// Fresh, separate storage for a copy's target.
async fn target(b: &impl StoreBackend) -> TestResult<Arc<dyn Store>> {
    Ok(b.open_with_quota(1 << 30).await?)
}

conformance_cases! {($) StoreBackend, __store_copy_conformance_cases,

/// The migration listings list everything, in their orders, paged; the
/// outbox entries show pending and parked changes as kept (parking,
/// refusal counts, op ids), and a backend's own counters are no metadata.
async fn migration_listings_show_everything_as_kept(b) {
    let store = b.open().await?;
    fill(&*store).await?;
    let s = snapshot(&*store).await?;
    assert_eq!(s.messages.len() as u64, s.usage.messages);
    assert!(s.messages.windows(2).all(|w| w[0].id < w[1].id), "id order");
    assert!(
        s.messages.iter().any(|m| m.id == msg_id(250)),
        "a message outliving its conversation is listed"
    );
    assert_eq!(
        s.marks,
        vec![
            DeletionMark { conversation_id: conv_id(10), version: hlc(310)? },
            DeletionMark { conversation_id: conv_id(11), version: hlc(45)? },
        ],
        "kept marks only (conversation 12's tombstone is not one)"
    );
    assert_eq!(
        s.entries.len() as u64,
        s.usage.pending_changes + s.usage.parked_changes
    );
    assert!(s.entries.windows(2).all(|w| w[0].seq < w[1].seq), "seq order");
    let entry = |c: u8| {
        s.entries
            .iter()
            .find(|e| e.item.entity_id == RecordId::from(conv_id(c)))
            .cloned()
            .ok_or(format!("no entry of conversation {c}"))
    };
    let three = entry(3)?;
    assert_eq!(three.parked, Some(refusal("payload_too_large", 501)));
    assert_eq!((three.attempts, three.item.op_id), (1, op_id(3)));
    let four = entry(4)?;
    assert_eq!((four.parked, four.attempts), (Some(refusal("forbidden", 504)), 2));
    let five = entry(5)?;
    assert_eq!((five.parked, five.attempts), (None, 1), "retried: pending, count kept");
    let keys: Vec<&str> = s.meta.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec!["sync.cursor", CLOCK_MARK_KEY, "vault.header"]);
    assert_eq!(s.meta[0].value, vec![0, 255, 7]);
    let after = store.meta_entries(Some("sync.cursor"), 1).await?;
    assert_eq!(after.first().map(|e| e.key.as_str()), Some(CLOCK_MARK_KEY));
    expect_err(
        store.outbox_entries(None, 0).await,
        |e| matches!(e, StoreError::InvalidRequest(_)),
        "a page size of 0 refused",
    )?;
    Ok(())
}

/// A restored outbox entry keeps its number, op id, parking and count;
/// changes queued later get numbers above it; one for a record the store
/// does not hold is not queued.
async fn restore_outbox_is_verbatim(b) {
    let store = b.open().await?;
    let kept = StoredOutboxEntry {
        seq: 90,
        item: match enqueue_conversation(1, 7) {
            WriteOp::Enqueue(item) => item,
            _ => return Err("not an enqueue".into()),
        },
        parked: Some(refusal("forbidden", 5)),
        attempts: 3,
    };
    let pending_one = StoredOutboxEntry {
        seq: 40,
        item: match enqueue_message(1, 1, 8) {
            WriteOp::Enqueue(item) => item,
            _ => return Err("not an enqueue".into()),
        },
        parked: None,
        attempts: 2,
    };
    let orphan = StoredOutboxEntry {
        seq: 95,
        item: match enqueue_conversation(9, 9) {
            WriteOp::Enqueue(item) => item,
            _ => return Err("not an enqueue".into()),
        },
        parked: None,
        attempts: 0,
    };
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 11, 3)?),
            WriteOp::RestoreOutbox(kept.clone()),
            WriteOp::RestoreOutbox(pending_one.clone()),
            WriteOp::RestoreOutbox(orphan),
        ]))
        .await?;
    assert_eq!(store.outbox_entries(None, 10).await?, vec![pending_one, kept]);
    assert_eq!(pending(&*store).await?, vec![(40, msg_id(1).into(), op_id(8))]);
    let parked = store.parked(None, 10).await?;
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].seq, parked[0].attempts), (90, 3));
    store
        .write(batch([
            WriteOp::PutConversation(conversation(2, 20, 3)?),
            enqueue_conversation(2, 10),
        ]))
        .await?;
    let next = seq_of(&*store, conv_id(2).into()).await?;
    assert!(next > 90, "a later change is numbered above the restored ones: {next}");
    // Unparking the restored entry works as for any parked change.
    store.write(batch([WriteOp::Unpark(conv_id(1).into())])).await?;
    let usage = store.usage().await?;
    assert_eq!((usage.pending_changes, usage.parked_changes), (3, 0));
    Ok(())
}

/// A restored entry may replace its own record's entry, never take
/// another record's number (that record's change would be lost).
async fn restore_outbox_refuses_another_records_number(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            enqueue_conversation(1, 1),
            WriteOp::PutConversation(conversation(2, 11, 3)?),
        ]))
        .await?;
    let seq = seq_of(&*store, conv_id(1).into()).await?;
    let item = |c: u8, op: u8| match enqueue_conversation(c, op) {
        WriteOp::Enqueue(item) => Ok(item),
        _ => Err("not an enqueue"),
    };
    let before = store.outbox_entries(None, 10).await?;
    let stolen = StoredOutboxEntry { seq, item: item(2, 2)?, parked: None, attempts: 0 };
    expect_err(
        store.write(batch([WriteOp::RestoreOutbox(stolen)])).await,
        |e| matches!(e, StoreError::InvalidRequest(m) if m.contains("another record")),
        "another record's number refused",
    )?;
    assert_eq!(store.outbox_entries(None, 10).await?, before, "nothing changed");
    let own = StoredOutboxEntry {
        seq,
        item: item(1, 3)?,
        parked: Some(refusal("forbidden", 20)),
        attempts: 1,
    };
    store.write(batch([WriteOp::RestoreOutbox(own.clone())])).await?;
    assert_eq!(store.outbox_entries(None, 10).await?, vec![own]);
    Ok(())
}

/// A copy equals its source in every listing — the outbox entry by entry
/// — is written in many batches, reports verified counts and progress,
/// and leaves no marker; the source is unchanged.
async fn copy_store_is_exact_in_batches(b) {
    let source = b.open().await?;
    fill(&*source).await?;
    let before = snapshot(&*source).await?;
    let to = target(b).await?;
    let seen: Mutex<Vec<CopyProgress>> = Mutex::new(Vec::new());
    let sink = |p: CopyProgress| {
        if let Ok(mut seen) = seen.lock() {
            seen.push(p);
        }
    };
    let report = copy_store(
        &*source,
        &*to,
        CopyOptions { batch_rows: 7, progress: Some(&sink) },
    )
    .await?;
    let copy = snapshot(&*to).await?;
    assert_eq!(copy, before, "the copy equals its source");
    assert_eq!(snapshot(&*source).await?, before, "the source is unchanged");
    assert_eq!(to.meta(MIGRATION_MARK_KEY).await?, None, "no marker left");
    assert_eq!(report.conversations, before.usage.conversations);
    assert_eq!(report.messages, before.usage.messages);
    assert_eq!(report.tombstones, before.usage.tombstones);
    assert_eq!(report.pending_changes, before.usage.pending_changes);
    assert_eq!(report.parked_changes, before.usage.parked_changes);
    assert_eq!((report.deletion_marks, report.meta_entries), (2, 3));
    assert_eq!(report.bytes, before.usage.bytes);
    assert!(!report.restarted);
    let rows = before.usage.messages + before.usage.conversations;
    assert!(report.batches > rows / 7, "streamed in batches of 7: {report:?}");
    let seen = seen.lock().map_err(|_| "progress lock")?.clone();
    assert_eq!(seen.len() as u64, report.batches + 1, "one report per batch, and verifying");
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "progress only grows");
    assert_eq!(seen.last().map(|p| p.phase), Some(CopyPhase::Verifying));
    // Sync after the move: the same changes, then new ones numbered above.
    let highest = before.entries.iter().map(|e| e.seq).max().unwrap_or(0);
    to.write(batch([
        WriteOp::PutConversation(conversation(1, 900, 3)?),
        enqueue_conversation(1, 200),
    ]))
    .await?;
    assert!(seq_of(&*to, conv_id(1).into()).await? > highest);
    Ok(())
}

/// A target that holds anything is refused, and nothing is written to it.
async fn copy_store_refuses_a_non_empty_target(b) {
    let source = b.open().await?;
    fill(&*source).await?;
    let to = target(b).await?;
    to.write(batch([WriteOp::PutConversation(conversation(99, 10, 3)?)]))
        .await?;
    let held = snapshot(&*to).await?;
    expect_err(
        copy_store(&*source, &*to, CopyOptions::default()).await,
        |e| matches!(e, StoreError::NotEmpty(d) if d.contains("1 conversations")),
        "a target with a conversation refused",
    )?;
    assert_eq!(snapshot(&*to).await?, held, "the target is unchanged");
    to.clear().await?;
    to.write(batch([WriteOp::SetMeta("vault.header".into(), b"x".to_vec())]))
        .await?;
    let held = snapshot(&*to).await?;
    let refused = copy_store(&*source, &*to, CopyOptions::default()).await;
    expect_err(
        refused,
        |e| matches!(e, StoreError::NotEmpty(d) if d.contains("vault.header")),
        "a target with metadata (another vault's header) refused",
    )?;
    assert_eq!(snapshot(&*to).await?, held, "the target is unchanged");
    Ok(())
}

/// A copy that fails midway leaves the target marked incomplete (it is
/// refused as a copy's source) and the source untouched; copying again
/// clears it and completes.
async fn a_copy_failing_midway_is_marked_and_restarts(b) {
    let source = b.open().await?;
    fill(&*source).await?;
    let before = snapshot(&*source).await?;
    let to = target(b).await?;
    let failing = FailAfter { inner: Arc::clone(&to), writes: AtomicUsize::new(6) };
    let failed = copy_store(&*source, &failing, CopyOptions { batch_rows: 5, progress: None }).await;
    expect_err(failed, |e| matches!(e, StoreError::Unavailable { .. }), "the injected failure")?;
    assert!(to.meta(MIGRATION_MARK_KEY).await?.is_some(), "marked incomplete");
    assert!(to.usage().await?.conversations + to.usage().await?.tombstones > 0, "partly written");
    assert_eq!(snapshot(&*source).await?, before, "the source is untouched");
    expect_err(
        copy_store(&*to, &*source, CopyOptions::default()).await,
        |e| matches!(e, StoreError::IncompleteMigration),
        "an incomplete copy is no source",
    )?;
    let report = copy_store(&*source, &*to, CopyOptions { batch_rows: 5, progress: None }).await?;
    assert!(report.restarted, "{report:?}");
    assert_eq!(snapshot(&*to).await?, before, "the restarted copy is exact");
    assert_eq!(to.meta(MIGRATION_MARK_KEY).await?, None);
    Ok(())
}

}
