//! Push and pull requests per second with 200 devices syncing at once
//! against one loopback `chatvault-server` in the same process, on SQLite
//! and (when reachable) PostgreSQL. A figure without a target or a
//! baseline: what one server process sustains on this machine, with the
//! devices' own work (in-memory encrypted vaults) sharing its cores.
//!
//! 50 accounts of 4 devices; each device writes one message, pushes it
//! (one request), then pulls what its account's other devices pushed (one
//! request, one page), over and over for a fixed time. Reports requests
//! per second of each kind and their p50/p99 latency. For the same load
//! with a server restart and exact accounting, see `cargo xtask load`.
//!
//! Run with `cargo xtask bench` or
//! `cargo bench -p chatvault-sync --bench devices`; `-- --quick` (what
//! `cargo xtask bench --quick` passes) runs 20 devices for 2 s,
//! `CHATVAULT_BENCH_DEVICES` and `CHATVAULT_BENCH_SECONDS` size it
//! (default 200 for 20 s). Prints Markdown rows.

use chatvault::testing::fast_options;
use chatvault::{MemoryStore, NewConversation, NewMessage, Role, SystemClock, Vault};
use chatvault_server::testing::{postgres_skipped, PgDatabase};
use chatvault_server::{AuthHashCost, Config, DatabaseUrl, RateLimit, Server};
use chatvault_sync::{SyncClient, SyncOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "bench passphrase";
const PER_ACCOUNT: usize = 4;

struct Size {
    devices: usize,
    run: Duration,
}

fn size() -> Size {
    if std::env::args().any(|a| a == "--quick") {
        return Size {
            devices: 20,
            run: Duration::from_secs(2),
        };
    }
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Size {
        devices: number("CHATVAULT_BENCH_DEVICES", 200) as usize,
        run: Duration::from_secs(number("CHATVAULT_BENCH_SECONDS", 20)),
    }
}

pub fn main() {
    let size = size();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = DatabaseUrl::Sqlite(dir.path().join("server.db"));
        rows.extend(run("SQLite", sqlite, &size).await);
        if postgres_skipped() {
            eprintln!("CHATVAULT_SKIP_POSTGRES=1: no PostgreSQL figures");
        } else if let Some(db) = PgDatabase::create().await {
            rows.extend(run("PostgreSQL", DatabaseUrl::Postgres(db.url.clone()), &size).await);
        }
    });
    println!("| benchmark | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

async fn server(database: DatabaseUrl) -> String {
    let mut config = Config::new(database);
    config.allow_weak_kdf = true;
    config.insecure_cookies = true;
    // Sign-ins are not what is measured (see the server's `logins` bench).
    config.kdf.cost = AuthHashCost { m_kib: 64, t: 1 };
    // Every device comes from 127.0.0.1.
    config.rate_limits.per_address = RateLimit::UNLIMITED;
    config.rate_limits.global = RateLimit::UNLIMITED;
    config.rate_limits.per_username = RateLimit::UNLIMITED;
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

fn options() -> SyncOptions {
    SyncOptions {
        realtime: false,
        interval: Duration::from_secs(3600),
        ..SyncOptions::default()
    }
}

/// Every push and pull latency of one device.
#[derive(Default)]
struct Latencies {
    push: Vec<Duration>,
    pull: Vec<Duration>,
}

async fn run(backend: &str, database: DatabaseUrl, size: &Size) -> Vec<String> {
    eprintln!(
        "devices: {} devices for {:?}, {backend} server",
        size.devices, size.run
    );
    let url = server(database).await;
    let mut clients = Vec::with_capacity(size.devices);
    for index in 0..size.devices {
        let user = format!("bench-{}", index / PER_ACCOUNT);
        let options_ = fast_options(Arc::new(SystemClock));
        let client = if index % PER_ACCOUNT == 0 {
            let vault = Vault::open_encrypted(Arc::new(MemoryStore::new()), PASSPHRASE, options_)
                .await
                .expect("vault");
            SyncClient::register(Arc::new(vault), &url, &user, PASSPHRASE, options()).await
        } else {
            SyncClient::join(
                Arc::new(MemoryStore::new()),
                options_,
                &url,
                &user,
                PASSPHRASE,
                options(),
            )
            .await
        }
        .expect("a device signs in");
        let conversation = client
            .vault()
            .create_conversation(NewConversation::titled(format!("device {index}")))
            .await
            .expect("conversation")
            .id;
        client.push().await.expect("first push");
        clients.push((client, conversation));
    }

    let started = Instant::now();
    let until = started + size.run;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(client, conversation)| {
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                while Instant::now() < until {
                    client
                        .vault()
                        .add_message(conversation, NewMessage::new(Role::User, "x".repeat(200)))
                        .await
                        .expect("write");
                    let at = Instant::now();
                    client.push().await.expect("push");
                    latencies.push.push(at.elapsed());
                    let at = Instant::now();
                    client.pull().await.expect("pull");
                    latencies.pull.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Latencies::default();
    for task in tasks {
        let l = task.await.expect("device task");
        all.push.extend(l.push);
        all.pull.extend(l.pull);
    }
    let elapsed = started.elapsed().as_secs_f64();
    [("push", all.push), ("pull", all.pull)]
        .into_iter()
        .map(|(what, mut l)| {
            l.sort();
            let ms = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
            format!(
                "| {what}, {} devices ({backend} server) | {:.0} | {:.1} ms | {:.1} ms |",
                size.devices,
                l.len() as f64 / elapsed,
                ms(0.5),
                ms(0.99)
            )
        })
        .collect()
}
