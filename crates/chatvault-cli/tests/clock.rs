//! The clock across real processes: many short `chatvault` processes in a
//! row keep stamping at wall-clock time (the persisted mark is the highest
//! stamp issued, not a lease ahead of it), and writer processes running in
//! parallel on one vault never commit the same version stamp.
//!
//! `CHATVAULT_CLOCK_PROCESSES` sets how many sequential processes the
//! first test runs (default 200, which CI runs; the 1,000 of the rule was
//! measured once on a release build, see docs/protocol.md "Clock").

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_chatvault");

fn cmd(store: &PathBuf, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CHATVAULT_STORE", store)
        .env_remove("CHATVAULT_LOG")
        .stdin(Stdio::null());
    c
}

fn ok(store: &PathBuf, args: &[&str]) -> String {
    let out = cmd(store, args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The version stamps of a conversation's latest `limit` messages, as
/// `(wall ms, counter, device)` text parts.
fn versions(store: &PathBuf, conversation: &str, limit: usize) -> Vec<String> {
    let listed: Value = serde_json::from_str(&ok(
        store,
        &[
            "msg",
            "ls",
            conversation,
            "--limit",
            &limit.to_string(),
            "--json",
        ],
    ))
    .unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_str().unwrap().to_owned())
        .collect()
}

fn wall_ms(version: &str) -> u64 {
    u64::from_str_radix(version.split('-').next().unwrap(), 16).unwrap()
}

#[test]
fn sequential_processes_stay_at_wall_clock_time() {
    let n: usize = std::env::var("CHATVAULT_CLOCK_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    ok(&store, &["init"]);
    let c = ok(&store, &["conv", "new", "--title", "clock"]);
    let started = std::time::Instant::now();
    for i in 0..n {
        ok(
            &store,
            &[
                "msg",
                "add",
                &c,
                "--role",
                "user",
                "--content",
                &i.to_string(),
            ],
        );
    }
    let elapsed = started.elapsed();
    let after = now_ms();
    let stamps = versions(&store, &c, n);
    assert_eq!(stamps.len(), n);
    let newest = stamps.iter().map(|v| wall_ms(v)).max().unwrap();
    let ahead = newest.saturating_sub(after);
    eprintln!(
        "{n} sequential `msg add` processes in {elapsed:?}; newest stamp {ahead} ms ahead of the wall clock"
    );
    assert!(
        newest <= after + 1000,
        "after {n} processes the newest stamp is {} ms ahead of the wall clock",
        newest - after
    );
    let mut sorted = stamps.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "stamps are distinct");
}

#[test]
fn parallel_writer_processes_never_share_a_stamp() {
    const WRITERS: usize = 4;
    const EACH: usize = 15;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    ok(&store, &["init"]);
    let c = ok(&store, &["conv", "new", "--title", "parallel"]);
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let (store, c) = (&store, &c);
            scope.spawn(move || {
                for i in 0..EACH {
                    let content = format!("{w}.{i}");
                    ok(
                        store,
                        &["msg", "add", c, "--role", "user", "--content", &content],
                    );
                }
            });
        }
    });
    let stamps = versions(&store, &c, WRITERS * EACH);
    assert_eq!(stamps.len(), WRITERS * EACH);
    let mut distinct = stamps.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        stamps.len(),
        "a version stamp was committed twice: {stamps:?}"
    );
}
