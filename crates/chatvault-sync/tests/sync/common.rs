//! Test harness: an in-process `chatvault-server` on 127.0.0.1:0 with
//! SQLite in a temp dir and a manual clock, behind a TCP proxy whose
//! address stays the same when the server is stopped or restarted (the
//! clients' server URL), plus vault and option builders and a status
//! waiter. Nothing here sleeps: waits are on the status channel, bounded.

#![allow(dead_code)] // each test module uses a different part

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use chatvault::testing::{fast_options, PASSPHRASE};
use chatvault::{Clock, MemoryStore, Store, SystemClock, Timestamp, Vault, VaultOptions};
use chatvault_server::{Config, DatabaseUrl, ManualServerClock, Server};
use chatvault_sync::{BackoffPolicy, SyncClient, SyncOptions, SyncStatus};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const PASS: &str = PASSPHRASE;

/// Bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- server

struct Running {
    server: Server,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A server in-process, reached through [`Proxy`].
pub struct TestServer {
    /// The server's clock (tests move it; the server never sleeps on it).
    pub clock: ManualServerClock,
    /// Stays the same across restarts.
    pub proxy: Proxy,
    database: DatabaseUrl,
    db_path: PathBuf,
    running: Option<Running>,
    _dir: TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_on(None, adjust).await
    }

    /// A server on `database` (SQLite in a temp dir when `None`). Backups
    /// and [`database_bytes`](Self::database_bytes) are SQLite-only.
    pub async fn start_on(
        database: Option<DatabaseUrl>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        init_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("server.db");
        let mut server = TestServer {
            clock: ManualServerClock::starting_now(),
            proxy: Proxy::start().await,
            database: database.unwrap_or_else(|| DatabaseUrl::Sqlite(db_path.clone())),
            db_path,
            running: None,
            _dir: dir,
        };
        server.launch(adjust).await;
        server
    }

    async fn launch(&mut self, adjust: impl FnOnce(&mut Config)) {
        let mut config = Config::new(self.database.clone());
        config.allow_weak_kdf = true;
        config.insecure_cookies = true;
        // Test-strength hashes of the auth keys: every start hashes a dummy
        // key and every sign-in verifies one, and the simulation starts
        // servers and signs devices in thousands of times.
        config.kdf.cost = chatvault_server::AuthHashCost { m_kib: 64, t: 1 };
        config.clock = Arc::new(self.clock.clone());
        adjust(&mut config);
        let server = Server::open(config).await.expect("server opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let running = server.clone();
        let task = tokio::spawn(async move {
            let _ = running
                .run(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.proxy.set_target(Some(addr));
        self.running = Some(Running {
            server,
            addr,
            stop,
            task,
        });
    }

    /// The URL clients use (the proxy's).
    pub fn url(&self) -> String {
        format!("http://{}", self.proxy.addr)
    }

    /// The server's own address, bypassing the proxy (changes on restart).
    pub fn direct_url(&self) -> String {
        format!(
            "http://{}",
            self.running.as_ref().expect("server is running").addr
        )
    }

    /// The running server (for maintenance).
    pub fn server(&self) -> &Server {
        &self.running.as_ref().expect("server is running").server
    }

    /// Stops the server; the proxy then refuses connections.
    pub async fn stop(&mut self) {
        self.proxy.set_target(None);
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
            let _ = r.task.await;
        }
    }

    /// Starts the server again on the same database.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.stop().await;
        self.launch(adjust).await;
    }

    /// A backup, as an operator takes one while the server runs: a
    /// consistent copy of its database (SQLite: `VACUUM INTO` a file;
    /// PostgreSQL: every table of its schema copied, in one snapshot, into
    /// a new schema).
    pub async fn backup(&mut self) -> Backup {
        match &self.database {
            DatabaseUrl::Sqlite(path) => {
                let dir = tempfile::tempdir().expect("backup dir");
                let (from, to) = (path.clone(), dir.path().join("backup.db"));
                tokio::task::spawn_blocking(move || sqlite_backup(&from, &to))
                    .await
                    .expect("backup task");
                Backup::Files(dir)
            }
            DatabaseUrl::Postgres(url) => Backup::Schema(pg_backup(url).await),
        }
    }

    /// Restores `backup` as an operator does: stops the server, replaces
    /// everything its database holds with the backup's, starts it again.
    pub async fn restore(&mut self, backup: &Backup) {
        self.stop().await;
        match (backup, &self.database) {
            (Backup::Files(dir), DatabaseUrl::Sqlite(path)) => {
                let (from, to) = (dir.path().join("backup.db"), path.clone());
                tokio::task::spawn_blocking(move || sqlite_restore(&from, &to))
                    .await
                    .expect("restore task");
            }
            (Backup::Schema(schema), DatabaseUrl::Postgres(url)) => pg_restore(url, schema).await,
            _ => panic!("a backup restored on another kind of database"),
        }
        self.launch(|_| {}).await;
    }

    /// Every byte of the server's SQLite files (database, WAL, shm).
    pub fn database_bytes(&self) -> Vec<u8> {
        let dir = self.db_path.parent().expect("db dir");
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read db dir") {
            let path = entry.expect("dir entry").path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("server.db"))
            {
                all.extend(std::fs::read(&path).expect("read db file"));
            }
        }
        all
    }

