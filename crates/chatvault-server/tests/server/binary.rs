//! The compiled `chatvault-server` binary: its one stdout line, serving,
//! graceful SIGTERM shutdown, and two processes on one PostgreSQL database
//! fanning a poke from a push on one to a WebSocket on the other.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatvault_core::ConversationId;
use futures::StreamExt as _;
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{auth_key_for, conversation, seq_of, Api, PgDatabase};
use crate::websocket::{next_poke, open_socket};

const READY: &str = "chatvault server listening on http://";

/// A running `chatvault-server`, killed when dropped.
struct Process {
    child: Child,
    base: String,
    stdout: mpsc::Receiver<std::io::Result<String>>,
}

impl Process {
    fn spawn(database: &str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatvault-server"))
            .args(["--listen", "127.0.0.1:0", "--database", database])
            .args(["--insecure-cookies", "--allow-weak-kdf"])
            .env_remove("CHATVAULT_LISTEN")
            .env_remove("CHATVAULT_DATABASE")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("chatvault-server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("ready line within 60 s")
            .expect("stdout readable");
        let addr = line
            .strip_prefix(READY)
            .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"));
        assert!(!addr.ends_with(":0"), "the real port is reported: {line}");
        Process {
            child,
            base: format!("http://{addr}"),
            stdout: rx,
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(exit) = self.child.try_wait().expect("try_wait") {
                return exit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wall_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn sign_in(base: &str, name: &str) -> Api {
    let mut api = Api::new(base);
    let key = auth_key_for(name);
    assert_eq!(api.register(name, &key).await.0, StatusCode::CREATED);
    let (status, _, body) = api.login(name, &key, None).await;
    assert_eq!(status, StatusCode::OK);
    api.token = body["token"].as_str().map(str::to_owned);
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_binary_prints_one_ready_line_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("server.db").display());
    let mut server = Process::spawn(&db);
    let api = sign_in(&server.base, "alice").await;
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    let mut socket = open_socket(&server.base, &api).await;

    let exit = tokio::task::block_in_place(|| server.terminate());
    assert!(exit.success(), "clean exit: {exit:?}");
    // Open sockets are told the server is going away.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("socket closes");
    assert_eq!(closed, Some(1001));
    // Nothing but the ready line ever reached stdout.
    let rest: Vec<_> = server.stdout.try_iter().collect();
    assert!(
        rest.iter().all(|l| matches!(l, Ok(s) if s.is_empty())) && rest.is_empty(),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_fan_pokes_out_through_the_database() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let a = Process::spawn(&db.url);
    let b = Process::spawn(&db.url);
    assert_ne!(a.base, b.base);

    // One account, signed in on A; the session works on B too (shared DB).
    let on_a = sign_in(&a.base, "alice").await;
    let mut on_b = Api::new(&b.base);
    on_b.token = on_a.token.clone();
    let mut socket = open_socket(&b.base, &on_b).await;

    let pushed = on_a
        .push(&[conversation(
            ConversationId::new(),
            wall_now_ms(),
            b"from A",
        )])
        .await;
    let poke = next_poke(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(poke["type"], "poke");
    assert_eq!(poke["cursor"], pushed["cursor"]);
    let (changes, _) = on_b.pull_all(None).await;
    assert_eq!(changes.len(), 1, "B serves what A committed");

    // And the other way round, with sequence numbers continuing.
    let mut socket_a = open_socket(&a.base, &on_a).await;
    let second = on_b
        .push(&[conversation(
            ConversationId::new(),
            wall_now_ms(),
            b"from B",
        )])
        .await;
    assert_eq!(seq_of(&second["cursor"]), 2);
    let poke = next_poke(&mut socket_a, Duration::from_secs(10)).await;
    assert_eq!(poke["cursor"], second["cursor"]);
    drop((a, b));
}

/// The server killed (SIGKILL) in the middle of pushes, again and again,
/// and restarted on the same database: the client retries each batch
/// (same op ids) until it is acknowledged, and afterwards the server holds
/// every change exactly once — nothing lost, nothing duplicated — in one
/// gap-free sequence.
async fn killed_mid_push_loses_and_duplicates_nothing(database: &str) {
    use crate::common::message;
    use chatvault_core::MessageId;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    const KILLS: usize = 10;
    const BATCHES: usize = 60;
    const PER_BATCH: usize = 25;
    let seed = wall_now_ms();
    let mut rng = seed;
    let mut random = move |below: u64| {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % below.max(1)
    };

    let mut server = Process::spawn(database);
    let api = sign_in(&server.base, "kim").await;
    let token = api.token.clone().expect("a session token");
    let base = Arc::new(Mutex::new(server.base.clone()));
    let conv = ConversationId::new();
    let start = wall_now_ms();
    let batches: Vec<Vec<chatvault_core::Change>> = (0..BATCHES)
        .map(|b| {
            (0..PER_BATCH)
                .map(|i| {
                    let n = (b * PER_BATCH + i) as u64;
                    message(
                        MessageId::new(),
                        conv,
                        start + n,
                        format!("m{n}").as_bytes(),
                    )
                })
                .collect()
        })
        .collect();
    let expected: HashSet<String> = batches
        .iter()
        .flatten()
        .map(|c| serde_json::to_value(c).expect("json")["entityId"].to_string())
        .collect();

    // The pusher: each batch until the server acknowledges it, from
    // whichever process is up.
    let pusher = {
        let (base, http) = (Arc::clone(&base), api.http.clone());
        tokio::spawn(async move {
            let mut retries = 0usize;
            for batch in batches {
                let body = serde_json::to_vec(&serde_json::json!({ "changes": batch }))
                    .expect("a JSON body");
                loop {
                    let url = format!("{}/v1/sync/push", base.lock().unwrap());
                    let sent = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::OK => break,
                        Ok(r) if r.status().is_server_error() => {}
                        Ok(r) => panic!("push refused: {} {:?}", r.status(), r.text().await),
                        Err(_) => {}
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            retries
        })
    };
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(5 + random(60))).await;
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        server = tokio::task::block_in_place(|| Process::spawn(database));
        *base.lock().unwrap() = server.base.clone();
    }
    let retries = tokio::time::timeout(Duration::from_secs(120), pusher)
        .await
        .expect("every batch acknowledged within 120 s")
        .expect("the pusher");

    let mut reader = Api::new(&server.base);
    reader.token = api.token.clone();
    let (changes, cursor) = reader.pull_all(None).await;
    // Each change took exactly one sequence number: a retried batch was
    // recognized by its op ids, not applied again.
    assert_eq!(
        seq_of(&serde_json::Value::String(cursor)),
        (BATCHES * PER_BATCH) as u64,
        "seed {seed}: sequence numbers"
    );
    let ids: Vec<String> = changes.iter().map(|c| c["entityId"].to_string()).collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(expected.len(), BATCHES * PER_BATCH, "distinct ids written");
    assert_eq!(
        unique.len(),
        ids.len(),
        "seed {seed}: a change served twice"
    );
    assert_eq!(unique, expected, "seed {seed}: changes lost or foreign");
    eprintln!(
        "server killed mid-push {KILLS} times (seed {seed}): {} changes in {BATCHES} batches, \
         {retries} retried pushes, every change stored exactly once",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_server_killed_mid_push_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("server.db").display());
    killed_mid_push_loses_and_duplicates_nothing(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_server_killed_mid_push_loses_and_duplicates_nothing() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    killed_mid_push_loses_and_duplicates_nothing(&db.url).await;
}
