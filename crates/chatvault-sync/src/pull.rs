//! Pull: the account's change feed after the stored cursor, and the resync
//! from a snapshot when the server can no longer continue the feed.
//!
//! Each page is applied by last-writer-wins together with its cursor in one
//! atomic vault write, so a crash never moves the cursor past unapplied
//! changes (and applying a page twice is harmless). A page holding a change
//! this build cannot read is applied **without** its cursor and the pull
//! stops with [`SyncError::UnreadableChange`]: the cursor stays before the
//! change, so an upgraded build reads it instead of having skipped it.
//!
//! Pulled stamps are bounded against the server's time (its `Date`
//! header), not only this device's clock: the server admitted them against
//! its own clock, so a device whose clock runs slow still receives them. The cursor is stored
//! with the server and account it belongs to: a vault pointed elsewhere
//! starts from the beginning instead of sending a foreign cursor.
//!
//! Resync (`410 resync_required`, or a cursor the server does not know):
//! page through `/v1/sync/snapshot`, merge every record by LWW, drop local
//! records the snapshot no longer lists unless they have pending or parked
//! changes (decided inside the deleting write, so a write made during the
//! resync is kept), store the snapshot's cursor and continue the feed from
//! it. The outbox is never touched. A snapshot with an unreadable change
//! stops before anything is dropped. A second `410` straight after is
//! [`SyncError::ResyncLoop`], never another round.
//!
//! Restore (`410 server_restored`: the server's database was restored from
//! a backup, so the cursor points into a feed it no longer has): the same
//! snapshot walk and merge, but what the snapshot lacks was lost by the
//! server, not deleted — nothing is dropped, and a listed recreation of a
//! conversation does not replace a local tombstone of it the server no
//! longer knows of; every local record and tombstone the snapshot lacks or
//! holds older is queued to be pushed back ([`PullReport::requeued`]), and
//! the server's newer-wins rule (and its deletion cover) sorts it out. The
//! deletion marks of recreated conversations that the snapshot does not
//! name (`deletedThrough` absent or lower) are saved (sync metadata
//! [`MARKS_TO_PUSH_KEY`]) and pushed back as tombstones at their own stamps
//! before the snapshot's cursor is stored ([`PullReport::marks_pushed`]);
//! saved marks a failed push left are sent by the next push. A snapshot
//! key refused the same way mid-walk starts the walk over, once.

use std::collections::{HashMap, HashSet};

use crate::transport::Method;
use chatvault_core::{Change, ChangeOp, ConversationId, EntityKind, ErrorCode, Hlc, RecordId};
use serde::{Deserialize, Serialize};

use crate::client::SyncClient;
use crate::error::{Result, SyncError};
use crate::status::PullReport;
use crate::wire::{parse_change, PullResponse, PushResponse, PushStatus, SnapshotResponse};

/// Deletion marks sent back per push request after a restore.
const MARKS_PER_PUSH: usize = 500;

/// Sync metadata: the deletion marks a restore rebuild found the server
/// lacking, as the tombstone changes (a JSON array, op ids included, so a
/// retry is idempotent) that push them back; removed once the server
/// answered them. Kept outside the outbox, which holds one change per
/// record: the recreation of such a conversation may be pending there.
pub(crate) const MARKS_TO_PUSH_KEY: &str = "sync.marks_to_push";

/// What a walk through the snapshot saw.
struct Walked {
    /// Every listed record's version.
    listed: HashMap<(EntityKind, RecordId), Hlc>,
    /// The deletion mark (`deletedThrough`) of each listed conversation
    /// that names one.
    marks: HashMap<ConversationId, Hlc>,
    /// The cursor of the snapshot's first page.
    cursor: String,
}

/// Metadata key of the stored cursor.
pub(crate) const CURSOR_KEY: &str = chatvault::meta_keys::SYNC_CURSOR;

/// Metadata key of the newest push answer's `cursor` not yet pulled past:
/// sent along with the next pull (`seen`), so a server restored from a
/// backup that lacks what this device pushed is detected even though the
/// device's pull cursor predates the backup.
pub(crate) const PUSHED_HEAD_KEY: &str = "sync.pushed_head";

/// The stored cursor and whose it is.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCursor {
    server: String,
    username: String,
    cursor: String,
}

