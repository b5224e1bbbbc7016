//! The push planner: what one push batch does to an account's records,
//! decided as a pure function of what the store read beforehand.
//!
//! A backend reads everything [`PushReads`] names — the remembered outcomes
//! of the batch's op ids, the stored versions of the records it touches and
//! of the conversations its messages belong to, the feed head — in as few
//! queries as it can, hands them to [`plan`] as a [`PushState`], and writes
//! the resulting [`PushPlan`] in the same transaction. So every backend
//! applies a batch identically, and the rules (idempotent replay, LWW with
//! tombstone cover via `crate::sync::decide`, a conversation deletion
//! dropping the messages it covers, gap-free sequence numbers) are tested
//! here with plain data.
//!
//! Must never touch a store, a clock or the network, and never decode a
//! record body (bodies only break LWW ties, compared as bytes).

use std::collections::{BTreeMap, HashMap};

use chatvault_core::{
    Change, ConversationId, Cover, EntityKind, Hlc, OpId, RecordId, VersionedState,
};

use crate::store::Outcome;
use crate::sync::{decide, state_of, Verdict};
use crate::types::Seq;

/// Which record a row of the `records` table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RecordKey {
    pub kind: EntityKind,
    pub id: RecordId,
}

impl RecordKey {
    fn of(change: &Change) -> Self {
        RecordKey {
            kind: change.kind,
            id: change.entity_id,
        }
    }

    fn conversation(id: ConversationId) -> Self {
        RecordKey {
            kind: EntityKind::Conversation,
            id: id.into(),
        }
    }
}

/// What the server holds for one record, as far as the planner cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredVersion {
    pub version: Hlc,
    pub deleted: bool,
    /// For messages (and message tombstones): the conversation the row
    /// names, which a conversation deletion matches on.
    pub conversation_id: Option<ConversationId>,
    /// Empty for tombstones.
    pub body: Vec<u8>,
    /// For conversations: the highest stamp it was ever deleted at (kept
    /// when it is recreated), if it was.
    pub deletion_mark: Option<Hlc>,
}

impl StoredVersion {
    /// The deletion mark, counting the row's own version if it is a
    /// tombstone (rows written before marks were kept have none).
    fn mark(&self) -> Option<Hlc> {
        self.deletion_mark.max(self.deleted.then_some(self.version))
    }
}

/// What a backend must read before planning a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PushReads {
    /// Op ids whose remembered outcome (if any) the planner needs.
    pub op_ids: Vec<OpId>,
    /// Records whose stored version (if any) the planner needs.
    pub records: Vec<RecordKey>,
}

impl PushReads {
    /// Everything `changes` can depend on, each named once.
    pub(crate) fn of(changes: &[Change]) -> Self {
        let mut op_ids: Vec<OpId> = changes.iter().map(|c| c.op_id).collect();
        op_ids.sort_unstable();
        op_ids.dedup();
        let mut records: Vec<RecordKey> = changes
            .iter()
            .flat_map(|c| {
                let parent = match c.kind {
                    EntityKind::Message => c.conversation_id.map(RecordKey::conversation),
                    EntityKind::Conversation => None,
                };
                std::iter::once(RecordKey::of(c)).chain(parent)
            })
            .collect();
        records.sort_unstable();
        records.dedup();
        PushReads { op_ids, records }
    }

    /// The ids of the records of `kind` to read.
    pub(crate) fn ids_of(&self, kind: EntityKind) -> Vec<String> {
        self.records
            .iter()
            .filter(|k| k.kind == kind)
            .map(|k| k.id.to_string())
            .collect()
    }
}

/// What the store read for a batch (see [`PushReads`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PushState {
    /// The account's feed head before the batch.
    pub head: Seq,
    /// Remembered outcomes of op ids pushed before.
    pub seen: HashMap<OpId, Outcome>,
    /// Stored versions; a key that is absent has no row.
    pub records: HashMap<RecordKey, StoredVersion>,
    /// The account's purge mark: the highest stamp among its purged
    /// tombstones.
    pub purged: Option<Hlc>,
}

