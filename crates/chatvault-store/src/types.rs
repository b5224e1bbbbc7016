//! Requests and answers of the [`Store`](crate::Store) trait.

use chatvault_core::{
    resolve_incoming, Change, ConversationCursor, ConversationId, ConversationRecord, Cover,
    EntityKind, Hlc, Incoming, MessageCursor, MessageRecord, OpId, RecordId, Resolution, Timestamp,
    Tombstone, VersionedState,
};

/// A conversation as stored, with the activity time the store derives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRow {
    /// The synced record.
    pub record: ConversationRecord,
    /// The later of the record's `updated_at` and its newest message's
    /// `updated_at`. Local and derived, never synced; lists, ranges and
    /// retention use it.
    pub activity_at: Timestamp,
}

/// Which conversations to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationQuery {
    /// Only conversations active at or after this time.
    pub active_from: Option<Timestamp>,
    /// Only conversations active at or before this time.
    pub active_to: Option<Timestamp>,
    /// Continue after this position (exclusive).
    pub after: Option<ConversationCursor>,
    /// At most this many (must be > 0).
    pub limit: usize,
}

impl Default for ConversationQuery {
    fn default() -> Self {
        Self {
            active_from: None,
            active_to: None,
            after: None,
            limit: 50,
        }
    }
}

impl ConversationQuery {
    /// Whether `row` belongs in this query's results (range and cursor).
    pub fn matches(&self, row: &ConversationRow) -> bool {
        self.active_from.is_none_or(|t| row.activity_at >= t)
            && self.active_to.is_none_or(|t| row.activity_at <= t)
            && self
                .after
                .is_none_or(|c| (row.activity_at, row.record.id) < (c.updated_at, c.id))
    }
}

/// Which messages to list: the latest `limit` of a conversation, or the
/// `limit` before a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageQuery {
    /// Whose messages to list.
    pub conversation_id: ConversationId,
    /// Continue with messages strictly older than this position.
    pub before: Option<MessageCursor>,
    /// At most this many (must be > 0).
    pub limit: usize,
}

impl MessageQuery {
    /// Whether `m` belongs in this query's results.
    pub fn matches(&self, m: &MessageRecord) -> bool {
        m.conversation_id == self.conversation_id
            && self
                .before
                .is_none_or(|c| (m.created_at, m.id) < (c.created_at, c.id))
    }
}

/// Which tombstones to list: all of them, in `(kind, id)` order, a page at
/// a time (export pages through them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TombstoneQuery {
    /// Continue after this position (exclusive).
    pub after: Option<(EntityKind, RecordId)>,
    /// At most this many (must be > 0).
    pub limit: usize,
}

