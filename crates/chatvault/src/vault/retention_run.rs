//! Running retention: gathers what core's planner
//! (`chatvault_core::lifecycle::plan_retention`) needs (activity, stored
//! bytes, pinned, unsynced), applies the plan as one atomic write of
//! tombstones and outbox entries (so other devices delete too) — each
//! stamped above what it deletes, as any local deletion — compacts
//! the store when the deletions left much of it empty, and runs a stored
//! policy at most once a day when an opener asks for it.
//!
//! Must never delete a conversation with changes a configured sync server
//! has not acknowledged, and never run on open unless asked.

use super::records::{changed_since_read, outbox_item, record_contended};
use super::stamps::MAX_ATTEMPTS;
use super::storage::CompactionReport;
use super::Vault;
use crate::{meta_keys, Result, VaultError};
use chatvault_core::lifecycle::{
    plan_retention, ConversationSummary, RetentionPlan, RetentionPolicy,
};
use chatvault_core::{ConversationId, EntityKind, Hlc, Timestamp, Tombstone};
use chatvault_store::{WriteBatch, WriteOp};
use futures::TryStreamExt;
use serde::Serialize;
use std::collections::HashMap;

/// How often a stored policy runs on open.
const DAY_MS: i64 = 86_400_000;

/// Compact after a run when at least this share of the store is free pages.
const COMPACT_FREE_SHARE: f64 = 0.25;

/// Whether a retention run deletes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMode {
    /// Plan only; change nothing.
    DryRun,
    /// Delete what the plan says.
    Apply,
}

/// What a retention run did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionReport {
    /// The policy applied.
    pub policy: RetentionPolicy,
    /// The time the ages were measured from.
    pub now: Timestamp,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Whether a sync server is configured (only then do unsynced changes
    /// protect a conversation).
    pub sync_configured: bool,
    /// What was (or would be) deleted and kept, and why.
    #[serde(flatten)]
    pub plan: RetentionPlan,
    /// The compaction that followed, if the deletions left the store
    /// mostly empty (`None` too if compacting failed: the deletions stand,
    /// the failure is logged and the next run compacts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionReport>,
}

impl Vault {
    /// What `policy` would delete now, and why.
    pub async fn plan_retention(&self, policy: &RetentionPolicy) -> Result<RetentionPlan> {
        let sync_configured = self.replica().sync_remote().await?.is_some();
        let (summaries, _) = self.retention_summaries(sync_configured).await?;
        Ok(plan_retention(&summaries, policy, self.time.now()))
    }

    /// Plans `policy` and, with [`RetentionMode::Apply`], deletes the
    /// planned conversations with their messages in one atomic write,
    /// leaving tombstones and outbox entries so the deletions sync. Pinned
    /// conversations, and — while a sync server is configured — those with
    /// unacknowledged changes, are never deleted. A run that leaves at
    /// least a quarter of the store as free pages compacts it.
    ///
    /// Each tombstone is stamped as [`Vault::delete_conversation`] stamps
    /// one: above the conversation's version and every message of it held
    /// here (which may be above this device's clock: pulled from a device
    /// whose clock runs ahead, or written before this clock re-based), on
    /// condition that the conversation is still at the version planned
    /// from. If a pull or another process changed one meanwhile, the run
    /// plans again.
    pub async fn run_retention(
        &self,
        policy: &RetentionPolicy,
        mode: RetentionMode,
    ) -> Result<RetentionReport> {
        let sync_configured = self.replica().sync_remote().await?.is_some();
        for _ in 0..MAX_ATTEMPTS {
            let (summaries, versions) = self.retention_summaries(sync_configured).await?;
            let now = self.time.now();
            let plan = plan_retention(&summaries, policy, now);
            let mut report = RetentionReport {
                policy: *policy,
                now,
                dry_run: mode == RetentionMode::DryRun,
                sync_configured,
                plan,
                compaction: None,
            };
            if mode == RetentionMode::DryRun || report.plan.delete.is_empty() {
                return Ok(report);
            }

            // (conversation, version read, newest version of it and its
            // messages): the tombstone goes above the newest, so it takes
            // everything this device showed, here and everywhere else.
            let mut doomed = Vec::with_capacity(report.plan.delete.len());
            for deletion in &report.plan.delete {
                let id = deletion.id;
                let Some(&read) = versions.get(&id) else {
                    return Err(VaultError::Internal(
                        "retention planned a conversation it did not read",
                    ));
                };
                let mut newest = read;
                let mut pages = std::pin::pin!(self.message_record_pages(id));
                while let Some(page) = pages.try_next().await? {
                    newest = page.iter().map(|m| m.version).fold(newest, Hlc::max);
                }
                doomed.push((id, read, newest));
            }
            let written = self
                .commit_stamped(|stamps| {
                    let mut batch = WriteBatch::new();
                    for &(id, read, newest) in &doomed {
                        batch.push(WriteOp::RequireVersion(
                            EntityKind::Conversation,
                            id.into(),
                            read,
                        ));
                        batch.push(WriteOp::Delete(Tombstone::conversation(
                            id,
                            stamps.above(newest)?,
                            stamps.now(),
                        )));
                        batch.push(WriteOp::Enqueue(outbox_item(
                            EntityKind::Conversation,
                            id.into(),
                            None,
                        )));
                    }
                    Ok((batch, ()))
                })
                .await;
            if changed_since_read(written)?.is_none() {
                continue;
            }
            tracing::info!(
                deleted = report.plan.delete.len(),
                bytes = report.plan.bytes_freed,
                "retention deleted conversations"
            );

            // The deletions are committed: a failure to compact after them
            // must not report the run as failed (the caller would think
            // nothing was deleted); the next run compacts.
            report.compaction = match self.compact_if_worth_it().await {
                Ok(compaction) => compaction,
                Err(e) => {
                    tracing::warn!(
                        "retention deleted conversations, but compacting the store after it \
                         failed: {e}"
                    );
                    None
                }
            };
            return Ok(report);
        }
        Err(record_contended())
    }

