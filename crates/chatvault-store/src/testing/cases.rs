//! The cases of the Store conformance suite: one `async fn` per promise of
//! the [`Store`] contract, each taking a [`StoreBackend`]. They read as the
//! contract's specification; a backend passes when every one returns `Ok`.
//! Cases must never depend on a runtime or on a backend's internals.

use super::*;

conformance_cases! {($) StoreBackend, __store_conformance_cases,

/// Put records read back as written; unknown ids are absent, not errors.
async fn put_records_read_back(b) {
    let store = b.open().await?;
    assert_eq!(store.conversation(conv_id(1)).await?, None);
    assert_eq!(store.message(msg_id(1)).await?, None);
    let c = conversation(1, 10, 5)?;
    let m = message(1, 1, 20, 7)?;
    store
        .write(batch([
            WriteOp::PutConversation(c.clone()),
            WriteOp::PutMessage(m.clone()),
        ]))
        .await?;
    let row = store.conversation(c.id).await?.ok_or("conversation missing")?;
    assert_eq!(row.record, c);
    assert_eq!(row.activity_at, m.updated_at, "a message advances activity");
    assert_eq!(store.message(m.id).await?, Some(m));
    assert_eq!(store.message(msg_id(2)).await?, None);
    Ok(())
}

/// A put replaces the stored record, and activity never goes back.
async fn put_replaces_and_activity_never_goes_back(b) {
    let store = b.open().await?;
    store.write(batch([WriteOp::PutConversation(conversation(1, 50, 5)?)])).await?;
    let older = conversation(1, 30, 9)?;
    store.write(batch([WriteOp::PutConversation(older.clone())])).await?;
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation missing")?;
    assert_eq!(row.record, older, "the put replaced the record");
    assert_eq!(row.activity_at, at(50), "activity kept the later time");

    let mut edited = message(1, 1, 60, 3)?;
    store.write(batch([WriteOp::PutMessage(edited.clone())])).await?;
    edited.body = Body(b"edited".to_vec());
    edited.version = hlc(70)?;
    store.write(batch([WriteOp::PutMessage(edited.clone())])).await?;
    assert_eq!(store.message(edited.id).await?, Some(edited));
    assert_eq!(store.usage().await?.messages, 1, "replaced, not duplicated");
    Ok(())
}

/// A conversation put after its messages takes their activity.
async fn conversation_arriving_after_its_messages_takes_their_activity(b) {
    let store = b.open().await?;
    store.write(batch([WriteOp::PutMessage(message(1, 1, 90, 3)?)])).await?;
    store.write(batch([WriteOp::PutConversation(conversation(1, 10, 3)?)])).await?;
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation missing")?;
    assert_eq!(row.activity_at, at(90));
    Ok(())
}

/// `RequireConversation` fails the whole batch when the conversation is
/// missing, and holds when an earlier op of the batch creates it.
async fn require_conversation_fails_the_whole_batch(b) {
    let store = b.open().await?;
    let result = store
        .write(batch([
            WriteOp::PutMessage(message(1, 1, 10, 3)?),
            enqueue_message(1, 1, 1),
            WriteOp::SetMeta("k".into(), b"v".to_vec()),
            WriteOp::RequireConversation(conv_id(1)),
        ]))
        .await;
    expect_err(
        result,
        |e| matches!(e, StoreError::ConversationNotFound(id) if *id == conv_id(1)),
        "ConversationNotFound",
    )?;
    assert_eq!(store.message(msg_id(1)).await?, None, "nothing of the batch");
    assert_eq!(store.meta("k").await?, None, "nothing of the batch");
    assert_eq!(pending(&*store).await?, vec![], "nothing of the batch");

    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 5, 3)?),
            WriteOp::RequireConversation(conv_id(1)),
            WriteOp::PutMessage(message(1, 1, 10, 3)?),
        ]))
        .await?;
    store
        .write(batch([
            WriteOp::RequireConversation(conv_id(1)),
            WriteOp::PutMessage(message(2, 1, 11, 3)?),
        ]))
        .await?;
    assert_eq!(store.usage().await?.messages, 2);
    Ok(())
}

/// Requirements are checked in batch order, against the state the
/// earlier operations of the batch (or of earlier batches of a
/// `write_all`) left: a conversation deleted earlier in the batch no
/// longer satisfies `RequireConversation`, and one message inserted twice
/// fails.
async fn requirements_see_earlier_ops_of_the_batch(b) {
    let store = b.open().await?;
    store.write(batch([WriteOp::PutConversation(conversation(1, 10, 3)?)])).await?;
    let result = store
        .write(batch([
            WriteOp::Delete(conversation_tombstone(1, 20)?),
            WriteOp::RequireConversation(conv_id(1)),
            WriteOp::PutMessage(message(1, 1, 30, 3)?),
        ]))
        .await;
    expect_err(
        result,
        |e| matches!(e, StoreError::ConversationNotFound(_)),
        "ConversationNotFound",
    )?;
    assert!(store.conversation(conv_id(1)).await?.is_some(), "nothing of the batch");

    let later: Vec<Result<WriteBatch>> = vec![
        Ok(batch([WriteOp::Delete(conversation_tombstone(1, 20)?)])),
        Ok(batch([WriteOp::RequireConversation(conv_id(1))])),
    ];
    let result = store.write_all(Box::new(later.into_iter())).await;
    expect_err(
        result,
        |e| matches!(e, StoreError::ConversationNotFound(_)),
        "ConversationNotFound",
    )?;
    assert!(store.conversation(conv_id(1)).await?.is_some(), "nothing written");

    let result = store
        .write(batch([
            WriteOp::InsertMessage(message(1, 1, 30, 3)?),
            WriteOp::InsertMessage(message(1, 1, 31, 4)?),
        ]))
        .await;
    expect_err(result, |e| matches!(e, StoreError::InvalidRequest(_)), "InvalidRequest")?;
    assert_eq!(store.message(msg_id(1)).await?, None, "nothing of the batch");
    Ok(())
}

/// `InsertMessage` adds a new message like a put, and refuses an id that
/// exists, failing the whole batch.
async fn insert_message_refuses_an_existing_id(b) {
    let store = b.open().await?;
    let m = message(1, 1, 20, 4)?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::InsertMessage(m.clone()),
        ]))
        .await?;
    assert_eq!(store.message(m.id).await?, Some(m.clone()));
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation missing")?;
    assert_eq!(row.activity_at, at(20), "an insert advances activity");

    let result = store
        .write(batch([
            WriteOp::PutMessage(message(2, 1, 30, 4)?),
            WriteOp::InsertMessage(message(1, 1, 40, 9)?),
        ]))
        .await;
    expect_err(result, |e| matches!(e, StoreError::InvalidRequest(_)), "InvalidRequest")?;
    assert_eq!(store.message(m.id).await?, Some(m), "the stored message stays");
    assert_eq!(store.message(msg_id(2)).await?, None, "nothing of the batch");
    assert_eq!(store.usage().await?.messages, 1);
    Ok(())
}

