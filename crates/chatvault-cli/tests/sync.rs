//! `chatvault sync` end to end: two devices (two vault files, two CLI
//! processes each time) converge through a real server, and the server's
//! database never holds their plaintext.

use chatvault_server::DatabaseUrl;
use std::path::Path;

mod common;

use common::{json, ok, ok_as, run, run_with, RestartableServer, PASS};
use serde_json::Value;
use std::process::Output;

#[test]
fn two_devices_converge_through_the_server_without_it_seeing_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let server = RestartableServer::start(DatabaseUrl::Sqlite(dir.path().join("server.db")));
    let url = server.url();
    let a = dir.path().join("laptop.db");
    let b = dir.path().join("phone.db");

    ok(&a, &["init", "--encrypt"]);
    let conv = ok(&a, &["conv", "new", "--title", "Holiday QZX"]);
    ok(
        &a,
        &[
            "msg",
            "add",
            &conv,
            "--role",
            "user",
            "--content",
            "book the train KVW",
        ],
    );
    let report = json(
        &a,
        &[
            "sync", "register", "--server", &url, "--user", "ada", "--json",
        ],
    );
    assert_eq!(report["pushed"], 2, "{report}");
    assert_eq!(json(&a, &["sync", "status", "--json"])["pending"], 0);

    // A new device with the same passphrase joins and reads everything.
    let joined = json(
        &b,
        &["sync", "join", "--server", &url, "--user", "ada", "--json"],
    );
    assert_eq!(joined["pulled"], 2, "{joined}");
    let msgs = json(&b, &["msg", "ls", &conv, "--json"]);
    assert_eq!(msgs[0]["content"], "book the train KVW");

    // B writes; both sync; A sees it.
    ok(
        &b,
        &[
            "msg",
            "add",
            &conv,
            "--role",
            "assistant",
            "--content",
            "done: 9:40 from Lisbon",
        ],
    );
    assert_eq!(json(&b, &["sync", "now", "--json"])["pushed"], 1);
    assert_eq!(json(&a, &["sync", "now", "--json"])["pulled"], 1);
    let msgs = json(&a, &["msg", "ls", &conv, "--json"]);
    assert_eq!(msgs.as_array().unwrap().len(), 2);
    assert_eq!(msgs[1]["content"], "done: 9:40 from Lisbon");
    assert!(ok(&a, &["sync", "status"]).contains("ada"));

    // The server only ever held ciphertext.
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("server.db") {
            raw.extend(std::fs::read(path).unwrap());
        }
    }
    assert!(!raw.is_empty());
    for secret in ["Holiday QZX", "book the train KVW", "Lisbon", PASS] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} is on the server"
        );
    }
}

