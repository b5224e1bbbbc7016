//! The encrypted SQLite vault at scale: reads on big vaults, export,
//! import and retention of whole histories, and their peak memory. Every
//! figure is next to its baseline from the same run:
//!
//! - **latest 50 messages of a conversation** and **first page of 50
//!   conversations by activity**, on vaults of 10k, 100k and 1M messages
//!   (100 messages per conversation: 100, 1,000 and 10,000
//!   conversations) — against the indexed `SELECT` of the store's own
//!   query on a raw rusqlite database with the same tables, indexes,
//!   pragmas (WAL, `synchronous=FULL`), row count and body size
//!   (1,100 bytes, about what the vault stores per 1 KiB message).
//! - **export** and **import** of 100k and 1M messages: messages per
//!   second against the batched-write rate of the same vault (the
//!   `add_messages` calls, 100 messages each, that built it), and the
//!   peak RSS (`VmHWM`) of a fresh process doing only that, against a
//!   fresh process that only opens the vault and reads one page.
//! - **retention deleting half** of the largest vault (the older half of
//!   its conversations): `run_retention` — which also compacts the file
//!   when the deletions leave a quarter of it free — against a raw
//!   `DELETE` by the conversation index of the same rows, plus a raw
//!   `VACUUM` when the vault compacted.
//!
//! Each case runs in a fresh process (this binary re-executes itself with
//! `--case`), so peak RSS belongs to that case alone and no case warms
//! the page cache of another's process. Vaults are built once per size and
//! reused by the reads, the export, and (largest size, last) retention.
//!
//! Run with `cargo xtask bench` or
//! `cargo bench -p chatvault --features testing --bench scale`;
//! `-- --quick` (what `cargo xtask bench --quick` passes) scales the sizes
//! down a hundredfold (1M → 10k), `CHATVAULT_BENCH_SIZES=10000,100000`
//! picks sizes. Prints one Markdown row per figure.

use chatvault::testing::fast_options;
use chatvault::{
    ConversationId, ExportOptions, ImportOptions, ListConversations, ListMessages, ManualClock,
    NewConversation, NewMessage, RetentionMode, RetentionPolicy, Role, SqliteOptions, SqliteStore,
    SystemClock, Timestamp, Vault,
};
use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "bench passphrase";
const PER_CONVERSATION: usize = 100;
const PAGE: usize = 50;
/// The raw baseline's body: 1 KiB of content plus about what the vault's
/// header and AEAD add.
const RAW_BODY: usize = 1100;
/// Conversations each read figure samples (spread over the vault).
const SAMPLED: usize = 200;

/// Sizes of the full run: reads at all three, lifecycle from 100k.
const FULL_SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// Lifecycle (export, import, retention) runs at sizes from this one.
const LIFECYCLE_FROM: usize = 100_000;
/// `--quick` divides every size by this (1M → 10k).
const QUICK_DIVISOR: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--case") {
        let case = &args[at + 1];
        let n: usize = args[at + 2].parse().expect("size");
        let dir = PathBuf::from(&args[at + 3]);
        let quick = args.iter().any(|a| a == "--quick");
        let out = runtime().block_on(run_case(case, n, &dir, quick));
        // The one line the parent parses.
        println!("{out}");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    orchestrate(quick);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

// ------------------------------------------------------------ the parent

fn sizes(quick: bool) -> Vec<usize> {
    let divisor = if quick { QUICK_DIVISOR } else { 1 };
    match std::env::var("CHATVAULT_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .expect("CHATVAULT_BENCH_SIZES: numbers")
            })
            .map(|n| n / divisor)
            .collect(),
        Err(_) => FULL_SIZES.iter().map(|n| n / divisor).collect(),
    }
}

