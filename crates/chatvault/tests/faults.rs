//! Fault injection: storage that fails under the vault.
//!
//! - The sweep runs one scenario (writes, bulk writes, edits, deletions, a
//!   retention run, an import, a passphrase change, a data-key rotation
//!   and re-sealing, compaction) on an
//!   encrypted SQLite vault through a [`FailingStore`], once to count its
//!   store calls K, then once for every N in 1..=K with call N failing.
//!   Each fault must come back as an `Err` carrying the injected kind (no
//!   panic, no silent success), and the vault reopened afterwards must
//!   show what the in-memory reference vault (the memory store, run
//!   through the same steps without faults) showed after the last step
//!   that committed, and keep working; the handle that met the fault then
//!   runs the rest of the scenario, and the vault must still be sound.
//! - A full disk (SQLite's `max_page_count` through the vault's quota):
//!   `storage_full`, everything written before intact, deletions still
//!   possible.
//! - A read-only vault file: a clear error on writes (or on opening), never
//!   a damaged file.
//! - The vault file deleted or replaced under an open vault: the open
//!   handle fails clearly or goes on with its own (unlinked) file, and the
//!   new file at the path is never written to by it.

// SIGKILL, file modes and unlinking an open file are Unix semantics.
#![cfg(unix)]

use chatvault::testing::{fast_options, Contents, FailingStore, Snapshot};
use chatvault::{
    ConversationId, ExportOptions, ImportOptions, ManualClock, MemoryStore, MessageId,
    MessageUpdate, NewConversation, NewMessage, RetentionMode, RetentionPolicy, Role,
    SqliteOptions, SqliteStore, Store, StoreError, Timestamp, Vault, VaultError,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const OLD: &str = "old passphrase";
const NEW: &str = "new passphrase";

/// The steps of the sweep's scenario, in order; step 0 opens (creates) the
/// vault.
const STEPS: usize = 19;
/// The retention run.
const RETENTION_STEP: usize = 11;
/// The step that changes the passphrase from [`OLD`] to [`NEW`].
const PASSWD_STEP: usize = 13;
/// The step that rotates the data key.
const ROTATE_STEP: usize = 15;

/// One run of the scenario on one store.
struct Scenario {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    vault: Option<Vault>,
    import: Vec<u8>,
    alpha: Option<ConversationId>,
    beta: Option<ConversationId>,
    gamma: Option<ConversationId>,
    first: Option<MessageId>,
    second: Option<MessageId>,
}

fn missing() -> VaultError {
    VaultError::Internal("an earlier step did not run")
}

fn some<T: Copy>(id: &Option<T>) -> chatvault::Result<T> {
    id.ok_or_else(missing)
}

impl Scenario {
    fn new(store: Arc<dyn Store>, import: Vec<u8>) -> Self {
        Self {
            store,
            clock: Arc::new(ManualClock::new(T0)),
            vault: None,
            import,
            alpha: None,
            beta: None,
            gamma: None,
            first: None,
            second: None,
        }
    }

    fn vault(&self) -> chatvault::Result<&Vault> {
        self.vault.as_ref().ok_or_else(missing)
    }

    async fn step(&mut self, i: usize) -> chatvault::Result<()> {
        self.clock.advance(1_000);
        match i {
            0 => {
                let options = fast_options(self.clock.clone());
                self.vault = Some(Vault::open_encrypted(self.store.clone(), OLD, options).await?);
            }
            1 => {
                let c = self
                    .vault()?
                    .create_conversation(NewConversation::titled("alpha"))
                    .await?;
                self.alpha = Some(c.id);
            }
            2 => {
                let m = self
                    .vault()?
                    .add_message(some(&self.alpha)?, NewMessage::new(Role::User, "a1"))
                    .await?;
                self.first = Some(m.id);
            }
            3 => {
                let news = (2..7)
                    .map(|k| NewMessage::new(Role::Assistant, format!("a{k}")))
                    .collect();
                let written = self.vault()?.add_messages(some(&self.alpha)?, news).await?;
                self.second = Some(written[0].id);
            }
            4 => {
                let update = MessageUpdate {
                    content: Some("a1 edited".into()),
                    metadata: None,
                };
                self.vault()?
                    .update_message(some(&self.first)?, update)
                    .await?;
            }
            5 => self.vault()?.delete_message(some(&self.second)?).await?,
            6 => {
                let c = self
                    .vault()?
                    .create_conversation(NewConversation::titled("beta"))
                    .await?;
                self.beta = Some(c.id);
            }
            7 => {
                let news = vec![
                    NewMessage::new(Role::User, "b1"),
                    NewMessage::new(Role::Assistant, "b2"),
                ];
                self.vault()?.add_messages(some(&self.beta)?, news).await?;
            }
            8 => {
                let c = self
                    .vault()?
                    .create_conversation(NewConversation::titled("gamma"))
                    .await?;
                self.gamma = Some(c.id);
            }
            9 => {
                self.vault()?
                    .add_message(some(&self.gamma)?, NewMessage::new(Role::User, "g1"))
                    .await?;
            }
            10 => self.vault()?.delete_conversation(some(&self.beta)?).await?,
            RETENTION_STEP => {
                // Keeps gamma (the most recently active), deletes alpha.
                let policy = RetentionPolicy {
                    max_conversations: Some(1),
                    ..RetentionPolicy::default()
                };
                self.vault()?
                    .run_retention(&policy, RetentionMode::Apply)
                    .await?;
            }
            12 => {
                let report = self
                    .vault()?
                    .import(self.import.clone(), ImportOptions::default())
                    .await?;
                assert_eq!(report.imported, 4, "{report:?}");
            }
            PASSWD_STEP => self.vault()?.change_passphrase(OLD, NEW).await?,
            14 => {
                self.vault()?
                    .add_message(some(&self.gamma)?, NewMessage::new(Role::User, "g2"))
                    .await?;
            }
            ROTATE_STEP => self.vault()?.rotate_data_key(NEW).await?,
            16 => {
                self.vault()?
                    .add_message(some(&self.gamma)?, NewMessage::new(Role::User, "g3"))
                    .await?;
            }
            17 => {
                let report = self.vault()?.rekey(None).await?;
                assert!(report.damaged.is_empty(), "{report:?}");
            }
            18 => {
                self.vault()?.compact().await?;
            }
            _ => unreachable!("{STEPS} steps"),
        }
        Ok(())
    }
}

/// An export file with one conversation of three messages, from another
/// vault.
async fn import_file() -> Vec<u8> {
    let clock = Arc::new(ManualClock::new(T0));
    let source = Vault::open(Arc::new(MemoryStore::new()), fast_options(clock))
        .await
        .expect("a memory vault");
    let c = source
        .create_conversation(NewConversation::titled("imported"))
        .await
        .expect("create");
    let news = (1..4)
        .map(|k| NewMessage::new(Role::User, format!("i{k}")))
        .collect();
    source.add_messages(c.id, news).await.expect("add");
    source
        .export(Vec::new(), ExportOptions::default())
        .await
        .expect("export")
        .0
}

async fn sqlite(path: &Path) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(path, SqliteOptions::default())
            .await
            .expect("open the SQLite file"),
    )
}

