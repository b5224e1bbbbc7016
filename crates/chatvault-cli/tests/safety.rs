//! The CLI cannot surprise its user (issue 11, items 4, 6, 7 and 10):
//! vault files are private, only `init` creates a vault, one damaged record
//! hides nothing else, a closed pipe is a normal end, record text cannot
//! drive the terminal, `import` says through its exit status when it
//! rejected anything, and `msg ls` pages back.

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

/// The 16 bytes of a UUID given as text (how the SQLite store keys rows).
fn uuid_bytes(id: &str) -> Vec<u8> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Overwrites the stored body of one row, as a bad disk sector would.
fn damage(store: &Path, table: &str, id: &str) {
    let db = rusqlite::Connection::open(store).unwrap();
    let changed = db
        .execute(
            &format!("UPDATE {table} SET body = x'00ff00ff6461' WHERE id = ?1"),
            [uuid_bytes(id)],
        )
        .unwrap();
    assert_eq!(changed, 1, "no {table} row {id}");
}

#[test]
fn one_damaged_record_hides_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (store, conv) = vault_with_messages(dir.path(), 3);
    let other = ok(&store, &["conv", "new", "--title", "other"]);
    let third = ok(&store, &["conv", "new", "--title", "third"]);
    let msgs: Value = serde_json::from_str(&ok(&store, &["msg", "ls", &conv, "--json"])).unwrap();
    let bad_msg = msgs[1]["id"].as_str().unwrap().to_owned();
    damage(&store, "conversations", &other);
    damage(&store, "messages", &bad_msg);

    // Listings show the rest, and name what they skipped on stderr.
    let out = run(&store, &["conv", "ls"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("long") && table.contains("third"), "{table}");
    assert!(!table.contains(&other), "{table}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 damaged conversation") && err.contains(&other),
        "{err}"
    );

    // --json lists the readable ones and marks the damaged one.
    let listed: Value = serde_json::from_str(&ok(&store, &["conv", "ls", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    let readable: Vec<_> = listed.iter().filter_map(|c| c["title"].as_str()).collect();
    assert_eq!(readable, ["third", "long"]);
    let damaged: Vec<_> = listed.iter().filter(|c| c["damaged"] == true).collect();
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0]["id"], other.as_str());

    let out = run(&store, &["msg", "ls", &conv, "--json"]);
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let contents: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["line 0\nmore", "line 2\nmore"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&bad_msg));
    let shown = run(&store, &["conv", "show", &conv]);
    assert!(shown.status.success());
    assert!(String::from_utf8_lossy(&shown.stderr).contains(&bad_msg));

    // stats counts and names them all.
    let stats: Value = serde_json::from_str(&ok(&store, &["stats", "--json"])).unwrap();
    assert_eq!(stats["damagedCount"], 2, "{stats}");
    assert_eq!(stats["damaged"]["conversations"][0], other.as_str());
    assert_eq!(stats["damaged"]["messages"][0], bad_msg.as_str());
    assert!(ok(&store, &["stats"]).contains("2 record(s) cannot be read"));

    // The rest stays usable: writes, and deleting the damaged record.
    ok(
        &store,
        &[
            "msg",
            "add",
            &third,
            "--role",
            "user",
            "--content",
            "still fine",
        ],
    );
    ok(&store, &["conv", "rm", &other]);
    assert_eq!(
        serde_json::from_str::<Value>(&ok(&store, &["stats", "--json"])).unwrap()["damagedCount"],
        1
    );
}

#[test]
fn msg_ls_pages_back_with_before() {
    let dir = tempfile::tempdir().unwrap();
    let (store, conv) = vault_with_messages(dir.path(), 5);
    let all: Value = serde_json::from_str(&ok(&store, &["msg", "ls", &conv, "--json"])).unwrap();
    let ids: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5);

    let out = run(&store, &["msg", "ls", &conv, "--limit", "2"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&ids[3]) && table.contains(&ids[4]),
        "{table}"
    );
    let hint = String::from_utf8_lossy(&out.stderr);
    assert!(hint.contains(&format!("--before {}", ids[3])), "{hint}");

    let page = |before: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(&ok(
            &store,
            &[
                "msg", "ls", &conv, "--limit", "2", "--before", before, "--json",
            ],
        ))
        .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(page(&ids[3]), ids[1..3]);
    // --json names the next page on stderr too, keeping stdout pure JSON.
    let out = run(
        &store,
        &[
            "msg", "ls", &conv, "--limit", "2", "--before", &ids[3], "--json",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("--before {}", ids[1])));
    assert_eq!(page(&ids[1]), ids[0..1]);
    assert!(page(&ids[0]).is_empty());
    let out = run(
        &store,
        &["msg", "ls", &conv, "--limit", "2", "--before", &ids[1]],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "no older page hint at the start"
    );

    // An id of another conversation, or none at all, is a clear error.
    let other = ok(&store, &["conv", "new", "--title", "other"]);
    let out = run(&store, &["msg", "ls", &other, "--before", &ids[0]]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to conversation"));
    let out = run(&store, &["msg", "ls", &conv, "--before", "nope"]);
    assert!(!out.status.success());
    no_panic(&["msg", "ls"], &out);
}