/// Deleting a message removes it and keeps its tombstone; a later put of
/// the same id removes the tombstone.
async fn delete_message_keeps_a_tombstone_until_put_again(b) {
    let store = b.open().await?;
    let m = message(1, 1, 20, 4)?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(m.clone()),
        ]))
        .await?;
    let t = message_tombstone(1, 1, 30)?;
    store.write(batch([WriteOp::Delete(t.clone())])).await?;
    assert_eq!(store.message(m.id).await?, None);
    assert_eq!(store.tombstone(EntityKind::Message, m.id.into()).await?, Some(t));
    assert!(store.conversation(conv_id(1)).await?.is_some(), "its conversation stays");

    store.write(batch([WriteOp::PutMessage(message(1, 1, 40, 4)?)])).await?;
    assert!(store.message(m.id).await?.is_some());
    assert_eq!(store.tombstone(EntityKind::Message, m.id.into()).await?, None);
    Ok(())
}

/// Deleting a conversation takes its messages, their tombstones and their
/// pending changes with it, and keeps one tombstone; other conversations
/// are untouched. A later put removes the tombstone.
async fn delete_conversation_takes_its_messages_along(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutConversation(conversation(2, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 4)?),
            WriteOp::PutMessage(message(2, 1, 21, 4)?),
            WriteOp::PutMessage(message(3, 2, 22, 4)?),
            enqueue_message(1, 1, 1),
            enqueue_message(3, 2, 2),
        ]))
        .await?;
    store.write(batch([WriteOp::Delete(message_tombstone(2, 1, 25)?)])).await?;

    let t = conversation_tombstone(1, 30)?;
    store.write(batch([WriteOp::Delete(t.clone())])).await?;
    assert_eq!(store.conversation(conv_id(1)).await?, None);
    assert_eq!(store.message(msg_id(1)).await?, None);
    assert_eq!(
        store.tombstone(EntityKind::Message, msg_id(2).into()).await?,
        None,
        "the conversation's tombstone covers its messages"
    );
    assert_eq!(
        store.tombstone(EntityKind::Conversation, conv_id(1).into()).await?,
        Some(t)
    );
    let left: Vec<RecordId> = pending(&*store).await?.into_iter().map(|p| p.1).collect();
    assert_eq!(left, vec![msg_id(3).into()], "its pending changes went too");
    assert!(store.message(msg_id(3)).await?.is_some(), "other conversations stay");
    let usage = store.usage().await?;
    assert_eq!((usage.conversations, usage.messages, usage.tombstones), (1, 1, 1));

    store.write(batch([WriteOp::PutConversation(conversation(1, 40, 3)?)])).await?;
    assert_eq!(store.tombstone(EntityKind::Conversation, conv_id(1).into()).await?, None);
    Ok(())
}

/// Pending changes to one record coalesce into one entry, carrying the
/// latest op id and a new sequence number.
async fn outbox_coalesces_changes_to_one_record(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            enqueue_conversation(1, 1),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            enqueue_message(1, 1, 2),
        ]))
        .await?;
    let before = pending(&*store).await?;
    assert_eq!(before.len(), 2);
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 30, 3)?),
            enqueue_conversation(1, 3),
        ]))
        .await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 40, 3)?),
            enqueue_conversation(1, 4),
        ]))
        .await?;
    let after = pending(&*store).await?;
    assert_eq!(after.len(), 2, "one entry per record");
    assert_eq!(after[0], before[1], "the message's entry is unchanged and now first");
    assert_eq!(after[1].1, conv_id(1).into());
    assert_eq!(after[1].2, op_id(4), "the latest op id");
    assert!(after[1].0 > before[1].0, "a coalesced change moves to the back");
    assert_eq!(store.usage().await?.pending_changes, 2);
    Ok(())
}

/// An outbox entry is built from the record's current state when read: an
/// upsert after a put, a delete after a deletion; an entry whose record is
/// gone without a tombstone is not listed.
async fn outbox_entries_carry_the_current_state(b) {
    let store = b.open().await?;
    let c = conversation(1, 10, 3)?;
    let m = message(1, 1, 20, 3)?;
    store
        .write(batch([
            WriteOp::PutConversation(c.clone()),
            enqueue_conversation(1, 1),
            WriteOp::PutMessage(m.clone()),
            enqueue_message(1, 1, 2),
            enqueue_message(9, 1, 3),
        ]))
        .await?;
    let entries = store.outbox(10).await?;
    assert_eq!(entries.len(), 2, "message 9 does not exist: {entries:?}");
    assert_eq!(entries[0].change, chatvault_core::Change::upsert_conversation(op_id(1), &c));
    assert_eq!(entries[1].change, chatvault_core::Change::upsert_message(op_id(2), &m));

    let t = message_tombstone(1, 1, 30)?;
    store.write(batch([WriteOp::Delete(t.clone()), enqueue_message(1, 1, 4)])).await?;
    let entries = store.outbox(10).await?;
    let last = entries.last().ok_or("outbox empty")?;
    assert_eq!(last.change, chatvault_core::Change::delete(op_id(4), &t));
    assert!(matches!(last.change.op, ChangeOp::Delete(_)));
    assert_eq!(store.outbox(1).await?.len(), 1, "the limit holds");
    Ok(())
}

/// An outbox entry whose record is gone (no record, no tombstone) is not
/// listed and does not hide the pending changes behind it from a page.
async fn outbox_pages_skip_entries_without_a_record(b) {
    let store = b.open().await?;
    let mut ops = vec![WriteOp::PutConversation(conversation(1, 10, 3)?)];
    for m in 0..3u8 {
        ops.push(enqueue_message(m, 1, m));
    }
    ops.push(enqueue_conversation(1, 9));
    store.write(batch(ops)).await?;
    let page = store.outbox(1).await?;
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(page[0].change.entity_id, conv_id(1).into());
    Ok(())
}

/// Acknowledging removes exactly the entries read; an entry replaced by a
/// newer change since it was read has a new sequence number and stays.
async fn acknowledge_by_seq_keeps_changes_made_since(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            enqueue_conversation(1, 1),
            WriteOp::PutConversation(conversation(2, 10, 3)?),
            enqueue_conversation(2, 2),
        ]))
        .await?;
    let read = store.outbox(10).await?;
    assert_eq!(read.len(), 2);
    // Conversation 1 changes again while the read entries are being pushed.
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 20, 4)?),
            enqueue_conversation(1, 3),
        ]))
        .await?;
    let seqs: Vec<u64> = read.iter().map(|e| e.seq).collect();
    store.acknowledge(&seqs).await?;
    let left = pending(&*store).await?;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((left[0].1, left[0].2), (conv_id(1).into(), op_id(3)));

    store.acknowledge(&seqs).await?;
    assert_eq!(pending(&*store).await?.len(), 1, "acknowledging twice is harmless");
    store.acknowledge(&[left[0].0]).await?;
    assert_eq!(pending(&*store).await?, vec![]);
    assert_eq!(store.usage().await?.pending_changes, 0);
    Ok(())
}