impl TombstoneQuery {
    /// Whether `t` comes after the query's position. Tombstones are listed
    /// by kind (conversations first, as the kinds' names sort), then id
    /// bytes.
    pub fn matches(&self, t: &Tombstone) -> bool {
        self.after.is_none_or(|after| (t.kind, t.id) > after)
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Fail the whole batch with [`StoreError::ConversationNotFound`]
    /// unless this conversation exists — checked inside the write, so a
    /// message can never land in a conversation deleted a moment before.
    ///
    /// [`StoreError::ConversationNotFound`]: crate::StoreError::ConversationNotFound
    RequireConversation(ConversationId),
    /// Fail the whole batch with [`StoreError::VersionChanged`] unless the
    /// store holds this record **live at exactly this version** — checked
    /// inside the write, so a local edit never replaces a version it did
    /// not read (a pull that landed in between makes the writer re-read and
    /// re-apply its edit instead of overwriting the newer version).
    ///
    /// [`StoreError::VersionChanged`]: crate::StoreError::VersionChanged
    RequireVersion(EntityKind, RecordId, Hlc),
    /// Claim the version stamps this batch issues (see [`StampClaim`]):
    /// checked against, and recorded in, the device's persisted clock mark
    /// (metadata key [`CLOCK_MARK_KEY`]) inside the write, so two processes
    /// writing one store never commit the same stamp and the mark costs no
    /// write of its own. Fails the whole batch with
    /// [`StoreError::StampsTaken`] when another writer got there first.
    ///
    /// [`StoreError::StampsTaken`]: crate::StoreError::StampsTaken
    ClaimStamps(StampClaim),
    /// Fail the whole batch with [`StoreError::MetaChanged`] unless the
    /// metadata value of this key is exactly this (`None`: absent) —
    /// checked inside the write, so a writer whose view of the store's
    /// settings (say, which data key seals new records) went stale since
    /// it read them never writes on that stale view.
    ///
    /// [`StoreError::MetaChanged`]: crate::StoreError::MetaChanged
    RequireMeta(String, Option<Vec<u8>>),
    /// Insert or replace a conversation; removes a tombstone for it (its
    /// version stays in the conversation's deletion mark,
    /// [`Store::deletion_mark`](crate::Store::deletion_mark)).
    PutConversation(ConversationRecord),
    /// Insert or replace a message; removes a tombstone for it and advances
    /// its conversation's activity time.
    PutMessage(MessageRecord),
    /// Insert a message that is new to the store (a freshly generated id):
    /// like [`WriteOp::PutMessage`] without looking for a record or
    /// tombstone to replace, which is what makes bulk writes cheap. Fails
    /// the batch with [`StoreError::InvalidRequest`] if the id exists.
    ///
    /// [`StoreError::InvalidRequest`]: crate::StoreError::InvalidRequest
    InsertMessage(MessageRecord),
    /// Delete a record and keep its tombstone. A conversation takes along
    /// what its deletion covers, as [`WriteOp::CoverMessages`] at the
    /// tombstone's version (the tombstone counts in its deletion mark while
    /// it lies there); its messages stamped after the deletion stay (core's
    /// deletion rule, `chatvault_core::merge`).
    Delete(Tombstone),
    /// The conversation was deleted at this version: drop every message of
    /// it stamped at or below it, with their tombstones and their pending
    /// or parked changes. Messages stamped after it stay. Applied when a
    /// conversation tombstone is, and when a recreated conversation comes
    /// from the server with its deletion mark (`deletedThrough`). Raises the
    /// conversation's deletion mark to at least this
    /// ([`Store::deletion_mark`](crate::Store::deletion_mark)), so later
    /// merges of its messages stamped at or below it lose too, even once
    /// the conversation is recreated.
    CoverMessages(ConversationId, Hlc),
    /// Queue a record's change for sync, replacing any pending change of
    /// the same record (coalescing). Nothing is queued for a record the
    /// store holds neither live nor as a tombstone (there is nothing to
    /// send), so put the record first, in the same batch or before.
    Enqueue(OutboxItem),
    /// Drop a record's pending or parked change (a remote version
    /// superseded it, or the user discarded a parked change).
    Dequeue(RecordId),
    /// Park the outbox entry with this sequence number: the server refused
    /// it. A parked change stays in the outbox — it counts as unsynced for
    /// [`WriteOp::ForgetUnlessPending`], for [`ConversationUsage::pending`]
    /// (retention) and for [`Usage::parked_changes`] — but
    /// [`Store::outbox`](crate::Store::outbox) no longer yields it until it
    /// is [unparked](WriteOp::Unpark). Its refusal count goes up by one.
    /// Nothing happens if the entry is gone or was replaced by a newer
    /// change since it was read (the newer change is pending, not parked).
    Park(u64, ParkReason),
    /// Make a record's parked change pending again (a retry). Its refusal
    /// count is kept, so a change refused again shows how often it was.
    /// Nothing happens if the record has no parked change.
    Unpark(RecordId),
    /// Resync's delete: like [`WriteOp::Delete`], but decided inside the
    /// write, and only if the record is still stored at exactly the
    /// tombstone's version and has no pending or parked change — for a
    /// conversation, neither it nor any of its messages. Otherwise nothing
    /// happens. A forgotten conversation takes **all** its messages along
    /// (not only those its tombstone's version covers). Counted in
    /// [`WriteOutcome::forgotten`].
    ForgetUnlessPending(Tombstone),
    /// Set a metadata value.
    SetMeta(String, Vec<u8>),
    /// Remove a metadata value (nothing happens if there is none).
    DeleteMeta(String),
    /// Raise a conversation's derived activity time to at least this (an
    /// import restores the activity the exporting store had, so lists and
    /// retention see the conversation as recent as it was). Nothing happens
    /// if the conversation does not exist.
    RaiseActivity(ConversationId, Timestamp),
    /// Apply a record from elsewhere (sync, import) only if it wins over
    /// what the store holds by core's last-writer-wins rule; a message
    /// stamped at or below its conversation's deletion mark loses too. A winner
    /// replaces the record and drops its pending local change.
    Merge(Incoming),
    /// Like [`WriteOp::Merge`], for records that are new to sync too (an
    /// import from a file): a winner replaces the record and is queued for
    /// sync under this op id, so other devices receive it. A loser changes
    /// nothing and queues nothing. A record the store holds in the **same
    /// version** loses ([`import_wins`]): an import re-encodes bodies (an
    /// encrypted vault seals them with fresh nonces), so equal versions
    /// are the same write even when their bytes differ.
    MergeAndEnqueue(Incoming, OpId),
    /// Put an outbox entry back exactly as another store kept it (a
    /// migration, [`copy_store`](crate::copy_store)): the same sequence
    /// number, op id, parking and refusal count, so a sync after the move
    /// sends exactly what it would have sent before. It replaces the
    /// record's entry, if any; changes queued later get sequence numbers
    /// above it. Like [`WriteOp::Enqueue`], nothing is queued for a record
    /// the store holds neither live nor as a tombstone, so restore the
    /// record first. Fails the batch with
    /// [`StoreError::InvalidRequest`](crate::StoreError::InvalidRequest)
    /// if the sequence number is another record's entry (judged on the
    /// store as it was before the batch).
    RestoreOutbox(StoredOutboxEntry),
}

/// The metadata key under which a store keeps the device's clock mark: the
/// highest version stamp its writers have committed, as [`Hlc`] text.
/// Written only through [`WriteOp::ClaimStamps`].
pub const CLOCK_MARK_KEY: &str = "vault.clock";

/// The stamps a batch claims: every stamp its writer's clock issued for it
/// lies in `from..=through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampClaim {
    /// The lowest stamp the batch carries from its writer's clock.
    pub from: Hlc,
    /// The writer's clock after stamping the batch (the new mark).
    pub through: Hlc,
    /// The far-ahead mark the writer re-based away from on open (see
    /// `chatvault_core::HlcClock::is_far_ahead`): if the store still holds
    /// exactly this mark, the claim replaces it even though `from` is
    /// below it. `None` for an ordinary claim.
    pub rebases: Option<Hlc>,
}

