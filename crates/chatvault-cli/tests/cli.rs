//! End-to-end tests of the `chatvault` binary: the round trip a user makes,
//! bad input of every kind, and durability across `kill -9`.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_chatvault");

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env("CHATVAULT_STORE", self.store())
            .env_remove("CHATVAULT_LOG")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns trimmed stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// Runs a command that must fail with one line on stderr, no panic.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(!err.contains("RUST_BACKTRACE"), "{err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        err
    }
}

#[test]
fn round_trip_survives_a_new_process() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let a = s.ok(&["conv", "new", "--title", "Groceries"]);
    let b = s.ok(&["conv", "new", "--title", "Trip ✈️"]);
    s.ok(&["msg", "add", &a, "--role", "user", "--content", "milk?"]);
    s.ok(&[
        "msg",
        "add",
        &a,
        "--role",
        "assistant",
        "--content",
        "and eggs",
    ]);
    let mut child = s
        .cmd(&["msg", "add", &b, "--role", "user", "--content", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("multi\nline 🌍\n".as_bytes())
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let convs = s.json(&["conv", "ls", "--json"]);
    let titles: Vec<&str> = convs
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Trip ✈️", "Groceries"]);
    assert!(convs[0].get("createdAt").is_some() && convs[0].get("userId").is_some());

    let msgs = s.json(&["msg", "ls", &a, "--json"]);
    let contents: Vec<&str> = msgs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["milk?", "and eggs"]);
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["conversationId"], a.as_str());
    let from_stdin = s.json(&["msg", "ls", &b, "--json"]);
    assert_eq!(from_stdin[0]["content"], "multi\nline 🌍");

    s.ok(&["conv", "rm", &b]);
    // Fresh processes see the rest and not the deleted one.
    let convs = s.json(&["conv", "ls", "--json"]);
    assert_eq!(convs.as_array().unwrap().len(), 1);
    assert_eq!(convs[0]["id"], a.as_str());
    let shown = s.json(&["conv", "show", &a, "--json"]);
    assert_eq!(shown["messages"].as_array().unwrap().len(), 2);
    let stats = s.json(&["stats", "--json"]);
    assert_eq!(stats["conversations"], 1);
    assert_eq!(stats["messages"], 2);
    assert_eq!(stats["tombstones"], 1);
    assert!(s.ok(&["conv", "ls"]).contains("Groceries"));
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure_status() {
    let s = Sandbox::new();
    let err = s.fails(&["conv", "ls"]);
    assert!(err.contains("no vault at"), "{err}");

    s.ok(&["init"]);
    let a = s.ok(&["conv", "new", "--title", "x"]);
    let err = s.fails(&["conv", "show", "not-an-id"]);
    assert!(err.contains("invalid conversation id"), "{err}");
    let unknown = "01900000-0000-7000-8000-000000000000";
    let err = s.fails(&["conv", "show", unknown]);
    assert!(err.contains("not found"), "{err}");
    let err = s.fails(&["msg", "add", unknown, "--role", "user", "--content", "x"]);
    assert!(err.contains("not found"), "{err}");
    let err = s.fails(&["msg", "add", &a, "--role", "robot", "--content", "x"]);
    assert!(err.contains("invalid role"), "{err}");
    let err = s.fails(&["msg", "rm", unknown]);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(s.fails(&["init"]).lines().count(), 1);

    // A file that is not a vault, and one that was damaged.
    let garbage = s.dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        b"this is not a database at all, just text\n".repeat(200),
    )
    .unwrap();
    let err = s.fails(&["--store", garbage.to_str().unwrap(), "conv", "ls"]);
    assert!(
        err.contains("corrupt") || err.contains("not a readable"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let before = std::fs::read(&garbage).unwrap();
    s.fails(&[
        "--store",
        garbage.to_str().unwrap(),
        "conv",
        "new",
        "--title",
        "t",
    ]);
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        before,
        "a foreign file is never modified"
    );

    let dir = s.dir.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let err = s.fails(&["--store", dir.to_str().unwrap(), "conv", "ls"]);
    assert!(err.contains("directory"), "{err}");

    // Data written before is intact after all that.
    assert_eq!(
        s.json(&["conv", "ls", "--json"]).as_array().unwrap().len(),
        1
    );
}

#[test]
fn truncated_store_file_is_reported_not_panicked() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let a = s.ok(&["conv", "new", "--title", "t"]);
    for i in 0..50 {
        s.ok(&[
            "msg",
            "add",
            &a,
            "--role",
            "user",
            "--content",
            &format!("{i}").repeat(500),
        ]);
    }
    // Fold the WAL into the main file, then cut the file in half.
    checkpoint(&s.store());
    let bytes = std::fs::read(s.store()).unwrap();
    std::fs::write(s.store(), &bytes[..bytes.len() / 2]).unwrap();
    let err = s.fails(&["msg", "ls", &a, "--json"]);
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

fn checkpoint(path: &Path) {
    // Opening with the CLI and exiting leaves a WAL; a fresh open of the
    // SQLite file through the CLI checkpoints on close when it is the last
    // connection, so run a harmless read.
    let _ = Command::new(BIN)
        .args(["--store", path.to_str().unwrap(), "stats"])
        .output();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let _ = std::fs::remove_file(wal);
}

/// What the CLI reported as written survives `kill -9` at an arbitrary
/// moment: every id printed before the kill is in the vault afterwards.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let conv = s.ok(&["conv", "new", "--title", "durable"]);
    let script = format!(
        "while true; do {BIN} msg add {conv} --role user --content payload || exit 1; done"
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("CHATVAULT_STORE", s.store())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut acknowledged = Vec::new();
    let mut line = String::new();
    while acknowledged.len() < 25 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        acknowledged.push(line.trim().to_owned());
    }
    // Kill the whole process group member that is mid-write: the shell's
    // current child. `pkill -9 -P` kills children of the shell.
    let _ = Command::new("pkill")
        .args(["-9", "-P", &child.id().to_string()])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    // Anything printed after our read count was acknowledged too.
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
    acknowledged.extend(rest.lines().map(str::to_owned).filter(|l| !l.is_empty()));
    assert!(acknowledged.len() >= 25);

    let msgs = s.json(&["msg", "ls", &conv, "--limit", "100000", "--json"]);
    let stored: std::collections::HashSet<&str> = msgs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in &acknowledged {
        assert!(
            stored.contains(id.as_str()),
            "acknowledged message {id} lost"
        );
    }
}