/// `Dequeue` drops a record's pending change and nothing else.
async fn dequeue_drops_one_pending_change(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            enqueue_conversation(1, 1),
            WriteOp::PutConversation(conversation(2, 10, 3)?),
            enqueue_conversation(2, 2),
        ]))
        .await?;
    store
        .write(batch([
            WriteOp::Dequeue(conv_id(1).into()),
            WriteOp::Dequeue(conv_id(9).into()),
        ]))
        .await?;
    let left: Vec<RecordId> = pending(&*store).await?.into_iter().map(|p| p.1).collect();
    assert_eq!(left, vec![conv_id(2).into()]);
    assert!(store.conversation(conv_id(1)).await?.is_some(), "the record stays");
    Ok(())
}

/// A parked change stays in the outbox but is not listed for pushing; it
/// is listed by `parked` with its reason and refusal count, counts in
/// usage as parked (and its conversation as pending), survives a reopen,
/// comes back on `Unpark` keeping its count, and a new local write (an
/// `Enqueue`) replaces it with a pending change. Parking an entry that was
/// replaced since it was read does nothing.
async fn parked_changes_stay_unsynced_until_retried(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            enqueue_conversation(1, 1),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            enqueue_message(1, 1, 2),
        ]))
        .await?;
    let read = store.outbox(10).await?;
    let reason = |code: &str| crate::ParkReason {
        code: code.into(),
        message: format!("refused: {code}"),
        at: at(99),
    };
    store.write(batch([WriteOp::Park(read[1].seq, reason("too_big"))])).await?;
    let left = pending(&*store).await?;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].1, conv_id(1).into());
    let parked = store.parked(None, 10).await?;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].seq, read[1].seq);
    assert_eq!(parked[0].change, read[1].change);
    assert_eq!(parked[0].reason, reason("too_big"));
    assert_eq!(parked[0].attempts, 1);
    assert_eq!(store.parked(Some(parked[0].seq), 10).await?, vec![]);
    let usage = store.usage().await?;
    assert_eq!((usage.pending_changes, usage.parked_changes), (1, 1));
    store.acknowledge(&[read[0].seq]).await?;
    let usage = store.usage().await?;
    assert_eq!((usage.pending_changes, usage.parked_changes), (0, 1));
    assert!(usage.per_conversation[0].pending, "a parked message keeps its conversation unsynced");

    drop(store);
    let store = b.open().await?;
    assert_eq!(store.parked(None, 10).await?, parked, "parking survives a reopen");

    // Retry: pending again, the count kept; refused again: two.
    store.write(batch([WriteOp::Unpark(msg_id(1).into())])).await?;
    assert_eq!(store.parked(None, 10).await?, vec![]);
    let again = store.outbox(10).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, read[1].seq);
    store.write(batch([WriteOp::Park(again[0].seq, reason("again"))])).await?;
    assert_eq!(store.parked(None, 10).await?[0].attempts, 2);

    // A new local write replaces the parked change with a pending one.
    store
        .write(batch([
            WriteOp::PutMessage(message(1, 1, 30, 4)?),
            enqueue_message(1, 1, 3),
        ]))
        .await?;
    assert_eq!(store.parked(None, 10).await?, vec![]);
    let fresh = store.outbox(10).await?;
    assert_eq!(fresh.len(), 1);
    // Parking the stale sequence number does nothing to the newer change.
    store.write(batch([WriteOp::Park(read[1].seq, reason("stale"))])).await?;
    assert_eq!(store.outbox(10).await?, fresh);
    assert_eq!(store.usage().await?.parked_changes, 0);

    // Discarding (Dequeue) drops a parked change; the record stays.
    store.write(batch([WriteOp::Park(fresh[0].seq, reason("x"))])).await?;
    store.write(batch([WriteOp::Dequeue(msg_id(1).into())])).await?;
    assert_eq!(store.parked(None, 10).await?, vec![]);
    assert!(store.message(msg_id(1)).await?.is_some());
    expect_err(
        store.parked(None, 0).await,
        |e| matches!(e, StoreError::InvalidRequest(_)),
        "a zero page refused",
    )?;
    Ok(())
}

/// `ForgetUnlessPending` deletes (keeping the tombstone) only a record
/// still stored at the tombstone's version with nothing pending or parked
/// — for a conversation, nothing of its messages either — decided inside
/// the write, so a change committed after the caller looked is kept.
async fn forget_unless_pending_keeps_unsynced_and_changed_records(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            WriteOp::PutConversation(conversation(2, 10, 3)?),
            WriteOp::PutMessage(message(2, 2, 20, 3)?),
            enqueue_message(2, 2, 1),
            WriteOp::PutConversation(conversation(3, 10, 3)?),
            WriteOp::PutMessage(message(3, 3, 20, 3)?),
            enqueue_message(3, 3, 2),
            WriteOp::PutConversation(conversation(4, 10, 3)?),
            WriteOp::PutConversation(conversation(5, 10, 3)?),
        ]))
        .await?;
    // Message 3's change is parked: still unsynced.
    let seq = store.outbox(10).await?[1].seq;
    store
        .write(batch([WriteOp::Park(
            seq,
            crate::ParkReason { code: "x".into(), message: "x".into(), at: at(1) },
        )]))
        .await?;
    let outcome = store
        .write(batch([
            WriteOp::ForgetUnlessPending(conversation_tombstone(1, 10)?),
            WriteOp::ForgetUnlessPending(conversation_tombstone(2, 10)?),
            WriteOp::ForgetUnlessPending(conversation_tombstone(3, 10)?),
            // Stored at another version: changed since the caller looked.
            WriteOp::ForgetUnlessPending(conversation_tombstone(4, 9)?),
            WriteOp::ForgetUnlessPending(message_tombstone(2, 2, 20)?),
            WriteOp::ForgetUnlessPending(message_tombstone(3, 3, 20)?),
            // Not stored at all.
            WriteOp::ForgetUnlessPending(message_tombstone(7, 5, 20)?),
        ]))
        .await?;
    assert_eq!(outcome.forgotten, 1, "{outcome:?}");
    assert!(store.conversation(conv_id(1)).await?.is_none());
    assert!(store.message(msg_id(1)).await?.is_none(), "its messages went with it");
    assert!(store.tombstone(EntityKind::Conversation, conv_id(1).into()).await?.is_some());
    for c in [2, 3, 4, 5] {
        assert!(store.conversation(conv_id(c)).await?.is_some(), "conversation {c} kept");
    }
    assert!(store.message(msg_id(2)).await?.is_some(), "pending message kept");
    assert!(store.message(msg_id(3)).await?.is_some(), "parked message kept");
    assert!(store.tombstone(EntityKind::Message, msg_id(7).into()).await?.is_none());
    Ok(())
}