fn integrity_check(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("open for integrity_check");
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(verdict, "ok");
}

/// What the reference vault (memory store, no faults) shows after each
/// number of completed steps: `reference[j]` is the state after steps
/// `0..j`.
async fn reference(import: &[u8]) -> Vec<Contents> {
    let mut run = Scenario::new(Arc::new(MemoryStore::new()), import.to_vec());
    let mut states = vec![Contents::default()];
    for i in 0..STEPS {
        run.step(i).await.expect("the reference run has no faults");
        let snapshot = Snapshot::of(run.vault().expect("opened"))
            .await
            .expect("read the reference");
        assert!(snapshot.outbox_problems().is_empty());
        assert!(snapshot.not_pending().is_empty());
        states.push(snapshot.contents());
    }
    let kept = |j: usize| states[j].records.len();
    assert_eq!(kept(RETENTION_STEP + 1), 1, "retention deletes alpha");
    assert_eq!(kept(RETENTION_STEP), 2);
    states
}

#[tokio::test(flavor = "current_thread")]
async fn every_store_call_failing_in_turn_leaves_the_last_committed_state() {
    let started = Instant::now();
    let import = import_file().await;
    let reference = reference(&import).await;
    let dir = tempfile::tempdir().expect("temp dir");

    // Count the scenario's store calls.
    let path = dir.path().join("count.db");
    let counting = Arc::new(FailingStore::shared(sqlite(&path).await));
    let mut run = Scenario::new(counting.clone(), import.clone());
    // The step each call belongs to: `steps_of[n - 1]`.
    let mut steps_of = Vec::new();
    for i in 0..STEPS {
        run.step(i).await.expect("no fault injected");
        steps_of.resize(counting.calls() as usize, i);
    }
    let total = counting.calls();
    let snapshot = Snapshot::of(run.vault().expect("opened"))
        .await
        .expect("read");
    assert_eq!(
        snapshot.contents(),
        reference[STEPS],
        "SQLite agrees with memory"
    );
    drop(run);

    let writes = counting.write_calls();
    let faults: Vec<(u64, bool)> = (1..=total)
        .map(|n| (n, false))
        .chain(writes.iter().map(|&n| (n, true)))
        .collect();
    let mut faults_by_step = vec![0u32; STEPS];
    let mut committed_then_failed = Vec::new();
    let mut absorbed = Vec::new();
    for &(n, after) in &faults {
        let path = dir.path().join(format!("fault-{n}-{after}.db"));
        let step = steps_of[n as usize - 1];
        let faulted = Fault { n, after, step };
        match one_fault(&path, faulted, &import, &reference, total).await {
            Outcome::Committed => committed_then_failed.push((n, after, step)),
            Outcome::RolledBack => {}
            Outcome::Absorbed => absorbed.push((n, after, step)),
        }
        faults_by_step[step] += 1;
        let _ = std::fs::remove_file(&path);
    }
    eprintln!(
        "faults: {total} store calls ({} writes), {} faults injected, faults per step \
         {faults_by_step:?}, Err after the step committed: {committed_then_failed:?}, absorbed \
         (logged, the step succeeded): {absorbed:?}, {:.1} s",
        writes.len(),
        faults.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        faults_by_step.iter().all(|&f| f > 0),
        "every step met a fault: {faults_by_step:?}"
    );
}