/// One record row to write (insert or replace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordWrite<'a> {
    /// The change whose record the row holds.
    pub change: &'a Change,
    /// The sequence number it was applied at.
    pub seq: Seq,
    /// The row's deletion mark (conversations only; see
    /// [`StoredVersion::deletion_mark`]).
    pub deletion_mark: Option<Hlc>,
}

/// What a batch does, for a backend to write in one transaction, in this
/// order: `covered`, then `writes`, then `remember`, then the new `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushPlan<'a> {
    /// One outcome per change, in batch order.
    pub outcomes: Vec<Outcome>,
    /// Outcomes to remember for op ids seen for the first time.
    pub remember: Vec<(OpId, Outcome)>,
    /// Conversation deletions applied: delete every stored message row
    /// (tombstones too) of that conversation at or below that version.
    /// Runs before `writes`, which never hold a covered row.
    pub covered: Vec<(ConversationId, Hlc)>,
    /// Rows to write: the last applied version of each record, in
    /// sequence order.
    pub writes: Vec<RecordWrite<'a>>,
    /// Stored conversation rows (not in `writes`) whose deletion mark a
    /// superseded tombstone raised: set the mark and move the row to the
    /// sequence number, so devices pull it again and learn the mark
    /// (`deletedThrough`). Runs after `writes`.
    pub remarks: Vec<(ConversationId, Hlc, Seq)>,
    /// The feed head after the batch.
    pub head: Seq,
}

impl PushPlan<'_> {
    /// Whether the batch applied anything (so readers should be poked).
    pub(crate) fn applied_any(&self, before: Seq) -> bool {
        self.head > before
    }
}

/// A record as the batch leaves it so far: stored, or written by an
/// earlier change of the batch.
#[derive(Debug, Clone, Copy)]
struct Held<'a> {
    version: Hlc,
    deleted: bool,
    conversation_id: Option<ConversationId>,
    body: &'a [u8],
    /// Deletion mark, own tombstone included.
    mark: Option<Hlc>,
    written: Option<RecordWrite<'a>>,
}

impl<'a> Held<'a> {
    fn state(&self) -> VersionedState<'a> {
        VersionedState {
            version: self.version,
            deleted: self.deleted,
            body: self.body,
        }
    }
}

