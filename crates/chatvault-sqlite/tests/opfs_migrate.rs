//! Moving a vault between the two browser backends (feature `opfs`;
//! wasm-bindgen-test in a dedicated worker of headless Chromium): an
//! encrypted vault with pending and parked changes goes IndexedDB → SQLite
//! on OPFS → IndexedDB with `Vault::migrate`, and each copy opens with the
//! passphrase, reads every message and holds exactly the outbox the sync
//! client would have pushed before the move. A copy that stops midway
//! never opens as a vault and is started over by the next migration.
//!
//! Every test has its own databases (unique names), deleted after.

#![cfg(target_family = "wasm")]

use chatvault::testing::{fast_options, FailingStore, Snapshot, PASSPHRASE};
use chatvault::{
    NewConversation, NewMessage, OutboxEntry, ParkReason, ParkedEntry, Progress, Role, Store,
    StoreError, SystemClock, Timestamp, Vault, VaultError,
};
use chatvault_indexeddb::{IndexedDbOptions, IndexedDbStore};
use chatvault_sqlite::{SqliteOptions, SqliteStore};
use std::sync::{Arc, Mutex};
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// A database name no other test (or earlier run) uses.
fn unique_name(what: &str) -> String {
    let nonce = (js_sys::Math::random() * 1e12) as u64;
    format!("chatvault-test-migrate-{what}-{nonce}")
}

async fn open(store: Arc<dyn Store>, passphrase: &str) -> chatvault::Result<Vault> {
    let fast = fast_options(Arc::new(SystemClock));
    Vault::builder()
        .store(store)
        .passphrase(passphrase)
        .kdf(fast.kdf, fast.kdf_policy)
        .open()
        .await
}

async fn indexeddb(name: &str) -> Arc<dyn Store> {
    // The store API takes `Arc`s; a browser worker has one thread.
    #[allow(clippy::arc_with_non_send_sync)]
    Arc::new(
        IndexedDbStore::open(name, IndexedDbOptions::default())
            .await
            .expect("open an IndexedDB store"),
    )
}

async fn opfs(name: &str) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(name, SqliteOptions::default())
            .await
            .expect("open a SQLite store on OPFS"),
    )
}

/// What a vault shows and would push: every conversation and message by
/// id (with versions), the pending changes, the parked ones.
#[derive(Debug, PartialEq)]
struct Seen {
    snapshot: Snapshot,
    pending: Vec<OutboxEntry>,
    parked: Vec<ParkedEntry>,
}

async fn seen(vault: &Vault) -> Seen {
    Seen {
        snapshot: Snapshot::of(vault).await.expect("read the whole vault"),
        pending: vault
            .replica()
            .pending_changes(100_000)
            .await
            .expect("pending changes"),
        parked: vault
            .replica()
            .all_parked_changes()
            .await
            .expect("parked changes"),
    }
}

/// An encrypted vault: 3 conversations of 250 messages (the copy spans
/// batches), a deleted conversation and message, two parked changes.
async fn fill(store: Arc<dyn Store>) -> Seen {
    let vault = open(store, PASSPHRASE).await.expect("create the vault");
    let mut first = None;
    for c in 0..4 {
        let conv = vault
            .create_conversation(NewConversation::titled(format!("conversation {c}")))
            .await
            .expect("create a conversation");
        let batch = (0..250)
            .map(|m| NewMessage::new(Role::Assistant, format!("message {m} of {c}")))
            .collect();
        let added = vault.add_messages(conv.id, batch).await.expect("add");
        first.get_or_insert(added[0].id);
        if c == 3 {
            vault.delete_conversation(conv.id).await.expect("delete");
        }
    }
    vault
        .delete_message(first.expect("a message"))
        .await
        .expect("delete a message");
    let replica = vault.replica();
    let refused = replica
        .pending_changes(2)
        .await
        .expect("pending")
        .into_iter()
        .map(|e| {
            let reason = ParkReason {
                code: "payload_too_large".into(),
                message: "too big".into(),
                at: Timestamp(1_700_000_000_000),
            };
            (e.seq, reason)
        })
        .collect();
    replica.park(refused).await.expect("park two changes");
    let before = seen(&vault).await;
    assert_eq!(before.parked.len(), 2);
    assert!(before.pending.len() > 500, "{}", before.pending.len());
    before
}

#[wasm_bindgen_test]
async fn an_encrypted_vault_moves_indexeddb_to_opfs_and_back_with_its_outbox() {
    let (idb_name, opfs_name, back_name) =
        (unique_name("idb"), unique_name("opfs"), unique_name("back"));
    let source = indexeddb(&idb_name).await;
    let before = fill(Arc::clone(&source)).await;

    let on_opfs = opfs(&opfs_name).await;
    let reports: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let progress = {
        let reports = Arc::clone(&reports);
        Arc::new(move |p: Progress| reports.lock().expect("progress").push(p))
    };
    let report = Vault::migrate(&*source, &*on_opfs, Some(progress))
        .await
        .expect("IndexedDB → OPFS");
    assert_eq!((report.conversations, report.parked_changes), (3, 2));
    assert!(report.batches > 3, "{report:?}");
    assert!(reports.lock().expect("progress").len() > 3);

    let wrong = open(Arc::clone(&on_opfs), "not the passphrase").await;
    assert!(
        matches!(wrong, Err(VaultError::WrongPassphrase)),
        "{wrong:?}"
    );
    let moved = open(Arc::clone(&on_opfs), PASSPHRASE)
        .await
        .expect("open on OPFS");
    assert_eq!(
        seen(&moved).await,
        before,
        "on OPFS: the same vault and outbox"
    );
    drop(moved);

    let back = indexeddb(&back_name).await;
    Vault::migrate(&*on_opfs, &*back, None)
        .await
        .expect("OPFS → IndexedDB");
    let home = open(Arc::clone(&back), PASSPHRASE)
        .await
        .expect("open back in IndexedDB");
    assert_eq!(seen(&home).await, before, "back in IndexedDB: the same");
    // The source was only read.
    let original = open(Arc::clone(&source), PASSPHRASE).await.expect("reopen");
    assert_eq!(seen(&original).await, before);
    drop((home, original, source, back, on_opfs));
    for name in [&idb_name, &back_name] {
        IndexedDbStore::delete(name).await.expect("delete");
    }
    SqliteStore::delete(&opfs_name).await.expect("delete");
}

#[wasm_bindgen_test]
async fn a_migration_to_opfs_that_stops_midway_never_opens_and_starts_over() {
    let (idb_name, opfs_name) = (unique_name("idb"), unique_name("opfs"));
    let source = indexeddb(&idb_name).await;
    let before = fill(Arc::clone(&source)).await;
    let target = opfs(&opfs_name).await;
    let failing = FailingStore::shared(Arc::clone(&target));
    failing.fail_after(3);
    Vault::migrate(&*source, &failing, None)
        .await
        .expect_err("the injected failure");
    drop(failing);
    let half = open(Arc::clone(&target), PASSPHRASE).await;
    assert!(
        matches!(
            half,
            Err(VaultError::Store(StoreError::IncompleteMigration))
        ),
        "{half:?}"
    );
    let report = Vault::migrate(&*source, &*target, None)
        .await
        .expect("the migration again");
    assert!(report.restarted);
    let moved = open(Arc::clone(&target), PASSPHRASE).await.expect("open");
    assert_eq!(seen(&moved).await, before);
    drop((moved, source, target));
    IndexedDbStore::delete(&idb_name).await.expect("delete");
    SqliteStore::delete(&opfs_name).await.expect("delete");
}
