//! Server storage: the [`ServerStore`] trait every backend implements, the
//! values that cross it, and [`StoreError`].
//!
//! Backends: [`SqliteStore`] (embedded, one server process) and
//! [`PostgresStore`] (several server processes sharing one database, pokes
//! fanned out with LISTEN/NOTIFY). Both pass one shared test suite.
//!
//! The stores only move bytes: sync decisions come from `crate::sync`,
//! credential rules from `crate::auth`. A store must never decode a record
//! body, and every query that touches account data is keyed by the
//! [`AccountId`] it is given — there is no query that could reach another
//! account's rows.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chatvault_core::{
    Body, Change, ChangeOp, DeletePayload, EntityKind, Hlc, OpId, RecordId, Timestamp,
    UpsertPayload, UserId,
};
use serde::Serialize;

pub use postgres::{PostgresStore, LISTENER_APPLICATION_NAME};
pub use sqlite::SqliteStore;

use crate::auth::ThrottleState;
use crate::config::DatabaseUrl;
use crate::types::{
    AccountId, ClientKind, KdfParams, KeyEnvelope, Salt, Seq, SessionHash, SnapshotKey, Username,
};

/// Everything that can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create_account` with a username that exists.
    #[error("username is already registered")]
    UsernameTaken,
    /// The database URL cannot be used.
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("PostgreSQL connection pool: {0}")]
    Pool(String),
    /// The database was written by a newer server.
    #[error("database schema version {found} is newer than this server supports ({supported}); upgrade the server")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A stored value does not parse (the database was edited by hand or
    /// damaged).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A blocking storage task died.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The operating system's random source failed.
    #[error("OS random source failed: {0}")]
    Random(String),
    /// The SQLite file belongs to something else (a client vault, another
    /// program): refused rather than adding server tables to it.
    #[error("not a chatvault server database: {0}")]
    NotAServerDatabase(String),
    /// Creating the database file's directory failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A new account, with its credentials already hashed.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Fresh id.
    pub id: AccountId,
    /// Unique name.
    pub username: Username,
    /// Argon2id PHC hash of the auth key.
    pub auth_hash: String,
    /// The client's KDF parameters.
    pub kdf: KdfParams,
    /// The client's KDF salt.
    pub salt: Salt,
    /// The client's wrapped keys.
    pub key_envelope: KeyEnvelope,
    /// Registration time.
    pub created_at: Timestamp,
}

/// A stored account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Id.
    pub id: AccountId,
    /// Name.
    pub username: Username,
    /// Argon2id PHC hash of the auth key.
    pub auth_hash: String,
    /// The client's KDF parameters.
    pub kdf: KdfParams,
    /// The client's KDF salt.
    pub salt: Salt,
    /// The client's wrapped keys.
    pub key_envelope: KeyEnvelope,
}

/// New credentials after a passphrase change.
#[derive(Debug, Clone)]
pub struct NewCredentials {
    /// Hash of the new auth key.
    pub auth_hash: String,
    /// KDF parameters of the new passphrase.
    pub kdf: KdfParams,
    /// Salt of the new passphrase.
    pub salt: Salt,
}

/// A replacement key envelope, optionally with new credentials.
#[derive(Debug, Clone)]
pub struct KeysUpdate {
    /// The new envelope.
    pub key_envelope: KeyEnvelope,
    /// New credentials; when present every session but `keep_session` is
    /// revoked in the same transaction.
    pub credentials: Option<NewCredentials>,
    /// The session making the change.
    pub keep_session: SessionHash,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Hash of its token.
    pub hash: SessionHash,
    /// Its account.
    pub account: AccountId,
    /// Who it was issued to.
    pub client: ClientKind,
    /// Login time (also the first "last used" time).
    pub created_at: Timestamp,
}

/// A stored session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its account.
    pub account: AccountId,
    /// Login time.
    pub created_at: Timestamp,
    /// Last authenticated request (to within a minute).
    pub last_used_at: Timestamp,
}

/// One of an account's sessions, as listed to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Its token hash (the store key; never the token).
    pub hash: SessionHash,
    /// `browser`, `native` or `any`, as given at login.
    pub client: String,
    /// Login time.
    pub created_at: Timestamp,
    /// Last authenticated request (to within a minute).
    pub last_used_at: Timestamp,
}

