//! Realtime latency: how long after a push the account's WebSocket clients
//! hear the poke, with many clients connected, next to its baseline in the
//! same process: a bare tokio-tungstenite server broadcasting one text
//! frame to as many clients (tokio's broadcast channel, no
//! authentication, no database). The ratio is the price of the push's
//! commit, the fan-out through the server's notifier and the poke's JSON.
//!
//! Each round starts a clock, then pushes one change (or, for the
//! baseline, sends one broadcast), and stops each client's clock when its
//! frame arrives; p50 and p99 are over every client of every round.
//!
//! Run with `cargo xtask bench` (all benchmarks) or
//! `cargo bench -p chatvault-server --bench realtime`;
//! `CHATVAULT_REALTIME_CLIENTS` (default 1000) and
//! `CHATVAULT_REALTIME_ROUNDS` (default 30) size it; `--quick` (as
//! `cargo xtask bench --quick` passes it) runs 50 clients for 3 rounds.
//!
//! Then across replicas: two servers on one PostgreSQL database (a fresh,
//! uniquely named one, dropped afterwards; `CHATVAULT_TEST_POSTGRES_URL`
//! as for the tests), the clients on replica B, the push made on replica A
//! — its poke reaches B through PostgreSQL's `NOTIFY` — next to the same
//! clients hearing a push made on B itself, in the same run.

mod support;

use chatvault_core::{
    Body, Change, ConversationId, DeviceId, Hlc, MessageId, MessageRecord, OpId, Timestamp,
};
use chatvault_server::DatabaseUrl;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{client, post_json, serve, sign_in, start};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::Message;

struct Size {
    clients: usize,
    rounds: usize,
}

fn size() -> Size {
    if std::env::args().any(|a| a == "--quick") {
        return Size {
            clients: 50,
            rounds: 3,
        };
    }
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Size {
        clients: number("CHATVAULT_REALTIME_CLIENTS", 1000),
        rounds: number("CHATVAULT_REALTIME_ROUNDS", 30),
    }
}

/// Connects `n` clients to `url` (each sending `hello` first, if any, and
/// waiting for one frame back when `ready` is set); every frame a client
/// receives afterwards is reported on the returned channel.
async fn connect_clients(
    url: &str,
    n: usize,
    hello: Option<String>,
    ready: bool,
) -> mpsc::UnboundedReceiver<Instant> {
    let (heard, hearing) = mpsc::unbounded_channel();
    for _ in 0..n {
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("a WebSocket client connects");
        if let Some(hello) = &hello {
            socket
                .send(Message::text(hello.clone()))
                .await
                .expect("hello");
        }
        if ready {
            // {"type":"ready"}: authenticated, subscribed.
            socket.next().await.expect("ready").expect("ready frame");
        }
        let heard = heard.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                if matches!(frame, Message::Text(_)) && heard.send(Instant::now()).is_err() {
                    break;
                }
            }
        });
    }
    hearing
}