/// One injected fault: store call `n` (of `step`) fails before it reaches
/// the store, or with `after` once it went through.
#[derive(Debug, Clone, Copy)]
struct Fault {
    n: u64,
    after: bool,
    step: usize,
}

/// How a step met its fault.
enum Outcome {
    /// It answered `Err` and changed nothing.
    RolledBack,
    /// It answered `Err` after its changes committed (only a fault after
    /// the commit may do that: the answer was lost).
    Committed,
    /// It succeeded: the failed call was best-effort work after the
    /// step's commit (compaction after a retention run), logged.
    Absorbed,
}

/// Runs the scenario with one fault and checks the outcome.
async fn one_fault(
    path: &Path,
    Fault {
        n,
        after,
        step: step_of_call,
    }: Fault,
    import: &[u8],
    reference: &[Contents],
    total: u64,
) -> Outcome {
    let what = if after {
        "after it committed"
    } else {
        "before it ran"
    };
    let failing = Arc::new(FailingStore::shared(sqlite(path).await));
    if after {
        failing.fail_nth_after_it_commits(n);
    } else {
        failing.fail_nth(n);
    }
    let mut run = Scenario::new(failing.clone(), import.to_vec());
    let mut failed_at = None;
    for i in 0..STEPS {
        match run.step(i).await {
            Ok(()) => {}
            Err(VaultError::Store(StoreError::Backend { .. })) => {
                failed_at = Some(i);
                break;
            }
            Err(other) => panic!("call {n} failed {what}, step {i} answered {other:?}"),
        }
    }
    let Some(step) = failed_at else {
        // Only the compaction after a retention run's deletions is
        // best-effort (logged): every other fault must surface.
        assert_eq!(
            step_of_call, RETENTION_STEP,
            "call {n} of {total} failed {what} in step {step_of_call} but every step succeeded"
        );
        let snapshot = Snapshot::of(run.vault().expect("opened"))
            .await
            .expect("read");
        assert_eq!(snapshot.contents(), reference[STEPS]);
        return Outcome::Absorbed;
    };
    assert_eq!(step, step_of_call, "call {n} failed {what}");
    let ctx = format!("call {n} of {total} failed {what}, in step {step}");

    integrity_check(path);
    let passphrases: &[&str] = match step {
        s if s < PASSWD_STEP => &[OLD],
        PASSWD_STEP => &[OLD, NEW],
        _ => &[NEW],
    };
    let clock = Arc::new(ManualClock::new(Timestamp(T0.0 + 100_000)));
    let mut reopened = None;
    for (k, passphrase) in passphrases.iter().enumerate() {
        let options = fast_options(clock.clone());
        match Vault::open_encrypted(sqlite(path).await, passphrase, options).await {
            Ok(v) => {
                reopened = Some((v, k));
                break;
            }
            Err(VaultError::WrongPassphrase) => {}
            Err(e) => panic!("{ctx}: reopening failed: {e:?}"),
        }
    }
    let Some((vault, passphrase_index)) = reopened else {
        panic!("{ctx}: no passphrase opens the vault");
    };
    let snapshot = Snapshot::of(&vault).await.expect("read back");
    let problems = snapshot.outbox_problems();
    assert!(problems.is_empty(), "{ctx}: {problems:#?}");
    assert_eq!(
        snapshot.not_pending(),
        vec![],
        "{ctx}: changes lost from the outbox"
    );
    let contents = snapshot.contents();
    // The passphrase change commits nothing else: which passphrase opens
    // the vault tells whether it committed.
    let committed = if step == PASSWD_STEP {
        passphrase_index == 1
    } else {
        contents == reference[step + 1] && contents != reference[step]
    };
    // A call failing before it ran leaves the step uncommitted: an `Err`
    // after part of a step committed misleads the caller (a retention run
    // once reported failure when compacting after its deletions failed).
    assert!(
        after || !committed,
        "{ctx}: the step answered Err but its changes were committed"
    );
    let expected = if committed {
        &reference[step + 1]
    } else {
        &reference[step]
    };
    assert_eq!(
        &contents, expected,
        "{ctx}: the vault is neither at the state before the step nor after it"
    );
    drop(vault);

    // The handle that met the fault goes on with the rest of the scenario,
    // as an app does after showing the error: its later steps fail only
    // for want of what the failed step would have made, and what it
    // writes is sound. (Nothing else writes meanwhile: a handle cannot
    // read what another one seals after a key rotation it did not see.)
    for i in step + 1..STEPS {
        match run.step(i).await {
            Ok(()) | Err(VaultError::Internal("an earlier step did not run")) => {}
            // The passphrase change failed, so the key rotation's is wrong.
            Err(VaultError::WrongPassphrase) if step <= PASSWD_STEP => {}
            // The rotation committed behind its `Err`: this handle still
            // holds the old key, and the store's fence refuses to let it
            // seal with it (it must be opened again).
            Err(VaultError::KeyRotatedElsewhere) if step == ROTATE_STEP && after => {}
            Err(e) => panic!("{ctx}: step {i} after the fault answered {e:?}"),
        }
    }
    drop(run);
    integrity_check(path);
    let mut reopened = None;
    for passphrase in [OLD, NEW] {
        let options = fast_options(clock.clone());
        match Vault::open_encrypted(sqlite(path).await, passphrase, options).await {
            Ok(v) => reopened = Some(v),
            Err(VaultError::WrongPassphrase) => {}
            Err(e) => panic!("{ctx}: reopening after the rest of the scenario: {e:?}"),
        }
    }
    let vault = reopened.unwrap_or_else(|| panic!("{ctx}: no passphrase opens the vault"));
    let snapshot = Snapshot::of(&vault).await.expect("read back");
    let problems = snapshot.outbox_problems();
    assert!(problems.is_empty(), "{ctx}, after the rest: {problems:#?}");
    assert_eq!(snapshot.not_pending(), vec![], "{ctx}, after the rest");
    // And the vault takes new writes.
    let c = vault
        .create_conversation(NewConversation::titled("after the fault"))
        .await
        .unwrap_or_else(|e| panic!("{ctx}: writing after the fault: {e:?}"));
    vault
        .add_message(c.id, NewMessage::new(Role::User, "still works"))
        .await
        .unwrap_or_else(|e| panic!("{ctx}: a message after the fault: {e:?}"));
    if committed {
        Outcome::Committed
    } else {
        Outcome::RolledBack
    }
}