/// Metadata: set, read, replace, delete (deleting a missing key is fine).
async fn meta_set_get_delete(b) {
    let store = b.open().await?;
    assert_eq!(store.meta("a").await?, None);
    store
        .write(batch([
            WriteOp::SetMeta("a".into(), b"1".to_vec()),
            WriteOp::SetMeta("b".into(), vec![0, 255, 7]),
        ]))
        .await?;
    assert_eq!(store.meta("a").await?, Some(b"1".to_vec()));
    assert_eq!(store.meta("b").await?, Some(vec![0, 255, 7]));
    store.write(batch([WriteOp::SetMeta("a".into(), b"2".to_vec())])).await?;
    assert_eq!(store.meta("a").await?, Some(b"2".to_vec()));
    store
        .write(batch([
            WriteOp::DeleteMeta("a".into()),
            WriteOp::DeleteMeta("never-set".into()),
        ]))
        .await?;
    assert_eq!(store.meta("a").await?, None);
    assert_eq!(store.meta("b").await?, Some(vec![0, 255, 7]));
    Ok(())
}

/// `RaiseActivity` only ever raises, and ignores a missing conversation.
async fn raise_activity_only_raises(b) {
    let store = b.open().await?;
    store.write(batch([WriteOp::PutConversation(conversation(1, 50, 3)?)])).await?;
    store
        .write(batch([
            WriteOp::RaiseActivity(conv_id(1), at(20)),
            WriteOp::RaiseActivity(conv_id(9), at(90)),
        ]))
        .await?;
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation missing")?;
    assert_eq!(row.activity_at, at(50));
    store.write(batch([WriteOp::RaiseActivity(conv_id(1), at(80))])).await?;
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation missing")?;
    assert_eq!(row.activity_at, at(80));
    assert_eq!(row.record.updated_at, at(50), "the record itself is unchanged");
    assert_eq!(store.conversation(conv_id(9)).await?, None);
    Ok(())
}

/// `Merge` applies a newer record and drops its pending local change; an
/// older one is superseded and changes nothing.
async fn merge_applies_newer_versions_only(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 50, 3)?),
            enqueue_conversation(1, 1),
        ]))
        .await?;
    let older = conversation(1, 40, 9)?;
    let outcome = store.write(batch([WriteOp::Merge(Incoming::Conversation(older))])).await?;
    assert_eq!((outcome.merged, outcome.superseded), (0, 1));
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation missing")?;
    assert_eq!(row.record.version, hlc(50)?);
    assert_eq!(pending(&*store).await?.len(), 1, "the local change stays pending");

    let newer = conversation(1, 60, 9)?;
    let outcome = store
        .write(batch([
            WriteOp::Merge(Incoming::Conversation(newer.clone())),
            WriteOp::Merge(Incoming::Message(message(1, 1, 70, 2)?)),
        ]))
        .await?;
    assert_eq!((outcome.merged, outcome.superseded), (2, 0));
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation missing")?;
    assert_eq!(row.record, newer);
    assert_eq!(pending(&*store).await?, vec![], "the winner replaced the local change");
    assert!(store.message(msg_id(1)).await?.is_some());
    Ok(())
}

/// Deleting a conversation at version T covers its messages stamped at or
/// below T — with their tombstones and their pending changes — and keeps
/// those stamped after it (core's deletion rule); `CoverMessages` does the
/// same for a deletion learnt from a recreated conversation.
async fn a_conversation_deletion_covers_only_messages_stamped_before_it(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            WriteOp::PutMessage(message(2, 1, 40, 3)?),
            WriteOp::Delete(message_tombstone(3, 1, 25)?),
            enqueue_message(1, 1, 1),
            enqueue_message(2, 1, 2),
        ]))
        .await?;
    store
        .write(batch([WriteOp::Delete(conversation_tombstone(1, 30)?)]))
        .await?;
    assert_eq!(store.conversation(conv_id(1)).await?, None);
    assert_eq!(store.message(msg_id(1)).await?, None, "stamped before: covered");
    assert_eq!(store.tombstone(EntityKind::Message, msg_id(3).into()).await?, None);
    assert!(store.message(msg_id(2)).await?.is_some(), "stamped after: kept");
    let queued: Vec<RecordId> = pending(&*store).await?.into_iter().map(|p| p.1).collect();
    assert_eq!(queued, vec![msg_id(2).into()], "the covered change left the outbox");

    store
        .write(batch([WriteOp::CoverMessages(conv_id(1), hlc(40)?)]))
        .await?;
    assert_eq!(store.message(msg_id(2)).await?, None, "ties go to the deletion");
    assert_eq!(pending(&*store).await?, vec![]);
    assert_eq!(store.usage().await?.messages, 0);
    Ok(())
}

/// A conversation's deletion mark is the highest stamp it was deleted at
/// (by a tombstone, merged or local, or by `CoverMessages`), keeps the
/// max, outlives the recreation that replaces the tombstone and a reopen,
/// and keeps covering: a merged message stamped at or below it loses even
/// after the recreation, one stamped above it is kept. A local tombstone
/// re-stamped lower counts at its new stamp. `clear` forgets it.
async fn the_deletion_mark_outlives_a_recreation(b) {
    let store = b.open().await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, None, "never deleted");
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
        ]))
        .await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, None, "never deleted");
    store
        .write(batch([WriteOp::Merge(Incoming::Tombstone(conversation_tombstone(1, 30)?))]))
        .await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, Some(hlc(30)?));

    // A recreation replaces the tombstone; the mark stays.
    store
        .write(batch([WriteOp::Merge(Incoming::Conversation(conversation(1, 50, 3)?))]))
        .await?;
    assert!(store.conversation(conv_id(1)).await?.is_some(), "recreated");
    assert_eq!(store.tombstone(EntityKind::Conversation, conv_id(1).into()).await?, None);
    assert_eq!(store.deletion_mark(conv_id(1)).await?, Some(hlc(30)?), "kept");

    // A deletion learnt later raises it; an older one does not lower it.
    store.write(batch([WriteOp::CoverMessages(conv_id(1), hlc(40)?)])).await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, Some(hlc(40)?), "raised");
    store.write(batch([WriteOp::CoverMessages(conv_id(1), hlc(35)?)])).await?;
    store
        .write(batch([WriteOp::Merge(Incoming::Tombstone(conversation_tombstone(1, 25)?))]))
        .await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, Some(hlc(40)?), "the max is kept");
    assert!(store.conversation(conv_id(1)).await?.is_some(), "an older tombstone loses");

    // Reopened (a new connection to the same data), the mark still covers.
    drop(store);
    let store = b.open().await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, Some(hlc(40)?), "survives reopening");
    let outcome = store
        .write(batch([
            WriteOp::Merge(Incoming::Message(message(2, 1, 40, 3)?)),
            WriteOp::Merge(Incoming::Message(message(3, 1, 45, 3)?)),
        ]))
        .await?;
    assert_eq!((outcome.merged, outcome.superseded), (1, 1));
    assert_eq!(store.message(msg_id(2)).await?, None, "covered after the recreation");
    assert!(store.message(msg_id(3)).await?.is_some(), "stamped after the mark: kept");

    // A local delete of the recreation raises it to its own stamp; the
    // same deletion re-stamped lower (refused for clock skew before it
    // ever reached a server) counts at its new stamp.
    store.write(batch([WriteOp::Delete(conversation_tombstone(1, 60)?)])).await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, Some(hlc(60)?));
    store.write(batch([WriteOp::Delete(conversation_tombstone(1, 55)?)])).await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, Some(hlc(55)?), "re-stamped");
    assert_eq!(store.deletion_mark(conv_id(2)).await?, None, "per conversation");

    store.clear().await?;
    assert_eq!(store.deletion_mark(conv_id(1)).await?, None, "a wipe forgets it");
    Ok(())
}

