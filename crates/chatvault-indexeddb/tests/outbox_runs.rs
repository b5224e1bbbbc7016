//! The writer applies runs of `Enqueue`, `Dequeue` and `Unpark` ops with
//! one lookup of all their records (see `write.rs`): whatever mix of
//! queueing, replacing, dequeueing and unparking the same records inside a
//! run, across runs and across batches, the outbox ends exactly as the
//! in-memory reference store's does — with ids close together and spread
//! over the key space, among many other pending records.

#![cfg(target_family = "wasm")]

mod common;

use chatvault_core::{
    Body, ConversationId, ConversationRecord, DeviceId, EntityKind, Hlc, OpId, RecordId, Timestamp,
    UserId,
};
use chatvault_store::{MemoryStore, OutboxItem, Store, WriteBatch, WriteOp};
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const T0: u64 = 1_700_000_000_000;
/// Records queued before the scenario and never touched by it: they crowd
/// the key space of the spread ids.
const BYSTANDERS: u16 = 510;
/// Ops of the scenario: several windows of the writer.
const OPS: u32 = 1500;

/// A bystander's id: two for every first byte.
fn bystander(n: u16) -> ConversationId {
    let [high, low] = n.to_be_bytes();
    let mut id = [0x30; 16];
    id[0] = low;
    id[1] = 0x30 + high;
    ConversationId::from_bytes(id)
}

/// A narrow, time-ordered-like id (shared prefix, counter at the end).
fn narrow(n: u8) -> ConversationId {
    let mut id = [0x10; 16];
    id[15] = n;
    ConversationId::from_bytes(id)
}

/// An id spread over the key space.
fn spread(n: u8) -> ConversationId {
    let mut id = [0x20; 16];
    id[0] = n.wrapping_mul(37);
    id[15] = n;
    ConversationId::from_bytes(id)
}

fn conversation(id: ConversationId) -> WriteOp {
    WriteOp::PutConversation(ConversationRecord {
        id,
        user_id: UserId::local(),
        created_at: Timestamp(T0 as i64),
        updated_at: Timestamp(T0 as i64),
        version: Hlc::new(T0, 0, DeviceId(1)).expect("a stamp"),
        body: Body(vec![b'c'; 4]),
    })
}

fn enqueue(id: ConversationId, n: u32) -> WriteOp {
    let mut op = [0xaa; 16];
    op[12..].copy_from_slice(&n.to_be_bytes());
    WriteOp::Enqueue(OutboxItem {
        op_id: OpId::from_bytes(op),
        kind: EntityKind::Conversation,
        entity_id: id.into(),
        conversation_id: None,
    })
}

/// The scenario over `pool`: queue (twice as often), dequeue or unpark a
/// record picked by a seeded generator, in batches of 100 ops.
fn scenario(pool: &[ConversationId], seed: u32) -> Vec<WriteBatch> {
    let mut state = seed;
    let ops: Vec<WriteOp> = (0..OPS)
        .map(|n| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let id = pool[(state >> 8) as usize % pool.len()];
            match (state >> 20) % 4 {
                0 | 1 => enqueue(id, seed * OPS + n),
                2 => WriteOp::Dequeue(RecordId::from(id)),
                _ => WriteOp::Unpark(RecordId::from(id)),
            }
        })
        .collect();
    ops.chunks(100)
        .map(|c| WriteBatch { ops: c.to_vec() })
        .collect()
}

/// `(seq, entity, op)` of every pending entry, in order.
async fn outbox(store: &dyn Store) -> Vec<(u64, RecordId, OpId)> {
    store
        .outbox(10_000)
        .await
        .expect("outbox")
        .into_iter()
        .map(|e| (e.seq, e.change.entity_id, e.change.op_id))
        .collect()
}

#[wasm_bindgen_test]
async fn runs_of_outbox_ops_match_the_reference_store() {
    let dbs = common::Databases::new();
    let idb = dbs.open().await.expect("open");
    let memory = MemoryStore::new();
    let narrow_pool: Vec<_> = (0..40).map(narrow).collect();
    let spread_pool: Vec<_> = (0..20).map(spread).collect();
    let bystanders: Vec<_> = (0..BYSTANDERS).map(bystander).collect();

    let mut setup = WriteBatch::default();
    for id in narrow_pool.iter().chain(&spread_pool).chain(&bystanders) {
        setup.ops.push(conversation(*id));
    }
    for (n, id) in bystanders.iter().enumerate() {
        setup.ops.push(enqueue(*id, 1_000_000 + n as u32));
    }
    for store in [&idb as &dyn Store, &memory] {
        store.write(setup.clone()).await.expect("setup");
    }

    let mixed: Vec<_> = narrow_pool[..20]
        .iter()
        .chain(&spread_pool)
        .copied()
        .collect();
    for (seed, pool) in [(1, &narrow_pool), (2, &mixed), (3, &narrow_pool)] {
        for store in [&idb as &dyn Store, &memory] {
            store
                .write_all(Box::new(scenario(pool, seed).into_iter().map(Ok)))
                .await
                .expect("scenario");
        }
        let (got, want) = (outbox(&idb).await, outbox(&memory).await);
        assert_eq!(got.len(), want.len(), "scenario {seed}");
        assert_eq!(got, want, "scenario {seed}");
    }
}