impl StampClaim {
    /// The mark a store holds after accepting this claim over `stored`, or
    /// `Err(stored mark)` if the claim must be refused: another writer
    /// already committed a stamp at or above `from` (and this is not a
    /// re-base of exactly the stored mark). The same rule for every backend.
    pub fn accept(&self, stored: Option<Hlc>) -> std::result::Result<Hlc, Hlc> {
        match stored {
            None => Ok(self.through),
            Some(mark) if self.rebases == Some(mark) => Ok(self.through),
            Some(mark) if mark < self.from => Ok(mark.max(self.through)),
            Some(mark) => Err(mark),
        }
    }
}

/// Reads a stored clock mark ([`CLOCK_MARK_KEY`]'s value).
pub fn parse_clock_mark(bytes: &[u8]) -> crate::Result<Hlc> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<Hlc>().ok())
        .ok_or_else(|| crate::StoreError::corrupt("the clock mark is not a version stamp"))
}

/// Whether `stored` (what a store holds for a record: its live version, a
/// tombstone, or nothing) satisfies a [`WriteOp::RequireVersion`] of
/// `expected`.
pub fn version_matches(stored: Option<&LocalVersion>, expected: Hlc) -> bool {
    stored.is_some_and(|l| !l.deleted && l.version == expected)
}

/// What a [`WriteBatch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// [`WriteOp::Merge`] operations that won and were applied.
    pub merged: u64,
    /// [`WriteOp::Merge`] operations that lost to the stored version.
    pub superseded: u64,
    /// [`WriteOp::ForgetUnlessPending`] operations that deleted their record.
    pub forgotten: u64,
}

impl std::ops::AddAssign for WriteOutcome {
    fn add_assign(&mut self, other: Self) {
        self.merged += other.merged;
        self.superseded += other.superseded;
        self.forgotten += other.forgotten;
    }
}

/// The conflict-relevant state of what a store holds for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVersion {
    /// The stored version (of the record or of its tombstone).
    pub version: Hlc,
    /// Whether what is stored is a tombstone.
    pub deleted: bool,
    /// Its body (empty for tombstones).
    pub body: Vec<u8>,
}

