//! [`PostgresServerStore`]: the backend for running several server processes
//! against one database (tokio-postgres with a deadpool pool).
//!
//! Per-account sequence numbers stay gap-free and ordered under concurrent
//! pushes from any number of processes: a push locks its account's
//! `sync_heads` row (`SELECT ... FOR UPDATE`) for the whole transaction.
//! Every push that applied something sends
//! `NOTIFY chatvault_poke, '<account>:<cursor>'` inside its transaction (so
//! it is delivered exactly when the commit is visible); each process
//! LISTENs on a dedicated connection, reconnecting with backoff, and feeds
//! its local poke hub.
//!
//! Connections use TLS as the URL's `sslmode` asks (libpq's meanings, on
//! rustls: see `pg_tls`).

use std::time::Duration;

use async_trait::async_trait;
use chatvault_core::{Change, Timestamp};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction,
};
use futures::future::try_join_all;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, IsolationLevel, Row};

use super::pg_tls::{MakeRustls, PgTarget};
use super::{census_entry, session_summary, SessionSummary};
use super::{
    check_cursor, outcome_to_db, page_cut, page_of, parse_epoch, parse_purge_mark, seen_outcome,
    wall_clock_ms, Account, AccountRow, CursorCheck, EpochFacts, KeysUpdate, NewAccount,
    NewSession, PokeSink, Pull, PurgePlan, PurgeReport, PushOutcome, RecordRow, ServerStore,
    ServerStoreError, ServerStoreResult, SessionInfo, Snapshot, SnapshotPage, VersionRow,
    ACCOUNT_COLUMNS, CURRENT_EPOCH, EPOCH_ORDINAL, INSERT_EPOCH, LATER_EPOCH_START,
    NOTE_FEED_EPOCH, PAGE_BYTES, RECORD_COLUMNS, RECORD_UPSERT_CONFLICT, REMARK_CONVERSATION,
    VERSION_COLUMNS,
};
use crate::auth::{random_bytes, ThrottleState};
use crate::push_plan::{plan, PushPlan, PushReads, PushState};
use crate::types::{
    AccountId, Cursor, Epoch, Seq, SessionHash, SnapshotKey, Username, WireKdfParams,
};

/// The NOTIFY channel pokes travel on.
const POKE_CHANNEL: &str = "chatvault_poke";

/// `application_name` of each process's LISTEN connection.
pub const LISTENER_APPLICATION_NAME: &str = "chatvault-server-listen";

/// Advisory lock keys (arbitrary constants, unique to chatvault).
const MIGRATION_LOCK: i64 = 0x6368_6174_7661_0001;
const PURGE_LOCK: i64 = 0x6368_6174_7661_0002;

/// Schema migrations, in order. Compared columns use the "C" collation so
/// text order is byte order (HLC stamps and ids compare as strings).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    username     TEXT NOT NULL UNIQUE,
    auth_hash    TEXT NOT NULL,
    kdf_m        BIGINT NOT NULL,
    kdf_t        BIGINT NOT NULL,
    kdf_p        BIGINT NOT NULL,
    salt         BYTEA NOT NULL,
    key_envelope TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE TABLE sync_heads (
    user_id    TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    head_seq   BIGINT NOT NULL DEFAULT 0,
    purged_seq BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
    token_hash   BYTEA PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    client       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE login_throttle (
    username        TEXT PRIMARY KEY,
    failures        BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL
);
CREATE TABLE records (
    user_id         TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind            TEXT COLLATE "C" NOT NULL,
    entity_id       TEXT COLLATE "C" NOT NULL,
    conversation_id TEXT,
    op_id           TEXT NOT NULL,
    version         TEXT COLLATE "C" NOT NULL,
    deleted         BOOLEAN NOT NULL,
    created_at      BIGINT,
    updated_at      BIGINT,
    owner           TEXT,
    body            BYTEA,
    deleted_at      BIGINT,
    seq             BIGINT NOT NULL,
    stored_at       BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind, entity_id)
);
CREATE UNIQUE INDEX records_feed ON records(user_id, seq);
CREATE INDEX records_messages ON records(user_id, conversation_id) WHERE kind = 'message';
CREATE INDEX records_tombstones ON records(stored_at) WHERE deleted;
CREATE TABLE op_results (
    user_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    op_id       TEXT NOT NULL,
    status      TEXT NOT NULL,
    seq         BIGINT,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, op_id)
);
CREATE INDEX op_results_age ON op_results(recorded_at);
"#,
    r#"
CREATE TABLE epochs (
    ordinal   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    opened_at BIGINT NOT NULL
);
CREATE TABLE feed_epochs (
    user_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    epoch     BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, epoch)
);
"#,
    r#"
ALTER TABLE records ADD COLUMN deletion_mark TEXT COLLATE "C";
ALTER TABLE sync_heads ADD COLUMN purged_version TEXT COLLATE "C";
"#,
    r#"
