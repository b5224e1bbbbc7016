//! The last-writer-wins rule, as a pure function.
//!
//! Two versions of one record (either may be a tombstone) are ordered by
//! their [`Hlc`] stamp. Equal stamps can only come from the same device
//! re-issuing a stamp (a restored backup, say); the tie is broken
//! deterministically — a deletion beats an upsert, then the larger body
//! bytes win — so every device picks the same winner whatever the order in
//! which it sees the versions. That makes [`merge`] commutative,
//! associative and idempotent, which is what convergence needs.
//!
//! [`resolve_incoming`] adds the rules beyond plain LWW, the one decision
//! the server (on push) and every client store (on pull and import) make
//! about an incoming version:
//!
//! - **Deleting a conversation covers what was stamped before it.** A
//!   conversation tombstone with version `T` beats every version of that
//!   conversation and every write to one of its messages stamped `<= T`,
//!   wherever and whenever they arrive. The conversation's *deletion mark*
//!   (its highest deletion stamp) is remembered even after the
//!   conversation is recreated, so a late message from before the deletion
//!   never comes back with it.
//! - **A change stamped after the deletion recreates.** A conversation
//!   version above `T` (a rename made after the delete) wins as in plain
//!   LWW; the conversation then holds exactly its messages stamped above
//!   `T`. Messages stamped above `T` are never covered.
//! - **Purged tombstones still cover.** A replica that purged tombstones
//!   keeps the highest stamp it purged (its *purge mark*): a write to a
//!   record it holds nothing of, stamped at or below that mark, may be
//!   older than a deletion it forgot, and is superseded instead of
//!   applied.

use crate::Hlc;
use std::cmp::Ordering;

/// The parts of a record version that decide a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionedState<'a> {
    /// The version stamp.
    pub version: Hlc,
    /// Whether this version is a deletion.
    pub deleted: bool,
    /// The stored body (empty for tombstones).
    pub body: &'a [u8],
}

impl VersionedState<'_> {
    fn rank(&self, other: &Self) -> Ordering {
        self.version
            .cmp(&other.version)
            .then(self.deleted.cmp(&other.deleted))
            .then_with(|| self.body.cmp(other.body))
    }
}

/// What to do with an incoming version given the local one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The local version stays; the incoming one is older (or identical).
    KeepLocal,
    /// The incoming version replaces the local one (or there was none).
    TakeRemote,
}

/// Decides between what a store holds (`local`, `None` if nothing) and an
/// incoming version. Identical versions keep the local one, so applying the
/// same change twice changes nothing.
pub fn resolve(local: Option<VersionedState<'_>>, remote: VersionedState<'_>) -> Resolution {
    match local {
        Some(l) if l.rank(&remote) != Ordering::Less => Resolution::KeepLocal,
        _ => Resolution::TakeRemote,
    }
}

/// Whether deleting a conversation with version `tombstone` covers a
/// message write stamped `message`: a message older than its
/// conversation's deletion stays deleted (ties go to the deletion, as in
/// [`merge`]), so a late write cannot resurrect a deleted conversation's
/// content. Every store and the server apply this same rule.
pub fn covered_by_conversation_tombstone(message: Hlc, tombstone: Option<Hlc>) -> bool {
    tombstone.is_some_and(|t| t >= message)
}

/// What besides the record's own stored version can veto an incoming
/// write (see the module docs). `Cover::default()` vetoes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cover {
    /// For a message write: the deletion mark of its conversation — the
    /// highest stamp it was ever deleted at, whether or not it was
    /// recreated since. `None` for a conversation write, or a conversation
    /// never deleted.
    pub conversation_deleted: Option<Hlc>,
    /// The replica's purge mark: the highest stamp among the tombstones it
    /// has purged (`None` if it never purged one).
    pub purged: Option<Hlc>,
}

