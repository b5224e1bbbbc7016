//! Conformance cases for the clock and for local writes racing other
//! writers: the persisted mark is the real high-water mark (restarts stay
//! at wall-clock time), a far-ahead mark is re-based from, writers sharing
//! a store never commit one stamp twice, and a local edit never replaces a
//! version it did not read — on every backend, in both vault modes.

use super::{vault_on, Mode, RacingStore, TestBackend, TestResult, T0};
use crate::{
    ConversationUpdate, ManualClock, MessageUpdate, NewConversation, NewMessage, Role, Timestamp,
};
use chatvault_core::{
    ConversationRecord, DeviceId, EntityKind, Hlc, Incoming, MessageRecord, Metadata,
};
use chatvault_store::{WriteBatch, WriteOp};
use std::sync::Arc;

const HOUR: i64 = 3_600_000;

/// A stamp of another device at `wall`.
fn remote(wall: i64) -> TestResult<Hlc> {
    Ok(Hlc::new(wall as u64, 0, DeviceId(0xbeef))?)
}

/// A pulled version of a record, as a pull writes it.
fn pull(incoming: Incoming) -> WriteBatch {
    WriteBatch {
        ops: vec![WriteOp::Merge(incoming)],
    }
}

vault_cases! {($) __vault_conformance_clock;

    /// A vault reopened again and again (a short CLI process per write)
    /// stamps at wall-clock time every time: the persisted mark is the
    /// highest stamp issued, not a lease ahead of it.
    async fn restarts_stay_at_wall_clock_time(b, mode) {
        let clock = Arc::new(ManualClock::new(T0));
        let mut versions = Vec::new();
        for i in 0..20 {
            let v = vault_on(b.open().await, mode, clock.clone()).await?;
            let c = v
                .create_conversation(NewConversation::titled(format!("run {i}")))
                .await?;
            versions.push(c.version);
        }
        assert!(
            versions.iter().all(|s| s.wall_ms() == T0.0 as u64),
            "every stamp at the wall clock: {versions:?}"
        );
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        clock.advance(1);
        let v = vault_on(b.open().await, mode, clock.clone()).await?;
        let c = v.create_conversation(NewConversation::titled("later")).await?;
        assert_eq!((c.version.wall_ms(), c.version.counter()), (T0.0 as u64 + 1, 0));
        Ok(())
    }

    /// A device whose clock ran hours ahead and was then fixed re-bases:
    /// new writes are stamped at the (right) wall clock again, an edit of a
    /// record stamped in the future still beats it, and that edit does not
    /// drag the clock back into the future.
    async fn a_far_ahead_mark_is_rebased_on_open(b, mode) {
        let wrong = Arc::new(ManualClock::new(Timestamp(T0.0 + 5 * HOUR)));
        let v = vault_on(b.open().await, mode, wrong).await?;
        let future = v.create_conversation(NewConversation::titled("ahead")).await?;
        let m = v.add_message(future.id, NewMessage::new(Role::User, "ahead")).await?;
        drop(v);

        let right = Arc::new(ManualClock::new(T0));
        let v = vault_on(b.open().await, mode, right.clone()).await?;
        let now = v.create_conversation(NewConversation::titled("now")).await?;
        assert_eq!(now.version.wall_ms(), T0.0 as u64, "re-based to the wall clock");
        let renamed = v
            .update_conversation(future.id, ConversationUpdate { title: Some("renamed".into()), metadata: None })
            .await?;
        assert!(renamed.version > future.version, "an edit beats what it replaces");
        v.delete_message(m.id).await?;
        let tombstone = v
            .store()
            .tombstone(EntityKind::Message, m.id.into())
            .await?
            .ok_or("no tombstone")?;
        assert!(tombstone.version > m.version, "a delete beats what it replaces");
        let after = v.create_conversation(NewConversation::titled("after")).await?;
        assert_eq!(after.version.wall_ms(), T0.0 as u64, "the clock stayed at wall time");
        assert!(after.version > now.version);
        drop(v);

        // The re-based mark is what the next process resumes from.
        let v = vault_on(b.open().await, mode, right).await?;
        let next = v.create_conversation(NewConversation::titled("next")).await?;
        assert_eq!(next.version.wall_ms(), T0.0 as u64);
        assert!(next.version > after.version);
        Ok(())
    }

    /// Two writers on one store (two processes of one device: same device
    /// id, each with its own clock) never commit the same stamp: the
    /// second one's claim is refused, it folds the mark in and re-stamps.
    async fn writers_sharing_a_store_never_share_a_stamp(b, mode) {
        let clock = Arc::new(ManualClock::new(T0));
        let first = vault_on(b.open().await, mode, clock.clone()).await?;
        let second = vault_on(b.open().await, mode, clock.clone()).await?;
        assert_eq!(first.device_id(), second.device_id());
        let mut versions = Vec::new();
        for i in 0..5 {
            let (a, b) = (&first, &second);
            let c = a.create_conversation(NewConversation::titled(format!("a{i}"))).await?;
            versions.push(c.version);
            let added = b
                .add_messages(c.id, vec![NewMessage::new(Role::User, "x"); 3])
                .await?;
            versions.extend(added.iter().map(|m| m.version));
            let c2 = b.create_conversation(NewConversation::titled(format!("b{i}"))).await?;
            versions.push(c2.version);
        }
        let mut distinct = versions.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), versions.len(), "a stamp was issued twice: {versions:?}");
        Ok(())
    }

    /// A pull that lands between an edit's read and its write is not
    /// overwritten: the edit is applied again to the pulled version and
    /// stamped above it, so the newer version wins on every device.
    async fn a_local_edit_racing_a_pull_edits_the_pulled_version(b, mode) {
        let clock = Arc::new(ManualClock::new(T0));
        let racing = Arc::new(RacingStore::new(b.open().await));
        let v = vault_on(racing.clone(), mode, clock.clone()).await?;
        let c = v.create_conversation(NewConversation::titled("first")).await?;
        // A body of what the other device wrote (valid for this vault's
        // key and this record), then the local state back as it was.
        let by_b: Metadata = [("by".to_owned(), "B".into())].into_iter().collect();
        v.update_conversation(
            c.id,
            ConversationUpdate { title: Some("theirs".into()), metadata: Some(by_b.clone()) },
        )
        .await?;
        let theirs = v.store().conversation(c.id).await?.ok_or("gone")?.record;
        clock.advance(1);
        v.update_conversation(
            c.id,
            ConversationUpdate { title: Some("first".into()), metadata: Some(Metadata::new()) },
        )
        .await?;

        let version = remote(T0.0 + 30_000)?;
        let body = v.reseal_for_tests(
            EntityKind::Conversation,
            c.id.into(),
            None,
            (theirs.version, version),
            &theirs.body,
        )?;
        let pulled = ConversationRecord {
            version,
            updated_at: Timestamp(T0.0 + 30_000),
            body,
            ..theirs
        };
        racing.race(pull(Incoming::Conversation(pulled.clone())));
        clock.advance(1);
        let mine = v.update_conversation(c.id, ConversationUpdate { title: Some("mine".into()), metadata: None }).await?;
        assert!(racing.raced(), "the pull landed between the read and the write");
        assert_eq!(mine.title, "mine");
        assert_eq!(mine.metadata, by_b, "the edit applied to the pulled version");
        assert!(mine.version > pulled.version, "stamped above the pulled version");
        assert_eq!(v.conversation(c.id).await?, mine);
        let queued = v.replica().pending_changes(100).await?;
        assert!(
            queued.iter().any(|e| e.change.entity_id == c.id.into()
                && e.change.version == mine.version),
            "the edit is queued for sync"
        );
        Ok(())
    }

    /// The same for message edits and deletes, including a pulled version
    /// stamped far ahead of this device's clock: the local write beats it
    /// without moving the clock there.
    async fn local_message_writes_racing_a_pull_beat_the_pulled_version(b, mode) {
        let clock = Arc::new(ManualClock::new(T0));
        let racing = Arc::new(RacingStore::new(b.open().await));
        let v = vault_on(racing.clone(), mode, clock.clone()).await?;
        let c = v.create_conversation(NewConversation::titled("c")).await?;
        let m = v.add_message(c.id, NewMessage::new(Role::User, "one")).await?;
        let stored = v.store().message(m.id).await?.ok_or("gone")?;

        let redated = |version: Hlc| -> Result<MessageRecord, Box<dyn std::error::Error>> {
            let body = v.reseal_for_tests(
                EntityKind::Message,
                m.id.into(),
                Some(c.id),
                (stored.version, version),
                &stored.body,
            )?;
            Ok(MessageRecord { version, body, ..stored.clone() })
        };
        let pulled = redated(remote(T0.0 + 20_000)?)?;
        racing.race(pull(Incoming::Message(pulled.clone())));
        let edited = v
            .update_message(m.id, MessageUpdate { content: Some("mine".into()), metadata: None })
            .await?;
        assert!(racing.raced());
        assert!(edited.version > pulled.version);
        assert_eq!(v.message(m.id).await?.content, "mine");

        let far = redated(remote(T0.0 + 3 * HOUR)?)?;
        racing.race(pull(Incoming::Message(far.clone())));
        v.delete_message(m.id).await?;
        assert!(racing.raced());
        let tombstone = v
            .store()
            .tombstone(EntityKind::Message, m.id.into())
            .await?
            .ok_or("no tombstone")?;
        assert!(tombstone.version > far.version, "the delete beats the pulled version");
        let next = v.create_conversation(NewConversation::titled("next")).await?;
        // The near pulled version was folded into the clock (ordinary
        // HLC); the far one was not.
        assert_eq!(next.version.wall_ms(), pulled.version.wall_ms(), "not dragged ahead");
        Ok(())
    }

    /// A conversation delete racing a pulled rename is stamped above the
    /// rename.
    async fn a_conversation_delete_racing_a_pull_beats_the_pulled_version(b, mode) {
        let clock = Arc::new(ManualClock::new(T0));
        let racing = Arc::new(RacingStore::new(b.open().await));
        let v = vault_on(racing.clone(), mode, clock.clone()).await?;
        let c = v.create_conversation(NewConversation::titled("c")).await?;
        let stored = v.store().conversation(c.id).await?.ok_or("gone")?.record;
        let version = remote(T0.0 + 40_000)?;
        let body = v.reseal_for_tests(
            EntityKind::Conversation,
            c.id.into(),
            None,
            (stored.version, version),
            &stored.body,
        )?;
        let pulled = ConversationRecord { version, body, ..stored };
        racing.race(pull(Incoming::Conversation(pulled.clone())));
        v.delete_conversation(c.id).await?;
        assert!(racing.raced());
        let tombstone = v
            .store()
            .tombstone(EntityKind::Conversation, c.id.into())
            .await?
            .ok_or("no tombstone")?;
        assert!(tombstone.version > pulled.version);
        Ok(())
    }
}
