//! A vault's store copied into another store, exactly: the migration
//! between two backends (IndexedDB and SQLite on OPFS in a browser, SQLite
//! and memory natively).
//!
//! It lives here, beside the [`Store`] trait, because it needs nothing but
//! the trait (records are copied sealed, as the stores keep them: no key is
//! needed and nothing is decrypted), and because the conformance suite,
//! which every backend runs, must be able to attack it.
//!
//! What is copied: kept deletion marks, tombstones, conversations (with
//! their activity time), messages (including those whose conversation is
//! gone), the outbox entry by entry (sequence number, op id, pending or
//! parked with its refusal and count) and every metadata entry (header,
//! wrapped keys, clock mark, settings, sync state). In that order, so no
//! write of the copy can drop what an earlier one wrote (a deletion mark
//! written before any message covers nothing).
//!
//! How it stays safe: the target must be empty; the first write puts
//! [`MIGRATION_MARK_KEY`] into it, and only once every count of the copy
//! equals the source's does the last write remove it — so a copy that
//! stopped midway is recognisable (a vault refuses to open it; running the
//! copy again clears it and starts over). The source is only read. Memory
//! stays flat: one page of rows at a time.
//!
//! Must never: decrypt, write to the source, or leave a target that looks
//! complete without having been counted.

use crate::{
    ConversationQuery, MaybeSendSync, Result, Store, StoreError, TombstoneQuery, Usage, WriteBatch,
    WriteOp, CLOCK_MARK_KEY,
};

/// The metadata key a copy writes first into its target and removes last,
/// once the copy is verified: a store holding it is an incomplete
/// migration ([`StoreError::IncompleteMigration`]). Its value names the
/// source's backend, for people.
pub const MIGRATION_MARK_KEY: &str = "store.migrating";

/// Rows per batch by default: big enough that a batch's overhead (one
/// transaction) is small, small enough that memory stays flat.
const DEFAULT_BATCH_ROWS: usize = 500;

/// What a copy is doing ([`CopyProgress::phase`]), in the order it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPhase {
    /// Kept deletion marks.
    DeletionMarks,
    /// Tombstones.
    Tombstones,
    /// Conversations.
    Conversations,
    /// Messages.
    Messages,
    /// Outbox entries, pending and parked.
    Outbox,
    /// Metadata entries.
    Meta,
    /// Counting the copy against the source.
    Verifying,
}

/// How far a copy got: rows written so far, of the rows the source's
/// counts announce (deletion marks and metadata entries, which no count
/// announces, are counted as they come, so `done` may pass `total` by
/// those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyProgress {
    /// What is being copied.
    pub phase: CopyPhase,
    /// Rows written so far.
    pub done: u64,
    /// Records, tombstones and outbox entries of the source.
    pub total: u64,
}

/// Where a copy reports its progress (any `Fn(CopyProgress)`; `Send +
/// Sync` natively).
pub trait CopyProgressSink: MaybeSendSync {
    /// Called after every batch (keep it cheap).
    fn report(&self, progress: CopyProgress);
}

impl<F: Fn(CopyProgress) + MaybeSendSync> CopyProgressSink for F {
    fn report(&self, progress: CopyProgress) {
        self(progress)
    }
}

/// How to copy.
#[derive(Clone, Copy, Default)]
pub struct CopyOptions<'a> {
    /// Rows per written batch (0: the default, 500).
    pub batch_rows: usize,
    /// Called after every batch.
    pub progress: Option<&'a dyn CopyProgressSink>,
}

impl std::fmt::Debug for CopyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("batch_rows", &self.batch_rows)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What a copy wrote, counted as it went and verified against both
/// stores' own counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyReport {
    /// Conversations copied.
    pub conversations: u64,
    /// Messages copied.
    pub messages: u64,
    /// Tombstones copied.
    pub tombstones: u64,
    /// Kept deletion marks copied.
    pub deletion_marks: u64,
    /// Pending outbox entries copied.
    pub pending_changes: u64,
    /// Parked outbox entries copied.
    pub parked_changes: u64,
    /// Metadata entries copied.
    pub meta_entries: u64,
    /// Stored body bytes of the live records (as sealed).
    pub bytes: u64,
    /// Batches written (the marker's two included).
    pub batches: u64,
    /// Whether the target held an incomplete earlier copy, cleared first.
    pub restarted: bool,
}

