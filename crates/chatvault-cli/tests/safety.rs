//! The CLI cannot surprise its user (issue 11, items 4, 7 and 10): vault
//! files are private, only `init` creates a vault, a closed pipe is a
//! normal end, record text cannot drive the terminal, and `import` says
//! through its exit status when it rejected anything.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_chatvault");

fn cmd(store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CHATVAULT_STORE", store)
        .env_remove("CHATVAULT_LOG")
        .env_remove("CHATVAULT_PASSPHRASE")
        .env_remove("CHATVAULT_PASSPHRASE_FILE")
        .stdin(Stdio::null());
    c
}

fn run(store: &Path, args: &[&str]) -> Output {
    cmd(store, args).output().unwrap()
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn no_panic(args: &[&str], out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sidecar(store: &Path, suffix: &str) -> PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

#[cfg(unix)]
#[test]
fn the_data_directory_is_0700_and_every_vault_file_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").join("chatvault");
    let store = data.join("vault.db");
    ok(&store, &["init"]);
    // Keep a reader-visible WAL and shared-memory file around while we look.
    let id = ok(&store, &["conv", "new", "--title", "private"]);
    ok(
        &store,
        &["msg", "add", &id, "--role", "user", "--content", "x"],
    );
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&dir.path().join("data")), 0o700, "created parent");
    assert_eq!(mode(&store), 0o600, "vault.db");
    for suffix in ["-wal", "-shm"] {
        let p = sidecar(&store, suffix);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }

    // A migration's backup is as private as the vault it copies.
    let old = dir.path().join("old.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../chatvault-sqlite/tests/fixtures/v1.db"),
        &old,
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ok(&old, &["conv", "ls"]);
    let backup = sidecar(&old, ".v1.bak");
    assert!(backup.exists(), "the migration left a backup");
    assert_eq!(mode(&backup), 0o600, "migration backup");
    for suffix in ["-wal", "-shm"] {
        let p = sidecar(&old, suffix);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

#[test]
fn only_init_creates_a_vault() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("valut.db");
    let export = dir.path().join("export.json");
    let real = dir.path().join("vault.db");
    ok(&real, &["init"]);
    ok(&real, &["conv", "new", "--title", "t"]);
    ok(&real, &["export", "-o", export.to_str().unwrap()]);

    for args in [
        &["conv", "new", "--title", "oops"][..],
        &["import", export.to_str().unwrap()][..],
        &["conv", "ls"][..],
        &["stats"][..],
    ] {
        let out = run(&typo, args);
        no_panic(args, &out);
        assert!(
            !out.status.success(),
            "{args:?} succeeded on a missing vault"
        );
        let err = String::from_utf8(out.stderr).unwrap();
        let want = format!("no vault at {}; run `chatvault init`", typo.display());
        assert!(err.contains(&want), "{args:?}: {err}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
        for suffix in ["-wal", "-shm", "-journal"] {
            assert!(!sidecar(&typo, suffix).exists(), "{args:?} left {suffix}");
        }
    }
    // A missing directory is not created either.
    let nested = dir.path().join("no-such-dir").join("vault.db");
    let out = run(&nested, &["conv", "new", "--title", "oops"]);
    assert!(!out.status.success());
    assert!(!dir.path().join("no-such-dir").exists());
}

#[test]
fn a_failed_join_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    // Nothing listens on port 9 of localhost in a test sandbox: the
    // connection is refused at once.
    let args = [
        "sync",
        "join",
        "--server",
        "http://127.0.0.1:9",
        "--user",
        "alice",
    ];
    let out = cmd(&store, &args)
        .env("CHATVAULT_PASSPHRASE", "correct horse battery staple")
        .output()
        .unwrap();
    no_panic(&args, &out);
    assert!(!out.status.success(), "join to a closed port succeeded");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(entries.is_empty(), "a failed join left {entries:?}");
}

