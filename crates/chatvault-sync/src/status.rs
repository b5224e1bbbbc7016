//! What an app can observe about sync: the [`SyncStatus`] published on a
//! `tokio::sync::watch` channel, and the reports sync operations return.

use chatvault::Timestamp;

/// What the client is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Up to date as of `last_synced_at`; waiting for something to do.
    Idle,
    /// A push or pull is running.
    Syncing,
    /// The server cannot be reached; retrying with backoff. Local writes
    /// keep working and wait in the outbox.
    Offline,
    /// The last attempt failed for a reason shown here (retried with
    /// backoff if it may pass by itself).
    Error(String),
}

/// The observable sync state of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// What the client is doing.
    pub state: SyncState,
    /// When a push and pull last completed (vault clock).
    pub last_synced_at: Option<Timestamp>,
    /// The stored pull cursor (opaque).
    pub cursor: Option<String>,
    /// Local changes waiting to be pushed, as of the last attempt.
    pub pending: u64,
    /// Changes the server refused, parked in the outbox until retried or
    /// discarded.
    pub dead_letters: usize,
    /// Why the last sync failed, until a sync completes (kept in the vault,
    /// so it survives restarts).
    pub last_error: Option<String>,
    /// The stable code ([`SyncError::code`](crate::SyncError::code)) of
    /// the failure `state` shows, if it shows one — `unauthorized` means
    /// the app must ask for the passphrase ([`SyncClient::sign_in`](crate::SyncClient::sign_in)).
    pub error_code: Option<String>,
    /// Whether the realtime WebSocket is connected.
    pub realtime: bool,
    /// Records this client has changed in the vault from the server since
    /// it started (pulled changes that won, and records a resync dropped).
    /// It only grows: an app showing the vault reloads what it shows when
    /// it does, without polling.
    pub received: u64,
}

impl Default for SyncStatus {
    fn default() -> Self {
        SyncStatus {
            state: SyncState::Idle,
            last_synced_at: None,
            cursor: None,
            pending: 0,
            dead_letters: 0,
            last_error: None,
            error_code: None,
            realtime: false,
            received: 0,
        }
    }
}

/// What one push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Changes the server stored.
    pub applied: u64,
    /// Changes the server already had newer versions of (the winners come
    /// down in a pull).
    pub superseded: u64,
    /// Changes the server refused, now parked in the outbox.
    pub dead_lettered: u64,
    /// Dead letters made pending again for another try (clock-skew
    /// rejections are retried on a schedule).
    pub requeued: u64,
    /// Changes the server refused as clock skew that were re-stamped at
    /// the server's time and pushed again (a device clock that ran ahead).
    pub restamped: u64,
    /// The highest version of this device the server has applied (kept so
    /// a re-stamp never goes below one of its own accepted writes).
    pub accepted: Option<chatvault_core::Hlc>,
    /// The changes the server answered `superseded`, by record and pushed
    /// version: after the pull, any the vault still holds at that version
    /// mean the winner did not come down (see `SyncClient::sync_once`).
    pub(crate) superseded_records: Vec<(
        chatvault_core::EntityKind,
        chatvault_core::RecordId,
        chatvault_core::Hlc,
    )>,
    /// HTTP requests made.
    pub requests: u64,
}

/// What one pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Pages fetched (feed and snapshot).
    pub pages: u64,
    /// Changes that won locally and were written.
    pub applied: u64,
    /// Changes older than the local copy.
    pub superseded: u64,
    /// Changes that could not be read or applied at all (logged).
    pub skipped: u64,
    /// Whether the server asked for a resync and the vault was rebuilt from
    /// a snapshot.
    pub resynced: bool,
    /// Local records dropped by a resync (deleted elsewhere).
    pub dropped: u64,
    /// Local records and tombstones queued to be pushed back because the
    /// server's database was restored from a backup that lacks them (or
    /// holds them older).
    pub requeued: u64,
    /// Conversation deletion marks sent back as tombstones after such a
    /// restore: deletions of conversations recreated since, which the
    /// backup predates (see `Replica::deletion_marks_missing_from`).
    pub marks_pushed: u64,
}

impl PushReport {
    /// Adds a later push's counts to this one.
    pub(crate) fn absorb(&mut self, later: PushReport) {
        self.applied += later.applied;
        self.superseded += later.superseded;
        self.dead_lettered += later.dead_lettered;
        self.requeued += later.requeued;
        self.restamped += later.restamped;
        self.accepted = self.accepted.max(later.accepted);
        self.superseded_records.extend(later.superseded_records);
        self.requests += later.requests;
    }
}

impl PullReport {
    /// Adds a later pull's counts to this one.
    pub(crate) fn absorb(&mut self, later: PullReport) {
        self.pages += later.pages;
        self.applied += later.applied;
        self.superseded += later.superseded;
        self.skipped += later.skipped;
        self.resynced |= later.resynced;
        self.dropped += later.dropped;
        self.requeued += later.requeued;
        self.marks_pushed += later.marks_pushed;
    }
}

/// What [`SyncClient::sync_once`](crate::SyncClient::sync_once) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The outbox sent and what the server answered, pushed first.
    pub push: PushReport,
    /// The server's changes applied after the push.
    pub pull: PullReport,
}
