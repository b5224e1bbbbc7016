//! Write and read cost of the Vault on SQLite, each measured next to its
//! baseline in the same process: raw rusqlite with the same schema and
//! pragmas (WAL, synchronous=FULL), and for encryption the plaintext vault.
//!
//! Run with `cargo xtask bench`, which also prints the ratios.
//! `CHATVAULT_BENCH_QUICK=1` (set by `cargo xtask bench --quick`) imports
//! 1,000 messages instead of 10,000, to prove the benchmark runs.

use chatvault::testing::fast_options;
use chatvault::{
    ConversationId, ListMessages, ManualClock, NewConversation, NewMessage, Role, SqliteOptions,
    SqliteStore, Timestamp, Vault, VaultOptions,
};
use chatvault_core::{Body, DeviceId, EntityKind, HlcClock, MessageId, MessageRecord, OpId};
use chatvault_store::{OutboxItem, WriteBatch, WriteOp};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages per bulk import (fewer in a quick run).
fn batch_size() -> usize {
    if std::env::var_os("CHATVAULT_BENCH_QUICK").is_some() {
        1_000
    } else {
        10_000
    }
}
const KB: usize = 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn content() -> String {
    "x".repeat(KB)
}

/// The same table and index the SQLite store uses, with the same pragmas.
fn raw_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    // As the store configures its connection (plans independent of bound
    // values).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .expect("qpsg");
    conn.execute_batch(
        "CREATE TABLE messages (id BLOB PRIMARY KEY, conversation_id BLOB NOT NULL, \
         created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, version TEXT NOT NULL, \
         body BLOB NOT NULL);
         CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at, id);",
    )
    .expect("schema");
    conn
}

