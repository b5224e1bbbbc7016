//! Crash consistency: a writer process (`src/bin/crash_writer.rs`) writes to
//! an encrypted SQLite vault through the public API and is killed with
//! SIGKILL at seeded random moments, over and over; after each kill the
//! vault is checked against a model of what the writer acknowledged:
//! - `PRAGMA integrity_check` is `ok`;
//! - every acknowledged write is there, and the one operation in flight at
//!   the kill is either wholly there or wholly absent (a bulk write, an
//!   import, a retention run never shows in part); nothing else is there;
//! - no record is damaged, and the outbox matches the data: exactly the
//!   records changed since the writer last acknowledged the outbox (as a
//!   sync client does after a push) have a pending change, each at the
//!   record's current version (a deletion for a deleted record), and an
//!   acknowledged change never comes back;
//! - the device's clock never goes backwards: every write acknowledged
//!   after a restart is stamped above everything this device stamped
//!   before, although each restarted writer's wall clock starts up to
//!   30 s behind (imported records keep their own device's stamps, which
//!   a restarted clock need not exceed: writes to a record are stamped
//!   above that record's version whatever the clock says);
//! - the vault opens with the acknowledged passphrase (or, if a change was
//!   in flight, the new one).
//!
//! `CHATVAULT_CRASH_KILLS` sets the number of kills (default 300, about
//! 35 s alone on 2 cores; the vault grows run by run, so 1,000 take a few
//! minutes); `CHATVAULT_CRASH_SEED` the seed of the kill moments
//! and the writers' op mix (printed on failure; the kill moments also
//! depend on timing, so a seed narrows a failure down rather than replays
//! it exactly).

// SIGKILL, file modes and unlinking an open file are Unix semantics.
#![cfg(unix)]

use chatvault::testing::{fast_options, Snapshot, SplitMix64};
use chatvault::{ConversationId, Hlc, ManualClock, MessageId, Timestamp};
use chatvault::{Vault, VaultError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WRITER: &str = env!("CARGO_BIN_EXE_crash_writer");
const T0: i64 = 1_700_000_000_000;
/// How long a writer may go without printing a line.
const STALL: Duration = Duration::from_secs(60);

/// What the vault must show: the acknowledged state.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    conversations: BTreeMap<ConversationId, String>,
    messages: BTreeMap<MessageId, (ConversationId, String)>,
    /// Messages deleted one by one, with their conversation.
    deleted_messages: BTreeMap<MessageId, ConversationId>,
    passphrase: String,
    /// Records changed since the last acknowledgement: exactly these have
    /// a pending change.
    unsynced: BTreeSet<String>,
}

impl Model {
    fn shows(&self, s: &Snapshot) -> bool {
        let conversations: BTreeMap<_, _> = s
            .conversations
            .values()
            .map(|c| (c.id, c.title.clone()))
            .collect();
        let messages: BTreeMap<_, _> = s
            .messages
            .values()
            .map(|m| (m.id, (m.conversation_id, m.content.clone())))
            .collect();
        let pending: BTreeSet<String> = s.pending_ids().iter().map(|id| id.to_string()).collect();
        conversations == self.conversations && messages == self.messages && pending == self.unsynced
    }

    /// What differs between the model and the vault, for a failure message.
    fn diff(&self, s: &Snapshot) -> String {
        let mut out = Vec::new();
        for (id, title) in &self.conversations {
            match s.conversations.get(id) {
                Some(c) if &c.title == title => {}
                other => out.push(format!("conversation {id} {title:?}: vault has {other:?}")),
            }
        }
        for id in s
            .conversations
            .keys()
            .filter(|id| !self.conversations.contains_key(id))
        {
            out.push(format!("conversation {id} is in the vault only"));
        }
        for (id, (_, content)) in &self.messages {
            match s.messages.get(id) {
                Some(m) if &m.content == content => {}
                other => out.push(format!(
                    "message {id} {content:?}: vault has {:?}",
                    other.map(|m| &m.content)
                )),
            }
        }
        for m in s
            .messages
            .values()
            .filter(|m| !self.messages.contains_key(&m.id))
        {
            out.push(format!(
                "message {} {:?} is in the vault only",
                m.id, m.content
            ));
        }
        let pending: BTreeSet<String> = s.pending_ids().iter().map(|id| id.to_string()).collect();
        for id in self.unsynced.difference(&pending) {
            out.push(format!(
                "{id} changed since the last acknowledgement but is not pending"
            ));
        }
        for id in pending.difference(&self.unsynced) {
            out.push(format!(
                "{id} is pending but its change was acknowledged (or never made)"
            ));
        }
        out.join("\n")
    }