/// Merged tombstones delete; a message older than its conversation's
/// tombstone loses, and a stale update cannot resurrect a deleted record.
async fn merge_respects_tombstones(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
        ]))
        .await?;
    let outcome = store
        .write(batch([WriteOp::Merge(Incoming::Tombstone(conversation_tombstone(1, 50)?))]))
        .await?;
    assert_eq!(outcome.merged, 1);
    assert_eq!(store.conversation(conv_id(1)).await?, None);
    assert_eq!(store.message(msg_id(1)).await?, None);

    let outcome = store
        .write(batch([
            WriteOp::Merge(Incoming::Conversation(conversation(1, 40, 3)?)),
            WriteOp::Merge(Incoming::Message(message(2, 1, 45, 3)?)),
        ]))
        .await?;
    assert_eq!((outcome.merged, outcome.superseded), (0, 2));
    assert_eq!(store.conversation(conv_id(1)).await?, None, "no resurrection");
    assert_eq!(store.message(msg_id(2)).await?, None, "covered by the tombstone");

    let outcome = store
        .write(batch([WriteOp::Merge(Incoming::Conversation(conversation(1, 60, 3)?))]))
        .await?;
    assert_eq!(outcome.merged, 1, "a newer version wins over the tombstone");
    assert!(store.conversation(conv_id(1)).await?.is_some());
    Ok(())
}

/// `MergeAndEnqueue` queues a winner for sync under the given op id; a
/// loser, or a record held in the very same version, queues nothing.
async fn merge_and_enqueue_queues_winners_only(b) {
    let store = b.open().await?;
    let held = conversation(1, 50, 3)?;
    store.write(batch([WriteOp::PutConversation(held.clone())])).await?;

    let mut same_version = held.clone();
    same_version.body = Body(b"re-encoded".to_vec());
    let outcome = store
        .write(batch([
            WriteOp::MergeAndEnqueue(Incoming::Conversation(same_version), op_id(1)),
            WriteOp::MergeAndEnqueue(Incoming::Conversation(conversation(1, 40, 3)?), op_id(2)),
        ]))
        .await?;
    assert_eq!((outcome.merged, outcome.superseded), (0, 2));
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation missing")?;
    assert_eq!(row.record, held, "the same version stays as held");
    assert_eq!(pending(&*store).await?, vec![]);

    let m = message(1, 1, 60, 3)?;
    let outcome = store
        .write(batch([WriteOp::MergeAndEnqueue(Incoming::Message(m.clone()), op_id(3))]))
        .await?;
    assert_eq!(outcome.merged, 1);
    assert_eq!(store.message(m.id).await?, Some(m.clone()));
    let entries = store.outbox(10).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].change, chatvault_core::Change::upsert_message(op_id(3), &m));
    Ok(())
}

/// A batch that would exceed the store's quota fails with
/// [`StoreError::Full`] and leaves nothing of itself behind; the store
/// stays usable.
async fn full_storage_fails_the_whole_batch(b) {
    let store = b.open_with_quota(256 * 1024).await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            enqueue_conversation(1, 1),
        ]))
        .await?;
    let mut big = Vec::new();
    big.push(WriteOp::PutConversation(conversation(2, 20, 3)?));
    big.push(enqueue_conversation(2, 2));
    for i in 0..=255u8 {
        let mut m = message(i, 2, 30 + u64::from(i), 4096)?;
        m.id = MessageId::from_bytes(id_bytes(0x1e, i));
        big.push(WriteOp::PutMessage(m));
    }
    let result = store.write(batch(big)).await;
    expect_err(result, |e| matches!(e, StoreError::Full { .. }), "Full")?;
    assert_eq!(store.conversation(conv_id(2)).await?, None, "nothing of the batch");
    let usage = store.usage().await?;
    assert_eq!((usage.conversations, usage.messages, usage.pending_changes), (1, 0, 1));
    store.write(batch([WriteOp::PutMessage(message(1, 1, 40, 10)?)])).await?;
    assert!(store.message(msg_id(1)).await?.is_some(), "still writable");
    Ok(())
}

/// `write_all` applies every batch of its source as one write; a later
/// batch may rely on an earlier one; a source error writes nothing.
async fn write_all_is_all_or_nothing(b) {
    let store = b.open().await?;
    let good: Vec<Result<WriteBatch>> = vec![
        Ok(batch([WriteOp::PutConversation(conversation(1, 10, 3)?)])),
        Ok(batch([
            WriteOp::RequireConversation(conv_id(1)),
            WriteOp::InsertMessage(message(1, 1, 20, 3)?),
            WriteOp::Merge(Incoming::Message(message(2, 1, 30, 3)?)),
        ])),
    ];
    let outcome = store.write_all(Box::new(good.into_iter())).await?;
    assert_eq!(outcome.merged, 1, "outcomes add up over the batches");
    assert_eq!(store.usage().await?.messages, 2);

    let failing: Vec<Result<WriteBatch>> = vec![
        Ok(batch([
            WriteOp::PutConversation(conversation(2, 10, 3)?),
            WriteOp::SetMeta("import".into(), b"started".to_vec()),
        ])),
        Err(StoreError::Decode("truncated input".into())),
        Ok(batch([WriteOp::PutConversation(conversation(3, 10, 3)?)])),
    ];
    let result = store.write_all(Box::new(failing.into_iter())).await;
    expect_err(result, |e| matches!(e, StoreError::Decode(_)), "the source's error")?;
    assert_eq!(store.conversation(conv_id(2)).await?, None, "nothing written");
    assert_eq!(store.conversation(conv_id(3)).await?, None, "nothing written");
    assert_eq!(store.meta("import").await?, None, "nothing written");

    let missing: Vec<Result<WriteBatch>> = vec![
        Ok(batch([WriteOp::PutConversation(conversation(4, 10, 3)?)])),
        Ok(batch([WriteOp::RequireConversation(conv_id(5))])),
    ];
    let result = store.write_all(Box::new(missing.into_iter())).await;
    expect_err(
        result,
        |e| matches!(e, StoreError::ConversationNotFound(_)),
        "ConversationNotFound",
    )?;
    assert_eq!(store.conversation(conv_id(4)).await?, None, "nothing written");
    let empty: Vec<Result<WriteBatch>> = Vec::new();
    store.write_all(Box::new(empty.into_iter())).await?;
    store.write(WriteBatch::new()).await?;
    Ok(())
}