/// Runs `rounds` rounds of `trigger`, collecting each client's latency.
async fn measure<F, Fut>(
    hearing: &mut mpsc::UnboundedReceiver<Instant>,
    clients: usize,
    rounds: usize,
    mut trigger: F,
) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut latencies = Vec::with_capacity(clients * rounds);
    for round in 0..rounds {
        let started = Instant::now();
        trigger(round).await;
        for _ in 0..clients {
            let at = tokio::time::timeout(Duration::from_secs(30), hearing.recv())
                .await
                .expect("every client hears within 30 s")
                .expect("clients alive");
            latencies.push(at.saturating_duration_since(started));
        }
        // Let stragglers' duplicate frames (none expected) drain.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while hearing.try_recv().is_ok() {}
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A bare WebSocket server: every connection gets every broadcast.
async fn bare_server() -> (String, broadcast::Sender<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let (tx, _) = broadcast::channel::<String>(16);
    let sender = tx.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Ok(text) = rx.recv().await {
                    if socket.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, sender)
}

fn one_change(conversation: ConversationId, round: usize) -> Change {
    let wall = 1_700_000_000_000u64 + round as u64;
    Change::upsert_message(
        OpId::new(),
        &MessageRecord {
            id: MessageId::new(),
            conversation_id: conversation,
            created_at: Timestamp(wall as i64),
            updated_at: Timestamp(wall as i64),
            version: Hlc::new(wall, 0, DeviceId(1)).expect("hlc"),
            body: Body(vec![0xa5; 256]),
        },
    )
}

/// Pushes one change per round to `base` with `token`.
fn pusher(
    http: reqwest::Client,
    base: &str,
    token: String,
    conversation: ConversationId,
) -> impl FnMut(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    let url = format!("{base}/v1/sync/push");
    move |round| {
        let body = json!({ "changes": [one_change(conversation, round)] });
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        Box::pin(async move {
            post_json(&http, &url, &body, Some(&token)).await;
        })
    }
}

/// The cross-replica latencies and, in the same run, the same clients'
/// latencies for pushes on their own replica: `None` when PostgreSQL tests
/// are switched off (`CHATVAULT_SKIP_POSTGRES=1`).
async fn across_replicas(size: &Size) -> Option<(Vec<Duration>, Vec<Duration>)> {
    let database = chatvault_server::testing::PgDatabase::create().await?;
    let a = serve(DatabaseUrl::Postgres(database.url.clone())).await;
    let b = serve(DatabaseUrl::Postgres(database.url.clone())).await;
    let http = client();
    let on_a = sign_in(&http, &a, true).await;
    let on_b = sign_in(&http, &b, false).await;
    let ws = format!("{}/v1/ws", b.replacen("http://", "ws://", 1));
    let hello = json!({"type": "auth", "token": on_b}).to_string();
    let mut hearing = connect_clients(&ws, size.clients, Some(hello), true).await;
    let conversation = ConversationId::new();
    let cross = measure(
        &mut hearing,
        size.clients,
        size.rounds,
        pusher(http.clone(), &a, on_a, conversation),
    )
    .await;
    let same = measure(
        &mut hearing,
        size.clients,
        size.rounds,
        pusher(http, &b, on_b, conversation),
    )
    .await;
    Some((cross, same))
}

fn main() {
    // `cargo bench` passes `--bench`; only `--quick` matters here.
    let size = size();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // chatvault: the account's clients authenticate in their first frame.
        let server = start().await;
        let ws = format!("{}/v1/ws", server.base.replacen("http://", "ws://", 1));
        let hello = json!({"type": "auth", "token": server.token}).to_string();
        let mut hearing = connect_clients(&ws, size.clients, Some(hello), true).await;
        let chatvault = measure(
            &mut hearing,
            size.clients,
            size.rounds,
            pusher(
                server.http.clone(),
                &server.base,
                server.token.clone(),
                ConversationId::new(),
            ),
        )
        .await;

        // Baseline: the same clients' count on a bare broadcast server.
        let (url, sender) = bare_server().await;
        let mut hearing = connect_clients(&url, size.clients, None, false).await;
        while sender.receiver_count() < size.clients {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let poke = json!({"type": "poke", "cursor": "0"}).to_string();
        let baseline = measure(&mut hearing, size.clients, size.rounds, |_| {
            let _ = sender.send(poke.clone());
            std::future::ready(())
        })
        .await;

        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (ours, base) = (percentile(&chatvault, p), percentile(&baseline, p));
            println!(
                "realtime {} clients x {} rounds, push to poke {name}: {:.2} ms, bare broadcast {:.2} ms, ratio {:.2}x",
                size.clients,
                size.rounds,
                ms(ours),
                ms(base),
                ms(ours) / ms(base).max(1e-6),
            );
        }
        drop(hearing);

        let Some((cross, same)) = across_replicas(&size).await else {
            println!("realtime across replicas: SKIPPED (CHATVAULT_SKIP_POSTGRES=1)");
            return;
        };
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (ours, base) = (percentile(&cross, p), percentile(&same, p));
            println!(
                "realtime across PostgreSQL replicas {} clients x {} rounds, push on A to poke on B {name}: {:.2} ms, push on B itself {:.2} ms, ratio {:.2}x",
                size.clients,
                size.rounds,
                ms(ours),
                ms(base),
                ms(ours) / ms(base).max(1e-6),
            );
        }
    });
}