/// Decides a [`WriteOp::Merge`]: whether `incoming` wins over `local`
/// (what the store holds for the record) given its conversation's
/// deletion mark, if any ([`Store::deletion_mark`](crate::Store::deletion_mark)) — core's
/// [`resolve_incoming`](chatvault_core::resolve_incoming), the rule the
/// server applies too.
pub fn incoming_wins(
    incoming: &Incoming,
    local: Option<&LocalVersion>,
    deletion_mark: Option<Hlc>,
) -> bool {
    let (remote, covering) = match incoming {
        Incoming::Conversation(r) => (upsert_state(r.version, r.body.as_bytes()), None),
        // Only a message upsert is vetoed by its conversation's deletion.
        Incoming::Message(m) => (upsert_state(m.version, m.body.as_bytes()), deletion_mark),
        Incoming::Tombstone(t) => (
            VersionedState {
                version: t.version,
                deleted: true,
                body: &[],
            },
            None,
        ),
    };
    let local = local.map(|l| VersionedState {
        version: l.version,
        deleted: l.deleted,
        body: &l.body,
    });
    let cover = Cover {
        conversation_deleted: covering,
        purged: None,
    };
    resolve_incoming(local, remote, cover) == Resolution::TakeRemote
}

fn upsert_state(version: Hlc, body: &[u8]) -> VersionedState<'_> {
    VersionedState {
        version,
        deleted: false,
        body,
    }
}

/// Decides a [`WriteOp::MergeAndEnqueue`]: [`incoming_wins`], except that
/// a local record (or tombstone) of the very same version always stays.
pub fn import_wins(
    incoming: &Incoming,
    local: Option<&LocalVersion>,
    deletion_mark: Option<Hlc>,
) -> bool {
    let (version, deleted) = match incoming {
        Incoming::Conversation(r) => (r.version, false),
        Incoming::Message(m) => (m.version, false),
        Incoming::Tombstone(t) => (t.version, true),
    };
    if local.is_some_and(|l| l.version == version && l.deleted == deleted) {
        return false;
    }
    incoming_wins(incoming, local, deletion_mark)
}

/// The kind and id of the record an [`Incoming`] writes.
pub fn incoming_key(incoming: &Incoming) -> (EntityKind, RecordId) {
    match incoming {
        Incoming::Conversation(r) => (EntityKind::Conversation, r.id.into()),
        Incoming::Message(m) => (EntityKind::Message, m.id.into()),
        Incoming::Tombstone(t) => (t.kind, t.id),
    }
}

/// The conversation whose deletion mark can veto an incoming message.
pub fn incoming_parent(incoming: &Incoming) -> Option<ConversationId> {
    match incoming {
        Incoming::Message(m) => Some(m.conversation_id),
        _ => None,
    }
}

/// The outbox entry that queues an [`Incoming`] record for sync.
pub fn incoming_outbox_item(incoming: &Incoming, op_id: OpId) -> OutboxItem {
    let (kind, entity_id) = incoming_key(incoming);
    let conversation_id = match incoming {
        Incoming::Conversation(_) => None,
        Incoming::Message(m) => Some(m.conversation_id),
        Incoming::Tombstone(t) => t.conversation_id,
    };
    OutboxItem {
        op_id,
        kind,
        entity_id,
        conversation_id,
    }
}

/// The plain write a winning [`WriteOp::Merge`] turns into.
pub fn merged_op(incoming: Incoming) -> WriteOp {
    match incoming {
        Incoming::Conversation(r) => WriteOp::PutConversation(r),
        Incoming::Message(m) => WriteOp::PutMessage(m),
        Incoming::Tombstone(t) => WriteOp::Delete(t),
    }
}

/// Operations applied all-or-nothing, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Applied in this order; each sees the effects of the ones before.
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends an operation.
    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The outbox's pointer to a changed record. The change itself is built
/// from the record's current state when the outbox is read, so the outbox
/// never duplicates content and never outgrows the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxItem {
    /// Fresh for every local write (server-side idempotency).
    pub op_id: OpId,
    /// Conversation or message: which table the change is read from.
    pub kind: EntityKind,
    /// The changed record; at most one entry per record is pending.
    pub entity_id: RecordId,
    /// For messages, their conversation (so deleting it drops them).
    pub conversation_id: Option<ConversationId>,
}

/// A pending change read from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the outbox; pass to [`Store::acknowledge`](crate::Store::acknowledge).
    pub seq: u64,
    /// The change, built from the record's current state.
    pub change: Change,
}