    /// Milliseconds of the server clock now.
    pub fn now(&self) -> Timestamp {
        use chatvault_server::ServerClock as _;
        self.clock.now()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
        }
    }
}

/// A copy of a server's database ([`TestServer::backup`]).
pub enum Backup {
    /// SQLite: a copy of the database (`backup.db` in this directory).
    Files(TempDir),
    /// PostgreSQL: a schema (in the same database) holding a copy of every
    /// table; dropped with the server's schema ([`PgSchema::drop_all`]).
    Schema(String),
}

/// Copies the SQLite database `from` into the new file `to`, through
/// SQLite (a consistent copy while the server has it open, which copying
/// its files is not).
fn sqlite_backup(from: &std::path::Path, to: &std::path::Path) {
    let conn = rusqlite::Connection::open(from).expect("open the server database");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn.execute("VACUUM INTO ?1", [to.to_str().expect("UTF-8 path")])
        .expect("VACUUM INTO");
}

/// Replaces every row of every table of the SQLite database `to` with the
/// rows of the backup `from`, in one transaction (through SQLite, so a
/// closing server's connection cannot interfere).
fn sqlite_restore(from: &std::path::Path, to: &std::path::Path) {
    let mut conn = rusqlite::Connection::open(to).expect("open the server database");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn.execute(
        "ATTACH DATABASE ?1 AS backup",
        [from.to_str().expect("UTF-8 path")],
    )
    .expect("attach the backup");
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("begin");
    let tables: Vec<String> = tx
        .prepare(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .expect("list tables")
        .query_map([], |r| r.get(0))
        .expect("list tables")
        .collect::<Result<_, _>>()
        .expect("table names");
    for t in &tables {
        tx.execute_batch(&format!(
            "DELETE FROM main.\"{t}\"; INSERT INTO main.\"{t}\" SELECT * FROM backup.\"{t}\";"
        ))
        .expect("restore a table");
    }
    tx.commit().expect("commit the restore");
}

// ---------------------------------------------------------------- postgres

use chatvault_server::testing::admin_client as pg_connect;
pub use chatvault_server::testing::PgDatabase;

/// A new schema `name` of `db` for one server (e.g. one simulation seed):
/// its epochs, feed and accounts are its own, so servers on different
/// schemas can run, restart and be restored side by side.
pub async fn pg_schema(db: &PgDatabase, name: &str) -> PgSchema {
    let client = pg_connect(&db.url).await;
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{name}\" CASCADE; CREATE SCHEMA \"{name}\""
        ))
        .await
        .expect("CREATE SCHEMA");
    let separator = if db.url.contains('?') { '&' } else { '?' };
    PgSchema {
        database_url: db.url.clone(),
        name: name.to_owned(),
        url: format!("{}{separator}options=-csearch_path%3D{name}", db.url),
    }
}

