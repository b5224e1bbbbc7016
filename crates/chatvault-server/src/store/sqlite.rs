//! [`SqliteServerStore`]: the embedded backend (rusqlite, bundled SQLite).
//!
//! One connection behind a mutex, used from blocking threads: SQLite
//! serializes writers anyway, and one connection makes every push, pull and
//! snapshot trivially consistent. WAL journal with `synchronous=FULL`: a
//! push answered "applied" survives a power cut.
//!
//! Only one server process may use a SQLite database (there is no
//! cross-process poke fan-out); use PostgreSQL to run several.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chatvault_core::{Change, EntityKind, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{census_entry, session_summary, SessionSummary};
use super::{
    check_cursor, outcome_to_db, page_cut, page_of, parse_epoch, parse_purge_mark, seen_outcome,
    Account, AccountRow, CursorCheck, EpochFacts, KeysUpdate, NewAccount, NewSession, Pull,
    PurgePlan, PurgeReport, PushOutcome, RecordRow, ServerStore, ServerStoreError,
    ServerStoreResult, SessionInfo, Snapshot, SnapshotPage, VersionRow, ACCOUNT_COLUMNS,
    CURRENT_EPOCH, EPOCH_ORDINAL, INSERT_EPOCH, LATER_EPOCH_START, NOTE_FEED_EPOCH, PAGE_BYTES,
    RECORD_COLUMNS, RECORD_UPSERT_CONFLICT, REMARK_CONVERSATION, VERSION_COLUMNS,
};
use crate::auth::{random_bytes, ThrottleState};
use crate::push_plan::{plan, PushPlan, PushReads, PushState};
use crate::types::{
    AccountId, Cursor, Epoch, Seq, SessionHash, SnapshotKey, Username, WireKdfParams,
};

/// Schema migrations, in order; `schema_version` records which have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    username     TEXT NOT NULL UNIQUE,
    auth_hash    TEXT NOT NULL,
    kdf_m        INTEGER NOT NULL,
    kdf_t        INTEGER NOT NULL,
    kdf_p        INTEGER NOT NULL,
    salt         BLOB NOT NULL,
    key_envelope TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE sync_heads (
    user_id    TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    head_seq   INTEGER NOT NULL DEFAULT 0,
    purged_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
    token_hash   BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    client       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE login_throttle (
    username        TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL
);
CREATE TABLE records (
    user_id         TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    conversation_id TEXT,
    op_id           TEXT NOT NULL,
    version         TEXT NOT NULL,
    deleted         INTEGER NOT NULL,
    created_at      INTEGER,
    updated_at      INTEGER,
    owner           TEXT,
    body            BLOB,
    deleted_at      INTEGER,
    seq             INTEGER NOT NULL,
    stored_at       INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind, entity_id)
);
CREATE UNIQUE INDEX records_feed ON records(user_id, seq);
CREATE INDEX records_messages ON records(user_id, conversation_id) WHERE kind = 'message';
CREATE INDEX records_tombstones ON records(stored_at) WHERE deleted = 1;
CREATE TABLE op_results (
    user_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    op_id       TEXT NOT NULL,
    status      TEXT NOT NULL,
    seq         INTEGER,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, op_id)
);
CREATE INDEX op_results_age ON op_results(recorded_at);
"#,
    r#"
CREATE TABLE epochs (
    ordinal   INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT NOT NULL UNIQUE,
    opened_at INTEGER NOT NULL
);
CREATE TABLE feed_epochs (
    user_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    epoch     INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, epoch)
);
"#,
    r#"
ALTER TABLE records ADD COLUMN deletion_mark TEXT;
ALTER TABLE sync_heads ADD COLUMN purged_version TEXT;
"#,
    r#"
CREATE TABLE revoked_sessions (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    revoked_at INTEGER NOT NULL
);
"#,
];

/// The SQLite backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteServerStore {
    conn: Arc<Mutex<Connection>>,
    /// The epoch this store began on open (the only process using the
    /// file, so it stays the current one).
    epoch: Epoch,
}