/// Every message of the vault, by content.
async fn contents_of(vault: &Vault) -> Contents {
    Snapshot::of(vault)
        .await
        .expect("read the vault")
        .contents()
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_disk_is_a_clear_error_and_keeps_what_was_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("full.db");
    let quota = 512 * 1024;
    let open = || async {
        Vault::builder()
            .sqlite(&path)
            .quota(quota)
            .passphrase(OLD)
            .options(fast_options(Arc::new(ManualClock::new(T0))))
            .open()
            .await
    };
    let vault = open().await.expect("open with a quota");
    let c = vault
        .create_conversation(NewConversation::titled("filling"))
        .await
        .expect("create");
    let chunk = "x".repeat(2_000);
    let mut written = Vec::new();
    let err = loop {
        let news = (0..10)
            .map(|k| NewMessage::new(Role::User, format!("{}-{k}-{chunk}", written.len())))
            .collect();
        match vault.add_messages(c.id, news).await {
            Ok(ms) => written.extend(ms.into_iter().map(|m| m.id)),
            Err(e) => break e,
        }
        assert!(written.len() < 10_000, "the quota never filled");
    };
    assert!(
        matches!(err, VaultError::Store(StoreError::Full { .. })),
        "{err:?}"
    );
    assert_eq!(err.code(), "storage_full");
    assert!(
        !written.is_empty(),
        "something fitted before the disk filled"
    );
    let filled = contents_of(&vault).await;
    assert_eq!(
        filled.records.iter().map(|r| r.1.len()).sum::<usize>(),
        written.len()
    );

    // Single messages may still fit in the pages left; fill those too.
    let refused = loop {
        match vault
            .add_message(
                c.id,
                NewMessage::new(Role::User, format!("single-{}-{chunk}", written.len())),
            )
            .await
        {
            Ok(m) => written.push(m.id),
            Err(e) => break e,
        }
    };
    assert_eq!(refused.code(), "storage_full", "{refused:?}");
    // A refused write changes nothing.
    let before = contents_of(&vault).await;
    let again = vault
        .add_message(c.id, NewMessage::new(Role::User, chunk.clone()))
        .await;
    assert!(
        matches!(again, Err(VaultError::Store(StoreError::Full { .. }))),
        "{again:?}"
    );
    assert_eq!(contents_of(&vault).await, before);
    let problems = Snapshot::of(&vault).await.expect("read").outbox_problems();
    assert!(problems.is_empty(), "{problems:#?}");
    eprintln!(
        "full disk: {} messages fitted in a {quota}-byte quota",
        written.len()
    );

    // Deleting still works on a full store, as the error message says.
    vault
        .delete_message(written[0])
        .await
        .expect("a deletion on a full store");
    drop(vault);
    integrity_check(&path);

    let vault = open().await.expect("reopen the full vault");
    let after = contents_of(&vault).await;
    let messages: usize = after.records.iter().map(|r| r.1.len()).sum();
    assert_eq!(
        messages,
        written.len() - 1,
        "everything but the deleted one"
    );
    for id in &written[1..] {
        vault
            .message(*id)
            .await
            .expect("every earlier message reads back");
    }
}

