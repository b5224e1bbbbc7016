//! More cases of the Store conformance suite, on the outbox's rules that
//! a backend keeping the outbox on its records (rather than in a table of
//! its own) could break: sequence numbers, a change that moves between a
//! record and its tombstone, pending deletions that keep a conversation.
//! (A change is queued after its record; one queued for a record the store
//! does not hold is not queued at all — see `cases`.)
//! Kept apart from `cases` so backends' work on either merges cleanly.

use super::*;

conformance_cases! {($) StoreBackend, __store_outbox_conformance_cases,

/// Sequence numbers are never issued twice: not after every change was
/// acknowledged (a push still in flight may hold old ones), not after
/// `clear`, not after a reopen.
async fn seqs_are_never_reused(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            enqueue_conversation(1, 1),
        ]))
        .await?;
    let first = pending(&*store).await?[0].0;
    store.acknowledge(&[first]).await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 20, 3)?),
            enqueue_conversation(1, 2),
        ]))
        .await?;
    let second = pending(&*store).await?[0].0;
    assert!(second > first, "{second} after {first}, all acknowledged");
    store.acknowledge(&[second]).await?;
    store.clear().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(2, 30, 3)?),
            enqueue_conversation(2, 3),
        ]))
        .await?;
    let third = pending(&*store).await?[0].0;
    assert!(third > second, "{third} after {second} and a clear");
    drop(store);
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(3, 40, 3)?),
            enqueue_conversation(3, 4),
        ]))
        .await?;
    let numbers: Vec<u64> = pending(&*store).await?.into_iter().map(|p| p.0).collect();
    assert_eq!(numbers.len(), 2, "{numbers:?}");
    assert!(numbers[1] > third, "{numbers:?} after {third} and a reopen");
    Ok(())
}

/// Acknowledging or parking a superseded sequence number leaves the
/// record's newer change alone, pending or parked.
async fn a_superseded_seq_never_touches_the_newer_change(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            enqueue_conversation(1, 1),
        ]))
        .await?;
    let old = pending(&*store).await?[0].0;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 20, 3)?),
            enqueue_conversation(1, 2),
        ]))
        .await?;
    let newer = pending(&*store).await?[0].0;
    let reason = crate::ParkReason { code: "x".into(), message: "x".into(), at: at(1) };
    store.write(batch([WriteOp::Park(old, reason.clone())])).await?;
    store.acknowledge(&[old]).await?;
    assert_eq!(pending(&*store).await?, vec![(newer, conv_id(1).into(), op_id(2))]);

    store.write(batch([WriteOp::Park(newer, reason.clone())])).await?;
    store.acknowledge(&[old]).await?;
    let parked = store.parked(None, 10).await?;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!((parked[0].seq, parked[0].attempts), (newer, 1));
    assert_eq!(store.usage().await?.parked_changes, 1);
    // Its own number acknowledges it, parked or not.
    store.acknowledge(&[newer]).await?;
    assert_eq!(store.parked(None, 10).await?, vec![]);
    assert_eq!(store.usage().await?.parked_changes, 0);
    Ok(())
}

/// A record's change stays one change when the record is replaced by its
/// tombstone or the tombstone by the record (without a new `Enqueue`): the
/// same sequence number and op id, parked or not, built from what is
/// stored now; `Dequeue` and `Unpark` find it on either.
async fn a_change_moves_between_a_record_and_its_tombstone(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
            enqueue_message(1, 1, 1),
        ]))
        .await?;
    let before = pending(&*store).await?;
    let t = message_tombstone(1, 1, 30)?;
    store.write(batch([WriteOp::Delete(t.clone())])).await?;
    let entries = store.outbox(10).await?;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].seq, before[0].0);
    assert_eq!(entries[0].change, chatvault_core::Change::delete(op_id(1), &t));

    let reason = crate::ParkReason { code: "x".into(), message: "x".into(), at: at(1) };
    store.write(batch([WriteOp::Park(before[0].0, reason)])).await?;
    let m = message(1, 1, 40, 5)?;
    store.write(batch([WriteOp::PutMessage(m.clone())])).await?;
    let parked = store.parked(None, 10).await?;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!((parked[0].seq, parked[0].attempts), (before[0].0, 1));
    assert_eq!(parked[0].change, chatvault_core::Change::upsert_message(op_id(1), &m));

    store.write(batch([WriteOp::Delete(message_tombstone(1, 1, 50)?)])).await?;
    store.write(batch([WriteOp::Unpark(msg_id(1).into())])).await?;
    assert_eq!(store.parked(None, 10).await?, vec![]);
    assert_eq!(pending(&*store).await?, before, "pending again, on the tombstone");
    store.write(batch([WriteOp::Dequeue(msg_id(1).into())])).await?;
    assert_eq!(pending(&*store).await?, vec![]);
    assert!(store.tombstone(EntityKind::Message, msg_id(1).into()).await?.is_some());
    Ok(())
}

/// A pending deletion of one of its messages keeps a conversation from
/// being forgotten, as a pending change of a live message does.
async fn a_pending_message_deletion_keeps_its_conversation(b) {
    let store = b.open().await?;
    store
        .write(batch([
            WriteOp::PutConversation(conversation(1, 10, 3)?),
            WriteOp::PutMessage(message(1, 1, 20, 3)?),
        ]))
        .await?;
    store
        .write(batch([WriteOp::Delete(message_tombstone(1, 1, 30)?), enqueue_message(1, 1, 1)]))
        .await?;
    let outcome = store
        .write(batch([WriteOp::ForgetUnlessPending(conversation_tombstone(1, 10)?)]))
        .await?;
    assert_eq!(outcome.forgotten, 0);
    assert!(store.conversation(conv_id(1)).await?.is_some());
    store.acknowledge(&[pending(&*store).await?[0].0]).await?;
    let outcome = store
        .write(batch([WriteOp::ForgetUnlessPending(conversation_tombstone(1, 10)?)]))
        .await?;
    assert_eq!(outcome.forgotten, 1, "nothing unsynced any more");
    Ok(())
}

}
