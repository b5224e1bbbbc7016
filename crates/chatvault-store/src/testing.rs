//! The Store-level conformance suite (feature `testing`): the [`Store`]
//! contract written once as plain `async fn` cases, run by every backend
//! crate through [`store_conformance_tests!`](crate::store_conformance_tests).
//!
//! The cases own no runtime: they await only the store, so the same suite
//! runs under `#[tokio::test]` natively and under `#[wasm_bindgen_test]` in
//! a browser. They must never sleep, spawn, or reach past the [`Store`]
//! trait into a backend's internals: what they check is what every backend
//! promises.
//!
//! Each case returns a [`TestResult`]: a contract violation is an `Err`
//! (or a failed `assert!`), never an `unwrap()` panic without context.
//!
//! # Instantiating it for a backend
//! Enable the feature in the backend crate's dev-dependencies
//! (`chatvault-store = { workspace = true, features = ["testing"] }`),
//! implement [`StoreBackend`] for a test fixture and write, in a test file:
//!
//! ```ignore
//! async fn backend() -> MyBackend { MyBackend::new() }
//! mod my_backend {
//!     chatvault_store::store_conformance_tests!(#[tokio::test], crate::backend);
//! }
//! ```
//!
//! Every case becomes one test, `my_backend::<case>`; in a browser pass
//! `#[wasm_bindgen_test::wasm_bindgen_test]` as the attribute instead.

use crate::{
    ConversationQuery, ConversationRow, MessageQuery, OutboxItem, Result, StampClaim, Store,
    StoreError, TombstoneQuery, WriteBatch, WriteOp, CLOCK_MARK_KEY,
};
use chatvault_core::{
    Body, ChangeOp, ConversationCursor, ConversationId, ConversationRecord, DeviceId, EntityKind,
    Hlc, Incoming, MessageCursor, MessageId, MessageRecord, OpId, RecordId, Timestamp, Tombstone,
    UserId,
};
use std::future::Future;
use std::sync::Arc;

/// What a case returns: `Ok` when the backend kept the contract.
pub type TestResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A backend under test, as a test fixture builds it.
pub trait StoreBackend {
    /// Opens the backend's storage. Calling it again reopens the **same**
    /// data: a file-backed store opens a new connection to the same file,
    /// the memory store hands back the same instance.
    fn open(&self) -> impl Future<Output = Result<Arc<dyn Store>>>;

    /// Opens separate, fresh storage that refuses to grow past about
    /// `bytes` with [`StoreError::Full`].
    fn open_with_quota(&self, bytes: u64) -> impl Future<Output = Result<Arc<dyn Store>>>;
}

/// Turns a case's failure into a test failure that shows the whole error
/// chain (the generated tests call it).
pub fn report(case: &str, result: TestResult) {
    if let Err(e) = result {
        let mut message = format!("{case}: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(&format!("\n  caused by: {s}"));
            source = s.source();
        }
        panic!("{message}");
    }
}

/// A fixed device for every stamp the cases make.
const DEVICE: DeviceId = DeviceId(7);

/// The stamp of logical time `t` (milliseconds since an arbitrary start).
fn hlc(t: u64) -> TestResult<Hlc> {
    Ok(Hlc::new(1_700_000_000_000 + t, 0, DEVICE)?)
}

/// The wall time of logical time `t`.
fn at(t: u64) -> Timestamp {
    Timestamp(1_700_000_000_000 + t as i64)
}

/// A distinct id from a small number (ids sort like `n`).
fn id_bytes(prefix: u8, n: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = prefix;
    b[15] = n;
    b
}

fn conv_id(n: u8) -> ConversationId {
    ConversationId::from_bytes(id_bytes(0x0c, n))
}

fn msg_id(n: u8) -> MessageId {
    MessageId::from_bytes(id_bytes(0x0e, n))
}

fn op_id(n: u8) -> OpId {
    OpId::from_bytes(id_bytes(0x0f, n))
}

/// Conversation `n`, edited at logical time `t`, with a body of `len` bytes.
fn conversation(n: u8, t: u64, len: usize) -> TestResult<ConversationRecord> {
    Ok(ConversationRecord {
        id: conv_id(n),
        user_id: UserId::local(),
        created_at: at(0),
        updated_at: at(t),
        version: hlc(t)?,
        body: Body(vec![b'c'; len]),
    })
}

/// Message `m` of conversation `c`, created and edited at logical time `t`.
fn message(m: u8, c: u8, t: u64, len: usize) -> TestResult<MessageRecord> {
    Ok(MessageRecord {
        id: msg_id(m),
        conversation_id: conv_id(c),
        created_at: at(t),
        updated_at: at(t),
        version: hlc(t)?,
        body: Body(vec![b'm'; len]),
    })
}

