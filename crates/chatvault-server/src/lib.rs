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
//! - `http` — the axum router: auth, keys, sync, ws, openapi, [`AppError`].
//! - [`api`] — JSON request/response bodies.
//! - `types` — validated domain values ([`Username`], [`Cursor`], ...).
//! - `auth` — credential rules: hashing, tokens, sessions, backoff.
//! - `sync` — the pure sync rules: admitting and deciding changes (LWW).
//! - `hub` — per-process fan-out of pokes to WebSockets.
//! - `kdf_pool` — [`KdfPoolConfig`]: the fixed Argon2 worker pool.
//! - `limits` — [`RateLimits`]: token buckets and login backoff.
//! - `listen` — the accept loop with [`Timeouts`].
//! - [`store`] — the [`ServerStore`](store::ServerStore) trait, SQLite and
//!   PostgreSQL backends.
//! - `clock` — [`Clock`]: time as a parameter, so tests never sleep.

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
mod server;
pub mod store;
mod sync;
mod types;

pub use auth::{AuthHashCost, SessionPolicy, ThrottlePolicy, ThrottleState};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, DatabaseUrl};
pub use http::AppError;
pub use kdf_pool::KdfPoolConfig;
pub use limits::{RateLimit, RateLimits};
pub use listen::Timeouts;
pub use server::{serve, shutdown_signal, ServeError, Server};
pub use sync::RejectReason;
pub use types::{
    AccountId, AuthKey, ClientKind, Cursor, Invalid, KdfParams, KeyEnvelope, Salt, Seq,
    SessionHash, SnapshotKey, Username,
};
