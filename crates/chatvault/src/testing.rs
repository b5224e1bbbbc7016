//! The conformance suite every store backend runs (feature `testing`).
//!
//! One set of cases, written once against the [`Vault`] and
//! [`Store`] contracts; each backend instantiates it with
//! [`vault_conformance_tests!`](crate::vault_conformance_tests) and a
//! function that builds a [`TestBackend`], as matrix-rust-sdk does for its
//! stores. Test names show the backend and mode, e.g.
//! `sqlite::plaintext::reopen_returns_everything`.
//!
//! Cases return a [`TestResult`] and use `?`, so a failure says what
//! failed; they are written inside `vault_cases!`, which generates each
//! case and its test together, so a case cannot be left out of the run.
//! The Store-level suite (`chatvault_store::testing`) proves the storage
//! contract underneath; this one proves the vault on top of each backend.
//!
//! Also the tools of the reliability tests (`RELIABILITY.md`):
//! [`FailingStore`] fails the Nth store call, [`Snapshot`] captures what a
//! vault shows so it can be compared with a model or a reference vault.

// The store API hands out `Arc<dyn Store>` on every target; in a browser
// stores hold JS handles and are not `Send`, and the one thread makes the
// `Arc` a plain reference count.
#![cfg_attr(target_family = "wasm", allow(clippy::arc_with_non_send_sync))]

use crate::{
    ApplyReport, Clock, ConversationUpdate, ListConversations, ListMessages, ManualClock,
    MessageUpdate, NewConversation, NewMessage, Result, Role, Timestamp, Vault, VaultError,
    VaultOptions,
};
use chatvault_core::Incoming;
use chatvault_core::{
    Body, Change, ConversationId, ConversationRecord, DeviceId, EntityKind, Hlc, MessageId,
    MessageRecord, Metadata, OpId, RecordId, Tombstone, UserId,
};
use chatvault_store::{BatchSource, Store, StoreError, WriteBatch, WriteOp};
use std::future::Future;
use std::sync::Arc;

#[cfg(not(target_family = "wasm"))]
pub use tokio;

/// splitmix64: a seeded generator in a few lines of std, enough for the
/// reliability tests' op mixes and kill moments (the same seed gives the
/// same run in the test and in the writer process it drives).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

pub use chatvault_store::testing::{report, TestResult};