/// `clear` deletes every record, tombstone and outbox entry and keeps the
/// metadata; the store stays usable.
async fn clear_keeps_meta(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::SetMeta("header".into(), b"keep me".to_vec()),
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            enqueue_conversation(1, 1),
            WriteOp::PutConversation(conversation(2, 10, 3)?),
            WriteOp::Delete(conversation_tombstone(2, 30)?),
        ]))
        .await?;
    store.clear().await?;
    let usage = store.usage().await?;
    assert_eq!(
        (usage.conversations, usage.messages, usage.tombstones, usage.pending_changes, usage.bytes),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(store.meta("header").await?, Some(b"keep me".to_vec()));
    assert_eq!(store.outbox(10).await?, vec![]);
    store
        .write(batch([
            WriteOp::PutConversation(conversation(3, 40, 3)?),
            enqueue_conversation(3, 2),
        ]))
        .await?;
    assert_eq!(pending(&*store).await?.len(), 1);
    Ok(())
}

/// Tombstones list in `(kind, id)` order — conversations first — a page
/// at a time, each page continuing after the last one's position.
async fn tombstones_list_in_pages(b) {
    let store = b.open().await?;
    let mut ops = Vec::new();
    for n in [3u8, 1, 2] {
        ops.push(WriteOp::PutConversation(conversation(n, 10, 3)?));
    }
    ops.push(WriteOp::Delete(message_tombstone(5, 3, 20)?));
    ops.push(WriteOp::Delete(message_tombstone(4, 3, 20)?));
    ops.push(WriteOp::Delete(conversation_tombstone(2, 20)?));
    ops.push(WriteOp::Delete(conversation_tombstone(1, 20)?));
    store.write(batch(ops)).await?;

    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.tombstones(&TombstoneQuery { after, limit: 3 }).await?;
        assert!(page.len() <= 3);
        match page.last() {
            Some(t) => after = Some((t.kind, t.id)),
            None => break,
        }
        listed.extend(page.into_iter().map(|t| (t.kind, t.id)));
    }
    assert_eq!(
        listed,
        vec![
            (EntityKind::Conversation, conv_id(1).into()),
            (EntityKind::Conversation, conv_id(2).into()),
            (EntityKind::Message, msg_id(4).into()),
            (EntityKind::Message, msg_id(5).into()),
        ]
    );
    Ok(())
}

/// Conversations list most recent activity first (ties by id, descending),
/// filtered by an inclusive activity range and paged by cursor.
async fn conversations_ordered_and_paged(b) {
    let store = b.open().await?;
    let mut ops = Vec::new();
    for (n, t) in [(1u8, 10u64), (2, 30), (3, 20), (4, 30), (5, 40)] {
        ops.push(WriteOp::PutConversation(conversation(n, t, 3)?));
    }
    // A message makes conversation 1 the most recently active.
    ops.push(WriteOp::PutMessage(message(1, 1, 50, 3)?));
    store.write(batch(ops)).await?;

    let all = store.conversations(&ConversationQuery { limit: 10, ..Default::default() }).await?;
    let expected = vec![conv_id(1), conv_id(5), conv_id(4), conv_id(2), conv_id(3)];
    assert_eq!(conversation_ids(&all), expected);

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .conversations(&ConversationQuery { after, limit: 2, ..Default::default() })
            .await?;
        match page.last() {
            Some(r) => {
                after = Some(ConversationCursor { updated_at: r.activity_at, id: r.record.id })
            }
            None => break,
        }
        paged.extend(conversation_ids(&page));
    }
    assert_eq!(paged, expected, "pages join up without gaps or repeats");

    let range = store
        .conversations(&ConversationQuery {
            active_from: Some(at(20)),
            active_to: Some(at(30)),
            ..Default::default()
        })
        .await?;
    assert_eq!(conversation_ids(&range), vec![conv_id(4), conv_id(2), conv_id(3)]);
    Ok(())
}

/// Messages of one conversation list newest first (ties by id,
/// descending) and page back in time by cursor; other conversations'
/// messages never appear.
async fn messages_latest_first_and_paged(b) {
    let store = b.open().await?;
    let mut ops = vec![
        WriteOp::PutConversation(conversation(1, 10, 3)?),
        WriteOp::PutConversation(conversation(2, 10, 3)?),
    ];
    for (m, t) in [(1u8, 10u64), (2, 30), (3, 20), (4, 30), (5, 40)] {
        ops.push(WriteOp::PutMessage(message(m, 1, t, 3)?));
    }
    ops.push(WriteOp::PutMessage(message(9, 2, 35, 3)?));
    store.write(batch(ops)).await?;

    let expected = vec![msg_id(5), msg_id(4), msg_id(2), msg_id(3), msg_id(1)];
    let latest = store
        .messages(&MessageQuery { conversation_id: conv_id(1), before: None, limit: 3 })
        .await?;
    assert_eq!(message_ids(&latest), expected[..3].to_vec());

    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .messages(&MessageQuery { conversation_id: conv_id(1), before, limit: 2 })
            .await?;
        match page.last() {
            Some(m) => before = Some(MessageCursor { created_at: m.created_at, id: m.id }),
            None => break,
        }
        paged.extend(message_ids(&page));
    }
    assert_eq!(paged, expected, "pages join up without gaps or repeats");
    let none = store
        .messages(&MessageQuery { conversation_id: conv_id(3), before: None, limit: 5 })
        .await?;
    assert_eq!(none, vec![]);
    Ok(())
}