impl SqliteServerStore {
    /// Opens (creating if needed) the database file at `path` and brings its
    /// schema up to date.
    pub async fn open(path: &Path) -> ServerStoreResult<Self> {
        let path = path.to_owned();
        let conn =
            tokio::task::spawn_blocking(move || -> ServerStoreResult<(Connection, Epoch)> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                create_private(&path)?;
                let mut conn = Connection::open(&path)?;
                conn.busy_timeout(Duration::from_secs(5))?;
                refuse_foreign_schema(&conn, &path)?;
                let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(ServerStoreError::Config(format!(
                        "SQLite refused WAL mode (got {mode}) for {}",
                        path.display()
                    )));
                }
                conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
                migrate(&mut conn)?;
                let epoch = Epoch::random();
                conn.execute(
                    INSERT_EPOCH,
                    params![epoch.to_string(), super::wall_clock_ms()],
                )?;
                Ok((conn, epoch))
            })
            .await
            .map_err(|e| ServerStoreError::Task(e.to_string()))??;
        let (conn, epoch) = conn;
        tracing::info!(%epoch, "began a new epoch of the server database");
        Ok(SqliteServerStore {
            conn: Arc::new(Mutex::new(conn)),
            epoch,
        })
    }

    /// Runs `f` on the connection in a blocking thread.
    async fn call<T, F>(&self, f: F) -> ServerStoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> ServerStoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic mid-call leaves no open transaction behind (rusqlite
            // rolls back on drop), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| ServerStoreError::Task(e.to_string()))?
    }
}

/// Creates the database file readable by its owner only (it holds auth
/// hashes and the server secret), or narrows an existing one to that.
/// SQLite gives the `-wal` and `-shm` files the database file's mode.
fn create_private(path: &Path) -> ServerStoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format_args!("{:o}", mode & 0o777),
                        "server database was readable by others; narrowing it to 0600"
                    );
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                }
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(suffix);
                    narrow_side_file(Path::new(&side))?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Narrows a WAL or shared-memory file next to the database to its owner,
/// if it exists. No check before: the last connection of another process
/// (or of a server just stopped) deletes these files when it closes, so
/// one can vanish between a check and the change — that is "absent", not
/// a reason to refuse to start.
#[cfg(unix)]
fn narrow_side_file(side: &Path) -> ServerStoreResult<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::set_permissions(side, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => Ok(other?),
    }
}

/// Tables this server's migrations create (plus `schema_version`).
fn server_tables() -> Vec<&'static str> {
    let mut names = vec!["schema_version"];
    for sql in MIGRATIONS {
        for part in sql.split("CREATE TABLE ").skip(1) {
            let part = part.trim_start_matches("IF NOT EXISTS ");
            if let Some(name) = part
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
            {
                names.push(name);
            }
        }
    }
    names
}

/// Refuses a database that holds anything but this server's tables: a
/// mistyped `--database` pointing at a client vault (or any other SQLite
/// file) must not get server tables added to it. An empty file is fine.
fn refuse_foreign_schema(conn: &Connection, path: &Path) -> ServerStoreResult<()> {
    let mut statement = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )?;
    let tables = statement
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if tables.is_empty() {
        return Ok(());
    }
    let known = server_tables();
    let foreign: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| !known.contains(t))
        .collect();
    if foreign.is_empty() && tables.iter().any(|t| t == "server_meta") {
        return Ok(());
    }
    let shown = if foreign.is_empty() {
        tables.join(", ")
    } else {
        foreign.join(", ")
    };
    Err(ServerStoreError::NotAServerDatabase(format!(
        "{} has tables this server does not own ({shown}); it looks like a \
         chatvault client vault or another program's database. Point \
         --database at a new file",
        path.display()
    )))
}

