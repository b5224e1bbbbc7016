//! Issue 10's "done when" scenarios, end to end through real CLI processes
//! and a real server that restarts in the middle, on SQLite and on
//! PostgreSQL:
//!
//! - device A writes 100 messages offline and renames a conversation,
//!   device B renames it later, the server restarts, A reconnects: both
//!   devices end identical, B's later title wins, all 100 messages are
//!   there and nothing is parked;
//! - a vault with 100,001 pending messages syncs them all with one
//!   `sync now`, and a second device receives every one.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::{json, ok, run, Backend, RestartableServer, ServerDb, BIN, PASS};

// ---- the CLI -------------------------------------------------------------------

/// What a user of `store` can see of conversation `conv`, and what sync
/// still holds back.
fn seen(store: &Path, conv: &str) -> (Value, Value, Value) {
    let shown = json(store, &["conv", "show", conv, "--limit", "1000", "--json"]);
    let all = json(store, &["conv", "ls", "--json"]);
    let status = json(store, &["sync", "status", "--json"]);
    (shown, all, status)
}

// ---- offline writes, a concurrent rename, a restart -------------------------------

fn offline_writes_and_a_later_rename_converge_across_a_server_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = ServerDb::new(backend, dir.path()) else {
        return;
    };
    let mut server = RestartableServer::start(db.url.clone());
    let url = server.url();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    ok(&a, &["init", "--encrypt"]);
    let conv = ok(&a, &["conv", "new", "--title", "Trip"]);
    ok(&a, &["sync", "register", "--server", &url, "--user", "ada"]);
    ok(&b, &["sync", "join", "--server", &url, "--user", "ada"]);

    // A is offline (it does not sync): a rename and 100 messages.
    ok(
        &a,
        &["conv", "rename", &conv, "--title", "Trip (A, earlier)"],
    );
    for i in 0..100 {
        ok(
            &a,
            &[
                "msg",
                "add",
                &conv,
                "--role",
                "user",
                "--content",
                &format!("note {i}"),
            ],
        );
    }
    // The server restarts in between; B renames later and syncs.
    server.restart();
    ok(&b, &["conv", "rename", &conv, "--title", "Trip (B, later)"]);
    ok(&b, &["sync", "now"]);
    // A reconnects: its 100 messages go up, B's newer title comes down.
    let report = json(&a, &["sync", "now", "--json"]);
    assert_eq!(report["pushed"], 100, "the 100 messages: {report}");
    assert_eq!(
        report["pushSuperseded"], 1,
        "A's earlier rename lost: {report}"
    );
    assert_eq!(report["deadLetters"], 0, "{report}");
    ok(&b, &["sync", "now"]);

    let (shown_a, all_a, status_a) = seen(&a, &conv);
    let (shown_b, all_b, status_b) = seen(&b, &conv);
    assert_eq!(
        shown_a["conversation"]["title"], "Trip (B, later)",
        "the later rename wins"
    );
    assert_eq!(shown_a["messages"].as_array().map(Vec::len), Some(100));
    assert_eq!(shown_a, shown_b, "both devices show the same conversation");
    assert_eq!(all_a, all_b);
    for status in [&status_a, &status_b] {
        assert_eq!(status["pending"], 0, "{status}");
        assert_eq!(status["parked"], 0, "{status}");
        assert_eq!(status["lastError"], Value::Null, "{status}");
    }
}

#[test]
fn offline_writes_and_a_later_rename_converge_across_a_server_restart_sqlite() {
    offline_writes_and_a_later_rename_converge_across_a_server_restart(Backend::Sqlite);
}

#[test]
fn offline_writes_and_a_later_rename_converge_across_a_server_restart_postgres() {
    offline_writes_and_a_later_rename_converge_across_a_server_restart(Backend::Postgres);
}

// ---- 100,001 pending changes, one `sync now` -------------------------------------