impl SyncClient {
    pub(crate) async fn pull_locked(&self) -> Result<PullReport> {
        let mut report = PullReport::default();
        let mut cursor = self.load_cursor().await?;
        let mut seen = self.load_stored_cursor(PUSHED_HEAD_KEY).await?;
        let limit = self.inner.options.page_limit.clamp(1, 1000).to_string();
        let mut just_resynced = false;
        loop {
            let mut query = vec![("limit", limit.as_str())];
            if let Some(c) = &cursor {
                query.push(("after", c.as_str()));
            }
            if let Some(s) = &seen {
                query.push(("seen", s.as_str()));
            }
            let page = self
                .authed_dated::<PullResponse>(Method::Get, "v1/sync/pull", &query, None)
                .await;
            let (page, server_now) = match page {
                Ok(page) => page,
                Err(e) => match rebuild_needed(&e, cursor.is_some()) {
                    Some(_) if just_resynced => return Err(SyncError::ResyncLoop),
                    Some(mode) => {
                        tracing::warn!(error = %e, ?mode, "the server cannot continue the feed; rebuilding from a snapshot");
                        cursor = Some(self.resync(mode, &mut report).await?);
                        just_resynced = true;
                        seen = None;
                        continue;
                    }
                    None => return Err(e),
                },
            };
            just_resynced = false;
            report.pages += 1;
            let (changes, unreadable) = self.parse_page(page.changes, &mut report);
            if let Some(unreadable) = unreadable {
                // The readable ones apply (harmless to apply again later);
                // the cursor stays where it was.
                self.apply(changes, vec![], server_now, &mut report).await?;
                return Err(unreadable);
            }
            let meta = vec![self.cursor_meta(&page.next_cursor)?];
            self.apply(changes, meta, server_now, &mut report).await?;
            cursor = Some(page.next_cursor);
            let stored = cursor.clone();
            self.inner.status.send_modify(|s| s.cursor = stored);
            // Checked once: the feed is being read from this server now.
            seen = None;
            if !page.has_more {
                // The cursor is past everything pushed before this pull.
                self.inner
                    .vault
                    .replica()
                    .set_sync_meta(PUSHED_HEAD_KEY, None)
                    .await?;
                return Ok(report);
            }
        }
    }

    /// Rebuilds the vault from the server's snapshot; returns (and stores)
    /// the cursor to continue the feed from. After a horizon resync,
    /// records the snapshot lacks were deleted and go; after a restore they
    /// were lost by the server and are queued to be pushed back.
    async fn resync(&self, mode: Rebuild, report: &mut PullReport) -> Result<String> {
        let mut mode = mode;
        let walked = loop {
            match self.walk_snapshot(mode, report).await {
                Ok(walked) => break walked,
                // The database was restored while the snapshot was being
                // read: start over against the restored one, once.
                Err(e)
                    if rebuild_needed(&e, true) == Some(Rebuild::Restored)
                        && mode != Rebuild::RestoredAgain =>
                {
                    tracing::warn!(error = %e, "the server was restored during the snapshot; reading it again");
                    mode = Rebuild::RestoredAgain;
                }
                Err(e) => return Err(e),
            }
        };
        let Walked {
            listed,
            marks,
            cursor,
        } = walked;
        let replica = self.inner.vault.replica();
        match mode {
            Rebuild::Horizon => {
                let keys: HashSet<(EntityKind, RecordId)> = listed.into_keys().collect();
                let dropped = replica.forget_records_missing_from(&keys).await?;
                report.dropped += dropped;
                self.note_received(dropped);
            }
            Rebuild::Restored | Rebuild::RestoredAgain => {
                report.requeued += replica.requeue_records_missing_from(&listed).await?;
                let missing = replica.deletion_marks_missing_from(&marks).await?;
                if !missing.is_empty() {
                    let saved = serde_json::to_vec(&missing).map_err(|e| {
                        SyncError::Protocol(format!("cannot serialize a change: {e}"))
                    })?;
                    replica
                        .set_sync_meta(MARKS_TO_PUSH_KEY, Some(saved))
                        .await?;
                }
                report.marks_pushed += self.push_saved_marks().await?;
            }
        }
        let (key, value) = self.cursor_meta(&cursor)?;
        replica.set_sync_meta(&key, value).await?;
        report.resynced = true;
        tracing::info!(
            dropped = report.dropped,
            requeued = report.requeued,
            "rebuilt from a snapshot"
        );
        Ok(cursor)
    }