/// An outbox entry exactly as a store keeps it, pending or parked: what
/// [`Store::outbox_entries`](crate::Store::outbox_entries) lists and
/// [`WriteOp::RestoreOutbox`] writes back (a migration between backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutboxEntry {
    /// Position in the outbox.
    pub seq: u64,
    /// The change's pointer (op id, record).
    pub item: OutboxItem,
    /// The latest refusal while the change is parked; `None` while pending.
    pub parked: Option<ParkReason>,
    /// How many times the server refused it (kept across a retry).
    pub attempts: u32,
}

/// One entry of a store's metadata table
/// ([`Store::meta_entries`](crate::Store::meta_entries)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry {
    /// The key.
    pub key: String,
    /// Its value, as stored (the store never interprets it).
    pub value: Vec<u8>,
}

/// A conversation's **kept** deletion mark
/// ([`Store::deletion_marks`](crate::Store::deletion_marks)): the highest
/// stamp it was deleted at by [`WriteOp::CoverMessages`] and by tombstones
/// a recreation replaced. Its tombstone, while it has one, is not part of
/// it (it counts in [`Store::deletion_mark`](crate::Store::deletion_mark)
/// by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionMark {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The kept mark.
    pub version: Hlc,
}

/// Why and when the server refused a change ([`WriteOp::Park`]). The store
/// keeps it as given; the sync client owns the vocabulary of `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkReason {
    /// A short machine-readable reason (e.g. `payload_too_large`).
    pub code: String,
    /// The server's explanation, for people.
    pub message: String,
    /// When it was refused.
    pub at: Timestamp,
}

/// A parked change read back with [`Store::parked`](crate::Store::parked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEntry {
    /// Position in the outbox (parked entries keep theirs).
    pub seq: u64,
    /// The change, built from the record's current state.
    pub change: Change,
    /// The latest refusal.
    pub reason: ParkReason,
    /// How many times this change was refused (parking counts one; a
    /// retry keeps the count; a new local write starts over).
    pub attempts: u32,
}

/// Stored size of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationUsage {
    /// Which conversation these totals are for.
    pub id: ConversationId,
    /// Its derived activity time (see [`ConversationRow::activity_at`]).
    pub activity_at: Timestamp,
    /// Number of messages.
    pub messages: u64,
    /// Stored body bytes of the conversation and its messages (after
    /// encryption, if any).
    pub bytes: u64,
    /// Whether it or one of its messages has a change not yet acknowledged
    /// (pending or parked).
    pub pending: bool,
}

/// Counts and sizes of everything in a store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    /// Live conversations.
    pub conversations: u64,
    /// Live messages (including any whose conversation has not arrived).
    pub messages: u64,
    /// Tombstones kept.
    pub tombstones: u64,
    /// Changes waiting in the outbox to be pushed (parked ones excluded).
    pub pending_changes: u64,
    /// Changes the server refused, parked in the outbox until retried or
    /// discarded.
    pub parked_changes: u64,
    /// Stored body bytes of all live records.
    pub bytes: u64,
    /// Per conversation, most recent activity first.
    pub per_conversation: Vec<ConversationUsage>,
}

/// How much room a store takes and has, as far as the backend can tell
/// ([`Store::footprint`](crate::Store::footprint)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Footprint {
    /// Bytes the store occupies: its files on disk (for SQLite the database
    /// plus its write-ahead log), or the memory its records hold.
    pub used_bytes: u64,
    /// Of `used_bytes`, free space inside the store that
    /// [`Store::compact`](crate::Store::compact) would give back.
    pub reclaimable_bytes: u64,
    /// How much more the store can grow: the free disk space (natively),
    /// the quota left (browser, or a store opened with a cap), whichever is
    /// smaller. `None` if unknown.
    pub available_bytes: Option<u64>,
    /// An explicit cap on the store's size (a quota), if it has one.
    pub quota_bytes: Option<u64>,
    /// Whether the data survives the process and the platform's storage
    /// eviction (a file natively: yes; browser storage only once the
    /// browser granted persistence; memory: no).
    pub persistent: bool,
}

/// What [`Store::compact`](crate::Store::compact) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compaction {
    /// [`Footprint::used_bytes`] before.
    pub before_bytes: u64,
    /// [`Footprint::used_bytes`] after.
    pub after_bytes: u64,
}

/// Refuses a page size of 0 with [`StoreError::InvalidRequest`](crate::StoreError)
/// (every backend's paged reads share this rule).
pub fn check_limit(limit: usize) -> crate::Result<()> {
    if limit == 0 {
        return Err(crate::StoreError::InvalidRequest(
            "page size must be at least 1".into(),
        ));
    }
    Ok(())
}