/// Copies everything the store `from` holds into the empty store `to`,
/// exactly and in batches (see the module docs), and verifies the copy by
/// its counts before removing the target's [`MIGRATION_MARK_KEY`].
///
/// Errors: [`StoreError::NotEmpty`] if `to` holds anything (unless it is
/// an incomplete copy, which is cleared and copied over);
/// [`StoreError::IncompleteMigration`] if `from` itself is one;
/// [`StoreError::CopyMismatch`] if the counts differ (or the source changed
/// meanwhile: nothing may write to it during a copy); any error of either
/// store. On error the target keeps its marker and the source is
/// untouched.
pub async fn copy_store(
    from: &dyn Store,
    to: &dyn Store,
    options: CopyOptions<'_>,
) -> Result<CopyReport> {
    let rows = match options.batch_rows {
        0 => DEFAULT_BATCH_ROWS,
        n => n,
    };
    if from.meta(MIGRATION_MARK_KEY).await?.is_some() {
        return Err(StoreError::IncompleteMigration);
    }
    let mut copy = Copy {
        to,
        progress: options.progress,
        report: CopyReport {
            restarted: prepare_target(to, rows).await?,
            ..CopyReport::default()
        },
        done: 0,
        total: 0,
    };
    let before = from.usage().await?;
    // Every local write raises the clock mark (`WriteOp::ClaimStamps`),
    // even an edit that leaves every count and size as it was.
    let mark_before = from.meta(CLOCK_MARK_KEY).await?;
    copy.total = record_counts(&before).iter().sum();
    tracing::info!(
        from = from.backend(),
        to = to.backend(),
        rows = copy.total,
        restarted = copy.report.restarted,
        "copying a store"
    );
    let mut mark = WriteBatch::new();
    mark.push(WriteOp::SetMeta(
        MIGRATION_MARK_KEY.into(),
        from.backend().as_bytes().to_vec(),
    ));
    copy.write(mark, CopyPhase::DeletionMarks, 0).await?;

    let mut after = None;
    loop {
        let page = from.deletion_marks(after, rows).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.conversation_id);
        copy.report.deletion_marks += page.len() as u64;
        let ops = page
            .iter()
            .map(|m| WriteOp::CoverMessages(m.conversation_id, m.version));
        copy.write_ops(ops, CopyPhase::DeletionMarks).await?;
    }

    let mut after = None;
    loop {
        let page = from
            .tombstones(&TombstoneQuery { after, limit: rows })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.kind, last.id));
        copy.report.tombstones += page.len() as u64;
        copy.write_ops(page.into_iter().map(WriteOp::Delete), CopyPhase::Tombstones)
            .await?;
    }

    let mut query = ConversationQuery {
        limit: rows,
        ..ConversationQuery::default()
    };
    loop {
        let page = from.conversations(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = Some(chatvault_core::ConversationCursor {
            updated_at: last.activity_at,
            id: last.record.id,
        });
        copy.report.conversations += page.len() as u64;
        // Activity is derived; the raise restores the source's exactly
        // (a put alone derives it from the messages present so far).
        let ops = page.into_iter().flat_map(|row| {
            let raise = WriteOp::RaiseActivity(row.record.id, row.activity_at);
            [WriteOp::PutConversation(row.record), raise]
        });
        copy.write_ops(ops, CopyPhase::Conversations).await?;
    }

    let mut after = None;
    loop {
        let page = from.all_messages(after, rows).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        copy.report.messages += page.len() as u64;
        copy.write_ops(
            page.into_iter().map(WriteOp::InsertMessage),
            CopyPhase::Messages,
        )
        .await?;
    }

    let mut after = None;
    loop {
        let page = from.outbox_entries(after, rows).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for entry in &page {
            match entry.parked {
                Some(_) => copy.report.parked_changes += 1,
                None => copy.report.pending_changes += 1,
            }
        }
        copy.write_ops(
            page.into_iter().map(WriteOp::RestoreOutbox),
            CopyPhase::Outbox,
        )
        .await?;
    }

    let mut after: Option<String> = None;
    loop {
        let page = from.meta_entries(after.as_deref(), rows).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        // Checked absent from the source; present only if the source is
        // the target itself, whose own marker is no entry to copy.
        let page: Vec<_> = page
            .into_iter()
            .filter(|e| e.key != MIGRATION_MARK_KEY)
            .collect();
        copy.report.meta_entries += page.len() as u64;
        let ops = page.into_iter().map(|e| WriteOp::SetMeta(e.key, e.value));
        copy.write_ops(ops, CopyPhase::Meta).await?;
    }

    copy.report_progress(CopyPhase::Verifying);
    let after_usage = from.usage().await?;
    if after_usage != before || from.meta(CLOCK_MARK_KEY).await? != mark_before {
        return Err(StoreError::CopyMismatch(
            "the source changed while it was copied: nothing may write to it during a migration"
                .into(),
        ));
    }
    copy.report.bytes = before.bytes;
    verify(to, &before, &copy.report, rows).await?;

    let mut unmark = WriteBatch::new();
    unmark.push(WriteOp::DeleteMeta(MIGRATION_MARK_KEY.into()));
    copy.write(unmark, CopyPhase::Verifying, 0).await?;
    tracing::info!(report = ?copy.report, "store copied and verified");
    Ok(copy.report)
}

