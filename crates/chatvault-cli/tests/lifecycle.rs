//! End-to-end tests of the lifecycle commands: retention, stats, compact,
//! export and import — including bad import files (each one line, nothing
//! changed) and a 100k-message export and import whose peak memory is
//! compared with a 10k one.

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_chatvault");

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A directory holding a new, empty plaintext vault.
    fn new() -> Self {
        let s = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        s.ok(&["init"]);
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env("CHATVAULT_STORE", self.path("vault.db"))
            .env_remove("CHATVAULT_LOG")
            .env_remove("CHATVAULT_EXPORT_PASSPHRASE")
            .env_remove("CHATVAULT_EXPORT_PASSPHRASE_FILE")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run(args, env);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_env(args, &[])
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn fails_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run(args, env);
        assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        err
    }

    /// A few conversations with messages; returns their ids, oldest first.
    fn populate(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for (i, title) in ["first", "second ✈️", "third"].iter().enumerate() {
            let id = self.ok(&["conv", "new", "--title", title]);
            for j in 0..=i {
                self.ok(&[
                    "msg",
                    "add",
                    &id,
                    "--role",
                    ["user", "assistant"][j % 2],
                    "--content",
                    &format!("{title} message {j}"),
                ]);
            }
            ids.push(id);
        }
        ids
    }

    /// Everything a user can see, for before/after comparisons.
    fn everything(&self) -> (Value, Value) {
        let mut stats = self.json(&["stats", "--json"]);
        // The file's own size and free disk space are not content.
        stats.as_object_mut().unwrap().remove("storage");
        stats.as_object_mut().unwrap().remove("fileBytes");
        stats.as_object_mut().unwrap().remove("path");
        let mut shown = Vec::new();
        for c in self.json(&["conv", "ls", "--json"]).as_array().unwrap() {
            shown.push(self.json(&["conv", "show", c["id"].as_str().unwrap(), "--json"]));
        }
        (stats, Value::Array(shown))
    }
}