    fn changed(&mut self, id: impl ToString) {
        self.unsynced.insert(id.to_string());
    }

    /// A conversation's deletion takes its messages' pending changes with
    /// it (its one tombstone syncs them all).
    fn delete_conversation(&mut self, id: ConversationId) {
        self.conversations.remove(&id);
        for (m, _) in self.messages.iter().filter(|(_, (c, _))| *c == id) {
            self.unsynced.remove(&m.to_string());
        }
        for (m, _) in self.deleted_messages.iter().filter(|(_, c)| **c == id) {
            self.unsynced.remove(&m.to_string());
        }
        self.messages.retain(|_, (c, _)| *c != id);
        self.deleted_messages.retain(|_, c| *c != id);
        self.changed(id);
    }

    /// The model after `begin` (with `ok`'s answer if it was acknowledged;
    /// otherwise ids the writer had not learnt yet are looked up in
    /// `seen` by their unique content).
    fn after(&self, begin: &Value, ok: Option<&Value>, seen: &Snapshot) -> Model {
        let mut m = self.clone();
        match begin["op"].as_str().unwrap_or_default() {
            "conv" => {
                let title = begin["title"].as_str().unwrap_or_default().to_owned();
                let id = match ok {
                    Some(ok) => id(&ok["id"]),
                    None => match seen.conversations.values().find(|c| c.title == title) {
                        Some(c) => c.id,
                        None => return m.with_conversation_placeholder(title),
                    },
                };
                m.conversations.insert(id, title);
                m.changed(id);
            }
            "add" => {
                let conv = id(&begin["conv"]);
                let contents: Vec<String> = strings(&begin["contents"]);
                for (k, content) in contents.iter().enumerate() {
                    let message = match ok {
                        Some(ok) => id(&ok["ids"][k]),
                        None => match seen.messages.values().find(|x| &x.content == content) {
                            Some(x) => x.id,
                            // Not written: a placeholder no vault shows.
                            None => MessageId::from_bytes([0xff; 16]),
                        },
                    };
                    m.messages.insert(message, (conv, content.clone()));
                    m.changed(message);
                }
            }
            "edit" => {
                let message = id(&begin["id"]);
                if let Some(entry) = m.messages.get_mut(&message) {
                    entry.1 = begin["content"].as_str().unwrap_or_default().to_owned();
                }
                m.changed(message);
            }
            "del_msg" => {
                let message = id(&begin["id"]);
                if let Some((conv, _)) = m.messages.remove(&message) {
                    m.deleted_messages.insert(message, conv);
                }
                m.changed(message);
            }
            "del_conv" => m.delete_conversation(id(&begin["id"])),
            "retention" => {
                let planned = ok.map_or(&begin["delete"], |ok| &ok["delete"]);
                for conv in planned.as_array().into_iter().flatten() {
                    m.delete_conversation(id(conv));
                }
            }
            "import" => {
                let conv = id(&begin["conv"]);
                m.conversations
                    .insert(conv, begin["title"].as_str().unwrap_or_default().into());
                m.changed(conv);
                for message in begin["messages"].as_array().into_iter().flatten() {
                    let content = message["content"].as_str().unwrap_or_default();
                    let message_id: MessageId = id(&message["id"]);
                    m.messages.insert(message_id, (conv, content.to_owned()));
                    m.changed(message_id);
                }
            }
            "ack" => {
                for entity in strings(&begin["entities"]) {
                    m.unsynced.remove(&entity);
                }
            }
            "passwd" => m.passphrase = begin["to"].as_str().unwrap_or_default().to_owned(),
            other => panic!("unknown op {other}"),
        }
        m
    }

    /// A model no vault matches (a conversation under a nil id).
    fn with_conversation_placeholder(mut self, title: String) -> Model {
        self.conversations
            .insert(ConversationId::from_bytes([0xff; 16]), title);
        self
    }
}