/// One schema of a [`PgDatabase`] ([`pg_schema`]).
pub struct PgSchema {
    database_url: String,
    name: String,
    /// The URL a server uses to work in it (`search_path` set).
    pub url: String,
}

impl PgSchema {
    /// Drops it with every backup taken of it.
    pub async fn drop_all(self) {
        let client = pg_connect(&self.database_url).await;
        let rows = client
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname = $1 OR nspname LIKE $2",
                &[&self.name, &format!("{}_backup_%", self.name)],
            )
            .await
            .expect("list schemas");
        for row in rows {
            let schema: String = row.get(0);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .expect("DROP SCHEMA");
        }
    }
}

/// The tables of the schema `client` works in.
async fn pg_tables(client: &tokio_postgres::Client) -> (String, Vec<String>) {
    let schema: String = client
        .query_one("SELECT current_schema()", &[])
        .await
        .expect("current schema")
        .get(0);
    let tables = client
        .query(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name",
            &[&schema],
        )
        .await
        .expect("list tables")
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    (schema, tables)
}

/// Copies every table of `url`'s schema into a new schema; returns its name.
async fn pg_backup(url: &str) -> String {
    let client = pg_connect(url).await;
    let (schema, tables) = pg_tables(&client).await;
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1",
            &[&format!("{schema}_backup_%")],
        )
        .await
        .expect("count backups")
        .get(0);
    let backup = format!("{schema}_backup_{count}");
    // One snapshot of every table while the server keeps writing.
    let mut sql = format!("BEGIN ISOLATION LEVEL REPEATABLE READ; CREATE SCHEMA \"{backup}\";");
    for t in &tables {
        sql.push_str(&format!(
            "CREATE TABLE \"{backup}\".\"{t}\" AS TABLE \"{schema}\".\"{t}\";"
        ));
    }
    sql.push_str("COMMIT;");
    client.batch_execute(&sql).await.expect("back up tables");
    backup
}

/// Replaces every table of `url`'s schema with its copy in `backup`.
async fn pg_restore(url: &str, backup: &str) {
    let client = pg_connect(url).await;
    let (schema, tables) = pg_tables(&client).await;
    let all: Vec<String> = tables
        .iter()
        .map(|t| format!("\"{schema}\".\"{t}\""))
        .collect();
    // Foreign keys are not checked while the copies go back in (the
    // tables are consistent as a whole, not row by row).
    let mut sql = format!(
        "BEGIN; SET LOCAL session_replication_role = replica; TRUNCATE {};",
        all.join(", ")
    );
    for t in &tables {
        sql.push_str(&format!(
            "INSERT INTO \"{schema}\".\"{t}\" OVERRIDING SYSTEM VALUE \
             SELECT * FROM \"{backup}\".\"{t}\";"
        ));
    }
    sql.push_str("COMMIT;");
    client.batch_execute(&sql).await.expect("restore tables");
}

// ---------------------------------------------------------------- proxy