/// Runs `case` for `n` messages in a fresh process and returns its JSON.
fn child(case: &str, n: usize, dir: &Path, quick: bool) -> Value {
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = Command::new(exe);
    cmd.args(["--case", case, &n.to_string()]).arg(dir);
    if quick {
        cmd.arg("--quick");
    }
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("re-executing the benchmark");
    assert!(
        output.status.success(),
        "case {case} at {n} failed ({})",
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().expect("a result line");
    serde_json::from_str(line).expect("the case's JSON")
}

fn orchestrate(quick: bool) {
    let sizes = sizes(quick);
    let divisor = if quick { QUICK_DIVISOR } else { 1 };
    let lifecycle_from = LIFECYCLE_FROM / divisor;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut rows = Vec::new();
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        eprintln!(
            "scale: {n} messages ({} conversations × {PER_CONVERSATION})",
            n / PER_CONVERSATION
        );
        let built = child("build", n, dir.path(), quick);
        let write_rate = built["messagesPerSec"].as_f64().unwrap_or(f64::NAN);
        rows.push(row(
            &format!("batched write, {n} msgs"),
            "vault add_messages (100/call), msgs/s",
            write_rate,
            "raw rusqlite, one transaction, msgs/s",
            built["rawMessagesPerSec"].as_f64().unwrap_or(f64::NAN),
            "",
        ));
        let reads = child("reads", n, dir.path(), quick);
        let us = |k: &str| reads[k].as_f64().unwrap_or(f64::NAN);
        rows.push(row(
            &format!("latest 50 of a conversation, {n} msgs"),
            "encrypted vault, µs",
            us("latestVaultUs"),
            "raw indexed SELECT, µs",
            us("latestRawUs"),
            "≤ 2×",
        ));
        rows.push(row(
            &format!("first 50 conversations by activity, {n} msgs"),
            "encrypted vault, µs",
            us("conversationsVaultUs"),
            "raw indexed SELECT, µs",
            us("conversationsRawUs"),
            "≤ 2×",
        ));
        if n >= lifecycle_from {
            let idle = child("idle", n, dir.path(), quick);
            let idle_mb = idle["peakRssMb"].as_f64().unwrap_or(f64::NAN);
            for case in ["export", "import"] {
                let done = child(case, n, dir.path(), quick);
                rows.push(row(
                    &format!("{case} {n} msgs"),
                    &format!("{case}, msgs/s"),
                    done["messagesPerSec"].as_f64().unwrap_or(f64::NAN),
                    "batched write, msgs/s",
                    write_rate,
                    "≥ 0.5× (rate)",
                ));
                rows.push(row(
                    &format!("{case} {n} msgs, peak RSS"),
                    &format!("{case} process, MB"),
                    done["peakRssMb"].as_f64().unwrap_or(f64::NAN),
                    "process opening the vault and reading a page, MB",
                    idle_mb,
                    "flat in size",
                ));
            }
        }
        if n == largest {
            let r = child("retention", n, dir.path(), quick);
            let ms = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            let compacted = r["compacted"].as_bool().unwrap_or(false);
            rows.push(row(
                &format!("retention: delete half of {n} msgs"),
                if compacted {
                    "run_retention (incl. compaction), ms"
                } else {
                    "run_retention, ms"
                },
                ms("retentionMs"),
                if compacted {
                    "raw DELETE + VACUUM, ms"
                } else {
                    "raw DELETE, ms"
                },
                ms("rawDeleteMs") + if compacted { ms("rawVacuumMs") } else { 0.0 },
                "≤ 2×",
            ));
            rows.push(row(
                &format!("retention: delete half of {n} msgs, deletion only"),
                "run_retention minus its compaction's raw VACUUM, ms",
                ms("retentionMs") - if compacted { ms("rawVacuumMs") } else { 0.0 },
                "raw DELETE, ms",
                ms("rawDeleteMs"),
                "≤ 2×",
            ));
        }
    }
    if quick {
        println!("quick run (dev profile, sizes / {QUICK_DIVISOR}): not for BENCHMARKS.md");
    }
    println!("| benchmark | measured | value | baseline | value | ratio | target |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn row(what: &str, measured: &str, m: f64, baseline: &str, b: f64, target: &str) -> String {
    format!(
        "| {what} | {measured} | {} | {baseline} | {} | **{:.2}×** | {target} |",
        figure(m),
        figure(b),
        m / b
    )
}

fn figure(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

// ------------------------------------------------------------- the cases

async fn run_case(case: &str, n: usize, dir: &Path, quick: bool) -> Value {
    match case {
        "build" => build(n, dir).await,
        // Timing passes per figure: fewer when only proving it runs.
        "reads" => reads(dir, if quick { 2 } else { 15 }).await,
        "idle" => idle(dir).await,
        "export" => export(n, dir).await,
        "import" => import(n, dir).await,
        "retention" => retention(n, dir).await,
        other => panic!("unknown case {other}"),
    }
}

fn vault_path(dir: &Path) -> PathBuf {
    dir.join("vault.db")
}

fn raw_path(dir: &Path) -> PathBuf {
    dir.join("raw.db")
}

fn export_path(dir: &Path) -> PathBuf {
    dir.join("export.json")
}

/// The conversation ids of the vault (and of the raw database), oldest
/// activity first.
fn ids_path(dir: &Path) -> PathBuf {
    dir.join("conversations.bin")
}

fn read_ids(dir: &Path) -> Vec<ConversationId> {
    let bytes = std::fs::read(ids_path(dir)).expect("conversation ids");
    bytes
        .chunks_exact(16)
        .map(|c| {
            let mut id = [0u8; 16];
            id.copy_from_slice(c);
            ConversationId::from_bytes(id)
        })
        .collect()
}

async fn open_vault(path: &Path, clock: Arc<dyn chatvault::Clock>) -> Vault {
    let store = SqliteStore::open(path, SqliteOptions::default())
        .await
        .expect("store");
    Vault::open_encrypted(Arc::new(store), PASSPHRASE, fast_options(clock))
        .await
        .expect("vault")
}

/// Peak resident memory of this process so far (`VmHWM`), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    // Draws only on a terminal (indicatif hides itself otherwise).
    ProgressBar::new(len)
        .with_style(
            ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} {eta}")
                .expect("template")
                .progress_chars("=> "),
        )
        .with_message(what.to_owned())
}