fn id<T: FromStr>(v: &Value) -> T
where
    T::Err: std::fmt::Debug,
{
    v.as_str().unwrap_or_default().parse().expect("an id")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn integrity_check(path: &Path) -> Result<(), String> {
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    (verdict == "ok")
        .then_some(())
        .ok_or(format!("integrity_check: {verdict}"))
}

async fn open(path: &Path, passphrase: &str) -> Result<Vault, VaultError> {
    Vault::builder()
        .sqlite(path)
        .passphrase(passphrase)
        .options(fast_options(Arc::new(ManualClock::new(Timestamp(T0)))))
        .open()
        .await
}

/// One writer's life: what it printed before the kill.
struct Life {
    /// `(begin, ok)` pairs, in order; the last may lack its `ok`.
    ops: Vec<(Value, Option<Value>)>,
    killed: bool,
}

fn run_writer(
    path: &Path,
    passphrase: &str,
    start_ms: i64,
    seed: u64,
    run: u64,
    rng: &mut SplitMix64,
) -> Result<Life, String> {
    let mut child = Command::new(WRITER)
        .args([
            path.to_str().expect("utf-8 path"),
            passphrase,
            &start_ms.to_string(),
            &seed.to_string(),
            &format!("r{run}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    // Lines come through a thread, so a writer that stalls (a deadlock, a
    // lock never released) fails the test instead of hanging it.
    let stdout = child.stdout.take().expect("stdout");
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                // A line the kill cut short (no newline) was never finished:
                // its "begin" had not started the operation, its "ok" leaves
                // the operation in flight — which the model allows.
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    if lines.send(line.trim_end().to_owned()).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    // The kill moment: after 0-24 acknowledged operations, then 0-3 ms
    // more (mid-operation, or between operations).
    let acks_before_kill = rng.below(25);
    let extra = Duration::from_micros(rng.below(3000));
    let mut ops: Vec<(Value, Option<Value>)> = Vec::new();
    let mut acks = 0;
    while acks < acks_before_kill {
        match received.recv_timeout(STALL) {
            Ok(line) => acks += u64::from(record(&line, &mut ops)),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the writer made no progress for {STALL:?}"));
            }
        }
    }
    std::thread::sleep(extra);
    let killed = child.kill().is_ok();
    let status = child.wait().expect("wait for the writer");
    // Lines printed before the kill are still in the pipe: the reader
    // ends at its end.
    let _ = reader.join();
    for line in received.try_iter() {
        record(&line, &mut ops);
    }
    if status.success() || status.code().is_some() {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
        return Err(format!("the writer exited by itself ({status}): {err}"));
    }
    Ok(Life { ops, killed })
}

/// Adds a protocol line to `ops`; true for an acknowledgement.
fn record(line: &str, ops: &mut Vec<(Value, Option<Value>)>) -> bool {
    let Some((kind, json)) = line.trim().split_once(' ') else {
        return false;
    };
    let value: Value = serde_json::from_str(json).expect("a JSON protocol line");
    match kind {
        "begin" => {
            ops.push((value, None));
            false
        }
        "ok" => {
            let last = ops.last_mut().expect("ok after begin");
            assert!(last.1.is_none(), "two oks for one begin");
            last.1 = Some(value);
            true
        }
        _ => false,
    }
}

#[derive(Debug, Default)]
struct Figures {
    kills: u64,
    acknowledged: u64,
    in_flight_committed: u64,
    in_flight_absent: u64,
    passphrase_changes: u64,
    retention_runs: u64,
    imports: u64,
    outbox_acknowledgements: u64,
}

#[tokio::test(flavor = "current_thread")]
async fn acknowledged_writes_survive_sigkill_and_nothing_half_written_shows() {
    let kills: u64 = std::env::var("CHATVAULT_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("CHATVAULT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c4a5);
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vault.db");
    let mut rng = SplitMix64(seed);
    let mut model = Model {
        passphrase: "pass-initial".into(),
        ..Model::default()
    };
    // The highest stamp this device issued so far, and the device (its id
    // is in every stamp; imported records keep their own device's).
    let mut floor: Option<Hlc> = None;
    let mut device = None;
    let mut figures = Figures::default();
    for run in 0..kills {
        let fail = |what: String| -> ! {
            panic!("CHATVAULT_CRASH_SEED={seed}, run {run}: {what}");
        };
        // Restart behind the newest stamp, as a device whose clock
        // stepped back (within the re-base window, so the vault resumes
        // from its stored clock mark).
        let start_ms = floor.map_or(T0, |h| {
            (h.wall_ms() as i64 - rng.below(30_000) as i64).max(T0)
        });
        let life = run_writer(
            &path,
            &model.passphrase,
            start_ms,
            rng.next_u64(),
            run,
            &mut rng,
        )
        .unwrap_or_else(|e| fail(e));
        if life.killed {
            figures.kills += 1;
        }
        if let Err(e) = integrity_check(&path) {
            fail(e);
        }

        // The acknowledged state, then the one operation in flight.
        let mut in_flight = None;
        let mut last_version = floor;
        for (begin, ok) in &life.ops {
            let Some(ok) = ok else {
                in_flight = Some(begin.clone());
                break;
            };
            figures.acknowledged += 1;
            match begin["op"].as_str() {
                Some("passwd") => figures.passphrase_changes += 1,
                Some("retention") => figures.retention_runs += 1,
                Some("import") => figures.imports += 1,
                Some("ack") => figures.outbox_acknowledgements += 1,
                _ => {}
            }
            let versions = ok["versions"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![ok["version"].clone()]);
            for v in versions.iter().filter_map(Value::as_str) {
                let v = Hlc::from_str(v).expect("a stamp");
                if *device.get_or_insert(v.device()) != v.device() {
                    fail(format!(
                        "{v} is not stamped by this vault's device {device:?}"
                    ));
                }
                if last_version.is_some_and(|l| v <= l) {
                    fail(format!(
                        "the clock went backwards: {v} acknowledged after {last_version:?}"
                    ));
                }
                last_version = Some(v);
            }
            model = model.after(begin, Some(ok), &Snapshot::default());
        }

        let passwd_in_flight = in_flight
            .as_ref()
            .filter(|b| b["op"] == "passwd")
            .map(|b| b["to"].as_str().unwrap_or_default().to_owned());
        let (vault, opened_with) = match open(&path, &model.passphrase).await {
            Ok(v) => (v, model.passphrase.clone()),
            Err(VaultError::WrongPassphrase) if passwd_in_flight.is_some() => {
                let to = passwd_in_flight.clone().unwrap_or_default();
                match open(&path, &to).await {
                    Ok(v) => (v, to),
                    Err(e) => fail(format!("neither passphrase opens the vault: {e:?}")),
                }
            }
            Err(e) => fail(format!("reopen with the acknowledged passphrase: {e:?}")),
        };
        let snapshot = match Snapshot::of(&vault).await {
            Ok(s) => s,
            Err(e) => fail(format!("read back: {e:?}")),
        };
        drop(vault);

        model = match &in_flight {
            None if model.shows(&snapshot) => model,
            None => fail(format!(
                "the vault differs from the acknowledged writes:\n{}",
                model.diff(&snapshot)
            )),
            Some(_) if passwd_in_flight.is_some() => {
                if !model.shows(&snapshot) {
                    fail(format!(
                        "the vault differs from the acknowledged writes (a passphrase \
                         change was in flight):\n{}",
                        model.diff(&snapshot)
                    ));
                }
                if opened_with == model.passphrase {
                    figures.in_flight_absent += 1;
                } else {
                    figures.in_flight_committed += 1;
                }
                Model {
                    passphrase: opened_with,
                    ..model
                }
            }
            Some(begin) => {
                let after = model.after(begin, None, &snapshot);
                if model.shows(&snapshot) {
                    figures.in_flight_absent += 1;
                    model
                } else if after.shows(&snapshot) {
                    figures.in_flight_committed += 1;
                    after
                } else {
                    fail(format!(
                        "the operation in flight shows in part: {begin}\nagainst the state before it:\n{}\nagainst the state after it:\n{}",
                        model.diff(&snapshot),
                        model.after(begin, None, &snapshot).diff(&snapshot)
                    ))
                }
            }
        };

        // With `Model::shows` (exactly the unsynced records are pending),
        // this proves every pending change is the record's current state.
        let problems = snapshot.outbox_problems();
        if !problems.is_empty() {
            fail(format!("outbox does not match the data: {problems:#?}"));
        }
        let own = snapshot
            .versions()
            .filter(|v| Some(v.device()) == device)
            .max();
        floor = [floor, last_version, own].into_iter().flatten().max();
    }
    let elapsed = started.elapsed();
    // The figures RELIABILITY.md quotes.
    eprintln!(
        "crash: seed {seed}, {} kills survived, {figures:?}, {:.1} s",
        figures.kills,
        elapsed.as_secs_f64()
    );
    assert!(
        figures.kills * 10 >= kills * 9,
        "most runs were killed: {figures:?}"
    );
    assert!(
        figures.acknowledged > kills,
        "writers got work done: {figures:?}"
    );
}