/// A vault file that cannot be written (permissions, a read-only mount):
/// writes fail with a clear, classified error and change nothing, reads go
/// on (or opening refuses clearly), and the file stays sound.
#[tokio::test(flavor = "current_thread")]
async fn a_read_only_vault_file_refuses_writes_clearly_and_still_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ro.db");
    let vault = Vault::builder()
        .sqlite(&path)
        .passphrase(OLD)
        .options(fast_options(Arc::new(ManualClock::new(T0))))
        .open()
        .await
        .expect("create");
    let c = vault
        .create_conversation(NewConversation::titled("kept"))
        .await
        .expect("create");
    vault
        .add_message(c.id, NewMessage::new(Role::User, "readable"))
        .await
        .expect("write");
    let before = contents_of(&vault).await;
    drop(vault);

    let Some(_guard) = ReadOnly::make(&path) else {
        eprintln!("skipped: this machine cannot make a file read-only for its own user");
        return;
    };
    let opened = Vault::builder()
        .sqlite(&path)
        .passphrase(OLD)
        .options(fast_options(Arc::new(ManualClock::new(T0))))
        .open()
        .await;
    match opened {
        Ok(vault) => {
            eprintln!("read-only: opens, reads work, writes refused");
            assert_eq!(contents_of(&vault).await, before, "reads work");
            let err = vault
                .add_message(c.id, NewMessage::new(Role::User, "refused"))
                .await
                .expect_err("a read-only file takes no writes");
            assert!(
                matches!(err, VaultError::Store(StoreError::Unavailable { .. })),
                "{err:?}"
            );
            assert_eq!(contents_of(&vault).await, before, "nothing changed");
        }
        Err(err) => {
            eprintln!("read-only: refuses to open: {err}");
            // Refusing to open at all is clear too, as long as it says why.
            assert!(
                matches!(err, VaultError::Store(StoreError::Unavailable { .. })),
                "{err:?}"
            );
        }
    }
    drop(_guard);
    integrity_check(&path);
}