/// A vault with one conversation of `n` messages.
fn vault_with_messages(dir: &Path, n: usize) -> (PathBuf, String) {
    let store = dir.join("vault.db");
    ok(&store, &["init"]);
    let id = ok(&store, &["conv", "new", "--title", "long"]);
    for i in 0..n {
        ok(
            &store,
            &[
                "msg",
                "add",
                &id,
                "--role",
                "user",
                "--content",
                &format!("line {i}\nmore"),
            ],
        );
    }
    (store, id)
}

#[cfg(unix)]
#[test]
fn a_reader_that_closes_early_is_a_normal_end() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id) = vault_with_messages(dir.path(), 3);
    // Many conversations, so stats and listings write more than a pipe holds.
    let big = "x".repeat(2000);
    for _ in 0..40 {
        ok(&store, &["conv", "new", "--title", &big]);
    }
    for _ in 0..40 {
        ok(
            &store,
            &["msg", "add", &id, "--role", "user", "--content", &big],
        );
    }
    for args in [
        &["stats"][..],
        &["conv", "show", &id][..],
        &["conv", "ls"][..],
        &["msg", "ls", &id][..],
        &["retention", "run", "--max-conversations", "1000"][..],
        &["conv", "ls", "--json"][..],
    ] {
        // A reader that has already gone: every write hits a closed pipe.
        let mut child = cmd(&store, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        no_panic(args, &out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn control_characters_are_escaped_for_people_and_kept_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    ok(&store, &["init"]);
    let title = "evil\u{1b}]0;pwned\u{7}\u{1b}[2J title\u{9b}31m";
    let content = "line \u{1b}[1mone\n\tindented \u{1b}[31mred\u{1b}[0m\rover";
    let id = ok(&store, &["conv", "new", "--title", title]);
    ok(
        &store,
        &["msg", "add", &id, "--role", "user", "--content", content],
    );

    for args in [
        &["conv", "ls"][..],
        &["conv", "show", &id][..],
        &["msg", "ls", &id][..],
    ] {
        let out = ok(&store, args);
        assert!(
            !out.contains('\u{1b}'),
            "{args:?} printed a raw ESC: {out:?}"
        );
        assert!(
            !out.contains('\u{9b}'),
            "{args:?} printed a raw CSI: {out:?}"
        );
        assert!(
            !out.contains('\u{7}'),
            "{args:?} printed a raw BEL: {out:?}"
        );
        assert!(!out.contains('\r'), "{args:?} printed a raw CR: {out:?}");
        assert!(out.contains("\\u{1b}"), "{args:?}: {out}");
    }
    let shown = ok(&store, &["conv", "show", &id]);
    assert!(
        shown.contains("\n\tindented"),
        "newline and tab kept: {shown}"
    );

    let json: Value = serde_json::from_str(&ok(&store, &["conv", "show", &id, "--json"])).unwrap();
    assert_eq!(json["conversation"]["title"], title);
    assert_eq!(json["messages"][0]["content"], content);
}

#[test]
fn an_import_that_rejected_records_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    ok(&store, &["init"]);
    // A seed-app export with one conversation stamped decades ahead of
    // the clock: the importer rejects it and imports the other.
    let export = dir.path().join("export.json");
    std::fs::write(
        &export,
        r#"{"version": 1, "conversations": [
            {"id": "conv_a", "title": "now", "createdAt": "2024-05-01T10:00:00.000Z",
             "updatedAt": "2024-05-01T10:00:05.000Z", "messages": []},
            {"id": "conv_b", "title": "future", "createdAt": "2099-05-01T10:00:00.000Z",
             "updatedAt": "2099-05-01T10:00:05.000Z", "messages": []}]}"#,
    )
    .unwrap();

    let out = run(&store, &["import", export.to_str().unwrap()]);
    no_panic(&["import"], &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rejected 1"), "{stdout}");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same with --json: the report is printed, the status still says so.
    let out = run(&store, &["import", "--json", export.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rejected"], 1);
    assert_eq!(out.status.code(), Some(3));

    let help = ok(&store, &["--help"]);
    assert!(help.contains("Exit status"), "{help}");
    assert!(help.contains("3 "), "{help}");
}