#[test]
fn one_sync_now_sends_100_001_pending_messages_and_another_device_gets_them_all() {
    const MESSAGES: u64 = 100_001;
    let dir = tempfile::tempdir().unwrap();
    let db = ServerDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let server = RestartableServer::start(db.url.clone());
    let url = server.url();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let export: PathBuf = dir.path().join("big.json");
    let conversations = common::big_export(&export, MESSAGES, 1_000, |m| format!("message {m}"));
    ok(&a, &["init", "--encrypt"]);
    ok(&a, &["import", export.to_str().unwrap()]);
    let pending = json(&a, &["sync", "status", "--json"])["pending"].clone();
    assert_eq!(pending, MESSAGES + conversations);

    let report = json(
        &a,
        &[
            "sync", "register", "--server", &url, "--user", "ada", "--json",
        ],
    );
    assert_eq!(report["pushed"], MESSAGES + conversations, "{report}");
    let status = json(&a, &["sync", "status", "--json"]);
    assert_eq!(status["pending"], 0, "{status}");

    let joined = json(
        &b,
        &["sync", "join", "--server", &url, "--user", "ada", "--json"],
    );
    assert_eq!(joined["pulled"], MESSAGES + conversations, "{joined}");
    let stats = json(&b, &["stats", "--json"]);
    assert_eq!(stats["messages"], MESSAGES, "{stats}");
    assert_eq!(stats["conversations"], conversations, "{stats}");
}

// ---- sync watch --------------------------------------------------------------------

/// Polls `check` every 200 ms for up to `limit`.
fn eventually(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    check()
}

/// Whether `store`'s conversation list has one titled `title`.
fn has_conversation(store: &Path, title: &str) -> bool {
    json(store, &["conv", "ls", "--json"])
        .as_array()
        .is_some_and(|all| all.iter().any(|c| c["title"] == title))
}

/// `sync watch` pushes what another process writes, pulls what another
/// device pushes (on the poke), reconnects after the server restarts,
/// refuses a second watcher on the same vault, and exits 0 on SIGTERM.
#[test]
fn sync_watch_keeps_a_vault_in_sync_until_sigterm() {
    use std::io::BufRead as _;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let db = ServerDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let mut server = RestartableServer::start(db.url.clone());
    let url = server.url();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    ok(&a, &["init", "--encrypt"]);
    ok(&a, &["sync", "register", "--server", &url, "--user", "ada"]);
    ok(&b, &["sync", "join", "--server", &url, "--user", "ada"]);

    let mut watcher = Command::new(BIN)
        .args(["sync", "watch", "--json"])
        .env("CHATVAULT_STORE", &a)
        .env("CHATVAULT_PASSPHRASE", PASS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the watcher");
    let (lines_tx, lines) = mpsc::channel::<Value>();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let parsed = serde_json::from_str(&line).expect("one JSON object per line");
            if lines_tx.send(parsed).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &dyn Fn(&Value) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Ok(line) = lines.recv_timeout(deadline - std::time::Instant::now()) {
            if what(&line) {
                return line;
            }
        }
        panic!("the watcher never printed the expected line");
    };
    wait_for(&|l| l["state"] == "idle" && l["realtime"] == true);

    // One watcher per vault.
    let second = run(&a, &["sync", "watch"], PASS);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    // Another process writes A's vault: the watcher pushes it.
    ok(
        &a,
        &["conv", "new", "--title", "written by another process"],
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            ok(&b, &["sync", "now"]);
            has_conversation(&b, "written by another process")
        }),
        "the watcher pushed a change another process wrote"
    );
    // B pushes: the poke makes A's watcher pull.
    ok(&b, &["conv", "new", "--title", "from B"]);
    ok(&b, &["sync", "now"]);
    assert!(
        eventually(Duration::from_secs(20), || has_conversation(&a, "from B")),
        "the watcher pulled on the poke"
    );
    // The server restarts: the watcher reconnects and keeps pulling.
    server.restart();
    ok(&b, &["conv", "new", "--title", "after the restart"]);
    ok(&b, &["sync", "now"]);
    assert!(
        eventually(Duration::from_secs(30), || has_conversation(
            &a,
            "after the restart"
        )),
        "the watcher reconnected after the restart"
    );

    // SIGTERM: a clean stop, exit status 0, a last line saying so.
    let killed = Command::new("kill")
        .args(["-TERM", &watcher.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let last = wait_for(&|l| l["note"].as_str().is_some_and(|n| n.starts_with("stopped")));
    assert_eq!(last["note"], "stopped (SIGTERM)");
    let status = watcher.wait().expect("the watcher exits");
    assert!(status.success(), "{status:?}");
    // The lock went with it: another watcher can start.
    let mut again = Command::new(BIN)
        .args(["sync", "watch"])
        .env("CHATVAULT_STORE", &a)
        .env("CHATVAULT_PASSPHRASE", PASS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(again.try_wait().unwrap().is_none(), "a new watcher runs");
    again.kill().unwrap();
    let _ = again.wait();
}