fn raw_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open raw");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    // As the store configures its connection: plans independent of bound
    // values (no re-preparing when the conversation changes).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .expect("qpsg");
    conn
}

/// The store's `conversations` and `messages` tables and their indexes.
const RAW_SCHEMA: &str = "
CREATE TABLE conversations (id BLOB PRIMARY KEY, user_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, activity_at INTEGER NOT NULL, version TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX conversations_by_activity ON conversations (activity_at, id);
CREATE TABLE messages (id BLOB PRIMARY KEY, conversation_id BLOB NOT NULL, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, version TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at, id);
";

const VERSION: &str = "0192f3a4b5c6-00000000-a1b2c3d4e5f60718";

/// Builds the encrypted vault (conversations one by one, then 100
/// messages per `add_messages` call; the clock moves a second per
/// conversation so activity orders them) and the raw database with the
/// same conversation ids and as many rows.
async fn build(n: usize, dir: &Path) -> Value {
    let conversations = n / PER_CONVERSATION;
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let vault = open_vault(&vault_path(dir), clock.clone()).await;
    let mut ids = Vec::with_capacity(conversations);
    let content = "x".repeat(1024);
    let progress = bar(n as u64, "building the vault");
    let mut writing = Duration::ZERO;
    for i in 0..conversations {
        clock.advance(1000);
        let c = vault
            .create_conversation(NewConversation::titled(format!("conversation {i}")))
            .await
            .expect("conversation");
        let batch = (0..PER_CONVERSATION)
            .map(|_| NewMessage::new(Role::User, content.clone()))
            .collect();
        let started = Instant::now();
        vault.add_messages(c.id, batch).await.expect("messages");
        writing += started.elapsed();
        ids.push(c.id);
        progress.inc(PER_CONVERSATION as u64);
    }
    progress.finish_and_clear();
    drop(vault);
    let bytes: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
    std::fs::write(ids_path(dir), bytes).expect("writing ids");

    let mut raw = raw_connection(&raw_path(dir));
    raw.execute_batch(RAW_SCHEMA).expect("raw schema");
    let body = vec![0xa5u8; RAW_BODY];
    let started = Instant::now();
    let tx = raw.transaction().expect("tx");
    {
        let mut conv = tx
            .prepare("INSERT INTO conversations VALUES (?1, 'local', ?2, ?2, ?2, ?3, ?4)")
            .expect("prepare");
        let mut msg = tx
            .prepare("INSERT INTO messages VALUES (?1, ?2, ?3, ?3, ?4, ?5)")
            .expect("prepare");
        for (i, id) in ids.iter().enumerate() {
            let at = 1_700_000_000_000i64 + 1000 * (i as i64 + 1);
            conv.execute(params![&id.as_bytes()[..], at, VERSION, &body[..200]])
                .expect("raw conversation");
            for _ in 0..PER_CONVERSATION {
                let m = chatvault::MessageId::new();
                msg.execute(params![
                    &m.as_bytes()[..],
                    &id.as_bytes()[..],
                    at,
                    VERSION,
                    &body[..]
                ])
                .expect("raw message");
            }
        }
    }
    tx.commit().expect("commit");
    let raw_secs = started.elapsed().as_secs_f64();
    json!({
        "messagesPerSec": n as f64 / writing.as_secs_f64(),
        "rawMessagesPerSec": n as f64 / raw_secs,
    })
}

/// Mean time of one call of `f` over `SAMPLED` conversations, as the
/// median of `rounds` passes (after one warm-up pass).
async fn per_call<F, Fut>(ids: &[ConversationId], rounds: usize, mut f: F) -> Vec<f64>
where
    F: FnMut(ConversationId) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let step = (ids.len() / SAMPLED).max(1);
    let sample: Vec<_> = ids.iter().step_by(step).copied().collect();
    for &id in &sample {
        f(id).await;
    }
    let mut passes = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        for &id in &sample {
            f(id).await;
        }
        passes.push(started.elapsed().as_secs_f64() * 1e6 / sample.len() as f64);
    }
    passes
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn reads(dir: &Path, rounds: usize) -> Value {
    let ids = read_ids(dir);
    let vault = open_vault(&vault_path(dir), Arc::new(SystemClock)).await;
    let raw = raw_connection(&raw_path(dir));
    let first_page = PAGE.min(ids.len());

    let latest_vault = per_call(&ids, rounds, |id| {
        let vault = &vault;
        async move {
            let page = vault
                .messages(
                    id,
                    ListMessages {
                        before: None,
                        limit: PAGE,
                    },
                )
                .await
                .expect("latest messages");
            assert_eq!(page.items.len(), PAGE);
        }
    })
    .await;
    let latest_raw = per_call(&ids, rounds, |id| {
        let mut stmt = raw
            .prepare_cached(
                "SELECT id, conversation_id, created_at, updated_at, version, body FROM messages \
                 WHERE conversation_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
            )
            .expect("prepare");
        let rows = stmt
            .query_map(params![&id.as_bytes()[..], PAGE as i64 + 1], raw_message)
            .expect("query")
            .count();
        assert_eq!(rows, PAGE + 1);
        std::future::ready(())
    })
    .await;

    // The first page does not depend on a conversation: the same calls,
    // as many times.
    let conversations_vault = per_call(&ids, rounds, |_| {
        let vault = &vault;
        async move {
            let page = vault
                .conversations(ListConversations::default())
                .await
                .expect("conversations");
            assert_eq!(page.items.len(), first_page);
        }
    })
    .await;
    let conversations_raw = per_call(&ids, rounds, |_| {
        let mut stmt = raw
            .prepare_cached(
                "SELECT id, user_id, created_at, updated_at, version, body, activity_at \
                 FROM conversations ORDER BY activity_at DESC, id DESC LIMIT ?1",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([PAGE as i64 + 1], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .expect("query")
            .count();
        assert!(rows >= first_page);
        std::future::ready(())
    })
    .await;
    json!({
        "latestVaultUs": median(latest_vault),
        "latestRawUs": median(latest_raw),
        "conversationsVaultUs": median(conversations_vault),
        "conversationsRawUs": median(conversations_raw),
    })
}

type RawMessage = (Vec<u8>, Vec<u8>, i64, i64, String, Vec<u8>);

fn raw_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawMessage> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

/// The floor of every lifecycle process: open the vault, read one page.
async fn idle(dir: &Path) -> Value {
    let vault = open_vault(&vault_path(dir), Arc::new(SystemClock)).await;
    vault
        .conversations(ListConversations::default())
        .await
        .expect("conversations");
    json!({ "peakRssMb": peak_rss_mb() })
}

async fn export(n: usize, dir: &Path) -> Value {
    let vault = open_vault(&vault_path(dir), Arc::new(SystemClock)).await;
    let file = std::fs::File::create(export_path(dir)).expect("export file");
    let started = Instant::now();
    let (_, report) = vault
        .export(file, ExportOptions::default())
        .await
        .expect("export");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.counts.messages, n as u64);
    json!({ "messagesPerSec": n as f64 / secs, "peakRssMb": peak_rss_mb() })
}

async fn import(n: usize, dir: &Path) -> Value {
    let target = dir.join("imported.db");
    let vault = open_vault(&target, Arc::new(SystemClock)).await;
    let started = Instant::now();
    let report = vault
        .import(export_path(dir), ImportOptions::default())
        .await
        .expect("import");
    let secs = started.elapsed().as_secs_f64();
    let peak = peak_rss_mb();
    assert_eq!(report.rejected, 0);
    assert_eq!(report.records.messages, n as u64);
    drop(vault);
    // The imported copy is not used again: give the disk back now.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", target.display()));
    }
    json!({ "messagesPerSec": n as f64 / secs, "peakRssMb": peak })
}