    /// Pushes the deletion marks saved under [`MARKS_TO_PUSH_KEY`] (if any)
    /// and forgets them once the server answered; returns how many were
    /// sent. A failed push keeps them for the next try.
    pub(crate) async fn push_saved_marks(&self) -> Result<u64> {
        let replica = self.inner.vault.replica();
        let Some(saved) = replica.sync_meta(MARKS_TO_PUSH_KEY).await? else {
            return Ok(0);
        };
        let changes: Vec<Change> = match serde_json::from_slice::<Vec<serde_json::Value>>(&saved) {
            Ok(values) => values
                .into_iter()
                .filter_map(|v| parse_change(v).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable saved deletion marks; dropped");
                Vec::new()
            }
        };
        let sent = self.push_deletion_marks(changes).await?;
        replica.set_sync_meta(MARKS_TO_PUSH_KEY, None).await?;
        Ok(sent)
    }

    /// Pushes deletion marks the restored server lacks (conversation
    /// tombstones at the marks' stamps, from
    /// `Replica::deletion_marks_missing_from`). Each is `superseded` by
    /// the recreation or applied; the server keeps the mark either way. A
    /// refusal is logged and leaves the mark on this device only (the
    /// device still covers the messages; the server keeps serving them).
    async fn push_deletion_marks(&self, marks: Vec<Change>) -> Result<u64> {
        let mut sent = 0;
        for chunk in marks.chunks(MARKS_PER_PUSH) {
            let jsons = chunk
                .iter()
                .map(serde_json::to_string)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| SyncError::Protocol(format!("cannot serialize a change: {e}")))?;
            let response = self.send_push(&jsons).await?;
            for (change, result) in chunk.iter().zip(&response.results) {
                if !matches!(result.status, PushStatus::Applied | PushStatus::Superseded) {
                    tracing::warn!(
                        id = %change.entity_id,
                        mark = %change.version,
                        reason = ?result.reason,
                        "the restored server refused a deletion mark; it stays on this device only"
                    );
                }
            }
            self.note_push_answer(&response).await?;
            sent += chunk.len() as u64;
        }
        Ok(sent)
    }

    /// Pages through the whole snapshot, applying it by LWW; returns every
    /// listed record's version, the deletion marks it names and the
    /// cursor of its first page.
    async fn walk_snapshot(&self, mode: Rebuild, report: &mut PullReport) -> Result<Walked> {
        let limit = self.inner.options.page_limit.clamp(1, 1000).to_string();
        let mut listed: HashMap<(EntityKind, RecordId), Hlc> = HashMap::new();
        let mut marks: HashMap<ConversationId, Hlc> = HashMap::new();
        let mut after: Option<String> = None;
        let mut resume_at: Option<String> = None;
        loop {
            let mut query = vec![("limit", limit.as_str())];
            if let Some(key) = &after {
                query.push(("after", key.as_str()));
            }
            let (page, server_now) = self
                .authed_dated::<SnapshotResponse>(Method::Get, "v1/sync/snapshot", &query, None)
                .await?;
            report.pages += 1;
            if after.is_none() {
                resume_at = Some(page.cursor.clone().ok_or_else(|| {
                    SyncError::Protocol("the first snapshot page carries no cursor".into())
                })?);
            }
            let (mut changes, unreadable) = self.parse_page(page.changes, report);
            if mode != Rebuild::Horizon {
                // A deletion the restore lost must not be replaced, unheard,
                // by a recreation that reached the server first: it is kept,
                // and pushed back since the walk does not list it.
                changes = self
                    .inner
                    .vault
                    .replica()
                    .withhold_recreations_hiding_deletions(changes)
                    .await?;
            }
            listed.extend(changes.iter().map(|c| ((c.kind, c.entity_id), c.version)));
            for change in &changes {
                if let (EntityKind::Conversation, ChangeOp::Upsert(p)) = (change.kind, &change.op) {
                    if let Some(through) = p.deleted_through {
                        let id = change.entity_id.conversation();
                        let mark = marks.entry(id).or_insert(through);
                        *mark = (*mark).max(through);
                    }
                }
            }
            self.apply(changes, vec![], server_now, report).await?;
            if let Some(unreadable) = unreadable {
                // Not listed means "deleted elsewhere" to the forget step:
                // stop before it, so the unread record is never dropped.
                return Err(unreadable);
            }
            if !page.has_more {
                break;
            }
            after = Some(page.next_key.ok_or_else(|| {
                SyncError::Protocol("a snapshot page with more to come carries no nextKey".into())
            })?);
        }
        let cursor = resume_at
            .ok_or_else(|| SyncError::Protocol("the snapshot carried no cursor".into()))?;
        Ok(Walked {
            listed,
            marks,
            cursor,
        })
    }

    /// Parses each change alone; returns the readable ones and, if any was
    /// not, the error that holds the cursor back (the caller applies the
    /// readable ones without moving the cursor).
    fn parse_page(
        &self,
        raw: Vec<serde_json::Value>,
        report: &mut PullReport,
    ) -> (Vec<Change>, Option<SyncError>) {
        let mut changes = Vec::with_capacity(raw.len());
        let mut unreadable: Option<(usize, String)> = None;
        for value in raw {
            match parse_change(value) {
                Ok(change) => changes.push(change),
                Err(e) => {
                    report.skipped += 1;
                    tracing::error!(error = %e, "a change this version cannot read; holding the pull cursor");
                    let first = unreadable.get_or_insert((0, e.to_string()));
                    first.0 += 1;
                }
            }
        }
        let held = unreadable.map(|(count, first)| SyncError::UnreadableChange { count, first });
        (changes, held)
    }

    async fn apply(
        &self,
        changes: Vec<Change>,
        meta: Vec<(String, Option<Vec<u8>>)>,
        server_now: Option<chatvault::Timestamp>,
        report: &mut PullReport,
    ) -> Result<()> {
        let outcome = self
            .inner
            .vault
            .replica()
            .apply_pulled_changes(changes, meta, server_now)
            .await?;
        report.applied += outcome.applied;
        report.superseded += outcome.superseded;
        self.note_received(outcome.applied);
        for (op, why) in &outcome.invalid {
            report.skipped += 1;
            tracing::error!(op_id = %op, reason = %why, "skipping an invalid change from the server");
        }
        if let Some((_, why)) = outcome.skewed.first() {
            return Err(SyncError::ClockBehind(why.clone()));
        }
        Ok(())
    }

    /// Counts `changed` records in [`SyncStatus::received`](crate::SyncStatus::received).
    fn note_received(&self, changed: u64) {
        if changed > 0 {
            self.inner.status.send_modify(|s| s.received += changed);
        }
    }

    /// The stored cursor, if it belongs to this server and account.
    pub(crate) async fn load_cursor(&self) -> Result<Option<String>> {
        self.load_stored_cursor(CURSOR_KEY).await
    }

    /// Remembers the `cursor` of a push answer if it applied something
    /// (see [`PUSHED_HEAD_KEY`]).
    pub(crate) async fn note_push_answer(&self, response: &PushResponse) -> Result<()> {
        let applied_any = response
            .results
            .iter()
            .any(|r| matches!(r.status, PushStatus::Applied));
        let (true, Some(cursor)) = (applied_any, &response.cursor) else {
            return Ok(());
        };
        let (_, value) = self.cursor_meta(cursor)?;
        self.inner
            .vault
            .replica()
            .set_sync_meta(PUSHED_HEAD_KEY, value)
            .await?;
        Ok(())
    }

    /// A cursor stored under `key`, if it belongs to this server and
    /// account.
    async fn load_stored_cursor(&self, key: &str) -> Result<Option<String>> {
        let Some(bytes) = self.inner.vault.replica().sync_meta(key).await? else {
            return Ok(None);
        };
        let stored: StoredCursor = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable stored cursor; pulling from the start");
                return Ok(None);
            }
        };
        if stored.server != self.inner.api.base()
            || !stored.username.eq_ignore_ascii_case(&self.inner.username)
        {
            tracing::info!(
                "the stored cursor belongs to another server or account; pulling from the start"
            );
            return Ok(None);
        }
        Ok(Some(stored.cursor))
    }

    fn cursor_meta(&self, cursor: &str) -> Result<(String, Option<Vec<u8>>)> {
        let stored = StoredCursor {
            server: self.inner.api.base().to_owned(),
            username: self.inner.username.clone(),
            cursor: cursor.to_owned(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| SyncError::Protocol(e.to_string()))?;
        Ok((CURSOR_KEY.to_owned(), Some(bytes)))
    }
}

/// Which rebuild from a snapshot an answer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// The cursor is older than the tombstone horizon (or unknown): what
    /// the snapshot lacks was deleted.
    Horizon,
    /// The server's database was restored: what the snapshot lacks was
    /// lost by the server, and is pushed back.
    Restored,
    /// As [`Rebuild::Restored`], after a first walk was itself cut short
    /// by a restore.
    RestoredAgain,
}

/// `410 server_restored`; `410 resync_required` (or any other 410); or a
/// stored cursor this server does not know.
fn rebuild_needed(e: &SyncError, had_cursor: bool) -> Option<Rebuild> {
    if e.is_status(410) && e.server_code() == Some(&ErrorCode::ServerRestored) {
        Some(Rebuild::Restored)
    } else if e.is_status(410)
        || (had_cursor && e.is_status(400) && e.server_code() == Some(&ErrorCode::InvalidCursor))
    {
        Some(Rebuild::Horizon)
    } else {
        None
    }
}