/// Checks that `to` can take the copy: empty, or an incomplete copy,
/// which is cleared (records and every metadata entry). Returns whether
/// it cleared one.
async fn prepare_target(to: &dyn Store, rows: usize) -> Result<bool> {
    let restart = to.meta(MIGRATION_MARK_KEY).await?.is_some();
    if restart {
        tracing::warn!(
            to = to.backend(),
            "the target holds an incomplete copy: starting over"
        );
        to.clear().await?;
        loop {
            let page = to.meta_entries(None, rows).await?;
            // The marker goes last, so a failure in between still leaves
            // the target recognisably incomplete.
            let keys: Vec<String> = page
                .into_iter()
                .map(|e| e.key)
                .filter(|k| k != MIGRATION_MARK_KEY)
                .collect();
            if keys.is_empty() {
                break;
            }
            let mut batch = WriteBatch::new();
            for key in keys {
                batch.push(WriteOp::DeleteMeta(key));
            }
            to.write(batch).await?;
        }
    }
    let usage = to.usage().await?;
    let records: u64 = record_counts(&usage).iter().sum();
    if records > 0 {
        return Err(StoreError::NotEmpty(format!(
            "it holds {} conversations, {} messages, {} tombstones and {} outbox entries",
            usage.conversations,
            usage.messages,
            usage.tombstones,
            usage.pending_changes + usage.parked_changes
        )));
    }
    if !to.deletion_marks(None, 1).await?.is_empty() {
        return Err(StoreError::NotEmpty("it holds deletion marks".into()));
    }
    let meta = to.meta_entries(None, 2).await?;
    if let Some(entry) = meta.iter().find(|e| e.key != MIGRATION_MARK_KEY) {
        return Err(StoreError::NotEmpty(format!(
            "it holds metadata ({:?})",
            entry.key
        )));
    }
    Ok(restart)
}

/// The record counts a copy verifies, by name (see [`record_counts`]).
const RECORD_COUNTS: [&str; 5] = [
    "conversations",
    "messages",
    "tombstones",
    "pending changes",
    "parked changes",
];

/// A store's [`RECORD_COUNTS`], in their order.
fn record_counts(u: &Usage) -> [u64; 5] {
    [
        u.conversations,
        u.messages,
        u.tombstones,
        u.pending_changes,
        u.parked_changes,
    ]
}