CREATE TABLE revoked_sessions (
    token_hash BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    revoked_at BIGINT NOT NULL
);
"#,
];

/// The PostgreSQL backend. Cheap to clone.
#[derive(Clone)]
pub struct PostgresServerStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: MakeRustls,
    /// The epoch this process began when it connected. Cursors name the
    /// current epoch (the newest any process began), read per request.
    epoch: Epoch,
}

impl std::fmt::Debug for PostgresServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServerStore")
            .finish_non_exhaustive()
    }
}

impl PostgresServerStore {
    /// Connects to `url` (`postgres://user@host:port/db`, with libpq's
    /// `sslmode` and `sslrootcert` for TLS) and brings the schema up to date
    /// (safe to run from several processes at once).
    pub async fn connect(url: &str) -> ServerStoreResult<Self> {
        let PgTarget { mut config, tls } = PgTarget::parse(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("chatvault-server");
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| ServerStoreError::Pool(e.to_string()))?;
        let mut store = PostgresServerStore {
            pool,
            config,
            tls,
            epoch: Epoch::random(),
        };
        store.migrate().await?;
        store.epoch = store.begin_epoch().await?;
        Ok(store)
    }

    async fn client(&self) -> ServerStoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => ServerStoreError::Postgres(e),
            other => ServerStoreError::Pool(other.to_string()),
        })
    }

    async fn migrate(&self) -> ServerStoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serializes concurrent startups of several processes.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await?;
        let current: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await?
            .get(0);
        let supported = MIGRATIONS.len() as i64;
        if current > supported {
            return Err(ServerStoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        for (done, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(done as i64 + 1)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a new epoch: every start of a server process begins one.
    async fn begin_epoch(&self) -> ServerStoreResult<Epoch> {
        let epoch = Epoch::random();
        self.client()
            .await?
            .execute(INSERT_EPOCH, &[&epoch.to_string(), &wall_clock_ms()])
            .await?;
        tracing::info!(%epoch, "began a new epoch of the server database");
        Ok(epoch)
    }
}

/// The current epoch and its ordinal.
async fn current_epoch(tx: &Transaction<'_>) -> ServerStoreResult<(Epoch, i64)> {
    let row = tx.query_one(CURRENT_EPOCH, &[]).await?;
    Ok((parse_epoch(row.try_get(0)?)?, row.try_get(1)?))
}

/// What the database knows about `epoch` for the account (see
/// [`EpochFacts`]); a legacy or absent epoch counts as the oldest.
async fn epoch_facts(
    tx: &Transaction<'_>,
    account: &str,
    epoch: Option<Epoch>,
) -> ServerStoreResult<EpochFacts> {
    let ordinal: i64 = match epoch {
        None => 0,
        Some(e) => match tx.query_opt(EPOCH_ORDINAL, &[&e.to_string()]).await? {
            Some(row) => row.try_get(0)?,
            None => return Ok(EpochFacts::Unknown),
        },
    };
    let start: Option<i64> = tx
        .query_one(LATER_EPOCH_START, &[&account, &ordinal])
        .await?
        .try_get(0)?;
    Ok(EpochFacts::Known {
        later_epoch_start: start.map(Seq::from_db),
    })
}

fn read_record(r: &Row) -> ServerStoreResult<RecordRow> {
    Ok(RecordRow {
        kind: r.try_get(0)?,
        entity_id: r.try_get(1)?,
        conversation_id: r.try_get(2)?,
        op_id: r.try_get(3)?,
        version: r.try_get(4)?,
        deleted: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        owner: r.try_get(8)?,
        body: r.try_get(9)?,
        deleted_at: r.try_get(10)?,
        seq: r.try_get(11)?,
        deletion_mark: r.try_get(12)?,
    })
}

fn read_account(r: &Row) -> ServerStoreResult<Account> {
    AccountRow {
        id: r.try_get(0)?,
        username: r.try_get(1)?,
        auth_hash: r.try_get(2)?,
        kdf_m: r.try_get(3)?,
        kdf_t: r.try_get(4)?,
        kdf_p: r.try_get(5)?,
        salt: r.try_get(6)?,
        key_envelope: r.try_get(7)?,
    }
    .into_account()
}

fn read_throttle(r: &Row) -> ServerStoreResult<ThrottleState> {
    let failures: i64 = r.try_get(0)?;
    Ok(ThrottleState {
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        last_failure_at: Timestamp(r.try_get(1)?),
    })
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Rows of a page query, split into the page and whether more follow.
fn page(rows: Vec<Row>) -> ServerStoreResult<Vec<super::SyncedChange>> {
    let rows = rows
        .iter()
        .map(read_record)
        .collect::<ServerStoreResult<Vec<_>>>()?;
    page_of(rows)
}

/// `'<account>:<cursor>'`, the NOTIFY payload.
fn poke_payload(account: AccountId, head: Cursor) -> String {
    format!("{account}:{head}")
}

fn parse_poke(payload: &str) -> Option<(AccountId, Cursor)> {
    let (account, cursor) = payload.split_once(':')?;
    Some((account.parse().ok()?, cursor.parse::<Cursor>().ok()?))
}

/// A live LISTEN connection: the client keeps it open, `notifications`
/// yields what arrives.
struct Listener {
    _client: tokio_postgres::Client,
    notifications: mpsc::Receiver<String>,
}

async fn listen(config: &tokio_postgres::Config, tls: &MakeRustls) -> ServerStoreResult<Listener> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL LISTEN connection failed");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {POKE_CHANNEL}"))
        .await?;
    Ok(Listener {
        _client: client,
        notifications: rx,
    })
}

