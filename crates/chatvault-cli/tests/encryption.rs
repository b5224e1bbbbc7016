//! The CLI on encrypted vaults: creating, unlocking from each source,
//! wrong passphrases, passphrase changes, and nothing readable on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_chatvault");

fn run(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CHATVAULT_STORE", store)
        .env_remove("CHATVAULT_PASSPHRASE")
        .env_remove("CHATVAULT_PASSPHRASE_FILE")
        .env_remove("CHATVAULT_NEW_PASSPHRASE")
        .env_remove("CHATVAULT_NEW_PASSPHRASE_FILE")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(store: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(store, args, env);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn fails(store: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(store, args, env);
    assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

fn all_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn encrypted_vault_round_trip_and_raw_dump_shows_no_content() {
    let dir = tempfile::tempdir().unwrap();
    let store: PathBuf = dir.path().join("secret.db");
    let pass = [("CHATVAULT_PASSPHRASE", "hunter2 but longer")];
    assert!(ok(&store, &["init", "--encrypt"], &pass).contains("encrypted"));

    let conv = ok(
        &store,
        &["conv", "new", "--title", "Medical questions QXJ"],
        &pass,
    );
    ok(
        &store,
        &[
            "msg",
            "add",
            &conv,
            "--role",
            "user",
            "--content",
            "my private symptom ZKV",
        ],
        &pass,
    );
    let listed = ok(&store, &["msg", "ls", &conv, "--json"], &pass);
    assert!(listed.contains("my private symptom ZKV"));
    assert!(ok(&store, &["stats", "--json"], &pass).contains("\"encrypted\": true"));

    // Like `strings` over the database and its WAL.
    let raw = all_bytes(dir.path());
    for secret in [
        "Medical questions QXJ",
        "my private symptom ZKV",
        "private",
        "Medical",
    ] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} is readable on disk"
        );
    }
}

#[test]
fn unlocking_needs_the_right_passphrase_from_a_safe_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("v.db");
    let pass = [("CHATVAULT_PASSPHRASE", "right one")];
    ok(&store, &["init", "--encrypt"], &pass);
    let conv = ok(&store, &["conv", "new", "--title", "t"], &pass);

    let err = fails(&store, &["conv", "ls"], &[]);
    assert!(
        err.contains("CHATVAULT_PASSPHRASE_FILE"),
        "says how to unlock: {err}"
    );
    let err = fails(
        &store,
        &["conv", "ls"],
        &[("CHATVAULT_PASSPHRASE", "wrong one")],
    );
    assert!(err.contains("wrong passphrase"), "{err}");

    let file = dir.path().join("pass.txt");
    std::fs::write(&file, "right one\n").unwrap();
    let from_file = ok(
        &store,
        &["conv", "ls", "--json"],
        &[("CHATVAULT_PASSPHRASE_FILE", file.to_str().unwrap())],
    );
    assert!(from_file.contains(&conv));

    // There is no flag that takes a passphrase.
    let out = run(&store, &["conv", "ls", "--passphrase", "right one"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn passwd_changes_the_passphrase_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("v.db");
    let old = [("CHATVAULT_PASSPHRASE", "old secret")];
    ok(&store, &["init", "--encrypt"], &old);
    let conv = ok(&store, &["conv", "new", "--title", "survives"], &old);
    ok(
        &store,
        &["msg", "add", &conv, "--role", "user", "--content", "hi"],
        &old,
    );

    let err = fails(&store, &["passwd"], &old);
    assert!(err.contains("CHATVAULT_NEW_PASSPHRASE"), "{err}");
    let err = fails(
        &store,
        &["passwd"],
        &[
            ("CHATVAULT_PASSPHRASE", "not the old one"),
            ("CHATVAULT_NEW_PASSPHRASE", "new secret"),
        ],
    );
    assert!(err.contains("wrong passphrase"), "{err}");

    assert!(ok(
        &store,
        &["passwd"],
        &[
            ("CHATVAULT_PASSPHRASE", "old secret"),
            ("CHATVAULT_NEW_PASSPHRASE", "new secret"),
        ],
    )
    .contains("changed"));
    let err = fails(&store, &["conv", "ls"], &old);
    assert!(err.contains("wrong passphrase"), "{err}");
    let new = [("CHATVAULT_PASSPHRASE", "new secret")];
    assert!(ok(&store, &["msg", "ls", &conv, "--json"], &new).contains("\"hi\""));

    // passwd on a plaintext vault explains itself.
    let plain = dir.path().join("plain.db");
    ok(&plain, &["init"], &[]);
    let err = fails(&plain, &["passwd"], &new);
    assert!(err.contains("not encrypted"), "{err}");
}

#[test]
fn passwd_rotate_key_then_rekey_keeps_everything_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rotating.db");
    let old = [("CHATVAULT_PASSPHRASE", "old secret")];
    ok(&store, &["init", "--encrypt"], &old);
    let conv = ok(&store, &["conv", "new", "--title", "kept"], &old);
    ok(
        &store,
        &["msg", "add", &conv, "--role", "user", "--content", "before"],
        &old,
    );
    let out = ok(
        &store,
        &["passwd", "--rotate-key"],
        &[
            ("CHATVAULT_PASSPHRASE", "old secret"),
            ("CHATVAULT_NEW_PASSPHRASE", "new secret"),
        ],
    );
    assert!(out.contains("data key rotated"), "{out}");
    let new = [("CHATVAULT_PASSPHRASE", "new secret")];
    ok(
        &store,
        &["msg", "add", &conv, "--role", "user", "--content", "after"],
        &new,
    );
    let out = ok(&store, &["rekey"], &new);
    assert_eq!(out, "re-sealed 2 of 3 records under the newest key");
    let listed = ok(&store, &["msg", "ls", &conv, "--json"], &new);
    assert!(
        listed.contains("\"before\"") && listed.contains("\"after\""),
        "{listed}"
    );
    assert_eq!(
        ok(&store, &["rekey"], &new),
        "re-sealed 0 of 3 records under the newest key"
    );
}
