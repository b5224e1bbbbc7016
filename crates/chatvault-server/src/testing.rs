//! Test helpers for the server's users — its own tests, the sync client's
//! and the CLI's: a fresh PostgreSQL database per test (or test process),
//! dropped afterwards, failing loudly when PostgreSQL is down unless
//! `CHATVAULT_SKIP_POSTGRES=1`. Only with the `testing` feature: never part
//! of a production build.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether PostgreSQL tests were explicitly switched off.
pub fn postgres_skipped() -> bool {
    std::env::var("CHATVAULT_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

/// The PostgreSQL server tests create their databases on
/// (`CHATVAULT_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).
pub fn postgres_admin_url() -> String {
    std::env::var("CHATVAULT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("postgres URL has a scheme");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

/// A plain (NoTls) client on the database `url` names, its connection
/// driven on the current runtime (panics, saying what to do, when
/// PostgreSQL cannot be reached).
pub async fn admin_client(url: &str) -> tokio_postgres::Client {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => panic!(
            "PostgreSQL at {url} is unreachable ({e}). Start it, point \
             CHATVAULT_TEST_POSTGRES_URL at one, or set CHATVAULT_SKIP_POSTGRES=1 to skip"
        ),
        Err(_) => panic!(
            "PostgreSQL at {url} did not answer within 10 s. Start it, or set \
             CHATVAULT_SKIP_POSTGRES=1 to skip"
        ),
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Drops `chatvault_test_<pid>_*` databases left by test processes that no
/// longer exist (killed runs cannot clean up after themselves).
async fn sweep_stale_databases(admin: &tokio_postgres::Client) {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'chatvault_test_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        }
    }
}

/// A uniquely named database, dropped (with its open connections) when
/// this goes out of scope — also when the test panics.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// Connection string of the new database.
    pub url: String,
}

impl PgDatabase {
    /// Creates one, or `None` when PostgreSQL tests are skipped.
    pub async fn create() -> Option<PgDatabase> {
        if postgres_skipped() {
            tracing::warn!("CHATVAULT_SKIP_POSTGRES=1: skipping a PostgreSQL test");
            return None;
        }
        let admin_url = postgres_admin_url();
        let admin = admin_client(&admin_url).await;
        sweep_stale_databases(&admin).await;
        let mut random = [0u8; 6];
        getrandom::getrandom(&mut random).expect("OS randomness");
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("chatvault_test_{}_{suffix}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("CREATE DATABASE");
        let url = with_database(&admin_url, &name);
        Some(PgDatabase {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // A fresh thread with its own runtime: Drop may run inside (or
        // while unwinding out of) the test's runtime, which cannot block.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            tracing::warn!(database = %self.name, "could not drop a test database");
        }
    }
}
