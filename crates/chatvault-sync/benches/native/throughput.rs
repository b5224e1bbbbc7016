//! Sync throughput against a loopback `chatvault-server` in the same
//! process, on SQLite and (when reachable) PostgreSQL, each figure next to
//! its baseline from the same run:
//!
//! - **push**: one device pushing 100,000 queued message changes (its
//!   whole outbox, `SyncClient::push`), in changes per second — against
//!   the server store's raw batched-insert rate: the same number of
//!   1,100-byte rows inserted in transactions of 500 (the push batch)
//!   into a table keyed like the server's records, with rusqlite (WAL,
//!   `synchronous=FULL`) or tokio-postgres, prepared statements.
//! - **pull**: a new device (`SyncClient::join` on an empty encrypted
//!   SQLite vault) pulling those 100,000 messages, in messages per second
//!   — against the client store's own batched-write rate: the pushing
//!   device's `add_messages` calls of 500 messages (the pull page) that
//!   wrote them.
//!
//! Run with `cargo xtask bench` or
//! `cargo bench -p chatvault-sync --bench throughput`;
//! `CHATVAULT_BENCH_SYNC_MESSAGES` sets the count, `-- --quick` (what
//! `cargo xtask bench --quick` passes) uses 2,000. PostgreSQL is
//! skipped with `CHATVAULT_SKIP_POSTGRES=1`. Prints one Markdown row per
//! figure.

use chatvault::testing::fast_options;
use chatvault::{
    MessageId, NewConversation, NewMessage, Role, SqliteOptions, SqliteStore, SystemClock, Vault,
};
use chatvault_server::testing::{postgres_skipped, PgDatabase};
use chatvault_server::{AuthHashCost, Config, DatabaseUrl, Server};
use chatvault_sync::{SyncClient, SyncOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "bench passphrase";
/// Messages per `add_messages` call: the pull's page, so the baseline
/// writes in the same units the pull applies.
const WRITE_BATCH: usize = 500;
/// Rows per transaction of the raw server baseline: the push batch.
const INSERT_BATCH: usize = 500;
const RAW_BODY: usize = 1100;
const VERSION: &str = "0192f3a4b5c6-00000000-a1b2c3d4e5f60718";

fn messages() -> usize {
    if std::env::args().any(|a| a == "--quick") {
        return 2_000;
    }
    std::env::var("CHATVAULT_BENCH_SYNC_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

pub fn main() {
    let n = messages();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = DatabaseUrl::Sqlite(dir.path().join("server.db"));
        rows.extend(run("SQLite", sqlite, n).await);
        if postgres_skipped() {
            eprintln!("CHATVAULT_SKIP_POSTGRES=1: no PostgreSQL figures");
        } else if let Some(db) = PgDatabase::create().await {
            rows.extend(run("PostgreSQL", DatabaseUrl::Postgres(db.url.clone()), n).await);
        }
    });
    println!("| benchmark | measured | per s | baseline | per s | ratio | target |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

async fn server(database: DatabaseUrl) -> String {
    let mut config = Config::new(database);
    // The vaults derive with test parameters; login cost is not measured here.
    config.allow_weak_kdf = true;
    config.insecure_cookies = true;
    config.kdf.cost = AuthHashCost { m_kib: 64, t: 1 };
    config.account_quota_bytes = None;
    let server = Server::open(config).await.expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = server.run(listener, std::future::pending::<()>()).await;
    });
    url
}

async fn vault(path: &Path) -> Vault {
    let store = SqliteStore::open(path, SqliteOptions::default())
        .await
        .expect("store");
    Vault::open_encrypted(
        Arc::new(store),
        PASSPHRASE,
        fast_options(Arc::new(SystemClock)),
    )
    .await
    .expect("vault")
}

fn options() -> SyncOptions {
    SyncOptions {
        realtime: false,
        interval: Duration::from_secs(3600),
        request_timeout: Duration::from_secs(300),
        ..SyncOptions::default()
    }
}

async fn run(backend: &str, database: DatabaseUrl, n: usize) -> Vec<String> {
    eprintln!("sync throughput: {n} messages, {backend} server");
    settle();
    let raw_rate = match &database {
        DatabaseUrl::Sqlite(path) => raw_sqlite_rate(&path.with_extension("raw.db"), n),
        DatabaseUrl::Postgres(url) => raw_postgres_rate(url, n).await,
    };
    let url = server(database).await;
    let dir = tempfile::tempdir().expect("temp dir");

    // The writing device: its batched-write rate is the pull's baseline.
    let writer = Arc::new(vault(&dir.path().join("a.db")).await);
    let content = "x".repeat(1024);
    settle();
    let mut writing = Duration::ZERO;
    for i in 0..n.div_ceil(WRITE_BATCH) {
        let c = writer
            .create_conversation(NewConversation::titled(format!("conversation {i}")))
            .await
            .expect("conversation");
        let count = WRITE_BATCH.min(n - i * WRITE_BATCH);
        let batch = (0..count)
            .map(|_| NewMessage::new(Role::User, content.clone()))
            .collect();
        let started = Instant::now();
        writer.add_messages(c.id, batch).await.expect("write");
        writing += started.elapsed();
    }
    let write_rate = n as f64 / writing.as_secs_f64();

    let pusher = SyncClient::register(writer, &url, "bench", PASSPHRASE, options())
        .await
        .expect("register");
    settle();
    let started = Instant::now();
    let pushed = pusher.push().await.expect("push");
    let push_rate = n as f64 / started.elapsed().as_secs_f64();
    // The conversations went too.
    assert!(pushed.applied >= n as u64, "pushed {}", pushed.applied);

    let store = SqliteStore::open(dir.path().join("b.db"), SqliteOptions::default())
        .await
        .expect("store");
    let puller = SyncClient::join(
        Arc::new(store),
        fast_options(Arc::new(SystemClock)),
        &url,
        "bench",
        PASSPHRASE,
        options(),
    )
    .await
    .expect("join");
    settle();
    let started = Instant::now();
    let pulled = puller.pull().await.expect("pull");
    let pull_rate = n as f64 / started.elapsed().as_secs_f64();
    assert!(pulled.applied >= n as u64, "pulled {}", pulled.applied);

    let raw_what = if backend == "SQLite" {
        "raw rusqlite inserts, 500/transaction"
    } else {
        "raw tokio-postgres inserts, 500/transaction"
    };
    vec![
        row(
            &format!("push {n} queued changes ({backend} server)"),
            "SyncClient::push over HTTP, changes",
            push_rate,
            raw_what,
            raw_rate,
            "≥ 0.25×",
        ),
        row(
            &format!("new device pulls {n} messages ({backend} server)"),
            "SyncClient::pull into an encrypted SQLite vault, messages",
            pull_rate,
            "vault add_messages, 500/call",
            write_rate,
            "≥ 0.5×",
        ),
    ]
}

fn row(what: &str, measured: &str, m: f64, baseline: &str, b: f64, target: &str) -> String {
    format!(
        "| {what} | {measured} | {m:.0} | {baseline} | {b:.0} | **{:.2}×** | {target} |",
        m / b
    )
}

/// Flushes what earlier phases left in the page cache (`sync`) and lets
/// the disk go idle, so a phase is not timed while the kernel writes back
/// the previous one's 100 MB (which halved the first phase measured after
/// the raw baseline in one run, and so skewed the ratios between rows).
fn settle() {
    // A quick run (CI's smoke test) only proves the benchmark works.
    if std::env::args().any(|a| a == "--quick") {
        return;
    }
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(500));
}