/// Generates cases (as `pub async fn`s taking a [`TestBackend`] and a
/// [`Mode`]) **and**, under the given name, the hidden macro that turns
/// each into a test for [`vault_conformance_tests!`](crate::vault_conformance_tests),
/// from one list, so a case cannot exist without running. The leading
/// `($)` passes a literal `$` into the generated macro.
macro_rules! vault_cases {
    (($d:tt) $list:ident;
     $( $(#[$attr:meta])* async fn $name:ident($b:ident, $mode:ident) $body:block )*) => {
        $(
            $(#[$attr])*
            pub async fn $name($b: &impl TestBackend, $mode: Mode) -> TestResult $body
        )*

        #[doc(hidden)]
        #[macro_export]
        macro_rules! $list {
            ($d test:meta, $d backend:path, $d mode:expr) => {
                $(
                    #[$d test]
                    async fn $name() {
                        let backend = $d backend().await;
                        $d crate::testing::report(
                            stringify!($name),
                            $d crate::testing::cases::$name(&backend, $d mode).await,
                        );
                    }
                )*
            };
        }
    };
}

mod clock;
mod failing;
mod lifecycle;
mod racing;
mod snapshot;

pub use failing::FailingStore;
pub use racing::RacingStore;
pub use snapshot::{Contents, Snapshot};

/// A backend under test.
pub trait TestBackend {
    /// Opens the backend's storage; calling it again reopens the same data
    /// (for a file-backed store, a new connection to the same file).
    fn open(&self) -> impl Future<Output = Arc<dyn Store>>;
    /// Opens separate, fresh storage that refuses to grow past about
    /// `bytes`.
    fn open_with_quota(&self, bytes: u64) -> impl Future<Output = Arc<dyn Store>>;
}

/// Whether the suite runs on a plaintext or an encrypted vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Content stored as plain JSON.
    Plain,
    /// Content sealed under a passphrase-derived key.
    Encrypted,
}

/// The passphrase of every encrypted case.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// Options that keep key derivation fast in tests (never use elsewhere).
pub fn fast_options(clock: Arc<dyn Clock>) -> VaultOptions {
    VaultOptions {
        user_id: UserId::local(),
        clock,
        kdf: chatvault_crypto::KdfParams::insecure_fast_for_tests(),
        kdf_policy: chatvault_crypto::KdfPolicy::insecure_allow_weak_for_tests(),
        ..VaultOptions::default()
    }
}

/// The fixed start time of every case's manual clock.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

async fn vault_on(store: Arc<dyn Store>, mode: Mode, clock: Arc<ManualClock>) -> TestResult<Vault> {
    let options = fast_options(clock);
    let vault = match mode {
        Mode::Plain => Vault::open(store, options).await?,
        Mode::Encrypted => Vault::open_encrypted(store, PASSPHRASE, options).await?,
    };
    assert_eq!(vault.is_encrypted(), mode == Mode::Encrypted);
    Ok(vault)
}

async fn open(b: &impl TestBackend, mode: Mode) -> TestResult<(Vault, Arc<ManualClock>)> {
    let clock = Arc::new(ManualClock::new(T0));
    Ok((vault_on(b.open().await, mode, clock.clone()).await?, clock))
}

fn meta(pairs: &[(&str, serde_json::Value)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn is_not_found<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(VaultError::NotFound { .. }))
}

/// The cases: each returns `Err` (or fails an assertion) on a contract
/// violation.
pub mod cases {
    pub use super::clock::*;
    pub use super::lifecycle::*;
    use super::*;

    vault_cases! {($) __vault_conformance_core;

    /// Create, read, update and delete conversations and messages.
    async fn crud_round_trip(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let md = meta(&[("model", "gpt-x".into()), ("pinned", true.into())]);
        let c = v
            .create_conversation(NewConversation {
                id: None,
                title: "Plans".into(),
                metadata: md.clone(),
            })
            .await?;
        let got = v.conversation(c.id).await?;
        assert_eq!(got, c);
        assert_eq!(got.metadata, md);
        assert!(got.is_pinned());

        clock.advance(10);
        let m = v
            .add_message(c.id, NewMessage::new(Role::User, "hello"))
            .await?;
        assert_eq!(v.message(m.id).await?, m);
        assert_eq!(m.conversation_id, c.id);
        assert_eq!(m.created_at, Timestamp(T0.0 + 10));

        clock.advance(10);
        let renamed = v
            .update_conversation(
                c.id,
                ConversationUpdate {
                    title: Some("Plans for May".into()),
                    metadata: None,
                },
            )
            .await?;
        assert_eq!(renamed.title, "Plans for May");
        assert_eq!(renamed.metadata, md);
        assert!(renamed.version > c.version);
        assert_eq!(v.conversation(c.id).await?.title, "Plans for May");

        let edited = v
            .update_message(
                m.id,
                MessageUpdate {
                    content: Some("hello there".into()),
                    metadata: None,
                },
            )
            .await?;
        assert_eq!(v.message(m.id).await?.content, "hello there");
        assert!(edited.version > m.version);

        v.delete_message(m.id).await?;
        assert!(is_not_found(v.message(m.id).await));
        assert!(is_not_found(v.delete_message(m.id).await));

        v.delete_conversation(c.id).await?;
        assert!(is_not_found(v.conversation(c.id).await));
        assert!(is_not_found(v.delete_conversation(c.id).await));
        assert!(is_not_found(
            v.add_message(c.id, NewMessage::new(Role::User, "late"))
                .await
        ));
        Ok(())
    }

    /// `check_passphrase` answers what opening the vault with that
    /// passphrase would, and changes nothing.
    async fn check_passphrase_answers_as_an_open_would(b, mode) {
        let (v, _) = open(b, mode).await?;
        match mode {
            Mode::Plain => {
                v.check_passphrase(None).await?;
                assert!(matches!(
                    v.check_passphrase(Some(PASSPHRASE)).await,
                    Err(VaultError::NotEncrypted)
                ));
            }
            Mode::Encrypted => {
                v.check_passphrase(Some(PASSPHRASE)).await?;
                assert!(matches!(
                    v.check_passphrase(Some("not the passphrase")).await,
                    Err(VaultError::WrongPassphrase)
                ));
                assert!(matches!(v.check_passphrase(None).await, Err(VaultError::Locked)));
            }
        }
        // Nothing changed: the vault still writes and reads.
        let c = v.create_conversation(NewConversation::titled("still open")).await?;
        assert_eq!(v.conversation(c.id).await?.title, "still open");
        Ok(())
    }

    /// A create with the caller's id can be repeated (a retry after a lost
    /// answer, say a browser tab that forwarded it closed): the repeat
    /// answers what is stored and writes nothing. An id naming other
    /// content, another conversation, a deleted record, or coming twice in
    /// one batch is refused whole, with nothing written.
    async fn creates_with_the_callers_ids_can_be_repeated(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let new_conversation = NewConversation {
            id: Some(ConversationId::new()),
            title: "retried".into(),
            metadata: meta(&[("pinned", true.into())]),
        };
        let c = v.create_conversation(new_conversation.clone()).await?;
        assert_eq!(Some(c.id), new_conversation.id);
        let said = |i: usize| NewMessage {
            id: Some(MessageId::new()),
            metadata: meta(&[("n", i.into())]),
            ..NewMessage::new(Role::User, format!("message {i}"))
        };
        let batch: Vec<_> = (0..3).map(said).collect();
        let added = v.add_messages(c.id, batch.clone()).await?;
        let ids: Vec<_> = added.iter().map(|m| Some(m.id)).collect();
        assert_eq!(ids, batch.iter().map(|n| n.id).collect::<Vec<_>>());
        let before = v.stats().await?;

        clock.advance(1_000);
        assert_eq!(v.create_conversation(new_conversation.clone()).await?, c);
        assert_eq!(v.add_messages(c.id, batch.clone()).await?, added);
        assert_eq!(v.add_message(c.id, batch[1].clone()).await?, added[1]);
        // Repeated with new ones: the repeats keep their places, the new
        // one is written.
        let mixed = vec![batch[2].clone(), said(3), batch[0].clone()];
        let answered = v.add_messages(c.id, mixed).await?;
        assert_eq!(answered[0], added[2]);
        assert_eq!(answered[2], added[0]);
        assert_eq!(answered[1].content, "message 3");
        let after = v.stats().await?;
        assert_eq!(after.messages, before.messages + 1);
        assert_eq!(after.pending_changes, before.pending_changes + 1);

        fn refused<T>(r: Result<T>) -> bool {
            matches!(r, Err(VaultError::IdTaken { .. }))
        }
        let mut renamed = new_conversation.clone();
        renamed.title = "another".into();
        assert!(refused(v.create_conversation(renamed).await));
        let mut edited = batch[0].clone();
        edited.content = "changed".into();
        assert!(refused(v.add_messages(c.id, vec![said(4), edited]).await));
        let elsewhere = v.create_conversation(NewConversation::titled("elsewhere")).await?;
        assert!(refused(v.add_message(elsewhere.id, batch[0].clone()).await));
        let twice = said(5);
        assert!(refused(v.add_messages(c.id, vec![twice.clone(), twice]).await));
        // A message's id is not a conversation's, and the other way round.
        let as_conversation = NewConversation {
            id: Some(ConversationId::from_uuid(*added[0].id.as_uuid())),
            ..NewConversation::titled("an id in use")
        };
        assert!(v.create_conversation(as_conversation).await.is_ok());
        assert_eq!(v.stats().await?.messages, after.messages);

        v.delete_message(added[1].id).await?;
        assert!(refused(v.add_message(c.id, batch[1].clone()).await));
        // A deleted id among new ones: the whole add is refused.
        let before_refusal = v.stats().await?;
        let around = vec![said(7), batch[1].clone(), said(8)];
        assert!(refused(v.add_messages(c.id, around.clone()).await));
        assert!(is_not_found(v.message(around[0].id.ok_or("an id")?).await));
        assert_eq!(v.stats().await?.messages, before_refusal.messages);
        v.delete_conversation(c.id).await?;
        assert!(refused(v.create_conversation(new_conversation).await));
        assert!(is_not_found(v.message(added[1].id).await));
        Ok(())
    }

    /// A message batch for a conversation that was deleted (or never
    /// existed) fails as a whole and leaves nothing behind — the check
    /// happens inside the write, not before it.
    async fn messages_need_their_conversation(b, mode) {
        let (v, _) = open(b, mode).await?;
        let c = v
            .create_conversation(NewConversation::titled("short-lived"))
            .await?;
        v.delete_conversation(c.id).await?;
        let before = v.stats().await?;
        let batch = (0..3)
            .map(|i| NewMessage::new(Role::User, format!("{i}")))
            .collect();
        assert!(is_not_found(v.add_messages(c.id, batch).await));
        assert!(is_not_found(
            v.add_message(ConversationId::new(), NewMessage::new(Role::User, "x"))
                .await
        ));
        assert_eq!(
            v.stats().await?,
            before,
            "nothing of the batch was written"
        );
        Ok(())
    }

    /// Unknown ids are "not found", never a panic or an empty success.
    async fn unknown_ids_are_not_found(b, mode) {
        let (v, _) = open(b, mode).await?;
        assert!(is_not_found(v.conversation(ConversationId::new()).await));
        assert!(is_not_found(v.message(MessageId::new()).await));
        assert!(is_not_found(
            v.messages(ConversationId::new(), ListMessages::default())
                .await
        ));
        assert!(is_not_found(
            v.update_conversation(ConversationId::new(), ConversationUpdate::default())
                .await
        ));
        assert!(is_not_found(
            v.update_message(MessageId::new(), MessageUpdate::default())
                .await
        ));
        Ok(())
    }

    /// Conversations list by activity, newest first, and page without gaps
    /// or repeats; a new message moves its conversation to the top.
    async fn conversations_ordered_and_paged(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let mut ids = Vec::new();
        for i in 0..7 {
            clock.advance(1000);
            ids.push(
                v.create_conversation(NewConversation::titled(format!("c{i}")))
                    .await?
                    .id,
            );
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = v
                .conversations(ListConversations {
                    after,
                    limit: 3,
                    ..Default::default()
                })
                .await?;
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().map(|c| c.id));
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let newest_first: Vec<_> = ids.iter().rev().copied().collect();
        assert_eq!(seen, newest_first);

        clock.advance(1000);
        v.add_message(ids[0], NewMessage::new(Role::User, "bump"))
            .await?;
        let top = v
            .conversations(ListConversations {
                limit: 1,
                ..Default::default()
            })
            .await?;
        assert_eq!(top.items[0].id, ids[0]);
        assert_eq!(top.items[0].updated_at, clock.now());
        Ok(())
    }

    /// Listing by an activity range (the seed's `getConversationsByDate`)
    /// is inclusive at both ends.
    async fn conversations_by_activity_range(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let mut created = Vec::new();
        for day in 0..5 {
            clock.set(Timestamp(T0.0 + day * 86_400_000));
            created.push(
                v.create_conversation(NewConversation::titled(format!("day {day}")))
                    .await?,
            );
        }
        let from = created[1].updated_at;
        let to = created[3].updated_at;
        let got = v.conversations_between(from, to).await?;
        let titles: Vec<_> = got.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["day 3", "day 2", "day 1"]);
        assert!(v
            .conversations_between(Timestamp(0), Timestamp(1))
            .await?
            .is_empty());
        Ok(())
    }

    /// The latest N messages come newest first; the cursor pages back in
    /// time until the first message, with no gaps or repeats.
    async fn latest_messages_paged(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let c = v
            .create_conversation(NewConversation::titled("long"))
            .await?;
        let other = v
            .create_conversation(NewConversation::titled("other"))
            .await?;
        let mut ids = Vec::new();
        for i in 0..25 {
            clock.advance(1);
            let role = Role::ALL[i % 4];
            ids.push(
                v.add_message(c.id, NewMessage::new(role, format!("m{i}")))
                    .await?
                    .id,
            );
            v.add_message(other.id, NewMessage::new(Role::User, "noise"))
                .await?;
        }
        let first = v
            .messages(
                c.id,
                ListMessages {
                    before: None,
                    limit: 10,
                },
            )
            .await?;
        assert_eq!(first.items.len(), 10);
        assert_eq!(first.items[0].content, "m24");
        let mut seen: Vec<_> = first.items.iter().map(|m| m.id).collect();
        let mut before = first.next_cursor;
        while let Some(cursor) = before {
            let page = v
                .messages(
                    c.id,
                    ListMessages {
                        before: Some(cursor),
                        limit: 10,
                    },
                )
                .await?;
            seen.extend(page.items.iter().map(|m| m.id));
            before = page.next_cursor;
        }
        ids.reverse();
        assert_eq!(seen, ids);
        Ok(())
    }

    /// Deleting a conversation deletes its messages, their pending
    /// changes, and leaves one tombstone.
    async fn deleting_conversation_deletes_messages(b, mode) {
        let (v, _) = open(b, mode).await?;
        let keep = v
            .create_conversation(NewConversation::titled("keep"))
            .await?;
        let doomed = v
            .create_conversation(NewConversation::titled("doomed"))
            .await?;
        let kept_msg = v
            .add_message(keep.id, NewMessage::new(Role::User, "stay"))
            .await?;
        let msgs = v
            .add_messages(
                doomed.id,
                (0..5)
                    .map(|i| NewMessage::new(Role::Assistant, format!("bye {i}")))
                    .collect(),
            )
            .await?;
        v.delete_conversation(doomed.id).await?;
        for m in &msgs {
            assert!(is_not_found(v.message(m.id).await));
        }
        assert_eq!(v.message(kept_msg.id).await?, kept_msg);
        let stats = v.stats().await?;
        assert_eq!((stats.conversations, stats.messages), (1, 1));
        assert_eq!(stats.tombstones, 1);
        let pending = v.replica().pending_changes(100).await?;
        let doomed_changes: Vec<_> = pending
            .iter()
            .filter(|e| {
                e.change.entity_id == doomed.id.into()
                    || e.change.conversation_id == Some(doomed.id)
            })
            .collect();
        assert_eq!(
            doomed_changes.len(),
            1,
            "only the conversation delete stays queued"
        );
        assert!(doomed_changes[0].change.is_delete());
        assert_eq!(doomed_changes[0].change.kind, EntityKind::Conversation);
        Ok(())
    }

    /// Every write queues exactly one change per record; rewrites coalesce;
    /// acknowledging removes only what was delivered.
    async fn outbox_records_and_coalesces(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let c = v
            .create_conversation(NewConversation::titled("a"))
            .await?;
        for i in 0..3 {
            v.add_message(c.id, NewMessage::new(Role::User, format!("{i}")))
                .await?;
        }
        assert_eq!(v.replica().pending_changes(100).await?.len(), 4);
        for t in ["b", "c"] {
            clock.advance(5);
            v.update_conversation(
                c.id,
                ConversationUpdate {
                    title: Some(t.into()),
                    metadata: None,
                },
            )
            .await?;
        }
        let pending = v.replica().pending_changes(100).await?;
        assert_eq!(pending.len(), 4, "rewrites of one record coalesce");
        // Oldest first; the conversation's rewrite moved it to the end.
        let last = pending.last().ok_or("the outbox is empty")?;
        assert_eq!(last.change.kind, EntityKind::Conversation);
        assert_eq!(
            last.change.version,
            v.conversation(c.id).await?.version
        );
        let ops: std::collections::HashSet<_> = pending.iter().map(|e| e.change.op_id).collect();
        assert_eq!(ops.len(), 4, "op ids are unique");

        // A change rewritten after it was read stays pending when the old
        // one is acknowledged.
        let in_flight: Vec<u64> = pending.iter().map(|e| e.seq).collect();
        clock.advance(5);
        v.update_conversation(
            c.id,
            ConversationUpdate {
                title: Some("d".into()),
                metadata: None,
            },
        )
        .await?;
        v.replica().acknowledge(&in_flight).await?;
        let left = v.replica().pending_changes(100).await?;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].change.entity_id, c.id.into());
        v.replica().acknowledge(&[left[0].seq]).await?;
        assert!(v.replica().pending_changes(100).await?.is_empty());
        assert_eq!(v.stats().await?.pending_changes, 0);
        Ok(())
    }

    /// A resync's forget never deletes what is unsynced: a message written
    /// (by another process) while the walk over the vault runs — after the
    /// caller could have looked at the outbox, before the deletes commit —
    /// is kept and stays pending; a parked change is kept too; only synced
    /// records the snapshot did not list go.
    async fn resync_forget_keeps_writes_made_during_the_walk(b, mode) {
        let clock = Arc::new(ManualClock::new(T0));
        let wrapped = Arc::new(FailingStore::shared(b.open().await));
        let v = vault_on(wrapped.clone(), mode, clock.clone()).await?;
        let c = v.create_conversation(NewConversation::titled("kept")).await?;
        let synced = v.add_message(c.id, NewMessage::new(Role::User, "deleted elsewhere")).await?;
        let refused = v.add_message(c.id, NewMessage::new(Role::Tool, "refused")).await?;
        let all = v.replica().pending_changes(100).await?;
        let (park, ack): (Vec<_>, Vec<_>) = all
            .iter()
            .partition(|e| e.change.entity_id == refused.id.into());
        v.replica().acknowledge(&ack.iter().map(|e| e.seq).collect::<Vec<_>>()).await?;
        let reason = chatvault_store::ParkReason {
            code: "payload_too_large".into(),
            message: "too big".into(),
            at: T0,
        };
        v.replica().park(vec![(park[0].seq, reason)]).await?;

        // Another writer on the same data, committing mid-walk.
        let other = Arc::new(vault_on(b.open().await, mode, clock.clone()).await?);
        let typed = Arc::new(std::sync::Mutex::new(None));
        let (w, t) = (other.clone(), typed.clone());
        wrapped.before_next_message_read(Box::new(move || {
            Box::pin(async move {
                let m = w
                    .add_message(c.id, NewMessage::new(Role::User, "typed during the resync"))
                    .await
                    .expect("the interleaved write commits");
                *t.lock().unwrap_or_else(|p| p.into_inner()) = Some(m.id);
            })
        }));

        let listed: std::collections::HashSet<_> =
            [(EntityKind::Conversation, chatvault_core::RecordId::from(c.id))].into();
        let dropped = v.replica().forget_records_missing_from(&listed).await?;
        let typed = typed.lock().unwrap_or_else(|p| p.into_inner()).ok_or("the step ran")?;
        assert_eq!(dropped, 1, "only the synced message goes");
        assert!(is_not_found(v.message(synced.id).await));
        assert_eq!(v.message(typed).await?.content, "typed during the resync");
        assert_eq!(v.message(refused.id).await?.content, "refused");
        let pending = v.replica().pending_changes(100).await?;
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].change.entity_id, typed.into(), "and it will be pushed");
        assert_eq!(v.replica().all_parked_changes().await?.len(), 1);
        Ok(())
    }

    /// A batch that does not fit (full disk, exhausted quota) fails with a
    /// clear error and changes nothing: no record without its outbox entry,
    /// nothing written before lost.
    async fn full_storage_fails_atomically(b, mode) {
        let clock = Arc::new(ManualClock::new(T0));
        let v = vault_on(b.open_with_quota(256 * 1024).await, mode, clock).await?;
        let c = v
            .create_conversation(NewConversation::titled("big"))
            .await?;
        let kb = "x".repeat(1024);
        let mut written = 0u64;
        let err = loop {
            let batch: Vec<_> = (0..20)
                .map(|_| NewMessage::new(Role::User, kb.clone()))
                .collect();
            match v.add_messages(c.id, batch).await {
                Ok(_) => written += 20,
                Err(e) => break e,
            }
            assert!(written < 10_000, "quota never enforced");
        };
        assert!(
            matches!(err, VaultError::Store(StoreError::Full { .. })),
            "expected a storage-full error, got {err:?}"
        );
        assert!(err.to_string().contains("full"), "{err}");
        let stats = v.stats().await?;
        assert_eq!(
            stats.messages, written,
            "the failed batch left nothing behind"
        );
        assert_eq!(stats.pending_changes, written + 1);
        // Still usable for reads, and for deletes that free space.
        assert_eq!(
            v.messages(c.id, ListMessages::default())
                .await?
                .items
                .len(),
            50.min(written as usize)
        );
        v.delete_conversation(c.id).await?;
        v.create_conversation(NewConversation::titled("after cleanup"))
            .await?;
        Ok(())
    }

    /// Closing and reopening returns everything, and the clock resumes past
    /// every stamp already issued.
    async fn reopen_returns_everything(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let c = v
            .create_conversation(NewConversation::titled("persist me"))
            .await?;
        let m = v
            .add_message(c.id, NewMessage::new(Role::Assistant, "still here"))
            .await?;
        let c = v.conversation(c.id).await?;
        let stats = v.stats().await?;
        let device = v.device_id();
        drop(v);

        // Reopen with a clock that went backwards.
        clock.set(Timestamp(T0.0 - 60_000));
        let v = vault_on(b.open().await, mode, clock).await?;
        assert_eq!(v.device_id(), device);
        assert_eq!(v.conversation(c.id).await?, c);
        assert_eq!(v.message(m.id).await?, m);
        assert_eq!(v.stats().await?, stats);
        let later = v
            .add_message(c.id, NewMessage::new(Role::User, "after restart"))
            .await?;
        assert!(later.version > m.version, "clock resumed");
        Ok(())
    }

    /// Unicode of every kind and megabyte-sized content survive intact.
    async fn unicode_and_large_content(b, mode) {
        let (v, _) = open(b, mode).await?;
        let title = "Ünïcødé 🚀 مرحبا \u{0} \"quotes\" \\ 𝕏";
        let c = v
            .create_conversation(NewConversation::titled(title))
            .await?;
        assert_eq!(v.conversation(c.id).await?.title, title);
        let big: String = "長い文章🙂".repeat(1024 * 1024 / 16 + 1);
        assert!(big.len() >= 1024 * 1024);
        let m = v
            .add_message(c.id, NewMessage::new(Role::Tool, big.clone()))
            .await?;
        assert_eq!(v.message(m.id).await?.content, big);
        let stats = v.stats().await?;
        assert!(stats.bytes >= big.len() as u64);
        Ok(())
    }

    /// Counts and sizes match what was written, per conversation and in
    /// total, and pending flags follow the outbox.
    async fn counts_and_sizes(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let a = v
            .create_conversation(NewConversation::titled("a"))
            .await?;
        clock.advance(1);
        let bb = v
            .create_conversation(NewConversation::titled("b"))
            .await?;
        v.add_messages(
            a.id,
            (0..3)
                .map(|_| NewMessage::new(Role::User, "x".repeat(100)))
                .collect(),
        )
        .await?;
        v.add_message(bb.id, NewMessage::new(Role::User, "y".repeat(1000)))
            .await?;
        let s = v.stats().await?;
        assert_eq!((s.conversations, s.messages, s.tombstones), (2, 4, 0));
        assert_eq!(s.pending_changes, 6);
        let per: std::collections::HashMap<_, _> = s
            .per_conversation
            .iter()
            .map(|c| (c.id, c.clone()))
            .collect();
        assert_eq!(per[&a.id].messages, 3);
        assert_eq!(per[&bb.id].messages, 1);
        assert!(per[&a.id].bytes >= 300 && per[&bb.id].bytes >= 1000);
        assert_eq!(per[&a.id].bytes + per[&bb.id].bytes, s.bytes);
        assert!(per[&a.id].pending && per[&bb.id].pending);
        let all: Vec<u64> = v.replica().pending_changes(100)
            .await?
            .iter()
            .map(|e| e.seq)
            .collect();
        v.replica().acknowledge(&all).await?;
        let s = v.stats().await?;
        assert!(s.per_conversation.iter().all(|c| !c.pending));
        Ok(())
    }

    /// Changes from elsewhere merge by last-writer-wins: newer applies,
    /// older is superseded, a replay changes nothing, a stale update cannot
    /// resurrect a deletion, and bad changes are rejected alone.
    async fn remote_changes_merge_by_version(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let c = v
            .create_conversation(NewConversation::titled("local"))
            .await?;
        // Take the local record's body to forge remote versions of it (an
        // encrypted body is only valid for this vault's key and this id).
        let local_body = v
            .store()
            .conversation(c.id)
            .await?
            .ok_or("the conversation is missing")?
            .record
            .body;
        let other = DeviceId(0xfeed);
        let at = |wall: i64, counter: u32| Hlc::new(wall as u64, counter, other);
        let upsert = |version: Hlc, body: &Body| {
            Change::upsert_conversation(
                OpId::new(),
                &ConversationRecord {
                    id: c.id,
                    user_id: UserId::local(),
                    created_at: c.created_at,
                    updated_at: Timestamp(version.wall_ms() as i64),
                    version,
                    body: body.clone(),
                },
            )
        };

        let older = upsert(at(T0.0 - 5, 0)?, &local_body);
        let r = v.replica().apply_changes(vec![older.clone()]).await?;
        assert_eq!(
            r,
            ApplyReport {
                applied: 0,
                superseded: 1,
                rejected: vec![]
            }
        );

        clock.advance(100);
        let newer = upsert(at(T0.0 + 50, 0)?, &local_body);
        let r = v.replica().apply_changes(vec![newer.clone()]).await?;
        assert_eq!(r.applied, 1);
        let stored = v.store().conversation(c.id).await?.ok_or("missing")?.record;
        assert_eq!(stored.version, newer.version);
        if mode == Mode::Encrypted {
            // The forged change carries a body sealed for the older version:
            // it merges by version, but reading it is refused, never garbage.
            assert!(matches!(
                v.conversation(c.id).await,
                Err(VaultError::CorruptRecord { .. })
            ));
        } else {
            assert_eq!(v.conversation(c.id).await?.version, newer.version);
        }
        // The remote version superseded the local pending change.
        assert!(v.replica().pending_changes(10)
            .await?
            .iter()
            .all(|e| e.change.entity_id != c.id.into()));
        // Replay: nothing changes.
        let r = v.replica().apply_changes(vec![newer.clone()]).await?;
        assert_eq!((r.applied, r.superseded), (0, 1));

        // A remote delete newer than the record wins...
        let tomb = Change::delete(
            OpId::new(),
            &Tombstone::conversation(c.id, at(T0.0 + 60, 0)?, Timestamp(T0.0 + 60)),
        );
        assert_eq!(v.replica().apply_changes(vec![tomb]).await?.applied, 1);
        assert!(is_not_found(v.conversation(c.id).await));
        // ...and a stale update cannot resurrect it.
        let stale = upsert(at(T0.0 + 55, 0)?, &local_body);
        assert_eq!(v.replica().apply_changes(vec![stale]).await?.superseded, 1);
        assert!(is_not_found(v.conversation(c.id).await));
        // A message written before its conversation was deleted stays out.
        let orphan = Change::upsert_message(
            OpId::new(),
            &MessageRecord {
                id: MessageId::new(),
                conversation_id: c.id,
                created_at: T0,
                updated_at: T0,
                version: at(T0.0 + 10, 0)?,
                body: Body(b"{}".to_vec()),
            },
        );
        assert_eq!(v.replica().apply_changes(vec![orphan]).await?.superseded, 1);

        // Bad changes are rejected alone, the good one in the batch applies.
        let fresh = v
            .create_conversation(NewConversation::titled("fresh"))
            .await?;
        let fresh_body = v
            .store()
            .conversation(fresh.id)
            .await?
            .ok_or("the conversation is missing")?
            .record
            .body;
        let mut no_conversation = Change::delete(
            OpId::new(),
            &Tombstone::message(MessageId::new(), fresh.id, at(T0.0 + 200, 0)?, T0),
        );
        no_conversation.conversation_id = None;
        let future = Change::delete(
            OpId::new(),
            &Tombstone::conversation(ConversationId::new(), at(T0.0 + 48 * 3_600_000, 0)?, T0),
        );
        let good = Change::upsert_conversation(
            OpId::new(),
            &ConversationRecord {
                id: fresh.id,
                user_id: UserId::local(),
                created_at: fresh.created_at,
                updated_at: fresh.updated_at,
                version: at(T0.0 + 300, 0)?,
                body: fresh_body,
            },
        );
        let (bad1, bad2) = (no_conversation.op_id, future.op_id);
        let r = v.replica().apply_changes(vec![no_conversation, future, good])
            .await?;
        assert_eq!(r.applied, 1);
        let rejected: Vec<_> = r.rejected.iter().map(|(op, _)| *op).collect();
        assert_eq!(rejected, vec![bad1, bad2]);
        assert!(r.rejected[1].1.contains("clock skew"), "{:?}", r.rejected);
        Ok(())
    }

    /// A bulk write streamed from a source is one atomic write: if the
    /// source fails part-way (a truncated import file), nothing of it stays.
    async fn bulk_write_is_all_or_nothing(b, mode) {
        let (v, _) = open(b, mode).await?;
        let c = v
            .create_conversation(NewConversation::titled("existing"))
            .await?;
        let store = v.store().clone();
        let before = v.stats().await?;
        let record = |i: i64| -> TestResult<MessageRecord> {
            Ok(MessageRecord {
            id: MessageId::new(),
            conversation_id: c.id,
            created_at: Timestamp(T0.0 + i),
            updated_at: Timestamp(T0.0 + i),
            version: Hlc::new((T0.0 + i) as u64, 0, DeviceId(7))?,
            body: Body(b"{}".to_vec()),
            })
        };
        let batch = |from: i64| -> TestResult<WriteBatch> {
            let mut b = WriteBatch::new();
            for i in from..from + 100 {
                b.push(WriteOp::Merge(Incoming::Message(record(i)?)));
            }
            Ok(b)
        };
        let failing: BatchSource = Box::new(
            vec![
                Ok(batch(0)?),
                Ok(batch(100)?),
                Err(StoreError::Decode("truncated input".into())),
            ]
            .into_iter(),
        );
        let err = store.write_all(failing).await.unwrap_err();
        assert!(matches!(err, StoreError::Decode(_)));
        assert_eq!(
            v.stats().await?,
            before,
            "nothing of the failed bulk write stays"
        );

        let ok: BatchSource = Box::new(vec![Ok(batch(0)?), Ok(batch(100)?)].into_iter());
        let outcome = store.write_all(ok).await?;
        assert_eq!(outcome.merged, 200);
        assert_eq!(v.stats().await?.messages, 200);
        Ok(())
    }

    /// A sealed body is bound to its record's header: moved to another
    /// conversation, re-dated (another version) or swapped with another
    /// record's, it reads as `CorruptRecord` — never as garbage, never a
    /// panic — and the rest of the vault stays readable.
    async fn moved_redated_or_swapped_ciphertext_is_corrupt(b, mode) {
        if mode == Mode::Plain {
            return Ok(());
        }
        let (v, _) = open(b, mode).await?;
        let a = v.create_conversation(NewConversation::titled("a")).await?;
        let other = v.create_conversation(NewConversation::titled("b")).await?;
        let m = v.add_message(a.id, NewMessage::new(Role::User, "in a")).await?;
        let kept = v.add_message(a.id, NewMessage::new(Role::User, "kept")).await?;
        let stored = v.store().message(m.id).await?.ok_or("missing")?;
        let corrupt = |r: Result<crate::Message>| matches!(r, Err(VaultError::CorruptRecord { .. }));
        let put = |record: MessageRecord| {
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::PutMessage(record));
            batch
        };

        // Moved into another conversation.
        v.store()
            .write(put(MessageRecord { conversation_id: other.id, ..stored.clone() }))
            .await?;
        assert!(corrupt(v.message(m.id).await));
        // Re-dated: the same body on a newer (or older) version stamp.
        for version in [
            Hlc::new(stored.version.wall_ms() + 1, 0, stored.version.device())?,
            Hlc::new(stored.version.wall_ms() - 1, 0, stored.version.device())?,
        ] {
            v.store()
                .write(put(MessageRecord { version, ..stored.clone() }))
                .await?;
            assert!(corrupt(v.message(m.id).await), "{version}");
        }
        // Put back as it was: readable again.
        v.store().write(put(stored.clone())).await?;
        assert_eq!(v.message(m.id).await?.content, "in a");

        // Two conversations' bodies swapped.
        let row_a = v.store().conversation(a.id).await?.ok_or("missing")?.record;
        let row_b = v.store().conversation(other.id).await?.ok_or("missing")?.record;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutConversation(ConversationRecord { body: row_b.body.clone(), ..row_a.clone() }));
        batch.push(WriteOp::PutConversation(ConversationRecord { body: row_a.body.clone(), ..row_b.clone() }));
        v.store().write(batch).await?;
        for id in [a.id, other.id] {
            assert!(matches!(
                v.conversation(id).await,
                Err(VaultError::CorruptRecord { .. })
            ));
        }
        assert_eq!(v.message(kept.id).await?.content, "kept");
        Ok(())
    }

    /// A store filled to its last byte still deletes (a message, then a
    /// whole conversation) and compacts: the way out of a full store is
    /// never blocked by the same "full" error.
    async fn a_full_store_still_deletes_and_compacts(b, mode) {
        let clock = Arc::new(ManualClock::new(T0));
        let v = vault_on(b.open_with_quota(256 * 1024).await, mode, clock).await?;
        let c = v.create_conversation(NewConversation::titled("big")).await?;
        let kb = "x".repeat(1024);
        let mut ids = Vec::new();
        // Big batches, then single messages, until not even one fits.
        for size in [20, 1] {
            loop {
                let batch: Vec<_> = (0..size).map(|_| NewMessage::new(Role::User, kb.clone())).collect();
                match v.add_messages(c.id, batch).await {
                    Ok(added) => ids.extend(added.into_iter().map(|m| m.id)),
                    Err(VaultError::Store(StoreError::Full { .. })) => break,
                    Err(e) => return Err(e.into()),
                }
                assert!(ids.len() < 10_000, "quota never enforced");
            }
        }
        assert!(matches!(
            v.add_message(c.id, NewMessage::new(Role::User, kb.clone())).await,
            Err(VaultError::Store(StoreError::Full { .. }))
        ));
        v.delete_message(ids[0]).await?;
        v.delete_conversation(c.id).await?;
        v.compact().await?;
        v.create_conversation(NewConversation::titled("room again")).await?;
        Ok(())
    }

    /// One damaged record hides nothing else: pages and streams leave it
    /// out, name it, and lead on past it (even from a page whose every
    /// row is damaged); `damaged_records` finds them all; reading it by
    /// id is still a clear error.
    async fn damaged_records_are_skipped_and_named(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let mut convs = Vec::new();
        for i in 0..5 {
            clock.advance(1000);
            convs.push(v.create_conversation(NewConversation::titled(format!("c{i}"))).await?);
        }
        let mut msgs = Vec::new();
        for i in 0..5 {
            clock.advance(1);
            msgs.push(v.add_message(convs[0].id, NewMessage::new(Role::User, format!("m{i}"))).await?.id);
        }
        let garbage = Body(b"\x01not a record".to_vec());
        let mut batch = WriteBatch::new();
        for c in [&convs[3], &convs[2]] {
            let row = v.store().conversation(c.id).await?.ok_or("missing")?.record;
            batch.push(WriteOp::PutConversation(ConversationRecord { body: garbage.clone(), ..row }));
        }
        let m2 = v.store().message(msgs[2]).await?.ok_or("missing")?;
        batch.push(WriteOp::PutMessage(MessageRecord { body: garbage.clone(), ..m2 }));
        v.store().write(batch).await?;

        // Newest first: c0 (its messages are newer), c4, then c3 and c2
        // (one page of two, both damaged), then c1.
        let (mut seen, mut damaged, mut after) = (Vec::new(), Vec::new(), None);
        loop {
            let page = v.conversations(ListConversations { after, limit: 2, ..Default::default() }).await?;
            seen.extend(page.items.iter().map(|c| c.id));
            damaged.extend(page.damaged.iter().copied());
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, [convs[0].id, convs[4].id, convs[1].id]);
        let bad: Vec<RecordId> = vec![convs[3].id.into(), convs[2].id.into()];
        assert_eq!(damaged, bad);

        let streamed: Vec<Result<crate::Conversation>> = futures::StreamExt::collect(
            v.conversations_stream(ListConversations { limit: 2, ..Default::default() }),
        )
        .await;
        let (mut ok, mut errs) = (Vec::new(), Vec::new());
        for item in streamed {
            match item {
                Ok(c) => ok.push(c.id),
                Err(VaultError::CorruptRecord { id, .. }) => errs.push(id),
                Err(e) => return Err(e.into()),
            }
        }
        assert_eq!((ok, errs), (seen, bad.clone()));

        let page = v.messages(convs[0].id, ListMessages { before: None, limit: 10 }).await?;
        let contents: Vec<_> = page.items.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["m4", "m3", "m1", "m0"]);
        assert_eq!(page.damaged, [RecordId::from(msgs[2])]);

        let found = v.damaged_records().await?;
        assert_eq!(found.conversations, [convs[3].id, convs[2].id]);
        assert_eq!(found.messages, [msgs[2]]);
        assert_eq!(found.count(), 3);
        assert!(matches!(v.conversation(convs[3].id).await, Err(VaultError::CorruptRecord { .. })));
        Ok(())
    }

    /// Rotating the data key keeps every record readable (before and after
    /// a reopen), new writes use the new key, and a re-key re-seals the
    /// old records so none is left on an older key.
    async fn rotation_then_rekey_keeps_everything_readable(b, mode) {
        let (v, clock) = open(b, mode).await?;
        let c = v.create_conversation(NewConversation::titled("before")).await?;
        let old = v.add_message(c.id, NewMessage::new(Role::User, "old")).await?;
        if mode == Mode::Plain {
            assert!(matches!(v.rotate_data_key(PASSPHRASE).await, Err(VaultError::NotEncrypted)));
            assert_eq!(v.rekey(None).await?.resealed, 0);
            return Ok(());
        }
        assert!(matches!(
            v.rotate_data_key("not the passphrase").await,
            Err(VaultError::WrongPassphrase)
        ));
        v.rotate_data_key(PASSPHRASE).await?;
        let new = v.add_message(c.id, NewMessage::new(Role::Assistant, "new")).await?;
        assert_eq!(v.message(old.id).await?.content, "old");
        assert_eq!(v.message(new.id).await?.content, "new");
        let versions = (v.conversation(c.id).await?.version, v.message(old.id).await?.version);

        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let report = v
            .rekey(Some(Arc::new(move |p: crate::Progress| {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(p.done)
            })))
            .await?;
        assert_eq!((report.seen, report.resealed), (3, 2));
        assert!(report.damaged.is_empty());
        assert_eq!(seen.lock().unwrap_or_else(|e| e.into_inner()).last(), Some(&3));
        // A local re-encryption, not an edit: same versions, nothing new
        // to push beyond what was already pending.
        assert_eq!(
            (v.conversation(c.id).await?.version, v.message(old.id).await?.version),
            versions
        );
        assert_eq!(v.rekey(None).await?.resealed, 0, "idempotent");
        drop(v);
        let v = vault_on(b.open().await, mode, clock).await?;
        assert_eq!(v.conversation(c.id).await?.title, "before");
        assert_eq!(v.message(old.id).await?.content, "old");
        assert_eq!(v.message(new.id).await?.content, "new");
        Ok(())
    }

    /// Wiping local data keeps the vault usable.
    async fn clear_local_keeps_vault_usable(b, mode) {
        let (v, _) = open(b, mode).await?;
        let c = v
            .create_conversation(NewConversation::titled("gone"))
            .await?;
        v.add_message(c.id, NewMessage::new(Role::User, "bye"))
            .await?;
        let device = v.device_id();
        v.clear_local().await?;
        let s = v.stats().await?;
        assert_eq!((s.conversations, s.messages, s.pending_changes), (0, 0, 0));
        assert!(is_not_found(v.conversation(c.id).await));
        v.create_conversation(NewConversation::titled("new"))
            .await?;
        drop(v);
        let (v, _) = open(b, mode).await?;
        assert_eq!(v.device_id(), device);
        Ok(())
    }
    }
}