async fn forward_pokes(
    config: tokio_postgres::Config,
    tls: MakeRustls,
    mut listener: Listener,
    sink: PokeSink,
) {
    loop {
        while let Some(payload) = listener.notifications.recv().await {
            match parse_poke(&payload) {
                Some((account, head)) => sink(account, head),
                None => tracing::warn!(%payload, "ignoring a malformed poke notification"),
            }
        }
        tracing::warn!("lost the PostgreSQL LISTEN connection; reconnecting");
        let mut delay = Duration::from_millis(100);
        listener = loop {
            tokio::time::sleep(delay).await;
            match listen(&config, &tls).await {
                Ok(l) => {
                    tracing::info!("PostgreSQL LISTEN connection restored");
                    break l;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "PostgreSQL LISTEN reconnect failed");
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
    }
}

// The push's reads look up each op id and record by its whole primary key,
// one index probe per id (a LATERAL subquery with LIMIT 1 is never
// flattened into a join). The obvious `op_id = ANY($2)` form lets the
// planner choose, and without statistics — a fresh or fast-growing table,
// before autovacuum's first ANALYZE — it chose to filter every row the
// account held: a 100,000-change push scanned the account once per batch
// (quadratic; 57 ms per batch at 10,000 rows, against 1 ms now).

/// The remembered outcomes of `$2` (op ids) for account `$1`.
const SEEN_OPS: &str = "SELECT o.op_id, o.status, o.seq FROM unnest($2::text[]) AS ids(id) \
     CROSS JOIN LATERAL (SELECT op_id, status, seq FROM op_results \
     WHERE user_id = $1 AND op_id = ids.id LIMIT 1) o";

/// The stored versions of the records `($2[i], $3[i])` (kind, id) of
/// account `$1`.
fn stored_versions() -> String {
    format!(
        "SELECT r.* FROM unnest($2::text[], $3::text[]) AS ids(kind, id) \
         CROSS JOIN LATERAL (SELECT {VERSION_COLUMNS} FROM records WHERE user_id = $1 \
         AND kind = ids.kind COLLATE \"C\" AND entity_id = ids.id COLLATE \"C\" LIMIT 1) r"
    )
}

/// Everything the planner needs for a batch, in two queries.
async fn read_push_state(
    tx: &Transaction<'_>,
    account: &str,
    reads: &PushReads,
    head: Seq,
) -> ServerStoreResult<PushState> {
    let op_ids: Vec<String> = reads.op_ids.iter().map(ToString::to_string).collect();
    let seen_stmt = tx.prepare_cached(SEEN_OPS).await?;
    let seen = tx
        .query(&seen_stmt, &[&account, &op_ids])
        .await?
        .iter()
        .map(|r| {
            let op_id: String = r.try_get(0)?;
            let status: String = r.try_get(1)?;
            seen_outcome(&op_id, &status, r.try_get(2)?)
        })
        .collect::<ServerStoreResult<_>>()?;
    let (kinds, ids): (Vec<&str>, Vec<String>) = reads
        .records
        .iter()
        .map(|k| (k.kind.as_str(), k.id.to_string()))
        .unzip();
    let records_stmt = tx.prepare_cached(&stored_versions()).await?;
    let records = tx
        .query(&records_stmt, &[&account, &kinds, &ids])
        .await?
        .iter()
        .map(|r| {
            VersionRow {
                kind: r.try_get(0)?,
                entity_id: r.try_get(1)?,
                conversation_id: r.try_get(2)?,
                version: r.try_get(3)?,
                deleted: r.try_get(4)?,
                body: r.try_get(5)?,
                deletion_mark: r.try_get(6)?,
            }
            .into_stored()
        })
        .collect::<ServerStoreResult<_>>()?;
    Ok(PushState {
        head,
        seen,
        records,
        purged: None,
    })
}

/// Writes a planned batch, in the order [`PushPlan`] prescribes. The rows
/// of a step go out pipelined on the one connection (tokio-postgres sends
/// concurrent queries back to back), so a batch costs a few round trips,
/// not one per change.
/// A batch of [`RecordRow`]s as one array per column, for an `unnest`
/// insert.
#[derive(Default)]
struct RecordColumns {
    kind: Vec<String>,
    entity_id: Vec<String>,
    conversation_id: Vec<Option<String>>,
    op_id: Vec<String>,
    version: Vec<String>,
    deleted: Vec<bool>,
    created_at: Vec<Option<i64>>,
    updated_at: Vec<Option<i64>>,
    owner: Vec<Option<String>>,
    body: Vec<Option<Vec<u8>>>,
    deleted_at: Vec<Option<i64>>,
    seq: Vec<i64>,
    deletion_mark: Vec<Option<String>>,
}

impl RecordColumns {
    fn of(rows: impl Iterator<Item = RecordRow>) -> Self {
        let mut c = RecordColumns::default();
        for row in rows {
            c.kind.push(row.kind);
            c.entity_id.push(row.entity_id);
            c.conversation_id.push(row.conversation_id);
            c.op_id.push(row.op_id);
            c.version.push(row.version);
            c.deleted.push(row.deleted);
            c.created_at.push(row.created_at);
            c.updated_at.push(row.updated_at);
            c.owner.push(row.owner);
            c.body.push(row.body);
            c.deleted_at.push(row.deleted_at);
            c.seq.push(row.seq);
            c.deletion_mark.push(row.deletion_mark);
        }
        c
    }
}

async fn write_plan(
    tx: &Transaction<'_>,
    account: &str,
    plan: &PushPlan<'_>,
    now: Timestamp,
) -> ServerStoreResult<()> {
    let now = now.as_millis();
    let cover = tx
        .prepare_cached(
            "DELETE FROM records WHERE user_id = $1 AND kind = 'message' \
             AND conversation_id = $2 AND version <= $3",
        )
        .await?;
    try_join_all(plan.covered.iter().map(|(conversation, version)| {
        let (conversation, version) = (conversation.to_string(), version.to_string());
        let cover = &cover;
        async move {
            tx.execute(cover, &[&account, &conversation, &version])
                .await
        }
    }))
    .await?;
    // The batch's rows in one statement (one round trip, one executor
    // start): `writes` holds each record once, so no row is hit twice.
    let upsert = tx
        .prepare_cached(&format!(
            "INSERT INTO records (user_id, kind, entity_id, conversation_id, op_id, version, \
             deleted, created_at, updated_at, owner, body, deleted_at, seq, stored_at, \
             deletion_mark) \
             SELECT $1, u.kind, u.entity_id, u.conversation_id, u.op_id, u.version, u.deleted, \
             u.created_at, u.updated_at, u.owner, u.body, u.deleted_at, u.seq, $2, \
             u.deletion_mark \
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::bool[], $9::int8[], $10::int8[], $11::text[], $12::bytea[], $13::int8[], \
             $14::int8[], $15::text[]) AS u(kind, entity_id, conversation_id, op_id, version, \
             deleted, created_at, updated_at, owner, body, deleted_at, seq, deletion_mark) \
             {RECORD_UPSERT_CONFLICT}"
        ))
        .await?;
    let rows = RecordColumns::of(plan.writes.iter().map(RecordRow::from_write));
    if !rows.kind.is_empty() {
        tx.execute(
            &upsert,
            &[
                &account,
                &now,
                &rows.kind,
                &rows.entity_id,
                &rows.conversation_id,
                &rows.op_id,
                &rows.version,
                &rows.deleted,
                &rows.created_at,
                &rows.updated_at,
                &rows.owner,
                &rows.body,
                &rows.deleted_at,
                &rows.seq,
                &rows.deletion_mark,
            ],
        )
        .await?;
    }
    // One at a time: a remarked row moves to its new number after the
    // writes took theirs.
    for (conversation, mark, seq) in &plan.remarks {
        tx.execute(
            REMARK_CONVERSATION,
            &[
                &mark.to_string(),
                &seq.to_db(),
                &account,
                &conversation.to_string(),
            ],
        )
        .await?;
    }
    let remember = tx
        .prepare_cached(
            "INSERT INTO op_results (user_id, op_id, status, seq, recorded_at) \
             SELECT $1, u.op_id, u.status, u.seq, $2 \
             FROM unnest($3::text[], $4::text[], $5::int8[]) AS u(op_id, status, seq)",
        )
        .await?;
    if !plan.remember.is_empty() {
        let mut op_ids = Vec::with_capacity(plan.remember.len());
        let mut statuses = Vec::with_capacity(plan.remember.len());
        let mut seqs = Vec::with_capacity(plan.remember.len());
        for (op_id, outcome) in &plan.remember {
            let (status, seq) = outcome_to_db(*outcome);
            op_ids.push(op_id.to_string());
            statuses.push(status);
            seqs.push(seq);
        }
        tx.execute(&remember, &[&account, &now, &op_ids, &statuses, &seqs])
            .await?;
    }
    tx.execute(
        "UPDATE sync_heads SET head_seq = $2 WHERE user_id = $1",
        &[&account, &plan.head.to_db()],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl ServerStore for PostgresServerStore {
    async fn server_secret(&self) -> ServerStoreResult<[u8; 32]> {
        let fresh: [u8; 32] =
            random_bytes().map_err(|e| ServerStoreError::Random(e.to_string()))?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO server_meta (key, value) VALUES ('secret', $1) \
                 ON CONFLICT (key) DO NOTHING",
                &[&fresh.as_slice()],
            )
            .await?;
        let stored: Vec<u8> = client
            .query_one("SELECT value FROM server_meta WHERE key = 'secret'", &[])
            .await?
            .try_get(0)?;
        <[u8; 32]>::try_from(stored.as_slice())
            .map_err(|_| ServerStoreError::Corrupt("server secret is not 32 bytes".into()))
    }

    async fn create_account(&self, a: NewAccount) -> ServerStoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = a.id.to_string();
        let inserted = tx
            .execute(
                "INSERT INTO accounts (id, username, auth_hash, kdf_m, kdf_t, kdf_p, salt, \
                 key_envelope, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &id,
                    &a.username.as_str(),
                    &a.auth_hash,
                    &i64::from(a.kdf.m_cost_kib),
                    &i64::from(a.kdf.t_cost),
                    &i64::from(a.kdf.p_cost),
                    &a.salt.0.as_slice(),
                    &a.key_envelope.to_json(),
                    &a.created_at.as_millis(),
                ],
            )
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(ServerStoreError::UsernameTaken),
            other => other?,
        };
        tx.execute("INSERT INTO sync_heads (user_id) VALUES ($1)", &[&id])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn account_by_username(&self, username: &Username) -> ServerStoreResult<Option<Account>> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = $1"),
                &[&username.as_str()],
            )
            .await?
            .map(|r| read_account(&r))
            .transpose()
    }

    async fn account(&self, id: AccountId) -> ServerStoreResult<Option<Account>> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"),
                &[&id.to_string()],
            )
            .await?
            .map(|r| read_account(&r))
            .transpose()
    }

    async fn stored_bytes(&self, account: AccountId) -> ServerStoreResult<u64> {
        let client = self.client().await?;
        let bytes: i64 = client
            .query_one(
                "SELECT COALESCE(SUM(octet_length(body)), 0)::BIGINT FROM records \
                 WHERE user_id = $1",
                &[&account.to_string()],
            )
            .await?
            .try_get(0)?;
        Ok(bytes.max(0) as u64)
    }

    async fn kdf_census(&self) -> ServerStoreResult<Vec<(WireKdfParams, u64)>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT kdf_m, kdf_t, kdf_p, COUNT(*) FROM accounts \
                 GROUP BY kdf_m, kdf_t, kdf_p ORDER BY kdf_m, kdf_t, kdf_p",
                &[],
            )
            .await?
            .iter()
            .map(|r| census_entry(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
            .collect()
    }

    async fn update_keys(&self, id: AccountId, update: KeysUpdate) -> ServerStoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = id.to_string();
        let envelope = update.key_envelope.to_json();
        let changed = match &update.credentials {
            None => {
                tx.execute(
                    "UPDATE accounts SET key_envelope = $2 WHERE id = $1",
                    &[&id, &envelope],
                )
                .await?
            }
            Some(c) => {
                tx.execute(
                    "UPDATE accounts SET key_envelope = $2, auth_hash = $3, kdf_m = $4, \
                     kdf_t = $5, kdf_p = $6, salt = $7 WHERE id = $1",
                    &[
                        &id,
                        &envelope,
                        &c.auth_hash,
                        &i64::from(c.kdf.m_cost_kib),
                        &i64::from(c.kdf.t_cost),
                        &i64::from(c.kdf.p_cost),
                        &c.salt.0.as_slice(),
                    ],
                )
                .await?
            }
        };
        if changed == 0 {
            return Ok(false);
        }
        if update.credentials.is_some() {
            tx.execute(
                "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2",
                &[&id, &update.keep_session.0.as_slice()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn throttle(&self, username: &Username) -> ServerStoreResult<Option<ThrottleState>> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT failures, last_failure_at FROM login_throttle WHERE username = $1",
                &[&username.as_str()],
            )
            .await?
            .map(|r| read_throttle(&r))
            .transpose()
    }

    async fn record_login_failure(
        &self,
        username: &Username,
        now: Timestamp,
    ) -> ServerStoreResult<ThrottleState> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO login_throttle (username, failures, last_failure_at) \
                 VALUES ($1, 1, $2) ON CONFLICT (username) DO UPDATE SET \
                 failures = LEAST(login_throttle.failures + 1, 1000000), \
                 last_failure_at = excluded.last_failure_at \
                 RETURNING failures, last_failure_at",
                &[&username.as_str(), &now.as_millis()],
            )
            .await?;
        read_throttle(&row)
    }

    async fn clear_login_failures(&self, username: &Username) -> ServerStoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM login_throttle WHERE username = $1",
                &[&username.as_str()],
            )
            .await?;
        Ok(())
    }

    async fn create_session(&self, s: NewSession) -> ServerStoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO sessions (token_hash, user_id, client, created_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $4)",
                &[
                    &s.hash.0.as_slice(),
                    &s.account.to_string(),
                    &s.client.as_str(),
                    &s.created_at.as_millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn session(&self, hash: &SessionHash) -> ServerStoreResult<Option<SessionInfo>> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT user_id, created_at, last_used_at FROM sessions WHERE token_hash = $1",
                &[&hash.0.as_slice()],
            )
            .await?
        else {
            return Ok(None);
        };
        let user: String = row.try_get(0)?;
        Ok(Some(SessionInfo {
            account: user
                .parse()
                .map_err(|e| ServerStoreError::Corrupt(format!("session user: {e}")))?,
            created_at: Timestamp(row.try_get(1)?),
            last_used_at: Timestamp(row.try_get(2)?),
        }))
    }

    async fn touch_session(&self, hash: &SessionHash, now: Timestamp) -> ServerStoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sessions SET last_used_at = GREATEST(last_used_at, $2) \
                 WHERE token_hash = $1",
                &[&hash.0.as_slice(), &now.as_millis()],
            )
            .await?;
        Ok(())
    }

    async fn revoke_session(&self, hash: &SessionHash) -> ServerStoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM sessions WHERE token_hash = $1",
                &[&hash.0.as_slice()],
            )
            .await?;
        Ok(())
    }

    async fn sessions_of(&self, account: AccountId) -> ServerStoreResult<Vec<SessionSummary>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT token_hash, client, created_at, last_used_at FROM sessions \
                 WHERE user_id = $1 ORDER BY last_used_at DESC",
                &[&account.to_string()],
            )
            .await?;
        rows.iter()
            .map(|r| session_summary(r.get::<_, &[u8]>(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    async fn revoke_other_sessions(
        &self,
        account: AccountId,
        keep: &SessionHash,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> ServerStoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let account = account.to_string();
        tx.execute(
            "DELETE FROM revoked_sessions WHERE revoked_at < $1",
            &[&forget_before.0],
        )
        .await?;
        tx.execute(
            "INSERT INTO revoked_sessions (token_hash, user_id, revoked_at) \
             SELECT token_hash, user_id, $3 FROM sessions \
             WHERE user_id = $1 AND token_hash <> $2 \
             ON CONFLICT (token_hash) DO UPDATE SET revoked_at = EXCLUDED.revoked_at",
            &[&account, &keep.0.as_slice(), &now.0],
        )
        .await?;
        let n = tx
            .execute(
                "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2",
                &[&account, &keep.0.as_slice()],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn was_revoked(&self, hash: &SessionHash) -> ServerStoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM revoked_sessions WHERE token_hash = $1",
                &[&hash.0.as_slice()],
            )
            .await?
            .is_some())
    }

    async fn push(
        &self,
        account_id: AccountId,
        changes: &[Change],
        now: Timestamp,
    ) -> ServerStoreResult<PushOutcome> {
        let account = account_id.to_string();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO sync_heads (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
            &[&account],
        )
        .await?;
        // The row lock serializes pushes of this account across processes.
        let heads = tx
            .query_one(
                "SELECT head_seq, purged_version FROM sync_heads WHERE user_id = $1 FOR UPDATE",
                &[&account],
            )
            .await?;
        let head = Seq::from_db(heads.try_get(0)?);
        let purged = parse_purge_mark(heads.try_get(1)?)?;
        let (epoch, ordinal) = current_epoch(&tx).await?;
        tx.execute(
            NOTE_FEED_EPOCH,
            &[&account, &ordinal, &head.to_db().saturating_add(1)],
        )
        .await?;
        let mut state = read_push_state(&tx, &account, &PushReads::of(changes), head).await?;
        state.purged = purged;
        let plan = plan(changes, &state);
        write_plan(&tx, &account, &plan, now).await?;
        let cursor = Cursor::new(epoch, plan.head);
        if plan.applied_any(head) {
            // Delivered to every listener when (and only if) this commits.
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&POKE_CHANNEL, &poke_payload(account_id, cursor)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(PushOutcome {
            results: plan.outcomes,
            head: cursor,
        })
    }

    fn epoch(&self) -> Epoch {
        self.epoch
    }

    async fn pull(&self, account: AccountId, after: Cursor, limit: u32) -> ServerStoreResult<Pull> {
        let account = account.to_string();
        let mut client = self.client().await?;
        // One snapshot for the resync check and the page, so a purge running
        // in between cannot hide a tombstone from this client.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let (head, purged) = match tx
            .query_opt(
                "SELECT head_seq, purged_seq FROM sync_heads WHERE user_id = $1",
                &[&account],
            )
            .await?
        {
            Some(r) => (Seq::from_db(r.try_get(0)?), Seq::from_db(r.try_get(1)?)),
            None => (Seq(0), Seq(0)),
        };
        let facts = epoch_facts(&tx, &account, after.epoch).await?;
        match check_cursor(after.seq, facts, head, purged) {
            CursorCheck::Restored => return Ok(Pull::Restored),
            CursorCheck::ResyncRequired => return Ok(Pull::ResyncRequired),
            CursorCheck::Continue => {}
        }
        let (epoch, _) = current_epoch(&tx).await?;
        let after = after.seq;
        // Sizes first (octet_length reads no TOASTed body), then the rows.
        let candidates = tx
            .query(
                "SELECT seq, COALESCE(octet_length(body), 0)::BIGINT FROM records \
                 WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&account, &after.to_db(), &(i64::from(limit) + 1)],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?)))
            .collect::<ServerStoreResult<Vec<_>>>()?;
        let sizes: Vec<u64> = candidates.iter().map(|c| c.1.max(0) as u64).collect();
        let (taken, has_more) = page_cut(&sizes, limit, PAGE_BYTES);
        let rows = match taken.checked_sub(1).and_then(|i| candidates.get(i)) {
            None => Vec::new(),
            Some((last, _)) => {
                tx.query(
                    &format!(
                        "SELECT {RECORD_COLUMNS} FROM records WHERE user_id = $1 AND seq > $2 \
                         AND seq <= $3 ORDER BY seq"
                    ),
                    &[&account, &after.to_db(), last],
                )
                .await?
            }
        };
        tx.commit().await?;
        let changes = page(rows)?;
        Ok(Pull::Changes {
            changes,
            has_more,
            epoch,
        })
    }

    async fn snapshot(
        &self,
        account: AccountId,
        after: Option<SnapshotKey>,
        limit: u32,
    ) -> ServerStoreResult<Snapshot> {
        let account = account.to_string();
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        if let Some(key) = after {
            if epoch_facts(&tx, &account, key.epoch).await? == EpochFacts::Unknown {
                return Ok(Snapshot::Restored);
            }
        }
        let (epoch, _) = current_epoch(&tx).await?;
        let head = match after {
            Some(_) => None,
            None => Some(Cursor::new(
                epoch,
                match tx
                    .query_opt(
                        "SELECT head_seq FROM sync_heads WHERE user_id = $1",
                        &[&account],
                    )
                    .await?
                {
                    Some(r) => Seq::from_db(r.try_get(0)?),
                    None => Seq(0),
                },
            )),
        };
        let (kind, id) = after
            .map(|k| (k.kind.as_str().to_owned(), k.id.to_string()))
            .unwrap_or_default();
        let candidates = tx
            .query(
                "SELECT kind, entity_id, COALESCE(octet_length(body), 0)::BIGINT FROM records \
                 WHERE user_id = $1 AND NOT deleted AND (kind, entity_id) > ($2, $3) \
                 ORDER BY kind, entity_id LIMIT $4",
                &[&account, &kind, &id, &(i64::from(limit) + 1)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, String>(0)?,
                    r.try_get::<_, String>(1)?,
                    r.try_get::<_, i64>(2)?,
                ))
            })
            .collect::<ServerStoreResult<Vec<_>>>()?;
        let sizes: Vec<u64> = candidates.iter().map(|c| c.2.max(0) as u64).collect();
        let (taken, has_more) = page_cut(&sizes, limit, PAGE_BYTES);
        let rows = match taken.checked_sub(1).and_then(|i| candidates.get(i)) {
            None => Vec::new(),
            Some((last_kind, last_id, _)) => {
                tx.query(
                    &format!(
                        "SELECT {RECORD_COLUMNS} FROM records WHERE user_id = $1 AND NOT deleted \
                         AND (kind, entity_id) > ($2, $3) AND (kind, entity_id) <= ($4, $5) \
                         ORDER BY kind, entity_id"
                    ),
                    &[&account, &kind, &id, last_kind, last_id],
                )
                .await?
            }
        };
        tx.commit().await?;
        let changes = page(rows)?;
        Ok(Snapshot::Page(SnapshotPage {
            changes,
            has_more,
            head,
            epoch,
        }))
    }

    async fn purge(&self, plan: PurgePlan) -> ServerStoreResult<PurgeReport> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // One purge at a time across processes; a busy lock means another
        // process is doing this very work right now.
        let got: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PURGE_LOCK])
            .await?
            .try_get(0)?;
        if !got {
            return Ok(PurgeReport::default());
        }
        let horizon = plan.tombstones_before.as_millis();
        tx.execute(
            "UPDATE sync_heads h SET purged_seq = GREATEST(h.purged_seq, p.max_seq), \
                 purged_version = GREATEST(h.purged_version, p.max_version) \
             FROM (SELECT user_id, MAX(seq) AS max_seq, MAX(version) AS max_version \
                   FROM records WHERE deleted AND stored_at < $1 GROUP BY user_id) p \
             WHERE h.user_id = p.user_id",
            &[&horizon],
        )
        .await?;
        let tombstones = tx
            .execute(
                "DELETE FROM records WHERE deleted AND stored_at < $1",
                &[&horizon],
            )
            .await?;
        let op_results = tx
            .execute(
                "DELETE FROM op_results WHERE recorded_at < $1",
                &[&plan.op_results_before.as_millis()],
            )
            .await?;
        let sessions = tx
            .execute(
                "DELETE FROM sessions WHERE last_used_at < $1 OR created_at < $2",
                &[
                    &plan.sessions_used_before.as_millis(),
                    &plan.sessions_created_before.as_millis(),
                ],
            )
            .await?;
        let throttle = tx
            .execute(
                "DELETE FROM login_throttle WHERE last_failure_at < $1",
                &[&plan.throttle_before.as_millis()],
            )
            .await?;
        tx.commit().await?;
        Ok(PurgeReport {
            tombstones,
            op_results,
            sessions,
            throttle,
        })
    }

    async fn start_poke_listener(
        &self,
        sink: PokeSink,
    ) -> ServerStoreResult<Option<tokio::task::JoinHandle<()>>> {
        let mut config = self.config.clone();
        // Tells the long-lived LISTEN connection apart in pg_stat_activity.
        config.application_name(LISTENER_APPLICATION_NAME);
        let listener = listen(&config, &self.tls).await?;
        Ok(Some(tokio::spawn(forward_pokes(
            config,
            self.tls.clone(),
            listener,
            sink,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The push's reads stay index probes on a table without statistics
    /// (as a new account's is) however many rows the account holds.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn push_reads_probe_the_index_without_statistics() {
        let Some(db) = crate::testing::PgDatabase::create().await else {
            return;
        };
        let store = PostgresServerStore::connect(&db.url).await.unwrap();
        let client = store.client().await.unwrap();
        client
            .batch_execute(
                "INSERT INTO accounts VALUES ('a', 'alice', '', 0, 0, 0, '', '', 0); \
                 INSERT INTO records (user_id, kind, entity_id, op_id, version, deleted, \
                 seq, stored_at) SELECT 'a', 'message', 'm' || g, 'o' || g, 'v', false, g, 0 \
                 FROM generate_series(1, 20000) g; \
                 INSERT INTO op_results SELECT 'a', 'o' || g, 'applied', g, 0 \
                 FROM generate_series(1, 20000) g;",
            )
            .await
            .unwrap();
        // Half stored, half new, as in a retried batch.
        let ids: Vec<String> = (19_751..20_251).map(|i| format!("m{i}")).collect();
        let ops: Vec<String> = (19_751..20_251).map(|i| format!("o{i}")).collect();
        let kinds = vec!["message"; ids.len()];
        let account = "a";
        for (sql, params) in [
            (
                SEEN_OPS.to_string(),
                vec![&account as &(dyn tokio_postgres::types::ToSql + Sync), &ops],
            ),
            (stored_versions(), vec![&account, &kinds, &ids]),
        ] {
            let rows = client
                .query(&format!("EXPLAIN ANALYZE {sql}"), &params)
                .await
                .unwrap();
            let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let plan = plan.join("\n");
            assert!(!plan.contains("Seq Scan"), "{sql}: {plan}");
            assert!(!plan.contains("Rows Removed by Filter"), "{sql}: {plan}");
            assert!(
                plan.contains("Index Only Scan") || plan.contains("Index Scan"),
                "{plan}"
            );
        }
        let seen = client.query(SEEN_OPS, &[&account, &ops]).await.unwrap();
        assert_eq!(seen.len(), 250);
        let stored = client
            .query(&stored_versions(), &[&account, &kinds, &ids])
            .await
            .unwrap();
        assert_eq!(stored.len(), 250);
    }

    #[test]
    fn poke_payloads_round_trip_and_reject_garbage() {
        let a = AccountId::new();
        let head = Cursor::new(Epoch::random(), Seq(7));
        assert_eq!(parse_poke(&poke_payload(a, head)), Some((a, head)));
        assert_eq!(parse_poke("nope"), None);
        assert_eq!(parse_poke(&format!("{a}:7")), None);
    }
}