/// A page of an existing conversation's messages comes with the answer
/// that it exists; a conversation never created or deleted has none (not
/// an empty page), even while it is recreated empty.
async fn conversation_messages_answer_whether_it_exists(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutConversation(conversation(2, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            WriteOp::PutMessage(message(2, 1, 30, 3)?),
        ]))
        .await?;
    let query = |c: u8, limit: usize| MessageQuery { conversation_id: conv_id(c), before: None, limit };
    let page = store.conversation_messages(&query(1, 5)).await?;
    assert_eq!(page.as_deref().map(message_ids), Some(vec![msg_id(2), msg_id(1)]));
    assert_eq!(page, Some(store.messages(&query(1, 5)).await?), "the same page as messages()");
    assert_eq!(store.conversation_messages(&query(2, 5)).await?, Some(vec![]), "exists, empty");
    assert_eq!(store.conversation_messages(&query(3, 5)).await?, None, "never created");
    store.write(batch([WriteOp::Delete(conversation_tombstone(1, 40)?)])).await?;
    assert_eq!(store.conversation_messages(&query(1, 5)).await?, None, "deleted");
    assert!(store.conversation_messages(&query(2, 0)).await.is_err(), "zero page size");
    Ok(())
}

/// A zero page size is an invalid request for every listing.
async fn zero_page_size_is_refused(b) {
    let store = b.open().await?;
    let invalid = |e: &StoreError| matches!(e, StoreError::InvalidRequest(_));
    let conversations = ConversationQuery { limit: 0, ..Default::default() };
    expect_err(store.conversations(&conversations).await, invalid, "InvalidRequest")?;
    let messages = MessageQuery { conversation_id: conv_id(1), before: None, limit: 0 };
    expect_err(store.messages(&messages).await, invalid, "InvalidRequest")?;
    let tombstones = TombstoneQuery { after: None, limit: 0 };
    expect_err(store.tombstones(&tombstones).await, invalid, "InvalidRequest")?;
    expect_err(store.outbox(0).await, invalid, "InvalidRequest")?;
    Ok(())
}

/// Usage counts live records, tombstones and pending changes, and sums
/// stored body bytes, per conversation too (most recent first, with
/// whether it has a pending change).
async fn usage_counts_records_and_bytes(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 100)?),
            WriteOp::PutMessage(message(1, 1, 20, 1000)?),
            WriteOp::PutMessage(message(2, 1, 21, 10)?),
            WriteOp::PutConversation(conversation(2, 50, 7)?),
            enqueue_message(2, 1, 1),
            WriteOp::PutConversation(conversation(3, 5, 1)?),
            WriteOp::Delete(conversation_tombstone(3, 30)?),
            // A message synced ahead of its conversation counts too.
            WriteOp::PutMessage(message(3, 4, 22, 50)?),
        ]))
        .await?;
    let usage = store.usage().await?;
    assert_eq!(usage.conversations, 2);
    assert_eq!(usage.messages, 3);
    assert_eq!(usage.tombstones, 1);
    assert_eq!(usage.pending_changes, 1);
    assert_eq!(usage.bytes, 100 + 1000 + 10 + 7 + 50);
    let per: Vec<(ConversationId, u64, u64, bool)> = usage
        .per_conversation
        .iter()
        .map(|c| (c.id, c.messages, c.bytes, c.pending))
        .collect();
    assert_eq!(per, vec![(conv_id(2), 0, 7, false), (conv_id(1), 2, 1110, true)]);
    assert_eq!(usage.per_conversation[1].activity_at, at(21));

    store.write(batch([WriteOp::Delete(message_tombstone(1, 1, 40)?)])).await?;
    let usage = store.usage().await?;
    assert_eq!((usage.messages, usage.tombstones), (2, 2));
    assert_eq!(usage.bytes, 100 + 10 + 7 + 50, "a deleted body no longer counts");
    Ok(())
}

/// Everything written is there after reopening (for the memory backend,
/// "reopening" hands back the same store).
async fn reopen_keeps_everything(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::SetMeta("header".into(), b"h".to_vec()),
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            WriteOp::Delete(message_tombstone(2, 1, 25)?),
            enqueue_message(1, 1, 1),
        ]))
        .await?;
    let usage = store.usage().await?;
    let outbox = store.outbox(10).await?;
    drop(store);

    let store = b.open().await?;
    assert_eq!(store.usage().await?, usage);
    assert_eq!(store.outbox(10).await?, outbox);
    assert_eq!(store.meta("header").await?, Some(b"h".to_vec()));
    assert_eq!(store.message(msg_id(1)).await?, Some(message(1, 1, 20, 3)?));
    assert!(store.tombstone(EntityKind::Message, msg_id(2).into()).await?.is_some());
    Ok(())
}

/// `RequireVersion` passes only while the store holds the record live at
/// exactly the version the writer read: a record changed since (a pull
/// that landed in between), deleted or never stored fails the whole
/// batch with `VersionChanged`; a version written earlier in the same
/// batch counts.
async fn require_version_refuses_a_record_changed_since_it_was_read(b) {
    let store = b.open().await?;
    let conv = EntityKind::Conversation;
    let c1: RecordId = conv_id(1).into();
    store
        .write(batch([WriteOp::PutConversation(conversation(1, 10, 3)?)]))
        .await?;
    store
        .write(batch([
            WriteOp::RequireVersion(conv, c1, hlc(10)?),
            WriteOp::PutConversation(conversation(1, 20, 4)?),
            enqueue_conversation(1, 1),
        ]))
        .await?;
    let before = pending(&*store).await?;

    // The writer read version 10, but 20 is stored now.
    let stale = store
        .write(batch([
            WriteOp::RequireVersion(conv, c1, hlc(10)?),
            WriteOp::PutConversation(conversation(1, 30, 5)?),
            enqueue_conversation(1, 2),
            WriteOp::SetMeta("k".into(), b"v".to_vec()),
        ]))
        .await;
    expect_err(
        stale,
        |e| matches!(e, StoreError::VersionChanged { kind, id } if *kind == conv && *id == c1),
        "VersionChanged",
    )?;
    let row = store.conversation(conv_id(1)).await?.ok_or("conversation gone")?;
    assert_eq!(row.record.version, hlc(20)?, "nothing of the batch");
    assert_eq!(store.meta("k").await?, None, "nothing of the batch");
    assert_eq!(pending(&*store).await?, before, "nothing of the batch");

    // A version written earlier in the batch is what later checks see.
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 40, 3)?),
            WriteOp::RequireVersion(conv, c1, hlc(40)?),
        ]))
        .await?;

    // A tombstone, even at the expected version, is not a live record;
    // neither is a record never stored.
    store
        .write(batch([WriteOp::Delete(conversation_tombstone(1, 40)?)]))
        .await?;
    for (kind, id) in [(conv, c1), (EntityKind::Message, msg_id(9).into())] {
        let result = store
            .write(batch([WriteOp::RequireVersion(kind, id, hlc(40)?)]))
            .await;
        expect_err(
            result,
            |e| matches!(e, StoreError::VersionChanged { .. }),
            "VersionChanged",
        )?;
    }
    Ok(())
}

