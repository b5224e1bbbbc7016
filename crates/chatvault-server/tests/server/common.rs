//! Shared test harness: the two backends, throwaway PostgreSQL databases
//! (dropped even when a test fails), an in-process server on port 0 with a
//! manual clock, a small JSON HTTP client, and change builders.
//!
//! PostgreSQL tests FAIL when the database is unreachable; set
//! `CHATVAULT_SKIP_POSTGRES=1` to skip them explicitly.

#![allow(dead_code)] // each test module uses a different part of the harness

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chatvault_core::{
    Body, Change, ConversationId, ConversationRecord, DeviceId, Hlc, MessageId, MessageRecord,
    OpId, Timestamp, Tombstone, UserId,
};
use chatvault_server::{Config, DatabaseUrl, ManualServerClock, Server};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates async test functions `fn(Backend)` once per backend, in
/// modules `sqlite` and `postgres` (so test names show the backend).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

// ---------------------------------------------------------------- PostgreSQL

pub use chatvault_server::testing::{admin_client, PgDatabase};

/// A database for one test: a SQLite file in a temp dir, or a fresh
/// PostgreSQL database. `None` only when PostgreSQL is skipped.
pub struct TestDb {
    pub url: DatabaseUrl,
    pub sqlite_path: Option<std::path::PathBuf>,
    _dir: Option<TempDir>,
    pub pg: Option<PgDatabase>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("server.db");
                Some(TestDb {
                    url: DatabaseUrl::Sqlite(path.clone()),
                    sqlite_path: Some(path),
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let pg = PgDatabase::create().await?;
                Some(TestDb {
                    url: DatabaseUrl::Postgres(pg.url.clone()),
                    sqlite_path: None,
                    _dir: None,
                    pg: Some(pg),
                })
            }
        }
    }
}

/// A server database's tables, parents before children.
const TABLES: &[&str] = &[
    "server_meta",
    "accounts",
    "sync_heads",
    "sessions",
    "login_throttle",
    "records",
    "op_results",
    "epochs",
    "feed_epochs",
];

/// A copy of a [`TestDb`] taken by [`TestDb::backup`].
pub enum DbBackup {
    /// A consistent copy of the SQLite file (`VACUUM INTO`).
    Sqlite(TempDir),
    /// `bak_<table>` copies of every table in the same database.
    Postgres,
}

impl TestDb {
    /// Backs the database up as an operator would (`VACUUM INTO` for
    /// SQLite; for PostgreSQL a copy of every table's rows, which is what
    /// a dump holds), while servers keep running on it.
    pub async fn backup(&self) -> DbBackup {
        match (&self.sqlite_path, &self.pg) {
            (Some(path), _) => {
                let dir = tempfile::tempdir().expect("backup dir");
                let copy = dir.path().join("backup.db");
                let conn = rusqlite::Connection::open(path).expect("open for backup");
                conn.execute("VACUUM INTO ?1", [copy.to_str().expect("utf-8 path")])
                    .expect("VACUUM INTO");
                DbBackup::Sqlite(dir)
            }
            (None, Some(pg)) => {
                let client = admin_client(&pg.url).await;
                for table in TABLES {
                    client
                        .batch_execute(&format!(
                            "DROP TABLE IF EXISTS bak_{table}; \
                             CREATE TABLE bak_{table} AS TABLE {table}"
                        ))
                        .await
                        .expect("copy a table");
                }
                DbBackup::Postgres
            }
            (None, None) => unreachable!("a test database is SQLite or PostgreSQL"),
        }
    }

    /// Puts `backup` back in place of the database. Every store open on
    /// it must have been dropped (a SQLite file is replaced whole).
    pub async fn restore(&self, backup: &DbBackup) {
        match (backup, &self.sqlite_path, &self.pg) {
            (DbBackup::Sqlite(dir), Some(path), _) => {
                for suffix in ["", "-wal", "-shm"] {
                    let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
                    if file.exists() {
                        std::fs::remove_file(&file).expect("remove a database file");
                    }
                }
                std::fs::copy(dir.path().join("backup.db"), path).expect("restore the file");
            }
            (DbBackup::Postgres, None, Some(pg)) => {
                let client = admin_client(&pg.url).await;
                client
                    .batch_execute(&format!("TRUNCATE {} CASCADE", TABLES.join(", ")))
                    .await
                    .expect("TRUNCATE");
                for table in TABLES {
                    client
                        .batch_execute(&format!(
                            "INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM bak_{table}"
                        ))
                        .await
                        .expect("restore a table");
                }
            }
            _ => panic!("a backup of another kind of database"),
        }
    }
}