/// What happened to one admitted change of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written, with this sequence number.
    Applied(Seq),
    /// Accepted but not written: the server holds a newer version.
    Superseded,
}

/// The result of a push batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// One outcome per change, in order.
    pub results: Vec<Outcome>,
    /// The account's feed head after the batch.
    pub head: Seq,
}

/// A record's latest change and the sequence number it was written at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncedChange {
    /// Position in the account's feed.
    pub seq: u64,
    /// The change, exactly as pushed.
    #[serde(flatten)]
    pub change: Change,
}

/// The answer to a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pull {
    /// Changes after the cursor, in sequence order.
    Changes {
        /// The changes.
        changes: Vec<SyncedChange>,
        /// Whether more follow.
        has_more: bool,
    },
    /// The cursor predates purged tombstones (or is ahead of this server's
    /// feed): the client must rebuild from a snapshot.
    ResyncRequired,
}

/// One page of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    /// Live records (no tombstones), ordered by kind then id.
    pub changes: Vec<SyncedChange>,
    /// Whether more pages follow.
    pub has_more: bool,
    /// On the first page: the feed head read in the same transaction, where
    /// pulling resumes after the snapshot.
    pub head: Option<Seq>,
}

/// What a maintenance pass deletes: everything older than these times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePlan {
    /// Tombstones stored before this are dropped (the horizon).
    pub tombstones_before: Timestamp,
    /// Remembered push results before this are forgotten.
    pub op_results_before: Timestamp,
    /// Sessions unused since before this are expired.
    pub sessions_used_before: Timestamp,
    /// Sessions created before this are expired.
    pub sessions_created_before: Timestamp,
    /// Throttle entries whose last failure is before this are forgotten.
    pub throttle_before: Timestamp,
}

/// How much a maintenance pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Tombstones dropped.
    pub tombstones: u64,
    /// Push results forgotten.
    pub op_results: u64,
    /// Sessions expired.
    pub sessions: u64,
    /// Throttle entries forgotten.
    pub throttle: u64,
}

/// Receives `(account, head)` for commits made by any server process that
/// shares the database.
pub type PokeSink = Arc<dyn Fn(AccountId, Seq) + Send + Sync>;

/// The server's persistence. All methods are atomic; every account-data
/// method is scoped to the account it is given.
#[async_trait]
pub trait ServerStore: Send + Sync + 'static {
    /// The server's 32-byte secret (for fake prelogin salts), created on
    /// first use and the same for every process sharing the database.
    async fn server_secret(&self) -> StoreResult<[u8; 32]>;

    /// Creates an account ([`StoreError::UsernameTaken`] if the name exists).
    async fn create_account(&self, account: NewAccount) -> StoreResult<()>;

    /// Looks an account up by name.
    async fn account_by_username(&self, username: &Username) -> StoreResult<Option<Account>>;

    /// Looks an account up by id.
    async fn account(&self, id: AccountId) -> StoreResult<Option<Account>>;

    /// Replaces the key envelope (and maybe the credentials). `false` if the
    /// account does not exist.
    async fn update_keys(&self, id: AccountId, update: KeysUpdate) -> StoreResult<bool>;

    /// The failed-login state of a username, if any.
    async fn throttle(&self, username: &Username) -> StoreResult<Option<ThrottleState>>;

    /// Counts one more failed login (atomically) and returns the new state.
    async fn record_login_failure(
        &self,
        username: &Username,
        now: Timestamp,
    ) -> StoreResult<ThrottleState>;

    /// Forgets failed logins after a success.
    async fn clear_login_failures(&self, username: &Username) -> StoreResult<()>;

    /// Stores a new session.
    async fn create_session(&self, session: NewSession) -> StoreResult<()>;

    /// Looks a session up by token hash.
    async fn session(&self, hash: &SessionHash) -> StoreResult<Option<SessionInfo>>;

    /// Records that a session was used at `now`.
    async fn touch_session(&self, hash: &SessionHash, now: Timestamp) -> StoreResult<()>;

    /// Deletes a session.
    async fn revoke_session(&self, hash: &SessionHash) -> StoreResult<()>;

    /// Every session of `account`, most recently used first.
    async fn sessions_of(&self, account: AccountId) -> StoreResult<Vec<SessionSummary>>;

    /// Deletes every session of `account` but `keep`; how many went.
    async fn revoke_other_sessions(
        &self,
        account: AccountId,
        keep: &SessionHash,
    ) -> StoreResult<u64>;

    /// Applies admitted changes in one transaction: op ids already seen get
    /// their remembered outcome, the rest are decided by
    /// `crate::sync::decide`; each applied change takes the next sequence
    /// number. Commits are announced to every process sharing the database.
    async fn push(
        &self,
        account: AccountId,
        changes: &[Change],
        now: Timestamp,
    ) -> StoreResult<PushOutcome>;

    /// Up to `limit` changes after `after`, in sequence order.
    async fn pull(&self, account: AccountId, after: Seq, limit: u32) -> StoreResult<Pull>;

    /// Up to `limit` live records after `after` (from the start if `None`).
    async fn snapshot(
        &self,
        account: AccountId,
        after: Option<SnapshotKey>,
        limit: u32,
    ) -> StoreResult<SnapshotPage>;

    /// Drops expired data (all accounts), remembering per account the
    /// highest purged tombstone sequence number so stale cursors get
    /// [`Pull::ResyncRequired`].
    async fn purge(&self, plan: PurgePlan) -> StoreResult<PurgeReport>;

    /// Starts forwarding commits made by *other* processes to `sink`, and
    /// returns once the subscription is live. Backends only one process
    /// can use return `None`.
    async fn start_poke_listener(
        &self,
        sink: PokeSink,
    ) -> StoreResult<Option<tokio::task::JoinHandle<()>>> {
        let _ = sink;
        Ok(None)
    }
}