/// A TCP forwarder: a stable address in front of a server that can be
/// stopped, restarted or cut off. While it has no target (or is down) it
/// accepts and immediately closes connections, and cutting it off also
/// closes every forwarded connection (WebSockets included).
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyShared {
    target: Mutex<Option<SocketAddr>>,
    down: AtomicBool,
    /// What happens to the next connection accepted ([`Proxy::inject`]).
    next_fault: Mutex<Option<Fault>>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl ProxyShared {
    fn cut_all(&self) {
        let mut conns = self.connections.lock().unwrap();
        for c in conns.drain(..) {
            c.abort();
        }
    }
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(ProxyShared::default());
        let accept_shared = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = *accept_shared.target.lock().unwrap();
                let target = match target {
                    Some(t) if !accept_shared.down.load(Ordering::SeqCst) => t,
                    _ => continue, // dropped: the client sees a closed connection
                };
                let fault = accept_shared.next_fault.lock().unwrap().take();
                let conn = tokio::spawn(async move {
                    match fault {
                        Some(Fault::DropRequest) => drop_mid_request(inbound).await,
                        Some(Fault::Status(status)) => answer_itself(inbound, status, None).await,
                        Some(Fault::TooManyRequests { retry_after_secs }) => {
                            answer_itself(inbound, 429, Some(retry_after_secs)).await
                        }
                        Some(Fault::LoseResponse) => {
                            if let Ok(outbound) = TcpStream::connect(target).await {
                                forward_but_lose_the_response(inbound, outbound).await;
                            }
                        }
                        None => {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        }
                    }
                });
                let mut conns = accept_shared.connections.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(conn);
            }
        });
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    fn set_target(&self, target: Option<SocketAddr>) {
        *self.shared.target.lock().unwrap() = target;
        if target.is_none() {
            self.shared.cut_all();
        }
    }

    /// Cuts every open connection, so the client's next request opens a
    /// new one, and makes `fault` happen to that connection (see
    /// [`Fault`]). `None` clears a fault no connection took.
    pub fn inject(&self, fault: Option<Fault>) {
        if fault.is_some() {
            self.shared.cut_all();
        }
        *self.shared.next_fault.lock().unwrap() = fault;
    }

    /// Cuts the network (`true`) or restores it.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.shared.cut_all();
        }
    }
}

/// A transport fault the proxy makes happen to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request reaches the server, which does the work and answers,
    /// but the answer is dropped with the connection: a response lost
    /// after the server committed.
    LoseResponse,
    /// The connection is cut after the first bytes of the request: the
    /// server never sees it.
    DropRequest,
    /// The proxy answers this status itself (a failing gateway or server:
    /// 500, 502, 503) with an `internal` error body; the server never sees
    /// the request.
    Status(u16),
    /// The proxy answers `429 rate_limited` with `Retry-After` itself.
    TooManyRequests {
        /// The `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
}

/// Reads the first bytes of a request, then closes the connection.
async fn drop_mid_request(mut inbound: TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let mut first = [0u8; 16];
    let _ = inbound.read(&mut first).await;
}

/// Reads one whole request (head and `Content-Length` body), answers it
/// with `status` and an error body, and closes the connection.
async fn answer_itself(mut inbound: TcpStream, status: u16, retry_after: Option<u64>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut wanted = None;
    loop {
        if let Some(total) = wanted {
            if request.len() >= total {
                break;
            }
        }
        match inbound.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
        if wanted.is_none() {
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let body = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                wanted = Some(end + 4 + body);
            }
        }
    }
    let (reason, code) = match status {
        429 => ("Too Many Requests", "rate_limited"),
        502 => ("Bad Gateway", "internal"),
        503 => ("Service Unavailable", "internal"),
        _ => ("Internal Server Error", "internal"),
    };
    let body = format!(r#"{{"error":{{"code":"{code}","message":"injected by the test proxy"}}}}"#);
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(secs) = retry_after {
        answer.push_str(&format!("retry-after: {secs}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    let _ = inbound.write_all(answer.as_bytes()).await;
    let _ = inbound.shutdown().await;
}

/// Forwards what the client sends; once the server starts answering, drops
/// the answer and closes both sides.
async fn forward_but_lose_the_response(inbound: TcpStream, outbound: TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let (mut in_read, _in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut in_read, &mut out_write).await;
    });
    let mut first = [0u8; 1];
    let _ = out_read.read(&mut first).await;
    upstream.abort();
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.cut_all();
    }
}

// ---------------------------------------------------------------- fakes