fn raw_insert(conn: &mut Connection, conversation: &[u8; 16], body: &[u8], n: usize) {
    let tx = conn.transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO messages (id, conversation_id, created_at, updated_at, version, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .expect("prepare");
        for i in 0..n {
            let id = uuid_bytes();
            stmt.execute(params![
                &id[..],
                &conversation[..],
                i as i64,
                i as i64,
                "0192f3a4b5c6-00000000-a1b2c3d4e5f60718",
                body
            ])
            .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn uuid_bytes() -> [u8; 16] {
    *chatvault::MessageId::new().as_bytes()
}

async fn sqlite_vault(dir: &Path, encrypted: bool) -> (Vault, chatvault::ConversationId) {
    let store = SqliteStore::open(dir.join("vault.db"), SqliteOptions::default())
        .await
        .expect("store");
    let options = VaultOptions {
        ..fast_options(Arc::new(ManualClock::new(Timestamp(1_700_000_000_000))))
    };
    let vault = if encrypted {
        Vault::open_encrypted(Arc::new(store), "bench passphrase", options).await
    } else {
        Vault::open(Arc::new(store), options).await
    }
    .expect("vault");
    let c = vault
        .create_conversation(NewConversation::titled("bench"))
        .await
        .expect("conversation");
    (vault, c.id)
}

fn batch(n: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|_| NewMessage::new(Role::User, content()))
        .collect()
}

/// `n` plaintext message records of about the size the Vault stores
/// (payload header + 1 KiB), each followed by the queueing of its change.
fn store_batch(conversation: ConversationId, n: usize) -> WriteBatch {
    let mut clock = HlcClock::new(DeviceId::from_random(0x5eed));
    let now = Timestamp(1_700_000_000_000);
    let body = format!(
        "{{\"v\":2,\"role\":\"user\",\"metadata\":{{}}}}\n{}",
        content()
    );
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::RequireConversation(conversation));
    for _ in 0..n {
        let id = MessageId::new();
        batch.push(WriteOp::InsertMessage(MessageRecord {
            id,
            conversation_id: conversation,
            created_at: now,
            updated_at: now,
            version: clock.tick(now).expect("stamp"),
            body: Body(body.clone().into_bytes()),
        }));
        batch.push(WriteOp::Enqueue(OutboxItem {
            op_id: OpId::new(),
            kind: EntityKind::Message,
            entity_id: id.into(),
            conversation_id: Some(conversation),
        }));
    }
    batch
}

fn bulk_import(c: &mut Criterion) {
    let rt = runtime();
    let n = batch_size();
    let mut g = c.benchmark_group("import_10k_1KiB");
    g.sample_size(10);
    g.bench_function("raw_rusqlite", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("dir");
                let conn = raw_connection(&dir.path().join("raw.db"));
                (dir, conn)
            },
            |(_dir, mut conn)| raw_insert(&mut conn, &uuid_bytes(), content().as_bytes(), n),
            BatchSize::PerIteration,
        )
    });
    // Raw rusqlite plus the store's outbox bookkeeping (schema 5): each
    // row points at its entry, one entry per message in a table keyed by
    // sequence number, the counter read once — what durable sync
    // bookkeeping costs before any Vault code runs.
    g.bench_function("raw_with_outbox", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("dir");
                let conn = raw_connection(&dir.path().join("raw.db"));
                conn.execute_batch(
                    "ALTER TABLE messages ADD COLUMN pending_seq INTEGER;
                     CREATE TABLE outbox (seq INTEGER PRIMARY KEY, entity_id BLOB NOT NULL, \
                     kind TEXT NOT NULL, conversation_id BLOB, op_id BLOB NOT NULL, \
                     parked_at INTEGER, parked_code TEXT, parked_message TEXT, \
                     attempts INTEGER NOT NULL DEFAULT 0);
                     CREATE TABLE outbox_counter (id INTEGER PRIMARY KEY, last INTEGER NOT NULL);
                     INSERT INTO outbox_counter VALUES (1, 0);",
                )
                .expect("outbox");
                (dir, conn)
            },
            |(_dir, mut conn)| {
                let conv = uuid_bytes();
                let body = content();
                let tx = conn.transaction().expect("tx");
                {
                    let last: i64 = tx
                        .query_row(
                            "SELECT max(last, coalesce((SELECT max(seq) FROM outbox), 0)) \
                             FROM outbox_counter WHERE id = 1",
                            [],
                            |r| r.get(0),
                        )
                        .expect("counter");
                    let mut stmt = tx
                        .prepare_cached(
                            "INSERT INTO messages (id, conversation_id, created_at, updated_at, \
                             version, body, pending_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )
                        .expect("prepare");
                    let mut queue = tx
                        .prepare_cached(
                            "INSERT INTO outbox (seq, entity_id, kind, conversation_id, op_id) \
                             VALUES (?1, ?2, 'message', ?3, ?4)",
                        )
                        .expect("prepare");
                    for i in 0..n {
                        let id = uuid_bytes();
                        let seq = last + 1 + i as i64;
                        stmt.execute(params![
                            &id[..],
                            &conv[..],
                            i as i64,
                            i as i64,
                            "0192f3a4b5c6-00000000-a1b2c3d4e5f60718",
                            body.as_bytes(),
                            seq
                        ])
                        .expect("insert");
                        queue
                            .execute(params![seq, &id[..], &conv[..], &uuid_bytes()[..]])
                            .expect("queue");
                    }
                }
                tx.commit().expect("commit");
            },
            BatchSize::PerIteration,
        )
    });
    // The store alone: the batch `add_messages` hands to the SQLite store
    // (each record, then its change), built before the clock starts — what
    // the store costs over raw + outbox, and what the Vault adds on top.
    g.bench_function("store_sqlite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("dir");
                let (vault, conv) = rt.block_on(sqlite_vault(dir.path(), false));
                let store = vault.store();
                let batch = store_batch(conv, n);
                let started = Instant::now();
                rt.block_on(store.write(batch)).expect("import");
                total += started.elapsed();
            }
            total
        })
    });
    for (name, encrypted) in [("vault_sqlite", false), ("vault_sqlite_encrypted", true)] {
        g.bench_function(name, |b| {
            // Setup (a fresh vault) is untimed; only the import is measured.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("dir");
                    let (vault, conv) = rt.block_on(sqlite_vault(dir.path(), encrypted));
                    let msgs = batch(n);
                    let started = Instant::now();
                    rt.block_on(vault.add_messages(conv, msgs)).expect("import");
                    total += started.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn durable_single_write(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("single_durable_write_1KiB");
    g.sample_size(30);
    let dir = tempfile::tempdir().expect("dir");
    let mut conn = raw_connection(&dir.path().join("raw.db"));
    let conv = uuid_bytes();
    let body = content();
    g.bench_function("raw_rusqlite", |b| {
        b.iter(|| raw_insert(&mut conn, &conv, body.as_bytes(), 1))
    });
    for (name, encrypted) in [("vault_sqlite", false), ("vault_sqlite_encrypted", true)] {
        let vdir = tempfile::tempdir().expect("dir");
        let (vault, conv) = rt.block_on(sqlite_vault(vdir.path(), encrypted));
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                vault
                    .add_message(conv, NewMessage::new(Role::User, content()))
                    .await
                    .expect("write");
            })
        });
    }
    g.finish();
}

fn encrypted_vs_plain(c: &mut Criterion) {
    let rt = runtime();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let vaults = [
        (
            "plaintext",
            rt.block_on(sqlite_vault(dirs[0].path(), false)),
        ),
        ("encrypted", rt.block_on(sqlite_vault(dirs[1].path(), true))),
    ];
    let mut g = c.benchmark_group("write_1000_1KiB");
    g.sample_size(20);
    for (name, (vault, conv)) in &vaults {
        g.bench_function(*name, |b| {
            b.to_async(&rt).iter_batched(
                || batch(1000),
                |msgs| async { vault.add_messages(*conv, msgs).await.expect("write") },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("read_100_1KiB");
    for (name, (vault, conv)) in &vaults {
        g.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                vault
                    .messages(
                        *conv,
                        ListMessages {
                            before: None,
                            limit: 100,
                        },
                    )
                    .await
                    .expect("read")
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bulk_import,
    durable_single_write,
    encrypted_vs_plain
);
criterion_main!(benches);