/// Instantiates the conformance suite for a backend:
/// `vault_conformance_tests!(path::to::make_backend)` where `make_backend`
/// is an `async fn() -> impl TestBackend` (an absolute path, e.g.
/// `crate::memory`). The tests run under `#[tokio::test]`, which needs
/// `tokio` (with `macros`) as a dev-dependency; another harness passes its
/// attribute first, e.g. in a browser
/// `vault_conformance_tests!(#[wasm_bindgen_test::wasm_bindgen_test], crate::backend)`
/// (the cases themselves await only the vault and its store).
#[macro_export]
macro_rules! vault_conformance_tests {
    (#[$test:meta], $backend:path) => {
        mod plaintext {
            $crate::__vault_conformance_cases!($test, $backend, $crate::testing::Mode::Plain);
        }
        mod encrypted {
            $crate::__vault_conformance_cases!($test, $backend, $crate::testing::Mode::Encrypted);
        }
    };
    ($backend:path) => {
        $crate::vault_conformance_tests!(#[tokio::test], $backend);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __vault_conformance_cases {
    ($test:meta, $backend:path, $mode:expr) => {
        $crate::__vault_conformance_core!($test, $backend, $mode);
        $crate::__vault_conformance_lifecycle!($test, $backend, $mode);
        $crate::__vault_conformance_clock!($test, $backend, $mode);
    };
}

/// A key-value backend whose namespaces are sealed by an encrypted vault
/// ([`SealedKv`](crate::SealedKv)) over `inner`'s: runs the key-value
/// conformance suite encrypted on any backend. Build it with
/// [`SealedKvBackend::new`].
pub struct SealedKvBackend<B> {
    vault: Vault,
    inner: B,
}

impl<B> SealedKvBackend<B> {
    /// `inner` sealed by a fresh encrypted vault in memory.
    pub async fn new(inner: B) -> SealedKvBackend<B> {
        let clock = Arc::new(ManualClock::new(T0));
        let vault = Vault::open_encrypted(
            Arc::new(chatvault_store::MemoryStore::new()),
            PASSPHRASE,
            fast_options(clock),
        )
        .await
        .expect("an encrypted vault in memory opens");
        SealedKvBackend { vault, inner }
    }

    /// The vault whose keys seal the values.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The unsealed backend underneath.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: chatvault_store::testing::KvBackend> chatvault_store::testing::KvBackend
    for SealedKvBackend<B>
{
    async fn open(
        &self,
        name: &str,
        limits: chatvault_store::KvLimits,
    ) -> chatvault_store::KvResult<Arc<dyn chatvault_store::KvStore>> {
        let inner = self.inner.open(name, limits).await?;
        let sealed =
            self.vault
                .sealed_kv(inner)
                .map_err(|e| chatvault_store::KvError::Backend {
                    detail: e.to_string(),
                })?;
        Ok(Arc::new(sealed))
    }
}