/// Makes a file read-only for this process until dropped: mode 0444, and,
/// for root (whom modes do not stop), the immutable attribute. `None` if
/// the file stays writable.
struct ReadOnly<'a>(&'a Path, bool);

impl<'a> ReadOnly<'a> {
    fn make(path: &'a Path) -> Option<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).ok()?;
        let writable = || std::fs::OpenOptions::new().append(true).open(path).is_ok();
        if !writable() {
            return Some(Self(path, false));
        }
        let immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        let guard = Self(path, immutable);
        (!writable()).then_some(guard)
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.1 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(self.0)
                .status();
        }
        let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o644));
    }
}

/// The vault file is deleted, or replaced by another vault, while a vault
/// has it open: the open handle either fails with a classified error or
/// goes on with the file it opened (now unlinked); the new file at the
/// path never receives its writes and stays sound.
#[tokio::test(flavor = "current_thread")]
async fn a_vault_file_deleted_or_replaced_under_an_open_vault() {
    for replace in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v.db");
        let open = |passphrase: &'static str| {
            let path = path.clone();
            async move {
                Vault::builder()
                    .sqlite(&path)
                    .passphrase(passphrase)
                    .options(fast_options(Arc::new(ManualClock::new(T0))))
                    .open()
                    .await
            }
        };
        let old = open(OLD).await.expect("create");
        let c = old
            .create_conversation(NewConversation::titled("old"))
            .await
            .expect("create");
        old.add_message(c.id, NewMessage::new(Role::User, "before"))
            .await
            .expect("write");

        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let newcomer = if replace {
            // Another vault built elsewhere and moved into place.
            let other = dir.path().join("other.db");
            let v = Vault::builder()
                .sqlite(&other)
                .passphrase(NEW)
                .options(fast_options(Arc::new(ManualClock::new(T0))))
                .open()
                .await
                .expect("the replacement");
            v.create_conversation(NewConversation::titled("new"))
                .await
                .expect("create in the replacement");
            drop(v);
            std::fs::rename(&other, &path).expect("replace the file");
            Some(contents_of(&open(NEW).await.expect("open the replacement")).await)
        } else {
            None
        };

        // The open handle: a classified error, or it goes on with its file.
        match old
            .add_message(c.id, NewMessage::new(Role::User, "after"))
            .await
        {
            Ok(_) => {
                eprintln!("replaced={replace}: the open handle goes on with its own file");
                let msgs = contents_of(&old).await;
                assert_eq!(msgs.records.len(), 1, "{msgs:?}");
            }
            Err(e) => {
                eprintln!("replaced={replace}: the open handle fails: {e}");
                assert!(
                    matches!(
                        e,
                        VaultError::Store(
                            StoreError::Unavailable { .. } | StoreError::Corrupt { .. }
                        )
                    ),
                    "{e:?}"
                );
            }
        }
        drop(old);

        if let Some(expected) = newcomer {
            integrity_check(&path);
            let v = open(NEW).await.expect("the replacement still opens");
            assert_eq!(
                contents_of(&v).await,
                expected,
                "untouched by the old handle"
            );
        } else if path.exists() {
            // Nothing may have re-created a half vault at the path.
            integrity_check(&path);
        }
    }
}