/// The last-writer-wins rule with deletion cover, as every replica
/// applies it to an incoming version of one record: `local` is what the
/// replica holds for that record (`None` if nothing), `cover` what else
/// can veto it (see [`Cover`] and the module docs).
///
/// A covered write loses whatever `local` holds; otherwise [`resolve`]
/// decides. Identical versions keep the local one, so a replayed change
/// changes nothing.
pub fn resolve_incoming(
    local: Option<VersionedState<'_>>,
    incoming: VersionedState<'_>,
    cover: Cover,
) -> Resolution {
    if covered_by_conversation_tombstone(incoming.version, cover.conversation_deleted) {
        return Resolution::KeepLocal;
    }
    if local.is_none() && cover.purged.is_some_and(|p| p >= incoming.version) {
        return Resolution::KeepLocal;
    }
    resolve(local, incoming)
}

/// The winner of two versions.
pub fn merge<'a>(a: VersionedState<'a>, b: VersionedState<'a>) -> VersionedState<'a> {
    match resolve(Some(a), b) {
        Resolution::KeepLocal => a,
        Resolution::TakeRemote => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Owned {
        version: Hlc,
        deleted: bool,
        body: Vec<u8>,
    }

    impl Owned {
        fn state(&self) -> VersionedState<'_> {
            VersionedState {
                version: self.version,
                deleted: self.deleted,
                body: &self.body,
            }
        }
    }

    fn owned() -> impl Strategy<Value = Owned> {
        // Small ranges so equal stamps (ties) actually occur.
        (
            0u64..4,
            0u32..3,
            0u64..3,
            any::<bool>(),
            proptest::collection::vec(0u8..3, 0..3),
        )
            .prop_map(|(w, c, d, deleted, body)| Owned {
                version: Hlc::new(w, c, DeviceId(d)).unwrap(),
                deleted,
                body: if deleted { Vec::new() } else { body },
            })
    }

    fn v(wall: u64, dev: u64, deleted: bool, body: &'static [u8]) -> VersionedState<'static> {
        VersionedState {
            version: Hlc::new(wall, 0, DeviceId(dev)).unwrap(),
            deleted,
            body,
        }
    }

    #[test]
    fn newer_delete_beats_older_update_and_vice_versa() {
        let update = v(10, 1, false, b"x");
        let delete = v(11, 2, true, b"");
        assert_eq!(merge(update, delete), delete);
        assert_eq!(merge(delete, update), delete);

        let late_update = v(12, 1, false, b"y");
        assert_eq!(merge(delete, late_update), late_update);
        assert_eq!(merge(late_update, delete), late_update);
    }

    #[test]
    fn applying_the_same_version_twice_keeps_local() {
        let a = v(5, 1, false, b"a");
        assert_eq!(resolve(Some(a), a), Resolution::KeepLocal);
        assert_eq!(resolve(None, a), Resolution::TakeRemote);
    }

    fn deleted_at(wall: u64) -> Cover {
        Cover {
            conversation_deleted: Some(Hlc::new(wall, 0, DeviceId(1)).unwrap()),
            purged: None,
        }
    }

    #[test]
    fn a_conversation_tombstone_covers_older_and_equal_writes_only() {
        let tombstone = deleted_at(10);
        let at = |wall| v(wall, 1, false, b"m");
        assert_eq!(
            resolve_incoming(None, at(9), tombstone),
            Resolution::KeepLocal
        );
        assert_eq!(
            resolve_incoming(None, at(10), tombstone),
            Resolution::KeepLocal
        );
        assert_eq!(
            resolve_incoming(None, at(11), tombstone),
            Resolution::TakeRemote
        );
        // Covered loses even against nothing newer held locally.
        assert_eq!(
            resolve_incoming(Some(at(1)), at(9), tombstone),
            Resolution::KeepLocal
        );
        // Without a tombstone it is plain LWW.
        assert_eq!(
            resolve_incoming(Some(at(1)), at(9), Cover::default()),
            Resolution::TakeRemote
        );
    }

    #[test]
    fn a_purge_mark_covers_only_records_the_replica_does_not_hold() {
        let purged = Cover {
            conversation_deleted: None,
            purged: Some(Hlc::new(10, 0, DeviceId(1)).unwrap()),
        };
        let at = |wall| v(wall, 1, false, b"x");
        // Nothing held, stamped at or before the mark: maybe older than a
        // forgotten deletion.
        assert_eq!(
            resolve_incoming(None, at(10), purged),
            Resolution::KeepLocal
        );
        assert_eq!(resolve_incoming(None, at(3), purged), Resolution::KeepLocal);
        assert_eq!(
            resolve_incoming(None, at(11), purged),
            Resolution::TakeRemote
        );
        // A held record is judged by plain LWW: its own version is known.
        assert_eq!(
            resolve_incoming(Some(at(2)), at(3), purged),
            Resolution::TakeRemote
        );
    }

    #[test]
    fn wall_clock_alone_does_not_decide() {
        // Same wall time: the counter decides, not the device's clock.
        let a = VersionedState {
            version: Hlc::new(5, 2, DeviceId(1)).unwrap(),
            deleted: false,
            body: b"a",
        };
        let b = VersionedState {
            version: Hlc::new(5, 1, DeviceId(9)).unwrap(),
            deleted: false,
            body: b"b",
        };
        assert_eq!(merge(a, b), a);
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in owned(), b in owned()) {
            prop_assert_eq!(merge(a.state(), b.state()), merge(b.state(), a.state()));
        }

        #[test]
        fn merge_is_associative(a in owned(), b in owned(), c in owned()) {
            let left = merge(merge(a.state(), b.state()), c.state());
            let right = merge(a.state(), merge(b.state(), c.state()));
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent(a in owned()) {
            prop_assert_eq!(merge(a.state(), a.state()), a.state());
        }

        /// Messages of one conversation and that conversation's deletions,
        /// delivered in any order to a replica that drops the messages a
        /// deletion covers (as the stores and the server do), end in the
        /// same state: the newest message version above the newest
        /// deletion, or nothing.
        #[test]
        fn tombstone_cover_converges_in_any_order(
            events in proptest::collection::vec((any::<bool>(), owned()), 1..10),
            seed in any::<u64>(),
        ) {
            // (true, v) is a deletion of the conversation at v.version;
            // (false, v) a version of one message in it.
            let replay = |events: &[(bool, Owned)]| {
                let mut tombstone: Option<Hlc> = None;
                let mut message: Option<Owned> = None;
                for (is_conversation_delete, v) in events {
                    if *is_conversation_delete {
                        if tombstone.is_none_or(|t| t < v.version) {
                            tombstone = Some(v.version);
                            if message.as_ref().is_some_and(|m| m.version <= v.version) {
                                message = None;
                            }
                        }
                        continue;
                    }
                    let local = message.as_ref().map(Owned::state);
                    let cover = Cover {
                        conversation_deleted: tombstone,
                        purged: None,
                    };
                    if resolve_incoming(local, v.state(), cover) == Resolution::TakeRemote {
                        message = Some(v.clone());
                    }
                }
                message.map(|m| (m.version, m.deleted, m.body))
            };
            let forward = replay(&events);
            let mut shuffled = events.clone();
            let n = shuffled.len();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(forward, replay(&shuffled));
        }

        #[test]
        fn any_delivery_order_converges(mut versions in proptest::collection::vec(owned(), 1..8), seed in any::<u64>()) {
            let fold = |vs: &[Owned]| {
                let mut acc: Option<VersionedState<'_>> = None;
                for x in vs {
                    acc = Some(match (acc, resolve(acc, x.state())) {
                        (Some(l), Resolution::KeepLocal) => l,
                        _ => x.state(),
                    });
                }
                acc.map(|s| (s.version, s.deleted, s.body.to_vec()))
            };
            let forward = fold(&versions);
            // A deterministic shuffle from the seed.
            let n = versions.len();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                versions.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(forward, fold(&versions));
        }
    }
}