/// Counts the target against the source (and against what the copy wrote).
async fn verify(to: &dyn Store, source: &Usage, report: &CopyReport, rows: usize) -> Result<()> {
    let mismatch = |what: &str, source: u64, target: u64| {
        StoreError::CopyMismatch(format!(
            "{what}: {source} in the source, {target} in the copy"
        ))
    };
    let target = to.usage().await?;
    let listed = [
        report.conversations,
        report.messages,
        report.tombstones,
        report.pending_changes,
        report.parked_changes,
    ];
    // What the copy listed, then what the target holds, against the source.
    let counted = record_counts(source);
    for against in [listed, record_counts(&target)] {
        for ((what, counted), other) in RECORD_COUNTS.into_iter().zip(counted).zip(against) {
            if counted != other {
                return Err(mismatch(what, counted, other));
            }
        }
    }
    if source.bytes != target.bytes {
        return Err(mismatch("stored bytes", source.bytes, target.bytes));
    }
    if source.per_conversation != target.per_conversation {
        return Err(StoreError::CopyMismatch(
            "per-conversation counts, sizes or activity differ".into(),
        ));
    }
    let marks = count_marks(to, rows).await?;
    if marks != report.deletion_marks {
        return Err(mismatch("deletion marks", report.deletion_marks, marks));
    }
    let meta = count_meta(to, rows).await?;
    if meta != report.meta_entries {
        return Err(mismatch("metadata entries", report.meta_entries, meta));
    }
    Ok(())
}

async fn count_marks(store: &dyn Store, rows: usize) -> Result<u64> {
    let (mut n, mut after) = (0, None);
    loop {
        let page = store.deletion_marks(after, rows).await?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = Some(last.conversation_id);
        n += page.len() as u64;
    }
}

/// Metadata entries, the migration marker not counted.
async fn count_meta(store: &dyn Store, rows: usize) -> Result<u64> {
    let (mut n, mut after): (u64, Option<String>) = (0, None);
    loop {
        let page = store.meta_entries(after.as_deref(), rows).await?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = Some(last.key.clone());
        n += page.iter().filter(|e| e.key != MIGRATION_MARK_KEY).count() as u64;
    }
}

/// The running copy: where it writes, what it counted, how far it got.
struct Copy<'a> {
    to: &'a dyn Store,
    progress: Option<&'a dyn CopyProgressSink>,
    report: CopyReport,
    done: u64,
    total: u64,
}

