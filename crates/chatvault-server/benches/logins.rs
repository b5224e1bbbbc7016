//! Logins per second at the default password-hashing cost (Argon2id,
//! m = 19 MiB, t = 2) within the server's login memory bound — the
//! hashing pool's fixed workers, one Argon2 buffer each, and its bounded
//! queue (`KdfPoolConfig::default()`: one worker per core, 32 queued per
//! worker) — next to its baseline in the same process: the same Argon2id
//! hash computed directly on as many threads as the pool has workers.
//! The ratio is what HTTP, JSON, session creation and the pool's queue
//! add to the hash.
//!
//! Many clients, each with an account of its own, log in back to back over
//! HTTP for a fixed time (rate limits lifted: they all come from
//! 127.0.0.1; one account per client because concurrent logins to one
//! account count as pending failures for its backoff); answers 503
//! `server_busy` (queue full) are counted and retried after 50 ms.
//!
//! Run with `cargo xtask bench` or
//! `cargo bench -p chatvault-server --bench logins`; `-- --quick` (what
//! `cargo xtask bench --quick` passes) measures for one second instead of
//! ten. Prints Markdown rows.

mod support;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chatvault_server::{Config, DatabaseUrl, KdfPoolConfig, RateLimit, Server};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::post_json;

/// Clients logging in at once: enough to keep every worker busy and the
/// queue non-empty, below the queue bound.
const CLIENTS: usize = 16;

fn seconds() -> f64 {
    if std::env::args().any(|a| a == "--quick") {
        1.0
    } else {
        10.0
    }
}

fn main() {
    let secs = seconds();
    let pool = KdfPoolConfig::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The baseline before and after, so a change in the machine's load
    // (it is shared) weighs on both sides alike.
    let before = direct_hashes(pool.workers, secs / 2.0);
    let (logins, busy) = rt.block_on(logins(secs));
    let hashes = (before + direct_hashes(pool.workers, secs / 2.0)) / 2.0;
    let memory_mib = pool.workers as f64 * f64::from(pool.cost.m_kib) / 1024.0;
    println!("| benchmark | measured | per s | baseline | per s | ratio |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| logins, default cost, {} workers ({memory_mib:.0} MiB bound), {CLIENTS} clients | `POST /v1/auth/login` ({busy} answered 503) | {logins:.1} | Argon2id hashes on {} threads | {hashes:.1} | **{:.2}×** |",
        pool.workers,
        pool.workers,
        logins / hashes
    );
}

/// Successful logins per second, and how many were refused as busy.
async fn logins(secs: f64) -> (f64, usize) {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::new(DatabaseUrl::Sqlite(dir.path().join("server.db")));
    config.insecure_cookies = true;
    config.allow_weak_kdf = true;
    config.rate_limits.per_address = RateLimit::UNLIMITED;
    config.rate_limits.global = RateLimit::UNLIMITED;
    config.rate_limits.per_username = RateLimit::UNLIMITED;
    let server = Server::open(config).await.expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = server.run(listener, std::future::pending::<()>()).await;
    });
    let http = support::client();
    let key = BASE64.encode([9u8; 32]);
    for client in 0..CLIENTS {
        let register = json!({
            "username": format!("bench-{client}"),
            "kdf": {"mCostKib": 64, "tCost": 1, "pCost": 1},
            "salt": BASE64.encode([7u8; 16]),
            "authKey": key,
            "keyEnvelope": {"opaque": true},
        });
        post_json(&http, &format!("{base}/v1/auth/register"), &register, None).await;
    }

    let done = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let login =
                json!({"username": format!("bench-{client}"), "authKey": key, "client": "native"});
            let body = serde_json::to_vec(&login).expect("json");
            let (http, url) = (http.clone(), format!("{base}/v1/auth/login"));
            let (done, busy) = (done.clone(), busy.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let response = http
                        .post(&url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("login request");
                    match response.status().as_u16() {
                        200 => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        503 => {
                            busy.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!(
                            "login answered {other}: {}",
                            response.text().await.unwrap_or_default()
                        ),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        busy.load(Ordering::Relaxed),
    )
}

/// Argon2id hashes per second at the server's default cost, on `threads`
/// threads, each reusing its buffer as the pool's workers do.
fn direct_hashes(threads: usize, secs: f64) -> f64 {
    let cost = chatvault_server::AuthHashCost::default();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let done = done.clone();
            std::thread::spawn(move || {
                let params = Params::new(cost.m_kib, cost.t, 1, Some(32)).expect("params");
                let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                let mut memory = vec![argon2::Block::default(); cost.m_kib as usize];
                let mut out = [0u8; 32];
                while Instant::now() < until {
                    argon
                        .hash_password_into_with_memory(
                            &[9u8; 32],
                            &[7u8; 16],
                            &mut out,
                            &mut memory,
                        )
                        .expect("hash");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("hashing thread");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