/// Deletes the older half of the conversations: the vault by its
/// retention policy, the raw database by `DELETE`s on the same index.
async fn retention(n: usize, dir: &Path) -> Value {
    let ids = read_ids(dir);
    let keep = ids.len() / 2;
    let vault = open_vault(&vault_path(dir), Arc::new(SystemClock)).await;
    let policy = RetentionPolicy {
        max_conversations: Some(keep as u64),
        ..RetentionPolicy::default()
    };
    let started = Instant::now();
    let report = vault
        .run_retention(&policy, RetentionMode::Apply)
        .await
        .expect("retention");
    let retention_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(report.plan.delete.len(), ids.len() - keep);
    let compacted = report.compaction.is_some();
    drop(vault);

    let mut raw = raw_connection(&raw_path(dir));
    let doomed = &ids[..ids.len() - keep];
    let started = Instant::now();
    let tx = raw.transaction().expect("tx");
    let mut deleted = 0;
    {
        let mut messages = tx
            .prepare("DELETE FROM messages WHERE conversation_id = ?1")
            .expect("prepare");
        let mut conversations = tx
            .prepare("DELETE FROM conversations WHERE id = ?1")
            .expect("prepare");
        for id in doomed {
            deleted += messages.execute([&id.as_bytes()[..]]).expect("delete");
            conversations.execute([&id.as_bytes()[..]]).expect("delete");
        }
    }
    tx.commit().expect("commit");
    let raw_delete_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(deleted, n / 2);
    let started = Instant::now();
    raw.execute_batch("VACUUM").expect("vacuum");
    let raw_vacuum_ms = started.elapsed().as_secs_f64() * 1e3;
    json!({
        "retentionMs": retention_ms,
        "compacted": compacted,
        "rawDeleteMs": raw_delete_ms,
        "rawVacuumMs": raw_vacuum_ms,
    })
}
