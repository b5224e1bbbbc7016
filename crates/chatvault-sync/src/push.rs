//! Push: the vault's outbox to `POST /v1/sync/push`.
//!
//! Reads pending changes oldest first, sends them in batches sized by
//! count and bytes, and settles each by its result: applied and
//! superseded changes leave the outbox; rejected ones are **parked** in
//! it (see `dead_letter`) — kept, unsynced, but no longer at the head of
//! the queue blocking the rest. A batch the server finds too large is
//! split in halves until the one oversized change stands alone and is
//! parked.
//!
//! A push drains the outbox: it reads and sends until nothing pending is
//! left (or [`SyncOptions::max_push_rounds`](crate::SyncOptions) is
//! reached, which a background loop uses to yield to pulls), publishing
//! the shrinking pending count as it goes so a caller can show progress.
//!
//! Retries reuse op ids (the outbox keeps them), so a push whose answer
//! was lost is idempotent on the server.
//!
//! A `clock_skew` refusal is transient: when the server says what time it
//! is, the change is re-stamped at that time and stays pending (pushed
//! again in the same run), never dead-lettered for it.

use std::collections::VecDeque;

use crate::transport::Method;
use chatvault::OutboxEntry;
use chatvault_core::Hlc;

use crate::client::SyncClient;
use crate::dead_letter::{park_reason, DeadLetter, RejectReason};
use crate::error::{Result, SyncError};
use crate::status::PushReport;
use crate::wire::{push_body, PushResponse, PushResult, PushStatus};

/// Sync metadata: the highest version of this device the server applied.
const ACCEPTED_MARK: &str = "sync.accepted_mark";

/// The server's largest batch.
const SERVER_MAX_BATCH: usize = 1000;

/// One outbox entry with its serialized change.
struct Ready {
    entry: OutboxEntry,
    json: String,
}

impl SyncClient {
    pub(crate) async fn push_locked(&self) -> Result<PushReport> {
        let mut report = PushReport::default();
        // Deletion marks a restore rebuild could not push back yet.
        let marks = self.push_saved_marks().await?;
        if marks > 0 {
            tracing::info!(
                marks,
                "pushed back deletion marks the restored server lacked"
            );
        }
        let accepted_before = self.accepted_mark().await?;
        report.accepted = accepted_before;
        self.requeue_due_dead_letters(&mut report).await?;
        let batch = self.inner.options.push_batch.clamp(1, SERVER_MAX_BATCH);
        let max_rounds = self.inner.options.max_push_rounds.unwrap_or(usize::MAX);
        let (pending, _) = self.inner.vault.replica().outbox_counts().await?;
        self.inner.status.send_modify(|s| s.pending = pending);
        for round in 1.. {
            let entries = self.inner.vault.replica().pending_changes(batch).await?;
            if entries.is_empty() {
                break;
            }
            let full = entries.len() == batch;
            if full && round >= max_rounds {
                // More may be waiting: have a running loop come straight back.
                self.inner.local.notify_one();
            }
            let ready = entries
                .into_iter()
                .map(|entry| {
                    let json = serde_json::to_string(&entry.change).map_err(|e| {
                        SyncError::Protocol(format!("cannot serialize a change: {e}"))
                    })?;
                    Ok(Ready { entry, json })
                })
                .collect::<Result<Vec<_>>>()?;
            let restamped = report.restamped;
            for chunk in self.chunks(ready) {
                let sent = chunk.len() as u64;
                self.push_chunk(chunk, &mut report).await?;
                self.inner
                    .status
                    .send_modify(|s| s.pending = s.pending.saturating_sub(sent));
            }
            // Re-stamped changes are pending again: send them now.
            if (!full && report.restamped == restamped) || round >= max_rounds {
                break;
            }
        }
        if report.accepted > accepted_before {
            if let Some(mark) = report.accepted {
                self.inner
                    .vault
                    .replica()
                    .set_sync_meta(ACCEPTED_MARK, Some(mark.to_string().into_bytes()))
                    .await?;
            }
        }
        if report.applied + report.superseded + report.dead_lettered > 0 {
            tracing::debug!(?report, "pushed");
        }
        Ok(report)
    }