#[test]
fn empty_titles_are_refused_and_empty_content_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    ok(&store, &["init"]);
    for title in ["", "   "] {
        let out = run(&store, &["conv", "new", "--title", title]);
        assert_eq!(out.status.code(), Some(2), "{title:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs a title"));
    }
    let id = ok(&store, &["conv", "new", "--title", "kept"]);
    let out = run(&store, &["conv", "rename", &id, "--title", ""]);
    assert_eq!(out.status.code(), Some(2));
    let listed: Value = serde_json::from_str(&ok(&store, &["conv", "ls", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["title"], "kept");
    // Empty content is a message (a tool call's turn often has no text).
    ok(
        &store,
        &["msg", "add", &id, "--role", "tool", "--content", ""],
    );
    let msgs: Value = serde_json::from_str(&ok(&store, &["msg", "ls", &id, "--json"])).unwrap();
    assert_eq!(msgs[0]["content"], "");
}

#[test]
fn tables_say_how_long_ago_and_json_keeps_machine_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    ok(&store, &["init"]);
    let id = ok(&store, &["conv", "new", "--title", "recent"]);
    ok(
        &store,
        &["msg", "add", &id, "--role", "user", "--content", "hi"],
    );
    assert!(ok(&store, &["conv", "ls"]).contains("just now"));
    assert!(ok(&store, &["msg", "ls", &id]).contains("just now"));
    let stats = ok(&store, &["stats"]);
    assert!(
        stats.contains("just now") && stats.contains(" B"),
        "{stats}"
    );
    let listed: Value = serde_json::from_str(&ok(&store, &["conv", "ls", "--json"])).unwrap();
    assert!(listed[0]["updatedAt"].is_i64(), "{listed}");
    let stats: Value = serde_json::from_str(&ok(&store, &["stats", "--json"])).unwrap();
    assert!(stats["bytes"].is_u64(), "{stats}");
}

#[test]
fn no_colours_on_stderr_that_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    ok(&store, &["init"]);
    let out = run(&store, &["-vv", "conv", "ls"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.is_empty(), "-vv logs something");
    assert!(!err.contains('\u{1b}'), "ANSI escape in {err:?}");
    let out = run(&store, &["conv", "show", "not-an-id"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
}

#[test]
fn the_seed_apps_persisted_store_and_unversioned_exports_import() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vault.db");
    ok(&store, &["init"]);
    let conversations = r#"[{"id": "c1", "title": "from zustand", "createdAt": 1714557600000,
        "messages": [{"id": "m1", "role": "user", "content": "hello", "timestamp": 1714557601000}]}]"#;
    let persisted = dir.path().join("chat-storage.json");
    std::fs::write(
        &persisted,
        format!(
            r#"{{"state": {{"conversations": {conversations}, "currentId": "c1"}}, "version": 0}}"#
        ),
    )
    .unwrap();
    let unversioned = dir.path().join("old-export.json");
    std::fs::write(
        &unversioned,
        conversations
            .replace("from zustand", "unversioned")
            .replace("\"c1\"", "\"c2\"")
            .replace("[{\"id\": \"c2\"", "{\"conversations\": [{\"id\": \"c2\"")
            + "}",
    )
    .unwrap();
    ok(&store, &["import", persisted.to_str().unwrap()]);
    ok(&store, &["import", unversioned.to_str().unwrap()]);
    let listed: Value = serde_json::from_str(&ok(&store, &["conv", "ls", "--json"])).unwrap();
    let mut titles: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    assert_eq!(titles, ["from zustand", "unversioned"]);
}
