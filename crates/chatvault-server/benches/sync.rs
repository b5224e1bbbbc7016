//! Sync server throughput over HTTP, each figure next to its baseline in
//! the same process: raw rusqlite doing the same row work (500 inserts of
//! 1 KiB bodies in one transaction, or reading them back) with the
//! server's pragmas (WAL, synchronous=FULL). The ratio is the price of
//! HTTP, JSON, authentication, idempotency and last-writer-wins.
//!
//! Run with `cargo xtask bench` (which prints the ratios).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chatvault_core::{
    Body, Change, ConversationId, DeviceId, Hlc, MessageId, MessageRecord, OpId, Timestamp,
};
use chatvault_server::{Config, DatabaseUrl, Server};
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BATCH: usize = 500;

struct Running {
    base: String,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::new(DatabaseUrl::Sqlite(dir.path().join("server.db")));
    config.allow_weak_kdf = true;
    config.insecure_cookies = true;
    let server = Server::open(config).await.expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = server.run(listener, std::future::pending::<()>()).await;
    });
    // reqwest's TLS is built without a bundled provider in this workspace.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let http = reqwest::Client::new();
    let key = BASE64.encode([9u8; 32]);
    let register = json!({
        "username": "bench",
        "kdf": {"mCostKib": 64, "tCost": 1, "pCost": 1},
        "salt": BASE64.encode([7u8; 16]),
        "authKey": key,
        "keyEnvelope": {"opaque": true},
    });
    post_json(&http, &format!("{base}/v1/auth/register"), &register, None).await;
    let login = post_json(
        &http,
        &format!("{base}/v1/auth/login"),
        &json!({"username": "bench", "authKey": key, "client": "native"}),
        None,
    )
    .await;
    let login: Value = serde_json::from_slice(&login).expect("login body");
    let token = login["token"].as_str().expect("token").to_owned();
    Running {
        base,
        token,
        http,
        _dir: dir,
    }
}

/// POSTs JSON (the server insists on the content type) and returns the body.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    token: Option<&str>,
) -> bytes::Bytes {
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("json"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await.expect("body")
}

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