/// Plans `changes` against `state`, deciding each change in batch order
/// against what the earlier ones left, exactly as if they were applied one
/// by one: an op id already seen (before, or earlier in this batch) gets
/// its remembered outcome; any other change is decided by
/// `crate::sync::decide` and, when applied, takes the next sequence number.
pub(crate) fn plan<'a>(changes: &'a [Change], state: &'a PushState) -> PushPlan<'a> {
    let mut held: HashMap<RecordKey, Held<'a>> = state
        .records
        .iter()
        .map(|(key, s)| {
            let h = Held {
                version: s.version,
                deleted: s.deleted,
                conversation_id: s.conversation_id,
                body: &s.body,
                mark: s.mark(),
                written: None,
            };
            (*key, h)
        })
        .collect();
    let mut fresh: HashMap<OpId, Outcome> = HashMap::new();
    let mut head = state.head;
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut remember = Vec::new();
    let mut covered: BTreeMap<ConversationId, Hlc> = BTreeMap::new();
    let mut remarks: BTreeMap<ConversationId, (Hlc, Seq)> = BTreeMap::new();

    for change in changes {
        if let Some(known) = state.seen.get(&change.op_id).or(fresh.get(&change.op_id)) {
            outcomes.push(*known);
            continue;
        }
        let key = RecordKey::of(change);
        // A conversation's deletion mark outlives its recreation: a
        // message from before the deletion stays covered.
        let conversation_deleted = match (change.kind, change.conversation_id) {
            (EntityKind::Message, Some(conv)) => held
                .get(&RecordKey::conversation(conv))
                .and_then(|c| c.mark),
            _ => None,
        };
        let previous = held.get(&key);
        let current = previous.map(Held::state);
        let cover = Cover {
            conversation_deleted,
            purged: state.purged,
        };
        let outcome = match decide(change, current, cover) {
            Verdict::Supersede => Outcome::Superseded,
            Verdict::Apply => {
                head = Seq(head.0 + 1);
                let row = state_of(change);
                let mark = match change.kind {
                    EntityKind::Conversation => previous
                        .and_then(|p| p.mark)
                        .max(row.deleted.then_some(row.version)),
                    EntityKind::Message => None,
                };
                let write = RecordWrite {
                    change,
                    seq: head,
                    deletion_mark: mark,
                };
                held.insert(
                    key,
                    Held {
                        version: row.version,
                        deleted: row.deleted,
                        conversation_id: change.conversation_id,
                        body: row.body,
                        mark,
                        written: Some(write),
                    },
                );
                Outcome::Applied(head)
            }
        };
        if change.kind == EntityKind::Conversation && change.is_delete() {
            // A conversation's deletion covers its messages stamped at or
            // below it even when a newer version of the conversation wins
            // (core's rule): drop them, keeping them would only hand
            // deleted content to the next snapshot.
            let conv = change.entity_id.conversation();
            held.retain(|k, h| {
                !(k.kind == EntityKind::Message
                    && h.conversation_id == Some(conv)
                    && h.version <= change.version)
            });
            let at = covered.entry(conv).or_insert(change.version);
            *at = (*at).max(change.version);
            if outcome == Outcome::Superseded {
                // The winner keeps the higher mark, and devices that hold
                // it must hear of it.
                if let Some(row) = held.get_mut(&key) {
                    if row.mark < Some(change.version) {
                        row.mark = Some(change.version);
                        match &mut row.written {
                            Some(write) => write.deletion_mark = row.mark,
                            None => match remarks.get_mut(&conv) {
                                Some(remark) => remark.0 = change.version,
                                None => {
                                    head = Seq(head.0 + 1);
                                    remarks.insert(conv, (change.version, head));
                                }
                            },
                        }
                    }
                }
            }
        }
        fresh.insert(change.op_id, outcome);
        remember.push((change.op_id, outcome));
        outcomes.push(outcome);
    }

    let mut writes: Vec<RecordWrite<'a>> = held.values().filter_map(|h| h.written).collect();
    writes.sort_unstable_by_key(|w| w.seq);
    let remarks = remarks
        .into_iter()
        .map(|(conv, (mark, seq))| (conv, mark, seq))
        .collect();
    PushPlan {
        outcomes,
        remember,
        covered: covered.into_iter().collect(),
        writes,
        remarks,
        head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatvault_core::{
        Body, ConversationRecord, DeviceId, MessageId, MessageRecord, Timestamp, Tombstone, UserId,
    };

    fn hlc(wall: u64) -> Hlc {
        Hlc::new(wall, 0, DeviceId(1)).unwrap()
    }

    fn conversation(id: ConversationId, wall: u64) -> Change {
        Change::upsert_conversation(
            OpId::new(),
            &ConversationRecord {
                id,
                user_id: UserId::try_from("u".to_owned()).unwrap(),
                created_at: Timestamp(1),
                updated_at: Timestamp(1),
                version: hlc(wall),
                body: Body(b"c".to_vec()),
            },
        )
    }

    fn message(id: MessageId, conv: ConversationId, wall: u64) -> Change {
        Change::upsert_message(
            OpId::new(),
            &MessageRecord {
                id,
                conversation_id: conv,
                created_at: Timestamp(1),
                updated_at: Timestamp(1),
                version: hlc(wall),
                body: Body(b"m".to_vec()),
            },
        )
    }

    fn delete_conversation(id: ConversationId, wall: u64) -> Change {
        Change::delete(
            OpId::new(),
            &Tombstone::conversation(id, hlc(wall), Timestamp(2)),
        )
    }

    fn stored(wall: u64, deleted: bool, conv: Option<ConversationId>) -> StoredVersion {
        StoredVersion {
            version: hlc(wall),
            deleted,
            conversation_id: conv,
            body: if deleted { Vec::new() } else { b"s".to_vec() },
            deletion_mark: None,
        }
    }

    fn key_of(change: &Change) -> RecordKey {
        RecordKey::of(change)
    }

    fn written(plan: &PushPlan<'_>) -> Vec<(RecordKey, u64)> {
        plan.writes
            .iter()
            .map(|w| (key_of(w.change), w.seq.0))
            .collect()
    }

    #[test]
    fn fresh_changes_apply_in_order_with_gap_free_sequence_numbers() {
        let conv = ConversationId::new();
        let changes = vec![conversation(conv, 5), message(MessageId::new(), conv, 6)];
        let state = PushState {
            head: Seq(7),
            ..PushState::default()
        };
        let p = plan(&changes, &state);
        assert_eq!(
            p.outcomes,
            vec![Outcome::Applied(Seq(8)), Outcome::Applied(Seq(9))]
        );
        assert_eq!(p.head, Seq(9));
        assert!(p.applied_any(Seq(7)));
        assert_eq!(
            written(&p),
            vec![(key_of(&changes[0]), 8), (key_of(&changes[1]), 9)]
        );
        assert_eq!(p.remember.len(), 2);
        assert!(p.covered.is_empty());
    }

    #[test]
    fn a_replayed_batch_changes_nothing() {
        let conv = ConversationId::new();
        let changes = vec![conversation(conv, 5)];
        let state = PushState {
            head: Seq(3),
            seen: HashMap::from([(changes[0].op_id, Outcome::Applied(Seq(2)))]),
            ..PushState::default()
        };
        let p = plan(&changes, &state);
        assert_eq!(p.outcomes, vec![Outcome::Applied(Seq(2))]);
        assert_eq!(p.head, Seq(3));
        assert!(!p.applied_any(Seq(3)));
        assert!(p.writes.is_empty() && p.remember.is_empty());
    }

    #[test]
    fn a_duplicate_op_id_in_one_batch_gets_the_first_outcome() {
        let conv = ConversationId::new();
        let first = conversation(conv, 5);
        let mut again = conversation(conv, 9);
        again.op_id = first.op_id;
        let changes = vec![first, again];
        let empty = PushState::default();
        let p = plan(&changes, &empty);
        assert_eq!(
            p.outcomes,
            vec![Outcome::Applied(Seq(1)), Outcome::Applied(Seq(1))]
        );
        assert_eq!(
            p.remember,
            vec![(changes[0].op_id, Outcome::Applied(Seq(1)))]
        );
        assert_eq!(written(&p), vec![(key_of(&changes[0]), 1)]);
        assert_eq!(p.writes[0].change.version, hlc(5));
    }

    #[test]
    fn older_or_equal_versions_are_superseded_by_what_is_stored() {
        let conv = ConversationId::new();
        let changes = vec![conversation(conv, 5), conversation(conv, 7)];
        let state = PushState {
            records: HashMap::from([(key_of(&changes[0]), stored(6, false, None))]),
            ..PushState::default()
        };
        let p = plan(&changes, &state);
        assert_eq!(
            p.outcomes,
            vec![Outcome::Superseded, Outcome::Applied(Seq(1))]
        );
        // Equal stamp, larger stored body ("s" > "c"): the stored one stays.
        let changes = vec![conversation(conv, 6)];
        let p = plan(&changes, &state);
        assert_eq!(p.outcomes, vec![Outcome::Superseded]);
        assert!(p.writes.is_empty());
        assert_eq!(p.remember, vec![(changes[0].op_id, Outcome::Superseded)]);
    }

    #[test]
    fn a_later_change_in_the_batch_sees_the_earlier_one() {
        let conv = ConversationId::new();
        let changes = vec![
            conversation(conv, 8),
            conversation(conv, 7),
            conversation(conv, 9),
        ];
        let empty = PushState::default();
        let p = plan(&changes, &empty);
        assert_eq!(
            p.outcomes,
            vec![
                Outcome::Applied(Seq(1)),
                Outcome::Superseded,
                Outcome::Applied(Seq(2))
            ]
        );
        // One row per record: the last applied version.
        assert_eq!(written(&p), vec![(key_of(&changes[2]), 2)]);
        assert_eq!(p.writes[0].change.version, hlc(9));
    }

    #[test]
    fn a_stored_conversation_tombstone_covers_older_messages_only() {
        let conv = ConversationId::new();
        let changes = vec![
            message(MessageId::new(), conv, 10),
            message(MessageId::new(), conv, 11),
        ];
        let state = PushState {
            records: HashMap::from([(RecordKey::conversation(conv), stored(10, true, None))]),
            ..PushState::default()
        };
        let p = plan(&changes, &state);
        assert_eq!(
            p.outcomes,
            vec![Outcome::Superseded, Outcome::Applied(Seq(1))]
        );
        assert_eq!(written(&p), vec![(key_of(&changes[1]), 1)]);
    }

    #[test]
    fn a_conversation_delete_drops_its_covered_messages_in_and_before_the_batch() {
        let conv = ConversationId::new();
        let other = ConversationId::new();
        let (old, new, moved) = (MessageId::new(), MessageId::new(), MessageId::new());
        let changes = vec![
            message(old, conv, 3),               // applied, then covered
            message(new, conv, 12),              // newer than the deletion: stays
            message(moved, other, 4),            // another conversation: stays
            delete_conversation(conv, 10),       // covers messages at or below 10
            message(MessageId::new(), conv, 9),  // covered by the new tombstone
            message(MessageId::new(), conv, 11), // newer: applies
        ];
        let state = PushState {
            records: HashMap::from([(key_of(&changes[0]), stored(2, false, Some(conv)))]),
            ..PushState::default()
        };
        let p = plan(&changes, &state);
        assert_eq!(
            p.outcomes,
            vec![
                Outcome::Applied(Seq(1)),
                Outcome::Applied(Seq(2)),
                Outcome::Applied(Seq(3)),
                Outcome::Applied(Seq(4)),
                Outcome::Superseded,
                Outcome::Applied(Seq(5)),
            ]
        );
        assert_eq!(p.covered, vec![(conv, hlc(10))]);
        assert_eq!(
            written(&p),
            vec![
                (key_of(&changes[1]), 2),
                (key_of(&changes[2]), 3),
                (key_of(&changes[3]), 4),
                (key_of(&changes[5]), 5),
            ]
        );
        assert_eq!(p.head, Seq(5));
    }

    #[test]
    fn a_recreated_conversation_still_covers_messages_from_before_its_deletion() {
        let conv = ConversationId::new();
        let changes = vec![
            delete_conversation(conv, 10),
            conversation(conv, 20),
            message(MessageId::new(), conv, 5),
            message(MessageId::new(), conv, 10),
            message(MessageId::new(), conv, 15),
        ];
        let empty = PushState::default();
        let p = plan(&changes, &empty);
        assert_eq!(
            p.outcomes,
            vec![
                Outcome::Applied(Seq(1)),
                Outcome::Applied(Seq(2)),
                Outcome::Superseded,
                Outcome::Superseded,
                Outcome::Applied(Seq(3))
            ]
        );
        assert_eq!(p.covered, vec![(conv, hlc(10))]);
        // The recreated conversation's row keeps the mark.
        let row = p.writes.iter().find(|w| w.seq == Seq(2)).unwrap();
        assert_eq!(row.deletion_mark, Some(hlc(10)));

        // Across batches: the stored row's mark covers just the same.
        let state = PushState {
            records: HashMap::from([(
                RecordKey::conversation(conv),
                StoredVersion {
                    deletion_mark: Some(hlc(10)),
                    ..stored(20, false, None)
                },
            )]),
            ..PushState::default()
        };
        let late = vec![message(MessageId::new(), conv, 9), conversation(conv, 30)];
        let p = plan(&late, &state);
        assert_eq!(
            p.outcomes,
            vec![Outcome::Superseded, Outcome::Applied(Seq(1))]
        );
        assert_eq!(
            p.writes[0].deletion_mark,
            Some(hlc(10)),
            "a rename keeps the mark"
        );
    }

    #[test]
    fn a_superseded_conversation_delete_still_covers_older_messages_and_marks_the_winner() {
        let conv = ConversationId::new();
        let (old, new) = (MessageId::new(), MessageId::new());
        let state = PushState {
            head: Seq(4),
            records: HashMap::from([
                (RecordKey::conversation(conv), stored(20, false, None)),
                (
                    RecordKey {
                        kind: EntityKind::Message,
                        id: old.into(),
                    },
                    stored(5, false, Some(conv)),
                ),
            ]),
            ..PushState::default()
        };
        // A delete at 10 loses to the rename at 20, but not its cover.
        let changes = vec![
            delete_conversation(conv, 10),
            message(MessageId::new(), conv, 8),
            message(new, conv, 12),
            delete_conversation(conv, 11),
        ];
        let p = plan(&changes, &state);
        assert_eq!(
            p.outcomes,
            vec![
                Outcome::Superseded,
                Outcome::Superseded,
                Outcome::Applied(Seq(6)),
                Outcome::Superseded
            ]
        );
        assert_eq!(p.covered, vec![(conv, hlc(11))]);
        // The stored winner moves once, to the first new number, carrying
        // the highest mark; numbers stay gap-free.
        assert_eq!(p.remarks, vec![(conv, hlc(11), Seq(5))]);
        assert_eq!(p.head, Seq(6));
        assert_eq!(written(&p), vec![(key_of(&changes[2]), 6)]);
    }

    #[test]
    fn the_purge_mark_supersedes_stale_writes_to_records_the_server_forgot() {
        let conv = ConversationId::new();
        let live = ConversationId::new();
        let changes = vec![
            conversation(conv, 7),              // its tombstone was purged
            message(MessageId::new(), conv, 8), // ditto
            conversation(conv, 12),             // stamped after: a new version
            conversation(live, 5),              // held: plain LWW
        ];
        let state = PushState {
            records: HashMap::from([(RecordKey::conversation(live), stored(4, false, None))]),
            purged: Some(hlc(10)),
            ..PushState::default()
        };
        let p = plan(&changes, &state);
        assert_eq!(
            p.outcomes,
            vec![
                Outcome::Superseded,
                Outcome::Superseded,
                Outcome::Applied(Seq(1)),
                Outcome::Applied(Seq(2))
            ]
        );
    }

    #[test]
    fn message_deletes_are_covered_too_and_tombstones_are_written() {
        let conv = ConversationId::new();
        let msg = MessageId::new();
        let delete_old = Change::delete(
            OpId::new(),
            &Tombstone::message(msg, conv, hlc(4), Timestamp(2)),
        );
        let delete_new = Change::delete(
            OpId::new(),
            &Tombstone::message(msg, conv, hlc(14), Timestamp(2)),
        );
        let changes = vec![delete_old, delete_new];
        let state = PushState {
            records: HashMap::from([(RecordKey::conversation(conv), stored(10, true, None))]),
            ..PushState::default()
        };
        let p = plan(&changes, &state);
        assert_eq!(
            p.outcomes,
            vec![Outcome::Superseded, Outcome::Applied(Seq(1))]
        );
        assert!(p.writes[0].change.is_delete());
    }

    #[test]
    fn reads_name_each_op_record_and_parent_once() {
        let conv = ConversationId::new();
        let m = MessageId::new();
        let mut dup = message(m, conv, 2);
        let first = message(m, conv, 1);
        dup.op_id = first.op_id;
        let changes = vec![first, dup, conversation(conv, 3)];
        let reads = PushReads::of(&changes);
        assert_eq!(reads.op_ids.len(), 2);
        assert_eq!(reads.records.len(), 2);
        assert_eq!(reads.ids_of(EntityKind::Message), vec![m.to_string()]);
        assert_eq!(
            reads.ids_of(EntityKind::Conversation),
            vec![conv.to_string()]
        );
    }
}