/// Opens (creating or migrating as needed) the store a URL names.
pub async fn open(database: &DatabaseUrl) -> StoreResult<Arc<dyn ServerStore>> {
    Ok(match database {
        DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        DatabaseUrl::Postgres(url) => Arc::new(PostgresStore::connect(url).await?),
    })
}

/// A record as stored, in database-neutral column types.
#[derive(Debug, Clone)]
pub(crate) struct RecordRow {
    pub kind: String,
    pub entity_id: String,
    pub conversation_id: Option<String>,
    pub op_id: String,
    pub version: String,
    pub deleted: bool,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub owner: Option<String>,
    pub body: Option<Vec<u8>>,
    pub deleted_at: Option<i64>,
    pub seq: i64,
}

/// Column list matching [`RecordRow`]'s field order, for SELECTs.
pub(crate) const RECORD_COLUMNS: &str = "kind, entity_id, conversation_id, op_id, version, \
     deleted, created_at, updated_at, owner, body, deleted_at, seq";

/// A sessions row as a [`SessionSummary`] (both backends).
pub(crate) fn session_summary(
    hash: &[u8],
    client: String,
    created_at: i64,
    last_used_at: i64,
) -> StoreResult<SessionSummary> {
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| corrupt("session hash", "not 32 bytes"))?;
    Ok(SessionSummary {
        hash: SessionHash(hash),
        client,
        created_at: Timestamp(created_at),
        last_used_at: Timestamp(last_used_at),
    })
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl RecordRow {
    /// The columns to write for `change` at `seq`.
    pub(crate) fn from_change(change: &Change, seq: Seq) -> RecordRow {
        let (deleted, created_at, updated_at, owner, body, deleted_at) = match &change.op {
            ChangeOp::Upsert(p) => (
                false,
                Some(p.created_at.as_millis()),
                Some(p.updated_at.as_millis()),
                p.user_id.as_ref().map(|u| u.as_str().to_owned()),
                Some(p.body.as_bytes().to_vec()),
                None,
            ),
            ChangeOp::Delete(d) => (true, None, None, None, None, Some(d.deleted_at.as_millis())),
        };
        RecordRow {
            kind: change.kind.as_str().to_owned(),
            entity_id: change.entity_id.to_string(),
            conversation_id: change.conversation_id.map(|c| c.to_string()),
            op_id: change.op_id.to_string(),
            version: change.version.to_string(),
            deleted,
            created_at,
            updated_at,
            owner,
            body,
            deleted_at,
            seq: seq.to_db(),
        }
    }

    /// Rebuilds the change this row stores.
    pub(crate) fn into_synced(self) -> StoreResult<SyncedChange> {
        let kind: EntityKind = self.kind.parse().map_err(|e| corrupt("kind", e))?;
        let op = if self.deleted {
            ChangeOp::Delete(DeletePayload {
                deleted_at: Timestamp(self.deleted_at.unwrap_or(0)),
            })
        } else {
            ChangeOp::Upsert(UpsertPayload {
                created_at: Timestamp(self.created_at.unwrap_or(0)),
                updated_at: Timestamp(self.updated_at.unwrap_or(0)),
                user_id: self
                    .owner
                    .map(UserId::try_from)
                    .transpose()
                    .map_err(|e| corrupt("owner", e))?,
                body: Body(self.body.unwrap_or_default()),
            })
        };
        Ok(SyncedChange {
            seq: Seq::from_db(self.seq).0,
            change: Change {
                op_id: self
                    .op_id
                    .parse::<OpId>()
                    .map_err(|e| corrupt("op_id", e))?,
                kind,
                entity_id: self
                    .entity_id
                    .parse::<RecordId>()
                    .map_err(|e| corrupt("entity_id", e))?,
                conversation_id: self
                    .conversation_id
                    .map(|c| c.parse())
                    .transpose()
                    .map_err(|e| corrupt("conversation_id", e))?,
                version: self
                    .version
                    .parse::<Hlc>()
                    .map_err(|e| corrupt("version", e))?,
                op,
            },
        })
    }
}