/// The position a cursor (`v2.<epoch>.<seq>`) names; cursors are opaque
/// to clients, but the tests know the format.
pub fn seq_of(cursor: &serde_json::Value) -> u64 {
    let text = cursor.as_str().expect("a cursor is a string");
    text.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a cursor: {text}"))
}

// ---------------------------------------------------------------- server

/// A server running in-process on 127.0.0.1:0 with a manual clock.
pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub base: String,
    pub clock: ManualServerClock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub db_url: DatabaseUrl,
    // Dropped last: the server must stop using the database first. `None`
    // for a second server sharing another's database.
    pub db: Option<TestDb>,
}

impl TestServer {
    /// Defaults for tests: weak KDF allowed, insecure cookies.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`start`](Self::start), with `adjust` applied to the config.
    pub async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
    ) -> Option<TestServer> {
        let db = TestDb::new(backend).await?;
        let url = db.url.clone();
        Some(Self::start_on(url, Some(db), adjust).await)
    }

    /// A second server on this server's database (its own clock, hub and,
    /// on PostgreSQL, LISTEN connection): another process, in-process.
    pub async fn start_sharing(&self) -> TestServer {
        Self::start_on(self.db_url.clone(), None, |_| {}).await
    }

    async fn start_on(
        url: DatabaseUrl,
        db: Option<TestDb>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        let clock = ManualServerClock::starting_now();
        let mut config = Config::new(url.clone());
        config.allow_weak_kdf = true;
        config.insecure_cookies = true;
        config.clock = std::sync::Arc::new(clock.clone());
        adjust(&mut config);
        let server = Server::open(config).await.expect("server opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = server.clone();
        tokio::spawn(async move {
            let _ = running
                .run(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        TestServer {
            server,
            addr,
            base: format!("http://{addr}"),
            clock,
            stop: Some(stop),
            db_url: url,
            db,
        }
    }

    /// A client without a session.
    pub fn anonymous(&self) -> Api {
        Api::new(&self.base)
    }

    /// A client without a session whose connections come from `source`
    /// (any of 127.0.0.0/8), for per-address limits.
    pub fn anonymous_from(&self, source: [u8; 4]) -> Api {
        let mut api = Api::new(&self.base);
        api.http = http_builder()
            .local_address(std::net::IpAddr::from(source))
            .build()
            .expect("client with a local address");
        api
    }

    /// Registers `name` and signs in (bearer token).
    pub async fn user(&self, name: &str) -> Api {
        let (status, body) = self.anonymous().register(name, &auth_key_for(name)).await;
        assert_eq!(status, StatusCode::CREATED, "register {name}: {body}");
        self.sign_in(name).await
    }

    /// A fresh session for the registered user `name` (bearer token).
    pub async fn sign_in(&self, name: &str) -> Api {
        let mut api = self.anonymous();
        let (status, _, body) = api.login(name, &auth_key_for(name), None).await;
        assert_eq!(status, StatusCode::OK, "login {name}: {body}");
        api.token = Some(body["token"].as_str().expect("token").to_owned());
        api.user_id = body["userId"].as_str().map(str::to_owned);
        api
    }

    /// Milliseconds of the server clock now (for version stamps).
    pub fn now_ms(&self) -> u64 {
        use chatvault_server::ServerClock as _;
        self.clock.now().as_millis() as u64
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------- client

/// A deterministic 32-byte auth key per username (tests only).
pub fn auth_key_for(name: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, b) in name.bytes().cycle().take(32).enumerate() {
        key[i] = b.wrapping_add(i as u8);
    }
    key
}

/// Weak KDF parameters (servers in tests allow them).
pub fn weak_kdf() -> Value {
    json!({"mCostKib": 64, "tCost": 1, "pCost": 1})
}

/// A small JSON client for one session.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
    pub user_id: Option<String>,
}

/// A response: status, headers, JSON body (`Null` when empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// A reqwest client builder. The workspace builds reqwest's TLS without a
/// bundled crypto provider (chatvault-sync installs `ring`), so one is
/// installed here first.
pub fn http_builder() -> reqwest::ClientBuilder {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
}

/// A default reqwest client (see [`http_builder`]).
pub fn http_client() -> reqwest::Client {
    http_builder().build().expect("HTTP client")
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            http: http_client(),
            base: base.to_owned(),
            token: None,
            user_id: None,
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let request = match &self.token {
            Some(t) => request.header(AUTHORIZATION, format!("Bearer {t}")),
            None => request,
        };
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("response body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).expect("JSON"));
        }
        self.send(request).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.request(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn register(&self, name: &str, key: &[u8; 32]) -> (StatusCode, Value) {
        let r = self
            .post(
                "/v1/auth/register",
                &json!({
                    "username": name,
                    "kdf": weak_kdf(),
                    "salt": BASE64.encode([7u8; 16]),
                    "authKey": BASE64.encode(key),
                    "keyEnvelope": {"v": 1, "wrapped": "opaque"},
                }),
            )
            .await;
        (r.status, r.body)
    }

    pub async fn login(
        &self,
        name: &str,
        key: &[u8; 32],
        client: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut body = json!({"username": name, "authKey": BASE64.encode(key)});
        if let Some(c) = client {
            body["client"] = json!(c);
        }
        let r = self.post("/v1/auth/login", &body).await;
        (r.status, r.headers, r.body)
    }

    /// Pushes changes; asserts 200 and returns the body.
    pub async fn push(&self, changes: &[Change]) -> Value {
        let body = json!({ "changes": changes });
        let r = self.post("/v1/sync/push", &body).await;
        assert_eq!(r.status, StatusCode::OK, "push: {}", r.body);
        r.body
    }

    /// Pulls one page.
    pub async fn pull(&self, after: Option<&str>, limit: Option<u32>) -> Reply {
        let mut path = "/v1/sync/pull?".to_owned();
        if let Some(a) = after {
            path.push_str(&format!("after={a}&"));
        }
        if let Some(l) = limit {
            path.push_str(&format!("limit={l}"));
        }
        self.get(&path).await
    }

    /// Pulls everything from `after`, asserting every page is 200; returns
    /// the changes and the final cursor.
    pub async fn pull_all(&self, after: Option<&str>) -> (Vec<Value>, String) {
        let mut cursor = after.map(str::to_owned);
        let mut all = Vec::new();
        loop {
            let r = self.pull(cursor.as_deref(), Some(1000)).await;
            assert_eq!(r.status, StatusCode::OK, "pull: {}", r.body);
            all.extend(
                r.body["changes"]
                    .as_array()
                    .expect("changes")
                    .iter()
                    .cloned(),
            );
            cursor = Some(r.body["nextCursor"].as_str().expect("cursor").to_owned());
            if !r.body["hasMore"].as_bool().expect("hasMore") {
                break;
            }
        }
        (all, cursor.unwrap_or_default())
    }
}

// ---------------------------------------------------------------- changes

pub fn hlc(wall_ms: u64) -> Hlc {
    Hlc::new(wall_ms, 0, DeviceId(0xd1)).expect("stamp in range")
}

pub fn conversation(id: ConversationId, wall_ms: u64, body: &[u8]) -> Change {
    Change::upsert_conversation(
        OpId::new(),
        &ConversationRecord {
            id,
            user_id: UserId::local(),
            created_at: Timestamp(1),
            updated_at: Timestamp(wall_ms as i64),
            version: hlc(wall_ms),
            body: Body(body.to_vec()),
        },
    )
}

pub fn message(id: MessageId, conv: ConversationId, wall_ms: u64, body: &[u8]) -> Change {
    Change::upsert_message(
        OpId::new(),
        &MessageRecord {
            id,
            conversation_id: conv,
            created_at: Timestamp(1),
            updated_at: Timestamp(wall_ms as i64),
            version: hlc(wall_ms),
            body: Body(body.to_vec()),
        },
    )
}

pub fn delete_conversation(id: ConversationId, wall_ms: u64) -> Change {
    Change::delete(
        OpId::new(),
        &Tombstone::conversation(id, hlc(wall_ms), Timestamp(wall_ms as i64)),
    )
}

pub fn delete_message(id: MessageId, conv: ConversationId, wall_ms: u64) -> Change {
    Change::delete(
        OpId::new(),
        &Tombstone::message(id, conv, hlc(wall_ms), Timestamp(wall_ms as i64)),
    )
}

/// Decodes the body of a pulled change.
pub fn body_of(change: &Value) -> Vec<u8> {
    BASE64
        .decode(change["payload"]["body"].as_str().expect("upsert body"))
        .expect("base64 body")
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
