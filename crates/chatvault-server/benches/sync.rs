//! Sync server throughput over HTTP, each figure next to its baseline in
//! the same process: raw rusqlite doing the same row work (500 inserts of
//! 1 KiB bodies in one transaction, or reading them back) with the
//! server's pragmas (WAL, synchronous=FULL). The ratio is the price of
//! HTTP, JSON, authentication, idempotency and last-writer-wins.
//!
//! Run with `cargo xtask bench` (which prints the ratios).

mod support;

use chatvault_core::{
    Body, Change, ConversationId, DeviceId, Hlc, MessageId, MessageRecord, OpId, Timestamp,
};
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::{params, Connection};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{post_json, start};

const BATCH: usize = 500;

fn changes(conversation: ConversationId, wall: &mut u64) -> Vec<Change> {
    (0..BATCH)
        .map(|_| {
            *wall += 1;
            Change::upsert_message(
                OpId::new(),
                &MessageRecord {
                    id: MessageId::new(),
                    conversation_id: conversation,
                    created_at: Timestamp(*wall as i64),
                    updated_at: Timestamp(*wall as i64),
                    version: Hlc::new(*wall, 0, DeviceId(1)).expect("hlc"),
                    body: Body(vec![0xa5; 1024]),
                },
            )
        })
        .collect()
}

fn raw_connection(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE records (account BLOB NOT NULL, entity BLOB NOT NULL, seq INTEGER NOT NULL, \
         version TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (account, entity));
         CREATE INDEX records_by_seq ON records (account, seq);",
    )
    .expect("schema");
    conn
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(start());
    let conversation = ConversationId::new();
    let mut wall = 1_700_000_000_000u64;

    let mut g = c.benchmark_group("push_500_1KiB");
    g.sample_size(20);
    g.bench_function("http", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let body = json!({ "changes": changes(conversation, &mut wall) });
                let started = Instant::now();
                rt.block_on(post_json(
                    &server.http,
                    &format!("{}/v1/sync/push", server.base),
                    &body,
                    Some(&server.token),
                ));
                total += started.elapsed();
            }
            total
        })
    });
    let dir = tempfile::tempdir().expect("dir");
    let mut conn = raw_connection(&dir.path().join("raw.db"));
    let mut seq = 0i64;
    g.bench_function("raw_rusqlite", |b| {
        b.iter(|| {
            let tx = conn.transaction().expect("tx");
            {
                let mut stmt = tx
                    .prepare_cached("INSERT INTO records VALUES (?1, ?2, ?3, ?4, ?5)")
                    .expect("prepare");
                for _ in 0..BATCH {
                    seq += 1;
                    stmt.execute(params![
                        &[1u8; 16][..],
                        &MessageId::new().as_bytes()[..],
                        seq,
                        "0192f3a4b5c6-00000000-a1b2c3d4e5f60718",
                        &[0xa5u8; 1024][..],
                    ])
                    .expect("insert");
                }
            }
            tx.commit().expect("commit");
        })
    });
    g.finish();

    let mut g = c.benchmark_group("pull_500_1KiB");
    g.bench_function("http", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = server
                    .http
                    .get(format!("{}/v1/sync/pull?limit=500", server.base))
                    .bearer_auth(&server.token)
                    .send()
                    .await
                    .expect("pull");
                r.bytes().await.expect("pull body")
            })
        })
    });
    g.bench_function("raw_rusqlite", |b| {
        b.iter(|| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT entity, seq, version, body FROM records WHERE account = ?1 \
                     AND seq > 0 ORDER BY seq LIMIT 500",
                )
                .expect("prepare");
            let rows = stmt
                .query_map([&[1u8; 16][..]], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .expect("query");
            rows.count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