/// Rows per second of raw batched inserts into a records-shaped table.
fn raw_sqlite_rate(path: &Path, n: usize) -> f64 {
    let mut conn = rusqlite::Connection::open(path).expect("open");
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
    let body = vec![0xa5u8; RAW_BODY];
    let started = Instant::now();
    let mut seq = 0i64;
    while (seq as usize) < n {
        let tx = conn.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO records VALUES (?1, ?2, ?3, ?4, ?5)")
                .expect("prepare");
            for _ in 0..INSERT_BATCH.min(n - seq as usize) {
                seq += 1;
                stmt.execute(rusqlite::params![
                    &[1u8; 16][..],
                    &MessageId::new().as_bytes()[..],
                    seq,
                    VERSION,
                    &body[..],
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The same on PostgreSQL, in its own schema of the run's database.
async fn raw_postgres_rate(url: &str, n: usize) -> f64 {
    let mut client = chatvault_server::testing::admin_client(url).await;
    client
        .batch_execute(
            "CREATE SCHEMA raw_baseline;
             CREATE TABLE raw_baseline.records (account BYTEA NOT NULL, entity BYTEA NOT NULL, \
             seq BIGINT NOT NULL, version TEXT NOT NULL, body BYTEA NOT NULL, \
             PRIMARY KEY (account, entity));
             CREATE INDEX records_by_seq ON raw_baseline.records (account, seq);",
        )
        .await
        .expect("schema");
    let body = vec![0xa5u8; RAW_BODY];
    let account = [1u8; 16];
    let started = Instant::now();
    let mut seq = 0i64;
    while (seq as usize) < n {
        let tx = client.transaction().await.expect("tx");
        let stmt = tx
            .prepare("INSERT INTO raw_baseline.records VALUES ($1, $2, $3, $4, $5)")
            .await
            .expect("prepare");
        for _ in 0..INSERT_BATCH.min(n - seq as usize) {
            seq += 1;
            let entity = *MessageId::new().as_bytes();
            tx.execute(
                &stmt,
                &[&&account[..], &&entity[..], &seq, &VERSION, &&body[..]],
            )
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    n as f64 / started.elapsed().as_secs_f64()
}