#[test]
fn sync_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = RestartableServer::start(DatabaseUrl::Sqlite(dir.path().join("server.db")));
    let url = server.url();
    let a = dir.path().join("a.db");
    ok(&a, &["init", "--encrypt"]);

    let fail = |store: &Path, args: &[&str], pass: &str| {
        let out = run(store, args, pass);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("error: ") && !err.contains("panicked"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = fail(&a, &["sync", "now"], PASS);
    assert!(err.contains("not connected"), "{err}");

    ok(&a, &["sync", "register", "--server", &url, "--user", "bo"]);
    let err = fail(
        &a,
        &["sync", "register", "--server", &url, "--user", "bo"],
        PASS,
    );
    assert!(err.contains("taken") || err.contains("exists"), "{err}");

    let b = dir.path().join("b.db");
    let err = fail(
        &b,
        &["sync", "join", "--server", &url, "--user", "bo"],
        "wrong passphrase!",
    );
    assert!(
        err.to_lowercase().contains("passphrase") || err.contains("credentials"),
        "{err}"
    );

    let plain = dir.path().join("plain.db");
    ok(&plain, &["init"]);
    let err = fail(
        &plain,
        &["sync", "register", "--server", &url, "--user", "cy"],
        PASS,
    );
    assert!(err.contains("encrypted"), "{err}");

    let err = fail(
        &a,
        &[
            "sync",
            "login",
            "--server",
            "http://127.0.0.1:1",
            "--user",
            "bo",
        ],
        PASS,
    );
    assert!(err.contains("cannot sign in"), "{err}");
}

/// A vault linked to one account is not silently moved to another: `sync
/// register --user other` refuses until `sync unlink`; status shows
/// pending and parked counts; logout works; dead-letters lists nothing.
#[test]
fn a_linked_vault_refuses_another_account_until_unlinked() {
    let dir = tempfile::tempdir().unwrap();
    let server = RestartableServer::start(DatabaseUrl::Sqlite(dir.path().join("server.db")));
    let url = server.url();
    let a = dir.path().join("a.db");
    ok(&a, &["init", "--encrypt"]);
    ok(&a, &["conv", "new", "--title", "mine"]);
    ok(&a, &["sync", "register", "--server", &url, "--user", "una"]);
    ok(&a, &["conv", "new", "--title", "after"]);

    let out = run(
        &a,
        &["sync", "register", "--server", &url, "--user", "vera"],
        PASS,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linked to account una") && err.contains("sync unlink"),
        "{err}"
    );
    let status = json(&a, &["sync", "status", "--json"]);
    assert_eq!(
        (
            status["user"].as_str(),
            status["pending"].as_u64(),
            status["parked"].as_u64()
        ),
        (Some("una"), Some(1), Some(0)),
        "{status}"
    );
    assert_eq!(
        json(&a, &["sync", "dead-letters", "--json"]),
        serde_json::json!([])
    );
    ok(&a, &["sync", "logout"]);

    ok(&a, &["sync", "unlink"]);
    assert!(ok(&a, &["sync", "status"]).contains("not connected"));
    let report = json(
        &a,
        &[
            "sync", "register", "--server", &url, "--user", "vera", "--json",
        ],
    );
    assert_eq!(
        report["pushed"], 2,
        "everything goes to the new account: {report}"
    );
}

/// Every command reuses the device's one session (sealed in the vault):
/// ten `sync now` leave one session per device, not ten; `sync sessions`
/// lists them, `--revoke-others` signs the other device out, and that
/// device signs in again with its passphrase on its next command.
#[test]
fn each_device_keeps_one_session_across_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = RestartableServer::start(DatabaseUrl::Sqlite(dir.path().join("server.db")));
    let url = server.url();
    let a = dir.path().join("laptop.db");
    let b = dir.path().join("phone.db");
    ok(&a, &["init", "--encrypt"]);
    ok(&a, &["sync", "register", "--server", &url, "--user", "ada"]);
    ok(&b, &["sync", "join", "--server", &url, "--user", "ada"]);
    for _ in 0..5 {
        ok(&a, &["sync", "now"]);
        ok(&b, &["sync", "now"]);
    }
    let listed = json(&a, &["sync", "sessions", "--json"]);
    let sessions = listed.as_array().expect("a list");
    assert_eq!(sessions.len(), 2, "one session per device: {listed}");
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{listed}"
    );

    // The token is sealed: the vault file does not hold it in the clear.
    let current_id = sessions.iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = std::fs::read(&a).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("\"token\""));

    let revoked = json(&a, &["sync", "sessions", "--revoke-others", "--json"]);
    assert_eq!(revoked["revoked"], 1);
    let after = json(&a, &["sync", "sessions", "--json"]);
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
    assert_eq!(
        after[0]["id"],
        current_id.as_str(),
        "this device kept its session"
    );

    // The revoked device renews its session on its next command.
    ok(&b, &["sync", "now"]);
    assert_eq!(
        json(&a, &["sync", "sessions", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Logout ends this device's session and forgets it; the next command
    // signs in again (one new session, not one per command).
    assert!(ok(&b, &["sync", "logout"]).contains("logged out"));
    assert_eq!(
        json(&a, &["sync", "sessions", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    ok(&b, &["sync", "now"]);
    ok(&b, &["sync", "now"]);
    assert_eq!(
        json(&a, &["sync", "sessions", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const NEW_PASS: &str = "a brand new passphrase";

/// `passwd` on a linked vault changes the account first: afterwards the
/// old passphrase joins nothing, the new one joins and reads everything,
/// and a device that still had the old one is signed out until it uses the
/// new one. `--rotate-key` reaches the account too: records written after
/// it read on every device.
#[test]
fn passwd_on_a_linked_vault_changes_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let server = RestartableServer::start(DatabaseUrl::Sqlite(dir.path().join("server.db")));
    let url = server.url();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    ok(&a, &["init", "--encrypt"]);
    let conv = ok(&a, &["conv", "new", "--title", "before"]);
    ok(&a, &["sync", "register", "--server", &url, "--user", "ivy"]);
    ok(&b, &["sync", "join", "--server", &url, "--user", "ivy"]);

    let out = run_with(
        &a,
        &["passwd"],
        PASS,
        &[("CHATVAULT_NEW_PASSPHRASE", NEW_PASS)],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("account ivy"));

    // The old passphrase neither joins nor signs in; the new one does both.
    let fresh = dir.path().join("fresh.db");
    let out = run(
        &fresh,
        &["sync", "join", "--server", &url, "--user", "ivy"],
        PASS,
    );
    assert!(!out.status.success(), "joined with the old passphrase");
    assert!(!fresh.exists(), "a failed join left a vault");
    ok_as(
        &fresh,
        &["sync", "join", "--server", &url, "--user", "ivy"],
        NEW_PASS,
    );
    assert!(ok_as(&fresh, &["conv", "ls"], NEW_PASS).contains("before"));
    // A's vault and its sync follow the new passphrase.
    assert!(!run(&a, &["conv", "ls"], PASS).status.success());
    ok_as(&a, &["sync", "now"], NEW_PASS);
    // B, still on the old passphrase, was signed out and cannot sign in;
    // `sync join` on its store with the new one recovers it.
    let out = run(&b, &["sync", "now"], PASS);
    assert!(!out.status.success(), "B synced with the old passphrase");
    ok_as(
        &b,
        &["sync", "join", "--server", &url, "--user", "ivy"],
        NEW_PASS,
    );
    assert!(ok_as(&b, &["conv", "ls"], NEW_PASS).contains("before"));
    assert!(!run(&b, &["conv", "ls"], PASS).status.success());

    // A rotation on the linked vault (same passphrase) reaches the account.
    let out = run_with(
        &a,
        &["passwd", "--rotate-key"],
        NEW_PASS,
        &[("CHATVAULT_NEW_PASSPHRASE", NEW_PASS)],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rotated here and on the account"));
    ok_as(
        &a,
        &[
            "msg",
            "add",
            &conv,
            "--role",
            "user",
            "--content",
            "sealed under the new key",
        ],
        NEW_PASS,
    );
    ok_as(&a, &["sync", "now"], NEW_PASS);
    // B signs in again, adopts the rotated envelope and reads the message
    // sealed under the new key.
    ok_as(&b, &["sync", "now"], NEW_PASS);
    let msgs: Value =
        serde_json::from_str(&ok_as(&b, &["msg", "ls", &conv, "--json"], NEW_PASS)).unwrap();
    assert_eq!(msgs[0]["content"], "sealed under the new key", "{msgs}");
}

/// Offline, `passwd` on a linked vault refuses and changes nothing: the
/// vault and the account both still take the old passphrase only.
#[test]
fn passwd_on_a_linked_vault_offline_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let mut server = RestartableServer::start(DatabaseUrl::Sqlite(db.clone()));
    let url = server.url();
    let a = dir.path().join("a.db");
    ok(&a, &["init", "--encrypt"]);
    ok(&a, &["conv", "new", "--title", "kept"]);
    ok(&a, &["sync", "register", "--server", &url, "--user", "jo"]);
    server.stop();

    for args in [&["passwd"][..], &["passwd", "--rotate-key"][..]] {
        let out = run_with(&a, args, PASS, &[("CHATVAULT_NEW_PASSPHRASE", NEW_PASS)]);
        assert!(!out.status.success(), "{args:?} succeeded offline");
        let err = stderr_of(&out);
        assert!(
            err.contains("account jo") && err.contains("nothing was changed"),
            "{err}"
        );
    }
    assert!(ok(&a, &["conv", "ls"]).contains("kept"));
    assert!(!run(&a, &["conv", "ls"], NEW_PASS).status.success());

    let server = RestartableServer::start(DatabaseUrl::Sqlite(db));
    let url = server.url();
    let b = dir.path().join("b.db");
    assert!(!run(
        &b,
        &["sync", "join", "--server", &url, "--user", "jo"],
        NEW_PASS
    )
    .status
    .success());
    ok(&b, &["sync", "join", "--server", &url, "--user", "jo"]);
    assert!(ok(&b, &["conv", "ls"]).contains("kept"));
}

/// A device whose saved session and key the server refuses (the account's
/// passphrase was changed elsewhere, then changed back) signs in with the
/// passphrase it was given, adopts the account's new envelope and syncs —
/// `sync now` and `sync sessions` alike, in one command each.
#[test]
fn a_refused_saved_session_signs_in_again_with_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let server = RestartableServer::start(DatabaseUrl::Sqlite(dir.path().join("server.db")));
    let url = server.url();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    ok(&a, &["init", "--encrypt"]);
    ok(&a, &["sync", "register", "--server", &url, "--user", "lu"]);
    ok(&b, &["sync", "join", "--server", &url, "--user", "lu"]);

    // There and back: the passphrase is the same, its salt (and so the key
    // B saved with its session) is not.
    for (from, to) in [(PASS, NEW_PASS), (NEW_PASS, PASS)] {
        let out = run_with(&a, &["passwd"], from, &[("CHATVAULT_NEW_PASSPHRASE", to)]);
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    let conv = ok(&a, &["conv", "new", "--title", "after the change"]);
    ok(&a, &["sync", "now"]);

    ok(&b, &["sync", "now"]);
    assert!(
        ok(&b, &["conv", "ls"]).contains("after the change"),
        "{conv}"
    );
    let sessions = json(&b, &["sync", "sessions", "--json"]);
    assert_eq!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["current"] == true)
            .count(),
        1,
        "{sessions}"
    );
}