/// Parses stored version text.
pub(crate) fn parse_version(text: &str) -> StoreResult<Hlc> {
    text.parse().map_err(|e| corrupt("version", e))
}

/// An account as stored, in database-neutral column types.
pub(crate) struct AccountRow {
    pub id: String,
    pub username: String,
    pub auth_hash: String,
    pub kdf_m: i64,
    pub kdf_t: i64,
    pub kdf_p: i64,
    pub salt: Vec<u8>,
    pub key_envelope: String,
}

/// Column list matching [`AccountRow`]'s field order, for SELECTs.
pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, username, auth_hash, kdf_m, kdf_t, kdf_p, salt, key_envelope";

impl AccountRow {
    pub(crate) fn into_account(self) -> StoreResult<Account> {
        let int = |v: i64, what: &str| u32::try_from(v).map_err(|e| corrupt(what, e));
        Ok(Account {
            id: self.id.parse().map_err(|e| corrupt("account id", e))?,
            username: self.username.parse().map_err(|e| corrupt("username", e))?,
            auth_hash: self.auth_hash,
            kdf: KdfParams {
                m_cost_kib: int(self.kdf_m, "kdf_m")?,
                t_cost: int(self.kdf_t, "kdf_t")?,
                p_cost: int(self.kdf_p, "kdf_p")?,
            },
            salt: Salt(
                <[u8; Salt::LEN]>::try_from(self.salt.as_slice())
                    .map_err(|e| corrupt("salt", e))?,
            ),
            key_envelope: KeyEnvelope::from_json(&self.key_envelope)
                .map_err(|e| corrupt("key_envelope", e))?,
        })
    }
}

/// Push outcome as stored in `op_results`.
pub(crate) fn outcome_to_db(o: Outcome) -> (&'static str, Option<i64>) {
    match o {
        Outcome::Applied(seq) => ("applied", Some(seq.to_db())),
        Outcome::Superseded => ("superseded", None),
    }
}

/// Push outcome read back from `op_results`.
pub(crate) fn outcome_from_db(status: &str, seq: Option<i64>) -> StoreResult<Outcome> {
    match (status, seq) {
        ("applied", Some(seq)) => Ok(Outcome::Applied(Seq::from_db(seq))),
        ("superseded", _) => Ok(Outcome::Superseded),
        (other, _) => Err(corrupt("op status", other)),
    }
}

/// Decides whether a pull from `after` must resync, given the account's
/// feed head and highest purged tombstone.
pub(crate) fn needs_resync(after: Seq, head: Seq, purged: Seq) -> bool {
    after < purged || after > head
}