    /// Compacts the store if at least [`COMPACT_FREE_SHARE`] of it is free
    /// pages.
    async fn compact_if_worth_it(&self) -> Result<Option<CompactionReport>> {
        let Some(footprint) = self.store.footprint().await? else {
            return Ok(None);
        };
        let free = footprint.reclaimable_bytes as f64;
        if footprint.used_bytes > 0 && free >= COMPACT_FREE_SHARE * footprint.used_bytes as f64 {
            return self.compact().await;
        }
        Ok(None)
    }

    /// Applies the stored policy if it has not run for a day. Called when
    /// the vault is opened with
    /// [`run_due_retention`](crate::VaultBuilder::run_due_retention); a
    /// failure is logged, never fatal to the open.
    pub(crate) async fn run_scheduled_retention(&self) {
        match self.apply_due_retention().await {
            Ok(Some(report)) => tracing::info!(
                deleted = report.plan.delete.len(),
                bytes = report.plan.bytes_freed,
                "applied the stored retention policy"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("the stored retention policy could not be applied: {e}"),
        }
    }

    /// Applies the stored retention policy if one is stored and it has not
    /// run for a day (or the clock went back), and records when; the
    /// report says what it deleted, `None` when nothing was due. An app
    /// calls this when it chooses (or opens with
    /// [`run_due_retention`](crate::VaultBuilder::run_due_retention)); the
    /// CLI calls it after opening and prints what it removed.
    ///
    /// A stored policy that [`RetentionPolicy::check`] refuses (a limit of
    /// zero, stored by an older chatvault) is never applied: the error
    /// says why.
    pub async fn apply_due_retention(&self) -> Result<Option<RetentionReport>> {
        let Some(policy) = self.retention_policy().await? else {
            return Ok(None);
        };
        policy.check()?;
        let now = self.time.now();
        let due = match self.retention_last_run().await? {
            None => true,
            // A clock set back (now < last) runs it too, and restarts the day.
            Some(last) => {
                now.as_millis() < last.as_millis() || now.as_millis() - last.as_millis() >= DAY_MS
            }
        };
        if !due {
            return Ok(None);
        }
        let report = self.run_retention(&policy, RetentionMode::Apply).await?;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::SetMeta(
            meta_keys::RETENTION_LAST_RUN.into(),
            report.now.as_millis().to_string().into_bytes(),
        ));
        self.store.write(batch).await?;
        Ok(Some(report))
    }

    /// One summary per conversation: activity, bytes and unsynced changes
    /// from the store's usage (one row each), pinned from its decoded
    /// metadata; and each conversation's version as read.
    async fn retention_summaries(
        &self,
        sync_configured: bool,
    ) -> Result<(Vec<ConversationSummary>, HashMap<ConversationId, Hlc>)> {
        let usage: HashMap<_, _> = self
            .store
            .usage()
            .await?
            .per_conversation
            .into_iter()
            .map(|u| (u.id, u))
            .collect();
        let mut out = Vec::with_capacity(usage.len());
        let mut versions = HashMap::with_capacity(usage.len());
        let mut pages = std::pin::pin!(self.conversation_row_pages());
        while let Some(rows) = pages.try_next().await? {
            for row in rows {
                let id = row.record.id;
                versions.insert(id, row.record.version);
                let (bytes, pending) = usage
                    .get(&id)
                    .map_or((row.record.body.len() as u64, false), |u| {
                        (u.bytes, u.pending)
                    });
                let conversation = self.decode_conversation(row)?;
                out.push(ConversationSummary {
                    id,
                    updated_at: conversation.updated_at,
                    bytes,
                    pinned: conversation.is_pinned(),
                    // Without a server nothing is waiting for one.
                    pending: sync_configured && pending,
                });
            }
        }
        Ok((out, versions))
    }
}
