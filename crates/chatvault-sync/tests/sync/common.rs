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

    /// A cold backup, as an operator takes one: stops the server, copies
    /// its database files (database, WAL) aside, starts it again.
    pub async fn backup(&mut self) -> Backup {
        self.stop().await;
        let dir = tempfile::tempdir().expect("backup dir");
        for (path, name) in self.database_files() {
            std::fs::copy(&path, dir.path().join(name)).expect("copy a database file");
        }
        self.launch(|_| {}).await;
        Backup { dir }
    }

    /// Restores `backup` as an operator does: stops the server, replaces
    /// its database files with the backup's, starts it again.
    pub async fn restore(&mut self, backup: &Backup) {
        self.stop().await;
        for (path, _) in self.database_files() {
            std::fs::remove_file(&path).expect("remove a database file");
        }
        let db_dir = self.db_path.parent().expect("db dir").to_owned();
        for entry in std::fs::read_dir(backup.dir.path()).expect("read backup") {
            let entry = entry.expect("backup entry");
            std::fs::copy(entry.path(), db_dir.join(entry.file_name())).expect("restore a file");
        }
        self.launch(|_| {}).await;
    }

    /// The server's SQLite files and their names.
    fn database_files(&self) -> Vec<(PathBuf, std::ffi::OsString)> {
        let dir = self.db_path.parent().expect("db dir");
        std::fs::read_dir(dir)
            .expect("read db dir")
            .map(|e| e.expect("dir entry"))
            .filter(|e| e.file_name().to_string_lossy().starts_with("server.db"))
            .map(|e| (e.path(), e.file_name()))
            .collect()
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

/// A copy of a server's database files ([`TestServer::backup`]).
pub struct Backup {
    dir: TempDir,
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
    /// The next connection accepted forwards its request but loses the
    /// server's answer ([`Proxy::lose_next_response`]).
    lose_next_response: AtomicBool,
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
                let lose = accept_shared
                    .lose_next_response
                    .swap(false, Ordering::SeqCst);
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        if lose {
                            forward_but_lose_the_response(inbound, outbound).await;
                        } else {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
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

    /// Cuts every open connection; the next one the proxy accepts carries
    /// its request to the server, which does the work and answers, but the
    /// answer is dropped with the connection: a response lost after the
    /// server committed. `false` clears a loss no connection took.
    pub fn lose_next_response(&self, lose: bool) {
        if lose {
            self.shared.cut_all();
        }
        self.shared.lose_next_response.store(lose, Ordering::SeqCst);
    }

    /// Cuts the network (`true`) or restores it.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.shared.cut_all();
        }
    }
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