    /// Splits by the byte budget (a change over the budget goes alone).
    fn chunks(&self, ready: Vec<Ready>) -> Vec<Vec<Ready>> {
        let budget = self.inner.options.max_push_bytes;
        let mut chunks = Vec::new();
        let mut current: Vec<Ready> = Vec::new();
        let mut bytes = 0;
        for r in ready {
            if !current.is_empty() && bytes + r.json.len() + 1 > budget {
                chunks.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += r.json.len() + 1;
            current.push(r);
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        chunks
    }

    /// Posts `changes` (serialized) to `/v1/sync/push`; an answer without
    /// exactly one result per change is a protocol error.
    pub(crate) async fn send_push(&self, changes: &[String]) -> Result<PushResponse> {
        let response = self
            .authed::<PushResponse>(Method::Post, "v1/sync/push", &[], Some(push_body(changes)))
            .await?;
        if response.results.len() != changes.len() {
            return Err(SyncError::Protocol(format!(
                "push of {} changes answered {} results",
                changes.len(),
                response.results.len()
            )));
        }
        Ok(response)
    }

    /// Sends one chunk, halving it on `413` until the offender is alone.
    async fn push_chunk(&self, chunk: Vec<Ready>, report: &mut PushReport) -> Result<()> {
        let mut queue = VecDeque::from([chunk]);
        while let Some(mut chunk) = queue.pop_front() {
            let jsons: Vec<String> = chunk.iter().map(|r| r.json.clone()).collect();
            report.requests += 1;
            let answer = self.send_push(&jsons).await;
            match answer {
                Ok(response) => self.settle(chunk, response, report).await?,
                Err(e) if e.is_status(413) && chunk.len() > 1 => {
                    let right = chunk.split_off(chunk.len() / 2);
                    queue.push_front(right);
                    queue.push_front(chunk);
                }
                Err(e) if e.is_status(413) => {
                    let reason = RejectReason::PayloadTooLarge;
                    let message = match &e {
                        SyncError::Server { message, .. } => message.clone(),
                        other => other.to_string(),
                    };
                    self.bury(chunk, vec![(0, reason, message)], report).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Applies the server's per-change answers to the outbox.
    async fn settle(
        &self,
        chunk: Vec<Ready>,
        response: PushResponse,
        report: &mut PushReport,
    ) -> Result<()> {
        let mut rejected = Vec::new();
        let mut restamped = Vec::new();
        for (i, (ready, result)) in chunk.iter().zip(&response.results).enumerate() {
            let op = ready.entry.change.op_id.to_string();
            if result.op_id.as_deref().is_some_and(|id| id != op) {
                return Err(SyncError::Protocol(format!(
                    "push results out of order: expected {op}, got {:?}",
                    result.op_id
                )));
            }
            match result.status {
                PushStatus::Applied => {
                    report.applied += 1;
                    let version = ready.entry.change.version;
                    if version.device() == self.inner.vault.device_id() {
                        report.accepted = report.accepted.max(Some(version));
                    }
                }
                PushStatus::Superseded => {
                    report.superseded += 1;
                    let change = &ready.entry.change;
                    report
                        .superseded_records
                        .push((change.kind, change.entity_id, change.version));
                }
                PushStatus::Rejected
                    if self.restamp_skewed(ready, result, report.accepted).await? =>
                {
                    report.restamped += 1;
                    restamped.push(i);
                }
                PushStatus::Rejected => {
                    let reason = RejectReason::from_code(result.reason.as_deref());
                    let message = result.message.clone().unwrap_or_default();
                    rejected.push((i, reason, message));
                }
                PushStatus::Unknown => {
                    return Err(SyncError::Protocol(format!(
                        "unknown push status for change {op}"
                    )))
                }
            }
        }
        self.note_push_answer(&response).await?;
        if !restamped.is_empty() {
            // Re-queued under a new outbox entry: neither synced nor
            // rejected, so they leave this chunk's bookkeeping.
            let (mut kept, mut index) = (Vec::new(), Vec::new());
            for (i, ready) in chunk.into_iter().enumerate() {
                if !restamped.contains(&i) {
                    index.push(i);
                    kept.push(ready);
                }
            }
            let rejected = rejected
                .into_iter()
                .filter_map(|(i, reason, message)| {
                    let at = index.iter().position(|&k| k == i)?;
                    Some((at, reason, message))
                })
                .collect();
            return self.bury(kept, rejected, report).await;
        }
        self.bury(chunk, rejected, report).await
    }

    /// For a `clock_skew` refusal that carries the server's time: re-stamps
    /// the change at that time (see `Replica::restamp_skewed`). `true` if it
    /// was re-stamped and is pending again.
    async fn restamp_skewed(
        &self,
        ready: &Ready,
        result: &PushResult,
        accepted: Option<Hlc>,
    ) -> Result<bool> {
        let (Some("clock_skew"), Some(server_time)) =
            (result.reason.as_deref(), result.server_time)
        else {
            return Ok(false);
        };
        let change = &ready.entry.change;
        let restamped = self
            .inner
            .vault
            .replica()
            .restamp_skewed(
                change.kind,
                change.entity_id,
                change.version,
                chatvault_core::Timestamp(server_time),
                accepted,
            )
            .await?;
        Ok(restamped.is_some())
    }

    /// Parks the `rejected` entries of `chunk` (by index) and acknowledges
    /// the rest. Parking comes first: a crash in between only re-sends the
    /// acknowledged ones, which is harmless.
    async fn bury(
        &self,
        chunk: Vec<Ready>,
        rejected: Vec<(usize, RejectReason, String)>,
        report: &mut PushReport,
    ) -> Result<()> {
        let replica = self.inner.vault.replica();
        let now = replica.now();
        let mut parked = Vec::new();
        for (i, reason, message) in &rejected {
            let change = &chunk[*i].entry.change;
            tracing::warn!(
                op_id = %change.op_id,
                entity = %change.entity_id,
                reason = reason.as_code(),
                %message,
                "the server refused a change; parked until retried or discarded"
            );
            parked.push((
                chunk[*i].entry.seq,
                park_reason(*reason, message.clone(), now),
            ));
            report.dead_lettered += 1;
        }
        replica.park(parked).await?;
        let seqs: Vec<u64> = chunk
            .iter()
            .enumerate()
            .filter(|(i, _)| !rejected.iter().any(|(r, _, _)| r == i))
            .map(|(_, r)| r.entry.seq)
            .collect();
        replica.acknowledge(&seqs).await?;
        Ok(())
    }

    /// The highest version of this device the server has applied, as
    /// far as this vault knows (the floor of a clock-skew re-stamp).
    async fn accepted_mark(&self) -> Result<Option<Hlc>> {
        let stored = self.inner.vault.replica().sync_meta(ACCEPTED_MARK).await?;
        Ok(stored
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<Hlc>().ok()))
    }

    /// Makes clock-skew dead letters whose retry time has come pending
    /// again (the protocol's "fix the clock, keep retrying"). A refusal
    /// again parks it with one more attempt, so it waits longer.
    async fn requeue_due_dead_letters(&self, report: &mut PushReport) -> Result<()> {
        let replica = self.inner.vault.replica();
        let now = replica.now();
        for p in replica.all_parked_changes().await? {
            let letter = DeadLetter::from_parked(p);
            if letter.next_retry_at().is_some_and(|t| t <= now) {
                replica.unpark(letter.entity_id, vec![]).await?;
                report.requeued += 1;
            }
        }
        Ok(())
    }
}