#[test]
fn retention_runs_dry_applies_and_stores_a_policy() {
    let s = Sandbox::new();
    let ids = s.populate();
    let before = s.everything();
    let dry = s.json(&[
        "retention",
        "run",
        "--max-conversations",
        "1",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["delete"].as_array().unwrap().len(), 2);
    assert_eq!(s.everything(), before, "a dry run changes nothing");
    let text = s.ok(&["retention", "run", "--max-conversations", "1", "--dry-run"]);
    assert!(text.starts_with("would delete 2 conversations"), "{text}");

    let done = s.json(&["retention", "run", "--max-conversations", "1", "--json"]);
    let deleted: Vec<&str> = done["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [ids[0].as_str(), ids[1].as_str()], "oldest first");
    assert_eq!(done["delete"][0]["reason"], "count");
    assert!(done["bytesFreed"].as_u64().unwrap() > 0);
    let stats = s.json(&["stats", "--json"]);
    assert_eq!(stats["conversations"], 1);
    assert_eq!(stats["tombstones"], 2);

    // Sizes in every unit; an unknown one is a clear error.
    s.ok(&["retention", "run", "--max-bytes", "10MB", "--dry-run"]);
    s.ok(&["retention", "run", "--max-bytes", "1.5GiB", "--dry-run"]);
    let out = s.run(&["retention", "run", "--max-bytes", "3 parsecs"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown size unit"));
    let err = s.fails_env(&["retention", "run"], &[]);
    assert!(err.contains("no retention policy"), "{err}");

    // A limit of zero would delete everything: refused, nothing stored.
    for zero in [
        &["retention", "set", "--max-age-days", "0", "--yes"][..],
        &["retention", "set", "--max-bytes", "0", "--yes"][..],
        &["retention", "run", "--max-conversations", "0"][..],
    ] {
        let err = s.fails_env(zero, &[]);
        assert!(err.contains("would delete every conversation"), "{err}");
    }
    // Without a terminal, `set` shows its dry run and refuses without --yes.
    s.ok(&["conv", "new", "--title", "newer"]);
    s.ok(&["conv", "new", "--title", "newest"]);
    let out = s.run(&["retention", "set", "--max-conversations", "1"], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("would delete 2 conversations"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
    assert_eq!(
        s.json(&["retention", "show", "--json"])["policy"],
        Value::Null
    );

    // Stored with --yes: `retention show` leaves it alone; the next other
    // command applies it and says so in one line on stderr.
    s.ok(&["retention", "set", "--max-conversations", "1", "--yes"]);
    let shown = s.json(&["retention", "show", "--json"]);
    assert_eq!(shown["policy"]["maxConversations"], 1);
    assert_eq!(shown["lastRun"], Value::Null, "{shown}");
    let out = s.run(&["conv", "ls", "--json"], &[]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("retention: the stored policy (max 1 conversations) deleted 2"),
        "{err}"
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // Not due again today: silent.
    let out = s.run(&["stats"], &[]);
    assert!(out.status.success() && out.stderr.is_empty());
    s.ok(&["retention", "clear"]);
    assert_eq!(s.ok(&["retention", "show"]), "no retention policy stored");
}

#[test]
fn stats_show_storage_and_compact_shrinks_the_file() {
    let s = Sandbox::new();
    let id = s.ok(&["conv", "new", "--title", "big"]);
    let payload = "z".repeat(200_000);
    let file = s.path("payload.txt");
    std::fs::write(&file, &payload).unwrap();
    for _ in 0..10 {
        let out = s
            .cmd(&["msg", "add", &id, "--role", "tool", "--content", "-"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let stats = s.json(&["stats", "--json"]);
    let storage = &stats["storage"];
    assert!(
        storage["usedBytes"].as_u64().unwrap() > 2_000_000,
        "{stats}"
    );
    assert!(storage["availableBytes"].as_u64().unwrap() > 0);
    assert_eq!(storage["persistent"], true);
    assert!(s.ok(&["stats"]).contains("available"));

    s.ok(&["conv", "rm", &id]);
    let compacted = s.json(&["compact", "--json"]);
    let (before, after) = (
        compacted["beforeBytes"].as_u64().unwrap(),
        compacted["afterBytes"].as_u64().unwrap(),
    );
    assert!(after * 10 < before, "{compacted}");
    let on_disk = std::fs::metadata(s.path("vault.db")).unwrap().len();
    assert!(on_disk * 10 < before, "the file itself shrank");
    assert!(s.ok(&["compact"]).starts_with("compacted "));
}

#[test]
fn export_and_import_round_trip_plain_and_encrypted() {
    let a = Sandbox::new();
    a.populate();
    a.ok(&["export", "-o", "plain.json"]);
    let pass = [("CHATVAULT_EXPORT_PASSPHRASE", "file secret")];
    a.ok_env(&["export", "-o", "sealed.cvenc", "--encrypt"], &pass);
    let plain = std::fs::read(a.path("plain.json")).unwrap();
    let sealed = std::fs::read(a.path("sealed.cvenc")).unwrap();
    assert!(plain.starts_with(br#"{"format":"chatvault-export","version":1"#));
    assert!(sealed.starts_with(b"CVENC1\n"));
    assert!(!String::from_utf8_lossy(&sealed).contains("message"));
    let leftovers: Vec<_> = std::fs::read_dir(a.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Into an empty vault (created by the import), then again: all skipped.
    let b = Sandbox::new();
    let report: Value = serde_json::from_str(&b.ok_env(
        &["import", a.path("sealed.cvenc").to_str().unwrap(), "--json"],
        &pass,
    ))
    .unwrap();
    assert_eq!(report["encrypted"], true);
    assert_eq!(report["imported"], 9);
    assert_eq!(b.everything(), {
        let (mut stats, shown) = a.everything();
        // The importing vault has everything queued for sync.
        stats["pendingChanges"] = b.json(&["stats", "--json"])["pendingChanges"].clone();
        for (x, y) in stats["perConversation"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip(
                b.json(&["stats", "--json"])["perConversation"]
                    .as_array()
                    .unwrap(),
            )
        {
            x["pending"] = y["pending"].clone();
        }
        (stats, shown)
    });
    let again = b.ok(&["import", a.path("plain.json").to_str().unwrap()]);
    assert!(
        again.starts_with("imported 0, skipped 9 (older or identical), rejected 0 of 9 records"),
        "{again}"
    );

    // To standard output, byte for byte what -o writes (same vault, new time).
    let out = a.run(&["export"], &[]);
    assert!(out.status.success());
    assert!(out.stdout.starts_with(br#"{"format":"chatvault-export""#));
    assert!(String::from_utf8_lossy(&out.stderr).contains("to standard output"));
}

/// A bad import file: name, bytes, environment, expected error text.
type BadFile<'a> = (&'a str, Vec<u8>, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_import_files_are_one_line_and_change_nothing() {
    let a = Sandbox::new();
    a.populate();
    a.ok(&["export", "-o", "good.json"]);
    let pass = [("CHATVAULT_EXPORT_PASSPHRASE", "file secret")];
    a.ok_env(&["export", "-o", "good.cvenc", "--encrypt"], &pass);
    let good = std::fs::read(a.path("good.json")).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();

    let b = Sandbox::new();
    b.ok(&["conv", "new", "--title", "already here"]);
    let before = b.everything();
    let vault_bytes = || std::fs::read(b.path("vault.db")).unwrap();
    let file_before = vault_bytes();

    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x08;
    let mut sealed_flipped = std::fs::read(a.path("good.cvenc")).unwrap();
    let at = sealed_flipped.len() / 2;
    sealed_flipped[at] ^= 1;
    let first_message = text
        .lines()
        .find(|l| l.contains("\"role\":\"user\""))
        .unwrap()
        .to_owned();
    let cases: Vec<BadFile<'_>> = vec![
        (
            "truncated.json",
            good[..good.len() * 2 / 3].to_vec(),
            &[],
            "truncated",
        ),
        ("flipped.json", flipped, &[], "export file is"),
        (
            "version.json",
            text.replacen("\"version\":1,", "\"version\":2,", 1)
                .into_bytes(),
            &[],
            "version 2, newest supported is 1",
        ),
        (
            "role.json",
            text.replacen("\"role\":\"user\"", "\"role\":\"robot\"", 1)
                .into_bytes(),
            &[],
            "invalid role \"robot\"",
        ),
        (
            "duplicate.json",
            text.replacen(
                &first_message,
                &format!("{first_message}\n{first_message}"),
                1,
            )
            .into_bytes(),
            &[],
            "more than once",
        ),
        (
            "wrong-passphrase.cvenc",
            std::fs::read(a.path("good.cvenc")).unwrap(),
            &[("CHATVAULT_EXPORT_PASSPHRASE", "not it")],
            "wrong passphrase",
        ),
        ("tampered.cvenc", sealed_flipped, &pass, "tampered with"),
        (
            "no-passphrase.cvenc",
            std::fs::read(a.path("good.cvenc")).unwrap(),
            &[],
            "CHATVAULT_EXPORT_PASSPHRASE",
        ),
    ];
    for (name, bytes, env, expected) in cases {
        let path = b.path(name);
        std::fs::write(&path, bytes).unwrap();
        let err = b.fails_env(&["import", path.to_str().unwrap()], env);
        assert!(err.contains(expected), "{name}: {err}");
        assert_eq!(b.everything(), before, "{name} changed nothing");
    }
    let err = b.fails_env(&["import", "no-such-file.json"], &[]);
    assert!(err.contains("No such file"), "{err}");
    assert_eq!(vault_bytes().len(), file_before.len());
}

#[test]
fn a_failed_export_leaves_no_file_behind() {
    let s = Sandbox::new();
    s.populate();
    std::fs::write(s.path("keep.json"), "previous export").unwrap();
    // --encrypt without any passphrase source fails before writing.
    s.fails_env(&["export", "-o", "keep.json", "--encrypt"], &[]);
    s.fails_env(&["export", "-o", "missing-dir/x.json"], &[]);
    assert_eq!(
        std::fs::read_to_string(s.path("keep.json")).unwrap(),
        "previous export"
    );
    let names: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")) && !s.path("missing-dir").exists(),
        "{names:?}"
    );
}

#[test]
fn a_seed_app_export_imports() {
    let s = Sandbox::new();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../chatvault/tests/fixtures/seed-app-export.json");
    let out = s.ok(&["import", fixture.to_str().unwrap()]);
    assert!(
        out.contains("imported 7") && out.contains("app-export v1"),
        "{out}"
    );
    let titles: Vec<String> = s
        .json(&["conv", "ls", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, ["Recipe ideas 🍝", "Trip to Lisbon"]);
}

// ---- memory stays flat ----------------------------------------------------

/// Runs the CLI to completion; returns its peak resident memory (KiB, from
/// `wait4`'s rusage of that one child) and wall time.
// The only unsafe in the workspace: std has no way to read one child's
// rusage, and the peak memory of exactly that child is what the test asserts.
#[allow(unsafe_code)]
fn measured(s: &Sandbox, args: &[&str]) -> (u64, Duration) {
    let log = std::fs::File::create(s.path("measured.log")).unwrap();
    let started = Instant::now();
    // Reaped by `wait4` below (which also reports its rusage), not by
    // `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let child = s
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in; `pid` is our own
    // child, which nothing else waits for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{args:?} failed: {}",
        std::fs::read_to_string(s.path("measured.log")).unwrap_or_default()
    );
    (usage.ru_maxrss as u64, elapsed)
}

#[test]
fn exporting_and_importing_100k_messages_takes_flat_memory() {
    let mut peaks = Vec::new();
    for messages in [10_000u64, 100_000] {
        let s = Sandbox::new();
        let file = s.path("big.json");
        common::big_export(&file, messages, 500, |m| {
            format!("message {m}: {}", "lorem ipsum dolor sit amet ".repeat(4))
        });
        let (import_kib, import_time) = measured(&s, &["import", file.to_str().unwrap()]);
        let stats = s.json(&["stats", "--json"]);
        assert_eq!(stats["messages"], messages);
        let (export_kib, export_time) = measured(&s, &["export", "-o", "again.json"]);
        let size = std::fs::metadata(s.path("again.json")).unwrap().len();
        eprintln!(
            "{messages} messages ({size} bytes): import {import_time:.2?} peak {import_kib} KiB, \
             export {export_time:.2?} peak {export_kib} KiB"
        );
        peaks.push((import_kib, export_kib));
    }
    let (small, large) = (peaks[0], peaks[1]);
    // Ten times the history: import memory grows at most by the fixed
    // 8 MiB filter that proves ids unique past the first 65,536 records
    // (`ExportValidator::EXACT_IDS`; the 10k file stays under it), never
    // with the content or the count beyond that (1M measured flat in
    // BENCHMARKS.md).
    const ID_FILTER_KIB: f64 = 8.0 * 1024.0;
    assert!(
        (large.0 as f64) < small.0 as f64 * 1.5 + ID_FILTER_KIB,
        "import peak grew from {} to {} KiB",
        small.0,
        large.0
    );
    assert!(
        (large.1 as f64) < small.1 as f64 * 1.25,
        "export peak grew from {} to {} KiB",
        small.1,
        large.1
    );
}