/// `ClaimStamps` keeps the clock mark: a claim is accepted only when all
/// its stamps lie above the stored mark (or it re-bases exactly the
/// stored mark), raises the mark to its `through` in the same write, and
/// a refused claim fails the whole batch with `StampsTaken` carrying the
/// mark. The mark survives reopening.
async fn claim_stamps_refuses_stamps_another_writer_took(b) {
    let store = b.open().await?;
    let claim = |from: u64, through: u64, rebases: Option<u64>| -> TestResult<WriteOp> {
        Ok(WriteOp::ClaimStamps(StampClaim {
            from: hlc(from)?,
            through: hlc(through)?,
            rebases: rebases.map(hlc).transpose()?,
        }))
    };
    let mark = |store: Arc<dyn Store>| async move {
        let bytes = store.meta(CLOCK_MARK_KEY).await?.ok_or("no clock mark")?;
        TestResult::Ok(crate::parse_clock_mark(&bytes)?)
    };
    store
        .write(batch([
            claim(1, 5, None)?,
            WriteOp::PutConversation(conversation(1, 1, 3)?),
        ]))
        .await?;
    assert_eq!(mark(store.clone()).await?, hlc(5)?);

    // Another writer's stamps 3..=7 overlap the committed ones.
    let taken = store
        .write(batch([
            WriteOp::PutConversation(conversation(2, 3, 3)?),
            claim(3, 7, None)?,
        ]))
        .await;
    let five = hlc(5)?;
    expect_err(
        taken,
        |e| matches!(e, StoreError::StampsTaken { mark } if *mark == five),
        "StampsTaken",
    )?;
    assert_eq!(store.conversation(conv_id(2)).await?, None, "nothing of the batch");
    assert_eq!(mark(store.clone()).await?, hlc(5)?);

    store.write(batch([claim(6, 8, None)?])).await?;
    assert_eq!(mark(store.clone()).await?, hlc(8)?);

    // Re-basing away from exactly the stored mark lowers it; a re-base of
    // a mark that is no longer stored is an ordinary claim.
    store.write(batch([claim(1, 2, Some(8))?])).await?;
    assert_eq!(mark(store.clone()).await?, hlc(2)?);
    let stale = store.write(batch([claim(1, 3, Some(8))?])).await;
    expect_err(
        stale,
        |e| matches!(e, StoreError::StampsTaken { .. }),
        "StampsTaken",
    )?;
    // Claims in one write_all see each other.
    let both = store
        .write_all(Box::new(
            vec![Ok(batch([claim(3, 4, None)?])), Ok(batch([claim(4, 6, None)?]))].into_iter(),
        ))
        .await;
    expect_err(
        both,
        |e| matches!(e, StoreError::StampsTaken { .. }),
        "StampsTaken",
    )?;
    assert_eq!(mark(store.clone()).await?, hlc(2)?, "nothing of the write");
    drop(store);
    let store = b.open().await?;
    assert_eq!(mark(store).await?, hlc(2)?);
    Ok(())
}

/// `RequireMeta` passes while the metadata value is exactly the expected
/// one (absent for `None`), seeing what earlier operations of the same
/// write set, and otherwise fails the whole batch with `MetaChanged`.
async fn require_meta_refuses_a_changed_value(b) {
    let store = b.open().await?;
    let require = |value: Option<&[u8]>| WriteOp::RequireMeta("fence".into(), value.map(<[u8]>::to_vec));
    // Absent: `None` passes.
    store
        .write(batch([require(None), WriteOp::PutConversation(conversation(1, 1, 1)?)]))
        .await?;
    store
        .write(batch([WriteOp::SetMeta("fence".into(), b"one".to_vec()), require(Some(b"one"))]))
        .await?;
    for stale in [None, Some(&b"two"[..])] {
        let refused = store
            .write(batch([WriteOp::PutConversation(conversation(2, 2, 2)?), require(stale)]))
            .await;
        expect_err(
            refused,
            |e| matches!(e, StoreError::MetaChanged { key } if key == "fence"),
            "MetaChanged",
        )?;
    }
    assert_eq!(store.conversation(conv_id(2)).await?, None, "nothing of the batch");
    // In one write_all, a later batch sees an earlier one's change.
    let stale = store
        .write_all(Box::new(
            vec![
                Ok(batch([WriteOp::SetMeta("fence".into(), b"two".to_vec())])),
                Ok(batch([require(Some(b"one"))])),
            ]
            .into_iter(),
        ))
        .await;
    expect_err(stale, |e| matches!(e, StoreError::MetaChanged { .. }), "MetaChanged")?;
    assert_eq!(store.meta("fence").await?, Some(b"one".to_vec()), "nothing of the write");
    store
        .write(batch([WriteOp::DeleteMeta("fence".into()), require(None)]))
        .await?;
    Ok(())
}

/// A record's pending change follows it into its tombstone and back out
/// (a put after a deletion): it is sent as the record's state at the time
/// of the push, coalesces with the next change, and `Dequeue` and
/// `Unpark` find it. A change of a record the store holds neither live nor
/// as a tombstone is not queued at all.
async fn a_pending_change_follows_its_record_through_deletion(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            enqueue_message(1, 1, 1),
        ]))
        .await?;
    let seq = pending(&*store).await?[0].0;
    let t = message_tombstone(1, 1, 30)?;
    store.write(batch([WriteOp::Delete(t.clone())])).await?;
    let entries = store.outbox(10).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].seq, entries[0].change.op_id), (seq, op_id(1)));
    assert_eq!(entries[0].change, chatvault_core::Change::delete(op_id(1), &t));

    let back = message(1, 1, 40, 5)?;
    store.write(batch([WriteOp::PutMessage(back.clone())])).await?;
    let entries = store.outbox(10).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].seq, seq, "still the same entry");
    assert_eq!(entries[0].change, chatvault_core::Change::upsert_message(op_id(1), &back));

    store
        .write(batch([WriteOp::Delete(message_tombstone(1, 1, 50)?), enqueue_message(1, 1, 2)]))
        .await?;
    let left = pending(&*store).await?;
    assert_eq!(left.len(), 1, "coalesced: {left:?}");
    assert!(left[0].0 > seq);
    assert_eq!(left[0].2, op_id(2));

    let refused = crate::ParkReason { code: "refused".into(), message: "no".into(), at: at(99) };
    store.write(batch([WriteOp::Park(left[0].0, refused)])).await?;
    store.write(batch([WriteOp::PutMessage(message(1, 1, 60, 3)?)])).await?;
    assert_eq!(store.parked(None, 10).await?.len(), 1, "parked across the put");
    store.write(batch([WriteOp::Unpark(msg_id(1).into())])).await?;
    assert_eq!(pending(&*store).await?.len(), 1, "unparked");
    store.write(batch([WriteOp::Dequeue(msg_id(1).into())])).await?;
    assert_eq!(pending(&*store).await?, vec![]);

    store.write(batch([enqueue_message(7, 1, 7), enqueue_conversation(8, 8)])).await?;
    let usage = store.usage().await?;
    assert_eq!((usage.pending_changes, usage.parked_changes), (0, 0), "nothing to send");
    Ok(())
}

}