impl Copy<'_> {
    /// Writes one page of rows as one batch of `ops`.
    async fn write_ops(
        &mut self,
        ops: impl Iterator<Item = WriteOp>,
        phase: CopyPhase,
    ) -> Result<()> {
        let batch = WriteBatch { ops: ops.collect() };
        let rows = match phase {
            // A conversation is written as two ops (put, raise).
            CopyPhase::Conversations => batch.ops.len() as u64 / 2,
            _ => batch.ops.len() as u64,
        };
        self.write(batch, phase, rows).await
    }

    async fn write(&mut self, batch: WriteBatch, phase: CopyPhase, rows: u64) -> Result<()> {
        self.to.write(batch).await?;
        self.report.batches += 1;
        self.done += rows;
        self.report_progress(phase);
        Ok(())
    }

    fn report_progress(&self, phase: CopyPhase) {
        if let Some(p) = self.progress {
            p.report(CopyProgress {
                phase,
                done: self.done,
                total: self.total,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    //! What the shared conformance cases cannot stage through the
    //! contract alone: a source written to while it is being copied.

    use super::*;
    use crate::{MemoryStore, OutboxItem, StampClaim};
    use chatvault_core::{
        Body, ConversationId, ConversationRecord, DeviceId, EntityKind, Hlc, OpId, Timestamp,
        UserId,
    };
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Waker};

    fn conversation(n: u8) -> ConversationRecord {
        ConversationRecord {
            id: ConversationId::from_bytes([n; 16]),
            user_id: UserId::local(),
            created_at: Timestamp(1_000),
            updated_at: Timestamp(1_000 + i64::from(n)),
            version: Hlc::new(1_700_000_000_000 + u64::from(n), 0, DeviceId(1)).unwrap(),
            body: Body(vec![n; 8]),
        }
    }

    async fn with_conversations(n: u8) -> MemoryStore {
        let store = MemoryStore::new();
        let mut batch = WriteBatch::new();
        for c in 1..=n {
            batch.push(WriteOp::PutConversation(conversation(c)));
            batch.push(WriteOp::Enqueue(OutboxItem {
                op_id: OpId::from_bytes([c; 16]),
                kind: EntityKind::Conversation,
                entity_id: conversation(c).id.into(),
                conversation_id: None,
            }));
        }
        store.write(batch).await.unwrap();
        store
    }

    #[tokio::test]
    async fn a_source_written_during_the_copy_fails_it_and_the_target_stays_marked() {
        let source = with_conversations(9).await;
        let target = MemoryStore::new();
        let meddled = AtomicBool::new(false);
        // Another writer of the source, between two batches of the copy
        // (the memory store's write completes at its first poll).
        let meddle = |_: CopyProgress| {
            if meddled.swap(true, Ordering::SeqCst) {
                return;
            }
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::PutConversation(conversation(42)));
            let mut write = pin!(source.write(batch));
            let polled = write.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            assert!(matches!(polled, Poll::Ready(Ok(_))), "{polled:?}");
        };
        let options = CopyOptions {
            batch_rows: 2,
            progress: Some(&meddle),
        };
        let err = copy_store(&source, &target, options).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::CopyMismatch(d) if d.contains("source changed")),
            "{err:?}"
        );
        assert!(err.to_string().contains("nothing may write to it"), "{err}");
        assert!(target.meta(MIGRATION_MARK_KEY).await.unwrap().is_some());
    }

    /// An edit during the copy that changes no count and no size (the same
    /// record written again) still fails it: the write raised the clock
    /// mark.
    #[tokio::test]
    async fn an_edit_during_the_copy_that_changes_no_count_fails_it() {
        let source = with_conversations(9).await;
        let target = MemoryStore::new();
        let before = source.usage().await.unwrap();
        let meddled = AtomicBool::new(false);
        let meddle = |_: CopyProgress| {
            if meddled.swap(true, Ordering::SeqCst) {
                return;
            }
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::PutConversation(conversation(1)));
            let stamp = Hlc::new(2_000_000_000_000, 0, DeviceId(7)).unwrap();
            batch.push(WriteOp::ClaimStamps(StampClaim {
                from: stamp,
                through: stamp,
                rebases: None,
            }));
            let mut write = pin!(source.write(batch));
            let polled = write.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            assert!(matches!(polled, Poll::Ready(Ok(_))), "{polled:?}");
        };
        let options = CopyOptions {
            batch_rows: 2,
            progress: Some(&meddle),
        };
        let err = copy_store(&source, &target, options).await.unwrap_err();
        assert!(meddled.load(Ordering::SeqCst), "the edit happened");
        let after = source.usage().await.unwrap();
        assert_eq!(
            (after.conversations, after.pending_changes, after.bytes),
            (before.conversations, before.pending_changes, before.bytes),
            "the edit left the counts and sizes as they were"
        );
        assert!(
            matches!(&err, StoreError::CopyMismatch(d) if d.contains("source changed")),
            "{err:?}"
        );
        assert!(target.meta(MIGRATION_MARK_KEY).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_store_copied_into_itself_is_refused_as_not_empty() {
        let store = with_conversations(2).await;
        let err = copy_store(&store, &store, CopyOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotEmpty(_)), "{err:?}");
        assert_eq!(store.meta(MIGRATION_MARK_KEY).await.unwrap(), None);
        assert_eq!(store.usage().await.unwrap().pending_changes, 2);
    }
}
