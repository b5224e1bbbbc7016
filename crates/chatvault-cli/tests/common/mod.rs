//! Helpers shared by the CLI's integration tests (each test binary uses
//! some of them).
#![allow(dead_code)]

use chatvault_core::lifecycle::{ExportWriter, ExportedConversation, ExportedMessage};
use chatvault_core::{ConversationId, DeviceId, Hlc, MessageId, Metadata, Role, Timestamp, UserId};
use chatvault_server::testing::PgDatabase;
use chatvault_server::{Config, DatabaseUrl, Server};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The CLI under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_chatvault");
/// The passphrase the tests' vaults use.
pub const PASS: &str = "correct horse battery staple";

/// Runs the CLI on the vault `store`, unlocking it with `passphrase`, with
/// no other chatvault settings from the environment.
pub fn run(store: &Path, args: &[&str], passphrase: &str) -> Output {
    run_with(store, args, passphrase, &[])
}

/// [`run`] with more environment variables (`CHATVAULT_NEW_PASSPHRASE`).
pub fn run_with(store: &Path, args: &[&str], passphrase: &str, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env("CHATVAULT_STORE", store)
        .env("CHATVAULT_PASSPHRASE", passphrase)
        .env_remove("CHATVAULT_PASSPHRASE_FILE")
        .env_remove("CHATVAULT_SERVER")
        .env_remove("CHATVAULT_USER")
        .env_remove("CHATVAULT_NEW_PASSPHRASE_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run chatvault")
}

/// Runs the CLI with [`PASS`]; it must succeed. Its trimmed stdout.
pub fn ok(store: &Path, args: &[&str]) -> String {
    ok_as(store, args, PASS)
}

/// [`ok`] with another passphrase.
pub fn ok_as(store: &Path, args: &[&str], passphrase: &str) -> String {
    let out = run(store, args, passphrase);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// [`ok`] with `--json` output, parsed.
pub fn json(store: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(store, args)).expect("JSON output")
}

/// Writes an export with `messages` messages (text from `content`) in
/// conversations of `per_conversation`; returns how many conversations.
pub fn big_export(
    path: &Path,
    messages: u64,
    per_conversation: u64,
    content: impl Fn(u64) -> String,
) -> u64 {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let t0 = 1_700_000_000_000i64;
    let device = DeviceId(0xb16);
    let mut w = ExportWriter::new(file, Timestamp(t0)).unwrap();
    let conversations = messages.div_ceil(per_conversation);
    let conv_id = |c: u64| {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&c.to_be_bytes());
        b[8] = 0xc0;
        ConversationId::from_bytes(b)
    };
    for c in 0..conversations {
        w.conversation(&ExportedConversation {
            id: conv_id(c),
            user_id: UserId::local(),
            title: format!("conversation {c}"),
            created_at: Timestamp(t0),
            updated_at: Timestamp(t0),
            activity_at: None,
            version: Hlc::new(t0 as u64, 0, device).unwrap(),
            metadata: Metadata::new(),
        })
        .unwrap();
    }
    for m in 0..messages {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&m.to_be_bytes());
        b[8] = 0x3e;
        let at = t0 + m as i64;
        w.message(&ExportedMessage {
            id: MessageId::from_bytes(b),
            conversation_id: conv_id(m / per_conversation),
            role: Role::ALL[(m % 4) as usize],
            content: content(m),
            created_at: Timestamp(at),
            updated_at: Timestamp(at),
            version: Hlc::new(at as u64, 0, device).unwrap(),
            metadata: Metadata::new(),
        })
        .unwrap();
    }
    w.finish().unwrap();
    conversations
}

// ---- a server that can restart on the same address -------------------------

/// A sync server on its own thread and runtime; `restart` stops it (a
/// graceful shutdown, as a deploy would) and starts a new one on the same
/// address and database.
pub struct RestartableServer {
    database: DatabaseUrl,
    addr: String,
    running: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

impl RestartableServer {
    /// Starts one on 127.0.0.1 (a free port).
    pub fn start(database: DatabaseUrl) -> RestartableServer {
        let mut server = RestartableServer {
            database,
            addr: "127.0.0.1:0".into(),
            running: None,
        };
        server.launch();
        server
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn launch(&mut self) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let database = self.database.clone();
        let addr = self.addr.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut config = Config::new(database);
                config.insecure_cookies = true;
                let server = Server::open(config).await.expect("server opens");
                let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
                ready_tx
                    .send(listener.local_addr().expect("addr").to_string())
                    .expect("report the address");
                server
                    .run(listener, async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("server runs and stops cleanly");
            });
        });
        self.addr = ready_rx.recv().expect("server started");
        self.running = Some((stop_tx, thread));
    }

    /// Stops it (graceful shutdown).
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            thread.join().expect("server thread");
        }
    }

    /// Stops it and starts it again on the same address and database.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RestartableServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

// ---- databases ---------------------------------------------------------------

/// Which server store a test runs on.
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A server database for one test: a SQLite file, or a fresh PostgreSQL
/// database (`chatvault_server::testing`, dropped afterwards).
pub struct ServerDb {
    /// Where the server keeps its data.
    pub url: DatabaseUrl,
    /// Dropped (with the database) when this is.
    _postgres: Option<PgDatabase>,
}

impl ServerDb {
    /// One for `backend`, its SQLite file (if any) in `dir`; `None` when
    /// PostgreSQL tests are switched off (`CHATVAULT_SKIP_POSTGRES=1`).
    pub fn new(backend: Backend, dir: &Path) -> Option<ServerDb> {
        match backend {
            Backend::Sqlite => Some(ServerDb {
                url: DatabaseUrl::Sqlite(dir.join("server.db")),
                _postgres: None,
            }),
            Backend::Postgres => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let db = runtime.block_on(PgDatabase::create())?;
                Some(ServerDb {
                    url: db.url.parse().expect("postgres URL"),
                    _postgres: Some(db),
                })
            }
        }
    }
}