fn migrate(conn: &mut Connection) -> ServerStoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(ServerStoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (done, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [done as i64 + 1],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn read_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok(RecordRow {
        kind: r.get(0)?,
        entity_id: r.get(1)?,
        conversation_id: r.get(2)?,
        op_id: r.get(3)?,
        version: r.get(4)?,
        deleted: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        owner: r.get(8)?,
        body: r.get(9)?,
        deleted_at: r.get(10)?,
        seq: r.get(11)?,
        deletion_mark: r.get(12)?,
    })
}

/// The sizes of `(key, size)` page candidates.
fn sizes(candidates: &[(i64, i64)]) -> Vec<u64> {
    candidates.iter().map(|c| c.1.max(0) as u64).collect()
}

fn read_account(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        id: r.get(0)?,
        username: r.get(1)?,
        auth_hash: r.get(2)?,
        kdf_m: r.get(3)?,
        kdf_t: r.get(4)?,
        kdf_p: r.get(5)?,
        salt: r.get(6)?,
        key_envelope: r.get(7)?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// The account's `(head_seq, purged_seq)`; `(0, 0)` before its first push.
fn heads(tx: &Transaction<'_>, account: &str) -> ServerStoreResult<(Seq, Seq)> {
    let row: Option<(i64, i64)> = tx
        .query_row(
            "SELECT head_seq, purged_seq FROM sync_heads WHERE user_id = ?1",
            [account],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (head, purged) = row.unwrap_or((0, 0));
    Ok((Seq::from_db(head), Seq::from_db(purged)))
}

/// The current epoch and its ordinal.
fn current_epoch(tx: &Transaction<'_>) -> ServerStoreResult<(Epoch, i64)> {
    let (id, ordinal): (String, i64) =
        tx.query_row(CURRENT_EPOCH, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((parse_epoch(&id)?, ordinal))
}

/// What the database knows about `epoch` for the account (see
/// [`EpochFacts`]); a legacy or absent epoch counts as the oldest.
fn epoch_facts(
    tx: &Transaction<'_>,
    account: &str,
    epoch: Option<Epoch>,
) -> ServerStoreResult<EpochFacts> {
    let ordinal = match epoch {
        None => 0,
        Some(e) => match tx
            .query_row(EPOCH_ORDINAL, [e.to_string()], |r| r.get::<_, i64>(0))
            .optional()?
        {
            Some(ordinal) => ordinal,
            None => return Ok(EpochFacts::Unknown),
        },
    };
    let start: Option<i64> =
        tx.query_row(LATER_EPOCH_START, params![account, ordinal], |r| r.get(0))?;
    Ok(EpochFacts::Known {
        later_epoch_start: start.map(Seq::from_db),
    })
}

fn push_tx(
    conn: &mut Connection,
    account: &str,
    changes: &[Change],
    now: Timestamp,
) -> ServerStoreResult<PushOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO sync_heads (user_id) VALUES (?1) ON CONFLICT (user_id) DO NOTHING",
        [account],
    )?;
    let (head, _) = heads(&tx, account)?;
    let (epoch, ordinal) = current_epoch(&tx)?;
    tx.execute(
        NOTE_FEED_EPOCH,
        params![account, ordinal, head.to_db().saturating_add(1)],
    )?;
    let mut state = read_push_state(&tx, account, &PushReads::of(changes), head)?;
    state.purged = parse_purge_mark(tx.query_row(
        "SELECT purged_version FROM sync_heads WHERE user_id = ?1",
        [account],
        |r| r.get(0),
    )?)?;
    let plan = plan(changes, &state);
    write_plan(&tx, account, &plan, now)?;
    tx.commit()?;
    Ok(PushOutcome {
        results: plan.outcomes,
        head: Cursor::new(epoch, plan.head),
    })
}

/// JSON array text of `items`, bound as one parameter and expanded with
/// `json_each` (no per-batch SQL text, no bound-parameter limit).
fn json_list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    serde_json::Value::from(items).to_string()
}

/// Everything the planner needs for a batch, in two queries.
fn read_push_state(
    tx: &Transaction<'_>,
    account: &str,
    reads: &PushReads,
    head: Seq,
) -> ServerStoreResult<PushState> {
    let mut stmt = tx.prepare_cached(
        "SELECT op_id, status, seq FROM op_results \
         WHERE user_id = ?1 AND op_id IN (SELECT value FROM json_each(?2))",
    )?;
    let seen = stmt
        .query_map(params![account, json_list(&reads.op_ids)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?
        .map(|row| {
            let (op_id, status, seq) = row?;
            seen_outcome(&op_id, &status, seq)
        })
        .collect::<ServerStoreResult<_>>()?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM records WHERE user_id = ?1 AND kind = 'conversation' \
         AND entity_id IN (SELECT value FROM json_each(?2)) \
         UNION ALL SELECT {VERSION_COLUMNS} FROM records WHERE user_id = ?1 \
         AND kind = 'message' AND entity_id IN (SELECT value FROM json_each(?3))"
    ))?;
    let records = stmt
        .query_map(
            params![
                account,
                json_list(&reads.ids_of(EntityKind::Conversation)),
                json_list(&reads.ids_of(EntityKind::Message)),
            ],
            |r| {
                Ok(VersionRow {
                    kind: r.get(0)?,
                    entity_id: r.get(1)?,
                    conversation_id: r.get(2)?,
                    version: r.get(3)?,
                    deleted: r.get(4)?,
                    body: r.get(5)?,
                    deletion_mark: r.get(6)?,
                })
            },
        )?
        .map(|row| row?.into_stored())
        .collect::<ServerStoreResult<_>>()?;
    Ok(PushState {
        head,
        seen,
        records,
        purged: None,
    })
}

/// Writes a planned batch, in the order [`PushPlan`] prescribes.
fn write_plan(
    tx: &Transaction<'_>,
    account: &str,
    plan: &PushPlan<'_>,
    now: Timestamp,
) -> ServerStoreResult<()> {
    let mut cover = tx.prepare_cached(
        "DELETE FROM records WHERE user_id = ?1 AND kind = 'message' \
         AND conversation_id = ?2 AND version <= ?3",
    )?;
    for (conversation, version) in &plan.covered {
        cover.execute(params![
            account,
            conversation.to_string(),
            version.to_string()
        ])?;
    }
    let mut upsert = tx.prepare_cached(&format!(
        "INSERT INTO records (user_id, kind, entity_id, conversation_id, op_id, version, \
         deleted, created_at, updated_at, owner, body, deleted_at, seq, stored_at, \
         deletion_mark) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         {RECORD_UPSERT_CONFLICT}"
    ))?;
    for write in &plan.writes {
        let row = RecordRow::from_write(write);
        upsert.execute(params![
            account,
            row.kind,
            row.entity_id,
            row.conversation_id,
            row.op_id,
            row.version,
            row.deleted,
            row.created_at,
            row.updated_at,
            row.owner,
            row.body,
            row.deleted_at,
            row.seq,
            now.as_millis(),
            row.deletion_mark,
        ])?;
    }
    let mut remark = tx.prepare_cached(REMARK_CONVERSATION)?;
    for (conversation, mark, seq) in &plan.remarks {
        remark.execute(params![
            mark.to_string(),
            seq.to_db(),
            account,
            conversation.to_string()
        ])?;
    }
    let mut remember = tx.prepare_cached(
        "INSERT INTO op_results (user_id, op_id, status, seq, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (op_id, outcome) in &plan.remember {
        let (status, seq) = outcome_to_db(*outcome);
        remember.execute(params![
            account,
            op_id.to_string(),
            status,
            seq,
            now.as_millis()
        ])?;
    }
    tx.execute(
        "UPDATE sync_heads SET head_seq = ?2 WHERE user_id = ?1",
        params![account, plan.head.to_db()],
    )?;
    Ok(())
}

#[async_trait]
impl ServerStore for SqliteServerStore {
    async fn server_secret(&self) -> ServerStoreResult<[u8; 32]> {
        let fresh: [u8; 32] =
            random_bytes().map_err(|e| ServerStoreError::Random(e.to_string()))?;
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO server_meta (key, value) VALUES ('secret', ?1) \
                 ON CONFLICT (key) DO NOTHING",
                [fresh.as_slice()],
            )?;
            let stored: Vec<u8> = conn.query_row(
                "SELECT value FROM server_meta WHERE key = 'secret'",
                [],
                |r| r.get(0),
            )?;
            <[u8; 32]>::try_from(stored.as_slice())
                .map_err(|_| ServerStoreError::Corrupt("server secret is not 32 bytes".into()))
        })
        .await
    }

    async fn create_account(&self, a: NewAccount) -> ServerStoreResult<()> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = a.id.to_string();
            let inserted = tx.execute(
                "INSERT INTO accounts (id, username, auth_hash, kdf_m, kdf_t, kdf_p, salt, \
                 key_envelope, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    a.username.as_str(),
                    a.auth_hash,
                    a.kdf.m_cost_kib,
                    a.kdf.t_cost,
                    a.kdf.p_cost,
                    a.salt.0.as_slice(),
                    a.key_envelope.to_json(),
                    a.created_at.as_millis(),
                ],
            );
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(ServerStoreError::UsernameTaken),
                other => other?,
            };
            tx.execute("INSERT INTO sync_heads (user_id) VALUES (?1)", [&id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn account_by_username(&self, username: &Username) -> ServerStoreResult<Option<Account>> {
        let name = username.as_str().to_owned();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = ?1"),
                [name],
                read_account,
            )
            .optional()?
            .map(AccountRow::into_account)
            .transpose()
        })
        .await
    }

    async fn account(&self, id: AccountId) -> ServerStoreResult<Option<Account>> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                [id.to_string()],
                read_account,
            )
            .optional()?
            .map(AccountRow::into_account)
            .transpose()
        })
        .await
    }

    async fn stored_bytes(&self, account: AccountId) -> ServerStoreResult<u64> {
        self.call(move |conn| {
            let bytes: i64 = conn.query_row(
                "SELECT COALESCE(SUM(length(body)), 0) FROM records WHERE user_id = ?1",
                [account.to_string()],
                |r| r.get(0),
            )?;
            Ok(bytes.max(0) as u64)
        })
        .await
    }

    async fn kdf_census(&self) -> ServerStoreResult<Vec<(WireKdfParams, u64)>> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT kdf_m, kdf_t, kdf_p, COUNT(*) FROM accounts \
                 GROUP BY kdf_m, kdf_t, kdf_p ORDER BY kdf_m, kdf_t, kdf_p",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            let mut census = Vec::new();
            for row in rows {
                let (m, t, p, count) = row?;
                census.push(census_entry(m, t, p, count)?);
            }
            Ok(census)
        })
        .await
    }

    async fn update_keys(&self, id: AccountId, update: KeysUpdate) -> ServerStoreResult<bool> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = id.to_string();
            let changed = match &update.credentials {
                None => tx.execute(
                    "UPDATE accounts SET key_envelope = ?2 WHERE id = ?1",
                    params![id, update.key_envelope.to_json()],
                )?,
                Some(c) => tx.execute(
                    "UPDATE accounts SET key_envelope = ?2, auth_hash = ?3, kdf_m = ?4, \
                     kdf_t = ?5, kdf_p = ?6, salt = ?7 WHERE id = ?1",
                    params![
                        id,
                        update.key_envelope.to_json(),
                        c.auth_hash,
                        c.kdf.m_cost_kib,
                        c.kdf.t_cost,
                        c.kdf.p_cost,
                        c.salt.0.as_slice(),
                    ],
                )?,
            };
            if changed == 0 {
                return Ok(false);
            }
            if update.credentials.is_some() {
                tx.execute(
                    "DELETE FROM sessions WHERE user_id = ?1 AND token_hash <> ?2",
                    params![id, update.keep_session.0.as_slice()],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn throttle(&self, username: &Username) -> ServerStoreResult<Option<ThrottleState>> {
        let name = username.as_str().to_owned();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT failures, last_failure_at FROM login_throttle WHERE username = ?1",
                    [name],
                    |r| {
                        Ok(ThrottleState {
                            failures: r.get(0)?,
                            last_failure_at: Timestamp(r.get(1)?),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn record_login_failure(
        &self,
        username: &Username,
        now: Timestamp,
    ) -> ServerStoreResult<ThrottleState> {
        let name = username.as_str().to_owned();
        self.call(move |conn| {
            Ok(conn.query_row(
                "INSERT INTO login_throttle (username, failures, last_failure_at) \
                 VALUES (?1, 1, ?2) ON CONFLICT (username) DO UPDATE SET \
                 failures = MIN(login_throttle.failures + 1, 1000000), \
                 last_failure_at = excluded.last_failure_at \
                 RETURNING failures, last_failure_at",
                params![name, now.as_millis()],
                |r| {
                    Ok(ThrottleState {
                        failures: r.get(0)?,
                        last_failure_at: Timestamp(r.get(1)?),
                    })
                },
            )?)
        })
        .await
    }

    async fn clear_login_failures(&self, username: &Username) -> ServerStoreResult<()> {
        let name = username.as_str().to_owned();
        self.call(move |conn| {
            conn.execute("DELETE FROM login_throttle WHERE username = ?1", [name])?;
            Ok(())
        })
        .await
    }

    async fn create_session(&self, s: NewSession) -> ServerStoreResult<()> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO sessions (token_hash, user_id, client, created_at, last_used_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![
                    s.hash.0.as_slice(),
                    s.account.to_string(),
                    s.client.as_str(),
                    s.created_at.as_millis()
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn session(&self, hash: &SessionHash) -> ServerStoreResult<Option<SessionInfo>> {
        let hash = *hash;
        self.call(move |conn| {
            let row: Option<(String, i64, i64)> = conn
                .query_row(
                    "SELECT user_id, created_at, last_used_at FROM sessions WHERE token_hash = ?1",
                    [hash.0.as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            row.map(|(user, created, used)| {
                Ok(SessionInfo {
                    account: user
                        .parse()
                        .map_err(|e| ServerStoreError::Corrupt(format!("session user: {e}")))?,
                    created_at: Timestamp(created),
                    last_used_at: Timestamp(used),
                })
            })
            .transpose()
        })
        .await
    }

    async fn touch_session(&self, hash: &SessionHash, now: Timestamp) -> ServerStoreResult<()> {
        let hash = *hash;
        self.call(move |conn| {
            conn.execute(
                "UPDATE sessions SET last_used_at = MAX(last_used_at, ?2) WHERE token_hash = ?1",
                params![hash.0.as_slice(), now.as_millis()],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_session(&self, hash: &SessionHash) -> ServerStoreResult<()> {
        let hash = *hash;
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM sessions WHERE token_hash = ?1",
                [hash.0.as_slice()],
            )?;
            Ok(())
        })
        .await
    }

    async fn sessions_of(&self, account: AccountId) -> ServerStoreResult<Vec<SessionSummary>> {
        let id = account.to_string();
        self.call(move |conn| {
            let mut statement = conn.prepare(
                "SELECT token_hash, client, created_at, last_used_at FROM sessions \
                 WHERE user_id = ?1 ORDER BY last_used_at DESC",
            )?;
            let rows = statement
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(hash, client, created, used)| session_summary(&hash, client, created, used))
                .collect()
        })
        .await
    }

    async fn revoke_other_sessions(
        &self,
        account: AccountId,
        keep: &SessionHash,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> ServerStoreResult<u64> {
        let id = account.to_string();
        let keep = *keep;
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM revoked_sessions WHERE revoked_at < ?1",
                [forget_before.0],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO revoked_sessions (token_hash, user_id, revoked_at) \
                 SELECT token_hash, user_id, ?3 FROM sessions \
                 WHERE user_id = ?1 AND token_hash <> ?2",
                params![id, keep.0.as_slice(), now.0],
            )?;
            let n = tx.execute(
                "DELETE FROM sessions WHERE user_id = ?1 AND token_hash <> ?2",
                params![id, keep.0.as_slice()],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn was_revoked(&self, hash: &SessionHash) -> ServerStoreResult<bool> {
        let hash = *hash;
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM revoked_sessions WHERE token_hash = ?1",
                    [hash.0.as_slice()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
        .await
    }

    async fn push(
        &self,
        account: AccountId,
        changes: &[Change],
        now: Timestamp,
    ) -> ServerStoreResult<PushOutcome> {
        let changes = changes.to_vec();
        self.call(move |conn| push_tx(conn, &account.to_string(), &changes, now))
            .await
    }

    fn epoch(&self) -> Epoch {
        self.epoch
    }

    async fn pull(&self, account: AccountId, after: Cursor, limit: u32) -> ServerStoreResult<Pull> {
        self.call(move |conn| {
            let account = account.to_string();
            let tx = conn.transaction()?;
            let (head, purged) = heads(&tx, &account)?;
            let facts = epoch_facts(&tx, &account, after.epoch)?;
            match check_cursor(after.seq, facts, head, purged) {
                CursorCheck::Restored => return Ok(Pull::Restored),
                CursorCheck::ResyncRequired => return Ok(Pull::ResyncRequired),
                CursorCheck::Continue => {}
            }
            let (epoch, _) = current_epoch(&tx)?;
            let after = after.seq;
            // Sizes first (length() reads no blob), then the page's rows.
            let candidates = tx
                .prepare_cached(
                    "SELECT seq, COALESCE(length(body), 0) FROM records \
                     WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?
                .query_map(params![account, after.to_db(), i64::from(limit) + 1], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let (taken, has_more) = page_cut(&sizes(&candidates), limit, PAGE_BYTES);
            let changes = match taken.checked_sub(1).and_then(|i| candidates.get(i)) {
                None => Vec::new(),
                Some(&(last, _)) => page_of(
                    tx.prepare_cached(&format!(
                        "SELECT {RECORD_COLUMNS} FROM records WHERE user_id = ?1 AND seq > ?2 \
                         AND seq <= ?3 ORDER BY seq"
                    ))?
                    .query_map(params![account, after.to_db(), last], read_record)?
                    .collect::<Result<Vec<_>, _>>()?,
                )?,
            };
            Ok(Pull::Changes {
                changes,
                has_more,
                epoch,
            })
        })
        .await
    }

    async fn snapshot(
        &self,
        account: AccountId,
        after: Option<SnapshotKey>,
        limit: u32,
    ) -> ServerStoreResult<Snapshot> {
        self.call(move |conn| {
            let account = account.to_string();
            let tx = conn.transaction()?;
            if let Some(key) = after {
                if epoch_facts(&tx, &account, key.epoch)? == EpochFacts::Unknown {
                    return Ok(Snapshot::Restored);
                }
            }
            let (epoch, _) = current_epoch(&tx)?;
            let head = match after {
                None => Some(Cursor::new(epoch, heads(&tx, &account)?.0)),
                Some(_) => None,
            };
            let (kind, id) = after
                .map(|k| (k.kind.as_str().to_owned(), k.id.to_string()))
                .unwrap_or_default();
            let candidates = tx
                .prepare_cached(
                    "SELECT kind, entity_id, COALESCE(length(body), 0) FROM records \
                     WHERE user_id = ?1 AND deleted = 0 AND (kind, entity_id) > (?2, ?3) \
                     ORDER BY kind, entity_id LIMIT ?4",
                )?
                .query_map(params![account, kind, id, i64::from(limit) + 1], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let sizes: Vec<u64> = candidates.iter().map(|c| c.2.max(0) as u64).collect();
            let (taken, has_more) = page_cut(&sizes, limit, PAGE_BYTES);
            let changes = match taken.checked_sub(1).and_then(|i| candidates.get(i)) {
                None => Vec::new(),
                Some((last_kind, last_id, _)) => page_of(
                    tx.prepare_cached(&format!(
                        "SELECT {RECORD_COLUMNS} FROM records WHERE user_id = ?1 AND deleted = 0 \
                         AND (kind, entity_id) > (?2, ?3) AND (kind, entity_id) <= (?4, ?5) \
                         ORDER BY kind, entity_id"
                    ))?
                    .query_map(params![account, kind, id, last_kind, last_id], read_record)?
                    .collect::<Result<Vec<_>, _>>()?,
                )?,
            };
            Ok(Snapshot::Page(SnapshotPage {
                changes,
                has_more,
                head,
                epoch,
            }))
        })
        .await
    }

    async fn purge(&self, plan: PurgePlan) -> ServerStoreResult<PurgeReport> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let horizon = plan.tombstones_before.as_millis();
            // The purge mark: stale writes to what is purged now stay
            // superseded (stamps compare as text).
            tx.execute(
                "UPDATE sync_heads SET purged_version = MAX(COALESCE(purged_version, ''), ( \
                     SELECT MAX(version) FROM records r WHERE r.user_id = sync_heads.user_id \
                     AND r.deleted = 1 AND r.stored_at < ?1)) \
                 WHERE EXISTS (SELECT 1 FROM records r WHERE r.user_id = sync_heads.user_id \
                     AND r.deleted = 1 AND r.stored_at < ?1)",
                [horizon],
            )?;
            tx.execute(
                "UPDATE sync_heads SET purged_seq = MAX(purged_seq, COALESCE(( \
                     SELECT MAX(seq) FROM records r WHERE r.user_id = sync_heads.user_id \
                     AND r.deleted = 1 AND r.stored_at < ?1), 0)) \
                 WHERE EXISTS (SELECT 1 FROM records r WHERE r.user_id = sync_heads.user_id \
                     AND r.deleted = 1 AND r.stored_at < ?1)",
                [horizon],
            )?;
            let tombstones = tx.execute(
                "DELETE FROM records WHERE deleted = 1 AND stored_at < ?1",
                [horizon],
            )?;
            let op_results = tx.execute(
                "DELETE FROM op_results WHERE recorded_at < ?1",
                [plan.op_results_before.as_millis()],
            )?;
            let sessions = tx.execute(
                "DELETE FROM sessions WHERE last_used_at < ?1 OR created_at < ?2",
                params![
                    plan.sessions_used_before.as_millis(),
                    plan.sessions_created_before.as_millis()
                ],
            )?;
            let throttle = tx.execute(
                "DELETE FROM login_throttle WHERE last_failure_at < ?1",
                [plan.throttle_before.as_millis()],
            )?;
            tx.commit()?;
            Ok(PurgeReport {
                tombstones: tombstones as u64,
                op_results: op_results as u64,
                sessions: sessions as u64,
                throttle: throttle as u64,
            })
        })
        .await
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// The simulation's restarts found this: a stopped server's last
    /// connection deleted `-wal`/`-shm` between the new server's check and
    /// its `chmod`, and the new server refused to start (NotFound).
    #[test]
    fn a_side_file_that_vanished_is_absent_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let side = dir.path().join("server.db-wal");
        std::fs::write(&side, b"").unwrap();
        std::fs::remove_file(&side).unwrap();
        narrow_side_file(&side).unwrap();
        assert!(!side.exists());
    }

    #[test]
    fn a_side_file_is_narrowed_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let side = dir.path().join("server.db-shm");
        std::fs::write(&side, b"").unwrap();
        std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o644)).unwrap();
        narrow_side_file(&side).unwrap();
        let mode = std::fs::metadata(&side).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