fn message_tombstone(m: u8, c: u8, t: u64) -> TestResult<Tombstone> {
    Ok(Tombstone::message(msg_id(m), conv_id(c), hlc(t)?, at(t)))
}

fn conversation_tombstone(c: u8, t: u64) -> TestResult<Tombstone> {
    Ok(Tombstone::conversation(conv_id(c), hlc(t)?, at(t)))
}

/// The outbox pointer for a conversation's change.
fn enqueue_conversation(c: u8, op: u8) -> WriteOp {
    WriteOp::Enqueue(OutboxItem {
        op_id: op_id(op),
        kind: EntityKind::Conversation,
        entity_id: conv_id(c).into(),
        conversation_id: None,
    })
}

/// The outbox pointer for a message's change.
fn enqueue_message(m: u8, c: u8, op: u8) -> WriteOp {
    WriteOp::Enqueue(OutboxItem {
        op_id: op_id(op),
        kind: EntityKind::Message,
        entity_id: msg_id(m).into(),
        conversation_id: Some(conv_id(c)),
    })
}

fn batch(ops: impl IntoIterator<Item = WriteOp>) -> WriteBatch {
    WriteBatch {
        ops: ops.into_iter().collect(),
    }
}

/// Every pending change, in outbox order, as `(seq, entity, op id)`.
async fn pending(store: &dyn Store) -> TestResult<Vec<(u64, RecordId, OpId)>> {
    Ok(store
        .outbox(1000)
        .await?
        .into_iter()
        .map(|e| (e.seq, e.change.entity_id, e.change.op_id))
        .collect())
}

/// Ids of a conversation listing, in the order returned.
fn conversation_ids(rows: &[ConversationRow]) -> Vec<ConversationId> {
    rows.iter().map(|r| r.record.id).collect()
}

/// Ids of a message listing, in the order returned.
fn message_ids(rows: &[MessageRecord]) -> Vec<MessageId> {
    rows.iter().map(|m| m.id).collect()
}

/// Fails the case with `what` unless `result` is the error `expected`
/// describes.
fn expect_err<T: std::fmt::Debug>(
    result: Result<T>,
    expected: impl Fn(&StoreError) -> bool,
    what: &str,
) -> TestResult {
    match result {
        Err(e) if expected(&e) => Ok(()),
        other => Err(format!("expected {what}, got {other:?}").into()),
    }
}

/// Generates the cases of a suite (as `pub async fn`s in this module,
/// each taking a `&impl $fixture`) **and** the hidden macro `$list` that
/// instantiates them, from one list, so a case cannot exist without
/// running. The leading `($)` passes a literal `$` into the generated
/// macro.
macro_rules! conformance_cases {
    (($d:tt) $fixture:ident, $list:ident,
     $( $(#[$attr:meta])* async fn $name:ident($b:ident) $body:block )*) => {
        $(
            $(#[$attr])*
            pub async fn $name($b: &impl $fixture) -> TestResult $body
        )*

        #[doc(hidden)]
        #[macro_export]
        macro_rules! $list {
            ($d test:meta, $d backend:path) => {
                $(
                    #[$d test]
                    async fn $name() {
                        let backend = $d backend().await;
                        $d crate::testing::report(
                            stringify!($name),
                            $d crate::testing::$name(&backend).await,
                        );
                    }
                )*
            };
        }
    };
}

/// Instantiates the Store conformance suite for a backend:
/// `store_conformance_tests!(#[tokio::test], path::to::make_backend)`, where
/// `make_backend` is an `async fn() -> impl StoreBackend` (an absolute
/// path, e.g. `crate::backend`) and the attribute is the test harness's
/// (`#[wasm_bindgen_test]` in a browser). Generates one test per case.
#[macro_export]
macro_rules! store_conformance_tests {
    (#[$test:meta], $backend:path) => {
        $crate::__store_conformance_cases!($test, $backend);
        $crate::__store_outbox_conformance_cases!($test, $backend);
        $crate::__store_copy_conformance_cases!($test, $backend);
    };
}

/// Instantiates the key-value conformance suite for a backend:
/// `kv_conformance_tests!(#[tokio::test], path::to::make_backend)`, where
/// `make_backend` is an `async fn() -> impl KvBackend`. Generates one test
/// per case, named `kv_<case>`.
#[macro_export]
macro_rules! kv_conformance_tests {
    (#[$test:meta], $backend:path) => {
        $crate::__kv_conformance_cases!($test, $backend);
    };
}

mod cases;
mod copy_cases;
mod kv;
mod outbox_cases;

pub use cases::*;
pub use copy_cases::*;
pub use kv::*;
pub use outbox_cases::*;