/// A scripted server on 127.0.0.1:0 for failures a real one does not
/// produce on demand: it signs anyone in — prelogin answers with the salt
/// and parameters of `vault`'s envelope, so the vault can log in — and
/// serves `routes` for the rest.
pub async fn fake_server(vault: &Vault, routes: Router) -> String {
    let envelope: Value =
        serde_json::from_str(&vault.replica().key_envelope_json().await.unwrap().unwrap()).unwrap();
    let prelogin = json!({"kdf": envelope["kdf"], "salt": envelope["salt"]});
    let app = Router::new()
        .route(
            "/v1/auth/prelogin",
            post(move || {
                let body = prelogin.clone();
                async move { Json(body) }
            }),
        )
        .route(
            "/v1/auth/login",
            post(|| async { Json(json!({"token": "t", "expiresAt": 0, "userId": "u"})) }),
        )
        .merge(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
    let addr = listener.local_addr().expect("fake addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The push answer a server gives when it applies everything.
pub fn all_applied(body: &Value) -> Value {
    let results: Vec<Value> = body["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| json!({"opId": c["opId"], "status": "applied", "seq": i + 1}))
        .collect();
    json!({"results": results, "cursor": "v1.1"})
}

// ---------------------------------------------------------------- clients

/// Vault options with fast (insecure, test-only) key derivation.
pub fn vault_options(clock: Arc<dyn Clock>) -> VaultOptions {
    fast_options(clock)
}

/// A new encrypted vault in memory.
pub async fn vault_with(clock: Arc<dyn Clock>) -> Arc<Vault> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Arc::new(
        Vault::open_encrypted(store, PASS, vault_options(clock))
            .await
            .expect("vault opens"),
    )
}

/// A new encrypted vault in memory on the system clock.
pub async fn vault() -> Arc<Vault> {
    vault_with(Arc::new(SystemClock)).await
}

/// A vault clock standing at the server's "now".
pub fn clock_at(server: &TestServer) -> Arc<chatvault::ManualClock> {
    Arc::new(chatvault::ManualClock::new(server.now()))
}

/// Two devices of one account on `url`, each on its own manual clock
/// standing at the server's "now": A registers a new encrypted vault, B
/// joins with an empty store. Returns `(a, b, clock_a, clock_b)`.
pub async fn two_devices(
    server: &TestServer,
    url: &str,
    user: &str,
) -> (
    SyncClient,
    SyncClient,
    Arc<chatvault::ManualClock>,
    Arc<chatvault::ManualClock>,
) {
    let (clock_a, clock_b) = (clock_at(server), clock_at(server));
    let a = SyncClient::register(
        vault_with(clock_a.clone()).await,
        url,
        user,
        PASS,
        options(),
    )
    .await
    .expect("A registers");
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_b.clone()),
        url,
        user,
        PASS,
        options(),
    )
    .await
    .expect("B joins");
    (a, b, clock_a, clock_b)
}

/// Logs to the test output when `RUST_LOG` is set (e.g.
/// `RUST_LOG=chatvault_sync=debug`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Sync options for tests: short backoff, no periodic sync to hide behind,
/// seeded jitter.
pub fn options() -> SyncOptions {
    SyncOptions {
        interval: Duration::from_secs(3600),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        jitter_seed: Some(7),
        ..SyncOptions::default()
    }
}

/// Waits (bounded) until the status satisfies `ok`; panics with the last
/// status otherwise.
/// What a user sees: every listed conversation's title and its messages'
/// contents (sorted), by conversation id.
pub async fn visible_state(
    vault: &Vault,
) -> std::collections::BTreeMap<String, (String, Vec<String>)> {
    let conversations = vault
        .conversations(chatvault::ListConversations {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("conversations");
    assert!(conversations.next_cursor.is_none());
    let mut all = std::collections::BTreeMap::new();
    for c in conversations.items {
        let messages = vault
            .messages(
                c.id,
                chatvault::ListMessages {
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .expect("messages");
        assert!(messages.next_cursor.is_none());
        let mut contents: Vec<String> = messages.items.into_iter().map(|m| m.content).collect();
        contents.sort();
        all.insert(c.id.to_string(), (c.title, contents));
    }
    all
}

pub async fn wait_for(
    status: &mut watch::Receiver<SyncStatus>,
    what: &str,
    ok: impl FnMut(&SyncStatus) -> bool,
) -> SyncStatus {
    let waited = match tokio::time::timeout(WAIT, status.wait_for(ok)).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    waited.unwrap_or_else(|| {
        panic!(
            "timed out waiting for {what}; last status: {:?}",
            *status.borrow()
        )
    })
}
