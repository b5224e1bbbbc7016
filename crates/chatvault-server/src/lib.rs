//! chatvault's sync server: accounts, sessions, and push/pull sync of
//! end-to-end-encrypted chat records, with realtime pokes over WebSocket,
//! on embedded SQLite or on PostgreSQL shared by several server processes.
//!
//! The server only moves bytes. It sees record headers (ids, timestamps,
//! version stamps) and opaque bodies, never a passphrase, a key or
//! plaintext: clients send an auth key derived from their passphrase, of
//! which the server keeps only an Argon2id hash. It must never decode a
//! record body, and every query on account data is scoped to the
//! authenticated account.
//!
//! Run it with the `chatvault-server` binary, or embed it:
//!
//! ```no_run
//! # async fn demo() -> Result<(), chatvault_server::ServeError> {
//! use chatvault_server::{serve, Config};
//! let config = Config::new("sqlite://./chatvault-server.db".parse().unwrap());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await?;
//! serve(config, listener).await // until Ctrl-C / SIGTERM
//! # }
//! ```
//!
//! The wire protocol is described for client authors in `docs/protocol.md`
//! and served as OpenAPI at `/v1/openapi.json`.
//!
//! # Layout
//! - [`config`](Config) — [`Config`], [`DatabaseUrl`].
//! - `server` — [`Server`]: open, run, maintenance; [`serve`].
//! - `http` — the axum router: auth, keys, sync, ws, openapi; [`AppError`],
//!   which answers with a `chatvault_core::ErrorCode`.
//! - [`api`] — JSON request/response bodies.
//! - `types` — validated wire values ([`Username`], [`Cursor`] and the
//!   [`Epoch`] it names,
//!   [`WireKdfParams`], ...).
//! - `auth` — credential rules: hashing, tokens, sessions, backoff.
//! - `sync` — the pure per-change rules: admitting a pushed change (or a
//!   [`PushRejectReason`]) and deciding it by core's LWW with tombstone cover.
//! - `push_plan` — the pure push planner: what a whole batch writes (outcomes,
//!   rows, covered messages, new head) from what the store read.
//! - [`store`] — the [`ServerStore`](store::ServerStore) trait and its
//!   backends [`SqliteServerStore`](store::SqliteServerStore) and
//!   [`PostgresServerStore`](store::PostgresServerStore), which only read
//!   what the planner needs and write its plan, each in one transaction.
//! - `hub` — per-process fan-out of pokes to WebSockets.
//! - `kdf_pool` — [`KdfPoolConfig`]: the fixed Argon2 worker pool.
//! - `limits` — [`RateLimits`]: token buckets and login backoff.
//! - `listen` — the accept loop with [`Timeouts`].
//! - `logging` — [`log_filter`]: `RUST_LOG` minus the targets that log
//!   WebSocket payloads (session tokens).
//! - `clock` — [`ServerClock`]: time as a parameter, so tests never sleep.
//! - `testing` (feature `testing`) — a fresh PostgreSQL database per test.
//!
//! Names are unique across the workspace: the server's types carry `Server`,
//! `Wire` or `Push` where another crate has a type of the same idea.

#![warn(missing_docs)]

pub mod api;
mod auth;
mod clock;
mod config;
mod http;
mod hub;
mod kdf_pool;
mod limits;
mod listen;
mod logging;
mod push_plan;
mod server;
pub mod store;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use auth::{AuthHashCost, SessionPolicy, ThrottlePolicy, ThrottleState};
pub use clock::{ManualServerClock, ServerClock, SystemServerClock};
pub use config::{Config, DatabaseUrl};
pub use http::AppError;
pub use kdf_pool::KdfPoolConfig;
pub use limits::{RateLimit, RateLimits};
pub use listen::Timeouts;
pub use logging::log_filter;
pub use server::{serve, shutdown_signal, ServeError, Server};
pub use sync::PushRejectReason;
pub use types::{
    AccountId, AuthKey, ClientKind, Cursor, Epoch, Invalid, KeyEnvelope, Salt, Seq, SessionHash,
    SnapshotKey, Username, WireKdfParams,
};
